"""The benchmark package: a shrunk short run writes valid JSON; the CI check catches regressions."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench import check
from bench.__main__ import main
from bench.kernels import summarize
from bench.machine import describe
from bench.runner import Settings

pytestmark = pytest.mark.slow


def _tiny() -> Settings:
    """The short settings (same batches, mixes and code path) with far less work."""
    short = Settings.short()
    plan = dataclasses.replace(
        short.kernels, jit_frames=2, numpy_frames=1, jit_min_channel_frames=1, numpy_min_channel_frames=1, rounds=2
    )
    return dataclasses.replace(
        short, kernels=plan, clip_ms=200.0, detector_seconds=6.0, detector_runs=1, latency_digits=12
    )


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("bench")
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(["--short", "--out", str(out)], settings=_tiny()) == 0
    return out, buffer.getvalue()


def _load(path: Path) -> dict[str, Any]:
    # parse_constant rejects NaN and Infinity, which are not JSON.
    def reject(name: str) -> None:
        raise ValueError(f"{path.name} holds {name}")

    result: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"), parse_constant=reject)
    return result


def test_short_run_writes_timestamped_and_latest_json(measured: tuple[Path, str]) -> None:
    out, _ = measured
    stamped = sorted(out.glob("bench-*.json"))
    assert len(stamped) == 1
    assert _load(stamped[0]) == _load(out / "latest.json")


def test_short_run_result_covers_every_measurement(measured: tuple[Path, str]) -> None:
    result = _load(measured[0] / "latest.json")
    assert result["mode"] == "short"
    rows = result["kernels"]["results"]
    assert {(r["kernel"], r["impl"], r["batch"]) for r in rows} >= {
        (k, i, b) for k in ("goertzel", "features", "step") for i in ("jit", "numpy") for b in (1, 1024)
    }
    assert {r["mix"] for r in rows if r["impl"] == "jit"} == {"typical", "dtmf"}
    assert all(r["ns_per_channel_frame"] > 0 for r in rows)
    summary = result["kernels"]["summary"]
    for key in ("step_jit_ns", "step_jit_worst_ns", "step_jit_speedup_vs_numpy", "step_batch_gain",
                "concurrent_20ms_channels_per_core"):
        assert summary[key] > 0, key
    assert result["arithmetic_limit"]["goertzel_flops_per_channel_frame"] == 160 * 8 * 3 + 160 * 2 + 4 * 8 * 3
    if result["arithmetic_limit"]["peak_gflops_per_core"]:
        # The step's own limit counts the decision kernel too: more flops than the Goertzel bank alone.
        goertzel_flops = result["arithmetic_limit"]["goertzel_flops_per_channel_frame"]
        for key in ("step", "step_worst"):
            assert summary[f"{key}_flops_per_channel_frame"] > goertzel_flops
            assert summary[f"{key}_x_own_limit"] > 0
    detector = result["detector"]
    assert detector["live_20ms_chunks"]["channel_frames_per_s"] > 0
    assert detector["live_20ms_chunks"]["digits_decoded"] == detector["digits_typed"]
    latency = result["latency"]
    assert latency["n_digits"] == 12
    assert all(math.isfinite(latency[k]["p99"]) for k in ("onset_ms", "digit_ms"))


def test_short_run_prints_the_table(measured: tuple[Path, str]) -> None:
    text = measured[1]
    for heading in ("Kernels: ns per channel-frame", "Arithmetic limit", "Throughput on one core",
                    "onset (mask now)", "digit confirmed"):
        assert heading in text
    if describe().peak_gflops:
        assert "with the decision kernel (typical mix)" in text


# -- the regression check, on synthetic results (no timing noise)


def _row(kernel: str, impl: str, mix: str, batch: int, ns: float) -> dict[str, Any]:
    return {"kernel": kernel, "impl": impl, "mix": mix, "batch": batch, "ns_per_channel_frame": ns,
            "best_ns_per_channel_frame": ns, "runs_ns_per_channel_frame": [ns], "channel_frames_per_run": 1}


def _healthy() -> dict[str, Any]:
    rows = [
        # About what a healthy build measures: 25x over the twin, 6.9x from batching.
        _row("step", "jit", "typical", 1, 7600.0),
        _row("step", "jit", "typical", 1024, 1100.0),
        _row("step", "numpy", "typical", 1024, 28000.0),
    ]
    dist = {"p50": 28.0, "p90": 31.0, "p99": 32.0, "max": 33.0}
    return {
        "jit_enabled": True,
        "kernels": {"results": rows, "summary": summarize(rows, None)},
        "latency": {
            "n_digits": 100, "onset_ms": {**dist, "p50": 6.0, "max": 9.4}, "digit_ms": dist,
            "missed_onsets": 0, "missed_digits": 0, "wrong_digits": 0, "worst_onset_case": {},
        },
    }


def _scale_jit_step(result: dict[str, Any], batch: int, factor: float) -> None:
    for row in result["kernels"]["results"]:
        if (row["kernel"], row["impl"], row["batch"]) == ("step", "jit", batch):
            row["ns_per_channel_frame"] *= factor
            row["best_ns_per_channel_frame"] *= factor


def test_check_passes_a_healthy_result() -> None:
    assert check.failures(_healthy()) == []


def test_check_fails_when_the_jitted_step_regresses_far(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = copy.deepcopy(_healthy())
    _scale_jit_step(result, 1024, 10.0)
    path = tmp_path / "regressed.json"
    path.write_text(json.dumps(result), encoding="utf-8")
    assert main(["--check-file", str(path)]) == 1
    err = capsys.readouterr().err
    assert "bench check FAILED" in err
    assert "faster than its NumPy twin" in err
    assert "batching no longer pays off" in err


def test_check_fails_on_late_onset_and_digit_latency() -> None:
    result = copy.deepcopy(_healthy())
    result["latency"]["onset_ms"]["max"] = 12.5
    result["latency"]["digit_ms"]["p99"] = 50.0
    problems = check.failures(result)
    assert any("onset latency reached 12.50 ms" in p for p in problems)
    assert any("p99 50.00 ms > 45 ms" in p for p in problems)


def test_check_fails_on_missed_digits_and_disabled_jit() -> None:
    result = copy.deepcopy(_healthy())
    result["latency"]["missed_digits"] = 2
    result["jit_enabled"] = False
    problems = check.failures(result)
    assert any("2 of 100 digits missed" in p for p in problems)
    assert any("JIT is disabled" in p for p in problems)


def test_check_file_that_is_not_json_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{", encoding="utf-8")
    assert main(["--check-file", str(path)]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_peak_estimate_follows_the_cpu_flags() -> None:
    avx2 = describe({"model name": "x", "flags": "sse2 avx avx2 fma"}, (3000.0, "test"))
    assert (avx2.float32_lanes, avx2.flops_per_cycle, avx2.peak_gflops) == (8, 32, 96.0)
    avx512 = describe({"flags": "avx2 fma avx512f"}, (2000.0, "test"))
    assert avx512.flops_per_cycle == 64
    no_fma = describe({"flags": "sse2 avx"}, (1000.0, "test"))
    assert (no_fma.fma, no_fma.flops_per_cycle) == (False, 16)
    unknown_clock = describe({"flags": "avx2 fma"}, (None, "unknown"))
    assert unknown_clock.peak_gflops is None


def test_a_load_step_where_nothing_arrived_has_no_latency_and_stays_valid_json() -> None:
    import numpy as np

    from bench.load import _stats

    sent = np.arange(1, 21, dtype=np.int64).reshape(10, 2) * 1_000_000
    nothing = _stats(sent, np.zeros_like(sent), 0.0, 0)
    assert nothing["lost"] == 20
    assert nothing["packet_p50_ms"] is None
    assert nothing["packet_p99_ms"] is None
    json.dumps(nothing, allow_nan=False)
    half_ms_late = _stats(sent, sent + 500_000, 0.0, 0)
    assert half_ms_late["lost"] == 0
    assert half_ms_late["packet_p99_ms"] == pytest.approx(0.5)


def test_a_load_step_says_whether_late_packets_were_one_stall_or_many() -> None:
    import numpy as np

    from bench.load import _stats

    sent = (np.arange(100, dtype=np.int64)[:, None] * 20 + np.arange(4)[None, :]) * 1_000_000  # 2 s, 4 calls
    received = sent + 1_000_000
    received[52, 1] += 30_000_000  # one packet 31 ms late, in the 11th 100 ms window
    one_stall = _stats(sent, received, 0.0, 0)
    assert (one_stall["slow_windows"], one_stall["windows"]) == (1, 20)
    assert one_stall["packet_max_ms"] == pytest.approx(31.0)
    received[::3, 0] += 10_000_000  # every third packet of a call late: every window
    assert _stats(sent, received, 0.0, 0)["slow_windows"] == 20


def test_a_load_steps_warm_up_counts_for_loss_but_not_for_latency() -> None:
    import numpy as np

    from bench.load import _stats

    sent = (np.arange(100, dtype=np.int64)[:, None] * 20 + np.arange(4)[None, :]) * 1_000_000  # 2 s, 4 calls
    received = sent + 1_000_000
    received[:30] += 80_000_000  # the first 0.6 s late: new calls starting together
    warm = _stats(sent, received, 1.0, 0)
    assert warm["packet_p99_ms"] == pytest.approx(1.0)
    assert warm["settled_ms"] == pytest.approx(600.0)
    assert warm["windows"] == 10
    received[10, 2] = 0  # lost in the warm-up: still lost
    assert _stats(sent, received, 1.0, 0)["lost"] == 1
