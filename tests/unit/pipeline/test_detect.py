"""Detector conformance with ITU-T Q.24 (AT&T column), onset and confirmation timing."""

from __future__ import annotations

import numpy as np
import pytest

from dtmfguard import q24, synth
from dtmfguard.levels import DTMF_KEYS
from dtmfguard.pipeline.detect import (
    ChannelDetector,
    DigitConfirmed,
    DigitEnded,
    ToneStarted,
    ToneTracker,
    detect_digits,
)

CASES = q24.all_cases()


def _digits(x: np.ndarray) -> str:
    return "".join(e.key for e in detect_digits(x))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_q24_case(case: q24.Case) -> None:
    assert _digits(case.samples) == case.expected


def _shifted(x: np.ndarray, pad: int) -> np.ndarray:
    return np.concatenate([np.zeros(pad, np.float32), x])


@pytest.mark.parametrize("case", [c for c in CASES if c.must_accept], ids=lambda c: c.name)
def test_onset_within_10ms_and_edges_within_2ms(case: q24.Case) -> None:
    pad = 17  # not aligned to the 5 ms sub-block grid
    det = ChannelDetector()
    events = det.process(_shifted(case.samples, pad)) + det.flush()
    starts = [e for e in events if isinstance(e, ToneStarted)]
    ended = [e for e in events if isinstance(e, DigitEnded)]
    assert len(ended) == len(case.truth)
    for truth, digit in zip(case.truth, ended, strict=True):
        t0 = truth.start_sample + pad
        onset = min((s.detected_sample for s in starts if s.detected_sample >= t0), default=None)
        assert onset is not None, truth
        assert onset - t0 <= 80, (truth, onset)
        assert abs(digit.onset_sample - t0) <= 16
        if not truth.breaks:
            assert abs(digit.end_sample - (truth.end_sample + pad)) <= 16


def test_confirmation_latency_distribution() -> None:
    rng = np.random.default_rng(11)
    lat = []
    for i in range(12):
        keys = "".join(rng.choice(list(DTMF_KEYS), 16))
        x, truth = synth.dtmf_sequence(keys, on_ms=60, off_ms=60, rng=rng,
                                       level_low_dbm0=float(rng.uniform(-25, -5)),
                                       twist_db=float(rng.uniform(-8, 4)))
        pad = int(rng.integers(0, 40))
        det = ChannelDetector()
        events = det.process(_shifted(x, pad)) + det.flush()
        conf = [e for e in events if isinstance(e, DigitConfirmed)]
        assert "".join(e.key for e in conf) == keys, i
        lat += [(c.confirmed_sample - (t.start_sample + pad)) / 8 for c, t in zip(conf, truth, strict=True)]
    assert np.percentile(lat, 50) <= 30.0
    assert np.percentile(lat, 99) <= 45.0


@pytest.mark.parametrize("offset", [0.03, 0.035, -0.035, 0.05])
@pytest.mark.parametrize("side", ["low", "high"])
def test_far_off_frequencies_rejected(side: str, offset: float) -> None:
    x, _ = synth.dtmf_sequence(DTMF_KEYS, on_ms=50, off_ms=50, rng=5, **{f"{side}_offset": offset})
    assert _digits(x) == ""


def test_long_tone_is_one_digit_and_duration_is_measured() -> None:
    x, truth = synth.dtmf_sequence("7", on_ms=1500, off_ms=50, rng=1)
    (digit,) = detect_digits(x)
    assert digit.key == "7"
    assert abs(digit.duration_samples - (truth[0].end_sample - truth[0].start_sample)) <= 16


def test_chunk_size_does_not_change_results() -> None:
    x, _ = synth.dtmf_sequence("159#", on_ms=55, off_ms=45, rng=9)
    whole = detect_digits(x)
    det = ChannelDetector()
    events = []
    rng = np.random.default_rng(0)
    pos = 0
    while pos < len(x):
        n = int(rng.integers(1, 400))
        events += det.process(x[pos : pos + n])
        pos += n
    events += det.flush()
    assert [e for e in events if isinstance(e, DigitEnded)] == whole


@pytest.mark.parametrize("maker", [synth.speech_like, synth.music_like], ids=["speech", "music"])
def test_talk_off_on_generated_signals(maker) -> None:  # type: ignore[no-untyped-def]
    for seed in range(3):
        assert _digits(maker(60_000, np.random.default_rng(seed))) == ""


def test_silence_and_nan_free_noise_give_nothing() -> None:
    assert _digits(np.zeros(8000, np.float32)) == ""
    noise = np.random.default_rng(0).standard_normal(80_000).astype(np.float32) * 0.1
    assert _digits(noise) == ""


def test_idle_step_equals_feeding_no_decisions() -> None:
    a, b = ToneTracker(), ToneTracker()
    energies = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    events: list = []
    a.feed([-1] * 6, [-1] * 6, [-1] * 6, energies, events)
    b.idle(energies)
    assert events == []
    assert (a.block, a._pre) == (b.block, b._pre)
