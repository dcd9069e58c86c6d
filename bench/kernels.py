"""Cost of the batch detection kernels in ns per channel-frame, and the arithmetic limit.

A channel-frame is 20 ms of one channel: 160 samples, four 5 ms sub-blocks. Three
kernels are timed, each jitted and as its NumPy twin:

* ``goertzel``: :func:`~dtmfguard.kernels.goertzel.goertzel_blocks` (twin
  :func:`~dtmfguard.kernels.goertzel.goertzel_blocks_numpy`);
* ``features``: :meth:`~dtmfguard.kernels.features.FeatureBank.process` (twin
  :func:`~dtmfguard.kernels.features.block_features_numpy`);
* ``step``: both, the complete per-frame detection step on a ``(160, batch)`` array.

Each case walks consecutive frames of its own audio (:mod:`bench.workload`) so the
decision kernel's history and fast path see realistic input. After one warm-up round
every case is run once per round, round after round (so slow drift of a shared machine
hits all cases alike). The median over rounds is the reported figure; ratios between
cases (the CI check) use each case's best round, since interference only adds time. Timing uses
``time.perf_counter_ns`` with the garbage collector paused.

The arithmetic limit counts the flops of the Goertzel bank per channel-frame and divides
by the core's peak float32 rate from :mod:`bench.machine`; the summary gives every batch's
jitted Goertzel and complete step as a multiple of it. The complete step's own limit adds
the decision kernel's floating-point operations, which depend on the input: the gate's for
every channel-sub-block the pre-pass looks at, the full tests' for every one they run on
(:func:`decision_work` counts both on each case's own frames, following the kernel's rule).

``python -m bench.kernels [--batches 1,64,1024] [--rounds N] [--frames N]`` times only
the jitted kernels (typical mix) and prints each batch's median and best round with
those multiples: a quick look while working on a kernel, without the whole benchmark.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.machine import Machine, describe
from bench.workload import FRAME_SAMPLES, ClipPool, Float32Array, batch_audio, frames
from dtmfguard import kernels as dsp
from dtmfguard.kernels.features import FeatureBank, FeatureState, block_features_numpy
from dtmfguard.kernels.goertzel import (
    BLOCK_SAMPLES,
    N_FREQS,
    BlockSpectra,
    goertzel_blocks,
    goertzel_blocks_numpy,
)

KERNELS = ("goertzel", "features", "step")
IMPLS = ("jit", "numpy")
BLOCKS_PER_FRAME = FRAME_SAMPLES // BLOCK_SAMPLES
FRAME_NS = 20_000_000
"""One channel-frame is 20 ms of stream time."""
STEP_TARGET_NS = 100.0
"""Issue target: complete per-frame step, jitted, at batch 1024 on one core."""

# Flops of the Goertzel bank per channel-frame, by part.
GOERTZEL_FLOPS: dict[str, int] = {
    # s0 = x + k * s1 - s2: one multiply-add (2 flops) and one subtract per sample and frequency.
    "recursion": FRAME_SAMPLES * N_FREQS * 3,
    # energy += x * x: one multiply-add per sample.
    "energy": FRAME_SAMPLES * 2,
    # re = s1 - cos_w * s2 (multiply-add), im = sin_w * s2 (multiply) per sub-block and frequency.
    "outputs": BLOCKS_PER_FRAME * N_FREQS * 3,
}

# Floating-point operations of the decision kernel (dtmfguard/kernels/features.py) per
# channel and 5 ms sub-block, counted from its source: a multiply, add, compare, min, max
# or division is one, a multiply-add two; selects and absolute values are not counted.
# (The compiled AVX2 loop of the full tests executes 1048 per channel-sub-block.)
DECISION_FLOPS: dict[str, int] = {
    # Per bin: seven complex rotate-and-adds (8 each) for W_2..W_6 and the previous windows,
    # eight powers and cross products (3 each).
    "windows": N_FREQS * (7 * 8 + 8 * 3),
    # Running best and second best bin per window, six bins taken into two groups.
    "best bins": 6 * 8,
    # Window energies (5) and the gate expression (7).
    "energies and gate": 12,
    # Four frequency offsets (10 and 15 ms, both groups): measurability 6, atan2 17,
    # wrapping 5, Hz 1, power correction 18.
    "frequency offsets": 4 * 47,
    # Level, twist, purity, offset, relative-peak and octave tests of the seven window
    # tests, the keys, the packed code and the bin-to-frequency selects.
    "tests and codes": 149,
}
# The gate pre-pass alone, per channel-sub-block: |X|^2 and |W_2|^2 of eight bins (14
# each), the best of each group (12) and the gate expression (8).
GATE_FLOPS: dict[str, int] = {"bins": N_FREQS * 14, "best bins": 12, "gate": 8}


def decision_work(bank: FeatureBank, spectra: Sequence[BlockSpectra]) -> dict[str, float]:
    """Run ``bank`` over ``spectra`` (one set per frame) and count, as its kernel decides
    them, the channel-sub-blocks the gate pre-pass looked at and those the full tests ran on;
    returns their shares of all channel-sub-blocks and the decision kernel's floating-point
    operations per channel-frame.

    The kernel's rule (``_gated_decisions``): a gated bank runs the pre-pass over every
    channel while fewer than half passed the gate in the previous sub-block, and the full
    tests on the ones it passes, or on every channel when at least half of them pass; an
    ungated bank runs the full tests on every channel. (The pre-pass's limits are lowered by
    2**-12, so it may pass a rare channel more than the exact gate counted here.)
    """
    n_ch = bank.state.n_channels
    n_prev = int(np.count_nonzero(bank.state.gate))
    pre = full = blocks = 0
    for s in spectra:
        bank.process(s)
        for passed in bank.gate_passed:
            n_pass = int(np.count_nonzero(passed))
            if bank.gated and 2 * n_prev < n_ch:
                pre += n_ch
                full += n_ch if 2 * n_pass >= n_ch else n_pass
            else:
                full += n_ch
            n_prev = n_pass
            blocks += 1
    total = max(1, blocks * n_ch)
    pre_share, full_share = pre / total, full / total
    flops = BLOCKS_PER_FRAME * (pre_share * sum(GATE_FLOPS.values()) + full_share * sum(DECISION_FLOPS.values()))
    return {"gate_prepass_share": pre_share, "full_tests_share": full_share, "flops_per_channel_frame": flops}


@contextmanager
def _gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass
class KernelCase:
    """One timed configuration; ``run`` does ``channel_frames`` channel-frames of work."""

    kernel: str
    impl: str
    mix: str
    batch: int
    run: Callable[[], None]
    channel_frames: int
    runs_ns_per_cf: list[float] = field(default_factory=list)
    # Floating-point operations per channel-frame on this case's frames (jitted cases), and
    # for the decision kernel what decision_work counted.
    flops_per_cf: float | None = None
    work: dict[str, float] | None = None

    @property
    def ns_per_channel_frame(self) -> float:
        return statistics.median(self.runs_ns_per_cf)

    @property
    def best_ns_per_channel_frame(self) -> float:
        return min(self.runs_ns_per_cf)

    def to_json(self) -> dict[str, Any]:
        return {
            "kernel": self.kernel,
            "impl": self.impl,
            "mix": self.mix,
            "batch": self.batch,
            "ns_per_channel_frame": self.ns_per_channel_frame,
            "best_ns_per_channel_frame": self.best_ns_per_channel_frame,
            "runs_ns_per_channel_frame": self.runs_ns_per_cf,
            "channel_frames_per_run": self.channel_frames,
            "flops_per_channel_frame": self.flops_per_cf,
            "decision_work": self.work,
        }


def _passes(n_frames: int, batch: int, min_channel_frames: int) -> int:
    return max(1, -(-min_channel_frames // (n_frames * batch)))


def _jit_cases(mix: str, batch: int, xs: Sequence[Float32Array], min_cf: int) -> list[KernelCase]:
    n_blocks = BLOCKS_PER_FRAME
    passes = _passes(len(xs), batch, min_cf)
    cf = passes * len(xs) * batch
    out = BlockSpectra(n_blocks, batch)
    step_bank = FeatureBank(batch, n_blocks)
    # The decision kernel alone reads spectra computed beforehand, one set per frame.
    spectra = [goertzel_blocks(x, BlockSpectra(n_blocks, batch)) for x in xs]
    feature_bank = FeatureBank(batch, n_blocks)

    def goertzel() -> None:
        for _ in range(passes):
            for x in xs:
                goertzel_blocks(x, out)

    def features() -> None:
        for _ in range(passes):
            for s in spectra:
                feature_bank.process(s)

    def step() -> None:
        for _ in range(passes):
            for x in xs:
                step_bank.process(goertzel_blocks(x, out))

    work = decision_work(FeatureBank(batch, n_blocks), spectra)
    g_flops = float(sum(GOERTZEL_FLOPS.values()))
    d_flops = work["flops_per_channel_frame"]
    return [
        KernelCase("goertzel", "jit", mix, batch, goertzel, cf, flops_per_cf=g_flops),
        KernelCase("features", "jit", mix, batch, features, cf, flops_per_cf=d_flops, work=work),
        KernelCase("step", "jit", mix, batch, step, cf, flops_per_cf=g_flops + d_flops, work=work),
    ]


def _numpy_cases(mix: str, batch: int, xs: Sequence[Float32Array], min_cf: int) -> list[KernelCase]:
    passes = _passes(len(xs), batch, min_cf)
    cf = passes * len(xs) * batch
    spectra = [goertzel_blocks_numpy(x) for x in xs]
    feature_state = FeatureState(batch)
    step_state = FeatureState(batch)

    def goertzel() -> None:
        for _ in range(passes):
            for x in xs:
                goertzel_blocks_numpy(x)

    def features() -> None:
        for _ in range(passes):
            for s in spectra:
                block_features_numpy(s, feature_state)

    def step() -> None:
        for _ in range(passes):
            for x in xs:
                block_features_numpy(goertzel_blocks_numpy(x), step_state)

    return [
        KernelCase("goertzel", "numpy", mix, batch, goertzel, cf),
        KernelCase("features", "numpy", mix, batch, features, cf),
        KernelCase("step", "numpy", mix, batch, step, cf),
    ]


@dataclass(frozen=True)
class KernelPlan:
    """What to time: batch sizes and mixes; frames and minimum work per run, per impl."""

    batches: tuple[int, ...]
    jit_mixes: tuple[str, ...]
    numpy_mixes: tuple[str, ...]
    jit_frames: int
    numpy_frames: int
    jit_min_channel_frames: int
    numpy_min_channel_frames: int
    rounds: int


def build_cases(plan: KernelPlan, pool: ClipPool) -> list[KernelCase]:
    """Every case of ``plan``, with its audio generated and its buffers allocated."""
    cases: list[KernelCase] = []
    mixes = dict.fromkeys(plan.jit_mixes + plan.numpy_mixes)
    for mix in mixes:
        for batch in plan.batches:
            n_frames = max(plan.jit_frames, plan.numpy_frames)
            xs = frames(batch_audio(pool, mix, batch, n_frames, seed=batch))
            if mix in plan.jit_mixes:
                cases += _jit_cases(mix, batch, xs[: plan.jit_frames], plan.jit_min_channel_frames)
            if mix in plan.numpy_mixes:
                cases += _numpy_cases(mix, batch, xs[: plan.numpy_frames], plan.numpy_min_channel_frames)
    return cases


def time_cases(cases: Sequence[KernelCase], rounds: int) -> None:
    """One warm-up round, then ``rounds`` timed rounds over all cases (fills ``runs_ns_per_cf``)."""
    dsp.warmup()
    for case in cases:
        case.run()
    with _gc_paused():
        for _ in range(rounds):
            for case in cases:
                t0_ns = time.perf_counter_ns()
                case.run()
                elapsed_ns = time.perf_counter_ns() - t0_ns
                case.runs_ns_per_cf.append(elapsed_ns / case.channel_frames)


def _find(rows: Sequence[dict[str, Any]], kernel: str, impl: str, mix: str, batch: int) -> dict[str, Any] | None:
    for row in rows:
        if (row["kernel"], row["impl"], row["mix"], row["batch"]) == (kernel, impl, mix, batch):
            return row
    return None


def summarize(
    rows: Sequence[dict[str, Any]], limit_ns: float | None, peak_gflops: float | None = None,
) -> dict[str, Any]:
    """Headline figures from timed cases (``KernelCase.to_json`` rows).

    The complete step, jitted, typical mix at the largest batch (and its all-DTMF worst
    case), channel-frames per second and concurrent 20 ms channels by kernel cost, the
    factor over the arithmetic limit (``limit_ns``), the step's own limit (its counted
    floating-point operations at ``peak_gflops``), and the two ratios the CI check uses.
    """
    batches = sorted({int(row["batch"]) for row in rows})
    summary: dict[str, Any] = {
        "largest_batch": batches[-1] if batches else None,
        "smallest_batch": batches[0] if batches else None,
        "step_target_ns": STEP_TARGET_NS,
    }
    if not batches:
        return summary
    big, small = batches[-1], batches[0]
    step = _find(rows, "step", "jit", "typical", big)
    worst = _find(rows, "step", "jit", "dtmf", big)
    goertzel = _find(rows, "goertzel", "jit", "typical", big)
    step_numpy = _find(rows, "step", "numpy", "typical", big)
    step_small = _find(rows, "step", "jit", "typical", small)
    if step is not None:
        ns = step["ns_per_channel_frame"]
        summary["step_jit_ns"] = ns
        summary["channel_frames_per_s"] = 1e9 / ns
        summary["concurrent_20ms_channels_per_core"] = FRAME_NS / ns
        if limit_ns:
            summary["step_x_arithmetic_limit"] = ns / limit_ns
    for key, row in (("step", step), ("step_worst", worst)):
        flops = row.get("flops_per_channel_frame") if row is not None else None
        if row is None or not flops or not peak_gflops:
            continue
        own_ns = flops / peak_gflops
        summary[f"{key}_flops_per_channel_frame"] = flops
        summary[f"{key}_own_limit_ns"] = own_ns
        summary[f"{key}_x_own_limit"] = row["ns_per_channel_frame"] / own_ns
        if row.get("decision_work"):
            summary[f"{key}_decision_work"] = row["decision_work"]
    if worst is not None:
        summary["step_jit_worst_ns"] = worst["ns_per_channel_frame"]
        summary["concurrent_20ms_channels_per_core_worst"] = FRAME_NS / worst["ns_per_channel_frame"]
    if goertzel is not None:
        summary["goertzel_jit_ns"] = goertzel["ns_per_channel_frame"]
        if limit_ns:
            summary["goertzel_x_arithmetic_limit"] = goertzel["ns_per_channel_frame"] / limit_ns
    if limit_ns:
        for kernel in ("goertzel", "step"):
            by_batch: dict[str, float] = {}
            for b in batches:
                row = _find(rows, kernel, "jit", "typical", b)
                if row is not None:
                    by_batch[str(b)] = row["ns_per_channel_frame"] / limit_ns
            if by_batch:
                summary[f"{kernel}_x_arithmetic_limit_by_batch"] = by_batch
    # Ratios from each case's best round: interference on a shared machine only ever adds time.
    if step is not None and step_numpy is not None:
        summary["step_jit_speedup_vs_numpy"] = (
            step_numpy["best_ns_per_channel_frame"] / step["best_ns_per_channel_frame"]
        )
    if step is not None and step_small is not None and small != big:
        summary["step_batch_gain"] = step_small["best_ns_per_channel_frame"] / step["best_ns_per_channel_frame"]
    return summary


def arithmetic_limit(machine: Machine) -> dict[str, Any]:
    """Flops of the Goertzel bank per channel-frame and the time they take at peak rate;
    the decision kernel's counts per channel-sub-block (full tests, gate pre-pass)."""
    flops = sum(GOERTZEL_FLOPS.values())
    limit_ns = flops / machine.peak_gflops if machine.peak_gflops else None
    return {
        "goertzel_flops_per_channel_frame": flops,
        "goertzel_flops_breakdown": dict(GOERTZEL_FLOPS),
        "decision_flops_per_channel_sub_block": sum(DECISION_FLOPS.values()),
        "decision_flops_breakdown": dict(DECISION_FLOPS),
        "gate_flops_per_channel_sub_block": sum(GATE_FLOPS.values()),
        "gate_flops_breakdown": dict(GATE_FLOPS),
        "peak_gflops_per_core": machine.peak_gflops,
        "assumption": machine.assumption,
        "limit_ns_per_channel_frame": limit_ns,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.kernels``: the jitted kernels alone, typical mix, one line per kernel and batch."""
    p = argparse.ArgumentParser(
        prog="python -m bench.kernels",
        description="Time the jitted detection kernels alone (typical mix): ns per channel-frame by batch, "
        "and as a multiple of the Goertzel bank's arithmetic limit.",
    )
    p.add_argument("--batches", default="1,64,1024", help="comma-separated batch sizes (default 1,64,1024)")
    p.add_argument("--rounds", type=int, default=15, help="timed rounds (default 15)")
    p.add_argument("--frames", type=int, default=50, help="frames of audio per case (default 50, as make bench)")
    args = p.parse_args(argv)
    plan = KernelPlan(
        batches=tuple(int(b) for b in args.batches.split(",")), jit_mixes=("typical",), numpy_mixes=(),
        jit_frames=args.frames, numpy_frames=1, jit_min_channel_frames=40_000, numpy_min_channel_frames=1,
        rounds=args.rounds,
    )
    limit = arithmetic_limit(describe())
    limit_ns = limit["limit_ns_per_channel_frame"]
    cases = build_cases(plan, ClipPool(2000.0, seed=24))
    time_cases(cases, plan.rounds)
    print(f"peak estimate: {limit['assumption']}")
    if limit_ns:
        print(f"arithmetic limit of the Goertzel bank: {limit['goertzel_flops_per_channel_frame']} flops "
              f"per channel-frame = {limit_ns:.1f} ns")
    print(f"{'kernel':<10}{'batch':>6}{'median ns':>11}{'best ns':>10}{'x limit':>9}   (per channel-frame)")
    for case in cases:
        ratio = f"{case.ns_per_channel_frame / limit_ns:9.2f}" if limit_ns else f"{'-':>9}"
        print(f"{case.kernel:<10}{case.batch:>6}{case.ns_per_channel_frame:>11.1f}"
              f"{case.best_ns_per_channel_frame:>10.1f}{ratio}")
    peak = limit["peak_gflops_per_core"]
    for case in cases:
        if case.kernel == "step" and case.flops_per_cf and case.work and peak:
            own_ns = case.flops_per_cf / peak
            print(f"step at batch {case.batch}: {case.flops_per_cf:.0f} flops per channel-frame with the decision "
                  f"kernel (full tests on {100 * case.work['full_tests_share']:.0f} % of channel-sub-blocks) = "
                  f"{own_ns:.1f} ns at peak; runs at {case.ns_per_channel_frame / own_ns:.2f}x that")
    return 0


if __name__ == "__main__":
    sys.exit(main())
