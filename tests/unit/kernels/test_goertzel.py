"""Goertzel bank: the jitted kernel against its NumPy twin, shapes and errors."""

import numpy as np
import pytest

from dtmfguard.kernels.goertzel import (
    BLOCK_SAMPLES,
    FREQS_HZ,
    BlockSpectra,
    goertzel_blocks,
    goertzel_blocks_numpy,
    row_stride,
)

pytestmark = pytest.mark.kernels


def test_matches_numpy_twin_on_random_multichannel_audio() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((BLOCK_SAMPLES * 12, 70)).astype(np.float32) * 0.3
    got = goertzel_blocks(x)
    want = goertzel_blocks_numpy(x)
    scale = np.abs(want.re).max()
    np.testing.assert_allclose(got.re, want.re, atol=2e-5 * scale)
    np.testing.assert_allclose(got.im, want.im, atol=2e-5 * scale)
    np.testing.assert_allclose(got.energy, want.energy, rtol=1e-5)


@pytest.mark.parametrize("f_index", range(8))
def test_pure_tone_peaks_in_its_own_bin(f_index: int) -> None:
    n = np.arange(BLOCK_SAMPLES * 4)
    x = (0.5 * np.sin(2 * np.pi * FREQS_HZ[f_index] * n / 8000)).astype(np.float32)[:, None]
    s = goertzel_blocks(np.ascontiguousarray(x))
    power = s.re[:, :, 0] ** 2 + s.im[:, :, 0] ** 2
    group = slice(0, 4) if f_index < 4 else slice(4, 8)
    assert np.all(np.argmax(power[:, group], axis=1) + group.start == f_index)
    # |X| = A N / 2 for a tone on its bin (within the ripple of the negative-frequency image).
    np.testing.assert_allclose(np.sqrt(power[:, f_index]), 0.5 * BLOCK_SAMPLES / 2, rtol=0.06)


def test_writes_into_preallocated_output_and_channels_are_independent() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((160, 3)).astype(np.float32)
    out = BlockSpectra(4, 3)
    result = goertzel_blocks(x, out)
    assert result is out
    alone = goertzel_blocks(np.ascontiguousarray(x[:, 1:2]))
    np.testing.assert_array_equal(out.re[:, :, 1], alone.re[:, :, 0])
    np.testing.assert_array_equal(out.energy[:, 1], alone.energy[:, 0])


@pytest.mark.parametrize("n_ch", [1, 7, 9, 256, 300, 600])
def test_matches_numpy_twin_on_either_side_of_the_channel_tile(n_ch: int) -> None:
    # Up to 256 channels the kernel reads the input in place; beyond, it stages each block
    # tile by tile (the last tile partial). Both paths, and the scalar remainder, must agree.
    rng = np.random.default_rng(n_ch)
    x = rng.standard_normal((BLOCK_SAMPLES * 2, n_ch)).astype(np.float32) * 0.3
    got = goertzel_blocks(x)
    want = goertzel_blocks_numpy(x)
    scale = np.abs(want.re).max()
    np.testing.assert_allclose(got.re, want.re, atol=2e-5 * scale)
    np.testing.assert_allclose(got.im, want.im, atol=2e-5 * scale)
    np.testing.assert_allclose(got.energy, want.energy, rtol=1e-5)


@pytest.mark.parametrize(("n_blocks", "n_ch"), [(8, 1), (300, 1), (9, 3), (20, 7)])
def test_matches_numpy_twin_when_blocks_take_the_lanes(n_blocks: int, n_ch: int) -> None:
    # Fewer channels than vector lanes but blocks enough: the kernel vectorises across blocks.
    rng = np.random.default_rng(n_blocks)
    x = rng.standard_normal((BLOCK_SAMPLES * n_blocks, n_ch)).astype(np.float32) * 0.3
    got = goertzel_blocks(x)
    want = goertzel_blocks_numpy(x)
    scale = np.abs(want.re).max()
    np.testing.assert_allclose(got.re, want.re, atol=2e-5 * scale)
    np.testing.assert_allclose(got.im, want.im, atol=2e-5 * scale)
    np.testing.assert_allclose(got.energy, want.energy, rtol=1e-5)
    # The same blocks one frame at a time (too few blocks for the lanes: scalar code) agree
    # to float32 rounding (fastmath lets vector and scalar code order a sum differently).
    for b0 in range(0, n_blocks - 3, 4):
        part = goertzel_blocks(np.ascontiguousarray(x[b0 * BLOCK_SAMPLES : (b0 + 4) * BLOCK_SAMPLES]))
        np.testing.assert_allclose(got.re[b0 : b0 + 4], part.re, rtol=0, atol=1e-6 * scale)
        np.testing.assert_allclose(got.energy[b0 : b0 + 4], part.energy, rtol=1e-6)


def test_channels_in_a_wide_batch_match_the_same_channels_alone() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((BLOCK_SAMPLES * 2, 600)).astype(np.float32)
    wide = goertzel_blocks(x)
    # A slice across the first tile boundary, run as a narrow batch of its own (its last
    # channels in scalar code: equal to float32 rounding, as above).
    alone = goertzel_blocks(np.ascontiguousarray(x[:, 250:262]))
    scale = np.abs(wide.re).max()
    np.testing.assert_allclose(wide.re[:, :, 250:262], alone.re, rtol=0, atol=1e-6 * scale)
    np.testing.assert_allclose(wide.im[:, :, 250:262], alone.im, rtol=0, atol=1e-6 * scale)
    np.testing.assert_allclose(wide.energy[:, 250:262], alone.energy, rtol=1e-6)


def test_reused_output_holds_only_the_latest_call() -> None:
    rng = np.random.default_rng(4)
    a, b = (rng.standard_normal((BLOCK_SAMPLES, 300)).astype(np.float32) for _ in range(2))
    out = BlockSpectra(1, 300)
    goertzel_blocks(a, out)
    goertzel_blocks(b, out)
    fresh = goertzel_blocks(b)
    np.testing.assert_array_equal(out.re, fresh.re)
    np.testing.assert_array_equal(out.im, fresh.im)
    np.testing.assert_array_equal(out.energy, fresh.energy)


def test_rejects_wrong_shapes_and_dtypes() -> None:
    with pytest.raises(TypeError, match="float32"):
        goertzel_blocks(np.zeros((160, 1), np.float64))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="multiple of 40"):
        goertzel_blocks(np.zeros((150, 1), np.float32))
    with pytest.raises(ValueError, match="n_samples, n_channels"):
        goertzel_blocks(np.zeros(160, np.float32))
    with pytest.raises(ValueError, match="output holds 4 blocks x 2 channels"):
        goertzel_blocks(np.zeros((160, 1), np.float32), BlockSpectra(4, 2))


@pytest.mark.parametrize("n_ch", [1, 63, 64, 130, 256, 1000, 1024])
def test_rows_are_padded_to_an_odd_number_of_cache_lines(n_ch: int) -> None:
    stride = row_stride(n_ch)
    if n_ch < 64:
        assert stride == n_ch
    else:
        assert stride >= n_ch
        assert stride % 16 == 0
        assert (stride // 16) % 2 == 1
        assert stride - n_ch < 32
    out = BlockSpectra(2, n_ch)
    assert all(a.shape[-1] == stride for a in out.padded)
    assert out.re.shape == out.im.shape == (2, 8, n_ch)
    assert out.energy.shape == (2, n_ch)
    x = np.random.default_rng(n_ch).standard_normal((BLOCK_SAMPLES * 2, n_ch)).astype(np.float32)
    goertzel_blocks(x, out)
    assert not out.padded[0][..., n_ch:].any(), "the padding is never written"
    want = goertzel_blocks_numpy(x)
    np.testing.assert_allclose(out.re, want.re, atol=2e-5 * np.abs(want.re).max())
