"""The quiet lane against the ordinary path: same datagrams to the agent, same keys, in every case.

Several calls run side by side; each 20 ms step hands every caller datagram of the step
to the lane in one pass, as the transport does (datagrams of calls in the lane go to
:meth:`QuietLane.process`, the others and the fallbacks to :meth:`CallMedia.on_rtp`),
then the bank runs and each call sends what it masked and may enter the lane. The
reference is the same calls with no bank at all (one chain per call, per packet). The
agent must get byte-identical datagrams, apart from the G.711 sign of zero (the
ordinary path re-encodes decoded silence), in the same order.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from dtmfguard import synth
from dtmfguard.codecs.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from dtmfguard.control.lane import OnEvents, QuietLane
from dtmfguard.control.media import CallMedia, LegEndpoint
from dtmfguard.pipeline.batch import DetectorBank
from dtmfguard.pipeline.detect import DigitConfirmed, DigitEnded, ToneEvent, ToneStarted
from dtmfguard.pipeline.mask import MaskMode, MaskSettings
from dtmfguard.protocol.rfc4733 import TelephoneEvent
from dtmfguard.protocol.rtp import RtpPacket
from tests.support.decoders import multimon_digits, spandsp_digits

TEST_PAN = "5555555555554444"
CALLER = ("127.0.0.1", 40000)
AGENT = ("127.0.0.1", 50000)
NAMES = {0: "PCMU", 8: "PCMA", 101: "telephone-event"}
FRAME = 160

# The lane's packet kernels run as plain Python in the NUMBA_DISABLE_JIT pass too.
pytestmark = pytest.mark.kernels

Packet = tuple[str, bytes, tuple[str, int]]  # leg, datagram, source


def _media(bank: DetectorBank | None, call_id: str, settings: MaskSettings | None = None) -> CallMedia:
    media = CallMedia(call_id, masking=settings or MaskSettings(), bank=bank)
    media.set_endpoint("offer", LegEndpoint(CALLER[0], CALLER[1], CALLER[1] + 1, NAMES, 101))
    media.set_endpoint("answer", LegEndpoint(AGENT[0], AGENT[1], AGENT[1] + 1, NAMES, 101))
    return media


def run_plain(
    streams: list[list[Packet | None]], settings: MaskSettings | None = None,
) -> tuple[list[list[bytes]], list[str]]:
    out: list[list[bytes]] = []
    keys: list[str] = []
    for i, stream in enumerate(streams):
        media = _media(None, f"plain-{i}", settings)
        sent: list[bytes] = []
        for step, packet in enumerate(stream):
            if packet is not None:
                sent += [d for _, d, _ in media.on_rtp(packet[0], packet[1], packet[2], 0.02 * step)]
        out.append(sent)
        keys.append(_keys(media))
    return out, keys


def run_laned(
    streams: list[list[Packet | None]], *, between: Callable[[int, list[CallMedia]], None] | None = None,
    settings: MaskSettings | None = None,
) -> tuple[list[list[bytes]], list[str], QuietLane]:
    bank = DetectorBank(capacity=2)
    lane = QuietLane(bank)
    calls = [_media(bank, f"laned-{i}", settings) for i in range(len(streams))]
    sent: list[list[bytes]] = [[] for _ in calls]
    events: list[list[object]] = [[] for _ in calls]
    for step in range(max(map(len, streams))):
        now = 0.02 * step
        if between is not None:
            between(step, calls)
        arrived = [(i, s[step]) for i, s in enumerate(streams) if step < len(s) and s[step] is not None]
        # The transport's routing: a caller RTP datagram from the latched source of a
        # call in the lane goes to the lane; everything else the ordinary way.
        to_lane = [
            (i, p) for i, p in arrived
            if p is not None and calls[i].lane_slot is not None and p[0] == calls[i].caller
            and p[2] == calls[i].lane_route()[1]
        ]
        ordinary = [(i, p) for i, p in arrived if (i, p) not in to_lane]
        if to_lane:
            result = lane.process(
                [p[1] for _, p in to_lane], [calls[i].lane_slot for i, _ in to_lane], now,  # type: ignore[misc]
            )
            by_slot = {calls[i].lane_slot: i for i, _ in to_lane}
            for row, slot in result.sends:
                sent[by_slot[slot]].append(result.out[row].tobytes())
            for k in result.fallbacks:
                i, p = to_lane[k]
                calls[i].leave_lane()
                ordinary.append((i, p))
        for i, p in ordinary:
            assert p is not None
            sent[i] += [d for _, d, _ in calls[i].on_rtp(p[0], p[1], p[2], now)]
        bank.run()
        for i, media in enumerate(calls):
            sent[i] += [d for _, d, _ in media.process_tick()]
            events[i] += media.drain_events()
            if media.lane_slot is None:
                media.enter_lane(lane, lambda: None)
    keys = []
    for media in calls:
        media.leave_lane()
        keys.append(_keys(media))
    return sent, keys, lane


def _keys(media: CallMedia) -> str:
    # drain_events was consumed in run_laned; count presses from the stats instead.
    return str(media.stats()["digits"])


def _zero_sign(datagrams: list[bytes]) -> list[tuple[int, bool, int, int, bytes]]:
    """What the agent gets, comparable across calls: payload type, marker, sequence number
    and timestamp relative to the first packet (each call draws its own random start and
    SSRC), and the payload with the G.711 code of negative zero mapped to positive zero
    (PCMU 0x7F->0xFF, PCMA 0xD5->0x55)."""
    packets = [RtpPacket.parse(d) for d in datagrams]
    if not packets:
        return []
    assert len({p.ssrc for p in packets}) == 1
    seq0, ts0 = packets[0].sequence_number, packets[0].timestamp
    out = []
    zero_pairs = {0: (0x7F, 0xFF), 8: (0xD5, 0x55)}
    for p in packets:
        payload = p.payload
        if p.payload_type in zero_pairs:
            neg, pos = zero_pairs[p.payload_type]
            payload = bytes(pos if b == neg else b for b in payload)
        out.append((p.payload_type, p.marker, (p.sequence_number - seq0) & 0xFFFF,
                    (p.timestamp - ts0) & 0xFFFFFFFF, payload))
    return out


def audio_stream(
    x: npt.NDArray[np.float32], *, pt: int = 0, ssrc: int = 0x5EED, seq: int = 65_500, ts: int = 2**32 - 800,
) -> list[Packet | None]:
    encode = ulaw_encode if pt == 0 else alaw_encode
    frames = len(x) // FRAME
    return [
        ("offer", RtpPacket(pt, (seq + i) & 0xFFFF, (ts + FRAME * i) & 0xFFFFFFFF, ssrc,
                            encode(x[i * FRAME : (i + 1) * FRAME]).tobytes(), i == 0).serialize(), CALLER)
        for i in range(frames)
    ]


def speech_with_card(seed: int, lead_ms: float = 1500.0) -> npt.NDArray[np.float32]:
    tones, _ = synth.dtmf_sequence(TEST_PAN, on_ms=70, off_ms=80, lead_ms=13, rng=seed)
    voice = synth.speech_like(lead_ms * 2 + len(tones) / 8.0, rng=seed, level_dbm0=-30.0)
    start = int(lead_ms * 8)
    voice[start : start + len(tones)] += tones
    return np.clip(voice, -1.0, 1.0).astype(np.float32)


def decoded(datagrams: list[bytes]) -> npt.NDArray[np.float32]:
    parts = []
    for d in datagrams:
        p = RtpPacket.parse(d)
        codes = np.frombuffer(p.payload, np.uint8)
        if p.payload_type == 0:
            parts.append(ulaw_decode(codes))
        elif p.payload_type == 8:
            parts.append(alaw_decode(codes))
    return np.concatenate(parts)


def assert_same(streams: list[list[Packet | None]], **kwargs: object) -> QuietLane:
    plain, plain_keys = run_plain(streams, kwargs.get("settings"))  # type: ignore[arg-type]
    laned, laned_keys, lane = run_laned(streams, **kwargs)  # type: ignore[arg-type]
    assert laned_keys == plain_keys
    for a, b in zip(laned, plain, strict=True):
        assert len(a) == len(b)
        assert _zero_sign(a) == _zero_sign(b)
    return lane


@pytest.mark.parametrize("pt", [0, 8], ids=["PCMU", "PCMA"])
def test_calls_with_speech_and_a_typed_card(pt: int) -> None:
    streams = [audio_stream(speech_with_card(seed, lead_ms=1000 + 300 * seed), pt=pt, ssrc=100 + seed)
               for seed in range(3)]
    lane = assert_same(streams)
    total = sum(len(s) for s in streams)
    # The lane runs the masker: after each call's first packet, every frame stays in it,
    # the typed keys included (they are masked and confirmed there).
    assert lane.fallbacks == 0
    assert lane.frames == total - len(streams)
    assert lane.onsets >= 3 * 16
    laned, keys, _ = run_laned(streams)
    assert keys == ["16", "16", "16"]
    for sent in laned:
        audio = decoded(sent)
        assert multimon_digits(audio) == ""
        assert spandsp_digits(audio) == ""


@pytest.mark.parametrize("mode", [MaskMode.FLAT_TONE, MaskMode.SILENCE, MaskMode.COMFORT_NOISE])
def test_a_tone_that_leaves_the_lane_midway_hands_its_window_to_the_masker(mode: MaskMode) -> None:
    """A packet lost inside each of the first keys: the call leaves the lane with a tone's
    window open (or, for a masker the lane does not run, at the tone's first decision);
    the masker goes on from there exactly as if it had seen every frame."""
    x = speech_with_card(4, lead_ms=600)
    stream = audio_stream(x)
    key_frames = [int((600 + 13 + 150 * k + 40) * 8) // FRAME for k in range(4)]
    for f in key_frames:
        stream[f] = None  # lost in the middle of a key
    lane = assert_same([stream, audio_stream(speech_with_card(5))], settings=MaskSettings(mode=mode))
    if mode is MaskMode.COMFORT_NOISE:
        # The lane does not run this masker: every key leaves at its first tone decision,
        # handing over the onset's window it followed.
        assert lane.fallbacks >= 2 * 16
        assert lane.handovers > 0
    else:
        assert len(key_frames) <= lane.fallbacks < 16
        assert lane.handovers >= len(key_frames), "each loss left the lane with the key's window open"


def test_loss_reordering_duplicates_and_a_restarted_source() -> None:
    x = speech_with_card(7)
    stream = audio_stream(x)
    stream[60] = None  # lost
    stream[80], stream[81] = stream[81], stream[80]  # reordered
    stream[100] = stream[99]  # duplicate (the original 100 lost)
    restarted = audio_stream(x[: 40 * FRAME], ssrc=0xBEEF, seq=7, ts=123_456)
    lane = assert_same([stream + restarted, audio_stream(speech_with_card(8))])
    assert lane.frames > 100


def test_rfc4733_events_and_a_marker_take_the_ordinary_path() -> None:
    x = synth.speech_like(3000, rng=9)
    stream = audio_stream(x)
    ts0 = 2**32 - 800
    for i, slot in enumerate((50, 51, 52)):
        payload = TelephoneEvent(5, i == 2, 10, FRAME * (i + 1)).serialize()
        event = RtpPacket(101, 30_000 + i, (ts0 + 50 * FRAME) & 0xFFFFFFFF, 0x5EED, payload, i == 0).serialize()
        stream.insert(slot + i, ("offer", event, CALLER))
    marked = RtpPacket.parse(stream[120][1])  # type: ignore[index]
    stream[120] = ("offer", RtpPacket(marked.payload_type, marked.sequence_number, marked.timestamp, marked.ssrc,
                                      marked.payload, True).serialize(), CALLER)
    plain, plain_keys = run_plain([stream])
    laned, laned_keys, lane = run_laned([stream])
    assert laned_keys == plain_keys == ["1"]
    assert _zero_sign(laned[0]) == _zero_sign(plain[0])
    assert lane.fallbacks >= 2, "the first event and the marked packet fell back"


def test_the_agent_moving_and_a_re_invite_leave_the_lane() -> None:
    x = synth.speech_like(4000, rng=10)
    stream = audio_stream(x)
    agent_packet = RtpPacket(0, 9, 1000, 0xA6E, bytes(160)).serialize()

    def between(step: int, calls: list[CallMedia]) -> None:
        media = calls[0]
        if step == 60:
            assert media.lane_slot is not None
            media.on_rtp("answer", agent_packet, ("127.0.0.1", 50010), 1.2)  # the agent latches elsewhere
            assert media.lane_slot is None
        if step == 120:
            assert media.lane_slot is not None
            stats = media.stats()
            assert stats["offer"]["packets"] == 120, "packets in the lane are counted"
            media.set_endpoint("offer", LegEndpoint(CALLER[0], CALLER[1], CALLER[1] + 1, NAMES, 101))
            assert media.lane_slot is None

    laned, _, lane = run_laned([stream], between=between)
    assert lane.frames > 100
    packets = [RtpPacket.parse(d) for d in laned[0]]
    seq = np.array([p.sequence_number for p in packets])
    ts = np.array([p.timestamp for p in packets], np.int64)
    assert len({p.ssrc for p in packets}) == 1
    assert set(((seq[1:] - seq[:-1]) & 0xFFFF).tolist()) == {1}
    assert set(((ts[1:] - ts[:-1]) & 0xFFFFFFFF).tolist()) == {FRAME}
    assert not any(p.marker for p in packets[1:])


def test_idle_time_follows_packets_in_the_lane() -> None:
    bank = DetectorBank(capacity=1)
    lane = QuietLane(bank)
    media = _media(bank, "idle")
    silence = audio_stream(np.zeros(FRAME * 20, np.float32))
    for step, packet in enumerate(silence[:5]):
        assert packet is not None
        media.on_rtp(*packet, 0.02 * step)
        bank.run()
        media.process_tick()
    assert media.enter_lane(lane, lambda: None) is not None
    for step, packet in enumerate(silence[5:], start=5):
        assert packet is not None
        result = lane.process([packet[1]], [media.lane_slot], 0.02 * step)  # type: ignore[list-item]
        assert result.fallbacks == []
    assert media.idle_s(0.02 * 19 + 1.0) == pytest.approx(1.0)


def test_garbage_from_the_latched_source_changes_nothing() -> None:
    """Random datagrams (some RTP-shaped, 172 bytes, even with the stream's own header
    fields but a wrong timestamp) mixed into a call in the lane: nothing raises, and the
    agent gets what the ordinary path alone sends for the same datagrams."""
    rng = np.random.default_rng(12)
    good = audio_stream(speech_with_card(3, lead_ms=800))
    mixed: list[Packet | None] = []
    for packet in good:
        mixed.append(packet)
        if rng.random() < 0.2:
            assert packet is not None
            size = int(rng.choice([0, 1, 12, 171, 172, 173, 400]))
            junk = bytearray(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
            if size == 172 and rng.random() < 0.5:
                junk[:12] = packet[1][:12]  # the stream's header ...
                junk[4] ^= 0x10  # ... with a timestamp far off
            mixed.append(("offer", bytes(junk), CALLER))
    lane = assert_same([mixed])
    assert lane.frames > 50
    assert lane.fallbacks > 10


def test_warmup_compiles_every_signature_the_lane_uses() -> None:
    """A call in the lane must never wait for Numba to compile (start-up warms every kernel)."""
    from dtmfguard.kernels import columns, features, goertzel, packets, tracker, warmup

    kernels = [
        f for module in (packets, columns, goertzel, features, tracker) for f in vars(module).values()
        if hasattr(f, "signatures")
    ]
    if not kernels:
        pytest.skip("Numba's JIT is disabled")
    warmup()
    before = {id(f): len(f.signatures) for f in kernels}
    run_laned([audio_stream(speech_with_card(1, lead_ms=600)), audio_stream(speech_with_card(2, lead_ms=900), pt=8)])
    assert {id(f): len(f.signatures) for f in kernels} == before
    # Sixteen calls fill a compact batch of sixteen columns exactly (the pass's arrays are
    # then whole, not column slices).
    voice = synth.speech_like(300.0, rng=3, level_dbm0=-30.0)
    run_laned([audio_stream(voice, ssrc=0x100 + i) for i in range(16)])
    assert {id(f): len(f.signatures) for f in kernels} == before


def test_an_observer_sees_every_detector_event_in_the_lane_others_only_their_keys() -> None:
    """Metrics observe every detector event; a call nobody observes is handed only its
    digit events from the lane (speech onsets come many times a second)."""
    streams = [audio_stream(speech_with_card(seed, lead_ms=1200), ssrc=200 + seed) for seed in range(2)]
    plain = _media(None, "plain-observed")
    expected: list[ToneEvent] = []
    plain._path.observer = expected.extend
    for step, packet in enumerate(streams[0]):
        assert packet is not None
        plain.on_rtp(packet[0], packet[1], packet[2], 0.02 * step)
    assert any(isinstance(e, ToneStarted) for e in expected)
    seen: list[ToneEvent] = []
    handed: list[list[ToneEvent]] = [[], []]  # what the lane handed each call

    def hook(step: int, calls: list[CallMedia]) -> None:
        if step > 0:
            return
        calls[0]._path.observer = seen.extend
        for media, got in zip(calls, handed, strict=True):
            inner = media._lane_events

            def sink(
                events: list[ToneEvent], edges: list[int], inner: OnEvents = inner, got: list[ToneEvent] = got,
            ) -> None:
                got.extend(events)
                inner(events, edges)

            media._lane_events = sink  # type: ignore[method-assign]

    _, keys, lane = run_laned(streams, between=hook)
    assert keys == ["16", "16"]
    assert lane.fallbacks == 0
    assert seen == expected
    assert any(isinstance(e, ToneStarted) for e in handed[0])
    assert {type(e) for e in handed[1]} == {DigitConfirmed, DigitEnded}
