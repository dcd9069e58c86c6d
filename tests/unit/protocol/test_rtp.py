"""RTP and RTCP (RFC 3550): bytes in, packets, rewritten headers or errors out."""

import struct

import pytest
from aiortc.rtp import RtpPacket as AiortcRtpPacket
from hypothesis import given
from hypothesis import strategies as st

from dtmfguard.errors import ProtocolError
from dtmfguard.protocol.rtp import (
    RtpExtension,
    RtpPacket,
    RtpRewriter,
    looks_like_rtcp,
    rewrite_rtcp_ssrc,
)

# A G.711 packet: V=2, M=1, PT=0, seq 0x1234, ts 0x000186a0, SSRC 0xdeadbeef, 4 payload bytes.
SIMPLE = bytes.fromhex("80801234000186a0deadbeef") + b"\xff\xfe\xfd\xfc"


def parse_error(data: bytes) -> str:
    with pytest.raises(ProtocolError) as excinfo:
        RtpPacket.parse(data)
    return str(excinfo.value)


class TestFixedHeader:
    """RFC 3550 section 5.1."""

    def test_parse(self) -> None:
        assert RtpPacket.parse(SIMPLE) == RtpPacket(
            payload_type=0,
            sequence_number=0x1234,
            timestamp=100_000,
            ssrc=0xDEADBEEF,
            payload=b"\xff\xfe\xfd\xfc",
            marker=True,
        )

    def test_serialize(self) -> None:
        assert RtpPacket.parse(SIMPLE).serialize() == SIMPLE

    def test_empty_payload(self) -> None:
        assert RtpPacket.parse(SIMPLE[:12]).payload == b""

    @pytest.mark.parametrize("second", [0x00, 0x08, 0x65, 0x7F, 0x80, 0x88, 0xFF])
    def test_plain_header_of_any_buffer(self, second: int) -> None:
        """The common header (no padding, extension or CSRC) from bytes, bytearray or a
        memoryview: the payload is bytes, marker and payload type split as usual."""
        data = bytes((0x80, second)) + SIMPLE[2:]
        for buffer in (data, bytearray(data), memoryview(data)):
            packet = RtpPacket.parse(buffer)
            assert type(packet.payload) is bytes
            assert packet == RtpPacket(second & 0x7F, 0x1234, 100_000, 0xDEADBEEF, SIMPLE[12:], second >= 0x80)

    def test_short(self) -> None:
        assert parse_error(SIMPLE[:11]) == "rtp: packet of 11 bytes is shorter than the 12-byte header"

    def test_version(self) -> None:
        assert parse_error(b"\x40" + SIMPLE[1:]) == "rtp: version 1 (expected 2)"

    def test_matches_aiortc(self) -> None:
        theirs = AiortcRtpPacket(payload_type=8, marker=0, sequence_number=65535, timestamp=2**32 - 1, ssrc=7)
        theirs.payload = b"\x55" * 160
        data = theirs.serialize()
        ours = RtpPacket.parse(data)
        assert (ours.payload_type, ours.marker, ours.sequence_number, ours.timestamp, ours.ssrc) == (
            8,
            False,
            65535,
            2**32 - 1,
            7,
        )
        assert ours.serialize() == data

    def test_serialize_rejects_wide_fields(self) -> None:
        with pytest.raises(ValueError, match=r"^payload type 128 is not 0-127$"):
            RtpPacket(128, 0, 0, 0).serialize()
        with pytest.raises(ValueError, match=r"^RTP header field out of range"):
            RtpPacket(0, 70000, 0, 0).serialize()


class TestCsrc:
    """RFC 3550 section 5.1, CC and the CSRC list."""

    def test_two_csrcs(self) -> None:
        data = b"\x82" + SIMPLE[1:12] + struct.pack("!II", 1, 2) + b"xy"
        packet = RtpPacket.parse(data)
        assert packet.csrc == (1, 2)
        assert packet.payload == b"xy"
        assert packet.serialize() == data

    def test_truncated(self) -> None:
        data = b"\x83" + SIMPLE[1:12] + struct.pack("!II", 1, 2)
        assert parse_error(data) == "rtp: 3 CSRC entries need 24 bytes, packet has 20"


class TestHeaderExtension:
    """RFC 3550 section 5.3.1: kept as opaque bytes, re-serialized unchanged."""

    DATA = b"\x90" + SIMPLE[1:12] + b"\xbe\xde\x00\x01" + b"\x10\xff\x00\x00" + b"payload"

    def test_round_trip(self) -> None:
        packet = RtpPacket.parse(self.DATA)
        assert packet.extension == RtpExtension(0xBEDE, b"\x10\xff\x00\x00")
        assert packet.payload == b"payload"
        assert packet.serialize() == self.DATA

    def test_aiortc_would_lose_it(self) -> None:
        # The reason this module does not wrap aiortc: an unconfigured extension is dropped.
        assert len(AiortcRtpPacket.parse(self.DATA).serialize()) == len(self.DATA) - 8

    def test_truncated_header(self) -> None:
        assert parse_error(b"\x90" + SIMPLE[1:12] + b"\xbe\xde") == (
            "rtp: extension header at offset 12 is truncated (packet has 14 bytes)"
        )

    def test_truncated_data(self) -> None:
        assert parse_error(b"\x90" + SIMPLE[1:12] + b"\xbe\xde\x00\x02\x00\x00\x00\x00") == (
            "rtp: extension of 8 bytes at offset 16 runs past the end (packet has 20 bytes)"
        )

    def test_unaligned_data_cannot_be_serialized(self) -> None:
        with pytest.raises(ValueError, match=r"^extension data of 3 bytes"):
            RtpPacket(0, 0, 0, 0, extension=RtpExtension(0xBEDE, b"abc")).serialize()


class TestPadding:
    """RFC 3550 section 5.1, P bit: the last byte counts the padding bytes."""

    def test_round_trip(self) -> None:
        data = b"\xa0" + SIMPLE[1:12] + b"ab" + b"\x00\x00\x03"
        packet = RtpPacket.parse(data)
        assert packet.payload == b"ab"
        assert packet.padding_size == 3
        assert packet.serialize() == data

    def test_zero_length(self) -> None:
        assert parse_error(b"\xa0" + SIMPLE[1:12] + b"ab\x00") == (
            "rtp: padding bit set but the padding length byte is 0"
        )

    def test_too_long(self) -> None:
        assert parse_error(b"\xa0" + SIMPLE[1:12] + b"ab\x09") == (
            "rtp: padding of 9 bytes exceeds the 3 bytes after the header"
        )


packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence_number=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=200),
    marker=st.booleans(),
    csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    extension=st.none()
    | st.builds(RtpExtension, st.integers(0, 0xFFFF), st.binary(max_size=40).map(lambda b: b[: len(b) // 4 * 4])),
    padding_size=st.integers(0, 255),
)


class TestRoundTrip:
    @given(packets)
    def test_parse_inverts_serialize(self, packet: RtpPacket) -> None:
        assert RtpPacket.parse(packet.serialize()) == packet

    @given(st.binary(max_size=80))
    def test_arbitrary_bytes(self, data: bytes) -> None:
        try:
            packet = RtpPacket.parse(data)
        except ProtocolError:
            return
        assert len(packet.serialize()) == len(data)


class TestRtcpMux:
    """RFC 5761 section 4: telling RTCP from RTP on one port."""

    def test_rtp(self) -> None:
        assert not looks_like_rtcp(SIMPLE)

    def test_rtcp(self) -> None:
        assert looks_like_rtcp(b"\x80\xc8\x00\x06")
        assert not looks_like_rtcp(b"\x80")


def packet(seq: int, ts: int, ssrc: int = 0x1111, marker: bool = False, payload: bytes = b"a") -> RtpPacket:
    return RtpPacket(0, seq, ts, ssrc, payload, marker)


def headers(packets: list[RtpPacket]) -> list[tuple[int, int, int, bool]]:
    return [(p.sequence_number, p.timestamp, p.ssrc, p.marker) for p in packets]


class TestRewriter:
    """RFC 3550 section 8 / RFC 3551 4.1: one SSRC, continuous numbering, marker on spurts."""

    def rewriter(self) -> RtpRewriter:
        return RtpRewriter(ssrc=0xABCD, first_sequence_number=1000, first_timestamp=50_000)

    def test_rewrite_to_bytes_equals_rewrite_then_serialize(self) -> None:
        one, two = self.rewriter(), self.rewriter()
        # A spurt, a gap, a new source and a payload-type change: every path of the rewriter.
        stream = [packet(7 + i, 160 * i, marker=i == 0) for i in range(3)]
        stream += [packet(20, 160 * 20), packet(21, 160 * 21)]
        stream += [packet(5, 999, ssrc=0x2222, payload=b"x" * 160)]
        for p in stream:
            assert one.rewrite_to_bytes(p, payload_type=8) == two.rewrite(p, payload_type=8).serialize()

    def test_steady_stream(self) -> None:
        rewriter = self.rewriter()
        out = [rewriter.rewrite(packet(7 + i, 160 * i, marker=i == 0)) for i in range(3)]
        assert headers(out) == [
            (1000, 50_000, 0xABCD, True),
            (1001, 50_160, 0xABCD, False),
            (1002, 50_320, 0xABCD, False),
        ]

    def test_first_packet_gets_marker(self) -> None:
        assert self.rewriter().rewrite(packet(7, 0)).marker is True

    def test_loss_and_reordering_are_preserved(self) -> None:
        rewriter = self.rewriter()
        out = [rewriter.rewrite(p) for p in (packet(10, 0), packet(12, 320), packet(11, 160), packet(12, 320))]
        assert [(p.sequence_number, p.timestamp) for p in out] == [
            (1000, 50_000),
            (1002, 50_320),
            (1001, 50_160),
            (1002, 50_320),
        ]

    def test_source_change_continues(self) -> None:
        rewriter = self.rewriter()
        out = [
            rewriter.rewrite(packet(10, 0)),
            rewriter.rewrite(packet(11, 160)),
            rewriter.rewrite(packet(40_000, 9_999_999, ssrc=0x2222)),
            rewriter.rewrite(packet(40_001, 10_000_159, ssrc=0x2222)),
        ]
        assert headers(out) == [
            (1000, 50_000, 0xABCD, True),
            (1001, 50_160, 0xABCD, False),
            (1002, 50_320, 0xABCD, True),
            (1003, 50_480, 0xABCD, False),
        ]

    def test_sequence_jump_is_a_restart(self) -> None:
        rewriter = self.rewriter()
        rewriter.rewrite(packet(10, 0))
        out = rewriter.rewrite(packet(30_000, 777))
        assert (out.sequence_number, out.timestamp, out.marker) == (1001, 50_160, True)

    def test_wraparound(self) -> None:
        rewriter = RtpRewriter(ssrc=1, first_sequence_number=0xFFFF, first_timestamp=0xFFFFFF60)
        out = [rewriter.rewrite(packet(5 + i, 160 * i)) for i in range(3)]
        assert [(p.sequence_number, p.timestamp) for p in out] == [(0xFFFF, 0xFFFFFF60), (0, 0), (1, 160)]

    def test_timestamp_step_is_learnt(self) -> None:
        # 30 ms packets: after a source change the new source starts one 240-sample step on.
        rewriter = self.rewriter()
        rewriter.rewrite(packet(1, 0))
        rewriter.rewrite(packet(2, 240))
        out = rewriter.rewrite(packet(1, 0, ssrc=0x3333))
        assert out.timestamp == 50_480

    def test_silence_gap_is_preserved(self) -> None:
        rewriter = self.rewriter()
        rewriter.rewrite(packet(1, 0))
        out = rewriter.rewrite(packet(2, 8000, marker=True))
        assert (out.sequence_number, out.timestamp, out.marker) == (1001, 58_000, True)

    def test_drop_leaves_no_gap(self) -> None:
        # telephone-event packets not forwarded while masking is on
        rewriter = self.rewriter()
        sent = rewriter.rewrite(packet(1, 0))
        rewriter.drop(packet(2, 160))
        rewriter.drop(packet(3, 320))
        after = rewriter.rewrite(packet(4, 480))
        assert (sent.sequence_number, after.sequence_number) == (1000, 1001)
        assert after.timestamp == 50_480

    def test_drop_after_gap_is_not_renumbered(self) -> None:
        rewriter = self.rewriter()
        rewriter.rewrite(packet(1, 0))
        rewriter.drop(packet(3, 320))
        late = rewriter.rewrite(packet(2, 160))
        after = rewriter.rewrite(packet(4, 480))
        assert (late.sequence_number, after.sequence_number) == (1001, 1003)

    def test_drop_first_packet_of_source(self) -> None:
        rewriter = self.rewriter()
        rewriter.drop(packet(1, 0))
        out = rewriter.rewrite(packet(2, 160))
        assert (out.sequence_number, out.marker) == (1000, True)

    def test_overrides(self) -> None:
        out = self.rewriter().rewrite(packet(1, 0), payload=b"masked", payload_type=8, marker=False)
        assert (out.payload, out.payload_type, out.marker) == (b"masked", 8, False)


def sr(ssrc: int, *blocks: int, extra: bytes = b"") -> bytes:
    body = struct.pack("!I", ssrc) + bytes(20) + b"".join(struct.pack("!I", b) + bytes(20) for b in blocks) + extra
    return struct.pack("!BBH", 0x80 | len(blocks), 200, len(body) // 4) + body


def rr(ssrc: int, *blocks: int) -> bytes:
    body = struct.pack("!I", ssrc) + b"".join(struct.pack("!I", b) + bytes(20) for b in blocks)
    return struct.pack("!BBH", 0x80 | len(blocks), 201, len(body) // 4) + body


def sdes(ssrc: int) -> bytes:
    chunk = struct.pack("!I", ssrc) + b"\x01\x04abcd\x00\x00"
    return struct.pack("!BBH", 0x81, 202, len(chunk) // 4) + chunk


MAPPING = {0x1111: 0xAAAA, 0x2222: 0xBBBB}


def rtcp_error(data: bytes) -> str:
    with pytest.raises(ProtocolError) as excinfo:
        rewrite_rtcp_ssrc(data, MAPPING)
    return str(excinfo.value)


class TestRtcpSsrc:
    """RFC 3550 sections 6.4.1 (SR), 6.4.2 (RR) and 6.1 (compound packets)."""

    def test_sender_report(self) -> None:
        assert rewrite_rtcp_ssrc(sr(0x1111, 0x2222, 0x9999), MAPPING) == sr(0xAAAA, 0xBBBB, 0x9999)

    def test_receiver_report(self) -> None:
        assert rewrite_rtcp_ssrc(rr(0x2222, 0x1111), MAPPING) == rr(0xBBBB, 0xAAAA)

    def test_profile_extension_is_kept(self) -> None:
        assert rewrite_rtcp_ssrc(sr(0x1111, extra=b"ext!"), MAPPING) == sr(0xAAAA, extra=b"ext!")

    def test_compound_leaves_other_types(self) -> None:
        compound = sr(0x1111, 0x2222) + sdes(0x1111) + rr(0x1111)
        assert rewrite_rtcp_ssrc(compound, MAPPING) == sr(0xAAAA, 0xBBBB) + sdes(0x1111) + rr(0xAAAA)

    def test_empty(self) -> None:
        assert rtcp_error(b"") == "rtcp: empty packet"

    def test_short_trailer(self) -> None:
        assert rtcp_error(rr(1) + b"\x80\xc9") == "rtcp: 2 bytes at offset 8 are shorter than the 4-byte header"

    def test_version(self) -> None:
        assert rtcp_error(b"\x40" + rr(1)[1:]) == "rtcp: version 1 at offset 0 (expected 2)"

    def test_length_past_end(self) -> None:
        assert rtcp_error(rr(1)[:-4]) == ("rtcp: packet type 201 at offset 0 declares 8 bytes but only 4 remain")

    def test_report_count_too_big(self) -> None:
        data = bytearray(sr(0x1111))
        data[0] = 0x82
        assert rtcp_error(bytes(data)) == "rtcp: SR at offset 0 with 2 report blocks needs 76 bytes, has 28"
