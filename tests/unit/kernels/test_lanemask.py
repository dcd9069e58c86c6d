"""The lane's compiled masker against the reference Masker, frame by frame, on real detector events."""

from __future__ import annotations

import numpy as np
import pytest

from dtmfguard import synth
from dtmfguard.codecs.g711 import _ALAW_ENCODE, _ULAW_ENCODE, alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from dtmfguard.control.media import MaskIntervals
from dtmfguard.kernels.lanemask import (
    DELAY,
    M_MASKED,
    M_MASKING,
    M_OPENED,
    M_POS,
    M_WINDOWS,
    MAX_WINDOWS,
    W_ARMED,
    W_DETECTED,
    W_END,
    W_ENDED,
    W_START,
    W_SUSTAINED,
    LaneMasks,
    apply_events,
    mask_frame,
    ramp_table,
)
from dtmfguard.kernels.packets import DECODE_TABLE
from dtmfguard.kernels.tracker import (
    EV_ARMED,
    EV_CANCELLED,
    EV_DIGIT,
    EV_DIGIT_ENDED,
    EV_ENDED,
    EV_REFINED,
    EV_STARTED,
    EV_SUSTAINED,
)
from dtmfguard.pipeline.detect import (
    ChannelDetector,
    DigitConfirmed,
    DigitEnded,
    ToneArmed,
    ToneCancelled,
    ToneEnded,
    ToneEvent,
    ToneRefined,
    ToneStarted,
    ToneSustained,
)
from dtmfguard.pipeline.frames import AudioFrame
from dtmfguard.pipeline.mask import Masker, MaskMode, MaskSettings

pytestmark = pytest.mark.kernels

ENCODE = np.stack([_ULAW_ENCODE, _ALAW_ENCODE])


def _row(ev: ToneEvent) -> list[int]:
    if isinstance(ev, ToneStarted):
        return [EV_STARTED, ev.start_sample, ev.detected_sample, 0, 0]
    if isinstance(ev, ToneArmed):
        return [EV_ARMED, ev.start_sample, ev.detected_sample, 0, 0]
    if isinstance(ev, ToneSustained):
        return [EV_SUSTAINED, ev.start_sample, ev.detected_sample, 0, 0]
    if isinstance(ev, ToneRefined):
        return [EV_REFINED, ev.start_sample, 0, 0, 0]
    if isinstance(ev, ToneCancelled):
        return [EV_CANCELLED, ev.start_sample, ev.detected_sample, 0, 0]
    if isinstance(ev, ToneEnded):
        return [EV_ENDED, ev.start_sample, ev.end_sample, ev.detected_sample, 0]
    if isinstance(ev, DigitConfirmed):
        return [EV_DIGIT, 0, ev.onset_sample, ev.confirmed_sample, 0]
    assert isinstance(ev, DigitEnded)
    return [EV_DIGIT_ENDED, 0, ev.onset_sample, ev.confirmed_sample, ev.end_sample]


def _windows(masker: Masker) -> list[tuple[int, int | None, int, bool, bool]]:
    return [(w.start, w.end, w.detected, w.armed, w.sustained) for w in masker._windows]


def _kernel_windows(masks: LaneMasks, s: int) -> list[tuple[int, int | None, int, bool, bool]]:
    out = []
    for w in masks.wins[s, : masks.ints[s, M_WINDOWS]]:
        end = int(w[W_END]) if w[W_ENDED] else None
        out.append((int(w[W_START]), end, int(w[W_DETECTED]), bool(w[W_ARMED]), bool(w[W_SUSTAINED])))
    return out


def _signal(kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "typing":
        x, _ = synth.dtmf_sequence("4111111111111111", on_ms=70, off_ms=80, lead_ms=100, rng=rng)
    elif kind == "fast":
        x, _ = synth.dtmf_sequence("55", on_ms=50, off_ms=43, lead_ms=30, rng=rng)
    elif kind == "over-speech":
        tones, _ = synth.dtmf_sequence("4012", on_ms=90, off_ms=60, lead_ms=400, rng=rng)
        x = synth.speech_like(len(tones) / 8.0 + 300, rng=rng, level_dbm0=-22.0)
        x[: len(tones)] += tones
    elif kind == "short-bursts":  # tones too short to be digits: onsets that get cancelled or end early
        x, _ = synth.dtmf_sequence("1937", on_ms=25, off_ms=60, lead_ms=50, rng=rng)
    else:
        x = synth.speech_like(3000, rng=rng, level_dbm0=-18.0)
    n = len(x) // DELAY * DELAY
    return np.clip(x[:n], -1.0, 1.0).astype(np.float32)


@pytest.mark.parametrize("kind", ["typing", "fast", "over-speech", "short-bursts", "speech"])
@pytest.mark.parametrize("codec", [0, 1], ids=["PCMU", "PCMA"])
@pytest.mark.parametrize("mode", [MaskMode.FLAT_TONE, MaskMode.SILENCE])
def test_the_compiled_masker_masks_like_the_masker_byte_for_byte(kind: str, codec: int, mode: MaskMode) -> None:
    rng = np.random.default_rng(hash((kind, codec)) & 0xFFFF)
    x = _signal(kind, rng)
    encode, decode = (alaw_encode, alaw_decode) if codec else (ulaw_encode, ulaw_decode)
    payloads = encode(x)
    payloads[payloads == 127] = 255  # mu-law 127 is minus zero, which the reference path re-encodes as 255
    audio = decode(payloads)
    settings = MaskSettings(mode=mode)
    masker = Masker(settings)
    detector = ChannelDetector()
    intervals = MaskIntervals()
    s = 3
    masks = LaneMasks(5)
    masks.ints[s, M_MASKING] = 1
    table = ramp_table(masker.ramp)
    tone = masker._tone_table if mode is MaskMode.FLAT_TONE else np.zeros(DELAY, np.float32)
    period = masker._tone_period if mode is MaskMode.FLAT_TONE else 0
    prev = np.zeros(DELAY, np.uint8) + (0xD5 if codec else 0xFF)  # the delay line starts silent
    out = np.zeros(DELAY, np.uint8)
    gain = np.zeros(DELAY, np.float32)
    toggles = np.zeros((DELAY + 2, 2), np.int64)
    kernel_toggles: list[int] = []
    seen_kinds: set[type] = set()
    for f in range(len(x) // DELAY):
        samples = audio[f * DELAY : (f + 1) * DELAY]
        events = detector.process(samples)
        seen_kinds.update(type(e) for e in events)
        masker.on_events(events)
        frame = masker.process(AudioFrame(samples.copy(), f * DELAY))
        intervals.feed(frame)
        want = encode(frame.samples)

        rows = np.array([[0, *_row(e)] for e in events], np.int64).reshape(-1, 6)
        apply_events(rows, 0, len(rows), masks.wins, masks.ints, s, masker.pre)
        n_t = mask_frame(
            masks.wins, masks.ints, s, prev, codec, out, 0, masker.pre, masker.post, table, tone, period,
            DECODE_TABLE, ENCODE, gain, toggles, 0,
        )
        kernel_toggles += toggles[:n_t, 1].tolist()
        assert (toggles[:n_t, 0] == s).all()
        prev = payloads[f * DELAY : (f + 1) * DELAY]
        np.testing.assert_array_equal(out, want, err_msg=f"frame {f}")
        assert _kernel_windows(masks, s) == _windows(masker), f"frame {f}"
        assert masks.ints[s, M_POS] == masker._in_pos
    assert masks.ints[s, M_MASKED] == masker.masked_total
    assert masks.ints[s, M_OPENED] == masker.windows_total
    flat = [p for pair in intervals.intervals for p in pair] + ([intervals._open_at] if intervals.masking else [])
    assert kernel_toggles == flat
    if kind in ("typing", "fast", "over-speech"):
        assert masker.masked_total > 0, "the signal had tones to mask"
        assert {ToneStarted, ToneArmed, ToneEnded} <= seen_kinds
    if kind == "short-bursts":
        assert ToneStarted in seen_kinds


def test_masking_off_relays_the_frame_and_still_follows_the_windows() -> None:
    rng = np.random.default_rng(7)
    x = _signal("typing", rng)
    payloads = ulaw_encode(x)
    payloads[payloads == 127] = 255
    masker = Masker(MaskSettings(enabled=False))
    detector = ChannelDetector()
    masks = LaneMasks(1)  # M_MASKING 0
    out = np.zeros(DELAY, np.uint8)
    toggles = np.zeros((DELAY + 2, 2), np.int64)
    prev = np.full(DELAY, 0xFF, np.uint8)
    for f in range(len(x) // DELAY):
        samples = ulaw_decode(payloads[f * DELAY : (f + 1) * DELAY])
        events = detector.process(samples)
        masker.on_events(events)
        masker.process(AudioFrame(samples, f * DELAY))
        rows = np.array([[0, *_row(e)] for e in events], np.int64).reshape(-1, 6)
        apply_events(rows, 0, len(rows), masks.wins, masks.ints, 0, masker.pre)
        n_t = mask_frame(
            masks.wins, masks.ints, 0, prev, 0, out, 0, masker.pre, masker.post, ramp_table(masker.ramp),
            masker._tone_table, masker._tone_period, DECODE_TABLE, ENCODE, np.zeros(DELAY, np.float32), toggles, 0,
        )
        assert n_t == 0
        np.testing.assert_array_equal(out, prev)
        assert _kernel_windows(masks, 0) == _windows(masker)
        prev = payloads[f * DELAY : (f + 1) * DELAY]
    assert masks.ints[0, M_MASKED] == 0


def test_a_full_slot_takes_no_more_windows() -> None:
    masks = LaneMasks(1)
    rows = np.array([[0, EV_STARTED, 100 * i, 100 * i + 40, 0, 0] for i in range(MAX_WINDOWS + 3)], np.int64)
    apply_events(rows, 0, len(rows), masks.wins, masks.ints, 0, 28)
    assert masks.ints[0, M_WINDOWS] == MAX_WINDOWS
    assert masks.ints[0, M_OPENED] == MAX_WINDOWS
