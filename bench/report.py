"""The benchmark result as a table on stdout and as JSON under ``bench/results/``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.kernels import IMPLS, KERNELS
from bench.workload import MIXES

RESULTS_DIR = Path(__file__).resolve().parent / "results"

_MIX_LABEL = {"typical": "typical", "dtmf": "all-DTMF"}


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _num(value: float | None, fmt: str = ".1f") -> str:
    return "-" if value is None else format(value, fmt)


def _kernel_lines(kernels: dict[str, Any]) -> list[str]:
    batches = kernels["plan"]["batches"]
    rounds = kernels["plan"]["rounds"]
    by_key = {(r["kernel"], r["impl"], r["mix"], r["batch"]): r for r in kernels["results"]}
    lines = [
        f"Kernels: ns per channel-frame (20 ms of one channel), median of {rounds} rounds",
        f"{'kernel':<10}{'impl':<7}{'mix':<10}" + "".join(f"{'batch ' + str(b):>13}" for b in batches),
    ]
    for kernel in KERNELS:
        for impl in IMPLS:
            for mix in MIXES:
                cells = [by_key.get((kernel, impl, mix, b)) for b in batches]
                if all(c is None for c in cells):
                    continue
                values = "".join(f"{_num(c['ns_per_channel_frame'] if c else None):>13}" for c in cells)
                lines.append(f"{kernel:<10}{impl:<7}{_MIX_LABEL[mix]:<10}{values}")
    return lines


def format_table(result: dict[str, Any]) -> str:
    """The whole result as plain text, with PASS/FAIL beside each of the issue's targets."""
    m = result["machine"]
    v = result["versions"]
    limit = result["arithmetic_limit"]
    ks = result["kernels"]["summary"]
    big = ks["largest_batch"]
    lines = [
        f"dtmfguard bench ({result['mode']}) {result['timestamp_utc']}  "
        f"python {v['python']}, numpy {v['numpy']}, numba {v['numba']}"
        + ("" if result["jit_enabled"] else "  [JIT DISABLED]"),
        f"CPU: {m['model']}, {m['logical_cpus']} logical CPUs; peak estimate: {limit['assumption']}",
        "",
        *_kernel_lines(result["kernels"]),
        "",
    ]
    if "step_jit_ns" in ks:
        step = ks["step_jit_ns"]
        lines.append(
            f"Complete step, jit, typical mix, batch {big}: {step:.1f} ns per channel-frame "
            f"(target <= {ks['step_target_ns']:.0f} ns: {_verdict(step <= ks['step_target_ns'])})"
        )
    if "step_jit_worst_ns" in ks:
        lines.append(f"  same, every channel carrying DTMF (worst case): {ks['step_jit_worst_ns']:.1f} ns")
    if limit["limit_ns_per_channel_frame"]:
        lines.append(
            f"Arithmetic limit: the Goertzel bank needs {limit['goertzel_flops_per_channel_frame']} flops "
            f"per channel-frame = {limit['limit_ns_per_channel_frame']:.1f} ns at peak; at batch {big} "
            f"the Goertzel kernel runs at {_num(ks.get('goertzel_x_arithmetic_limit'))}x that, "
            f"the complete step at {_num(ks.get('step_x_arithmetic_limit'))}x"
        )
    for key, label in (("step", "typical mix"), ("step_worst", "all-DTMF")):
        if f"{key}_own_limit_ns" not in ks:
            continue
        work = ks.get(f"{key}_decision_work") or {}
        lines.append(
            f"  with the decision kernel ({label}): {ks[f'{key}_flops_per_channel_frame']:.0f} flops per "
            f"channel-frame (gate pre-pass on {100 * work.get('gate_prepass_share', 0.0):.0f} %, full tests on "
            f"{100 * work.get('full_tests_share', 0.0):.0f} % of channel-sub-blocks) = "
            f"{ks[f'{key}_own_limit_ns']:.1f} ns at peak; the step runs at {ks[f'{key}_x_own_limit']:.1f}x that"
        )
    if "step_jit_speedup_vs_numpy" in ks:
        lines.append(
            f"Jitted vs NumPy twin, complete step, batch {big}: "
            f"{ks['step_jit_speedup_vs_numpy']:.1f}x faster (best rounds)"
        )
    if "step_batch_gain" in ks:
        lines.append(
            f"Batching: jitted complete step per channel, batch {ks['smallest_batch']} / batch {big}: "
            f"{ks['step_batch_gain']:.1f}x (best rounds)"
        )
    lines += ["", _throughput_lines(result), "", _latency_lines(result["latency"])]
    lines += ["", f"warm-up {result['warmup_s']:.1f} s, total {result['elapsed_s']:.1f} s"]
    return "\n".join(lines)


def _throughput_lines(result: dict[str, Any]) -> str:
    ks = result["kernels"]["summary"]
    det = result["detector"]
    big = ks["largest_batch"]
    rows: list[tuple[str, float]] = []
    if "step_jit_ns" in ks:
        rows.append((f"batch kernels, {big} channels, typical", ks["step_jit_ns"]))
    if "step_jit_worst_ns" in ks:
        rows.append((f"batch kernels, {big} channels, all-DTMF", ks["step_jit_worst_ns"]))
    rows.append(("ChannelDetector, 20 ms chunks", det["live_20ms_chunks"]["ns_per_channel_frame"]))
    rows.append(("ChannelDetector, whole recording", det["offline_whole_recording"]["ns_per_channel_frame"]))
    lines = [
        "Throughput on one core",
        f"{'path':<40}{'ns/ch-frame':>13}{'ch-frames/s':>14}{'20 ms channels':>16}",
    ]
    for name, ns in rows:
        lines.append(f"{name:<40}{ns:>13.1f}{1e9 / ns:>14,.0f}{20e6 / ns:>16,.0f}")
    lines.append(
        f"ChannelDetector on {det['seconds_of_audio']:.0f} s of speech with typed card numbers: "
        f"{det['live_20ms_chunks']['digits_decoded']} of {det['digits_typed']} digits decoded"
    )
    return "\n".join(lines)


def _latency_lines(lat: dict[str, Any]) -> str:
    t = lat["targets_ms"]
    onset = lat["onset_ms"]
    digit = lat["digit_ms"]
    onset_ok = lat["missed_onsets"] == 0 and onset["max"] is not None and onset["max"] <= t["onset_max"]
    p50_ok = digit["p50"] is not None and digit["p50"] <= t["digit_p50"]
    p99_ok = digit["p99"] is not None and digit["p99"] <= t["digit_p99"]
    all_ok = lat["missed_digits"] == 0 and lat["wrong_digits"] == 0
    head = f"{'':<22}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}"
    return "\n".join([
        f"Latency from true tone start, ms, over {lat['n_digits']} generated digits (Q.24 acceptance range)",
        head,
        f"{'onset (mask now)':<22}" + "".join(f"{_num(onset[k]):>8}" for k in ("p50", "p90", "p99", "max"))
        + f"   max <= {t['onset_max']:.0f}: {_verdict(onset_ok)}",
        f"{'digit confirmed':<22}" + "".join(f"{_num(digit[k]):>8}" for k in ("p50", "p90", "p99", "max"))
        + f"   p50 <= {t['digit_p50']:.0f}: {_verdict(p50_ok)}, p99 <= {t['digit_p99']:.0f}: {_verdict(p99_ok)}",
        f"missed onsets {lat['missed_onsets']}, missed digits {lat['missed_digits']}, "
        f"wrong digits {lat['wrong_digits']}: {_verdict(all_ok and lat['missed_onsets'] == 0)}",
    ])


def save(result: dict[str, Any], directory: Path = RESULTS_DIR) -> Path:
    """Write ``bench-<UTC timestamp>.json`` and ``latest.json`` in ``directory``; return the first."""
    directory.mkdir(parents=True, exist_ok=True)
    # allow_nan=False: a NaN or infinity would make the file invalid JSON; fail here instead.
    text = json.dumps(result, indent=2, allow_nan=False) + "\n"
    stamp = result["timestamp_utc"].replace("-", "").replace(":", "")
    path = directory / f"bench-{stamp}.json"
    path.write_text(text, encoding="utf-8")
    (directory / "latest.json").write_text(text, encoding="utf-8")
    return path
