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

from dtmfguard.kernels.packets import (
    DATAGRAM_BYTES,
    DECODE_TABLE,
    FALLBACK,
    FRAME_SAMPLES,
    LaneTable,
    lane_accept,
    lane_decode,
    lane_emit,
)
from dtmfguard.kernels.tracker import EV_CANCELLED, EV_REFINED, EV_STARTED
from dtmfguard.pipeline.batch import DetectorBank
from dtmfguard.pipeline.mask import refined_start

__all__ = ["LaneEntry", "LaneResult", "QuietLane"]


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
    mask_pre: int = 0
    """The masker's pad before a tone's start, in samples (:attr:`Masker.pre`)."""


@dataclass(frozen=True, slots=True)
class LaneExit:
    """What a slot did while in the lane: ``packets`` relayed; the stream's next values.

    ``windows``: onsets (masker windows) opened in the lane; ``window``: the last one,
    when still open, as ``(start, detected, first_start)`` (start as the masker would
    have refined it, and the :class:`~dtmfguard.pipeline.detect.ToneStarted` fields).
    """

    packets: int
    next_ts: int
    vseq: int
    vts: int
    prev_payload: bytes
    last_s: float
    windows: int = 0
    window: tuple[int, int, int] | None = None


class LaneResult:
    """One pass: rows of ``out`` (uint8 ``(rows, 172)``) to send, ``sends`` (int64 ``(k, 2)``:
    ``[row, slot]``), and the indices of the datagrams that fall back, in order."""

    __slots__ = ("out", "sends", "fallbacks")

    def __init__(self, out: np.ndarray, sends: np.ndarray, fallbacks: list[int]) -> None:
        self.out = out
        self.sends = sends
        self.fallbacks = fallbacks


class QuietLane:
    """The lane of one :class:`~dtmfguard.pipeline.batch.DetectorBank` (one slot per bank column)."""

    def __init__(self, bank: DetectorBank) -> None:
        self.bank = bank
        self.table = LaneTable(max(8, bank.capacity))
        self._on_leave: dict[int, Callable[[], None]] = {}  # slot -> called when it leaves
        self._pre: dict[int, int] = {}  # slot -> the masker's pad before a tone (samples)
        self._windows: dict[int, list[int]] = {}  # slot -> open window [start, detected, first start]
        self._opened: dict[int, int] = {}  # slot -> windows opened in the lane
        self.onsets = 0  # onsets (tone runs opened) in lane frames
        self.handovers = 0  # of those, still open when their call left the lane
        self.passes = 0
        self.frames = 0
        self.fallbacks = 0
        self._status = np.zeros(0, np.uint8)
        self._grow_scratch(64)

    def __len__(self) -> int:
        return len(self._on_leave)

    def __contains__(self, slot: int) -> bool:
        return slot in self._on_leave

    def enter(self, entry: LaneEntry, on_leave: Callable[[], None]) -> int:
        """Put a stream in the lane; returns its slot. ``on_leave`` is called when it leaves."""
        slot = entry.column
        if slot in self._on_leave:
            raise ValueError(f"slot {slot} is already in the lane")
        if slot >= self.table.capacity:
            self.table = self.table.grown(max(slot + 1, 2 * self.table.capacity))
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
        t.prev[slot] = np.frombuffer(entry.prev_payload, np.uint8)
        t.count[slot] = 0
        t.last_s[slot] = 0.0
        t.active[slot] = 1
        self._on_leave[slot] = on_leave
        self._pre[slot] = entry.mask_pre
        return slot

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
        t = self.table
        t.active[slot] = 0
        self._pre.pop(slot, None)
        window = self._windows.pop(slot, None)
        self.handovers += window is not None
        on_leave()
        return LaneExit(
            packets=int(t.count[slot]), next_ts=int(t.next_ts[slot]), vseq=int(t.vseq[slot]),
            vts=int(t.vts[slot]), prev_payload=t.prev[slot].tobytes(), last_s=float(t.last_s[slot]),
            windows=self._opened.pop(slot, 0), window=None if window is None else (window[0], window[1], window[2]),
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
        if n_acc:
            lane_decode(buf, offsets, slots, accepted, n_acc, t.ints, DECODE_TABLE, audio, self._decode_scratch)
            acc_slots = slots[accepted[:n_acc]]
            quiet = self._quiet
            keys, energy = self.bank.detect_frames(acc_slots, audio, quiet=quiet)
            onsets = self.bank.track_quiet(acc_slots, keys, energy, quiet)
            if onsets:
                self._onsets(acc_slots, onsets)
            n_sends = lane_emit(
                buf, offsets, slots, accepted, quiet, n_acc, t.ints, t.prev, t.last_s, now_s, energy,
                self.bank.last_energy, self._out, self._sends, status,
            )
            self.frames += n_sends
            self.bank.frames += n_sends  # run through the bank's kernels like any frame
        fallbacks = np.flatnonzero(status[:n] == FALLBACK).tolist()
        self.fallbacks += len(fallbacks)
        return LaneResult(self._out, self._sends[:n_sends], fallbacks)

    def _onsets(self, acc_slots: np.ndarray, rows: list[list[int]]) -> None:
        """The tracker's events for lane frames (rows ``[j, kind, a, b, c, d]``): keep
        each slot's window as the masker would (:meth:`Masker.on_events`)."""
        windows = self._windows
        for j, kind, a, b, _, fed_from in rows:
            slot = int(acc_slots[j])
            if kind == EV_STARTED:  # a = start, b = detected
                windows[slot] = [a, b, a]
                self._opened[slot] = self._opened.get(slot, 0) + 1
                self.onsets += 1
                continue
            w = windows.get(slot)
            if w is None:
                continue
            if kind == EV_REFINED:  # a = the new start
                # The masker sees a frame's events before the frame: its output position
                # is then the frame's first sample minus the delay line (one packet).
                w[0] = refined_start(w[0], a, fed_from - FRAME_SAMPLES, self._pre.get(slot, 0))
            elif kind == EV_CANCELLED:
                # Never armed: the masker drops it, having masked nothing.
                del windows[slot]
            else:
                raise AssertionError(f"a lane frame armed a tone (event kind {kind})")

    def _grow_scratch(self, n: int) -> None:
        size = max(n, 2 * len(self._status))
        self._status = np.zeros(size, np.uint8)
        self._accepted = np.zeros(size, np.int64)
        self._decode_scratch = np.zeros((2, size), np.int64)
        self._quiet = np.zeros(size, np.uint8)
        self._sends = np.zeros((size, 2), np.int64)
        self._out = np.zeros((size, DATAGRAM_BYTES), np.uint8)
