"""The tone tracker's state machine, compiled, for many channels in one call.

:class:`dtmfguard.pipeline.detect.ToneTracker` turns one channel's per-sub-block
decisions (ONSET, TONE, DIGIT key indices, -1 for none) and sub-block energies into
tone and digit events. It is plain Python and stays the reference (the twin): these
kernels run the same state machine, step for step and with the same float64
arithmetic, for every channel of a batch in one call, with the state of each channel
in one row of two arrays (:class:`TrackerState`). Tests feed both the same decisions
and compare the events.

Events come out as int64 rows ``(who, kind, a, b, c, d)``: ``who`` is the channel's
index in the call's batch, ``kind`` one of the ``EV_*`` codes and ``a..d`` its fields
(sample counts, or the key index for digits), in the order the reference appends them;
a ``EV_REFINED`` row also carries in ``d`` the first sample of the sub-blocks fed in that
call (where a masker's input stands when it sees the events of that frame).
A channel's rows are contiguous. Each sub-block adds at most :data:`MAX_EVENTS_PER_BLOCK`
rows, so a buffer of that many per sub-block and channel, plus :data:`MAX_FLUSH_EVENTS`,
never overflows.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numba import njit

from dtmfguard.kernels.goertzel import BLOCK_SAMPLES

L = BLOCK_SAMPLES
GAP_BLOCKS = 3
"""Sub-blocks without any tone decision that end a tone (bridges 10 ms breaks)."""
SUSTAIN_BLOCKS = 4
"""An onset is cancelled unless it gathers SUSTAIN_HITS points within this many sub-blocks."""
SUSTAIN_HITS = 2
"""Points that make an onset a tone: one per TONE decision, STRICT_WEIGHT more per DIGIT,
all for the same key pair."""
STRICT_WEIGHT = 2
QUICK_CANCEL_BLOCKS = 2
DIGIT_MIN_WINDOWS = 3
"""Strict 15 ms windows needed before a digit is confirmed."""
PRE_BLOCKS = 4
"""Energies kept from before a run (for the start estimate)."""
CLEAR_COVERAGE = 0.75
HEAD_BLOCKS = 8
TAIL_BLOCKS = 8
N_KEYS = 16

# Event kinds.
EV_STARTED, EV_ARMED, EV_SUSTAINED, EV_REFINED, EV_CANCELLED, EV_ENDED, EV_DIGIT, EV_DIGIT_ENDED = range(8)
EVENT_FIELDS = 6
MAX_EVENTS_PER_BLOCK = 8
MAX_FLUSH_EVENTS = 2

# Integer state, one row per channel.
(
    _BLOCK, _PRE_LEN, _ACTIVE, _FIRST, _N_HEAD, _N_TAIL, _N_BLOCKS, _RUN_PRE_LEN, _START,
    _SUSTAINED, _LAST_POS, _GAP, _DIGIT, _CONFIRMED, _ALT_KEY, _ALT_COUNT, _REFINES,
    _TONE_HITS, _ARMED, _TONE_KEY, _TONE_GAP, _N_STRICT,
) = range(22)
_STRICT = 22  # N_KEYS counts of strict windows per key
_RANK = _STRICT + N_KEYS  # N_KEYS: order in which keys were first seen strict (-1: not yet)
N_INTS = _RANK + N_KEYS
# Float state: energies before the run, the run's copy of them, its head and its tail.
_PRE = 0
_RUN_PRE = _PRE + PRE_BLOCKS
_HEAD = _RUN_PRE + PRE_BLOCKS
_TAIL = _HEAD + HEAD_BLOCKS
N_FLOATS = _TAIL + TAIL_BLOCKS
SCRATCH = PRE_BLOCKS + HEAD_BLOCKS + TAIL_BLOCKS

Int64Array = npt.NDArray[np.int64]
Float64Array = npt.NDArray[np.float64]


class TrackerState:
    """Tracker state of ``capacity`` channels: ``ints`` int64 and ``floats`` float64, a row each."""

    __slots__ = ("ints", "floats")

    def __init__(self, capacity: int) -> None:
        self.ints: Int64Array = np.zeros((capacity, N_INTS), np.int64)
        self.floats: Float64Array = np.zeros((capacity, N_FLOATS), np.float64)

    @property
    def capacity(self) -> int:
        return int(self.ints.shape[0])

    def grow(self, capacity: int) -> None:
        """Room for ``capacity`` channels; existing rows are kept."""
        ints = np.zeros((capacity, N_INTS), np.int64)
        floats = np.zeros((capacity, N_FLOATS), np.float64)
        n = min(capacity, self.capacity)
        ints[:n] = self.ints[:n]
        floats[:n] = self.floats[:n]
        self.ints, self.floats = ints, floats

    def reset(self, row: int) -> None:
        """A fresh tracker in ``row``: stream position 0, no run, no energies."""
        self.ints[row] = 0
        self.floats[row] = 0.0


# --------------------------------------------------------------------------- kernels
# Each helper mirrors the method of ToneTracker / _Run of the same name.


@njit(cache=True, nogil=True, boundscheck=False)
def _emit(ev, n, who, kind, a, b, c, d):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    ev[n, 0] = who
    ev[n, 1] = kind
    ev[n, 2] = a
    ev[n, 3] = b
    ev[n, 4] = c
    ev[n, 5] = d
    return n + 1


@njit(cache=True, nogil=True, boundscheck=False)
def _reference_energy(iv, fv):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    n_head = iv[_N_HEAD]
    n_tail = iv[_N_TAIL]
    if n_head + n_tail == 0:
        return 0.0
    top = -math.inf
    for i in range(n_head):
        top = max(top, fv[_HEAD + i])
    for i in range(n_tail):
        top = max(top, fv[_TAIL + i])
    floor = 0.6 * top
    total = 0.0
    count = 0
    for i in range(n_head):
        e = fv[_HEAD + i]
        if e >= floor:
            total += e
            count += 1
    for i in range(n_tail):
        e = fv[_TAIL + i]
        if e >= floor:
            total += e
            count += 1
    return total / count


@njit(cache=True, nogil=True, boundscheck=False)
def _coverage(e, ref):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    return min(1.0, e / ref) if ref > 0.0 else 0.0


@njit(cache=True, nogil=True, boundscheck=False)
def _edge_share(cov, n, j, step):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    i = j + step
    if not 0 <= i < n:
        return 0.0
    share = cov[i]
    k = i + step
    if share >= 0.5 and 0 <= k < n:
        share += cov[k]
    return share


@njit(cache=True, nogil=True, boundscheck=False)
def _estimate_start(iv, fv, cov):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    ref = _reference_energy(iv, fv)
    n_pre = iv[_RUN_PRE_LEN]
    n = n_pre + min(iv[_N_HEAD], 6)
    for i in range(n):
        e = fv[_RUN_PRE + i] if i < n_pre else fv[_HEAD + i - n_pre]
        cov[i] = _coverage(e, ref)
    base_block = iv[_FIRST] - n_pre
    for j in range(n):
        c = cov[j]
        if c >= CLEAR_COVERAGE:
            return int((base_block + j + 1) * L - L * (c + _edge_share(cov, n, j, -1)))
    return iv[_FIRST] * L


@njit(cache=True, nogil=True, boundscheck=False)
def _estimate_end(iv, fv, cov):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    ref = _reference_energy(iv, fv)
    n = iv[_N_TAIL]
    for i in range(n):
        cov[i] = _coverage(fv[_TAIL + i], ref)
    base_block = iv[_FIRST] + iv[_N_BLOCKS] - n
    for j in range(n - 1, -1, -1):
        c = cov[j]
        if c >= CLEAR_COVERAGE:
            share = c + _edge_share(cov, n, j, 1)
            return math.ceil((base_block + j) * L + L * share)
    return (iv[_LAST_POS] + 1) * L


@njit(cache=True, nogil=True, boundscheck=False)
def _tone_samples(iv, fv):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    ref = _reference_energy(iv, fv)
    total = 0.0
    n_pre = iv[_RUN_PRE_LEN]
    if n_pre > 0:
        total += _coverage(fv[_RUN_PRE + n_pre - 1], ref)
    n_head = iv[_N_HEAD]
    for i in range(n_head):
        total += _coverage(fv[_HEAD + i], ref)
    return (total + (iv[_N_BLOCKS] - n_head)) * L


@njit(cache=True, nogil=True, boundscheck=False)
def _push_pre(iv, fv, e):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    n = iv[_PRE_LEN]
    if n < PRE_BLOCKS:
        fv[_PRE + n] = e
        iv[_PRE_LEN] = n + 1
    else:
        for i in range(PRE_BLOCKS - 1):
            fv[_PRE + i] = fv[_PRE + i + 1]
        fv[_PRE + PRE_BLOCKS - 1] = e


@njit(cache=True, nogil=True, boundscheck=False)
def _pre_from_tail(iv, fv):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    # pre = run.tail[-PRE_BLOCKS:]
    n = iv[_N_TAIL]
    k = min(n, PRE_BLOCKS)
    for i in range(k):
        fv[_PRE + i] = fv[_TAIL + n - k + i]
    iv[_PRE_LEN] = k


@njit(cache=True, nogil=True, boundscheck=False)
def _start_run(iv, fv, first, who, ev, ne):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    n_pre = iv[_PRE_LEN]
    for i in range(n_pre):
        fv[_RUN_PRE + i] = fv[_PRE + i]
    iv[_RUN_PRE_LEN] = n_pre
    iv[_PRE_LEN] = 0
    iv[_ACTIVE] = 1
    iv[_FIRST] = first
    iv[_N_HEAD] = 0
    iv[_N_TAIL] = 0
    iv[_N_BLOCKS] = 0
    iv[_START] = first * L
    iv[_SUSTAINED] = 0
    iv[_LAST_POS] = first
    iv[_GAP] = 0
    iv[_DIGIT] = -1
    iv[_CONFIRMED] = -1
    iv[_ALT_KEY] = -1
    iv[_ALT_COUNT] = 0
    iv[_REFINES] = 0
    iv[_TONE_HITS] = 0
    iv[_ARMED] = 0
    iv[_TONE_KEY] = -1
    iv[_TONE_GAP] = 0
    iv[_N_STRICT] = 0
    for key in range(N_KEYS):
        iv[_STRICT + key] = 0
        iv[_RANK + key] = -1
    return _emit(ev, ne, who, EV_STARTED, iv[_START], (iv[_BLOCK] + 1) * L, 0, 0)


@njit(cache=True, nogil=True, boundscheck=False)
def _end_run(iv, fv, cov, who, ev, ne):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    k = iv[_BLOCK]
    if not iv[_SUSTAINED]:
        # Gone before it was ever a tone pair (speech, a click): not a tone.
        ne = _emit(ev, ne, who, EV_CANCELLED, iv[_START], (k + 1) * L, 0, 0)
        _pre_from_tail(iv, fv)
        iv[_ACTIVE] = 0
        return ne
    start = _estimate_start(iv, fv, cov)
    end = max(_estimate_end(iv, fv, cov), start + 1)
    ne = _emit(ev, ne, who, EV_ENDED, start, end, (k + 1) * L, 0)
    if iv[_DIGIT] >= 0:
        ne = _emit(ev, ne, who, EV_DIGIT_ENDED, iv[_DIGIT], start, iv[_CONFIRMED], end)
    _pre_from_tail(iv, fv)
    iv[_ACTIVE] = 0
    return ne


@njit(cache=True, nogil=True, boundscheck=False)
def _strict(iv, fv, cov, d, min_digit_samples, who, ev, ne):  # type: ignore[no-untyped-def]  # pragma: no cover
    k = iv[_BLOCK]
    if iv[_DIGIT] >= 0 and d != iv[_DIGIT]:
        # A different valid digit without a pause: split when it persists.
        if d == iv[_ALT_KEY]:
            iv[_ALT_COUNT] += 1
        else:
            iv[_ALT_KEY] = d
            iv[_ALT_COUNT] = 1
        if iv[_ALT_COUNT] >= 2:
            # Close the old digit here; the next sub-block starts the new one's run.
            ne = _end_run(iv, fv, cov, who, ev, ne)
            iv[_PRE_LEN] = 0
            ne = _start_run(iv, fv, k + 1, who, ev, ne)
            iv[_SUSTAINED] = 1
        return ne
    iv[_ALT_COUNT] = 0
    if iv[_RANK + d] < 0:
        iv[_RANK + d] = iv[_N_STRICT]
        iv[_N_STRICT] += 1
    iv[_STRICT + d] += 1
    if (iv[_DIGIT] < 0 and iv[_STRICT + d] >= DIGIT_MIN_WINDOWS
            and _tone_samples(iv, fv) >= min_digit_samples):
        # The most frequent key; ties go to the one seen first (as max over a dict).
        best = -1
        for key in range(N_KEYS):
            if iv[_RANK + key] >= 0 and (
                best < 0 or iv[_STRICT + key] > iv[_STRICT + best]
                or (iv[_STRICT + key] == iv[_STRICT + best] and iv[_RANK + key] < iv[_RANK + best])
            ):
                best = key
        iv[_DIGIT] = best
        iv[_CONFIRMED] = (k + 1) * L
        ne = _emit(ev, ne, who, EV_DIGIT, best, _estimate_start(iv, fv, cov), iv[_CONFIRMED], 0)
    return ne


@njit(cache=True, nogil=True, boundscheck=False)
def _step(iv, fv, cov, o, t, d, e, min_digit_samples, who, ev, ne, fed_from):  # type: ignore[no-untyped-def]  # pragma: no cover
    k = iv[_BLOCK]
    if k < iv[_FIRST]:
        return ne
    iv[_N_BLOCKS] += 1
    if iv[_N_HEAD] < HEAD_BLOCKS:
        fv[_HEAD + iv[_N_HEAD]] = e
        iv[_N_HEAD] += 1
    n_tail = iv[_N_TAIL]
    if n_tail < TAIL_BLOCKS:
        fv[_TAIL + n_tail] = e
        iv[_N_TAIL] = n_tail + 1
    else:
        for i in range(TAIL_BLOCKS - 1):
            fv[_TAIL + i] = fv[_TAIL + i + 1]
        fv[_TAIL + TAIL_BLOCKS - 1] = e
    if o >= 0 or t >= 0 or d >= 0:
        iv[_GAP] = 0
        iv[_LAST_POS] = k
    else:
        iv[_GAP] += 1
    paired = t >= 0 or d >= 0
    if paired:
        if iv[_TONE_HITS] == 0 and not iv[_ARMED]:
            iv[_ARMED] = 1
            ne = _emit(ev, ne, who, EV_ARMED, iv[_START], (k + 1) * L, 0, 0)
        key = t if t >= 0 else d
        if key != iv[_TONE_KEY]:
            # Points count for one key pair only: speech wanders between pairs.
            iv[_TONE_KEY] = key
            iv[_TONE_HITS] = 0
        iv[_TONE_HITS] += 1
        if d >= 0:
            iv[_TONE_HITS] += STRICT_WEIGHT
        if iv[_TONE_HITS] >= SUSTAIN_HITS and not iv[_SUSTAINED]:
            iv[_SUSTAINED] = 1
            ne = _emit(ev, ne, who, EV_SUSTAINED, iv[_START], (k + 1) * L, 0, 0)
    # Refine the start while it is still early in the run (better energy reference).
    if iv[_REFINES] < 4:
        iv[_REFINES] += 1
        start = _estimate_start(iv, fv, cov)
        if start != iv[_START]:
            iv[_START] = start
            ne = _emit(ev, ne, who, EV_REFINED, start, 0, 0, fed_from)
    if paired:
        iv[_TONE_GAP] = 0
    else:
        iv[_TONE_GAP] += 1
    if not iv[_SUSTAINED] and (
        k - iv[_FIRST] + 1 >= SUSTAIN_BLOCKS + 1
        or (iv[_ARMED] and iv[_TONE_GAP] >= QUICK_CANCEL_BLOCKS)
    ):
        ne = _emit(ev, ne, who, EV_CANCELLED, iv[_START], (k + 1) * L, 0, 0)
        # pre = (run.pre + run.energies)[-PRE_BLOCKS:]
        n_pre = iv[_RUN_PRE_LEN]
        n_head = iv[_N_HEAD]
        n = n_pre + n_head
        m = min(n, PRE_BLOCKS)
        for i in range(m):
            src = n - m + i
            cov[i] = fv[_RUN_PRE + src] if src < n_pre else fv[_HEAD + src - n_pre]
        for i in range(m):
            fv[_PRE + i] = cov[i]
        iv[_PRE_LEN] = m
        iv[_ACTIVE] = 0
        return ne
    if d >= 0:
        first = iv[_FIRST]
        ne = _strict(iv, fv, cov, d, min_digit_samples, who, ev, ne)
        if iv[_FIRST] != first:
            return ne  # split: the new run starts with the next sub-block
    if iv[_GAP] >= GAP_BLOCKS:
        ne = _end_run(iv, fv, cov, who, ev, ne)
    return ne


@njit(cache=True, nogil=True, boundscheck=False)
def track_frames(ints, floats, columns, select, keys, energy, min_digit_samples, ev, cov):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Feed ``keys`` (int8 ``(blocks, 3, >= n)``: ONSET, TONE, DIGIT) and ``energy``
    (float32 ``(blocks, >= n)``) of batch channel ``j`` to the tracker in row ``columns[j]``,
    for each of the ``n = len(columns)`` channels with ``select[j]`` (uint8) set.
    Writes events to ``ev``; returns how many. ``cov``: float64 scratch of :data:`SCRATCH`."""
    ne = 0
    n_blocks = keys.shape[0]
    for j in range(len(columns)):
        if not select[j]:
            continue
        iv = ints[columns[j]]
        fv = floats[columns[j]]
        fed_from = iv[_BLOCK] * L
        for b in range(n_blocks):
            o = np.int64(keys[b, 0, j])
            t = np.int64(keys[b, 1, j])
            d = np.int64(keys[b, 2, j])
            e = np.float64(energy[b, j])
            if not iv[_ACTIVE]:
                if o < 0 and t < 0 and d < 0:
                    _push_pre(iv, fv, e)
                    iv[_BLOCK] += 1
                    continue
                ne = _start_run(iv, fv, iv[_BLOCK], j, ev, ne)
            ne = _step(iv, fv, cov, o, t, d, e, min_digit_samples, j, ev, ne, fed_from)
            iv[_BLOCK] += 1
    return ne


@njit(cache=True, nogil=True, boundscheck=False)
def track_idle(ints, floats, row, skip, energy):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    """Sub-blocks with no decision while no run is open: ``skip`` whose energies no
    longer matter, then ``energy`` (float32). Returns False (and changes nothing) when a
    run is open."""
    iv = ints[row]
    fv = floats[row]
    if iv[_ACTIVE]:
        return False
    iv[_BLOCK] += skip
    for i in range(len(energy)):
        _push_pre(iv, fv, np.float64(energy[i]))
        iv[_BLOCK] += 1
    return True


@njit(cache=True, nogil=True, boundscheck=False)
def track_flush(ints, floats, row, ev, cov):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    """End of stream: close the open run of ``row``, if any; returns the number of events."""
    iv = ints[row]
    fv = floats[row]
    if not iv[_ACTIVE]:
        return 0
    return _end_run(iv, fv, cov, 0, ev, 0)


def is_active(state: TrackerState, row: int) -> bool:
    return bool(state.ints[row, _ACTIVE])


def position(state: TrackerState, row: int) -> int:
    """The next sub-block the tracker in ``row`` will see."""
    return int(state.ints[row, _BLOCK])
