"""Signal levels and DTMF frequency plan of the 8 kHz telephone channel.

This module converts between dBm0 (ITU-T G.711 / O.41 level relative to the
digital reference point) and linear amplitude or power on the float scale used
throughout dtmfguard (full scale = +/-1.0, i.e. int16 value / 32768). The
reference is the G.711 digital milliwatt: a 0 dBm0 sine has a peak 3.17 dB
below the mu-law full-scale peak 32124/32768, so its peak amplitude is about
0.6806 of full scale. It also holds the DTMF frequency grid and keypad layout of
ITU-T Q.23: key index = 4 * low_index + high_index over ``DTMF_KEYS``.
"""

from __future__ import annotations

import math

SAMPLE_RATE_HZ: int = 8000
"""Sample rate of every audio array inside dtmfguard."""

MULAW_FULL_SCALE_PEAK: float = 32124.0 / 32768.0
"""Largest magnitude a mu-law code decodes to, on the +/-1.0 float scale."""

DIGITAL_MILLIWATT_HEADROOM_DB: float = 3.17
"""How far (dB) the 0 dBm0 sine's peak sits below the mu-law full-scale peak."""

DBM0_REFERENCE_PEAK: float = MULAW_FULL_SCALE_PEAK * math.pow(10.0, -DIGITAL_MILLIWATT_HEADROOM_DB / 20.0)
"""Peak amplitude (float full scale) of a 0 dBm0 sine, about 0.6806."""

DBM0_REFERENCE_POWER: float = DBM0_REFERENCE_PEAK**2 / 2.0
"""Mean-square power (float full scale squared) of a 0 dBm0 sine, about 0.2316."""

DTMF_LOW_HZ: tuple[int, int, int, int] = (697, 770, 852, 941)
"""Row (low group) frequencies of ITU-T Q.23."""

DTMF_HIGH_HZ: tuple[int, int, int, int] = (1209, 1336, 1477, 1633)
"""Column (high group) frequencies of ITU-T Q.23."""

DTMF_KEYS: str = "123A456B789C*0#D"
"""Keypad in row-major order: ``DTMF_KEYS[4 * low_index + high_index]``."""


def dbm0_to_peak(level_dbm0: float) -> float:
    """Return the peak amplitude (float full scale) of a sine at ``level_dbm0``."""
    return DBM0_REFERENCE_PEAK * math.pow(10.0, level_dbm0 / 20.0)


def peak_to_dbm0(peak: float) -> float:
    """Return the level in dBm0 of a sine whose peak amplitude is ``peak``.

    Raises ValueError if ``peak`` is not positive.
    """
    if peak <= 0.0:
        raise ValueError(f"peak amplitude must be positive, got {peak!r}")
    return 20.0 * math.log10(peak / DBM0_REFERENCE_PEAK)


def dbm0_to_power(level_dbm0: float) -> float:
    """Return the mean-square power (full scale squared) of a sine at ``level_dbm0``."""
    return DBM0_REFERENCE_POWER * math.pow(10.0, level_dbm0 / 10.0)


def power_to_dbm0(mean_square: float) -> float:
    """Return the dBm0 of a sine whose mean-square power is ``mean_square``.

    For a sine, mean square = peak**2 / 2. For any other signal this is the
    level of the sine of equal power (the usual way to state noise in dBm0).
    Raises ValueError if ``mean_square`` is not positive.
    """
    if mean_square <= 0.0:
        raise ValueError(f"mean-square power must be positive, got {mean_square!r}")
    return 10.0 * math.log10(mean_square / DBM0_REFERENCE_POWER)


def dtmf_frequencies_hz(key: str) -> tuple[int, int]:
    """Return ``(low_hz, high_hz)`` of a DTMF key (one of ``DTMF_KEYS``, case-insensitive).

    Raises ValueError for any other character.
    """
    if len(key) != 1 or key.upper() not in DTMF_KEYS:
        raise ValueError(f"not a DTMF key: {key!r}")
    index = DTMF_KEYS.index(key.upper())
    return DTMF_LOW_HZ[index // 4], DTMF_HIGH_HZ[index % 4]
