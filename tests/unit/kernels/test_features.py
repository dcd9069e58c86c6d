"""Decision kernel: jitted against the NumPy twin, state carry-over, channel independence."""

import numpy as np
import pytest

from dtmfguard import synth
from dtmfguard.kernels.features import (
    DIGIT,
    GATED_MIN_CHANNELS,
    ONSET,
    TONE,
    FeatureBank,
    FeatureState,
    Thresholds,
    block_features_numpy,
)
from dtmfguard.kernels.goertzel import BlockSpectra, goertzel_blocks, goertzel_blocks_numpy
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


# --------------------------------------------------------------------------- gated pass
# A gated bank runs the gate alone first and the full tests only for the channels it
# passes, gathered; its decisions and state must equal the ungated bank's bit for bit.


def _keyed_and_quiet(n_ch: int, keyed: np.ndarray, n_frames: int, seed: int) -> np.ndarray:
    """``(160 * n_frames, n_ch)`` float32: keypad digits on the columns where ``keyed``
    (bool, per frame and channel) holds, -60 dBm0 noise elsewhere."""
    rng = np.random.default_rng(seed)
    n = 160 * n_frames
    out = (dbm0_to_peak(-60.0) / np.sqrt(2) * rng.standard_normal((n, n_ch))).astype(np.float32)
    keys = "".join(DTMF_KEYS[int(i)] for i in rng.integers(0, 16, 12))
    for c in range(n_ch):
        if keyed[:, c].any():
            x, _ = synth.dtmf_sequence(keys, on_ms=60, off_ms=30, rng=rng, level_low_dbm0=-10.0 - c % 7,
                                       twist_db=float(c % 5) - 2.0)
            x = np.resize(x.astype(np.float32), n)
            on = np.repeat(keyed[:, c], 160)
            out[on, c] = x[on]
    return out


def _assert_gated_matches_ungated(x: np.ndarray, n_blocks: int) -> None:
    n_ch = x.shape[1]
    gated = FeatureBank(n_ch, n_blocks, gated=True)
    plain = FeatureBank(n_ch, n_blocks, gated=False)
    step = 40 * n_blocks
    for i in range(0, x.shape[0] - step + 1, step):
        spectra = goertzel_blocks(np.ascontiguousarray(x[i : i + step]))
        np.testing.assert_array_equal(gated.process(spectra), plain.process(spectra))
        np.testing.assert_array_equal(gated.state.gate, plain.state.gate)
        for name in ("hist_re", "hist_im", "hist_e"):
            np.testing.assert_array_equal(getattr(gated.state, name), getattr(plain.state, name))


@pytest.mark.parametrize(
    ("n_ch", "share"),
    [(13, 0.0), (13, 1.0), (21, 0.1), (37, 0.3), (9, 0.6)],
    ids=["none", "all", "few-scattered", "quarter", "most"],
)
@pytest.mark.parametrize("n_blocks", [1, 4, 7])
def test_gated_bank_decides_like_the_ungated_one(n_ch: int, share: float, n_blocks: int) -> None:
    rng = np.random.default_rng(n_ch + n_blocks)
    n_frames = 14
    keyed = np.repeat(rng.random((1, n_ch)) < share, n_frames, axis=0)
    if 0.0 < share < 1.0:
        keyed[:, 0] = True  # at least one channel passes
    _assert_gated_matches_ungated(_keyed_and_quiet(n_ch, keyed, n_frames, seed=n_ch), n_blocks)


def test_gated_bank_follows_the_share_of_keyed_lines_up_and_down() -> None:
    # All lines keyed, then two, then all again: the pass switches between deciding all
    # channels where they are and gathering the few (with the history copied on demand).
    n_ch, n_frames = 11, 24
    keyed = np.zeros((n_frames, n_ch), bool)
    keyed[:8] = True
    keyed[8:16, [3, 7]] = True
    keyed[16:] = True
    x = _keyed_and_quiet(n_ch, keyed, n_frames, seed=4)
    for n_blocks in (2, 4):
        _assert_gated_matches_ungated(x, n_blocks)


def test_gated_bank_at_the_gate_threshold() -> None:
    # Spectra built so that the best pair holds almost exactly the gate's share of the
    # 5 ms window's energy: the pre-pass must never drop a channel the full pass keeps.
    rng = np.random.default_rng(11)
    n_ch, n_blocks = 40, 4
    gated = FeatureBank(n_ch, n_blocks, gated=True)
    plain = FeatureBank(n_ch, n_blocks, gated=False)
    for _ in range(6):
        spectra = BlockSpectra(n_blocks, n_ch)
        spectra.re[...] = rng.standard_normal(spectra.re.shape).astype(np.float32) * 30
        spectra.im[...] = rng.standard_normal(spectra.im.shape).astype(np.float32) * 30
        p = spectra.re**2 + spectra.im**2
        best = p[:, :4].max(axis=1) + p[:, 4:].max(axis=1)
        near = 1.0 + rng.choice([-1.0, 0.0, 1.0], best.shape) * rng.choice([0.0, 1e-7, 1e-6, 1e-3], best.shape)
        spectra.energy[...] = (best / (np.float32(Thresholds().gate_purity) * 20) * near).astype(np.float32)
        np.testing.assert_array_equal(gated.process(spectra), plain.process(spectra))
        np.testing.assert_array_equal(gated.state.gate, plain.state.gate)
    assert 0 < plain.state.gate.sum() < n_ch  # the threshold cut through the batch


def test_gated_bank_matches_numpy_twin() -> None:
    x = _channels(160 * 60)
    spectra = goertzel_blocks(x)
    got = FeatureBank(x.shape[1], spectra.n_blocks, gated=True).process(spectra)
    want = block_features_numpy(goertzel_blocks_numpy(x), FeatureState(x.shape[1]))
    assert np.mean(got == want) > 0.999
    assert (got[:, DIGIT, :6] >= 0).sum() > 50


def test_large_banks_are_gated_by_default() -> None:
    assert FeatureBank(GATED_MIN_CHANNELS, 4)._work_re.shape[0] > 0
    assert FeatureBank(GATED_MIN_CHANNELS - 1, 4)._work_re.shape[0] == 0


@pytest.mark.parametrize("n_ch", [130, 256, GATED_MIN_CHANNELS])
def test_wide_batches_with_padded_rows_decide_like_a_narrow_one(n_ch: int) -> None:
    # Batches of 64 channels and more keep their rows padded (row_stride); at
    # GATED_MIN_CHANNELS the gated pass runs. Every column repeats one of the nine test
    # channels and must decide exactly as that channel does in a batch of nine.
    x = _channels(160 * 15)
    cols = np.arange(n_ch) % x.shape[1]
    wide_x = np.ascontiguousarray(x[:, cols])
    narrow = FeatureBank(x.shape[1], 4)
    wide = FeatureBank(n_ch, 4)
    wide_spectra = BlockSpectra(4, n_ch)
    assert wide_spectra.padded[0].shape[2] > n_ch
    assert wide.state.padded[0].shape[2] > n_ch
    keyed = 0
    for i in range(15):
        frame = slice(i * 160, (i + 1) * 160)
        want = narrow.process(goertzel_blocks(np.ascontiguousarray(x[frame])))
        got = wide.process(goertzel_blocks(np.ascontiguousarray(wide_x[frame]), wide_spectra))
        np.testing.assert_array_equal(got, want[:, :, cols])
        keyed += int((got[:, DIGIT] >= 0).sum())
    assert keyed > 0
