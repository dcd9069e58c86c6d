"""CallMedia, driven with datagrams alone: masking, RFC 4733, RTP correctness, robustness.

A caller streams 20 ms G.711 packets; what CallMedia returns for the agent is parsed
and decoded back to audio, and two independent decoders (multimon-ng, spandsp) must
find no digit in it, while CallMedia's own events hold every key press.

Every test runs twice: per packet, and batched (a DetectorBank run every second
packet, as a 20 ms tick with packets arriving in pairs would).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import pytest

from dtmfguard import synth
from dtmfguard.codecs.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from dtmfguard.control.media import CallMedia, LegEndpoint, MaskIntervals
from dtmfguard.pipeline.batch import DetectorBank
from dtmfguard.pipeline.chain import mask_recording
from dtmfguard.pipeline.detect import DigitConfirmed, DigitEnded
from dtmfguard.pipeline.mask import MaskSettings
from dtmfguard.protocol.rfc4733 import KeyDown, KeyUp, TelephoneEvent
from dtmfguard.protocol.rtp import RtpPacket
from dtmfguard.protocol.sdp import remote_endpoints
from tests.support.decoders import multimon_digits, spandsp_digits

TEST_PAN = "4111111111111111"
CALLER = ("192.0.2.10", 40000)
AGENT = ("198.51.100.20", 50000)
TE = 101
SSRC = 0x1234ABCD
FRAME = 160

Out = list[tuple[str, bytes, tuple[str, int]]]

_banks: dict[int, DetectorBank] = {}
_batched = False
_tick_packets = 2
"""Batched mode: caller packets per bank run (one per run, or two, as a burst would)."""


@pytest.fixture(autouse=True, params=["per-packet", "batched", "batched-each-packet"])
def mode(request: pytest.FixtureRequest) -> str:
    global _batched, _tick_packets
    _batched = request.param != "per-packet"
    _tick_packets = 1 if request.param == "batched-each-packet" else 2
    _banks.clear()
    return str(request.param)


def _endpoint(address: tuple[str, int], names: dict[int, str] | None = None) -> LegEndpoint:
    names = {0: "PCMU", 8: "PCMA", TE: "telephone-event"} if names is None else names
    return LegEndpoint(address[0], address[1], address[1] + 1, names, TE)


def _call(*, masking: bool = True, caller: str = "offer") -> CallMedia:
    bank = DetectorBank(capacity=2) if _batched else None
    media = CallMedia("call-1@test", masking=MaskSettings(enabled=masking), caller=caller, bank=bank)
    if bank is not None:
        _banks[id(media)] = bank
    caller_leg, agent_leg = ("offer", "answer") if caller == "offer" else ("answer", "offer")
    media.set_endpoint(caller_leg, _endpoint(CALLER))
    media.set_endpoint(agent_leg, _endpoint(AGENT))
    return media


def _frames(x: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float32]]:
    pad = (-len(x)) % FRAME
    x = np.concatenate([x, np.zeros(pad, np.float32)])
    return [x[i : i + FRAME] for i in range(0, len(x), FRAME)]


class CallerStream:
    """Builds the caller's packets: one SSRC, sequence numbers and timestamps that wrap."""

    def __init__(self, pt: int = 0, seq: int = 65_530, ts: int = 2**32 - 3 * FRAME) -> None:
        self.pt = pt
        self.seq = seq
        self.ts0 = ts

    def _next_seq(self) -> int:
        seq = self.seq
        self.seq = (seq + 1) & 0xFFFF
        return seq

    def audio(self, slot: int, samples: npt.NDArray[np.float32], marker: bool = False) -> RtpPacket:
        encode = ulaw_encode if self.pt == 0 else alaw_encode
        ts = (self.ts0 + slot * FRAME) & 0xFFFFFFFF
        return RtpPacket(self.pt, self._next_seq(), ts, SSRC, encode(samples).tobytes(), marker)

    def event(self, start_slot: int, key: str, duration: int, *, end: bool, marker: bool = False) -> RtpPacket:
        ts = (self.ts0 + start_slot * FRAME) & 0xFFFFFFFF
        payload = TelephoneEvent("0123456789*#ABCD".index(key), end, 10, duration).serialize()
        return RtpPacket(TE, self._next_seq(), ts, SSRC, payload, marker)


def inband_packets(x: npt.NDArray[np.float32], stream: CallerStream | None = None) -> list[RtpPacket]:
    stream = stream or CallerStream()
    return [stream.audio(i, f, marker=i == 0) for i, f in enumerate(_frames(x))]


def event_packets(
    x: npt.NDArray[np.float32], truth: list[synth.ToneTruth], *, audio: bool = True, stream: CallerStream | None = None,
) -> list[RtpPacket]:
    """Audio ``x`` plus RFC 4733 events for each tone in ``truth`` (sent every 20 ms, end three times).

    With ``audio=False`` no audio packet is sent while a key is held, as some gateways do.
    """
    stream = stream or CallerStream()
    frames = _frames(x)
    spans = [(t.start_sample // FRAME, (t.end_sample - 1) // FRAME, t.key) for t in truth]
    packets = []
    for i, frame in enumerate(frames):
        held = [(a, b, k) for a, b, k in spans if a <= i <= b]
        if audio or not held:
            packets.append(stream.audio(i, frame, marker=i == 0))
        for a, b, key in held:
            duration = (i - a + 1) * FRAME
            if i < b:
                packets.append(stream.event(a, key, duration, end=False, marker=i == a))
            else:
                packets.extend(stream.event(a, key, duration, end=True) for _ in range(3))
    return packets


def send(media: CallMedia, packets: Sequence[RtpPacket | bytes], *, leg: str = "offer",
         src: tuple[str, int] = CALLER, t0: float = 0.0) -> Out:
    out: Out = []
    bank = _banks.get(id(media))
    for i, packet in enumerate(packets):
        data = packet.serialize() if isinstance(packet, RtpPacket) else packet
        out += media.on_rtp(leg, data, src, t0 + 0.02 * i)
        if bank is not None and (i % _tick_packets == _tick_packets - 1 or i == len(packets) - 1):
            bank.run()
            out += media.process_tick()
    return out


def to_agent(out: Out) -> list[RtpPacket]:
    assert all(leg == "answer" and dest == AGENT for leg, _, dest in out)
    return [RtpPacket.parse(data) for _, data, _ in out]


def decode(packets: list[RtpPacket]) -> npt.NDArray[np.float32]:
    parts = []
    for p in packets:
        codes = np.frombuffer(p.payload, np.uint8)
        if p.payload_type == 0:
            parts.append(ulaw_decode(codes))
        elif p.payload_type == 8:
            parts.append(alaw_decode(codes))
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def assert_one_continuous_stream(packets: list[RtpPacket]) -> None:
    assert len({p.ssrc for p in packets}) == 1
    seq = np.array([p.sequence_number for p in packets])
    assert set(((seq[1:] - seq[:-1]) & 0xFFFF).tolist()) == {1}
    # Audio timestamps advance one packet time each (events carry their start time).
    ts = np.array([p.timestamp for p in packets if p.payload_type in (0, 8)], np.int64)
    assert set(((ts[1:] - ts[:-1]) & 0xFFFFFFFF).tolist()) == {FRAME}


def assert_no_digit(audio: npt.NDArray[np.float32]) -> None:
    assert multimon_digits(audio) == ""
    assert spandsp_digits(audio) == ""
    assert spandsp_digits(audio, twist_db=10, reverse_twist_db=8, threshold_dbm0=-50) == ""


def presses(events: Sequence[object]) -> str:
    return "".join(e.key for e in events if isinstance(e, DigitConfirmed | KeyDown))


@pytest.fixture(scope="module")
def typed_pan() -> tuple[npt.NDArray[np.float32], list[synth.ToneTruth]]:
    # 107 ms lead: tones start off the packet grid, as they do on a real line.
    return synth.dtmf_sequence(TEST_PAN, on_ms=70, off_ms=70, lead_ms=107, rng=7)


class TestInBandMasking:
    @pytest.mark.parametrize("pt", [0, 8], ids=["PCMU", "PCMA"])
    def test_typed_pan_reaches_the_agent_masked_and_is_captured(self, typed_pan: tuple, pt: int) -> None:
        x, _ = typed_pan
        media = _call()
        agent = to_agent(send(media, inband_packets(x, CallerStream(pt=pt))))
        assert len(agent) == len(_frames(x))
        assert {p.payload_type for p in agent} == {pt}
        assert_one_continuous_stream(agent)
        assert_no_digit(decode(agent))
        events = media.drain_events()
        assert presses(events) == TEST_PAN
        assert sum(isinstance(e, DigitEnded) for e in events) == 16
        assert media.drain_events() == []
        stats = media.stats()
        assert stats["digits"] == 16
        assert stats["masked_tones"] == 16
        assert stats["offer"]["packets"] == len(agent)

    def test_the_decoders_hear_the_pan_when_masking_is_off(self, typed_pan: tuple) -> None:
        x, _ = typed_pan
        media = _call(masking=False)
        audio = decode(to_agent(send(media, inband_packets(x))))
        assert multimon_digits(audio) == TEST_PAN
        assert spandsp_digits(audio) == TEST_PAN
        assert presses(media.drain_events()) == TEST_PAN  # captured all the same
        assert media.stats()["masked_tones"] == 0

    def test_agent_audio_is_the_masked_audio_one_packet_late(self, typed_pan: tuple) -> None:
        x, _ = typed_pan
        audio = decode(to_agent(send(_call(), inband_packets(x))))
        reference = mask_recording(ulaw_decode(ulaw_encode(x))).samples
        # The first packet out is the delay line's initial silence.
        np.testing.assert_array_equal(audio[:FRAME], np.zeros(FRAME, np.float32))
        expected = ulaw_decode(ulaw_encode(reference[: len(audio) - FRAME]))
        np.testing.assert_array_equal(audio[FRAME:], expected)

    def test_masking_switches_without_a_break_in_the_agent_stream(self, typed_pan: tuple) -> None:
        x, _ = typed_pan
        media = _call(masking=False)
        packets = inband_packets(x)
        half = len(packets) // 2
        out = send(media, packets[:half])
        media.set_masking(True)
        assert media.masking_enabled
        out += send(media, packets[half:], t0=half * 0.02)
        agent = to_agent(out)
        assert_one_continuous_stream(agent)
        tail = decode(agent[half + 1 :])
        assert_no_digit(tail)


class TestRfc4733:
    def test_events_are_not_forwarded_while_masking_and_the_agent_hears_the_flat_tone(self, typed_pan: tuple) -> None:
        x, truth = typed_pan
        silence = np.zeros_like(x)  # the carrier stripped the tones, sends events only
        media = _call()
        agent = to_agent(send(media, event_packets(silence, truth)))
        assert {p.payload_type for p in agent} == {0}
        assert_one_continuous_stream(agent)
        audio = decode(agent)
        assert_no_digit(audio)
        # Each key press is heard as the masker's flat tone, one packet late.
        for t in truth:
            mid = t.start_sample + FRAME + (t.end_sample - t.start_sample) // 2
            assert np.sqrt(np.mean(audio[mid - 40 : mid + 40] ** 2)) > 0.01
        events = media.drain_events()
        assert presses(events) == TEST_PAN
        assert sum(isinstance(e, KeyUp) for e in events) == 16
        assert media.stats()["masked_tones"] == 16
        assert media.stats()["digits"] == 16

    def test_events_are_forwarded_while_masking_is_off(self, typed_pan: tuple) -> None:
        x, truth = typed_pan
        packets = event_packets(np.zeros_like(x), truth)
        media = _call(masking=False)
        agent = to_agent(send(media, packets))
        forwarded = [p for p in agent if p.payload_type == TE]
        assert len(forwarded) == sum(p.payload_type == TE for p in packets)
        assert "".join(
            "0123456789*#ABCD"[TelephoneEvent.parse(p.payload).event] for p in forwarded if p.marker
        ) == TEST_PAN
        assert_one_continuous_stream(agent)
        assert presses(media.drain_events()) == TEST_PAN

    def test_events_without_audio_become_masked_packets(self, typed_pan: tuple) -> None:
        x, truth = typed_pan
        media = _call()
        agent = to_agent(send(media, event_packets(x, truth, audio=False)))
        assert {p.payload_type for p in agent} == {0}
        assert_one_continuous_stream(agent)
        assert_no_digit(decode(agent))
        assert presses(media.drain_events()) == TEST_PAN
        assert media.stats()["masked_tones"] == 16

    def test_keys_sent_both_in_band_and_as_events_count_once(self, typed_pan: tuple) -> None:
        x, truth = typed_pan
        media = _call()
        agent = to_agent(send(media, event_packets(x, truth)))
        assert_no_digit(decode(agent))
        events = media.drain_events()
        assert presses(events) == TEST_PAN
        downs = [e for e in events if isinstance(e, DigitConfirmed | KeyDown)]
        ups = [e for e in events if isinstance(e, DigitEnded | KeyUp)]
        assert len(downs) == len(ups) == 16
        assert media.stats()["digits"] == 16


class TestOtherPayloadTypes:
    def _packets(self) -> list[RtpPacket]:
        stream = CallerStream()
        packets = [stream.audio(i, np.zeros(FRAME, np.float32)) for i in range(5)]
        packets.insert(2, RtpPacket(18, stream._next_seq(), packets[1].timestamp, SSRC, b"\x00" * 20))
        return packets

    def test_muted_toward_the_agent_while_masking(self) -> None:
        media = _call()
        agent = to_agent(send(media, self._packets()))
        assert [p.payload_type for p in agent] == [0] * 5
        assert media.stats()["offer"]["muted"] == 1

    def test_relayed_untouched_while_masking_is_off(self) -> None:
        media = _call(masking=False)
        agent = to_agent(send(media, self._packets()))
        assert [p.payload_type for p in agent] == [0, 0, 18, 0, 0, 0]
        assert agent[2].payload == b"\x00" * 20
        assert_one_continuous_stream(agent)
        assert media.stats()["offer"]["muted"] == 0


class TestLossReorderDuplicates:
    def _tone_slots(self, truth: list[synth.ToneTruth]) -> list[list[int]]:
        return [list(range(t.start_sample // FRAME, (t.end_sample - 1) // FRAME + 1)) for t in truth]

    @pytest.mark.parametrize(
        "pick",
        [lambda s: [s[len(s) // 2]], lambda s: [s[0]], lambda s: [s[-1]], lambda s: [s[1], s[2]]],
        ids=["middle", "first", "last", "two-in-a-row"],
    )
    def test_lost_packets_inside_each_tone(self, typed_pan: tuple, pick: Callable[[list[int]], list[int]]) -> None:
        x, truth = typed_pan
        packets = inband_packets(x)
        lost = {i for slots in self._tone_slots(truth) for i in pick(slots)}
        media = _call()
        agent = to_agent(send(media, [p for i, p in enumerate(packets) if i not in lost]))
        assert len(agent) == len(packets), "every lost packet is concealed"
        assert_one_continuous_stream(agent)
        assert_no_digit(decode(agent))
        assert presses(media.drain_events()) == TEST_PAN, "no digit split, none lost"
        assert media.stats()["offer"]["concealed"] == len(lost)

    @pytest.mark.parametrize("shift", [1, 2, 3])
    def test_reordering_within_60_ms(self, typed_pan: tuple, shift: int) -> None:
        x, truth = typed_pan
        packets = inband_packets(x)
        order = list(range(len(packets)))
        for slots in self._tone_slots(truth):
            # The tone's first packet arrives `shift` packets late.
            first = slots[0]
            order.remove(first)
            order.insert(order.index(first + shift) + 1, first)
        media = _call()
        agent = to_agent(send(media, [packets[i] for i in order]))
        assert_one_continuous_stream(agent)
        assert_no_digit(decode(agent))
        assert presses(media.drain_events()) == TEST_PAN
        assert media.stats()["offer"]["late"] == 16

    def test_duplicates(self, typed_pan: tuple) -> None:
        x, _ = typed_pan
        packets = inband_packets(x)
        doubled: list[RtpPacket] = []
        for i, p in enumerate(packets):
            doubled.append(p)
            if i % 3 == 0:
                doubled.append(p)
            if i % 7 == 0 and i >= 2:
                doubled.append(packets[i - 2])  # a stale copy 40 ms later
        media = _call()
        agent = to_agent(send(media, doubled))
        assert len(agent) == len(packets)
        assert_one_continuous_stream(agent)
        assert_no_digit(decode(agent))
        assert presses(media.drain_events()) == TEST_PAN
        assert media.stats()["offer"]["late"] == len(doubled) - len(packets)

    def test_one_very_late_packet_is_dropped_but_a_restarted_source_is_followed(self) -> None:
        stream = CallerStream(ts=80_000)
        silence = np.zeros(FRAME, np.float32)
        packets = [stream.audio(i, silence) for i in range(3)]
        stale = stream.audio(-100, silence)  # 2 s behind: one stray packet
        restarted = [stream.audio(-1000 + i, silence) for i in range(3)]  # the source jumped back
        media = _call()
        agent = to_agent(send(media, [*packets, stale, *restarted]))
        assert len(agent) == 3 + 2, "the stray and the restart's first packet are dropped"
        assert_one_continuous_stream(agent)
        assert media.stats()["offer"]["late"] == 2

    def test_a_new_caller_source_continues_the_agent_stream(self, typed_pan: tuple) -> None:
        x, _ = typed_pan
        first = inband_packets(x[: 40 * FRAME])
        second = [dataclasses.replace(p, ssrc=0x0BADCAFE, timestamp=(p.timestamp + 12_345_678) & 0xFFFFFFFF,
                                      sequence_number=(p.sequence_number + 20_000) & 0xFFFF)
                  for p in inband_packets(x[40 * FRAME :], CallerStream(seq=0, ts=0))]
        media = _call()
        agent = to_agent(send(media, [*first, *second]))
        assert_one_continuous_stream(agent)
        assert agent[40].marker
        assert_no_digit(decode(agent))
        assert presses(media.drain_events()) == TEST_PAN

    def test_silence_suppression_gap_is_bridged_with_one_packet(self) -> None:
        stream = CallerStream()
        tone = synth.dtmf_tone("5", 20.0)
        packets = [stream.audio(i, tone if i == 2 else np.zeros(FRAME, np.float32)) for i in range(3)]
        packets += [stream.audio(50 + i, np.zeros(FRAME, np.float32), marker=i == 0) for i in range(3)]
        agent = to_agent(send(_call(), packets))
        ts = [p.timestamp for p in agent]
        steps = [(b - a) & 0xFFFFFFFF for a, b in itertools.pairwise(ts)]
        assert steps == [FRAME, FRAME, FRAME, 47 * FRAME, FRAME, FRAME]
        assert agent[4].marker


class TestSourcesAndMalformedInput:
    def test_packets_from_another_source_are_dropped_and_counted(self) -> None:
        media = _call()
        packets = inband_packets(np.zeros(10 * FRAME, np.float32))
        assert send(media, packets[:1], src=("203.0.113.9", 40000)) == []  # wrong host
        assert len(send(media, packets[1:3])) == 2  # latches on port 40000
        assert send(media, packets[3:4], src=(CALLER[0], 40002)) == []  # same host, other port
        assert len(send(media, packets[4:])) == 7  # 6 + the dropped packet's time, concealed
        assert media.stats()["offer"]["dropped"] == 2
        assert media.stats()["offer"]["packets"] == 8

    def test_a_moved_endpoint_is_latched_again(self) -> None:
        media = _call()
        packets = inband_packets(np.zeros(4 * FRAME, np.float32))
        assert len(send(media, packets[:1])) == 1
        moved = ("192.0.2.11", 40100)
        media.set_endpoint("offer", _endpoint(moved))  # a re-INVITE
        assert send(media, packets[1:2]) == []
        assert len(send(media, packets[2:], src=moved)) == 3  # 2 + the dropped one's time, concealed

    def test_agent_is_latched_too_and_answers_go_where_it_sends_from(self) -> None:
        media = _call()
        agent_src = (AGENT[0], 50010)  # behind a port-rewriting box: sends from another port
        stream = CallerStream()
        reply = RtpPacket(8, 7, 1000, 0xFEED, b"\xd5" * FRAME)
        out = media.on_rtp("answer", reply.serialize(), agent_src, 0.0)
        assert [(leg, dest) for leg, _, dest in out] == [("offer", CALLER)]
        out = send(media, [stream.audio(0, np.zeros(FRAME, np.float32))])
        assert [(leg, dest) for leg, _, dest in out] == [("answer", agent_src)]

    @pytest.mark.parametrize(
        "data",
        [b"", b"\x80", b"\x00" * 12, b"\x80\x00\x00\x01" + b"\x00" * 7, b"\x8f\x00\x00\x01" + b"\x00" * 20,
         b"\xa0\x00\x00\x01" + b"\x00" * 8 + b"\x00", b"\x80\x00\x00\x01" + b"\x00" * 8],
        ids=["empty", "short", "version0", "truncated", "csrc-overrun", "bad-padding", "empty-payload"],
    )
    def test_malformed_packets_are_counted_and_dropped(self, data: bytes) -> None:
        media = _call()
        assert media.on_rtp("offer", data, CALLER, 0.0) == []
        assert media.stats()["offer"]["errors"] == 1
        good = inband_packets(np.zeros(FRAME, np.float32))
        assert len(send(media, good)) == 1

    def test_random_datagrams_never_raise(self) -> None:
        rng = np.random.default_rng(5)
        media = _call()
        for i in range(2000):
            data = rng.integers(0, 256, int(rng.integers(0, 400)), dtype=np.uint8).tobytes()
            if i % 2:
                data = b"\x80" + data[1:]  # version 2: goes deeper into the parser
            for leg, src in (("offer", CALLER), ("answer", AGENT)):
                media.on_rtp(leg, data, src, i * 0.001)
                media.on_rtcp(leg, data, (src[0], src[1] + 1), i * 0.001)
        stats = media.stats()
        assert stats["offer"]["errors"] > 0
        assert stats["answer"]["errors"] > 0

    def test_a_failure_in_the_chain_mutes_that_packet(self, typed_pan: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
        x, truth = typed_pan
        packets = inband_packets(x)
        media = _call()
        inside = truth[3].start_sample // FRAME + 1
        out = send(media, packets[:inside])
        chain = media._path.chain

        def broken(events: object) -> object:
            raise RuntimeError("masker failure")

        monkeypatch.setattr(chain.masker, "on_events", broken)
        failed = to_agent(send(media, packets[inside : inside + 1], t0=inside * 0.02))
        assert failed[0].payload == b"\xff" * FRAME  # mu-law silence
        assert media._path.chain is not chain, "a fresh chain takes over"
        out += send(media, packets[inside + 1 :], t0=(inside + 1) * 0.02)
        agent = to_agent(out[:inside]) + failed + to_agent(out[inside:])
        assert_one_continuous_stream(agent)
        assert_no_digit(decode(agent))
        assert media.stats()["offer"]["errors"] == 1


class TestAgentDirectionAndRtcp:
    def test_agent_packets_are_relayed_with_only_the_header_rewritten(self) -> None:
        media = _call()
        payloads = [bytes([i]) * FRAME for i in range(6)]
        packets = [RtpPacket(8, 300 + i, 9000 + FRAME * i, 0xFEED, payloads[i], i == 0) for i in range(6)]
        del packets[3]  # loss stays visible to the caller
        out = send(media, packets, leg="answer", src=AGENT)
        assert all(leg == "offer" and dest == CALLER for leg, _, dest in out)
        relayed = [RtpPacket.parse(d) for _, d, _ in out]
        assert [p.payload for p in relayed] == [p.payload for p in packets]
        assert len({p.ssrc for p in relayed}) == 1
        assert relayed[0].ssrc != 0xFEED
        seq = [p.sequence_number for p in relayed]
        assert [(b - a) & 0xFFFF for a, b in itertools.pairwise(seq)] == [1, 1, 2, 1]

    def test_rtcp_is_relayed_with_ssrcs_mapped(self) -> None:
        media = _call()
        caller_out = to_agent(send(media, inband_packets(np.zeros(2 * FRAME, np.float32))))
        agent_in = [RtpPacket(0, 1, 1, 0xFEED, b"\xff" * FRAME)]
        to_caller = [RtpPacket.parse(d) for _, d, _ in send(media, agent_in, leg="answer", src=AGENT)]
        # An RR from the caller: sender = its SSRC, one report block about what we sent it.
        rr = bytes([0x81, 201, 0, 7]) + SSRC.to_bytes(4, "big") + to_caller[0].ssrc.to_bytes(4, "big") + bytes(20)
        out = media.on_rtcp("offer", rr, (CALLER[0], CALLER[1] + 1), 1.0)
        assert [(leg, dest) for leg, _, dest in out] == [("answer", (AGENT[0], AGENT[1] + 1))]
        data = out[0][1]
        assert int.from_bytes(data[4:8], "big") == caller_out[0].ssrc
        assert int.from_bytes(data[8:12], "big") == 0xFEED
        assert data[12:] == rr[12:]
        assert media.stats()["offer"]["rtcp_packets"] == 1

    def test_rtcp_from_an_unexpected_source_is_dropped(self) -> None:
        media = _call()
        rr = bytes([0x80, 201, 0, 1]) + SSRC.to_bytes(4, "big")
        assert media.on_rtcp("offer", rr, ("203.0.113.9", 40001), 0.0) == []
        assert media.stats()["offer"]["dropped"] == 1


class TestLifecycle:
    def test_caller_may_be_the_answer_side(self, typed_pan: tuple) -> None:
        x, _ = typed_pan
        media = _call(caller="answer")
        out = send(media, inband_packets(x), leg="answer")
        assert all(leg == "offer" and dest == AGENT for leg, _, dest in out)
        assert_no_digit(decode([RtpPacket.parse(d) for _, d, _ in out]))

    def test_idle_time_counts_from_the_last_packet(self) -> None:
        media = _call()
        assert media.idle_s(100.0) == 0.0
        assert media.idle_s(103.5) == 3.5
        send(media, inband_packets(np.zeros(FRAME, np.float32)), t0=104.0)
        assert media.idle_s(110.0) == pytest.approx(6.0)

    def test_stats_and_summary_carry_no_digits(self, typed_pan: tuple) -> None:
        x, _ = typed_pan
        media = _call()
        send(media, inband_packets(x))
        summary = media.close()
        assert summary["digits"] == 16
        assert summary["call_id"] == "call-1@test"
        text = repr(summary) + repr(media.stats())
        assert "1111" not in text
        assert media.close() is summary
        assert media.on_rtp("offer", inband_packets(x)[0].serialize(), CALLER, 9.0) == []

    def test_no_packet_is_sent_before_the_agent_endpoint_is_known(self, typed_pan: tuple) -> None:
        x, _ = typed_pan
        media = CallMedia("early", masking=MaskSettings())
        media.set_endpoint("offer", _endpoint(CALLER))
        assert send(media, inband_packets(x)) == []
        assert presses(media.drain_events()) == TEST_PAN  # still captured

    def test_endpoint_from_sdp(self) -> None:
        sdp = (
            "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
            "m=audio 40000 RTP/AVP 8 0 96\r\na=rtpmap:96 telephone-event/8000\r\na=ptime:30\r\n"
        )
        endpoint = LegEndpoint.from_sdp(remote_endpoints(sdp)[0])
        assert endpoint == LegEndpoint("192.0.2.10", 40000, 40001, {8: "PCMA", 0: "PCMU", 96: "telephone-event"},
                                       96, 30)

    def test_payload_types_are_mapped_between_the_legs(self) -> None:
        x, truth = synth.dtmf_sequence("5", rng=1)
        media = _call(masking=False)
        media.set_endpoint("answer", dataclasses.replace(_endpoint(AGENT, {0: "PCMU", 97: "telephone-event"}),
                                                         telephone_event_pt=97))
        agent = to_agent(send(media, event_packets(np.zeros_like(x), truth)))
        assert {p.payload_type for p in agent} == {0, 97}


def test_mask_intervals_follow_the_gain() -> None:
    x, truth = synth.dtmf_sequence("12", on_ms=60, off_ms=100, rng=2)
    intervals = MaskIntervals()
    media = _call()
    for frame_in in _frames(x):
        out, _ = media._path.chain.process(frame_in)
        intervals.feed(out)
    assert intervals.count == 2
    for (a, b), t in zip(intervals.intervals, truth, strict=True):
        assert a <= t.start_sample
        assert b >= t.end_sample
