"""The kernel benchmark's count of the decision kernel's work, and the step's own arithmetic limit."""

from __future__ import annotations

import numpy as np
import pytest

from bench.kernels import DECISION_FLOPS, GATE_FLOPS, decision_work, summarize
from dtmfguard.kernels.features import GATED_MIN_CHANNELS, FeatureBank
from dtmfguard.kernels.goertzel import BlockSpectra, goertzel_blocks
from dtmfguard.levels import dbm0_to_power

N_CH = GATED_MIN_CHANNELS
FULL = sum(DECISION_FLOPS.values())
GATE = sum(GATE_FLOPS.values())


def _spectra(toned: int, n_frames: int = 2) -> list[BlockSpectra]:
    """Frames of ``N_CH`` channels: the first ``toned`` carry key 1 (697 + 1209 Hz) at
    -10 dBm0 per tone, the rest are silent."""
    t = np.arange(160 * n_frames) / 8000.0
    amp = np.sqrt(2.0 * dbm0_to_power(-10.0))
    tone = (amp * (np.sin(2 * np.pi * 697.0 * t) + np.sin(2 * np.pi * 1209.0 * t))).astype(np.float32)
    x = np.zeros((160 * n_frames, N_CH), np.float32)
    x[:, :toned] = tone[:, None]
    return [goertzel_blocks(np.ascontiguousarray(x[160 * k : 160 * (k + 1)]), BlockSpectra(4, N_CH))
            for k in range(n_frames)]


def test_silence_goes_through_the_gate_pre_pass_only() -> None:
    work = decision_work(FeatureBank(N_CH, 4), _spectra(0))
    assert work["gate_prepass_share"] == 1.0
    assert work["full_tests_share"] == 0.0
    assert work["flops_per_channel_frame"] == pytest.approx(4 * GATE)


def test_a_few_keys_are_tested_in_full_after_the_pre_pass() -> None:
    # A quarter of the channels pass: the pre-pass runs every sub-block, the full tests a quarter.
    work = decision_work(FeatureBank(N_CH, 4), _spectra(N_CH // 4))
    assert work["gate_prepass_share"] == 1.0
    assert work["full_tests_share"] == pytest.approx(0.25)
    assert work["flops_per_channel_frame"] == pytest.approx(4 * (GATE + 0.25 * FULL))


def test_keys_on_half_the_lines_take_the_full_pass_without_the_pre_pass() -> None:
    # The first sub-block after silence runs the pre-pass (nothing passed before it); half
    # pass, so that sub-block and all the later ones take the full pass over every channel.
    work = decision_work(FeatureBank(N_CH, 4), _spectra(N_CH // 2))
    assert work["gate_prepass_share"] == pytest.approx(1 / 8)
    assert work["full_tests_share"] == 1.0


def test_an_ungated_bank_tests_every_channel_in_full() -> None:
    work = decision_work(FeatureBank(N_CH, 4, gated=False), _spectra(N_CH // 4))
    assert work == {"gate_prepass_share": 0.0, "full_tests_share": 1.0, "flops_per_channel_frame": 4 * FULL}


def test_the_gates_verdict_is_the_same_gated_or_not() -> None:
    spectra = _spectra(N_CH // 4, n_frames=1)[0]
    gated, ungated = FeatureBank(N_CH, 4), FeatureBank(N_CH, 4, gated=False)
    gated.process(spectra)
    ungated.process(spectra)
    assert np.array_equal(gated.gate_passed, ungated.gate_passed)
    assert gated.gate_passed[:, : N_CH // 4].all()
    assert not gated.gate_passed[:, N_CH // 4 :].any()


def _row(kernel: str, mix: str, ns: float, flops: float | None) -> dict[str, object]:
    return {"kernel": kernel, "impl": "jit", "mix": mix, "batch": 1024, "ns_per_channel_frame": ns,
            "best_ns_per_channel_frame": ns, "flops_per_channel_frame": flops,
            "decision_work": {"gate_prepass_share": 1.0, "full_tests_share": 0.25, "flops_per_channel_frame": 0.0}}


def test_summary_gives_the_steps_own_limit_from_its_flops() -> None:
    rows = [_row("step", "typical", 240.0, 6000.0), _row("step", "dtmf", 250.0, 8000.0)]
    summary = summarize(rows, 50.0, peak_gflops=80.0)
    assert summary["step_own_limit_ns"] == pytest.approx(75.0)
    assert summary["step_x_own_limit"] == pytest.approx(3.2)
    assert summary["step_worst_own_limit_ns"] == pytest.approx(100.0)
    assert summary["step_worst_x_own_limit"] == pytest.approx(2.5)
    assert summary["step_decision_work"]["full_tests_share"] == 0.25
    # Without a peak estimate there is no limit to compare with.
    assert "step_own_limit_ns" not in summarize(rows, None)
