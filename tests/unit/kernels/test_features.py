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
from dtmfguard.levels import DTMF_KEYS

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
    packed = Thresholds(digit_min_purity=0.5, gate_purity=0.2).pack()
    assert packed.dtype == np.float32
    assert packed[3] == pytest.approx(0.5)
    assert packed[13] == pytest.approx(0.2)
