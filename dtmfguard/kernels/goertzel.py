"""Goertzel filter bank over a batch of channels, in 5 ms sub-blocks.

This is the only per-sample work of DTMF detection. Audio arrives as one float32
array of shape ``(n_samples, n_channels)`` (channels contiguous, so the inner loop
runs across channels and vectorises), ``n_samples`` a multiple of
:data:`BLOCK_SAMPLES`. For every sub-block of 40 samples (5 ms at 8 kHz) and every
one of the eight DTMF frequencies the kernel returns the complex Goertzel output

    X = s[N-1] - exp(-j w) s[N-2] = exp(j w (N-1)) * sum_n x[n] exp(-j w n)

and the sub-block energy ``sum_n x[n]**2``. The constant phase factor
``exp(j w (N-1))`` is the same for every sub-block, so coherent sums over several
sub-blocks (longer analysis windows, see :mod:`dtmfguard.kernels.features`) and
phase differences between windows are unaffected by it.

The public wrapper validates and allocates; the private ``@njit(cache=True)`` kernel
writes into preallocated arrays and never allocates. :func:`goertzel_blocks_numpy`
is the plain-NumPy twin (a direct DFT by matrix product) that tests compare against.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

from dtmfguard.levels import DTMF_HIGH_HZ, DTMF_LOW_HZ, SAMPLE_RATE_HZ

BLOCK_SAMPLES = 40
"""Samples per sub-block: 5 ms at 8 kHz. A 20 ms packet holds four."""

FREQS_HZ = np.array(DTMF_LOW_HZ + DTMF_HIGH_HZ, dtype=np.float64)
"""The eight DTMF frequencies, low group first (index 0-3), then high (4-7)."""

N_FREQS = 8

_W = 2.0 * np.pi * FREQS_HZ / SAMPLE_RATE_HZ
COEF = (2.0 * np.cos(_W)).astype(np.float32)
COS_W = np.cos(_W).astype(np.float32)
SIN_W = np.sin(_W).astype(np.float32)

# How the kernel is laid out (each choice measured; see bench/kernels.py):
# * Channels go in tiles of _TILE_CHANNELS. The filter state of a tile (two values per
#   frequency and the block's energy: 17 rows) stays in L1 between 8-sample steps, each
#   step a loop over the tile that vectorises across channels (8 per AVX2 register).
# * State rows are _ROW floats apart, a stride known at compile time: LLVM then sees that
#   the rows never overlap (rows at a run-time stride each need a run-time alias check,
#   and past a handful of those LLVM leaves the loop scalar). The padding keeps the rows
#   out of each other's L1 cache sets.
# * With more than one tile, each 40-row block is first copied into a tile-major staging
#   area, reading the input in memory order: a tile-by-tile walk of a wide input reads
#   short pieces of 40 far-apart rows, which the hardware prefetchers do not follow and
#   which, at row strides of a multiple of 4 KiB, all compete for the same L1 sets.
_TILE_CHANNELS = 256
_ROW = _TILE_CHANNELS + 16
_STATE_ROWS = 2 * N_FREQS + 1
_ENERGY_ROW = 2 * N_FREQS
_STEP_SAMPLES = 8
_LANES = 8  # float32 per AVX2 register
_ALIGN_FLOATS = 16  # 64 bytes: whole cache lines, no vector load split across two

Float32Array = npt.NDArray[np.float32]


def _aligned_zeros(n: int) -> Float32Array:
    """``n`` float32 zeros starting on a 64-byte boundary (NumPy only promises 16)."""
    buf = np.zeros(n + _ALIGN_FLOATS, np.float32)
    skip = (-buf.ctypes.data % (4 * _ALIGN_FLOATS)) // 4
    return buf[skip : skip + n]


def row_stride(n_channels: int) -> int:
    """Floats between consecutive rows of a per-channel array that a kernel loop reads
    many rows of at once (the spectra, the decision kernel's history).

    Rows of a power-of-two number of channels lie a multiple of 4 KiB apart, so the same
    column of every row falls into the same L1 cache set: a loop reading a hundred rows
    (as the decision kernel does) then misses L1 on nearly every load. Padding each row to
    an odd number of 64-byte lines puts consecutive rows into different sets. Narrow rows
    (under 64 channels) are left unpadded.
    """
    if n_channels < 64:
        return n_channels
    lines = -(-n_channels // 16)
    return (lines | 1) * 16


def _scratch_floats(n_blocks: int, n_channels: int) -> int:
    """Scratch size: the state rows, plus a staging area where the kernel stages its input."""
    n_tiles = -(-n_channels // _TILE_CHANNELS)
    if n_tiles > 1:
        stage = n_tiles * BLOCK_SAMPLES * _TILE_CHANNELS
    elif n_channels < _LANES <= n_blocks:
        stage = BLOCK_SAMPLES * _TILE_CHANNELS
    else:
        stage = 0
    return _STATE_ROWS * _ROW + stage


class BlockSpectra:
    """Preallocated outputs of one kernel call for ``n_blocks`` x ``n_channels``.

    ``re``, ``im``: float32 ``(n_blocks, 8, n_channels)``; ``energy``: float32
    ``(n_blocks, n_channels)``. They are views of the padded arrays the kernels take
    (``padded``: the same three with rows :func:`row_stride` floats long).
    ``scratch`` is the kernel's working memory (filter state, staged input), not an output.
    """

    __slots__ = ("re", "im", "energy", "padded", "scratch")

    def __init__(self, n_blocks: int, n_channels: int) -> None:
        stride = row_stride(n_channels)
        re = np.zeros((n_blocks, N_FREQS, stride), np.float32)
        im = np.zeros((n_blocks, N_FREQS, stride), np.float32)
        energy = np.zeros((n_blocks, stride), np.float32)
        self.padded: tuple[Float32Array, Float32Array, Float32Array] = (re, im, energy)
        self.re: Float32Array = re[:, :, :n_channels]
        self.im: Float32Array = im[:, :, :n_channels]
        self.energy: Float32Array = energy[:, :n_channels]
        self.scratch: Float32Array = _aligned_zeros(_scratch_floats(n_blocks, n_channels))

    @property
    def n_blocks(self) -> int:
        return int(self.re.shape[0])

    @property
    def n_channels(self) -> int:
        return int(self.re.shape[2])


# The kernel. Float32 throughout: constants come from the float32 arrays above, so
# nothing widens to float64. Each sample is one step of s = k s1 + (x - s2) per
# frequency: only the FMA is on the recurrence's critical path. The helpers are inlined
# with literal arguments that LLVM folds (the frequency group, whether the state starts
# from rest), so every state row sits at a constant offset in every loop.


@njit(nogil=True, fastmath=True, error_model="numpy", inline="always")
def _two_samples(  # pragma: no cover - compiled; covered by the NUMBA_DISABLE_JIT run
    t0: np.float32, t1: np.float32,
    k0: np.float32, k1: np.float32, k2: np.float32, k3: np.float32,
    a1: np.float32, a2: np.float32, b1: np.float32, b2: np.float32,
    g1: np.float32, g2: np.float32, h1: np.float32, h2: np.float32,
) -> tuple[np.float32, np.float32, np.float32, np.float32, np.float32, np.float32, np.float32, np.float32]:
    """Four recurrences (states ``(s1, s2)`` as ``a``, ``b``, ``g``, ``h``) over samples ``t0``, ``t1``."""
    a2 = k0 * a1 + (t0 - a2)
    b2 = k1 * b1 + (t0 - b2)
    g2 = k2 * g1 + (t0 - g2)
    h2 = k3 * h1 + (t0 - h2)
    a1 = k0 * a2 + (t1 - a1)
    b1 = k1 * b2 + (t1 - b1)
    g1 = k2 * g2 + (t1 - g1)
    h1 = k3 * h2 + (t1 - h1)
    return a1, a2, b1, b2, g1, g2, h1, h2


@njit(nogil=True, fastmath=True, error_model="numpy", boundscheck=False, inline="always")
def _step(  # pragma: no cover - compiled; covered by the NUMBA_DISABLE_JIT run
    src: Float32Array, n: int, w: int, state: Float32Array, f0: int, first: bool
) -> None:
    """Rows ``n`` to ``n + 8`` of ``src[:, :w]`` through frequencies ``f0:f0 + 4``.

    ``first``: a block starts at row ``n`` (state from rest). The low group (``f0 == 0``)
    also sums the block's energy. Four frequencies per pass keep the FMA units busy
    without running out of registers (eight spill).
    """
    k0 = COEF[f0]
    k1 = COEF[f0 + 1]
    k2 = COEF[f0 + 2]
    k3 = COEF[f0 + 3]
    r = 2 * f0 * _ROW
    energy = f0 == 0
    zero = np.float32(0.0)
    for c in range(w):
        if first:
            a1 = a2 = b1 = b2 = g1 = g2 = h1 = h2 = e = zero
        else:
            a1 = state[r + c]
            a2 = state[r + _ROW + c]
            b1 = state[r + 2 * _ROW + c]
            b2 = state[r + 3 * _ROW + c]
            g1 = state[r + 4 * _ROW + c]
            g2 = state[r + 5 * _ROW + c]
            h1 = state[r + 6 * _ROW + c]
            h2 = state[r + 7 * _ROW + c]
            e = state[_ENERGY_ROW * _ROW + c]
        t0 = src[n, c]
        t1 = src[n + 1, c]
        t2 = src[n + 2, c]
        t3 = src[n + 3, c]
        t4 = src[n + 4, c]
        t5 = src[n + 5, c]
        t6 = src[n + 6, c]
        t7 = src[n + 7, c]
        if energy:
            e += t0 * t0 + t1 * t1 + t2 * t2 + t3 * t3 + t4 * t4 + t5 * t5 + t6 * t6 + t7 * t7
        a1, a2, b1, b2, g1, g2, h1, h2 = _two_samples(t0, t1, k0, k1, k2, k3, a1, a2, b1, b2, g1, g2, h1, h2)
        a1, a2, b1, b2, g1, g2, h1, h2 = _two_samples(t2, t3, k0, k1, k2, k3, a1, a2, b1, b2, g1, g2, h1, h2)
        a1, a2, b1, b2, g1, g2, h1, h2 = _two_samples(t4, t5, k0, k1, k2, k3, a1, a2, b1, b2, g1, g2, h1, h2)
        a1, a2, b1, b2, g1, g2, h1, h2 = _two_samples(t6, t7, k0, k1, k2, k3, a1, a2, b1, b2, g1, g2, h1, h2)
        state[r + c] = a1
        state[r + _ROW + c] = a2
        state[r + 2 * _ROW + c] = b1
        state[r + 3 * _ROW + c] = b2
        state[r + 4 * _ROW + c] = g1
        state[r + 5 * _ROW + c] = g2
        state[r + 6 * _ROW + c] = h1
        state[r + 7 * _ROW + c] = h2
        if energy:
            state[_ENERGY_ROW * _ROW + c] = e


@njit(nogil=True, fastmath=True, error_model="numpy", boundscheck=False, inline="always")
def _tile_steps(  # pragma: no cover - compiled; covered by the NUMBA_DISABLE_JIT run
    src: Float32Array, n: int, w: int, state: Float32Array
) -> None:
    """Rows ``n:n + 40`` of ``src[:, :w]`` (one block) into the state rows: ``s1``, ``s2``, energy."""
    _step(src, n, w, state, 0, True)
    _step(src, n, w, state, 4, True)
    for n0 in range(n + _STEP_SAMPLES, n + BLOCK_SAMPLES, _STEP_SAMPLES):
        _step(src, n0, w, state, 0, False)
        _step(src, n0, w, state, 4, False)


@njit(nogil=True, fastmath=True, error_model="numpy", boundscheck=False, inline="always")
def _tile_block(  # pragma: no cover - compiled; covered by the NUMBA_DISABLE_JIT run
    src: Float32Array, n: int, w: int, state: Float32Array,
    out_re: Float32Array, out_im: Float32Array, out_energy: Float32Array, b: int, c0: int,
) -> None:
    """One block: rows ``n:n + 40`` of ``src[:, :w]`` into block ``b``, channels ``c0:c0 + w``."""
    _tile_steps(src, n, w, state)
    # X = s1 - exp(-j w) s2, one output row per loop (one store stream each).
    for f in range(N_FREQS):
        cw = COS_W[f]
        sw = SIN_W[f]
        s1 = state[2 * f * _ROW : (2 * f + 1) * _ROW]
        s2 = state[(2 * f + 1) * _ROW : (2 * f + 2) * _ROW]
        o_re = out_re[b, f, c0 : c0 + w]
        o_im = out_im[b, f, c0 : c0 + w]
        for c in range(w):
            o_re[c] = s1[c] - cw * s2[c]
            o_im[c] = sw * s2[c]
    e = state[_ENERGY_ROW * _ROW : (_ENERGY_ROW + 1) * _ROW]
    o_e = out_energy[b, c0 : c0 + w]
    for c in range(w):
        o_e[c] = e[c]


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy", boundscheck=False)
def _goertzel_kernel(  # pragma: no cover - compiled; covered by the NUMBA_DISABLE_JIT run
    x: Float32Array,
    out_re: Float32Array,
    out_im: Float32Array,
    out_energy: Float32Array,
    scratch: Float32Array,
) -> None:
    n_samples, n_ch = x.shape
    n_blocks = n_samples // BLOCK_SAMPLES
    state = scratch[: _STATE_ROWS * _ROW]
    n_tiles = (n_ch + _TILE_CHANNELS - 1) // _TILE_CHANNELS
    if n_ch < _LANES <= n_blocks:
        # Too few channels to fill a register, but blocks enough: the blocks are independent,
        # so they take the lanes. Each channel's blocks are staged transposed (row r, column j:
        # sample r of block b0 + j) and the results scattered back.
        stage = scratch[_STATE_ROWS * _ROW : _STATE_ROWS * _ROW + BLOCK_SAMPLES * _TILE_CHANNELS]
        stage = stage.reshape(BLOCK_SAMPLES, _TILE_CHANNELS)
        for c in range(n_ch):
            for b0 in range(0, n_blocks, _TILE_CHANNELS):
                w = min(_TILE_CHANNELS, n_blocks - b0)
                for r in range(BLOCK_SAMPLES):
                    dst = stage[r]
                    for j in range(w):
                        dst[j] = x[(b0 + j) * BLOCK_SAMPLES + r, c]
                _tile_steps(stage, 0, w, state)
                for f in range(N_FREQS):
                    cw = COS_W[f]
                    sw = SIN_W[f]
                    s1 = state[2 * f * _ROW : (2 * f + 1) * _ROW]
                    s2 = state[(2 * f + 1) * _ROW : (2 * f + 2) * _ROW]
                    for j in range(w):
                        out_re[b0 + j, f, c] = s1[j] - cw * s2[j]
                        out_im[b0 + j, f, c] = sw * s2[j]
                for j in range(w):
                    out_energy[b0 + j, c] = state[_ENERGY_ROW * _ROW + j]
        return
    if n_tiles <= 1:
        for b in range(n_blocks):
            _tile_block(x, b * BLOCK_SAMPLES, n_ch, state, out_re, out_im, out_energy, b, 0)
        return
    stage = scratch[_STATE_ROWS * _ROW : _STATE_ROWS * _ROW + n_tiles * BLOCK_SAMPLES * _TILE_CHANNELS]
    stage = stage.reshape(n_tiles * BLOCK_SAMPLES, _TILE_CHANNELS)
    for b in range(n_blocks):
        n = b * BLOCK_SAMPLES
        # Stage the block tile-major (tile t: rows 40 t to 40 t + 39), reading in memory order.
        for r in range(BLOCK_SAMPLES):
            row = x[n + r]
            for t in range(n_tiles):
                c0 = t * _TILE_CHANNELS
                w = min(_TILE_CHANNELS, n_ch - c0)
                dst = stage[t * BLOCK_SAMPLES + r]
                for c in range(w):
                    dst[c] = row[c0 + c]
        for t in range(n_tiles):
            c0 = t * _TILE_CHANNELS
            w = min(_TILE_CHANNELS, n_ch - c0)
            _tile_block(stage, t * BLOCK_SAMPLES, w, state, out_re, out_im, out_energy, b, c0)


_FLOAT32 = np.dtype(np.float32)


def _check_input(x: npt.NDArray[np.floating], out: BlockSpectra | None) -> int:
    # On the media path this runs once per batch: plain attribute reads, no properties.
    if x.ndim != 2:
        raise ValueError(f"expected audio of shape (n_samples, n_channels), got {x.shape}")
    if x.dtype != _FLOAT32:
        raise TypeError(f"expected float32 audio, got {x.dtype}")
    n_samples, n_ch = x.shape
    n_blocks, rest = divmod(n_samples, BLOCK_SAMPLES)
    if rest:
        raise ValueError(f"n_samples must be a multiple of {BLOCK_SAMPLES}, got {n_samples}")
    if out is not None:
        shape = out.re.shape
        if shape[0] != n_blocks or shape[2] != n_ch:
            raise ValueError(
                f"output holds {shape[0]} blocks x {shape[2]} channels, input needs {n_blocks} x {n_ch}"
            )
    return n_blocks


def goertzel_blocks(x: Float32Array, out: BlockSpectra | None = None) -> BlockSpectra:
    """Run the Goertzel bank over ``x`` (float32, ``(n_samples, n_channels)``).

    ``n_samples`` must be a multiple of :data:`BLOCK_SAMPLES`. Pass ``out`` (a
    :class:`BlockSpectra` of matching size) on the media path so nothing is
    allocated per call. Raises ``ValueError``/``TypeError`` on a wrong shape or dtype.
    """
    n_blocks = _check_input(x, out)
    if out is None:
        out = BlockSpectra(n_blocks, x.shape[1])
    if not x.flags.c_contiguous:
        x = np.ascontiguousarray(x)
    re, im, energy = out.padded
    _goertzel_kernel(x, re, im, energy, out.scratch)
    return out


def goertzel_blocks_numpy(x: Float32Array) -> BlockSpectra:
    """Plain-NumPy twin of :func:`goertzel_blocks`: the same outputs by direct DFT."""
    n_blocks = _check_input(x, None)
    n_ch = x.shape[1]
    blocks = x.astype(np.float64).reshape(n_blocks, BLOCK_SAMPLES, n_ch)
    n = np.arange(BLOCK_SAMPLES)
    # exp(j w (N-1)) * sum_n x[n] exp(-j w n)  ==  sum_n x[n] exp(j w (N-1-n))
    basis = np.exp(1j * np.outer(_W, (BLOCK_SAMPLES - 1) - n))  # (8, 40)
    spec = np.einsum("fn,bnc->bfc", basis, blocks)
    out = BlockSpectra(n_blocks, n_ch)
    out.re[...] = spec.real
    out.im[...] = spec.imag
    out.energy[...] = np.einsum("bnc,bnc->bc", blocks, blocks)
    return out
