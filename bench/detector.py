"""Throughput of the whole per-channel detector path, in channel-frames per second per core.

:class:`dtmfguard.pipeline.detect.ChannelDetector` on one long channel: speech-like
audio and quiet line, with card numbers typed over it every few seconds. Two ways in:

* ``live``: 20 ms chunks, one :meth:`process` call each, as the proxy feeds a call;
* ``offline``: the whole recording in one call, as ``dtmfguard detect`` does.

Each run uses a fresh detector; the median over runs is reported, with the number of
digits decoded as a sanity check (every typed digit should be found).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.kernels import FRAME_NS
from bench.workload import FRAME_SAMPLES, ClipPool, Float32Array
from dtmfguard import synth
from dtmfguard.pipeline.detect import ChannelDetector, DigitEnded, ToneEvent

_CARD_NUMBER = "4111111111111111"
_TYPING_EVERY_S = 5.0


@dataclass(frozen=True)
class LongChannel:
    samples: Float32Array
    n_digits: int

    @property
    def n_frames(self) -> int:
        return len(self.samples) // FRAME_SAMPLES


def long_channel(pool: ClipPool, seconds: float, seed: int = 5) -> LongChannel:
    """``seconds`` of one channel: pool clips end to end, a card number typed every few seconds."""
    rng = np.random.default_rng(seed)
    n_samples = synth.ms_to_samples(seconds * 1000.0)
    n_samples -= n_samples % FRAME_SAMPLES
    pieces: list[Float32Array] = []
    total = 0
    while total < n_samples:
        kind = "speech" if rng.random() < 0.7 else "quiet"
        clip = pool.channel(kind, rng, pool.n_samples)
        pieces.append(clip)
        total += len(clip)
    x = np.concatenate(pieces)[:n_samples].astype(np.float64)
    typed, _ = synth.dtmf_sequence(_CARD_NUMBER, on_ms=80.0, off_ms=80.0, lead_ms=0.0, tail_ms=0.0,
                                   level_low_dbm0=-10.0, rng=rng)
    n_digits = 0
    step = synth.ms_to_samples(_TYPING_EVERY_S * 1000.0)
    for start in range(step // 2, n_samples - len(typed), step):
        x[start : start + len(typed)] += typed
        n_digits += len(_CARD_NUMBER)
    return LongChannel(synth.clip_int16(x), n_digits)


def _live(x: Float32Array) -> list[ToneEvent]:
    det = ChannelDetector()
    events: list[ToneEvent] = []
    for k in range(0, len(x), FRAME_SAMPLES):
        events += det.process(x[k : k + FRAME_SAMPLES])
    return events + det.flush()


def _offline(x: Float32Array) -> list[ToneEvent]:
    det = ChannelDetector()
    return det.process(x) + det.flush()


def detector_throughput(channel: LongChannel, runs: int) -> dict[str, Any]:
    """Median channel-frames per second (and ns per channel-frame) for the live and offline paths."""
    result: dict[str, Any] = {
        "seconds_of_audio": len(channel.samples) / 8000.0,
        "channel_frames": channel.n_frames,
        "digits_typed": channel.n_digits,
    }
    for name, path in (("live_20ms_chunks", _live), ("offline_whole_recording", _offline)):
        digits = sum(isinstance(e, DigitEnded) for e in path(channel.samples))  # warm-up
        per_run_ns: list[int] = []
        for _ in range(runs):
            t0_ns = time.perf_counter_ns()
            path(channel.samples)
            per_run_ns.append(time.perf_counter_ns() - t0_ns)
        ns_per_cf = statistics.median(per_run_ns) / channel.n_frames
        result[name] = {
            "ns_per_channel_frame": ns_per_cf,
            "channel_frames_per_s": 1e9 / ns_per_cf,
            "concurrent_20ms_channels_per_core": FRAME_NS / ns_per_cf,
            "digits_decoded": digits,
        }
    return result
