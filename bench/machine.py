"""What the core can do: SIMD width, FMA, clock, and the peak float32 flops it implies.

The peak is an estimate from ``/proc/cpuinfo`` (flags and ``cpu MHz``, or the cpufreq
maximum when the kernel exposes it), under a stated model of the floating-point units:
with FMA, two FMA units each retiring one vector of float32 lanes per cycle (two flops
per lane); without FMA, one multiply and one add unit. It is the "arithmetic limit"
kernels are compared with, not a measurement.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_CPUINFO = Path("/proc/cpuinfo")
_CPUFREQ_MAX_KHZ = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")


@dataclass(frozen=True)
class Machine:
    """The CPU as the benchmark sees it; ``peak_gflops`` is per core, float32."""

    model: str
    logical_cpus: int
    simd: str
    float32_lanes: int
    fma: bool
    fma_units: int
    flops_per_cycle: int
    clock_mhz: float | None
    clock_source: str
    peak_gflops: float | None
    assumption: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _cpuinfo_fields() -> dict[str, str]:
    """The first processor's ``key: value`` lines of /proc/cpuinfo (empty if absent)."""
    fields: dict[str, str] = {}
    try:
        text = _CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def _clock_mhz(fields: dict[str, str]) -> tuple[float | None, str]:
    try:
        return int(_CPUFREQ_MAX_KHZ.read_text().strip()) / 1000.0, "cpufreq cpuinfo_max_freq"
    except (OSError, ValueError):
        pass
    try:
        return float(fields["cpu MHz"]), "/proc/cpuinfo cpu MHz"
    except (KeyError, ValueError):
        return None, "unknown"


def describe(fields: dict[str, str] | None = None, clock: tuple[float | None, str] | None = None) -> Machine:
    """Describe this machine (or the given cpuinfo ``fields`` and ``clock``, for tests)."""
    if fields is None:
        fields = _cpuinfo_fields()
    flags = set(fields.get("flags", fields.get("Features", "")).split())
    if "avx512f" in flags:
        simd, lanes = "avx512f", 16
    elif "avx2" in flags:
        simd, lanes = "avx2", 8
    elif "avx" in flags:
        simd, lanes = "avx", 8
    elif flags & {"sse2", "asimd", "neon"}:
        simd, lanes = "128-bit", 4
    else:
        simd, lanes = "scalar", 1
    fma = "fma" in flags or "asimd" in flags
    if fma:
        units = 2
        flops_per_cycle = units * lanes * 2
        assumption = (
            f"{units} FMA units x {lanes} float32 lanes ({simd}) x 2 flops per FMA per cycle"
        )
    else:
        units = 0
        flops_per_cycle = lanes * 2
        assumption = f"1 multiply + 1 add unit x {lanes} float32 lanes ({simd}) per cycle"
    mhz, source = clock if clock is not None else _clock_mhz(fields)
    peak = flops_per_cycle * mhz / 1000.0 if mhz else None
    if mhz:
        assumption += f" at {mhz:.0f} MHz ({source}) = {peak:.1f} GFLOP/s per core"
    model = fields.get("model name") or platform.processor() or platform.machine()
    return Machine(
        model=model,
        logical_cpus=os.cpu_count() or 1,
        simd=simd,
        float32_lanes=lanes,
        fma=fma,
        fma_units=units,
        flops_per_cycle=flops_per_cycle,
        clock_mhz=mhz,
        clock_source=source,
        peak_gflops=peak,
        assumption=assumption,
    )
