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

# Channels are processed in tiles; the inner loop runs across contiguous channels.
# Wide tiles amortise the per-loop overhead; the state (2 x 8 x tile floats) and the
# block's rows still stay in L2.
_TILE_CHANNELS = 1024
_ROW_PAD = 16

Float32Array = npt.NDArray[np.float32]


class BlockSpectra:
    """Preallocated outputs of one kernel call for ``n_blocks`` x ``n_channels``.

    ``re``, ``im``: float32 ``(n_blocks, 8, n_channels)``; ``energy``: float32
    ``(n_blocks, n_channels)``. ``scratch`` holds the filter state (not an output).
    """

    __slots__ = ("re", "im", "energy", "scratch")

    def __init__(self, n_blocks: int, n_channels: int) -> None:
        self.re: Float32Array = np.zeros((n_blocks, N_FREQS, n_channels), np.float32)
        self.im: Float32Array = np.zeros((n_blocks, N_FREQS, n_channels), np.float32)
        self.energy: Float32Array = np.zeros((n_blocks, n_channels), np.float32)
        # Padded rows: a power-of-two row stride would put all state rows (and the
        # input rows) into the same few L1 cache sets.
        self.scratch: Float32Array = np.zeros((2, N_FREQS, _TILE_CHANNELS + _ROW_PAD), np.float32)

    @property
    def n_blocks(self) -> int:
        return int(self.re.shape[0])

    @property
    def n_channels(self) -> int:
        return int(self.re.shape[2])


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy", boundscheck=False)
def _goertzel_kernel(  # pragma: no cover - compiled; covered by the NUMBA_DISABLE_JIT run
    x: Float32Array,
    coef: Float32Array,
    cos_w: Float32Array,
    sin_w: Float32Array,
    out_re: Float32Array,
    out_im: Float32Array,
    out_energy: Float32Array,
    scratch: Float32Array,
) -> None:
    # Four frequencies per pass over the tile (independent recurrences keep the FMA
    # units busy; the block's energy rides along with the first pass), eight samples
    # per pass (the state is loaded and stored once per eight steps), contiguous 1-D
    # rows so the channel loop vectorises. Each step is s = k s1 + (x - s2): only the
    # FMA is on the recurrence's critical path.
    n_samples, n_ch = x.shape
    n_blocks = n_samples // 40
    tile = scratch.shape[2] - _ROW_PAD
    for c0 in range(0, n_ch, tile):
        c1 = min(c0 + tile, n_ch)
        w = c1 - c0
        for b in range(n_blocks):
            base = b * 40
            oe = out_energy[b, c0:c1]
            for c in range(w):
                oe[c] = 0.0
            for fq in range(2):
                f0 = 4 * fq
                k0 = coef[f0]
                k1 = coef[f0 + 1]
                k2 = coef[f0 + 2]
                k3 = coef[f0 + 3]
                a1 = scratch[0, f0]
                a2 = scratch[1, f0]
                b1 = scratch[0, f0 + 1]
                b2 = scratch[1, f0 + 1]
                g1 = scratch[0, f0 + 2]
                g2 = scratch[1, f0 + 2]
                h1 = scratch[0, f0 + 3]
                h2 = scratch[1, f0 + 3]
                for c in range(w):
                    a1[c] = 0.0
                    a2[c] = 0.0
                    b1[c] = 0.0
                    b2[c] = 0.0
                    g1[c] = 0.0
                    g2[c] = 0.0
                    h1[c] = 0.0
                    h2[c] = 0.0
                for n0 in range(0, 40, 8):
                    r0 = x[base + n0, c0:c1]
                    r1 = x[base + n0 + 1, c0:c1]
                    r2 = x[base + n0 + 2, c0:c1]
                    r3 = x[base + n0 + 3, c0:c1]
                    r4 = x[base + n0 + 4, c0:c1]
                    r5 = x[base + n0 + 5, c0:c1]
                    r6 = x[base + n0 + 6, c0:c1]
                    r7 = x[base + n0 + 7, c0:c1]
                    if fq == 0:
                        for c in range(w):
                            oe[c] += (r0[c] * r0[c] + r1[c] * r1[c] + r2[c] * r2[c]
                                      + r3[c] * r3[c] + r4[c] * r4[c] + r5[c] * r5[c]
                                      + r6[c] * r6[c] + r7[c] * r7[c])
                    for c in range(w):
                        a = a1[c]
                        q = a2[c]
                        u = b1[c]
                        v = b2[c]
                        g = g1[c]
                        gg = g2[c]
                        h = h1[c]
                        hh = h2[c]
                        t = r0[c]
                        q = k0 * a + (t - q)
                        v = k1 * u + (t - v)
                        gg = k2 * g + (t - gg)
                        hh = k3 * h + (t - hh)
                        t = r1[c]
                        a = k0 * q + (t - a)
                        u = k1 * v + (t - u)
                        g = k2 * gg + (t - g)
                        h = k3 * hh + (t - h)
                        t = r2[c]
                        q = k0 * a + (t - q)
                        v = k1 * u + (t - v)
                        gg = k2 * g + (t - gg)
                        hh = k3 * h + (t - hh)
                        t = r3[c]
                        a = k0 * q + (t - a)
                        u = k1 * v + (t - u)
                        g = k2 * gg + (t - g)
                        h = k3 * hh + (t - h)
                        t = r4[c]
                        q = k0 * a + (t - q)
                        v = k1 * u + (t - v)
                        gg = k2 * g + (t - gg)
                        hh = k3 * h + (t - hh)
                        t = r5[c]
                        a = k0 * q + (t - a)
                        u = k1 * v + (t - u)
                        g = k2 * gg + (t - g)
                        h = k3 * hh + (t - h)
                        t = r6[c]
                        q = k0 * a + (t - q)
                        v = k1 * u + (t - v)
                        gg = k2 * g + (t - gg)
                        hh = k3 * h + (t - hh)
                        t = r7[c]
                        a = k0 * q + (t - a)
                        u = k1 * v + (t - u)
                        g = k2 * gg + (t - g)
                        h = k3 * hh + (t - h)
                        a1[c] = a
                        a2[c] = q
                        b1[c] = u
                        b2[c] = v
                        g1[c] = g
                        g2[c] = gg
                        h1[c] = h
                        h2[c] = hh
                for f in range(f0, f0 + 4):
                    s1 = scratch[0, f]
                    s2 = scratch[1, f]
                    cw = cos_w[f]
                    sw = sin_w[f]
                    orr = out_re[b, f, c0:c1]
                    oi = out_im[b, f, c0:c1]
                    for c in range(w):
                        orr[c] = s1[c] - cw * s2[c]
                        oi[c] = sw * s2[c]


def _check_input(x: npt.NDArray[np.floating], out: BlockSpectra | None) -> int:
    if x.ndim != 2:
        raise ValueError(f"expected audio of shape (n_samples, n_channels), got {x.shape}")
    if x.dtype != np.float32:
        raise TypeError(f"expected float32 audio, got {x.dtype}")
    if x.shape[0] % BLOCK_SAMPLES:
        raise ValueError(f"n_samples must be a multiple of {BLOCK_SAMPLES}, got {x.shape[0]}")
    n_blocks = x.shape[0] // BLOCK_SAMPLES
    if out is not None and (out.n_blocks != n_blocks or out.n_channels != x.shape[1]):
        raise ValueError(
            f"output holds {out.n_blocks} blocks x {out.n_channels} channels, "
            f"input needs {n_blocks} x {x.shape[1]}"
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
    _goertzel_kernel(x, COEF, COS_W, SIN_W, out.re, out.im, out.energy, out.scratch)
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
