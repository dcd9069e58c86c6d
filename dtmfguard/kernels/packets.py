"""Packet kernels of the quiet lane: RTP header checks, G.711 decoding and header rewriting in batch.

The quiet lane (:mod:`dtmfguard.control.lane`) relays the caller packets of calls with
nothing open in their detector and masker without running Python per packet. Each
lane slot (one caller stream) has a row in a :class:`LaneTable`: what the next packet
must look like (payload type byte, SSRC, RTP timestamp; RFC 3550 section 5.1) and
what the agent-bound stream continues with (payload type, sequence number, timestamp
and SSRC after the rewrite, and the previous packet's payload, which is the delay
line's content).

:func:`lane_accept` checks a pass's datagrams against their slots and
:func:`lane_decode` decodes the accepted ones into the columns of a float32 ``(160, n)``
array for the detection kernels; :func:`lane_emit` then builds, for each accepted frame the detector found
quiet, the datagram to send (the rewritten header and the previous payload) and
moves the slot on. Everything else (any datagram that is not exactly the next 20 ms
G.711 packet of the stream, and any frame with a decision) is left to the ordinary
path. Both kernels write into preallocated arrays and never allocate. Under
``NUMBA_DISABLE_JIT=1`` they run as the plain Python they are written in, which the
``kernels`` test pass covers; the lane's tests compare the result with the ordinary
path packet for packet.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

from dtmfguard.codecs.g711 import alaw_decode, ulaw_decode
from dtmfguard.kernels.lanemask import (
    M_MASKING,
    M_OPEN,
    M_POS,
    M_POST,
    M_PRE,
    M_WINDOWS,
    ROOM_WINDOWS,
    apply_events,
    mask_frame,
)

__all__ = [
    "ACCEPTED",
    "DATAGRAM_BYTES",
    "DECODE_TABLE",
    "FALLBACK",
    "FRAME_SAMPLES",
    "TABLE_ROWS",
    "TAKES_ALL",
    "TAKES_NOTHING",
    "TAKES_QUIET",
    "LaneTable",
    "lane_accept",
    "lane_decode",
    "lane_emit",
    "lane_mask",
    "lane_quiet",
    "lane_takes",
]

FRAME_SAMPLES = 160
"""Samples per lane packet: 20 ms at 8 kHz."""
HEADER_BYTES = 12
DATAGRAM_BYTES = HEADER_BYTES + FRAME_SAMPLES
"""A lane datagram: a bare RTP header (no CSRC, extension or padding) and 160 G.711 bytes."""

ACCEPTED = 1
FALLBACK = 2

_CODES = np.arange(256, dtype=np.uint8)
DECODE_TABLE = np.concatenate([ulaw_decode(_CODES), alaw_decode(_CODES)]).astype(np.float32)
"""Row ``codec * 256 + code``: codec 0 is PCMU, 1 is PCMA."""


TABLE_ROWS = ("pt", "ssrc", "next_ts", "codec", "vseq", "vts", "out_pt", "seq_off", "ts_off", "out_ssrc", "count")
"""The integer rows of a :class:`LaneTable`, in the order of its ``ints`` array."""
_PT, _SSRC, _NEXT_TS, _CODEC, _VSEQ, _VTS, _OUT_PT, _SEQ_OFF, _TS_OFF, _OUT_SSRC, _COUNT = range(len(TABLE_ROWS))


class LaneTable:
    """Per-slot state of the quiet lane, one column per slot (``capacity`` of them).

    Incoming: ``active``, ``pt`` (the expected second header byte: payload type with
    the marker bit clear), ``ssrc``, ``next_ts`` (the next packet's RTP timestamp),
    ``codec`` (0 PCMU, 1 PCMA). Outgoing, before the rewrite: ``vseq`` and ``vts``
    (the agent-bound stream's next sequence number and timestamp); the rewrite adds
    ``seq_off`` and ``ts_off`` and sets ``out_pt`` and ``out_ssrc``. ``count`` counts the
    packets relayed since the slot entered, ``last_s`` holds when the last of them
    arrived, ``prev`` the payloads of the two packets before (the one before the last,
    then the last: the delay line's content; the pair is the history a loss is concealed
    from when the stream leaves the lane). The integer rows are views of one
    ``ints`` array (``TABLE_ROWS`` order), so a kernel takes them as one argument.
    """

    __slots__ = ("ints", "active", "prev", "last_s", "seen", *TABLE_ROWS)

    # Views of ``ints``, one per TABLE_ROWS name (set in __init__).
    pt: npt.NDArray[np.int64]
    ssrc: npt.NDArray[np.int64]
    next_ts: npt.NDArray[np.int64]
    codec: npt.NDArray[np.int64]
    vseq: npt.NDArray[np.int64]
    vts: npt.NDArray[np.int64]
    out_pt: npt.NDArray[np.int64]
    seq_off: npt.NDArray[np.int64]
    ts_off: npt.NDArray[np.int64]
    out_ssrc: npt.NDArray[np.int64]
    count: npt.NDArray[np.int64]

    def __init__(self, capacity: int) -> None:
        self.ints = np.zeros((len(TABLE_ROWS), capacity), np.int64)
        for row, name in enumerate(TABLE_ROWS):
            setattr(self, name, self.ints[row])
        self.active = np.zeros(capacity, np.uint8)
        self.prev = np.zeros((capacity, 2 * FRAME_SAMPLES), np.uint8)
        self.last_s = np.zeros(capacity, np.float64)
        self.seen = np.zeros(capacity, np.uint8)  # scratch of one pass

    @property
    def capacity(self) -> int:
        return len(self.active)

    def grown(self, capacity: int) -> LaneTable:
        """A copy with ``capacity`` slots (at least the current number)."""
        table = LaneTable(capacity)
        n = self.capacity
        table.ints[:, :n] = self.ints
        for name in ("active", "prev", "last_s"):
            getattr(table, name)[:n] = getattr(self, name)
        return table


@njit(cache=True, boundscheck=False)
def _u32(buf: npt.NDArray[np.uint8], at: int) -> int:  # pragma: no cover - compiled
    """The big-endian 32-bit word at ``buf[at]``."""
    return (int(buf[at]) << 24) | (int(buf[at + 1]) << 16) | (int(buf[at + 2]) << 8) | int(buf[at + 3])


@njit(cache=True, boundscheck=False)
def lane_accept(  # pragma: no cover - compiled; covered by the NUMBA_DISABLE_JIT run
    buf: npt.NDArray[np.uint8],
    lengths: npt.NDArray[np.int64],
    offsets: npt.NDArray[np.int64],
    slots: npt.NDArray[np.int64],
    active: npt.NDArray[np.uint8],
    table: npt.NDArray[np.int64],
    seen: npt.NDArray[np.uint8],
    status: npt.NDArray[np.uint8],
    accepted_packet: npt.NDArray[np.int64],
) -> int:
    """Check datagram ``i`` (``lengths[i]`` bytes of ``buf`` from ``offsets[i]``) against
    slot ``slots[i]``.

    Accepted datagrams get status ``ACCEPTED``; ``accepted_packet[j]`` is the ``j``-th
    of them (:func:`lane_decode` decodes it into column ``j``). At most one datagram per
    slot is accepted per pass; once a slot has a datagram that falls back, every later
    one of that slot falls back too, so the ordinary path sees them in order. Returns
    the number accepted.
    """
    pt = table[_PT]
    ssrc = table[_SSRC]
    next_ts = table[_NEXT_TS]
    n = len(slots)
    n_acc = 0
    for i in range(n):
        s = slots[i]
        ok = False
        if active[s] and seen[s] == 0 and lengths[i] == DATAGRAM_BYTES:
            o = offsets[i]
            ok = (
                buf[o] == 0x80 and buf[o + 1] == pt[s]
                and _u32(buf, o + 4) == next_ts[s] and _u32(buf, o + 8) == ssrc[s]
            )
        if ok:
            accepted_packet[n_acc] = i
            n_acc += 1
            seen[s] = 1
            status[i] = ACCEPTED
        else:
            seen[s] = 2
            status[i] = FALLBACK
    for i in range(n):
        seen[slots[i]] = 0
    return n_acc


_TILE = 16  # columns decoded together: one 64-byte line of a row of ``audio`` per sample


@njit(cache=True, boundscheck=False)
def lane_decode(  # pragma: no cover - compiled; covered by the NUMBA_DISABLE_JIT run
    buf: npt.NDArray[np.uint8],
    offsets: npt.NDArray[np.int64],
    slots: npt.NDArray[np.int64],
    accepted_packet: npt.NDArray[np.int64],
    n_acc: int,
    table: npt.NDArray[np.int64],
    decode: npt.NDArray[np.float32],
    audio: npt.NDArray[np.float32],
    scratch: npt.NDArray[np.int64],
) -> None:
    """Decode the payload of each accepted datagram (``accepted_packet[j]``, from
    :func:`lane_accept`) into column ``j`` of ``audio`` (float32 ``(160, >= n_acc)``).

    ``scratch``: int64 ``(2, >= n_acc)``, overwritten. A column is written top to bottom,
    one payload read in order, unless the rows of ``audio`` are a power of two long: its
    160 cache lines a row apart then all fall in a few cache sets, and the columns go in
    tiles of 16 instead, a sample row at a time (about half as fast otherwise).
    """
    codec = table[_CODEC]
    width = audio.shape[1]
    if width & (width - 1):
        for j in range(n_acc):
            i = accepted_packet[j]
            o = offsets[i] + HEADER_BYTES
            base = codec[slots[i]] * 256
            for k in range(FRAME_SAMPLES):
                audio[k, j] = decode[base + buf[o + k]]
        return
    for j in range(n_acc):
        i = accepted_packet[j]
        scratch[0, j] = offsets[i] + HEADER_BYTES
        scratch[1, j] = codec[slots[i]] * 256
    for j0 in range(0, n_acc, _TILE):
        j1 = min(j0 + _TILE, n_acc)
        for k in range(FRAME_SAMPLES):
            for j in range(j0, j1):
                audio[k, j] = decode[scratch[1, j] + buf[scratch[0, j] + k]]


TAKES_NOTHING = 0
TAKES_QUIET = 1
TAKES_ALL = 2
"""What the lane takes of a slot's frame (:func:`lane_quiet`): nothing (the slot has no
room for more mask windows), only a frame with no tone-pair decision (its masker is not
one the lane runs), or any frame (the lane masks its tones)."""


@njit(cache=True, boundscheck=False)
def lane_takes(  # pragma: no cover - compiled; covered by the NUMBA_DISABLE_JIT run
    acc_slots: npt.NDArray[np.int64], mints: npt.NDArray[np.int64], limit: int, takes: npt.NDArray[np.uint8],
) -> None:
    """``takes[j]`` for the slot ``acc_slots[j]`` of each accepted frame: ``TAKES_NOTHING``
    when it holds more than ``ROOM_WINDOWS`` mask windows, ``TAKES_ALL`` when the lane runs
    its masker and its position is below ``limit``, else ``TAKES_QUIET`` (``mints``: a
    :class:`~dtmfguard.kernels.lanemask.LaneMasks` ``ints``)."""
    for j in range(acc_slots.shape[0]):
        s = acc_slots[j]
        if mints[s, M_WINDOWS] > ROOM_WINDOWS:
            takes[j] = TAKES_NOTHING
        elif mints[s, M_MASKING] != 0 and mints[s, M_POS] < limit:
            takes[j] = TAKES_ALL
        else:
            takes[j] = TAKES_QUIET


@njit(cache=True, boundscheck=False)
def lane_quiet(  # pragma: no cover - compiled; covered by the NUMBA_DISABLE_JIT run
    keys: npt.NDArray[np.int8], n_acc: int, quiet: npt.NDArray[np.uint8], takes: npt.NDArray[np.uint8],
) -> None:
    """``quiet[j]`` = 1 when the lane keeps column ``j``'s frame: ``takes[j]`` is
    ``TAKES_ALL``, or ``TAKES_QUIET`` and column ``j`` of the decisions ``keys``
    ``(blocks, 3, >= n_acc)`` holds no tone-pair decision (TONE or DIGIT; an ONSET alone
    never arms the mask)."""
    for j in range(n_acc):
        t = takes[j]
        if t == TAKES_ALL:
            quiet[j] = 1
            continue
        q = 1 if t == TAKES_QUIET else 0
        for b in range(keys.shape[0]):
            for d in range(1, keys.shape[1]):
                if keys[b, d, j] >= 0:
                    q = 0
        quiet[j] = q


@njit(cache=True, boundscheck=False)
def lane_mask(  # pragma: no cover - compiled; covered by the NUMBA_DISABLE_JIT run
    ev: npt.NDArray[np.int64],
    n_ev: int,
    slots: npt.NDArray[np.int64],
    accepted_packet: npt.NDArray[np.int64],
    quiet: npt.NDArray[np.uint8],
    n_acc: int,
    table: npt.NDArray[np.int64],
    prev: npt.NDArray[np.uint8],
    out: npt.NDArray[np.uint8],
    wins: npt.NDArray[np.int64],
    mints: npt.NDArray[np.int64],
    period: int,
    ramp_table: npt.NDArray[np.float32],
    tone: npt.NDArray[np.float32],
    decode: npt.NDArray[np.float32],
    encode: npt.NDArray[np.uint8],
    gain: npt.NDArray[np.float32],
    toggles: npt.NDArray[np.int64],
) -> int:
    """The payload of each kept column ``j`` (``quiet[j]``) into ``out[j, 12:]``: the slot's
    previous payload leaving its masker's delay line, after the tracker's event rows of
    column ``j`` (``ev[:n_ev]``, ``[j, kind, a, b, c, d]``, ascending ``j``) are applied
    to its windows (:mod:`dtmfguard.kernels.lanemask`; ``wins``, ``mints``: a
    :class:`~dtmfguard.kernels.lanemask.LaneMasks`, which holds each slot's pads).
    ``period``: the replacement tone's period in samples (0: silence). Masked-interval
    toggles go to ``toggles`` (``[slot, position]``, room for
    :data:`~dtmfguard.kernels.lanemask.MAX_EDGES` per frame); returns their number.
    """
    codec = table[_CODEC]
    e = 0
    n_toggles = 0
    for j in range(n_acc):
        first = e
        while e < n_ev and ev[e, 0] == j:
            e += 1
        if not quiet[j]:
            continue
        s = slots[accepted_packet[j]]
        if e > first:
            apply_events(ev, first, e - first, wins, mints, s, mints[s, M_PRE])
        if mints[s, M_WINDOWS] > 0:
            n_toggles = mask_frame(
                wins, mints, s, prev[s, FRAME_SAMPLES:], codec[s], out[j], HEADER_BYTES, mints[s, M_PRE],
                mints[s, M_POST],
                ramp_table, tone, period,
                decode, encode, gain, toggles, n_toggles,
            )
        else:
            for k in range(FRAME_SAMPLES):
                out[j, HEADER_BYTES + k] = prev[s, FRAME_SAMPLES + k]
            mints[s, M_POS] += FRAME_SAMPLES
            if mints[s, M_OPEN]:
                # A masked interval still open closes here (MaskIntervals.feed of an unmasked frame).
                mints[s, M_OPEN] = 0
                toggles[n_toggles, 0] = s
                toggles[n_toggles, 1] = mints[s, M_POS] - 2 * FRAME_SAMPLES
                n_toggles += 1
    return n_toggles


@njit(cache=True, boundscheck=False)
def lane_emit(  # pragma: no cover - compiled; covered by the NUMBA_DISABLE_JIT run
    buf: npt.NDArray[np.uint8],
    offsets: npt.NDArray[np.int64],
    slots: npt.NDArray[np.int64],
    accepted_packet: npt.NDArray[np.int64],
    quiet: npt.NDArray[np.uint8],
    n_acc: int,
    table: npt.NDArray[np.int64],
    prev: npt.NDArray[np.uint8],
    last_s: npt.NDArray[np.float64],
    now_s: float,
    energy: npt.NDArray[np.float32],
    last_energy: npt.NDArray[np.float32],
    out: npt.NDArray[np.uint8],
    sends: npt.NDArray[np.int64],
    status: npt.NDArray[np.uint8],
) -> int:
    """For each accepted column ``j`` with ``quiet[j]``: the header of the datagram to send
    into ``out[j]`` (:func:`lane_mask` wrote its payload).

    The header carries the slot's rewritten payload type, sequence number, timestamp
    and SSRC (marker clear); the accepted payload becomes the slot's previous payload
    (the delay line's content). The slot moves on by one packet, its last frame's
    sub-block energies (column ``j`` of ``energy``) go to row ``slot`` of
    ``last_energy``, and ``(j, slot)`` to the next row of ``sends``. An accepted
    column that is not quiet gets status ``FALLBACK``. Returns the number of sends.
    ``table`` holds the :class:`LaneTable` integer rows (:data:`TABLE_ROWS`).
    """
    next_ts = table[_NEXT_TS]
    vseq = table[_VSEQ]
    vts = table[_VTS]
    out_pt = table[_OUT_PT]
    seq_off = table[_SEQ_OFF]
    ts_off = table[_TS_OFF]
    out_ssrc = table[_OUT_SSRC]
    count = table[_COUNT]
    n_sends = 0
    for j in range(n_acc):
        i = accepted_packet[j]
        s = slots[i]
        if not quiet[j]:
            status[i] = FALLBACK
            continue
        seq = (vseq[s] + seq_off[s]) & 0xFFFF
        ts = (vts[s] + ts_off[s]) & 0xFFFFFFFF
        ssrc = out_ssrc[s]
        out[j, 0] = 0x80
        out[j, 1] = out_pt[s]
        out[j, 2] = seq >> 8
        out[j, 3] = seq & 0xFF
        out[j, 4] = (ts >> 24) & 0xFF
        out[j, 5] = (ts >> 16) & 0xFF
        out[j, 6] = (ts >> 8) & 0xFF
        out[j, 7] = ts & 0xFF
        out[j, 8] = (ssrc >> 24) & 0xFF
        out[j, 9] = (ssrc >> 16) & 0xFF
        out[j, 10] = (ssrc >> 8) & 0xFF
        out[j, 11] = ssrc & 0xFF
        o = offsets[i] + HEADER_BYTES
        for k in range(FRAME_SAMPLES):
            prev[s, k] = prev[s, FRAME_SAMPLES + k]
            prev[s, FRAME_SAMPLES + k] = buf[o + k]
        next_ts[s] = (next_ts[s] + FRAME_SAMPLES) & 0xFFFFFFFF
        vts[s] = (vts[s] + FRAME_SAMPLES) & 0xFFFFFFFF
        vseq[s] = (vseq[s] + 1) & 0xFFFF
        count[s] += 1
        last_s[s] = now_s
        for b in range(energy.shape[0]):
            last_energy[s, b] = energy[b, j]
        sends[n_sends, 0] = j
        sends[n_sends, 1] = s
        n_sends += 1
    return n_sends
