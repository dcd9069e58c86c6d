"""The masker of a quiet-lane slot, compiled: mask windows from tracker events, one frame masked at a time.

:class:`dtmfguard.pipeline.mask.Masker` is the reference. For a caller stream in the
quiet lane (:mod:`dtmfguard.control.lane`) whose masker is plain enough (flat-tone or
silence mode, a one-packet delay line of 160 samples, masking on), the lane runs the
masker's work here instead, so a key being typed does not take the call out of the lane:

* :func:`apply_events` applies the tracker's event rows of one frame
  (:mod:`dtmfguard.kernels.tracker`) to the slot's windows, as
  :meth:`Masker.on_events` does (start, arm, refine, cancel, end);
* :func:`mask_frame` computes the gain of the frame leaving the delay line from the
  windows (raised-cosine ramps from :func:`ramp_table`, so the gains are the masker's
  bit for bit), mixes the replacement in, encodes the
  result to G.711 with the codec's own table, counts the masked samples, records where
  masked intervals open and close (:class:`~dtmfguard.control.media.MaskIntervals`
  toggles) and drops the windows that have ended.

A slot's windows are rows of :class:`LaneMasks` ``wins`` in the masker's list order
(``W_*`` fields); its counters are a row of ``ints`` (``M_*``). Under
``NUMBA_DISABLE_JIT=1`` the kernels run as the plain Python they are written in.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from dtmfguard.kernels.tracker import (
    EV_ARMED,
    EV_CANCELLED,
    EV_ENDED,
    EV_REFINED,
    EV_STARTED,
    EV_SUSTAINED,
)

__all__ = ["DELAY", "MAX_EDGES", "MAX_WINDOWS", "ROOM_WINDOWS", "LaneMasks", "apply_events", "mask_frame", "ramp_table"]

DELAY = 160
"""The delay line of a lane slot's masker: one 20 ms packet."""

MAX_WINDOWS = 8
"""Windows a slot can hold. A frame opens at most one per 5 ms sub-block, so the lane
gives a slot a frame only while it holds at most ``ROOM_WINDOWS``."""
ROOM_WINDOWS = MAX_WINDOWS - 4

# Fields of a window (LaneMasks.wins[slot, i]).
W_START, W_END, W_DETECTED, W_ARMED, W_SUSTAINED, W_ENDED = range(6)
WIN_FIELDS = 6
# Fields of a slot (LaneMasks.ints[slot]).
M_POS, M_WINDOWS, M_MASKING, M_OPEN, M_OPENED, M_MASKED, M_PRE, M_POST = range(8)
"""``M_POS``: stream position of the slot's next input sample (the masker's ``_in_pos``);
``M_WINDOWS``: windows held; ``M_MASKING``: 1 when the lane masks this slot's tones (else
it only follows onsets, and a frame with a possible tone falls back); ``M_OPEN``: 1 while
a masked interval is open; ``M_OPENED``, ``M_MASKED``: windows opened and samples masked
since the slot entered; ``M_PRE``, ``M_POST``: the masker's pads before and after a tone."""
SLOT_FIELDS = 8

MAX_EDGES = 2 * MAX_WINDOWS + 2
"""Masked-interval edges one frame can have: two per window's run of masked samples, and one."""


def ramp_table(ramp: int) -> np.ndarray:
    """float32 ``(ramp + 1,)``: the masker's gain ``k`` samples into a rising ramp of
    ``ramp`` samples, by the masker's own NumPy expression. For stream positions that
    are whole float32 numbers (up to 2**24 in magnitude) the masker's ``u`` is exactly
    ``k / ramp``, so its gains are entries of this table."""
    s = np.arange(ramp + 1, dtype=np.float32)
    u = np.minimum(np.maximum(s / ramp, 0.0), 1.0)
    return (0.5 - 0.5 * np.cos(np.pi * u)).astype(np.float32)


class LaneMasks:
    """Masker state of ``capacity`` lane slots."""

    __slots__ = ("wins", "ints")

    def __init__(self, capacity: int) -> None:
        self.wins = np.zeros((capacity, MAX_WINDOWS, WIN_FIELDS), np.int64)
        self.ints = np.zeros((capacity, SLOT_FIELDS), np.int64)

    @property
    def capacity(self) -> int:
        return int(self.ints.shape[0])

    def grown(self, capacity: int) -> LaneMasks:
        out = LaneMasks(capacity)
        n = self.capacity
        out.wins[:n] = self.wins
        out.ints[:n] = self.ints
        return out


@njit(cache=True, nogil=True, boundscheck=False)
def _open(wins, s, n_win):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    """The last window of slot ``s`` whose end is not known, or -1 (``Masker._open``)."""
    for i in range(n_win - 1, -1, -1):
        if wins[s, i, W_ENDED] == 0:
            return i
    return -1


@njit(cache=True, nogil=True, boundscheck=False)
def _remove(wins, s, i, n_win):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    for k in range(i, n_win - 1):
        for f in range(WIN_FIELDS):
            wins[s, k, f] = wins[s, k + 1, f]
    return n_win - 1


@njit(cache=True, nogil=True, boundscheck=False)
def apply_events(  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    ev, first, count, wins, ints, s, pre,
):
    """Apply event rows ``ev[first : first + count]`` (``[who, kind, a, b, c, d]``) to slot
    ``s`` as :meth:`Masker.on_events` does, before the slot's next frame."""
    n_win = ints[s, M_WINDOWS]
    out_pos = ints[s, M_POS] - DELAY
    for r in range(first, first + count):
        kind = ev[r, 1]
        a = ev[r, 2]
        b = ev[r, 3]
        if kind == EV_STARTED:
            if n_win == MAX_WINDOWS:  # not reached: the lane keeps ROOM_WINDOWS free
                continue
            wins[s, n_win, W_START] = a
            wins[s, n_win, W_END] = 0
            wins[s, n_win, W_DETECTED] = b
            wins[s, n_win, W_ARMED] = 0
            wins[s, n_win, W_SUSTAINED] = 0
            wins[s, n_win, W_ENDED] = 0
            n_win += 1
            ints[s, M_OPENED] += 1
            continue
        i = _open(wins, s, n_win)
        if i < 0:
            continue
        if kind in (EV_ARMED, EV_SUSTAINED):
            wins[s, i, W_ARMED] = 1
            if kind == EV_SUSTAINED:
                wins[s, i, W_SUSTAINED] = 1
        elif kind == EV_REFINED:
            start = wins[s, i, W_START]
            # mask.refined_start: the new estimate while nothing of the window has left the line.
            wins[s, i, W_START] = a if out_pos <= min(start, a) - pre else min(start, a)
        elif kind == EV_CANCELLED:
            start = wins[s, i, W_START]
            if out_pos <= start - pre or wins[s, i, W_ARMED] == 0:
                n_win = _remove(wins, s, i, n_win)  # nothing of it masked yet: let it through
            else:
                wins[s, i, W_END] = max(out_pos, start)  # partly masked: finish it smoothly
                wins[s, i, W_ENDED] = 1
        elif kind == EV_ENDED:
            start = wins[s, i, W_START]
            wins[s, i, W_SUSTAINED] = 1
            wins[s, i, W_ARMED] = 1
            wins[s, i, W_START] = min(start, a) if out_pos > start - pre else a
            wins[s, i, W_END] = b
            wins[s, i, W_ENDED] = 1
    ints[s, M_WINDOWS] = n_win


@njit(cache=True, nogil=True, boundscheck=False)
def _gain(wins, s, n_win, start, n, pre, post, table, gain):  # type: ignore[no-untyped-def]  # pragma: no cover
    """``Masker._gain`` into ``gain[:n]``: -1 when no window touches the frame, 1 when one
    covers all of it past its ramps (``gain`` not written), 0 when ``gain`` holds ramps."""
    ramp = table.shape[0] - 1
    end_out = start + n
    have = False
    for w in range(n_win):
        ended = wins[s, w, W_ENDED] != 0
        if wins[s, w, W_ARMED] == 0 and not ended:
            continue  # an onset with no tone-pair decision yet: wait
        lo = wins[s, w, W_START] - pre
        hi = wins[s, w, W_END] + post
        if lo >= end_out or (ended and hi <= start):
            continue
        if lo + ramp <= start and (not ended or hi - ramp >= end_out):
            return 1
        for i in range(n):
            p = start + i
            k = p - lo
            if k < 0:
                k = 0
            elif k > ramp:
                k = ramp
            if ended:
                down = hi - p
                if down < k:
                    k = down if down > 0 else 0
            g = table[k]
            if not have or g > gain[i]:
                gain[i] = g
        have = True
    return 0 if have else -1


@njit(cache=True, nogil=True, boundscheck=False)
def _encode(v, table, t):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    """One float32 sample to G.711 with encode table row ``t`` (as codecs.g711 does)."""
    x = v * np.float32(32768.0)
    if x != x:
        x = np.float32(0.0)
    elif x > np.float32(32767.0):
        x = np.float32(32767.0)
    elif x < np.float32(-32768.0):
        x = np.float32(-32768.0)
    return table[t, np.int32(np.rint(x)) + 32768]


@njit(cache=True, nogil=True, boundscheck=False)
def mask_frame(  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    wins, ints, s, payload, codec, out, at, pre, post, ramp_table, tone, period, decode, encode, gain,
    toggles, n_toggles,
):
    """Push slot ``s``'s next frame in: ``payload`` (its previous packet's 160 G.711 bytes,
    the delay line's content) leaves, masked, as ``out[at : at + 160]``.

    ``codec`` 0 is PCMU, 1 PCMA (rows of ``decode`` (flat, ``codec * 256 + code``) and
    ``encode`` (``(2, 65536)``)); ``tone`` is the replacement table (sample ``p`` of the
    stream is ``tone[p % period + k]``; ``period`` 0: silence); ``gain`` float32 scratch of
    160. A masked interval opening or closing appends ``[s, position]`` to ``toggles`` at
    row ``n_toggles``; returns the new ``n_toggles``.
    """
    n = DELAY
    start = ints[s, M_POS] - DELAY
    ints[s, M_POS] += n
    n_win = ints[s, M_WINDOWS]
    state = -1
    if n_win > 0 and ints[s, M_MASKING] != 0:
        state = _gain(wins, s, n_win, start, n, pre, post, ramp_table, gain)
    if state < 0:
        for i in range(n):
            out[at + i] = payload[i]
        masked = 0
    else:
        t = codec * 256
        offset = start % period if period > 0 else 0
        if state == 1:
            for i in range(n):
                r = tone[offset + i] if period > 0 else np.float32(0.0)
                out[at + i] = _encode(r, encode, codec)
            masked = n
        else:
            one = np.float32(1.0)
            masked = 0
            for i in range(n):
                g = gain[i]
                r = tone[offset + i] if period > 0 else np.float32(0.0)
                x = decode[t + int(payload[i])]
                out[at + i] = _encode(x * (one - g) + r * g, encode, codec)
                if g != 0:
                    masked += 1
        ints[s, M_MASKED] += masked
    # MaskIntervals.feed: masked intervals on the stream of frames leaving the line.
    if masked == 0:
        if ints[s, M_OPEN]:
            ints[s, M_OPEN] = 0
            toggles[n_toggles, 0] = s
            toggles[n_toggles, 1] = start
            n_toggles += 1
    elif masked == n:
        if not ints[s, M_OPEN]:
            ints[s, M_OPEN] = 1
            toggles[n_toggles, 0] = s
            toggles[n_toggles, 1] = start
            n_toggles += 1
    else:
        on = 1 if gain[0] > 0 else 0
        if on != ints[s, M_OPEN]:
            toggles[n_toggles, 0] = s
            toggles[n_toggles, 1] = start
            n_toggles += 1
        for i in range(1, n):
            now = 1 if gain[i] > 0 else 0
            if now != on:
                toggles[n_toggles, 0] = s
                toggles[n_toggles, 1] = start + i
                n_toggles += 1
                on = now
        ints[s, M_OPEN] = on
    # Masker._prune: windows that ended before the line's new output position go.
    end_out = start + n
    w = 0
    while w < n_win:
        if wins[s, w, W_ENDED] != 0 and wins[s, w, W_END] + post <= end_out:
            n_win = _remove(wins, s, w, n_win)
        else:
            w += 1
    ints[s, M_WINDOWS] = n_win
    return n_toggles
