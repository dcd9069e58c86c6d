"""The quiet lane: caller packets of many calls relayed in one batch, with no Python per packet.

Most of the time a caller says nothing that looks like a keypad tone. For such a call
the delay line and masker only shift the audio by one packet, so the packet that goes
to the agent is the previous packet's payload under a rewritten header. A call whose
detector and masker hold nothing open (its
:class:`~dtmfguard.pipeline.batch.BankChannel` is quiet) and whose caller stream is
plain 20 ms PCMU/PCMA enters the lane (:meth:`QuietLane.enter`): its state moves into
a row of a :class:`~dtmfguard.kernels.packets.LaneTable` (slot = its bank column).

Per pass of the transport, :meth:`QuietLane.process` takes every datagram that arrived
on a lane call's caller RTP port from its latched source and:

1. checks each against its slot and decodes the accepted ones into one float32 batch
   (:func:`~dtmfguard.kernels.packets.lane_accept`,
   :func:`~dtmfguard.kernels.packets.lane_decode`): exactly the next packet of the
   stream (same SSRC and payload type, next timestamp, no marker, CSRC, extension or
   padding), at most one per slot per pass;
2. runs the detection kernels on the batch with each column's history
   (:meth:`~dtmfguard.pipeline.batch.DetectorBank.detect_frames`), keeping the new
   history only for frames with no tone-pair decision (TONE or DIGIT), and feeds those
   frames to their trackers (:meth:`~dtmfguard.pipeline.batch.DetectorBank.track_quiet`);
3. builds the datagram for the agent for each such quiet frame
   (:func:`~dtmfguard.kernels.packets.lane_emit`).

An ONSET alone (speech does this now and then, and so does the first frame of a key)
opens a run in the tracker that is not armed: the masker would let every sample through
unchanged, so the lane relays the frame and keeps, in Python, the window the masker
would hold (its start refined as :meth:`~dtmfguard.pipeline.mask.Masker.on_events`
refines it). Most such runs are cancelled in the lane a frame later.

A datagram that was not accepted, or whose frame holds a tone-pair decision (a possible
tone), falls back: the transport takes its call out of the lane (:meth:`QuietLane.leave`
writes the slot's state back into the call's objects, the open window included) and hands the datagram to
:meth:`~dtmfguard.control.media.CallMedia.on_rtp`, which processes it the ordinary way
(detector, masker), from the first sample of the tone. So the lane never lets a frame
that could arm the mask through, and a call's packets are processed in order.

Sans-I/O: datagrams in, datagrams (with the slot each belongs to) out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dtmfguard.codecs.g711 import _ALAW_ENCODE, _ULAW_ENCODE
from dtmfguard.kernels.lanemask import (
    M_MASKED,
    M_MASKING,
    M_OPEN,
    M_OPENED,
    M_POS,
    M_POST,
    M_PRE,
    M_WINDOWS,
    MAX_EDGES,
    MAX_WINDOWS,
    ROOM_WINDOWS,
    W_ARMED,
    W_DETECTED,
    W_END,
    W_ENDED,
    W_START,
    W_SUSTAINED,
    LaneMasks,
    ramp_table,
)
from dtmfguard.kernels.packets import (
    DATAGRAM_BYTES,
    DECODE_TABLE,
    FALLBACK,
    FRAME_SAMPLES,
    LaneTable,
    lane_accept,
    lane_decode,
    lane_emit,
    lane_mask,
    lane_takes,
)
from dtmfguard.kernels.tracker import EV_DIGIT, EV_STARTED
from dtmfguard.pipeline.batch import DetectorBank, LaneMasking
from dtmfguard.pipeline.detect import ToneEvent
from dtmfguard.pipeline.tracking import MAKE_EVENT

__all__ = ["ROOM_WINDOWS", "LaneEntry", "LaneExit", "LaneMasking", "LaneResult", "QuietLane"]

EXACT_POSITION = 1 << 24
"""The lane masks a stream's tones while its positions (samples) stay below this: there
the masker's float32 ramps are exact steps (:func:`~dtmfguard.kernels.lanemask.ramp_table`).
About 35 minutes into a call the lane only follows onsets and tones go the ordinary way."""
_POSITION_MARGIN = 8 * FRAME_SAMPLES

_ENCODE = np.stack([_ULAW_ENCODE, _ALAW_ENCODE])  # G.711 encode tables by lane codec index

Window = tuple[int, int | None, int, bool, bool]
"""A mask window: start, end (None while open), detected, armed, sustained (as the masker's)."""
OnEvents = Callable[[list[ToneEvent], list[int]], None]
"""Called per pass for a slot that had tracker events or masked-interval edges in the lane."""


@dataclass(frozen=True, slots=True)
class LaneEntry:
    """A call's caller stream as it enters the lane (see :class:`~dtmfguard.kernels.packets.LaneTable`)."""

    column: int
    pt: int
    ssrc: int
    next_ts: int
    codec: int
    vseq: int
    vts: int
    out_pt: int
    seq_off: int
    ts_off: int
    out_ssrc: int
    prev_payload: bytes
    masking: LaneMasking


@dataclass(frozen=True, slots=True)
class LaneExit:
    """What a slot did while in the lane: ``packets`` relayed; the stream's next values.

    ``prev_payload``: the last packet's payload (the delay line's content);
    ``before_payload``: the one before it (when ``packets`` is 2 or more). ``windows``:
    the masker's windows now, in order; ``opened``: windows opened and ``masked``:
    samples masked in the lane.
    """

    packets: int
    next_ts: int
    vseq: int
    vts: int
    prev_payload: bytes
    last_s: float
    before_payload: bytes = b""
    windows: tuple[Window, ...] = ()
    opened: int = 0
    masked: int = 0


class LaneResult:
    """One pass: rows of ``out`` (uint8 ``(rows, 172)``) to send, ``sends`` (int64 ``(k, 2)``:
    ``[row, slot]``), the indices of the datagrams that fall back, in order, and the slots
    whose ``on_events`` was called (``reported``)."""

    __slots__ = ("out", "sends", "fallbacks", "reported")

    def __init__(self, out: np.ndarray, sends: np.ndarray, fallbacks: list[int], reported: list[int]) -> None:
        self.out = out
        self.sends = sends
        self.fallbacks = fallbacks
        self.reported = reported


class QuietLane:
    """The lane of one :class:`~dtmfguard.pipeline.batch.DetectorBank` (one slot per bank column)."""

    def __init__(self, bank: DetectorBank) -> None:
        self.bank = bank
        capacity = max(8, bank.capacity)
        self.table = LaneTable(capacity)
        self.masks = LaneMasks(capacity)
        self._on_leave: dict[int, Callable[[], None]] = {}  # slot -> called when it leaves
        self._on_events: dict[int, OnEvents] = {}  # slot -> gets its events and interval edges
        # Per slot: 1 when its sink wants every tracker event, 0 for key presses (digit
        # events) and interval edges only. Onsets in speech come many times a second per
        # call; handing each to Python costs more than the frame.
        self._all_events = np.zeros(capacity, np.uint8)
        # The masker the lane runs (set by the first stream that brings a runnable one):
        # pads and tone period as kernel input, the ramp table and the tone table.
        self._shape: tuple[int, int, bytes] | None = None
        self._period = 0
        self._ramp = ramp_table(1)
        self._tone = np.zeros(FRAME_SAMPLES, np.float32)
        self._gain = np.zeros(FRAME_SAMPLES, np.float32)
        self.onsets = 0  # onsets (tone runs opened) in lane frames
        self.handovers = 0  # windows still held when their call left the lane
        self.passes = 0
        self.frames = 0
        self.fallbacks = 0
        self._status = np.zeros(0, np.uint8)
        self._grow_scratch(64)

    def __len__(self) -> int:
        return len(self._on_leave)

    def __contains__(self, slot: int) -> bool:
        return slot in self._on_leave

    def enter(
        self, entry: LaneEntry, on_leave: Callable[[], None], on_events: OnEvents | None = None, *,
        all_events: bool = True,
    ) -> int:
        """Put a stream in the lane; returns its slot. ``on_leave`` is called when it leaves;
        ``on_events`` (when given) gets the tracker events of its lane frames and the
        edges of masked intervals, after each pass that had some: every event, or with
        ``all_events`` False only the digit events (:class:`DigitConfirmed`,
        :class:`DigitEnded`). Without ``on_events`` the lane masks nothing of the stream
        (a frame with a possible tone falls back)."""
        slot = entry.column
        if slot in self._on_leave:
            raise ValueError(f"slot {slot} is already in the lane")
        if slot >= self.table.capacity:
            capacity = max(slot + 1, 2 * self.table.capacity)
            self.table = self.table.grown(capacity)
            self.masks = self.masks.grown(capacity)
            self._all_events = np.concatenate([self._all_events, np.zeros(capacity - len(self._all_events), np.uint8)])
        if len(entry.prev_payload) != FRAME_SAMPLES:
            raise ValueError("the previous payload must be one 20 ms G.711 packet")
        t = self.table
        t.pt[slot] = entry.pt
        t.ssrc[slot] = entry.ssrc
        t.next_ts[slot] = entry.next_ts
        t.codec[slot] = entry.codec
        t.vseq[slot] = entry.vseq
        t.vts[slot] = entry.vts
        t.out_pt[slot] = entry.out_pt
        t.seq_off[slot] = entry.seq_off
        t.ts_off[slot] = entry.ts_off
        t.out_ssrc[slot] = entry.out_ssrc
        t.prev[slot, :FRAME_SAMPLES] = 0
        t.prev[slot, FRAME_SAMPLES:] = np.frombuffer(entry.prev_payload, np.uint8)
        t.count[slot] = 0
        t.last_s[slot] = 0.0
        m = entry.masking
        row = self.masks.ints[slot]
        row[:] = 0
        row[M_POS] = m.pos
        row[M_PRE] = m.pre
        row[M_POST] = m.post
        row[M_MASKING] = int(on_events is not None and m.runnable and self._runs(m))
        row[M_OPEN] = int(m.interval_open)
        if len(m.windows) > MAX_WINDOWS:
            raise ValueError(f"{len(m.windows)} mask windows open: more than the lane holds")
        wins = self.masks.wins[slot]
        for i, (start, end, detected, armed, sustained) in enumerate(m.windows):
            wins[i] = (start, 0 if end is None else end, detected, armed, sustained, end is not None)
        row[M_WINDOWS] = len(m.windows)
        t.active[slot] = 1
        self._on_leave[slot] = on_leave
        if on_events is not None:
            self._on_events[slot] = on_events
        self._all_events[slot] = all_events
        return slot

    def _runs(self, m: LaneMasking) -> bool:
        """Whether the lane runs ``m``'s masker: the first runnable one sets the lane's ramp
        and replacement, and later ones must have the same (one config gives every call
        the same)."""
        period = m.period if m.tone is not None else 0
        shape = (m.ramp, period, b"" if m.tone is None else m.tone.tobytes())
        if self._shape is None:
            self._shape = shape
            self._period = period
            self._ramp = ramp_table(m.ramp)
            self._tone = np.zeros(FRAME_SAMPLES, np.float32) if m.tone is None else m.tone.astype(np.float32)
        return self._shape == shape

    def packets(self, slot: int) -> int:
        """Packets relayed for ``slot`` since it entered (0 when it is not in the lane)."""
        return int(self.table.count[slot]) if slot in self._on_leave else 0

    def last_packet_s(self, slot: int) -> float:
        """When the slot's last packet in the lane arrived (0.0 when none did)."""
        return float(self.table.last_s[slot]) if slot in self._on_leave else 0.0

    def leave(self, slot: int) -> LaneExit:
        """Take ``slot`` out of the lane; returns what the call's objects must be updated with."""
        on_leave = self._on_leave.pop(slot, None)
        if on_leave is None:
            raise ValueError(f"slot {slot} is not in the lane")
        self._on_events.pop(slot, None)
        t = self.table
        t.active[slot] = 0
        row = self.masks.ints[slot]
        windows = tuple(
            (int(w[W_START]), int(w[W_END]) if w[W_ENDED] else None, int(w[W_DETECTED]), bool(w[W_ARMED]),
             bool(w[W_SUSTAINED]))
            for w in self.masks.wins[slot, : row[M_WINDOWS]]
        )
        self.handovers += len(windows)
        on_leave()
        return LaneExit(
            packets=int(t.count[slot]), next_ts=int(t.next_ts[slot]), vseq=int(t.vseq[slot]),
            vts=int(t.vts[slot]), prev_payload=t.prev[slot, FRAME_SAMPLES:].tobytes(),
            before_payload=t.prev[slot, :FRAME_SAMPLES].tobytes(), last_s=float(t.last_s[slot]),
            windows=windows, opened=int(row[M_OPENED]), masked=int(row[M_MASKED]),
        )

    def process(self, datagrams: list[bytes], slots: list[int], now_s: float) -> LaneResult:
        """One pass over ``datagrams`` (``slots[i]``: the slot of datagram ``i``); see the module docstring."""
        n = len(datagrams)
        lengths = np.fromiter(map(len, datagrams), np.int64, n)
        offsets = np.zeros(n, np.int64)
        np.cumsum(lengths[:-1], out=offsets[1:])
        buf = np.frombuffer(b"".join(datagrams), np.uint8)
        return self.process_buffer(buf, offsets, lengths, np.fromiter(slots, np.int64, n), now_s)

    def process_buffer(
        self, buf: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, slots: np.ndarray, now_s: float,
    ) -> LaneResult:
        """:meth:`process` for datagrams already in memory: datagram ``i`` is ``lengths[i]``
        bytes of ``buf`` (flat uint8) from ``offsets[i]``, for slot ``slots[i]`` (int64 arrays)."""
        n = len(slots)
        self.passes += 1
        t = self.table
        if len(self._status) < n:
            self._grow_scratch(n)
        audio = self.bank.frame_buffer(n)
        status, accepted = self._status, self._accepted
        n_acc = lane_accept(buf, lengths, offsets, slots, t.active, t.ints, t.seen, status, accepted)
        n_sends = 0
        reported: list[int] = []
        if n_acc:
            lane_decode(buf, offsets, slots, accepted, n_acc, t.ints, DECODE_TABLE, audio, self._decode_scratch)
            acc_slots = slots[accepted[:n_acc]]
            quiet = self._quiet
            keys, energy = self.bank.detect_frames(acc_slots, audio, quiet=quiet, takes=self._takes(acc_slots))
            ev, n_ev = self.bank.track_kept(acc_slots, keys, energy, quiet)
            n_toggles = lane_mask(
                ev, n_ev, slots, accepted, quiet, n_acc, t.ints, t.prev, self._out, self.masks.wins,
                self.masks.ints, self._period, self._ramp, self._tone, DECODE_TABLE, _ENCODE, self._gain,
                self._toggles,
            )
            n_sends = lane_emit(
                buf, offsets, slots, accepted, quiet, n_acc, t.ints, t.prev, t.last_s, now_s, energy,
                self.bank.last_energy, self._out, self._sends, status,
            )
            rows = ev[:n_ev]
            if n_ev:
                kinds = rows[:, 1]
                self.onsets += int(np.count_nonzero(kinds == EV_STARTED))
                wanted = (kinds >= EV_DIGIT) | (self._all_events[acc_slots[rows[:, 0]]] != 0)
                if not wanted.all():
                    rows = rows[wanted]
            if len(rows) or n_toggles:
                reported = self._report(acc_slots, rows, self._toggles[:n_toggles])
            self.frames += n_sends
            self.bank.frames += n_sends  # run through the bank's kernels like any frame
        fallbacks = np.flatnonzero(status[:n] == FALLBACK).tolist()
        self.fallbacks += len(fallbacks)
        return LaneResult(self._out, self._sends[:n_sends], fallbacks, reported)

    def _takes(self, acc_slots: npt.NDArray[np.int64]) -> npt.NDArray[np.uint8]:
        """Per accepted frame, what the lane takes of it (:func:`~dtmfguard.kernels.packets.lane_quiet`)."""
        takes = self._takes_buf[: len(acc_slots)]
        lane_takes(acc_slots, self.masks.ints, EXACT_POSITION - _POSITION_MARGIN, takes)
        return takes

    def _report(
        self, acc_slots: npt.NDArray[np.int64], ev: npt.NDArray[np.int64], toggles: npt.NDArray[np.int64],
    ) -> list[int]:
        """Hand each slot its events (as :mod:`~dtmfguard.pipeline.detect` events) and its
        masked-interval edges; returns the slots handed something."""
        by_slot: dict[int, tuple[list[ToneEvent], list[int]]] = {}
        for j, kind, a, b, c, d in ev.tolist():
            slot = int(acc_slots[j])
            got = by_slot.get(slot)
            if got is None:
                got = by_slot[slot] = ([], [])
            got[0].append(MAKE_EVENT[kind](a, b, c, d))
        for slot, position in toggles.tolist():
            got = by_slot.get(slot)
            if got is None:
                got = by_slot[slot] = ([], [])
            got[1].append(position)
        for slot, (events, edges) in by_slot.items():
            sink = self._on_events.get(slot)
            if sink is not None:
                sink(events, edges)
        return list(by_slot)

    def _grow_scratch(self, n: int) -> None:
        size = max(n, 2 * len(self._status))
        self._status = np.zeros(size, np.uint8)
        self._accepted = np.zeros(size, np.int64)
        self._decode_scratch = np.zeros((2, size), np.int64)
        self._quiet = np.zeros(size, np.uint8)
        self._takes_buf = np.zeros(size, np.uint8)
        self._toggles = np.zeros((size * MAX_EDGES, 2), np.int64)
        self._sends = np.zeros((size, 2), np.int64)
        self._out = np.zeros((size, DATAGRAM_BYTES), np.uint8)
