"""Per-sub-block DTMF decisions from the Goertzel bank's outputs, for a batch of channels.

Input: the complex Goertzel outputs and energies of :mod:`dtmfguard.kernels.goertzel`
for ``n_blocks`` new 5 ms sub-blocks of ``n_channels`` channels, plus the last five
sub-blocks of every channel (the history, updated in place). For every new sub-block
``k`` four analysis windows end at ``k``: 5 ms (M=1), 10 ms (M=2), 15 ms (M=3) and
30 ms (M=6), built as coherent sums of sub-blocks
(``W_M(k) = sum_i X[k-M+1+i] exp(-j w L i)``). The phase advance between ``W_M(k-1)``
and ``W_M(k)`` gives each tone's frequency offset directly (unambiguous within
+/-100 Hz), which is how the ITU-T Q.24 accept (+/-1.5 % + 2 Hz) and reject (+/-3.5 %)
limits are told apart without a huge window.

Three decisions per sub-block and channel, each a key index 0-15 (row-major keypad,
``4 * low + high``) or -1:

* ``ONSET`` (M=1 or M=2, loose; or M=3 relative peak): "a keypad tone may have begun"
  -- fast, fires within 10 ms of a tone's start. Opens a tone run; never arms the mask.
* ``TONE`` (M=3, M=6 relative peak, or M=2 with a measured frequency; loose): "a
  keypad-like tone pair is present" -- arms and sustains masking.
* ``DIGIT`` (M=3, strict Q.24 limits): evidence for digit confirmation.

Purity is the share of the window's energy carried by the two detected tones (after
correcting each tone's power for its estimated frequency offset); it is what rejects
speech and music. A tone under speech keeps little purity, so a second test asks that
each tone stand well above the other bins of its group (as multimon-ng judges: 10 dB
over 40 ms). Over 15 ms voiced speech passes it too (two harmonics near a row and a
column frequency), so there it only opens a run; over 30 ms the key's bins grow
coherently while drifting harmonics smear, and there it arms the mask. Levels are
compared as mean-square power (dBm0 of a sine).

The jitted kernel never allocates: history comes with :class:`FeatureState`, scratch
with :class:`FeatureBank`. It evaluates every test for every channel in float32 (one
branch-free, vectorised pass over contiguous channels per sub-block) and masks the
results with the pre-test (gate), exactly as the twin does. For large batches the gate
(a tenth of the work) runs first on its own, and the full pass only over the channels
that pass it, gathered into contiguous rows: on typical traffic about a quarter of
them. :func:`block_features_numpy` is the plain-NumPy twin (float64, vectorised over all
blocks and channels) that tests compare against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
import numpy.typing as npt
from llvmlite import ir  # type: ignore[import-untyped]
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from dtmfguard.kernels.goertzel import BLOCK_SAMPLES, FREQS_HZ, N_FREQS, BlockSpectra, row_stride
from dtmfguard.levels import SAMPLE_RATE_HZ, dbm0_to_power

ONSET, TONE, DIGIT = 0, 1, 2
N_DECISIONS = 3
HISTORY_BLOCKS = 5
HISTORY_ROWS = HISTORY_BLOCKS * (2 * N_FREQS + 1)
"""Values of one channel's history: real and imaginary bins, then energies, per sub-block."""
_OCTAVE_TOL_HZ = 8.0

_ROT = np.exp(-1j * 2.0 * np.pi * FREQS_HZ * BLOCK_SAMPLES / SAMPLE_RATE_HZ)
ROT_RE = _ROT.real.astype(np.float32)
ROT_IM = _ROT.imag.astype(np.float32)
ROT_TH = np.angle(_ROT).astype(np.float32)
# Hz of frequency offset per radian of phase advance over one sub-block.
HZ_PER_RAD = SAMPLE_RATE_HZ / (2.0 * math.pi * BLOCK_SAMPLES)

Float32Array = npt.NDArray[np.float32]
Int8Array = npt.NDArray[np.int8]
_F32Tuple = tuple[np.float32, ...]


@dataclass(frozen=True)
class Thresholds:
    """Decision limits. Levels in dBm0 per tone, twist in dB (high minus low)."""

    # Strict (digit) limits: ITU-T Q.24 with margins between accept and reject.
    digit_min_level_dbm0: float = -36.0
    digit_max_reverse_twist_db: float = 5.0
    digit_max_normal_twist_db: float = 9.0
    digit_min_purity: float = 0.85
    digit_freq_tol_rel: float = 0.025
    digit_freq_tol_hz: float = 1.0
    # Loose (masking) limits: wider than the decoders we must beat (multimon-ng has
    # no level floor at all, hence -60 dBm0), fail closed.
    mask_min_level_dbm0: float = -60.0
    mask_max_reverse_twist_db: float = 7.0
    mask_max_normal_twist_db: float = 11.0
    onset_min_purity: float = 0.7
    # Tones with speech up to about 8 dB below them; louder speech is left to the
    # relative-peak tests (0.75 here armed the mask on tonal sounds and speech).
    tone_min_purity: float = 0.85
    mask_freq_tol_rel: float = 0.03
    mask_freq_tol_hz: float = 6.0
    # Second masking test for tones in noise or under speech: each detected tone
    # stands this far above the other bins of its group (as independent decoders
    # such as multimon-ng judge), with a much lower share of the total energy. Over
    # 15 ms (these two) it only opens a run (ONSET): voiced speech passes it there.
    tone_min_rel_peak_db: float = 10.0
    tone_rel_peak_min_purity: float = 0.4
    # The same test over 30 ms arms the mask (TONE). 7 dB, below the 10 dB multimon-ng
    # asks over 40 ms, so a key a decoder could hear under speech is masked with margin.
    tone_long_rel_peak_db: float = 7.0
    tone_long_min_purity: float = 0.4
    # Cheap pre-test: windows whose best pair holds less than this share of the
    # energy (before offset correction) skip the detailed tests.
    gate_purity: float = 0.25

    def pack(self) -> Float32Array:
        """The limits as the float32 vector the kernel reads (order is the kernel's)."""
        return np.array(
            [
                dbm0_to_power(self.digit_min_level_dbm0),
                10.0 ** (self.digit_max_reverse_twist_db / 10.0),
                10.0 ** (-self.digit_max_normal_twist_db / 10.0),
                self.digit_min_purity,
                self.digit_freq_tol_rel,
                self.digit_freq_tol_hz,
                dbm0_to_power(self.mask_min_level_dbm0),
                10.0 ** (self.mask_max_reverse_twist_db / 10.0),
                10.0 ** (-self.mask_max_normal_twist_db / 10.0),
                self.onset_min_purity,
                self.tone_min_purity,
                self.mask_freq_tol_rel,
                self.mask_freq_tol_hz,
                self.gate_purity,
                10.0 ** (self.tone_min_rel_peak_db / 10.0),
                self.tone_rel_peak_min_purity,
                10.0 ** (self.tone_long_rel_peak_db / 10.0),
                self.tone_long_min_purity,
            ],
            dtype=np.float32,
        )


(
    _P_DIG_LEVEL,
    _P_DIG_REV,
    _P_DIG_NORM,
    _P_DIG_PURITY,
    _P_DIG_TOL_REL,
    _P_DIG_TOL_HZ,
    _P_MASK_LEVEL,
    _P_MASK_REV,
    _P_MASK_NORM,
    _P_ONSET_PURITY,
    _P_TONE_PURITY,
    _P_MASK_TOL_REL,
    _P_MASK_TOL_HZ,
    _P_GATE,
    _P_REL_PEAK,
    _P_REL_PEAK_PURITY,
    _P_LONG_REL_PEAK,
    _P_LONG_PURITY,
) = range(18)
# The kernel's params vector: the packed thresholds, then the bins' rotations (real,
# imaginary, angle) and frequencies.
_P_ROT_RE, _P_ROT_IM, _P_ROT_TH, _P_FREQS = (18 + N_FREQS * i for i in range(4))
_CONSTANTS = np.concatenate([ROT_RE, ROT_IM, ROT_TH, FREQS_HZ.astype(np.float32)])


class FeatureState:
    """Per-channel history (last five sub-blocks) and kernel scratch for a batch.

    Channels are independent columns; resetting one column (:meth:`reset_channel`)
    never touches another.
    """

    __slots__ = ("rows", "padded", "hist_re", "hist_im", "hist_e", "gate", "n_channels")

    def __init__(self, n_channels: int) -> None:
        self.n_channels = n_channels
        # The history is one (HISTORY_ROWS, stride) block, so a channel's history is one
        # column of it (see dtmfguard.kernels.columns); rows padded as the spectra's are
        # (row_stride). ``padded``: the three history arrays the kernel takes, views of it;
        # hist_re, hist_im, hist_e: the same without the padding.
        stride = row_stride(n_channels)
        self.rows: Float32Array = np.zeros((HISTORY_ROWS, stride), np.float32)
        n_bins = HISTORY_BLOCKS * N_FREQS
        hist_re = self.rows[:n_bins].reshape(HISTORY_BLOCKS, N_FREQS, stride)
        hist_im = self.rows[n_bins : 2 * n_bins].reshape(HISTORY_BLOCKS, N_FREQS, stride)
        hist_e = self.rows[2 * n_bins :]
        self.padded: tuple[Float32Array, Float32Array, Float32Array] = (hist_re, hist_im, hist_e)
        self.hist_re: Float32Array = hist_re[:, :, :n_channels]
        self.hist_im: Float32Array = hist_im[:, :, :n_channels]
        self.hist_e: Float32Array = hist_e[:, :n_channels]
        self.gate: npt.NDArray[np.uint8] = np.zeros(n_channels, np.uint8)

    def reset_channel(self, c: int) -> None:
        self.rows[:, c] = 0.0


# Denormal float32 values (from near-silent channels) cost ~100 cycles per operation on
# x86; the kernel runs with flush-to-zero and denormals-are-zero set in MXCSR (and
# restores it). Values below 1.2e-38 are far below every limit, so no decision changes.
_MXCSR_FTZ_DAZ = 0x8040

if getattr(numba.config, "DISABLE_JIT", False):

    def _mxcsr_get() -> int:
        return 0

    def _mxcsr_set(value: int) -> None:
        return None

else:

    @intrinsic
    def _mxcsr_get(typingctx):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            slot = cgutils.alloca_once(builder, ir.IntType(32))
            fnty = ir.FunctionType(ir.VoidType(), [slot.type])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse.stmxcsr")
            builder.call(fn, [slot])
            return builder.load(slot)

        return types.uint32(), codegen

    @intrinsic
    def _mxcsr_set(typingctx, value):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            slot = cgutils.alloca_once(builder, ir.IntType(32))
            builder.store(builder.trunc(args[0], ir.IntType(32))
                          if args[0].type.width > 32 else args[0], slot)
            fnty = ir.FunctionType(ir.VoidType(), [slot.type])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse.ldmxcsr")
            builder.call(fn, [slot])
            return context.get_dummy_value()

        return types.none(value), codegen


# Everything below runs on float32 values (8 lanes per AVX2 register): constants are
# spelled np.float32(...) so that nothing widens to float64 inside the channel loop.
# Every helper is inlined into one branch-free loop over contiguous channels, so LLVM
# vectorises the whole per-block decision across channels; all tests are evaluated for
# every channel and combined as masks. Keep it that way: the inlined helpers take scalars
# only (an array passed into an inlined helper brings reference counting calls into the
# loop), and the loop stores one value per channel (more store streams need more
# run-time alias checks than LLVM accepts); either silently turns the loop scalar.
# The atan2 polynomial is good to ~1e-5 rad (3e-4 Hz of offset).


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy", inline="always")
def _atan2_f32(y: np.float32, x: np.float32) -> np.float32:  # pragma: no cover - compiled
    ax = abs(x)
    ay = abs(y)
    mx = max(ax, ay)
    mn = min(ax, ay)
    a = mn / max(mx, np.float32(1e-30))
    s = a * a
    r = ((np.float32(-0.0464964749) * s + np.float32(0.15931422)) * s
         - np.float32(0.327622764)) * s * a + a
    r = np.float32(1.5707963267948966) - r if ay > ax else r
    r = np.float32(3.141592653589793) - r if x < np.float32(0.0) else r
    return -r if y < np.float32(0.0) else r


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy", inline="always")
def _offset_f32(  # pragma: no cover - compiled
    zr: np.float32, zi: np.float32, p: np.float32, th: np.float32, n_over_80: np.float32,
) -> tuple[np.bool_, np.float32, np.float32]:
    """Whether a tone's offset is measurable, the offset (Hz) and the power correction
    (the factor that restores the power the window lost to the offset; 1 when unknown).

    z = W(k) conj(W(k-1)) (unrotated), p = |W(k)|^2, th = the bin's rotation angle:
    the angle of z rot is the offset's phase advance over one sub-block. Measurable when
    |W(k-1)|^2 >= 0.1 |W(k)|^2, i.e. |z|^2 >= 0.1 p^2.
    """
    known = zr * zr + zi * zi >= np.float32(0.1) * (p * p)
    phi = _atan2_f32(zi, zr) + th
    pi = np.float32(math.pi)
    phi = phi - np.float32(2.0 * math.pi) if phi > pi else phi
    phi = phi + np.float32(2.0 * math.pi) if phi < -pi else phi
    df = phi * np.float32(HZ_PER_RAD)
    # Dirichlet power response of an n-sample window df Hz off its bin:
    # (sin(n a) / (n sin a))**2 with a = pi df / 8000 = phi / 80, floored at 0.25. Its
    # inverse, with t = n a: (t / sin t)**2, to 1e-5 for t**2 <= 4 by a polynomial in
    # t**2 (sin(a) = a within 2e-4 here); past |t| = 1.9 the floor applies (4).
    t = phi * n_over_80
    u = min(t * t, np.float32(4.0))
    g = ((((((np.float32(2.4418988e-05) * u - np.float32(1.6158266e-04)) * u
             + np.float32(8.954134e-04)) * u + np.float32(9.216452e-05)) * u
           + np.float32(1.2038471e-02)) * u + np.float32(6.591232e-02)) * u
         + np.float32(3.3349192e-01)) * u + np.float32(0.99999217)
    gain = min(g, np.float32(4.0)) if known else np.float32(1.0)
    return known, (df if known else np.float32(0.0)), gain


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy", inline="always")
def _bin_windows(  # pragma: no cover - compiled
    x0r: np.float32, x0i: np.float32, x1r: np.float32, x1i: np.float32,
    x2r: np.float32, x2i: np.float32, x3r: np.float32, x3i: np.float32,
    x4r: np.float32, x4i: np.float32, x5r: np.float32, x5i: np.float32,
    cr: np.float32, ci: np.float32,
) -> _F32Tuple:
    """One bin of one channel from sub-blocks X[k] (x0) .. X[k-5] (x5) and the bin's
    rotation: |W_1(k)|^2, then for M = 2, 3: |W_M(k)|^2 and z = W_M(k) conj(W_M(k-1)),
    and |W_6(k)|^2.

    Horner over sub-blocks from newest to oldest, W = X[s] + rot (X[s+1] + rot (...)).
    Helpers inlined into the channel loop take scalars only (no array references).
    """
    w2r = (x0r * cr - x0i * ci) + x1r
    w2i = (x0r * ci + x0i * cr) + x1i
    v2r = (x1r * cr - x1i * ci) + x2r
    v2i = (x1r * ci + x1i * cr) + x2i
    w3r = (w2r * cr - w2i * ci) + x2r
    w3i = (w2r * ci + w2i * cr) + x2i
    v3r = (v2r * cr - v2i * ci) + x3r
    v3i = (v2r * ci + v2i * cr) + x3i
    w4r = (w3r * cr - w3i * ci) + x3r
    w4i = (w3r * ci + w3i * cr) + x3i
    w5r = (w4r * cr - w4i * ci) + x4r
    w5i = (w4r * ci + w4i * cr) + x4i
    w6r = (w5r * cr - w5i * ci) + x5r
    w6i = (w5r * ci + w5i * cr) + x5i
    return (x0r * x0r + x0i * x0i,
            w2r * w2r + w2i * w2i, w2r * v2r + w2i * v2i, w2i * v2r - w2r * v2i,
            w3r * w3r + w3i * w3i, w3r * v3r + w3i * v3i, w3i * v3r - w3r * v3i,
            w6r * w6r + w6i * w6i)


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy", inline="always")
def _first(bw: _F32Tuple) -> _F32Tuple:  # pragma: no cover - compiled
    """A group's running best, started from its first bin (_bin_windows output bw):
    (p1, i1, p2, i2, z2r, z2i, p3, s3, i3, z3r, z3i, p6, s6, i6), per window the best
    power, its bin (0-3, as float32) and that bin's z; s3 and s6 are the second-best
    W_3 and W_6 powers."""
    q1, q2, y2r, y2i, q3, y3r, y3i, q6 = bw
    z = np.float32(0.0)
    return (q1, z, q2, z, y2r, y2i, q3, z, z, y3r, y3i, q6, z, z)


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy", inline="always")
def _take(st: _F32Tuple, bw: _F32Tuple, jf: np.float32) -> _F32Tuple:  # pragma: no cover - compiled
    """Bin number jf of a group (_bin_windows output bw) into its running best (_first).
    Ties keep the lower bin (as argmax)."""
    p1, i1, p2, i2, z2r, z2i, p3, s3, i3, z3r, z3i, p6, s6, i6 = st
    q1, q2, y2r, y2i, q3, y3r, y3i, q6 = bw
    g = q1 > p1
    p1 = q1 if g else p1
    i1 = jf if g else i1
    g = q2 > p2
    p2 = q2 if g else p2
    i2 = jf if g else i2
    z2r = y2r if g else z2r
    z2i = y2i if g else z2i
    g = q3 > p3
    s3 = max(s3, min(q3, p3))
    p3 = q3 if g else p3
    i3 = jf if g else i3
    z3r = y3r if g else z3r
    z3i = y3i if g else z3i
    g = q6 > p6
    s6 = max(s6, min(q6, p6))
    p6 = q6 if g else p6
    i6 = jf if g else i6
    return (p1, i1, p2, i2, z2r, z2i, p3, s3, i3, z3r, z3i, p6, s6, i6)


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy", inline="always")
def _pick(i: np.float32, a0: np.float32, a1: np.float32, a2: np.float32, a3: np.float32,
          ) -> np.float32:  # pragma: no cover - compiled
    """a[i] for a bin number i (0-3, as float32), by selects."""
    lo = a0 if i < np.float32(0.5) else a1
    hi = a2 if i < np.float32(2.5) else a3
    return lo if i < np.float32(1.5) else hi


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy", inline="always")
def _passes(  # pragma: no cover - compiled
    pl: np.float32, ph: np.float32, level: np.float32, rev: np.float32, norm: np.float32,
    min_sum: np.float32,
) -> np.bool_:
    """Level, twist and purity limits of one window test (offset-corrected powers)."""
    return ((pl >= level) & (ph >= level) & (ph <= rev * pl) & (ph >= norm * pl)
            & (pl + ph >= min_sum))


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy", inline="always")
def _power(xr: np.float32, xi: np.float32) -> np.float32:  # pragma: no cover - compiled
    """|X|^2, as :func:`_bin_windows` computes it."""
    return xr * xr + xi * xi


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy", inline="always")
def _gate_w2(  # pragma: no cover - compiled
    x0r: np.float32, x0i: np.float32, x1r: np.float32, x1i: np.float32,
    cr: np.float32, ci: np.float32,
) -> np.float32:
    """|W_2(k)|^2 of one bin, as :func:`_bin_windows` computes it."""
    w2r = (x0r * cr - x0i * ci) + x1r
    w2i = (x0r * ci + x0i * cr) + x1i
    return w2r * w2r + w2i * w2i


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy", boundscheck=False)
def _block_decisions(  # pragma: no cover - compiled; covered by the NUMBA_DISABLE_JIT run
    re: Float32Array, im: Float32Array, energy: Float32Array,
    hist_re: Float32Array, hist_im: Float32Array, hist_e: Float32Array,
    b_first: int, b_stop: int, n_ch: int, params: Float32Array,
    codes: Float32Array, row: int,
) -> None:
    """Packed decisions of sub-blocks ``b_first .. b_stop - 1`` for channels ``0 .. n_ch -
    1``: every test for every channel, gated, as ``codes[row + b - b_first, c]``
    (``(onset + 1) + 32 (tone + 1) + 1024 (digit + 1)``, or -1 where the gate fails).

    Sub-block ``b`` is row ``b`` of ``re``, ``im`` (sub-blocks, bins, channels) and
    ``energy`` (sub-blocks, channels); the history's rows (oldest first) come before row 0.
    Each sub-block's decisions also need the five before it. ``params``: the packed
    thresholds, then the bins' rotations and frequencies (see :class:`FeatureBank`)."""
    rot_re = params[_P_ROT_RE:_P_ROT_RE + N_FREQS]
    rot_im = params[_P_ROT_IM:_P_ROT_IM + N_FREQS]
    rot_th = params[_P_ROT_TH:_P_ROT_TH + N_FREQS]
    freqs = params[_P_FREQS:_P_FREQS + N_FREQS]
    # Limits, as float32 scalars (purity limits folded with 2 / N^2 and 1 / N).
    t1 = params[_P_GATE] * np.float32(20.0)
    t2 = params[_P_GATE] * np.float32(40.0)
    onset_purity = params[_P_ONSET_PURITY]
    tone_purity = params[_P_TONE_PURITY]
    rp_purity = params[_P_REL_PEAK_PURITY]
    dig_purity = params[_P_DIG_PURITY]
    m_level = params[_P_MASK_LEVEL]
    m_rev = params[_P_MASK_REV]
    m_norm = params[_P_MASK_NORM]
    m_rel = params[_P_MASK_TOL_REL]
    m_hz = params[_P_MASK_TOL_HZ]
    d_level = params[_P_DIG_LEVEL]
    d_rev = params[_P_DIG_REV]
    d_norm = params[_P_DIG_NORM]
    d_rel = params[_P_DIG_TOL_REL]
    d_hz = params[_P_DIG_TOL_HZ]
    rel_peak = params[_P_REL_PEAK]
    long_peak = params[_P_LONG_REL_PEAK]
    k1 = np.float32(2.0 / 1600.0)
    k2 = np.float32(2.0 / 6400.0)
    k3 = np.float32(2.0 / 14400.0)
    k6 = np.float32(2.0 / 57600.0)
    onset1_min = onset_purity * np.float32(1.0 / 40.0)
    onset2_min = onset_purity * np.float32(1.0 / 80.0)
    tone2_min = tone_purity * np.float32(1.0 / 80.0)
    tone3_min = tone_purity * np.float32(1.0 / 120.0)
    rp3_min = rp_purity * np.float32(1.0 / 120.0)
    long_min = params[_P_LONG_PURITY] * np.float32(1.0 / 240.0)
    dig3_min = dig_purity * np.float32(1.0 / 120.0)
    one = np.float32(1.0)
    two = np.float32(2.0)
    three = np.float32(3.0)
    rc0, rc1, rc2, rc3, rc4, rc5, rc6, rc7 = (rot_re[0], rot_re[1], rot_re[2], rot_re[3],
                                              rot_re[4], rot_re[5], rot_re[6], rot_re[7])
    ic0, ic1, ic2, ic3, ic4, ic5, ic6, ic7 = (rot_im[0], rot_im[1], rot_im[2], rot_im[3],
                                              rot_im[4], rot_im[5], rot_im[6], rot_im[7])
    th0, th1, th2, th3, th4, th5, th6, th7 = (rot_th[0], rot_th[1], rot_th[2], rot_th[3],
                                              rot_th[4], rot_th[5], rot_th[6], rot_th[7])
    fq0, fq1, fq2, fq3, fq4, fq5, fq6, fq7 = (freqs[0], freqs[1], freqs[2], freqs[3],
                                              freqs[4], freqs[5], freqs[6], freqs[7])
    one_half = np.float32(1.5)
    none = np.float32(-1.0)
    four = np.float32(4.0)
    e_floor = np.float32(1e-12)
    g_floor = np.float32(1e-10)
    octave = np.float32(_OCTAVE_TOL_HZ)
    for b in range(b_first, b_stop):
        # Sub-blocks k .. k-5, from this call's blocks or the history (rows oldest first).
        x0r = re[b]
        x0i = im[b]
        e0r = energy[b]
        x1r = re[b - 1] if b >= 1 else hist_re[4 + b]
        x1i = im[b - 1] if b >= 1 else hist_im[4 + b]
        e1r = energy[b - 1] if b >= 1 else hist_e[4 + b]
        x2r = re[b - 2] if b >= 2 else hist_re[3 + b]
        x2i = im[b - 2] if b >= 2 else hist_im[3 + b]
        e2r = energy[b - 2] if b >= 2 else hist_e[3 + b]
        x3r = re[b - 3] if b >= 3 else hist_re[2 + b]
        x3i = im[b - 3] if b >= 3 else hist_im[2 + b]
        e3r = energy[b - 3] if b >= 3 else hist_e[2 + b]
        x4r = re[b - 4] if b >= 4 else hist_re[1 + b]
        x4i = im[b - 4] if b >= 4 else hist_im[1 + b]
        e4r = energy[b - 4] if b >= 4 else hist_e[1 + b]
        x5r = re[b - 5] if b >= 5 else hist_re[b]
        x5i = im[b - 5] if b >= 5 else hist_im[b]
        e5r = energy[b - 5] if b >= 5 else hist_e[b]
        packed = codes[row + b - b_first]
        # One store stream per channel (a packed code) keeps the loop vectorisable.
        for c in range(n_ch):
            lo = _first(_bin_windows(x0r[0, c], x0i[0, c], x1r[0, c], x1i[0, c],
                                     x2r[0, c], x2i[0, c], x3r[0, c], x3i[0, c],
                                     x4r[0, c], x4i[0, c], x5r[0, c], x5i[0, c], rc0, ic0))
            lo = _take(lo, _bin_windows(x0r[1, c], x0i[1, c], x1r[1, c], x1i[1, c],
                                        x2r[1, c], x2i[1, c], x3r[1, c], x3i[1, c],
                                        x4r[1, c], x4i[1, c], x5r[1, c], x5i[1, c], rc1, ic1), one)
            lo = _take(lo, _bin_windows(x0r[2, c], x0i[2, c], x1r[2, c], x1i[2, c],
                                        x2r[2, c], x2i[2, c], x3r[2, c], x3i[2, c],
                                        x4r[2, c], x4i[2, c], x5r[2, c], x5i[2, c], rc2, ic2), two)
            lo = _take(lo, _bin_windows(x0r[3, c], x0i[3, c], x1r[3, c], x1i[3, c],
                                        x2r[3, c], x2i[3, c], x3r[3, c], x3i[3, c],
                                        x4r[3, c], x4i[3, c], x5r[3, c], x5i[3, c], rc3, ic3), three)
            hi = _first(_bin_windows(x0r[4, c], x0i[4, c], x1r[4, c], x1i[4, c],
                                     x2r[4, c], x2i[4, c], x3r[4, c], x3i[4, c],
                                     x4r[4, c], x4i[4, c], x5r[4, c], x5i[4, c], rc4, ic4))
            hi = _take(hi, _bin_windows(x0r[5, c], x0i[5, c], x1r[5, c], x1i[5, c],
                                        x2r[5, c], x2i[5, c], x3r[5, c], x3i[5, c],
                                        x4r[5, c], x4i[5, c], x5r[5, c], x5i[5, c], rc5, ic5), one)
            hi = _take(hi, _bin_windows(x0r[6, c], x0i[6, c], x1r[6, c], x1i[6, c],
                                        x2r[6, c], x2i[6, c], x3r[6, c], x3i[6, c],
                                        x4r[6, c], x4i[6, c], x5r[6, c], x5i[6, c], rc6, ic6), two)
            hi = _take(hi, _bin_windows(x0r[7, c], x0i[7, c], x1r[7, c], x1i[7, c],
                                        x2r[7, c], x2i[7, c], x3r[7, c], x3i[7, c],
                                        x4r[7, c], x4i[7, c], x5r[7, c], x5i[7, c], rc7, ic7), three)
            lp1, li1, lp2, li2, lz2r, lz2i, lp3, ls3, li3, lz3r, lz3i, lp6, ls6, li6 = lo
            hp1, hi1, hp2, hi2, hz2r, hz2i, hp3, hs3, hi3, hz3r, hz3i, hp6, hs6, hi6 = hi
            lf2 = _pick(li2, fq0, fq1, fq2, fq3)
            hf2 = _pick(hi2, fq4, fq5, fq6, fq7)
            lf3 = _pick(li3, fq0, fq1, fq2, fq3)
            hf3 = _pick(hi3, fq4, fq5, fq6, fq7)
            e1 = e0r[c]
            e2 = e1 + e1r[c]
            e3 = e2 + e2r[c]
            e6 = e3 + e3r[c] + e4r[c] + e5r[c]
            # Pre-test (no offset correction): the best pair's share of the 5 or 10 ms
            # window's energy, purity_M = 2 (lo + hi) / (N * E), compared undivided.
            g = (((lp1 + hp1) >= t1 * e1) | ((lp2 + hp2) >= t2 * e2)) & (e1 > g_floor)
            # 5 ms: no frequency estimate (the bin is wide enough).
            pl = lp1 * k1
            ph = hp1 * k1
            onset1 = (e1 > e_floor) & _passes(pl, ph, m_level, m_rev, m_norm, onset1_min * e1)
            key1 = four * li1 + hi1
            # 10 ms.
            kl, dl, cl = _offset_f32(lz2r, lz2i, lp2, _pick(li2, th0, th1, th2, th3), one)
            kh, dh, ch = _offset_f32(hz2r, hz2i, hp2, _pick(hi2, th4, th5, th6, th7), one)
            pl = lp2 * k2 * cl
            ph = hp2 * k2 * ch
            fok = (((not kl) | (abs(dl) <= m_rel * lf2 + m_hz))
                   & ((not kh) | (abs(dh) <= m_rel * hf2 + m_hz)) & (e2 > e_floor))
            onset2 = fok & _passes(pl, ph, m_level, m_rev, m_norm, onset2_min * e2)
            # Tones far off frequency (spandsp still takes some at 3.5 %) lose too much
            # power in the 15 ms window's narrow bin; the 10 ms one keeps them.
            tone2 = fok & kl & kh & _passes(pl, ph, m_level, m_rev, m_norm, tone2_min * e2)
            key2 = four * li2 + hi2
            # 15 ms.
            kl, dl, cl = _offset_f32(lz3r, lz3i, lp3, _pick(li3, th0, th1, th2, th3), one_half)
            kh, dh, ch = _offset_f32(hz3r, hz3i, hp3, _pick(hi3, th4, th5, th6, th7), one_half)
            pl = lp3 * k3 * cl
            ph = hp3 * k3 * ch
            e_ok = e3 > e_floor
            fok = (((not kl) | (abs(dl) <= m_rel * lf3 + m_hz))
                   & ((not kh) | (abs(dh) <= m_rel * hf3 + m_hz)) & e_ok)
            tone3 = fok & _passes(pl, ph, m_level, m_rev, m_norm, tone3_min * e3)
            # Tones under speech or noise: each tone stands well above the other bins of
            # its group, with a much lower share of the energy. In 15 ms, speech harmonics
            # pass this too, so it only opens or extends a run (ONSET).
            peaked = fok & (lp3 >= rel_peak * ls3) & (hp3 >= rel_peak * hs3)
            onset3 = peaked & _passes(pl, ph, m_level, m_rev, m_norm, rp3_min * e3)
            # A note and its octave (music, or two harmonics of one voice) is not a
            # digit: DTMF pairs within Q.24 tolerance stay >= 14 Hz from an exact octave.
            digit = (kl & kh & e_ok & (abs(dl) <= d_rel * lf3 + d_hz)
                     & (abs(dh) <= d_rel * hf3 + d_hz)
                     & (abs((hf3 + dh) - np.float32(2.0) * (lf3 + dl)) >= octave)
                     & _passes(pl, ph, d_level, d_rev, d_norm, dig3_min * e3))
            key3 = four * li3 + hi3
            # 30 ms, the relative-peak test again (TONE): a key holds its frequencies, so
            # its bins grow coherently over 30 ms while drifting speech harmonics smear.
            # No frequency estimate: the narrow bins (first nulls +/-33 Hz) bound the
            # offset about as tightly as the decoders' own 40 ms windows do (multimon-ng
            # hears up to +/-20 Hz, spandsp +/-25 Hz).
            pl = lp6 * k6
            ph = hp6 * k6
            tone6 = ((e6 > e_floor) & (lp6 >= long_peak * ls6) & (hp6 >= long_peak * hs6)
                     & _passes(pl, ph, m_level, m_rev, m_norm, long_min * e6))
            key6 = four * li6 + hi6
            onset = key1 if onset1 else (key2 if onset2 else (key3 if onset3 else none))
            tone = key3 if tone3 else (key6 if tone6 else (key2 if tone2 else none))
            dig = key3 if digit else none
            packed[c] = ((onset + one) + np.float32(32.0) * (tone + one)
                         + np.float32(1024.0) * (dig + one)) if g else np.float32(-1.0)


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy", boundscheck=False)
def _gate_block(  # pragma: no cover - compiled; covered by the NUMBA_DISABLE_JIT run
    x0r: Float32Array, x0i: Float32Array, e0r: Float32Array,
    x1r: Float32Array, x1i: Float32Array, e1r: Float32Array, n_ch: int,
    params: Float32Array, lim1: np.float32, lim2: np.float32, g_floor: np.float32,
    mask: npt.NDArray[np.uint32],
) -> None:
    """The pre-test of a sub-block (bins ``x0r``, ``x0i``: ``(8, channels)``, energies
    ``e0r``) after the one before it (``x1r``, ``x1i``, ``e1r``) for channels ``0 .. n_ch -
    1``, as ``mask[c]`` (1 = pass): the gate expression of :func:`_block_decisions`, which
    needs the 5 and 10 ms windows only, a tenth of the work."""
    rot_re = params[_P_ROT_RE:_P_ROT_RE + N_FREQS]
    rot_im = params[_P_ROT_IM:_P_ROT_IM + N_FREQS]
    rc0, rc1, rc2, rc3, rc4, rc5, rc6, rc7 = (rot_re[0], rot_re[1], rot_re[2], rot_re[3],
                                              rot_re[4], rot_re[5], rot_re[6], rot_re[7])
    ic0, ic1, ic2, ic3, ic4, ic5, ic6, ic7 = (rot_im[0], rot_im[1], rot_im[2], rot_im[3],
                                              rot_im[4], rot_im[5], rot_im[6], rot_im[7])
    for c in range(n_ch):
        lp1 = _power(x0r[0, c], x0i[0, c])
        lp2 = _gate_w2(x0r[0, c], x0i[0, c], x1r[0, c], x1i[0, c], rc0, ic0)
        lp1 = max(lp1, _power(x0r[1, c], x0i[1, c]))
        lp2 = max(lp2, _gate_w2(x0r[1, c], x0i[1, c], x1r[1, c], x1i[1, c], rc1, ic1))
        lp1 = max(lp1, _power(x0r[2, c], x0i[2, c]))
        lp2 = max(lp2, _gate_w2(x0r[2, c], x0i[2, c], x1r[2, c], x1i[2, c], rc2, ic2))
        lp1 = max(lp1, _power(x0r[3, c], x0i[3, c]))
        lp2 = max(lp2, _gate_w2(x0r[3, c], x0i[3, c], x1r[3, c], x1i[3, c], rc3, ic3))
        hp1 = _power(x0r[4, c], x0i[4, c])
        hp2 = _gate_w2(x0r[4, c], x0i[4, c], x1r[4, c], x1i[4, c], rc4, ic4)
        hp1 = max(hp1, _power(x0r[5, c], x0i[5, c]))
        hp2 = max(hp2, _gate_w2(x0r[5, c], x0i[5, c], x1r[5, c], x1i[5, c], rc5, ic5))
        hp1 = max(hp1, _power(x0r[6, c], x0i[6, c]))
        hp2 = max(hp2, _gate_w2(x0r[6, c], x0i[6, c], x1r[6, c], x1i[6, c], rc6, ic6))
        hp1 = max(hp1, _power(x0r[7, c], x0i[7, c]))
        hp2 = max(hp2, _gate_w2(x0r[7, c], x0i[7, c], x1r[7, c], x1i[7, c], rc7, ic7))
        e1 = e0r[c]
        e2 = e1 + e1r[c]
        g = (((lp1 + hp1) >= lim1 * e1) | ((lp2 + hp2) >= lim2 * e2)) & (e1 > g_floor)
        mask[c] = np.uint32(g)


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy", boundscheck=False)
def _copy_row(src: Float32Array, dst: Float32Array) -> None:  # pragma: no cover - compiled
    for c in range(min(src.shape[0], dst.shape[0])):
        dst[c] = src[c]


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy", boundscheck=False)
def _gather(  # pragma: no cover - compiled
    re: Float32Array, im: Float32Array, energy: Float32Array,
    hist_re: Float32Array, hist_im: Float32Array, hist_e: Float32Array, b: int,
    index: npt.NDArray[np.uint32], n: int,
    dst_re: Float32Array, dst_im: Float32Array, dst_e: Float32Array, h: int,
) -> None:
    """Sub-blocks ``b - 5 .. b`` (laid out as for :func:`_block_decisions`) of channels
    ``index[:n]`` into sub-blocks ``h .. h + 5``, channels ``0 .. n - 1``, of the
    destinations."""
    for s in range(6):
        j = b - 5 + s
        for f in range(8):
            if j >= 0:
                for i in range(n):
                    dst_re[h + s, f, i] = re[j, f, index[i]]
                for i in range(n):
                    dst_im[h + s, f, i] = im[j, f, index[i]]
            else:
                for i in range(n):
                    dst_re[h + s, f, i] = hist_re[HISTORY_BLOCKS + j, f, index[i]]
                for i in range(n):
                    dst_im[h + s, f, i] = hist_im[HISTORY_BLOCKS + j, f, index[i]]
        if j >= 0:
            for i in range(n):
                dst_e[h + s, i] = energy[j, index[i]]
        else:
            for i in range(n):
                dst_e[h + s, i] = hist_e[HISTORY_BLOCKS + j, index[i]]


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy", boundscheck=False)
def _gated_decisions(  # pragma: no cover - compiled; covered by the NUMBA_DISABLE_JIT run
    re: Float32Array, im: Float32Array, energy: Float32Array,
    hist_re: Float32Array, hist_im: Float32Array, hist_e: Float32Array,
    gate: npt.NDArray[np.uint8], params: Float32Array,
    work_re: Float32Array, work_im: Float32Array, work_e: Float32Array, codes: Float32Array,
    index: npt.NDArray[np.uint32], n_ch: int,
) -> None:
    """The codes of every sub-block, as :func:`_block_decisions` writes them, for a large
    batch: with a pre-pass of the gate alone while few channels pass it.

    The pre-pass (a tenth of the work of the full pass) reads the inputs where they are
    (their rows padded, see row_stride) and writes ``index[0]``. The channels that pass it
    (``index[1]``) are gathered into the six sub-blocks of the work arrays and decided
    there, into row ``n_blocks`` of ``codes``. Gathering and deciding a channel costs
    about twice the full pass's share of it, so while at least half of the channels
    passed the gate in the previous sub-block (keys on most lines) a sub-block takes the
    full pass over the inputs instead.
    """
    n_blocks = re.shape[0]
    mask = index[0]
    picks = index[1]
    # The pre-pass's limits, lowered by a relative 2**-12 (far more than the rounding of
    # a few float32 operations), so that it never drops a channel that the exact gate in
    # _block_decisions passes, however LLVM contracts the two copies.
    slack = np.float32(1.0 - 2.0**-12)
    lim1 = params[_P_GATE] * np.float32(20.0) * slack
    lim2 = params[_P_GATE] * np.float32(40.0) * slack
    g_floor = np.float32(1e-10) * slack
    n_prev = 0
    for c in range(n_ch):
        n_prev += int(gate[c])
    for b in range(n_blocks):
        n_pick = n_ch
        if n_prev * 2 < n_ch:
            if b >= 1:
                _gate_block(re[b], im[b], energy[b], re[b - 1], im[b - 1], energy[b - 1], n_ch,
                            params, lim1, lim2, g_floor, mask)
            else:
                _gate_block(re[0], im[0], energy[0], hist_re[HISTORY_BLOCKS - 1],
                            hist_im[HISTORY_BLOCKS - 1], hist_e[HISTORY_BLOCKS - 1], n_ch,
                            params, lim1, lim2, g_floor, mask)
            n_pick = 0
            for c in range(n_ch):
                picks[n_pick] = c
                n_pick += int(mask[c])
        packed = codes[b]
        if n_pick * 2 >= n_ch:
            _block_decisions(re, im, energy, hist_re, hist_im, hist_e, b, b + 1, n_ch,
                             params, codes, b)
        else:
            for c in range(n_ch):
                packed[c] = np.float32(-1.0)
            _gather(re, im, energy, hist_re, hist_im, hist_e, b, picks, n_pick,
                    work_re, work_im, work_e, 0)
            _block_decisions(work_re, work_im, work_e, hist_re, hist_im, hist_e, 5, 6, n_pick,
                             params, codes, n_blocks)
            picked = codes[n_blocks]
            for i in range(n_pick):
                packed[picks[i]] = picked[i]
        n_prev = 0
        for c in range(n_ch):
            n_prev += int(packed[c] >= np.float32(0.0))


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy", boundscheck=False)
def _features_kernel(  # pragma: no cover - compiled; covered by the NUMBA_DISABLE_JIT run
    re: Float32Array, im: Float32Array, energy: Float32Array,
    hist_re: Float32Array, hist_im: Float32Array, hist_e: Float32Array,
    gate: npt.NDArray[np.uint8], params: Float32Array,
    work_re: Float32Array, work_im: Float32Array, work_e: Float32Array, codes: Float32Array,
    index: npt.NDArray[np.uint32], out: Int8Array,
) -> None:
    n_blocks = re.shape[0]
    n_ch = out.shape[2]
    mxcsr = _mxcsr_get()
    _mxcsr_set(mxcsr | _MXCSR_FTZ_DAZ)
    if work_re.shape[0] == 0:
        # Small batches: every test for every channel, one pass per sub-block.
        _block_decisions(re, im, energy, hist_re, hist_im, hist_e, 0, n_blocks, n_ch,
                         params, codes, 0)
    else:
        _gated_decisions(re, im, energy, hist_re, hist_im, hist_e, gate, params,
                         work_re, work_im, work_e, codes, index, n_ch)
    # The codes unpacked, one output row per loop (a loop that stores to several arrays
    # needs more run-time alias checks than LLVM accepts and stays scalar).
    for b in range(n_blocks):
        packed = codes[b]
        o0 = out[b, 0]
        o1 = out[b, 1]
        o2 = out[b, 2]
        for c in range(n_ch):
            o0[c] = np.int8((max(np.int32(packed[c]), np.int32(0)) & 31) - 1)
        for c in range(n_ch):
            o1[c] = np.int8(((max(np.int32(packed[c]), np.int32(0)) >> 5) & 31) - 1)
        for c in range(n_ch):
            o2[c] = np.int8((max(np.int32(packed[c]), np.int32(0)) >> 10) - 1)
    if n_blocks > 0:
        last = codes[n_blocks - 1]
        for c in range(n_ch):
            gate[c] = np.uint8(last[c] >= np.float32(0.0))
    # Keep the last five blocks as next call's history (oldest first; with fewer than
    # five new blocks the history shifts, rows read before they are overwritten).
    for h in range(HISTORY_BLOCKS):
        j = n_blocks - HISTORY_BLOCKS + h
        if j >= 0:
            _copy_row(energy[j], hist_e[h])
            for f in range(N_FREQS):
                _copy_row(re[j, f], hist_re[h, f])
                _copy_row(im[j, f], hist_im[h, f])
        else:
            _copy_row(hist_e[HISTORY_BLOCKS + j], hist_e[h])
            for f in range(N_FREQS):
                _copy_row(hist_re[HISTORY_BLOCKS + j, f], hist_re[h, f])
                _copy_row(hist_im[HISTORY_BLOCKS + j, f], hist_im[h, f])
    _mxcsr_set(mxcsr)


GATED_MIN_CHANNELS = 1024
"""Banks for at least this many channels are gated by default (see :class:`FeatureBank`).

Measured with the spectra fresh from the Goertzel bank, as the media path runs it: at
1024 and 2048 channels the gated pass saves about a tenth of the step on typical traffic;
at 512 and fewer it costs a few per cent more than it saves."""


class FeatureBank:
    """Runs the decision kernel for a fixed batch: preallocated outputs and scratch.

    ``process(spectra)`` returns an int8 array ``(n_blocks, 3, n_channels)`` of key
    indices (-1 = none) for :data:`ONSET`, :data:`TONE`, :data:`DIGIT`. The returned
    array is reused by the next call.

    A gated bank (by default one of :data:`GATED_MIN_CHANNELS` channels or more) runs a
    pre-pass of the gate alone and the full tests only for the channels it passes (see
    :func:`_gated_decisions`); the decisions and the state are the same as ungated, bit
    for bit. It pays off for large batches in which many channels carry no keypad-like
    sound, as on a busy proxy; for smaller ones the extra passes cost more than they save.
    """

    def __init__(
        self, n_channels: int, n_blocks: int, thresholds: Thresholds | None = None, *,
        gated: bool | None = None,
    ) -> None:
        self.state = FeatureState(n_channels)
        # The kernel reads the thresholds and the bins' constants from one vector.
        self._params = np.concatenate([(thresholds or Thresholds()).pack(), _CONSTANTS])
        self.params = self._params[:_P_ROT_RE]
        self.n_blocks = n_blocks
        self._out = np.full((n_blocks, N_DECISIONS, n_channels), -1, np.int8)
        # Scratch: the packed codes of each block (and of the gathered channels); for
        # large batches the work arrays, rows padded (row_stride, and past a multiple of
        # 16 floats for narrow ones), and the pre-pass's result and the channels it passed (see
        # _gated_decisions).
        stride = row_stride(n_channels) if n_channels >= 64 else -(-n_channels // 16) * 16 + 16
        if gated is None:
            gated = n_channels >= GATED_MIN_CHANNELS
        n_work = HISTORY_BLOCKS + 1 if gated else 0
        self._work_re = np.zeros((n_work, N_FREQS, stride), np.float32)
        self._work_im = np.zeros((n_work, N_FREQS, stride), np.float32)
        self._work_e = np.zeros((n_work, stride), np.float32)
        self._codes = np.zeros((n_blocks + 1, stride), np.float32)
        self._index = np.zeros((2, n_channels), np.uint32)
        self.gated = gated

    @property
    def gate_passed(self) -> npt.NDArray[np.bool_]:
        """The pre-test's verdict in the last :meth:`process`, ``(n_blocks, n_channels)``
        (True: the channel's sub-block went on to the full tests; the same gated or not)."""
        return self._codes[: self.n_blocks, : self.state.n_channels] >= 0

    def process(self, spectra: BlockSpectra) -> Int8Array:
        if spectra.n_blocks != self.n_blocks or spectra.n_channels != self.state.n_channels:
            raise ValueError(
                f"bank is for {self.n_blocks} blocks x {self.state.n_channels} channels, "
                f"got {spectra.n_blocks} x {spectra.n_channels}"
            )
        re, im, energy = spectra.padded
        hist_re, hist_im, hist_e = self.state.padded
        _features_kernel(
            re, im, energy, hist_re, hist_im, hist_e, self.state.gate, self._params,
            self._work_re, self._work_im, self._work_e, self._codes, self._index, self._out,
        )
        return self._out


# --------------------------------------------------------------------------- twin


def _windows_np(x: npt.NDArray[np.complex128], m: int) -> npt.NDArray[np.complex128]:
    """W_m for every block of ``x`` (rows = blocks incl. leading history)."""
    rot = _ROT[None, :, None]
    w = np.zeros_like(x)
    for i in range(m):
        shifted = np.zeros_like(x)
        # block k-m+1+i contributes with rot**i
        lag = m - 1 - i
        shifted[lag:] = x[: x.shape[0] - lag]
        w += shifted * rot**i
    return w


def _decide_np(
    w: npt.NDArray[np.complex128], e_win: npt.NDArray[np.float64], n: int,
    th: Thresholds, strict: bool, min_purity: float, need_freq: bool,
    min_rel_peak_db: float | None = None, measure_freq: bool = True,
) -> npt.NDArray[np.int8]:
    p = np.abs(w) ** 2
    lo = np.argmax(p[:, :4, :], axis=1)
    hi = np.argmax(p[:, 4:, :], axis=1) + 4
    prev = np.zeros_like(w)
    prev[1:] = w[:-1]
    ok = e_win > 1e-12
    if min_rel_peak_db is not None:
        ratio = 10.0 ** (min_rel_peak_db / 10.0)
        for grp in (p[:, :4, :], p[:, 4:, :]):
            top2 = np.sort(grp, axis=1)
            ok &= top2[:, -1, :] >= ratio * top2[:, -2, :]
    powers = []
    dfs = []
    for idx in (lo, hi):
        wk = np.take_along_axis(w, idx[:, None, :], axis=1)[:, 0, :]
        wp = np.take_along_axis(prev, idx[:, None, :], axis=1)[:, 0, :]
        p_now = np.abs(wk) ** 2
        p_prev = np.abs(wp) ** 2
        known = (p_prev >= 0.1 * p_now) & (n > 40) & measure_freq
        z = wk * np.conj(wp) * _ROT[idx]
        df = np.angle(z) * HZ_PER_RAD
        dfs.append(np.where(known, df, 0.0))
        f0 = FREQS_HZ[idx]
        if strict:
            tol = th.digit_freq_tol_rel * f0 + th.digit_freq_tol_hz
        else:
            tol = th.mask_freq_tol_rel * f0 + th.mask_freq_tol_hz
        ok &= ~known | (np.abs(df) <= tol)
        if need_freq:
            ok &= known
        a = np.pi * df / SAMPLE_RATE_HZ
        with np.errstate(invalid="ignore", divide="ignore"):
            d = np.where(np.abs(a) < 1e-9, 1.0, np.sin(a * n) / (n * np.sin(a)))
        corr = np.where(known, np.maximum(d * d, 0.25), 1.0)
        powers.append(2.0 * p_now / (n * n) / corr)
    plo, phi = powers
    if strict:
        f_lo = FREQS_HZ[lo] + dfs[0]
        f_hi = FREQS_HZ[hi] + dfs[1]
        ok &= np.abs(f_hi - 2.0 * f_lo) >= _OCTAVE_TOL_HZ
        level = dbm0_to_power(th.digit_min_level_dbm0)
        rev = 10 ** (th.digit_max_reverse_twist_db / 10)
        norm = 10 ** (-th.digit_max_normal_twist_db / 10)
    else:
        level = dbm0_to_power(th.mask_min_level_dbm0)
        rev = 10 ** (th.mask_max_reverse_twist_db / 10)
        norm = 10 ** (-th.mask_max_normal_twist_db / 10)
    ok &= (plo >= level) & (phi >= level)
    with np.errstate(invalid="ignore", divide="ignore"):
        twist = phi / plo
    ok &= (twist <= rev) & (twist >= norm)
    ok &= (plo + phi) >= min_purity * e_win / n
    key = 4 * lo + (hi - 4)
    return np.where(ok, key, -1).astype(np.int8)


def block_features_numpy(
    spectra: BlockSpectra, state: FeatureState, thresholds: Thresholds | None = None
) -> Int8Array:
    """Plain-NumPy twin of :meth:`FeatureBank.process` (updates ``state`` the same way)."""
    th = thresholds or Thresholds()
    x_new = spectra.re.astype(np.float64) + 1j * spectra.im.astype(np.float64)
    x_hist = state.hist_re.astype(np.float64) + 1j * state.hist_im.astype(np.float64)
    x = np.concatenate([x_hist, x_new], axis=0)
    e = np.concatenate([state.hist_e, spectra.energy], axis=0).astype(np.float64)

    def e_sum(m: int) -> npt.NDArray[np.float64]:
        out = np.zeros_like(e)
        for lag in range(m):
            out[lag:] += e[: e.shape[0] - lag]
        return out

    w1, w2, w3, w6 = (_windows_np(x, m) for m in (1, 2, 3, 6))
    e1, e2, e3, e6 = (e_sum(m) for m in (1, 2, 3, 6))
    # Gate, as in the kernel.
    p1 = np.abs(w1) ** 2
    p2 = np.abs(w2) ** 2
    g1 = 2 * (p1[:, :4].max(1) + p1[:, 4:].max(1)) >= th.gate_purity * 40 * e1
    g2 = 2 * (p2[:, :4].max(1) + p2[:, 4:].max(1)) >= th.gate_purity * 80 * e2
    gate = (g1 | g2) & (e1 > 1e-10)

    onset1 = _decide_np(w1, e1, 40, th, False, th.onset_min_purity, False)
    onset2 = _decide_np(w2, e2, 80, th, False, th.onset_min_purity, False)
    onset3 = _decide_np(
        w3, e3, 120, th, False, th.tone_rel_peak_min_purity, False, th.tone_min_rel_peak_db
    )
    onset = np.where(onset1 >= 0, onset1, np.where(onset2 >= 0, onset2, onset3))
    tone3 = _decide_np(w3, e3, 120, th, False, th.tone_min_purity, False)
    tone6 = _decide_np(
        w6, e6, 240, th, False, th.tone_long_min_purity, False, th.tone_long_rel_peak_db,
        measure_freq=False,
    )
    tone2 = _decide_np(w2, e2, 80, th, False, th.tone_min_purity, True)
    tone = np.where(tone3 >= 0, tone3, np.where(tone6 >= 0, tone6, tone2))
    digit = _decide_np(w3, e3, 120, th, True, th.digit_min_purity, True)
    out = np.stack([onset, tone, digit], axis=1)
    out = np.where(gate[:, None, :], out, -1).astype(np.int8)[HISTORY_BLOCKS:]

    state.hist_re[...] = x[-HISTORY_BLOCKS:].real
    state.hist_im[...] = x[-HISTORY_BLOCKS:].imag
    state.hist_e[...] = e[-HISTORY_BLOCKS:]
    return out
