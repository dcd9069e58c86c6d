"""Run every benchmark under one set of :class:`Settings` and gather a JSON-ready result.

``Settings.full()`` is ``make bench``; ``Settings.short()`` is the CI version (batch 1 and
1024 only, fewer rounds, frames and digits; well under a minute on two shared cores).
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numba
import numpy as np

from bench import detector, latency, load
from bench.kernels import KernelPlan, arithmetic_limit, build_cases, summarize, time_cases
from bench.machine import describe
from bench.workload import ClipPool
from dtmfguard import kernels as dsp

SCHEMA = 1


@dataclass(frozen=True)
class Settings:
    mode: str
    kernels: KernelPlan
    clip_ms: float
    detector_seconds: float
    detector_runs: int
    latency_digits: int
    seed: int = 24
    load: load.LoadPlan | None = None  # the served-load benchmark (None: skipped)

    @classmethod
    def full(cls) -> Settings:
        return cls(
            mode="full",
            kernels=KernelPlan(
                batches=(1, 64, 1024), jit_mixes=("typical", "dtmf"), numpy_mixes=("typical", "dtmf"),
                jit_frames=50, numpy_frames=10, jit_min_channel_frames=40_000,
                numpy_min_channel_frames=1_000, rounds=7,
            ),
            clip_ms=2000.0, detector_seconds=120.0, detector_runs=5, latency_digits=600,
            load=load.LoadPlan.full(),
        )

    @classmethod
    def short(cls) -> Settings:
        return cls(
            mode="short",
            kernels=KernelPlan(
                batches=(1, 1024), jit_mixes=("typical", "dtmf"), numpy_mixes=("typical",),
                jit_frames=25, numpy_frames=4, jit_min_channel_frames=20_000,
                numpy_min_channel_frames=200, rounds=5,
            ),
            clip_ms=1000.0, detector_seconds=30.0, detector_runs=3, latency_digits=200,
            load=load.LoadPlan.short(),
        )


def _kernel_section(settings: Settings, pool: ClipPool, limit: dict[str, Any]) -> dict[str, Any]:
    plan = settings.kernels
    cases = build_cases(plan, pool)
    time_cases(cases, plan.rounds)
    rows = [c.to_json() for c in cases]
    summary = summarize(rows, limit["limit_ns_per_channel_frame"], limit["peak_gflops_per_core"])
    return {"plan": asdict(plan), "results": rows, "summary": summary}


def run(settings: Settings) -> dict[str, Any]:
    """All benchmarks; returns the result that :mod:`bench.report` prints and saves."""
    t0 = time.perf_counter()
    machine = describe()
    warmup_t0 = time.perf_counter()
    dsp.warmup()
    warmup_s = time.perf_counter() - warmup_t0
    pool = ClipPool(settings.clip_ms, seed=settings.seed)
    limit = arithmetic_limit(machine)
    kernel_section = _kernel_section(settings, pool, limit)
    channel = detector.long_channel(pool, settings.detector_seconds, seed=settings.seed)
    throughput = detector.detector_throughput(channel, settings.detector_runs)
    latencies = latency.measure(latency.generate(settings.latency_digits, seed=settings.seed))
    return {
        "schema": SCHEMA,
        "timestamp_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "mode": settings.mode,
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "numba": numba.__version__,
        },
        # numba.config sets its attributes from the environment at run time, so they are
        # invisible to the type checker.
        "jit_enabled": not getattr(numba.config, "DISABLE_JIT", False),
        "warmup_s": warmup_s,
        "machine": machine.to_json(),
        "arithmetic_limit": limit,
        "kernels": kernel_section,
        "detector": throughput,
        "latency": latencies,
        "load": load.run(settings.load) if settings.load is not None else None,
        "elapsed_s": time.perf_counter() - t0,
    }
