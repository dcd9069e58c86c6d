"""CI regression check on a benchmark result.

Absolute times drift on shared CI machines, so the kernel checks are ratios measured in
the same run (:mod:`bench.kernels` interleaves the cases round by round): the jitted
complete step must stay well ahead of its NumPy twin, and batching must still pay off
per channel. The thresholds sit far below what a healthy build measures, so only a real
regression (a kernel falling back to slow code, a per-call cost growing with the batch)
trips them. The latency checks are deterministic (seeded signals, stream time) and use
the issue's targets directly.
"""

from __future__ import annotations

from typing import Any

from bench.kernels import summarize
from bench.latency import DIGIT_P50_TARGET_MS, DIGIT_P99_TARGET_MS, ONSET_TARGET_MS

MIN_STEP_SPEEDUP_VS_NUMPY = 7.0
"""Jitted complete step vs its NumPy twin at the largest batch, typical mix (22-31x measured).

A faster NumPy twin lowers this ratio without any regression: revisit the bound then."""
MIN_STEP_BATCH_GAIN = 2.0
"""Jitted complete step, ns per channel-frame at the smallest batch / at the largest (6.6-8.8x measured)."""


def failures(result: dict[str, Any]) -> list[str]:
    """One message per failed check; empty when the result passes."""
    out: list[str] = []
    if not result.get("jit_enabled", True):
        out.append("numba JIT is disabled (NUMBA_DISABLE_JIT is set): kernel ratios mean nothing; run without it")
    # Recomputed from the raw timings, so a saved file is judged on what was measured.
    ks = summarize(result["kernels"]["results"], None)
    big, small = ks["largest_batch"], ks["smallest_batch"]
    speedup = ks.get("step_jit_speedup_vs_numpy")
    if speedup is None:
        out.append(f"no jitted-vs-NumPy complete step at batch {big}, typical mix, to check")
    elif speedup < MIN_STEP_SPEEDUP_VS_NUMPY:
        out.append(
            f"jitted complete step at batch {big} is only {speedup:.2f}x faster than its NumPy twin "
            f"(must be >= {MIN_STEP_SPEEDUP_VS_NUMPY:.1f}x): a kernel is running slow code"
        )
    gain = ks.get("step_batch_gain")
    if gain is None:
        out.append("no two batch sizes to check the batching gain with")
    elif gain < MIN_STEP_BATCH_GAIN:
        out.append(
            f"jitted complete step costs {gain:.2f}x less per channel at batch {big} than at batch {small} "
            f"(must be >= {MIN_STEP_BATCH_GAIN:.1f}x): batching no longer pays off"
        )
    lat = result["latency"]
    onset_max = lat["onset_ms"]["max"]
    if lat["missed_onsets"]:
        out.append(f"{lat['missed_onsets']} of {lat['n_digits']} tones never raised an onset")
    if onset_max is not None and onset_max > ONSET_TARGET_MS:
        out.append(
            f"onset latency reached {onset_max:.2f} ms (every tone must be within {ONSET_TARGET_MS:.0f} ms); "
            f"worst case: {lat['worst_onset_case']}"
        )
    if lat["missed_digits"] or lat["wrong_digits"]:
        out.append(
            f"{lat['missed_digits']} of {lat['n_digits']} digits missed and {lat['wrong_digits']} wrong digits "
            "inside the Q.24 acceptance range"
        )
    digit = lat["digit_ms"]
    if digit["p50"] is not None and digit["p50"] > DIGIT_P50_TARGET_MS:
        out.append(f"digit latency p50 {digit['p50']:.2f} ms > {DIGIT_P50_TARGET_MS:.0f} ms")
    if digit["p99"] is not None and digit["p99"] > DIGIT_P99_TARGET_MS:
        out.append(f"digit latency p99 {digit['p99']:.2f} ms > {DIGIT_P99_TARGET_MS:.0f} ms")
    return out
