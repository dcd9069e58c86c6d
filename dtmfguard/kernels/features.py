"""Per-sub-block DTMF decisions from the Goertzel bank's outputs, for a batch of channels.

Input: the complex Goertzel outputs and energies of :mod:`dtmfguard.kernels.goertzel`
for ``n_blocks`` new 5 ms sub-blocks of ``n_channels`` channels, plus the last three
sub-blocks of every channel (the history, updated in place). For every new sub-block
``k`` three analysis windows end at ``k``: 5 ms (M=1), 10 ms (M=2) and 15 ms (M=3),
built as coherent sums of sub-blocks (``W_M(k) = sum_i X[k-M+1+i] exp(-j w L i)``).
The phase advance between ``W_M(k-1)`` and ``W_M(k)`` gives each tone's frequency
offset directly (unambiguous within +/-100 Hz), which is how the ITU-T Q.24 accept
(+/-1.5 % + 2 Hz) and reject (+/-3.5 %) limits are told apart without a huge window.

Three decisions per sub-block and channel, each a key index 0-15 (row-major keypad,
``4 * low + high``) or -1:

* ``ONSET`` (M=1 or M=2, loose): "a keypad tone may have begun" -- fast, fires within
  10 ms of a tone's start. Used to start masking.
* ``TONE`` (M=3, or M=2 with a measured frequency; loose): "a keypad-like tone pair
  is present" -- sustains masking.
* ``DIGIT`` (M=3, strict Q.24 limits): evidence for digit confirmation.

Purity is the share of the window's energy carried by the two detected tones (after
correcting each tone's power for its estimated frequency offset); it is what rejects
speech and music. Levels are compared as mean-square power (dBm0 of a sine).

The jitted kernel never allocates: scratch space comes with :class:`FeatureState`.
:func:`block_features_numpy` is the plain-NumPy twin (float64, vectorised over all
blocks and channels) that tests compare against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numba import njit

from dtmfguard.kernels.goertzel import BLOCK_SAMPLES, FREQS_HZ, N_FREQS, BlockSpectra
from dtmfguard.levels import SAMPLE_RATE_HZ, dbm0_to_power

ONSET, TONE, DIGIT = 0, 1, 2
N_DECISIONS = 3
HISTORY_BLOCKS = 3
_OCTAVE_TOL_HZ = 8.0

_ROT = np.exp(-1j * 2.0 * np.pi * FREQS_HZ * BLOCK_SAMPLES / SAMPLE_RATE_HZ)
ROT_RE = _ROT.real.astype(np.float32)
ROT_IM = _ROT.imag.astype(np.float32)
# Hz of frequency offset per radian of phase advance over one sub-block.
HZ_PER_RAD = SAMPLE_RATE_HZ / (2.0 * math.pi * BLOCK_SAMPLES)

Float32Array = npt.NDArray[np.float32]
Int8Array = npt.NDArray[np.int8]


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
    tone_min_purity: float = 0.75
    mask_freq_tol_rel: float = 0.04
    mask_freq_tol_hz: float = 12.0
    # Second masking test for tones in noise or under speech: each detected tone
    # stands this far above the other bins of its group (as independent decoders
    # such as multimon-ng judge), with a much lower share of the total energy.
    tone_min_rel_peak_db: float = 10.0
    tone_rel_peak_min_purity: float = 0.4
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
) = range(16)


class FeatureState:
    """Per-channel history (last three sub-blocks) and kernel scratch for a batch.

    Channels are independent columns; resetting one column (:meth:`reset_channel`)
    never touches another.
    """

    __slots__ = ("hist_re", "hist_im", "hist_e", "gate", "n_channels")

    def __init__(self, n_channels: int) -> None:
        self.n_channels = n_channels
        self.hist_re: Float32Array = np.zeros((HISTORY_BLOCKS, N_FREQS, n_channels), np.float32)
        self.hist_im: Float32Array = np.zeros((HISTORY_BLOCKS, N_FREQS, n_channels), np.float32)
        self.hist_e: Float32Array = np.zeros((HISTORY_BLOCKS, n_channels), np.float32)
        self.gate: npt.NDArray[np.uint8] = np.zeros(n_channels, np.uint8)

    def reset_channel(self, c: int) -> None:
        self.hist_re[:, :, c] = 0.0
        self.hist_im[:, :, c] = 0.0
        self.hist_e[:, c] = 0.0


@njit(cache=True, nogil=True, inline="always")
def _fast_atan2(y: float, x: float) -> float:  # pragma: no cover - compiled
    ax = abs(x)
    ay = abs(y)
    mx = max(ax, ay)
    if mx == 0.0:
        return 0.0
    a = min(ax, ay) / mx
    s = a * a
    r = ((-0.0464964749 * s + 0.15931422) * s - 0.327622764) * s * a + a
    if ay > ax:
        r = 1.5707963267948966 - r
    if x < 0.0:
        r = 3.141592653589793 - r
    if y < 0.0:
        r = -r
    return r


@njit(cache=True, nogil=True, inline="always")
def _dirichlet_sq(df_hz: float, n: int) -> float:  # pragma: no cover - compiled
    # Power response of an n-sample rectangular window to a tone df_hz off its bin.
    a = math.pi * df_hz / 8000.0
    if abs(a) < 1e-9:
        return 1.0
    d = math.sin(a * n) / (n * math.sin(a))
    d2 = d * d
    return d2 if d2 > 0.25 else 0.25


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy", boundscheck=False)
def _fill_windows(  # pragma: no cover - compiled
    xr: Float32Array, xi: Float32Array, d0: int, c: int,
    rot_re: Float32Array, rot_im: Float32Array, wk: npt.NDArray[np.float64],
) -> None:
    """All windows one channel's tests need, ending at ring row d0 (rows oldest..newest).

    wk rows (re, im pairs): W_1(k), W_2(k), W_3(k), W_2(k-1), W_3(k-1). Built by
    Horner over sub-blocks from newest to oldest, W = X[s] + rot (X[s+1] + rot (...)).
    """
    for f in range(8):
        cr = float(rot_re[f])
        ci = float(rot_im[f])
        x0r = float(xr[d0, f, c])
        x0i = float(xi[d0, f, c])
        x1r = float(xr[d0 - 1, f, c])
        x1i = float(xi[d0 - 1, f, c])
        x2r = float(xr[d0 - 2, f, c])
        x2i = float(xi[d0 - 2, f, c])
        x3r = float(xr[d0 - 3, f, c])
        x3i = float(xi[d0 - 3, f, c])
        w2r = (x0r * cr - x0i * ci) + x1r
        w2i = (x0r * ci + x0i * cr) + x1i
        w3r = (w2r * cr - w2i * ci) + x2r
        w3i = (w2r * ci + w2i * cr) + x2i
        v2r = (x1r * cr - x1i * ci) + x2r
        v2i = (x1r * ci + x1i * cr) + x2i
        v3r = (v2r * cr - v2i * ci) + x3r
        v3i = (v2r * ci + v2i * cr) + x3i
        wk[0, f] = x0r
        wk[1, f] = x0i
        wk[2, f] = w2r
        wk[3, f] = w2i
        wk[4, f] = w3r
        wk[5, f] = w3i
        wk[6, f] = v2r
        wk[7, f] = v2i
        wk[8, f] = v3r
        wk[9, f] = v3i


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy", boundscheck=False)
def _best_pair(  # pragma: no cover - compiled
    m: int, wk: npt.NDArray[np.float64],
) -> tuple[int, int, float, float, float, float]:
    """Best bin of each group by W_m power: (lo, hi, p_lo, p_hi, p_lo2, p_hi2)."""
    lo = 0
    hi = 4
    p_lo = -1.0
    p_hi = -1.0
    p_lo2 = 0.0
    p_hi2 = 0.0
    r = 2 * (m - 1)
    for f in range(8):
        wr = wk[r, f]
        wi = wk[r + 1, f]
        p = wr * wr + wi * wi
        if f < 4:
            if p > p_lo:
                p_lo2 = max(p_lo2, p_lo)
                p_lo = p
                lo = f
            else:
                p_lo2 = max(p_lo2, p)
        elif p > p_hi:
            p_hi2 = max(p_hi2, p_hi)
            p_hi = p
            hi = f
        else:
            p_hi2 = max(p_hi2, p)
    return lo, hi, p_lo, p_hi, p_lo2, p_hi2


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy", boundscheck=False)
def _offset(  # pragma: no cover - compiled
    m: int, f: int, wk: npt.NDArray[np.float64], rot_re: Float32Array, rot_im: Float32Array,
) -> tuple[bool, float, float]:
    """Whether bin f's offset is measurable in W_m (m = 2, 3), the offset (Hz), and
    the power correction for it."""
    r = 2 * (m - 1)
    q = 6 + 2 * (m - 2)
    wr = wk[r, f]
    wi = wk[r + 1, f]
    pr = wk[q, f]
    pi = wk[q + 1, f]
    if pr * pr + pi * pi < 0.1 * (wr * wr + wi * wi):
        return False, 0.0, 1.0
    # z = W(k) conj(W(k-1)) rot: its angle is the offset's phase advance.
    zr = wr * pr + wi * pi
    zi = wi * pr - wr * pi
    zr2 = zr * rot_re[f] - zi * rot_im[f]
    zi2 = zr * rot_im[f] + zi * rot_re[f]
    df = _fast_atan2(zi2, zr2) * 31.830988618379067
    return True, df, _dirichlet_sq(df, 40 * m)


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy", boundscheck=False)
def _judge(  # pragma: no cover - compiled
    m: int, lo: int, hi: int, e_win: float,
    pw_lo: float, kn_lo: bool, df_lo: float, pw_hi: float, kn_hi: bool, df_hi: float,
    freqs: Float32Array, params: Float32Array,
    strict: bool, min_purity: float, need_freq: bool,
) -> int:
    """One window test from the window's summary (offset-corrected tone powers)."""
    n = 40 * m
    if e_win <= 1e-12:
        return -1
    if need_freq and not (kn_lo and kn_hi):
        return -1
    if strict:
        level = params[_P_DIG_LEVEL]
        rev = params[_P_DIG_REV]
        norm = params[_P_DIG_NORM]
        tol_rel = params[_P_DIG_TOL_REL]
        tol_hz = params[_P_DIG_TOL_HZ]
    else:
        level = params[_P_MASK_LEVEL]
        rev = params[_P_MASK_REV]
        norm = params[_P_MASK_NORM]
        tol_rel = params[_P_MASK_TOL_REL]
        tol_hz = params[_P_MASK_TOL_HZ]
    if kn_lo and abs(df_lo) > tol_rel * freqs[lo] + tol_hz:
        return -1
    if kn_hi and abs(df_hi) > tol_rel * freqs[hi] + tol_hz:
        return -1
    if pw_lo < level or pw_hi < level:
        return -1
    # A note and its octave (music, or two harmonics of one voice) is not a digit:
    # DTMF pairs within Q.24 tolerance stay at least 14 Hz away from an exact octave.
    if strict and abs((freqs[hi] + df_hi) - 2.0 * (freqs[lo] + df_lo)) < _OCTAVE_TOL_HZ:
        return -1
    twist = pw_hi / pw_lo
    if twist > rev or twist < norm:
        return -1
    if (pw_lo + pw_hi) < min_purity * (e_win / n):
        return -1
    return 4 * lo + (hi - 4)


# Offset correction divides a tone's power by at most 4 (_dirichlet_sq >= 0.25): a
# window whose uncorrected pair fails min_purity / 4 fails every test (small margin
# for rounding).
_MAX_BOOST = 4.0 * 1.01

_RING_PAD = 16


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy", boundscheck=False)
def _decide_channel(  # pragma: no cover - compiled
    xr: Float32Array, xi: Float32Array, e: Float32Array, d0: int, c: int,
    rot_re: Float32Array, rot_im: Float32Array, freqs: Float32Array, params: Float32Array,
    wk: npt.NDArray[np.float64],
) -> tuple[int, int, int]:
    """ONSET, TONE and DIGIT for one gated channel at ring row d0.

    Every window is built once; each window length's best pair, tone offsets and
    corrected powers are shared by all the tests on that window. m == 1 skips the
    frequency estimate: a 5 ms bin is wide enough without it, and the previous
    sub-block is usually only partly covered at a tone's start, which skews the phase
    advance.
    """
    _fill_windows(xr, xi, d0, c, rot_re, rot_im, wk)
    e1 = float(e[d0, c])
    e2 = e1 + e[d0 - 1, c]
    e3 = e2 + e[d0 - 2, c]
    onset_purity = params[_P_ONSET_PURITY]
    tone_purity = params[_P_TONE_PURITY]
    # 5 ms.
    lo, hi, p_lo, p_hi, p_lo2, p_hi2 = _best_pair(1, wk)
    onset = _judge(1, lo, hi, e1, 2.0 * p_lo / 1600.0, False, 0.0, 2.0 * p_hi / 1600.0,
                   False, 0.0, freqs, params, False, onset_purity, False)
    # 15 ms.
    digit = -1
    tone = -1
    lo, hi, p_lo, p_hi, p_lo2, p_hi2 = _best_pair(3, wk)
    rel = params[_P_REL_PEAK]
    peaked = not (p_lo < rel * p_lo2 or p_hi < rel * p_hi2)
    floor3 = min(tone_purity, params[_P_DIG_PURITY])
    if peaked:
        floor3 = min(floor3, params[_P_REL_PEAK_PURITY])
    if _MAX_BOOST * 2.0 * (p_lo + p_hi) / 14400.0 >= floor3 * (e3 / 120.0):
        kl, dl, cl = _offset(3, lo, wk, rot_re, rot_im)
        kh, dh, ch = _offset(3, hi, wk, rot_re, rot_im)
        pl = 2.0 * p_lo / 14400.0 / cl
        ph = 2.0 * p_hi / 14400.0 / ch
        tone = _judge(3, lo, hi, e3, pl, kl, dl, ph, kh, dh, freqs, params,
                      False, tone_purity, False)
        # Second masking test: each tone stands well above the other bins of its group.
        if tone < 0 and peaked:
            tone = _judge(3, lo, hi, e3, pl, kl, dl, ph, kh, dh, freqs, params,
                          False, params[_P_REL_PEAK_PURITY], False)
        digit = _judge(3, lo, hi, e3, pl, kl, dl, ph, kh, dh, freqs, params,
                       True, params[_P_DIG_PURITY], True)
    # 10 ms, only when needed.
    if onset < 0 or tone < 0:
        lo, hi, p_lo, p_hi, p_lo2, p_hi2 = _best_pair(2, wk)
        floor2 = min(onset_purity if onset < 0 else 1e30, tone_purity if tone < 0 else 1e30)
        if _MAX_BOOST * 2.0 * (p_lo + p_hi) / 6400.0 >= floor2 * (e2 / 80.0):
            kl, dl, cl = _offset(2, lo, wk, rot_re, rot_im)
            kh, dh, ch = _offset(2, hi, wk, rot_re, rot_im)
            pl = 2.0 * p_lo / 6400.0 / cl
            ph = 2.0 * p_hi / 6400.0 / ch
            if onset < 0:
                onset = _judge(2, lo, hi, e2, pl, kl, dl, ph, kh, dh, freqs, params,
                               False, onset_purity, False)
            if tone < 0:
                # Tones far off frequency (spandsp still takes some at 3.5 %) lose too
                # much power in the 15 ms window's narrow bin; the 10 ms one keeps them.
                tone = _judge(2, lo, hi, e2, pl, kl, dl, ph, kh, dh, freqs, params,
                              False, tone_purity, True)
    return onset, tone, digit


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy", boundscheck=False)
def _features_kernel(  # pragma: no cover - compiled; covered by the NUMBA_DISABLE_JIT run
    re: Float32Array, im: Float32Array, energy: Float32Array,
    hist_re: Float32Array, hist_im: Float32Array, hist_e: Float32Array,
    ring_re: Float32Array, ring_im: Float32Array, ring_e: Float32Array,
    gate: npt.NDArray[np.uint8], peaks: Float32Array, wk: npt.NDArray[np.float64],
    rot_re: Float32Array, rot_im: Float32Array, freqs: Float32Array, params: Float32Array,
    out: Int8Array,
) -> None:
    n_blocks = re.shape[0]
    n_ch = re.shape[2]
    gate_purity = params[_P_GATE]
    # The ring holds history (rows 0..2) then this call's blocks (rows 3..3+n_blocks-1).
    # All loops below run over contiguous channel rows.
    for h in range(3):
        _copy_row(hist_e[h], ring_e[h])
        for f in range(8):
            _copy_row(hist_re[h, f], ring_re[h, f])
            _copy_row(hist_im[h, f], ring_im[h, f])
    for b in range(n_blocks):
        _copy_row(energy[b], ring_e[3 + b])
        for f in range(8):
            _copy_row(re[b, f], ring_re[3 + b, f])
            _copy_row(im[b, f], ring_im[3 + b, f])
    lo1 = peaks[0]
    hi1 = peaks[1]
    lo2 = peaks[2]
    hi2 = peaks[3]
    for b in range(n_blocks):
        d0 = 3 + b
        # Vectorised pre-test: the best pair's share of energy in the 5 and 10 ms
        # windows (no offset correction). Most speech and silence stops here.
        for c in range(n_ch):
            lo1[c] = 0.0
            hi1[c] = 0.0
            lo2[c] = 0.0
            hi2[c] = 0.0
        for f in range(8):
            a1 = lo1 if f < 4 else hi1
            a2 = lo2 if f < 4 else hi2
            xr = ring_re[d0, f]
            xi = ring_im[d0, f]
            yr = ring_re[d0 - 1, f]
            yi = ring_im[d0 - 1, f]
            cr = rot_re[f]
            ci = rot_im[f]
            for c in range(n_ch):
                p1 = xr[c] * xr[c] + xi[c] * xi[c]
                wr = yr[c] + cr * xr[c] - ci * xi[c]
                wi = yi[c] + cr * xi[c] + ci * xr[c]
                p2 = wr * wr + wi * wi
                a1[c] = max(a1[c], p1)
                a2[c] = max(a2[c], p2)
        e_now = ring_e[d0]
        e_prev = ring_e[d0 - 1]
        t1 = np.float32(gate_purity * 40.0)
        t2 = np.float32(gate_purity * 80.0)
        o0 = out[b, 0]
        o1 = out[b, 1]
        o2 = out[b, 2]
        for c in range(n_ch):
            e1 = e_now[c]
            e2 = e1 + e_prev[c]
            # purity_M = 2 (lo + hi) / (N * E): compare without dividing.
            g1 = np.float32(2.0) * (lo1[c] + hi1[c]) >= t1 * e1
            g2 = np.float32(2.0) * (lo2[c] + hi2[c]) >= t2 * e2
            gate[c] = 1 if ((g1 | g2) & (e1 > np.float32(1e-10))) else 0
            o0[c] = -1
            o1[c] = -1
            o2[c] = -1
        for c in range(n_ch):
            if gate[c] == 0:
                continue
            onset, tone, digit = _decide_channel(ring_re, ring_im, ring_e, d0, c,
                                                 rot_re, rot_im, freqs, params, wk)
            o0[c] = onset
            o1[c] = tone
            o2[c] = digit
    # Keep the last three blocks as next call's history.
    last = 3 + n_blocks
    for h in range(3):
        _copy_row(ring_e[last - 3 + h], hist_e[h])
        for f in range(8):
            _copy_row(ring_re[last - 3 + h, f], hist_re[h, f])
            _copy_row(ring_im[last - 3 + h, f], hist_im[h, f])


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy", boundscheck=False)
def _copy_row(src: Float32Array, dst: Float32Array) -> None:  # pragma: no cover - compiled
    for c in range(min(src.shape[0], dst.shape[0])):
        dst[c] = src[c]


class FeatureBank:
    """Runs the decision kernel for a fixed batch: preallocated ring and outputs.

    ``process(spectra)`` returns an int8 array ``(n_blocks, 3, n_channels)`` of key
    indices (-1 = none) for :data:`ONSET`, :data:`TONE`, :data:`DIGIT`. The returned
    array is reused by the next call.
    """

    def __init__(self, n_channels: int, n_blocks: int, thresholds: Thresholds | None = None):
        self.state = FeatureState(n_channels)
        self.params = (thresholds or Thresholds()).pack()
        self.n_blocks = n_blocks
        rows = HISTORY_BLOCKS + n_blocks
        # Padded rows: a power-of-two row stride would map one channel's 56 ring values
        # onto the same few cache sets.
        width = n_channels + _RING_PAD
        self._ring_re = np.zeros((rows, N_FREQS, width), np.float32)
        self._ring_im = np.zeros((rows, N_FREQS, width), np.float32)
        self._ring_e = np.zeros((rows, n_channels), np.float32)
        self._out = np.full((n_blocks, N_DECISIONS, n_channels), -1, np.int8)
        self._freqs = FREQS_HZ.astype(np.float32)
        self._peaks = np.zeros((4, n_channels), np.float32)
        self._windows = np.zeros((10, N_FREQS), np.float64)

    def process(self, spectra: BlockSpectra) -> Int8Array:
        if spectra.n_blocks != self.n_blocks or spectra.n_channels != self.state.n_channels:
            raise ValueError(
                f"bank is for {self.n_blocks} blocks x {self.state.n_channels} channels, "
                f"got {spectra.n_blocks} x {spectra.n_channels}"
            )
        s = self.state
        _features_kernel(
            spectra.re, spectra.im, spectra.energy, s.hist_re, s.hist_im, s.hist_e,
            self._ring_re, self._ring_im, self._ring_e, s.gate, self._peaks, self._windows,
            ROT_RE, ROT_IM, self._freqs, self.params, self._out,
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
    min_rel_peak_db: float | None = None,
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
        known = (p_prev >= 0.1 * p_now) & (n > 40)
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

    w1, w2, w3 = (_windows_np(x, m) for m in (1, 2, 3))
    e1, e2, e3 = (e_sum(m) for m in (1, 2, 3))
    # Gate, as in the kernel.
    p1 = np.abs(w1) ** 2
    p2 = np.abs(w2) ** 2
    g1 = 2 * (p1[:, :4].max(1) + p1[:, 4:].max(1)) >= th.gate_purity * 40 * e1
    g2 = 2 * (p2[:, :4].max(1) + p2[:, 4:].max(1)) >= th.gate_purity * 80 * e2
    gate = (g1 | g2) & (e1 > 1e-10)

    onset1 = _decide_np(w1, e1, 40, th, False, th.onset_min_purity, False)
    onset2 = _decide_np(w2, e2, 80, th, False, th.onset_min_purity, False)
    onset = np.where(onset1 >= 0, onset1, onset2)
    tone3 = _decide_np(w3, e3, 120, th, False, th.tone_min_purity, False)
    tone_rp = _decide_np(
        w3, e3, 120, th, False, th.tone_rel_peak_min_purity, False, th.tone_min_rel_peak_db
    )
    tone2 = _decide_np(w2, e2, 80, th, False, th.tone_min_purity, True)
    tone = np.where(tone3 >= 0, tone3, np.where(tone_rp >= 0, tone_rp, tone2))
    digit = _decide_np(w3, e3, 120, th, True, th.digit_min_purity, True)
    out = np.stack([onset, tone, digit], axis=1)
    out = np.where(gate[:, None, :], out, -1).astype(np.int8)[HISTORY_BLOCKS:]

    state.hist_re[...] = x[-HISTORY_BLOCKS:].real
    state.hist_im[...] = x[-HISTORY_BLOCKS:].imag
    state.hist_e[...] = e[-HISTORY_BLOCKS:]
    return out
