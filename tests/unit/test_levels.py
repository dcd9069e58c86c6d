"""Tests of dBm0 conversions and the DTMF frequency plan (dtmfguard.levels)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dtmfguard import levels


def test_zero_dbm0_is_the_digital_milliwatt() -> None:
    # 3.17 dB below the mu-law full-scale peak 32124/32768.
    expected = 32124 / 32768 / 10 ** (3.17 / 20)
    assert levels.dbm0_to_peak(0.0) == pytest.approx(expected, rel=1e-12)
    assert levels.dbm0_to_peak(0.0) == pytest.approx(0.6806, abs=5e-4)
    assert levels.dbm0_to_peak(3.17) == pytest.approx(32124 / 32768, rel=1e-12)


def test_power_of_a_zero_dbm0_sine_matches_its_samples() -> None:
    n = np.arange(8000)
    x = levels.dbm0_to_peak(0.0) * np.sin(2 * np.pi * 1004 * n / levels.SAMPLE_RATE_HZ)
    assert levels.power_to_dbm0(float(np.mean(x**2))) == pytest.approx(0.0, abs=1e-3)
    assert levels.dbm0_to_power(0.0) == pytest.approx(levels.dbm0_to_peak(0.0) ** 2 / 2)


def test_minus_ten_dbm0_is_ten_db_below() -> None:
    assert levels.dbm0_to_peak(-10.0) / levels.dbm0_to_peak(0.0) == pytest.approx(10 ** (-0.5))
    assert levels.dbm0_to_power(-10.0) / levels.dbm0_to_power(0.0) == pytest.approx(0.1)


@given(st.floats(min_value=-120.0, max_value=10.0))
def test_peak_roundtrip(level_dbm0: float) -> None:
    assert levels.peak_to_dbm0(levels.dbm0_to_peak(level_dbm0)) == pytest.approx(level_dbm0, abs=1e-9)


@given(st.floats(min_value=-120.0, max_value=10.0))
def test_power_roundtrip(level_dbm0: float) -> None:
    assert levels.power_to_dbm0(levels.dbm0_to_power(level_dbm0)) == pytest.approx(level_dbm0, abs=1e-9)


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_non_positive_inputs_raise(bad: float) -> None:
    with pytest.raises(ValueError):
        levels.peak_to_dbm0(bad)
    with pytest.raises(ValueError):
        levels.power_to_dbm0(bad)


def test_keypad_layout_is_row_major() -> None:
    assert levels.DTMF_LOW_HZ == (697, 770, 852, 941)
    assert levels.DTMF_HIGH_HZ == (1209, 1336, 1477, 1633)
    assert levels.DTMF_KEYS == "123A456B789C*0#D"
    assert levels.dtmf_frequencies_hz("1") == (697, 1209)
    assert levels.dtmf_frequencies_hz("5") == (770, 1336)
    assert levels.dtmf_frequencies_hz("9") == (852, 1477)
    assert levels.dtmf_frequencies_hz("0") == (941, 1336)
    assert levels.dtmf_frequencies_hz("*") == (941, 1209)
    assert levels.dtmf_frequencies_hz("#") == (941, 1477)
    assert levels.dtmf_frequencies_hz("D") == (941, 1633)
    assert levels.dtmf_frequencies_hz("a") == (697, 1633)
    for index, key in enumerate(levels.DTMF_KEYS):
        low_hz, high_hz = levels.dtmf_frequencies_hz(key)
        assert levels.DTMF_LOW_HZ.index(low_hz) * 4 + levels.DTMF_HIGH_HZ.index(high_hz) == index


@pytest.mark.parametrize("bad", ["", "E", "12", "x"])
def test_unknown_key_raises(bad: str) -> None:
    with pytest.raises(ValueError):
        levels.dtmf_frequencies_hz(bad)


def test_sample_rate() -> None:
    assert levels.SAMPLE_RATE_HZ == 8000
    assert math.isclose(levels.DBM0_REFERENCE_POWER, levels.DBM0_REFERENCE_PEAK**2 / 2)
