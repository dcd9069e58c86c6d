"""Sanity of the independent reference DTMF decoders (tests.support.decoders).

A leak test is only as good as its decoders: these tests prove both hear every key of a clean
sequence, hear a single short tone, and stay silent on silence and on a plain sine.
"""

from __future__ import annotations

import numpy as np
import pytest

from dtmfguard import synth
from tests.support import decoders

ALL_KEYS = "0123456789*#ABCD"


@pytest.fixture(params=sorted(decoders.DECODERS))
def decode(request: pytest.FixtureRequest) -> decoders.Callable[[np.ndarray], str]:
    return decoders.DECODERS[request.param]


def test_clean_sequence_is_decoded(decode: decoders.Callable[[np.ndarray], str]) -> None:
    x, _ = synth.dtmf_sequence(ALL_KEYS, on_ms=60, off_ms=60, rng=np.random.default_rng(1))
    assert decode(x) == ALL_KEYS


def test_quieter_faster_sequence_is_decoded(decode: decoders.Callable[[np.ndarray], str]) -> None:
    x, _ = synth.dtmf_sequence("4111111111111111", on_ms=45, off_ms=45, level_low_dbm0=-22.0, twist_db=-3.0, rng=2)
    assert decode(x) == "4111111111111111"


def test_one_short_tone_is_heard(decode: decoders.Callable[[np.ndarray], str]) -> None:
    x, _ = synth.dtmf_sequence("7", on_ms=45, lead_ms=300, tail_ms=300, rng=3)
    assert decode(x) == "7"


def test_a_digit_at_the_very_end_is_heard(decode: decoders.Callable[[np.ndarray], str]) -> None:
    x, _ = synth.dtmf_sequence("95", on_ms=60, tail_ms=0, rng=4)
    assert decode(x) == "95"


def test_silence_decodes_nothing(decode: decoders.Callable[[np.ndarray], str]) -> None:
    assert decode(np.zeros(16000, dtype=np.float32)) == ""
    assert decode(np.zeros(0, dtype=np.float32)) == ""


def test_single_500_hz_tone_decodes_nothing(decode: decoders.Callable[[np.ndarray], str]) -> None:
    n = np.arange(16000)
    assert decode((0.4 * np.sin(2 * np.pi * 500 * n / 8000)).astype(np.float32)) == ""


def test_all_digits_runs_every_decoder() -> None:
    x, _ = synth.dtmf_sequence("12", rng=5)
    assert decoders.all_digits(x) == {"multimon-ng": "12", "spandsp": "12"}


def test_spandsp_parameters_reach_the_receiver() -> None:
    # spandsp's default threshold rejects -45 dBm0 tones; a -50 dBm0 threshold accepts them.
    quiet, _ = synth.dtmf_sequence("159", level_low_dbm0=-45.0, rng=6)
    assert decoders.spandsp_digits(quiet) == ""
    assert decoders.spandsp_digits(quiet, threshold_dbm0=-50) == "159"
    # Twist beyond spandsp's default limits (which sit near Q.24's -8 and +4 dB) needs wider ones.
    for twist_db in (-10.0, 6.0):
        twisted, _ = synth.dtmf_sequence("159", level_low_dbm0=-12.0, twist_db=twist_db, rng=8)
        assert decoders.spandsp_digits(twisted) == ""
        assert decoders.spandsp_digits(twisted, twist_db=12, reverse_twist_db=12) == "159"
    # Dial tone 10 dB above the keys hides them unless the dial-tone filter is on.
    keys, _ = synth.dtmf_sequence("159", level_low_dbm0=-20.0, rng=7)
    noisy = synth.mix(keys, synth.dial_tone(keys.size / 8.0, -10.0))
    assert decoders.spandsp_digits(noisy) == ""
    assert decoders.spandsp_digits(noisy, filter_dialtone=True) == "159"


def test_missing_multimon_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decoders.shutil, "which", lambda _name: None)
    with pytest.raises(decoders.DecoderUnavailable, match="multimon-ng"):
        decoders.multimon_digits(np.zeros(160))


def test_missing_spandsp_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_library(_name: str) -> None:
        raise OSError("cannot open shared object file")

    monkeypatch.setattr(decoders, "_spandsp", None)
    monkeypatch.setattr(decoders.ctypes, "CDLL", no_library)
    with pytest.raises(decoders.DecoderUnavailable, match="libspandsp"):
        decoders.spandsp_digits(np.zeros(160))
