"""Masking kernels: the raised-cosine ramp of a mask window, the mix of one frame, and
where masking switches on and off inside a frame.

The masker (:mod:`dtmfguard.pipeline.mask`) replaces a tone by fading the audio out
and the replacement in over ``ramp`` samples at each edge of a mask window:
``gain = 0.5 - 0.5 * cos(pi * u)`` with ``u`` the clipped distance into the window
divided by ``ramp``, and ``out = out * (1 - gain) + replacement * gain``. On a
160-sample frame the NumPy expressions of that (an ``arange``, a dozen ufuncs) cost
far more in per-call overhead than in arithmetic; these kernels do one frame per call.

They give the NumPy expressions' float32 results bit for bit. While every stream
position involved is at most :data:`EXACT_POSITION` in magnitude, the float32 ``u``
of the NumPy expression is exactly ``k / ramp`` for an integer ``k`` in ``[0, ramp]``,
so the gain is a lookup in a table of those ``ramp + 1`` values computed once by the
same NumPy expression (:func:`ramp_table`); the mix is the same float32 arithmetic
sample by sample (no fast-math, so nothing is reassociated or fused). Beyond that
range the caller uses the NumPy twin (:func:`ramp_gain_reference`). Under
``NUMBA_DISABLE_JIT=1`` the kernels run as the plain Python they are written in.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

__all__ = [
    "EXACT_POSITION",
    "gain_edges",
    "gain_edges_reference",
    "mix_frame",
    "mix_reference",
    "ramp_gain",
    "ramp_gain_reference",
    "ramp_table",
]

EXACT_POSITION = 1 << 24
"""Stream positions (samples) up to this magnitude are whole float32 numbers: the
kernels' domain. At 8 kHz that is about 35 minutes of a call."""

_OPEN_END = 1 << 62
"""``hi`` of a window whose end is not known yet: no falling ramp (and ``hi - s`` cannot
overflow an int64 for any position in range)."""


def ramp_gain_reference(
    start: int, n: int, lo: int, hi: int | None, ramp: int,
) -> npt.NDArray[np.float32]:
    """The gain of one window over stream samples ``[start, start + n)`` (the NumPy twin).

    The window rises over ``[lo, lo + ramp]`` and falls over ``[hi - ramp, hi]``
    (``hi=None``: it does not fall). Returns float32 ``(n,)`` in ``[0, 1]``.
    """
    # (np.minimum/np.maximum: np.clip costs several times more on a 160-sample frame.)
    s = np.arange(start, start + n, dtype=np.float32)
    u = np.minimum(np.maximum((s - lo) / ramp, 0.0), 1.0)
    if hi is not None:
        u = np.minimum(u, np.maximum((hi - s) / ramp, 0.0))
    return (0.5 - 0.5 * np.cos(np.pi * u)).astype(np.float32)


def ramp_table(ramp: int) -> npt.NDArray[np.float32]:
    """float32 ``(ramp + 1,)``: entry ``k`` is the gain ``k`` samples into a rising ramp,
    computed by :func:`ramp_gain_reference` itself."""
    if ramp < 1:
        raise ValueError(f"ramp must be at least 1 sample, got {ramp}")
    return ramp_gain_reference(0, ramp + 1, 0, None, ramp)


@njit(cache=True, nogil=True, boundscheck=False)
def _ramp_gain(gain, start, lo, hi, table, combine):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    ramp = table.shape[0] - 1
    for i in range(gain.shape[0]):
        s = start + i
        k = s - lo
        if k < 0:
            k = 0
        elif k > ramp:
            k = ramp
        down = hi - s
        if down < k:
            k = down if down > 0 else 0
        g = table[k]
        if not combine or g > gain[i]:
            gain[i] = g


def ramp_gain(
    gain: npt.NDArray[np.float32], start: int, lo: int, hi: int | None, table: npt.NDArray[np.float32],
    combine: bool,
) -> None:
    """Write one window's gain over ``[start, start + len(gain))`` into float32 ``gain``
    (``combine``: the element-wise maximum with what ``gain`` holds).

    ``table`` is :func:`ramp_table` of the ramp length. The result equals
    :func:`ramp_gain_reference` (or ``np.maximum`` of it with ``gain``) when ``start``,
    ``start + len(gain)``, ``lo`` and ``hi`` are all within :data:`EXACT_POSITION`;
    the caller checks that.
    """
    _ramp_gain(gain, start, lo, _OPEN_END if hi is None else hi, table, combine)


@njit(cache=True, nogil=True, boundscheck=False)
def _mix(out, gain, repl, offset):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    one = np.float32(1.0)
    masked = 0
    for i in range(out.shape[0]):
        g = gain[i]
        out[i] = out[i] * (one - g) + repl[offset + i] * g
        if g != 0:
            masked += 1
    return masked


def mix_frame(
    out: npt.NDArray[np.float32], gain: npt.NDArray[np.float32], repl: npt.NDArray[np.float32], offset: int,
) -> int:
    """``out = out * (1 - gain) + repl[offset : offset + n] * gain`` in place, float32
    ``(n,)`` each (``repl`` at least ``offset + n`` long); returns how many ``gain`` are
    non-zero. Equals :func:`mix_reference` bit for bit."""
    if len(repl) < offset + len(out) or len(gain) != len(out):
        raise ValueError(f"mix of {len(out)} samples with {len(gain)} gains from {len(repl)} at {offset}")
    return int(_mix(out, gain, repl, offset))


def mix_reference(
    out: npt.NDArray[np.float32], gain: npt.NDArray[np.float32], repl: npt.NDArray[np.float32],
) -> tuple[npt.NDArray[np.float32], int]:
    """The NumPy twin of :func:`mix_frame`: the mixed frame (a new array) and the count."""
    return (out * (1.0 - gain) + repl * gain).astype(np.float32), int(np.count_nonzero(gain))


@njit(cache=True, nogil=True, boundscheck=False)
def _gain_edges(gain, edges):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    count = 0
    was = gain[0] > 0
    for i in range(1, gain.shape[0]):
        on = gain[i] > 0
        if on != was:
            edges[count] = i
            count += 1
            was = on
    return count


def gain_edges(gain: npt.NDArray[np.float32], edges: npt.NDArray[np.intp]) -> int:
    """Where masking switches inside a frame: writes each ``i`` in ``[1, n)`` at which
    ``gain[i] > 0`` differs from ``gain[i - 1] > 0`` into ``edges`` (intp, at least
    ``n - 1`` long), in order, and returns how many. ``gain``: float32 ``(n,)``, ``n >= 1``.
    Equals :func:`gain_edges_reference`."""
    if len(edges) < len(gain) - 1 or not len(gain):
        raise ValueError(f"edges of {len(gain)} gains need {len(gain) - 1} slots, got {len(edges)}")
    return int(_gain_edges(gain, edges))


def gain_edges_reference(gain: npt.NDArray[np.float32]) -> npt.NDArray[np.intp]:
    """The NumPy twin of :func:`gain_edges`: the edges as an array."""
    on = gain > 0
    return np.flatnonzero(on[1:] != on[:-1]) + 1
