"""RTP and RTCP packets (RFC 3550): parse, serialize, and rewrite for one outgoing stream.

:class:`RtpPacket` implements the fixed header of RFC 3550 section 5.1 with CSRCs, the
header extension of 5.3.1 (kept as opaque bytes) and padding. :class:`RtpRewriter`
keeps the stream dtmfguard sends to one peer a single RTP source (section 8): one SSRC,
and sequence numbers and timestamps that stay continuous when the upstream source
changes, while masking switches on and off, and when packets are deliberately not
forwarded; the marker bit flags the start of a talk spurt (RFC 3551 section 4.1).
:func:`rewrite_rtcp_ssrc` maps SSRCs in SR/RR packets (sections 6.4.1 and 6.4.2) of a
compound RTCP packet and leaves every other packet type byte-for-byte intact.

Why not ``aiortc.rtp.RtpPacket``: it round-trips only the header extensions its
``HeaderExtensionsMap`` was configured with, so a relayed packet silently loses any
other extension; it pads with ``os.urandom`` (a system call per padded packet); and,
measured on one core (CPython 3.11, 172-byte G.711 packet, best of three runs), it
parses about 250,000 packets per second against about 580,000 for this module's
``struct``-based parser (which serializes about 1.4 million per second), leaving more
of the per-core budget to decoding, detection and masking. Its RTCP classes re-serialize only the packet types
they know and insist on exact SR/RR lengths, so RTCP is rewritten in place here too.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass

from dtmfguard.errors import ProtocolError

__all__ = [
    "RTCP_RR",
    "RTCP_SR",
    "RTP_HEADER_BYTES",
    "RtpExtension",
    "RtpPacket",
    "RtpRewriter",
    "looks_like_rtcp",
    "rewrite_rtcp_ssrc",
]

RTP_HEADER_BYTES = 12
RTCP_SR = 200
RTCP_RR = 201

_HEADER = struct.Struct("!BBHII")
_EXTENSION_HEADER = struct.Struct("!HH")
_U32 = struct.Struct("!I")
_RTCP_HEADER = struct.Struct("!BBH")

# RFC 3550 appendix A.1: a jump of more than MAX_DROPOUT sequence numbers ahead, or
# more than MAX_MISORDER behind, is a restart of the source, not loss or reordering.
MAX_DROPOUT = 3000
MAX_MISORDER = 100


@dataclass(frozen=True, slots=True)
class RtpExtension:
    """An RTP header extension (RFC 3550 5.3.1): 16-bit profile and its data words."""

    profile: int
    data: bytes


@dataclass(slots=True)
class RtpPacket:
    """One RTP packet; ``payload`` excludes padding, ``padding_size`` counts its bytes."""

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension: RtpExtension | None = None
    padding_size: int = 0

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Parse one RTP packet; raises :class:`ProtocolError` saying what is wrong where."""
        size = len(data)
        if size < RTP_HEADER_BYTES:
            raise ProtocolError(f"rtp: packet of {size} bytes is shorter than the {RTP_HEADER_BYTES}-byte header")
        first, second, sequence_number, timestamp, ssrc = _HEADER.unpack_from(data)
        if first == 0x80:
            # Version 2 with no padding, extension or CSRC: nearly every media packet.
            return cls(second & 0x7F, sequence_number, timestamp, ssrc, bytes(data[RTP_HEADER_BYTES:]), second > 0x7F)
        if first >> 6 != 2:
            raise ProtocolError(f"rtp: version {first >> 6} (expected 2)")
        pos = RTP_HEADER_BYTES
        csrc: tuple[int, ...] = ()
        count = first & 0x0F
        if count:
            end = pos + 4 * count
            if end > size:
                raise ProtocolError(f"rtp: {count} CSRC entries need {end} bytes, packet has {size}")
            csrc = struct.unpack_from(f"!{count}I", data, pos)
            pos = end
        extension = None
        if first & 0x10:
            if pos + 4 > size:
                raise ProtocolError(f"rtp: extension header at offset {pos} is truncated (packet has {size} bytes)")
            profile, words = _EXTENSION_HEADER.unpack_from(data, pos)
            end = pos + 4 + 4 * words
            if end > size:
                raise ProtocolError(
                    f"rtp: extension of {4 * words} bytes at offset {pos + 4} runs past the end "
                    f"(packet has {size} bytes)"
                )
            extension = RtpExtension(profile, bytes(data[pos + 4 : end]))
            pos = end
        padding_size = 0
        if first & 0x20:
            padding_size = data[-1]
            if padding_size == 0:
                raise ProtocolError("rtp: padding bit set but the padding length byte is 0")
            if padding_size > size - pos:
                raise ProtocolError(
                    f"rtp: padding of {padding_size} bytes exceeds the {size - pos} bytes after the header"
                )
        return cls(
            second & 0x7F,
            sequence_number,
            timestamp,
            ssrc,
            bytes(data[pos : size - padding_size]),
            bool(second & 0x80),
            csrc,
            extension,
            padding_size,
        )

    def serialize(self) -> bytes:
        """Encode the packet; padding is zero bytes ending in the padding length.

        Raises :class:`ValueError` when a field does not fit its wire width.
        """
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"payload type {self.payload_type} is not 0-127")
        if len(self.csrc) > 15:
            raise ValueError(f"{len(self.csrc)} CSRCs (at most 15)")
        if not 0 <= self.padding_size <= 255:
            raise ValueError(f"padding of {self.padding_size} bytes (at most 255)")
        first = 0x80 | len(self.csrc)
        if self.padding_size:
            first |= 0x20
        if self.extension is not None:
            first |= 0x10
        try:
            header = _HEADER.pack(
                first,
                (0x80 if self.marker else 0) | self.payload_type,
                self.sequence_number,
                self.timestamp,
                self.ssrc,
            )
        except struct.error as exc:
            raise ValueError(f"RTP header field out of range: {exc}") from None
        parts = [header]
        if self.csrc:
            parts.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension is not None:
            data = self.extension.data
            if len(data) % 4:
                raise ValueError(f"extension data of {len(data)} bytes is not a whole number of 32-bit words")
            parts.append(_EXTENSION_HEADER.pack(self.extension.profile, len(data) // 4))
            parts.append(data)
        parts.append(self.payload)
        if self.padding_size:
            parts.append(bytes(self.padding_size - 1) + bytes((self.padding_size,)))
        return b"".join(parts)


def looks_like_rtcp(data: bytes) -> bool:
    """RFC 5761 section 4: on a multiplexed port, a second byte of 192-223 is RTCP."""
    return len(data) >= 2 and 192 <= data[1] <= 223


class RtpRewriter:
    """Header state of one outgoing RTP stream (sans-I/O: packets in, packets out).

    Each upstream packet is mapped by a sequence and timestamp offset, so loss gaps,
    reordering and silence stay visible to the receiver exactly as sent. When the
    upstream SSRC changes, or its sequence numbers jump (RFC 3550 A.1), the offsets are
    re-anchored so the new source continues one sequence number and one packet time
    after the last packet sent, and that first packet carries the marker bit. A packet
    deliberately not forwarded (:meth:`drop`) right after the last one is removed from
    the numbering, so the receiver sees no loss; a drop after a gap is not renumbered
    (a late packet could otherwise collide with its number).
    """

    def __init__(
        self,
        *,
        ssrc: int,
        first_sequence_number: int,
        first_timestamp: int,
        samples_per_packet: int = 160,
    ) -> None:
        self.ssrc = ssrc
        self._samples_per_packet = samples_per_packet
        self._source: int | None = None
        self._seq_offset = 0
        self._ts_offset = 0
        self._last_in_seq = 0
        self._last_in_ts = 0
        # The next anchor: the first packet after a (re)start gets exactly these.
        self._next_out_seq = first_sequence_number & 0xFFFF
        self._next_out_ts = first_timestamp & 0xFFFFFFFF
        self._ts_step = samples_per_packet
        self._pending_marker = False

    def rewrite(
        self,
        packet: RtpPacket,
        *,
        payload: bytes | None = None,
        payload_type: int | None = None,
        marker: bool | None = None,
    ) -> RtpPacket:
        """The packet to send for upstream ``packet``, with optional new payload/PT/marker.

        ``marker=None`` keeps the upstream marker, forced on for the first packet sent
        after a re-anchor.
        """
        started = self._advance(packet) or self._pending_marker
        self._pending_marker = False
        seq = (packet.sequence_number + self._seq_offset) & 0xFFFF
        ts = (packet.timestamp + self._ts_offset) & 0xFFFFFFFF
        return RtpPacket(
            packet.payload_type if payload_type is None else payload_type,
            seq,
            ts,
            self.ssrc,
            packet.payload if payload is None else payload,
            (packet.marker or started) if marker is None else marker,
            packet.csrc,
            packet.extension,
            packet.padding_size,
        )

    def rewrite_to_bytes(self, packet: RtpPacket, *, payload_type: int | None = None) -> bytes:
        """``rewrite(packet, payload_type=...).serialize()`` in one step: the same bytes.

        The media path's common case (no CSRC, extension or padding) packs the header
        directly, without building the rewritten packet. Raises :class:`ValueError` as
        :meth:`RtpPacket.serialize` does.
        """
        if packet.csrc or packet.extension is not None or packet.padding_size:
            return self.rewrite(packet, payload_type=payload_type).serialize()
        return self.pack(
            packet.payload_type if payload_type is None else payload_type, packet.sequence_number,
            packet.timestamp, packet.ssrc, packet.marker, packet.payload,
        )

    def pack(
        self, payload_type: int, sequence_number: int, timestamp: int, ssrc: int, marker: bool, payload: bytes,
    ) -> bytes:
        """The datagram to send for an upstream packet given by its fields (no CSRC,
        extension or padding): what :meth:`rewrite_to_bytes` gives for that packet.

        Raises :class:`ValueError` for a payload type outside 0-127 or a field out of range.
        """
        if not 0 <= payload_type <= 127:
            raise ValueError(f"payload type {payload_type} is not 0-127")
        started = self._advance_fields(sequence_number, timestamp, ssrc) or self._pending_marker
        self._pending_marker = False
        try:
            header = _HEADER.pack(
                0x80,
                (0x80 if marker or started else 0) | payload_type,
                (sequence_number + self._seq_offset) & 0xFFFF,
                (timestamp + self._ts_offset) & 0xFFFFFFFF,
                self.ssrc,
            )
        except struct.error as exc:
            raise ValueError(f"RTP header field out of range: {exc}") from None
        return header + payload

    def steady_offsets(self, sequence_number: int, ssrc: int) -> tuple[int, int] | None:
        """``(seq_offset, ts_offset)`` when the next packet, ``sequence_number`` of ``ssrc``,
        continues the stream without a re-anchor or a pending marker; else None.

        Packets that continue like that are sent with exactly these offsets added, so a
        batch relay may rewrite them itself and report back with :meth:`advance_steady`.
        """
        if self._source != ssrc or self._pending_marker or ((sequence_number - self._last_in_seq) & 0xFFFF) != 1:
            return None
        return self._seq_offset, self._ts_offset

    def advance_steady(self, first_seq: int, first_ts: int, ssrc: int, packets: int, ts_step: int) -> None:
        """Record ``packets`` sent with :meth:`steady_offsets`: sequence numbers from
        ``first_seq`` on, timestamps from ``first_ts`` on, ``ts_step`` apart.

        The state is what :meth:`pack` leaves after packing each of them in turn.
        """
        if packets <= 0:
            return
        self._advance_fields(first_seq, first_ts, ssrc)
        if packets > 1:
            last_seq = (first_seq + packets - 1) & 0xFFFF
            last_ts = (first_ts + (packets - 1) * ts_step) & 0xFFFFFFFF
            if 0 < ts_step <= 8 * self._samples_per_packet:
                self._ts_step = ts_step
            self._last_in_seq = last_seq
            self._last_in_ts = last_ts
            self._next_out_seq = (last_seq + self._seq_offset + 1) & 0xFFFF
            self._next_out_ts = (last_ts + self._ts_offset + self._ts_step) & 0xFFFFFFFF

    def drop(self, packet: RtpPacket) -> None:
        """Record that ``packet`` is deliberately not forwarded."""
        known = self._source == packet.ssrc
        expected = (self._last_in_seq + 1) & 0xFFFF
        started = self._advance(packet)
        if started or (known and packet.sequence_number == expected):
            # Give its sequence number to the next packet sent.
            self._seq_offset = (self._seq_offset - 1) & 0xFFFF
            self._next_out_seq = (self._next_out_seq - 1) & 0xFFFF
        if started:
            self._pending_marker = True

    def _advance(self, packet: RtpPacket) -> bool:
        """Update the stream state for ``packet``; True when the offsets were re-anchored."""
        return self._advance_fields(packet.sequence_number, packet.timestamp, packet.ssrc)

    def _advance_fields(self, seq: int, ts: int, ssrc: int) -> bool:
        if self._source == ssrc:
            delta = (seq - self._last_in_seq) & 0xFFFF
            if delta == 0 or delta >= 0x10000 - MAX_MISORDER:
                return False  # duplicate or reordered: mapped, state unchanged
            if delta <= MAX_DROPOUT:
                ts_delta = (ts - self._last_in_ts) & 0xFFFFFFFF
                if delta == 1 and 0 < ts_delta <= 8 * self._samples_per_packet:
                    self._ts_step = ts_delta
                self._last_in_seq = seq
                self._last_in_ts = ts
                self._next_out_seq = (seq + self._seq_offset + 1) & 0xFFFF
                self._next_out_ts = (ts + self._ts_offset + self._ts_step) & 0xFFFFFFFF
                return False
        # first packet, new SSRC, or a restart of the same one: re-anchor
        self._source = ssrc
        self._seq_offset = (self._next_out_seq - seq) & 0xFFFF
        self._ts_offset = (self._next_out_ts - ts) & 0xFFFFFFFF
        self._last_in_seq = seq
        self._last_in_ts = ts
        self._next_out_seq = (self._next_out_seq + 1) & 0xFFFF
        self._next_out_ts = (self._next_out_ts + self._ts_step) & 0xFFFFFFFF
        return True


def rewrite_rtcp_ssrc(packet: bytes, mapping: Mapping[int, int]) -> bytes:
    """Return compound RTCP ``packet`` with SR/RR SSRCs replaced through ``mapping``.

    In SR and RR packets the sender SSRC and each report block's SSRC are looked up in
    ``mapping``; SSRCs not in it, and every other packet type (SDES, BYE, APP, feedback,
    XR), are left byte-for-byte. Raises :class:`ProtocolError` for a malformed packet.
    """
    size = len(packet)
    if size == 0:
        raise ProtocolError("rtcp: empty packet")
    out = bytearray(packet)
    pos = 0
    while pos < size:
        if size - pos < 4:
            raise ProtocolError(f"rtcp: {size - pos} bytes at offset {pos} are shorter than the 4-byte header")
        first, packet_type, words = _RTCP_HEADER.unpack_from(packet, pos)
        if first >> 6 != 2:
            raise ProtocolError(f"rtcp: version {first >> 6} at offset {pos} (expected 2)")
        length = 4 + 4 * words
        if pos + length > size:
            raise ProtocolError(
                f"rtcp: packet type {packet_type} at offset {pos} declares {length} bytes but only {size - pos} remain"
            )
        if packet_type in (RTCP_SR, RTCP_RR):
            count = first & 0x1F
            blocks_at = 28 if packet_type == RTCP_SR else 8
            needed = blocks_at + 24 * count
            if needed > length:
                name = "SR" if packet_type == RTCP_SR else "RR"
                raise ProtocolError(
                    f"rtcp: {name} at offset {pos} with {count} report blocks needs {needed} bytes, has {length}"
                )
            _map_u32(out, pos + 4, mapping)
            for block in range(count):
                _map_u32(out, pos + blocks_at + 24 * block, mapping)
        pos += length
    return bytes(out)


def _map_u32(buffer: bytearray, offset: int, mapping: Mapping[int, int]) -> None:
    (value,) = _U32.unpack_from(buffer, offset)
    new = mapping.get(value)
    if new is not None:
        _U32.pack_into(buffer, offset, new)
