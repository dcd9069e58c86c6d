"""Tone-onset and digit-confirmation latency of the detector, on stream time.

A generated set of single digits, each a fresh :class:`ChannelDetector` fed in 20 ms
chunks. Every digit is drawn inside the ITU-T Q.24 acceptance range (the range the
issue's targets hold for):

* random key, tone length 40-120 ms;
* start not aligned to the 5 ms sub-block grid: 60 ms of lead plus a random 0-39 sample pad;
* twist (high minus low) uniform in -8..+4 dB, and both tones' levels within -25..-5 dBm0
  (the low tone is drawn uniformly from the range that allows it);
* each tone's frequency offset uniform within +/-(1.5 % + 2 Hz) of nominal;
* a quarter of the digits in white noise at 15 dB SNR against the weaker tone.

Onset latency is ``ToneStarted.detected_sample`` minus the true start (zero when a tone
run was already open at the true start); digit latency is the matching
``DigitConfirmed.confirmed_sample`` minus the true start. Both in ms. Everything is
seeded, so the figures are deterministic for a given detector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.workload import FRAME_SAMPLES, Float32Array
from dtmfguard import synth
from dtmfguard.levels import DTMF_KEYS, SAMPLE_RATE_HZ
from dtmfguard.pipeline.detect import (
    ChannelDetector,
    DigitConfirmed,
    ToneCancelled,
    ToneEnded,
    ToneEvent,
    ToneStarted,
)

ONSET_TARGET_MS = 10.0
"""Every tone: onset raised within this many ms of its true start."""
DIGIT_P50_TARGET_MS = 30.0
DIGIT_P99_TARGET_MS = 45.0

_LEAD_MS = 60.0
_TAIL_MS = 80.0
_NOISY_SHARE = 0.25
_SNR_DB = 15.0


@dataclass(frozen=True)
class DigitCase:
    """One generated digit: ``samples`` with the tone of ``key`` from ``start_sample``."""

    key: str
    start_sample: int
    samples: Float32Array
    params: dict[str, float | None]


def generate(n_digits: int, seed: int = 24) -> list[DigitCase]:
    """``n_digits`` single-digit signals drawn as the module docstring says."""
    rng = np.random.default_rng(seed)
    cases: list[DigitCase] = []
    for _ in range(n_digits):
        key = DTMF_KEYS[int(rng.integers(len(DTMF_KEYS)))]
        on_ms = float(rng.integers(40, 121))
        twist_db = float(rng.uniform(-8.0, 4.0))
        level_low_dbm0 = float(rng.uniform(-25.0 - min(twist_db, 0.0), -5.0 - max(twist_db, 0.0)))
        # Offset = u * (1.5 % of nominal + 2 Hz), the same u for both parts of the tolerance.
        u_low, u_high = (float(u) for u in rng.uniform(-1.0, 1.0, 2))
        x, truth = synth.dtmf_sequence(
            key, on_ms=on_ms, lead_ms=_LEAD_MS, tail_ms=_TAIL_MS, rng=rng,
            level_low_dbm0=level_low_dbm0, twist_db=twist_db,
            low_offset=0.015 * u_low, low_offset_hz=2.0 * u_low,
            high_offset=0.015 * u_high, high_offset_hz=2.0 * u_high,
        )
        pad = int(rng.integers(0, 40))
        x = np.concatenate([np.zeros(pad, np.float32), x])
        snr_db: float | None = None  # no noise
        if rng.random() < _NOISY_SHARE:
            snr_db = _SNR_DB
            weaker_dbm0 = level_low_dbm0 + min(twist_db, 0.0)
            x = synth.clip_int16(synth.add_white_noise(x, snr_db, reference_dbm0=weaker_dbm0, rng=rng))
        params: dict[str, float | None] = {
            "on_ms": on_ms, "level_low_dbm0": level_low_dbm0, "twist_db": twist_db,
            "low_offset_rel": u_low, "high_offset_rel": u_high, "pad_samples": pad, "snr_db": snr_db,
        }
        cases.append(DigitCase(key, truth[0].start_sample + pad, x.astype(np.float32), params))
    return cases


def _events(x: Float32Array) -> list[ToneEvent]:
    det = ChannelDetector()
    events: list[ToneEvent] = []
    for k in range(0, len(x), FRAME_SAMPLES):
        events += det.process(x[k : k + FRAME_SAMPLES])
    return events + det.flush()


def _onset_sample(events: list[ToneEvent], start: int) -> int | None:
    """When masking was first on for a tone starting at ``start`` (None: never)."""
    open_since: int | None = None
    for event in events:
        if isinstance(event, ToneStarted):
            if event.detected_sample > start:
                return open_since if open_since is not None else event.detected_sample
            open_since = event.detected_sample
        elif isinstance(event, ToneCancelled | ToneEnded) and event.detected_sample <= start:
            open_since = None
    return open_since


def _ms(samples: int) -> float:
    return samples * 1000.0 / SAMPLE_RATE_HZ


def distribution(values_ms: list[float]) -> dict[str, float | None]:
    """p50, p90, p99 (linear interpolation) and max, in ms; None when there are no values."""
    if not values_ms:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    a = np.asarray(values_ms)
    p50, p90, p99 = (float(v) for v in np.percentile(a, [50, 90, 99]))
    return {"p50": p50, "p90": p90, "p99": p99, "max": float(a.max())}


def measure(cases: list[DigitCase]) -> dict[str, Any]:
    """Latency distributions over ``cases``, with missed and wrongly decoded digits."""
    onset_ms: list[float] = []
    digit_ms: list[float] = []
    missed_onsets = 0
    missed_digits = 0
    wrong_digits = 0
    worst: dict[str, Any] = {}
    for case in cases:
        events = _events(case.samples)
        onset = _onset_sample(events, case.start_sample)
        if onset is None:
            missed_onsets += 1
        else:
            latency = _ms(max(0, onset - case.start_sample))
            onset_ms.append(latency)
            if latency > worst.get("onset_ms", -1.0):
                worst = {"onset_ms": latency, "key": case.key, **case.params}
        confirmed = [e for e in events if isinstance(e, DigitConfirmed)]
        wrong_digits += sum(e.key != case.key for e in confirmed)
        right = [e for e in confirmed if e.key == case.key]
        if right:
            digit_ms.append(_ms(right[0].confirmed_sample - case.start_sample))
        else:
            missed_digits += 1
    return {
        "n_digits": len(cases),
        "onset_ms": distribution(onset_ms),
        "digit_ms": distribution(digit_ms),
        "missed_onsets": missed_onsets,
        "missed_digits": missed_digits,
        "wrong_digits": wrong_digits,
        "worst_onset_case": worst,
        "targets_ms": {
            "onset_max": ONSET_TARGET_MS,
            "digit_p50": DIGIT_P50_TARGET_MS,
            "digit_p99": DIGIT_P99_TARGET_MS,
        },
    }
