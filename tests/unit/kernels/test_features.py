"""Decision kernel: jitted against the NumPy twin, state carry-over, channel independence."""

import numpy as np
import pytest

from dtmfguard import synth
from dtmfguard.kernels.features import (
    DIGIT,
    ONSET,
    TONE,
    FeatureBank,
    FeatureState,
    Thresholds,
    block_features_numpy,
)
from dtmfguard.kernels.goertzel import goertzel_blocks, goertzel_blocks_numpy
from dtmfguard.levels import DTMF_KEYS, dbm0_to_peak

pytestmark = pytest.mark.kernels


def _channels(n_samples: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    cols = []
    for i in range(6):
        x, _ = synth.dtmf_sequence(DTMF_KEYS, on_ms=50, off_ms=45, rng=rng, level_low_dbm0=-5.0 - 3 * i,
                                   twist_db=[-8, -4, 0, 2, 4, 0][i])
        cols.append(x)
    cols.append(synth.speech_like(3000, rng))
    cols.append(synth.music_like(3000, rng))
    noisy, _ = synth.dtmf_sequence("0123", on_ms=60, off_ms=60, rng=rng, level_low_dbm0=-15)
    cols.append(synth.add_white_noise(noisy, 15.0, reference_dbm0=-15.0, rng=rng))
    out = np.zeros((n_samples, len(cols)), np.float32)
    for c, x in enumerate(cols):
        m = min(len(x), n_samples)
        out[:m, c] = x[:m]
    return out


def test_jitted_decisions_match_numpy_twin() -> None:
    x = _channels(160 * 100)
    spectra = goertzel_blocks(x)
    got = FeatureBank(x.shape[1], spectra.n_blocks).process(spectra)
    want = block_features_numpy(goertzel_blocks_numpy(x), FeatureState(x.shape[1]))
    # float32 kernel vs float64 twin: decisions may differ only at exact threshold ties.
    agreement = np.mean(got == want)
    assert agreement > 0.999, agreement
    assert (got[:, DIGIT, :6] >= 0).sum() > 100  # the twin comparison saw real digits


def test_state_carries_across_calls_like_one_long_call() -> None:
    x = _channels(160 * 50)
    n_ch = x.shape[1]
    whole = FeatureBank(n_ch, 200).process(goertzel_blocks(x)).copy()
    bank = FeatureBank(n_ch, 4)
    parts = []
    for i in range(50):
        parts.append(bank.process(goertzel_blocks(np.ascontiguousarray(x[i * 160 : (i + 1) * 160]))).copy())
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_channels_do_not_influence_each_other() -> None:
    x = _channels(160 * 40)
    y = x.copy()
    y[:, 1:] = 0.0  # silence every other channel
    a = FeatureBank(x.shape[1], 160).process(goertzel_blocks(x)).copy()
    b = FeatureBank(y.shape[1], 160).process(goertzel_blocks(y)).copy()
    np.testing.assert_array_equal(a[:, :, 0], b[:, :, 0])
    assert (b[:, :, 1:] == -1).all()


def test_decisions_name_the_right_key() -> None:
    for key in DTMF_KEYS:
        x, _ = synth.dtmf_sequence(key, on_ms=60, off_ms=60, rng=3)
        n = len(x) // 40 * 40
        keys = FeatureBank(1, n // 40).process(goertzel_blocks(np.ascontiguousarray(x[:n, None])))
        for kind in (ONSET, TONE, DIGIT):
            found = set(keys[:, kind, 0].tolist()) - {-1}
            assert found == {DTMF_KEYS.index(key)}, (key, kind, found)


def test_thresholds_pack_in_kernel_order() -> None:
    packed = Thresholds(digit_min_purity=0.5, gate_purity=0.2, tone_long_rel_peak_db=20.0,
                        tone_long_min_purity=0.3).pack()
    assert packed.dtype == np.float32
    assert packed[3] == pytest.approx(0.5)
    assert packed[13] == pytest.approx(0.2)
    assert packed[16] == pytest.approx(100.0)
    assert packed[17] == pytest.approx(0.3)


def _glide(start_hz: float, stop_hz: float, n: int, level_dbm0: float) -> np.ndarray:
    f = np.linspace(start_hz, stop_hz, n)
    return dbm0_to_peak(level_dbm0) * np.sin(2 * np.pi * np.cumsum(f) / 8000)


def _pair_among_sines(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """A tone pair (-15 dBm0 each) between 50 ms of silence, with steady sines at 300 and
    2600 Hz (-14 dBm0 each) throughout: the pair carries under half of the energy."""
    pad = np.zeros(400)
    x = np.concatenate([pad, low + high, pad])
    t = np.arange(len(x)) / 8000
    x += dbm0_to_peak(-14.0) * (np.sin(2 * np.pi * 300 * t) + np.sin(2 * np.pi * 2600 * t))
    return np.ascontiguousarray(x[: len(x) // 40 * 40, None].astype(np.float32))


def _decide(x: np.ndarray) -> np.ndarray:
    return FeatureBank(1, len(x) // 40).process(goertzel_blocks(x))[:, :, 0].copy()


def test_relative_peak_opens_a_run_in_15_ms_and_arms_in_30_ms() -> None:
    n = 800  # 100 ms
    keys = _decide(_pair_among_sines(_glide(770, 770, n, -15.0), _glide(1336, 1336, n, -15.0)))
    five = DTMF_KEYS.index("5")
    onsets = np.flatnonzero(keys[:, ONSET] >= 0)
    tones = np.flatnonzero(keys[:, TONE] >= 0)
    assert set(keys[onsets, ONSET].tolist()) == set(keys[tones, TONE].tolist()) == {five}
    assert len(tones) >= 10
    assert tones[0] >= onsets[0] + 2  # the 30 ms window fills three sub-blocks later
    assert (keys[:, DIGIT] == -1).all()  # far too impure for a digit


@pytest.mark.parametrize("centre_offset_hz", [-10.0, 0.0, 10.0])
def test_a_pair_that_glides_opens_a_run_but_never_arms(centre_offset_hz: float) -> None:
    # Like two harmonics of a voice whose pitch rises: 15 ms windows see each of them
    # stand out in its group; 30 ms ones see them smeared across 20-40 Hz.
    n, c = 800, centre_offset_hz
    low = _glide(770 + c - 60, 770 + c + 60, n, -15.0)
    high = _glide(1336 + 1.7 * c - 102, 1336 + 1.7 * c + 102, n, -15.0)
    keys = _decide(_pair_among_sines(low, high))
    assert (keys[:, ONSET] >= 0).sum() >= 4
    assert (keys[:, TONE] == -1).all()
