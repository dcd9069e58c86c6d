"""Detection for many channels at once: one kernel run per 20 ms tick over every call.

A :class:`DetectorBank` keeps the kernel history of up to ``capacity`` channels, one
row per channel (:class:`~dtmfguard.kernels.columns.HistoryRows`). Each active
caller channel holds a column (:class:`BankChannel`, taken from a free list; its
kernel history is cleared when the column is reused). Per tick the caller's decoded
packets are queued on their channels with :meth:`BankChannel.submit`; :meth:`DetectorBank.run`
then moves one 20 ms frame and the history of every channel with a frame into a compact
batch (:func:`compact_size` columns), runs
:func:`~dtmfguard.kernels.goertzel.goertzel_blocks` and the decision kernel once over its
columns, then every channel's tone tracker once (:class:`~dtmfguard.pipeline.tracking.TrackerBank`,
the compiled twin of :class:`~dtmfguard.pipeline.detect.ToneTracker`), and hands each
channel's events to its own :class:`Masker`. Channels are independent: the per-channel result is the one
:class:`~dtmfguard.pipeline.chain.CallerChain` gives for the same audio, event for
event and sample for sample.

* A channel with two frames queued (jitter) is served by a second round in the same
  tick; columns without a frame in a round keep their kernel history (it is restored
  after the run), so a round never advances a channel that had no audio.
* A frame that is not exactly 160 samples (10/30 ms packets, a partial concealment
  slot) runs alone through a one-column kernel on that channel's history, exactly as
  :class:`~dtmfguard.pipeline.detect.ChannelDetector` would.
* Most channels carry speech or silence with no decision at all: the compiled tracker
  only keeps their last energies, and only events become Python objects.

* The quiet lane. Most channels carry speech or silence with no decision for long
  stretches; for them the masker would only shift the audio by one packet. A channel
  whose tracker has no open run, whose masker holds no window and whose delay line is
  one 160-sample packet may go quiet (:meth:`BankChannel.go_quiet`): a
  :class:`~dtmfguard.control.lane.QuietLane` then relays its packets, running the
  kernels and the compiled tracker on this bank's columns
  (:meth:`DetectorBank.detect_frames`, :meth:`DetectorBank.track_quiet`) for frames
  with no tone-pair decision, without touching the masker. An onset there opens a run
  that is not armed, so the masker would not change a sample; the lane keeps its window
  and hands it over when the channel leaves (:meth:`BankChannel.resume_window`). The
  masker is brought up to date lazily (:meth:`BankChannel.quiet_relayed` records what
  the lane did): the channel's next ordinary frame first replays the lane's effect on
  it (its position and delay line), so a tone is masked from its first sample as before.

Synchronous and I/O-free: the caller of :meth:`DetectorBank.run` is the scheduler (a
20 ms tick in the live proxy); media time still comes from sample counts only.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt

from dtmfguard.kernels.columns import HistoryRows, gather_rows, scatter_rows
from dtmfguard.kernels.features import DIGIT, ONSET, TONE, FeatureBank, Thresholds
from dtmfguard.kernels.goertzel import BLOCK_SAMPLES, BlockSpectra, goertzel_blocks
from dtmfguard.kernels.packets import DECODE_TABLE, TAKES_QUIET, lane_quiet
from dtmfguard.pipeline.detect import GAP_BLOCKS, ToneEvent
from dtmfguard.pipeline.frames import AudioFrame, MaskedFrame
from dtmfguard.pipeline.mask import Masker, MaskMode, MaskSettings, _Window
from dtmfguard.pipeline.tracking import BankTracker, TrackerBank

__all__ = ["FRAME_SAMPLES", "QUIET_CODECS", "BankChannel", "BankResult", "DetectorBank"]

FRAME_SAMPLES = 160
"""Samples per column per round: one 20 ms packet at 8 kHz (four 5 ms sub-blocks)."""
_BLOCKS = FRAME_SAMPLES // BLOCK_SAMPLES

QUIET_CODECS = ("PCMU", "PCMA")
"""Codecs of the quiet lane, by index (:meth:`BankChannel.go_quiet`)."""
_RTP_HEADER_BYTES = 12

T = TypeVar("T")


class BankResult(Generic[T]):
    """One submitted frame after the bank ran: the masked frame and its events, or the error.

    ``tag`` is what was passed to :meth:`BankChannel.submit`. ``frame`` is None exactly
    when ``error`` is set (the frame must not be sent as audio).
    """

    __slots__ = ("tag", "frame", "events", "error")

    def __init__(
        self, tag: T, frame: MaskedFrame | None, events: list[ToneEvent], error: Exception | None = None,
    ) -> None:
        self.tag = tag
        self.frame = frame
        self.events = events
        self.error = error


class BankChannel(Generic[T]):
    """One caller channel's column in a :class:`DetectorBank`, with its tracker and masker.

    Queue frames with :meth:`submit`; after :meth:`DetectorBank.run` collect them, in
    submission order, with :meth:`take_results`. :meth:`process` runs one frame at once
    (outside a tick) with the same result. Stream time starts at 0 with the first sample.
    """

    __slots__ = (
        "bank", "column", "tracker", "masker", "pos", "_carry", "_pending", "_results", "closed",
        "quiet", "_prev", "_prev_codec", "_lag",
    )

    def __init__(self, bank: DetectorBank, column: int, masker: Masker, tracker: BankTracker) -> None:
        self.bank = bank
        self.column = column
        self.tracker = tracker
        self.masker = masker
        self.pos = 0
        self.closed = False
        self._carry = np.zeros(0, np.float32)
        self._pending: deque[tuple[npt.NDArray[np.float32], T]] = deque()
        self._results: list[BankResult[T]] = []
        # The quiet lane: the previous packet (its payload is the delay line's content)
        # and the samples the tracker and masker have not seen yet.
        self.quiet = False
        self._prev = b""
        self._prev_codec = 0
        self._lag = 0

    @property
    def pending(self) -> int:
        """Frames submitted and not yet run."""
        return len(self._pending)

    def submit(self, samples: npt.NDArray[np.float32], tag: T) -> None:
        """Queue float32 samples for the next :meth:`DetectorBank.run`; ``tag`` comes back with the result."""
        if self.closed:
            raise RuntimeError("channel is closed")
        if not self._pending:
            self.bank._busy.append(self)
        self._pending.append((np.asarray(samples, np.float32), tag))

    @property
    def results_waiting(self) -> bool:
        """:meth:`take_results` has results."""
        return bool(self._results)

    def take_results(self) -> list[BankResult[T]]:
        results = self._results
        self._results = []
        return results

    # -- the quiet lane

    def can_go_quiet(self) -> bool:
        """Nothing is open or queued: the channel may enter the quiet lane."""
        masker = self.masker
        return (
            not self.quiet and not self.closed and not self._pending
            and not len(self._carry) and not self.tracker.active
            and not masker._windows and masker.delay == FRAME_SAMPLES
        )

    def delay_line(self) -> npt.NDArray[np.float32]:
        """The samples in the masker's delay line (what it lets out next, unmasked when quiet)."""
        self._sync()
        return self.masker._buf.copy()

    def go_quiet(self, prev_payload: bytes, codec: int) -> None:
        """Enter the quiet lane; ``prev_payload`` is the delay line's content in ``QUIET_CODECS[codec]``.

        Call only when :meth:`can_go_quiet`; raises ValueError otherwise.
        """
        if not self.can_go_quiet() or len(prev_payload) != FRAME_SAMPLES:
            raise ValueError("the channel cannot enter the quiet lane now")
        self.quiet = True
        self._prev = bytes(_RTP_HEADER_BYTES) + prev_payload
        self._prev_codec = codec
        self._lag = 0

    @property
    def idle_quiet(self) -> bool:
        """In the quiet lane with nothing queued and no result waiting."""
        return self.quiet and not self._pending and not self._results

    @property
    def quiet_prev(self) -> tuple[bytes, int]:
        """In the quiet lane: the delay line's content as a G.711 payload, and its codec index."""
        return self._prev[_RTP_HEADER_BYTES:], self._prev_codec

    def quiet_relayed(self, payload: bytes, codec: int, samples: int) -> None:
        """``samples`` more went through the quiet lane elsewhere; ``payload`` is now the delay line's."""
        if not self.quiet:
            raise ValueError("the channel is not in the quiet lane")
        self._prev = bytes(_RTP_HEADER_BYTES) + payload
        self._prev_codec = codec
        self._lag += samples

    def leave_quiet(self) -> None:
        """Leave the quiet lane now: the masker catches up with it."""
        self._sync()

    def resume_window(self, start_sample: int, detected_sample: int, started: int) -> None:
        """The lane's onsets, handed over as it lets the channel go (:meth:`Masker.resume_window`)."""
        self.masker.resume_window(start_sample, detected_sample, started)

    def lane_masking(self) -> LaneMasking:
        """The channel's masker as the quiet lane would run it (:class:`LaneMasking`)."""
        masker = self.masker
        mode = masker.settings.mode
        runnable = masker.enabled and masker.delay == FRAME_SAMPLES and (
            mode is MaskMode.SILENCE or (mode is MaskMode.FLAT_TONE and masker._tone_period > 0)
        )
        return LaneMasking(
            pos=masker._in_pos + self._lag, pre=masker.pre, post=masker.post, ramp=masker.ramp,
            tone=masker._tone_table if mode is MaskMode.FLAT_TONE else None, period=masker._tone_period,
            runnable=runnable,
            windows=tuple((w.start, w.end, w.detected, w.armed, w.sustained) for w in masker._windows),
        )

    def restore_masker(self, windows: list[tuple[int, int | None, int, bool, bool]], opened: int, masked: int) -> None:
        """The masker's state as the lane ran it, handed over as the lane lets the channel
        go: its windows ``(start, end or None, detected, armed, sustained)`` in order, and
        the windows opened and samples masked there. (The masker's internals are reached
        here, as in :meth:`_sync`.)"""
        masker = self.masker
        masker.windows_total += opened
        masker.masked_total += masked
        kept = []
        for start, end, detected, armed, sustained in windows:
            w = _Window(start, detected)
            w.end, w.armed, w.sustained = end, armed, sustained
            kept.append(w)
        masker._windows = kept

    def _sync(self) -> None:
        """Replay the quiet lane on the masker, and leave it.

        The lane feeds the tracker itself; for the masker a lane frame (no tone-pair
        decision, so nothing armed) changes only its position and its delay line, which
        then holds the lane's last packet. (The masker's internals are reached here so
        the lane can skip it entirely; this module and the masker move together.)
        """
        if not self.quiet:
            return
        self.quiet = False
        lag = self._lag
        self._lag = 0
        if lag:
            masker = self.masker
            masker._in_pos += lag
            masker._buf = _decode(self._prev[_RTP_HEADER_BYTES:], self._prev_codec)
            self.pos += lag

    def process(self, samples: npt.NDArray[np.float32]) -> tuple[MaskedFrame, list[ToneEvent]]:
        """Run one frame now (any length), as :meth:`CallerChain.process` does."""
        self.leave_quiet()
        x = np.asarray(samples, np.float32)
        events = self.bank._detect_alone(self, x)
        return self._finish(x, events), events

    def flush(self) -> tuple[MaskedFrame, list[ToneEvent]]:
        """End of stream: close open tones and drain the delay line (as :meth:`CallerChain.flush`)."""
        self.leave_quiet()
        events: list[ToneEvent] = []
        if len(self._carry):
            events.extend(self.bank._detect_alone(self, np.zeros(BLOCK_SAMPLES - len(self._carry), np.float32)))
        events.extend(self.bank._detect_alone(self, np.zeros(BLOCK_SAMPLES * (GAP_BLOCKS + 3), np.float32)))
        self.tracker.flush(events)
        self.masker.on_events(events)
        return self.masker.flush(), events

    def close(self) -> None:
        """Give the column back; frames still queued are dropped."""
        self.bank.release(self)

    def _finish(self, x: npt.NDArray[np.float32], events: list[ToneEvent]) -> MaskedFrame:
        self.masker.on_events(events)
        frame = AudioFrame(x, self.pos)
        self.pos += len(x)
        return self.masker.process(frame)


@dataclass(frozen=True, slots=True)
class LaneMasking:
    """A channel's masker as the quiet lane runs it (:meth:`BankChannel.lane_masking`).

    ``pos``: stream position of its next input sample; ``pre``, ``post``, ``ramp``: its
    pads and ramp in samples; ``tone``: the flat-tone table (sample ``p`` of the stream is
    ``tone[p % period + k]``), or None for silence; ``runnable``: masking is on and the
    masker is one the lane can run (flat tone with a whole-sample period, or silence, and
    a one-packet delay line). When it is not, the lane only follows onsets and a frame
    with a possible tone falls back. ``windows``: the masker's windows ``(start, end or
    None, detected, armed, sustained)``, in order (the lane runs them from here, and
    hands them back with :meth:`BankChannel.restore_masker`); ``interval_open``: a
    masked interval is open (the last frame out was masked to its end).
    """

    pos: int
    pre: int
    post: int
    ramp: int
    tone: npt.NDArray[np.float32] | None
    period: int
    runnable: bool
    windows: tuple[tuple[int, int | None, int, bool, bool], ...] = ()
    interval_open: bool = False


class DetectorBank:
    """Columns for up to ``capacity`` channels (grows by doubling when full).

    ``thresholds`` and ``min_digit_ms`` are those of
    :class:`~dtmfguard.pipeline.detect.ChannelDetector`; every channel shares them.
    """

    def __init__(self, capacity: int = 256, thresholds: Thresholds | None = None, min_digit_ms: float = 26.0) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.thresholds = thresholds or Thresholds()
        self.min_digit_ms = min_digit_ms
        self._free: list[int] = []
        self._last_energy: npt.NDArray[np.float32] = np.zeros((0, _BLOCKS), np.float32)
        self._busy: list[BankChannel[Any]] = []  # channels with frames queued (each once)
        self._open = 0
        self._alone: dict[int, tuple[BlockSpectra, FeatureBank]] = {}
        self._compact: dict[int, tuple[npt.NDArray[np.float32], BlockSpectra, FeatureBank]] = {}
        self._ones: dict[int, npt.NDArray[np.uint8]] = {}
        self._quiet_takes = np.zeros(0, np.uint8)
        self.ticks = 0
        self.rounds = 0
        self.frames = 0
        self._allocate(capacity)

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def open_channels(self) -> int:
        return self._open

    def _allocate(self, capacity: int) -> None:
        old = getattr(self, "_history", None)
        self._capacity = capacity
        # Per column: its kernel history, one row each (moved into each run's compact batch).
        self._history = HistoryRows(capacity) if old is None else old.grown(capacity)
        if old is None:
            self._trackers = TrackerBank(capacity, self.min_digit_ms)
        else:
            self._trackers.grow(capacity)
        last_energy = np.zeros((capacity, _BLOCKS), np.float32)
        start = 0 if old is None else old.capacity
        last_energy[:start] = self._last_energy[:start]
        self._last_energy = last_energy  # per column: the sub-block energies of its last frame
        self._free.extend(range(capacity - 1, start - 1, -1))

    # -- channels

    def open(self, settings: MaskSettings | None = None, *, seed: int = 0) -> BankChannel[T]:
        """A channel on a free column (history cleared), with its own tracker and masker."""
        if not self._free:
            self._allocate(self._capacity * 2)
        column = self._free.pop()
        self._history.reset(column)
        self._open += 1
        return BankChannel(self, column, Masker(settings, seed=seed), self._trackers.open(column))

    def release(self, channel: BankChannel[T]) -> None:
        if channel.closed:
            return
        channel.closed = True
        channel.quiet = False
        channel._pending.clear()
        self._free.append(channel.column)
        self._open -= 1

    # -- the tick

    def run(self) -> int:
        """Run every queued frame of every channel; returns the number of frames run.

        Results wait on their channels (:meth:`BankChannel.take_results`). A frame whose
        processing failed comes back with ``error`` set, and so do the frames queued
        after it on that channel. Never raises.
        """
        done = 0
        busy = [c for c in self._busy if not c.closed and c._pending]
        self._busy = []
        if not busy:
            self.frames += done
            self.ticks += done > 0
            return done
        self.ticks += 1
        while busy:
            done += self._round(busy)
            busy = [c for c in busy if c._pending]
        self.frames += done
        return done

    def _round(self, busy: list[BankChannel[Any]]) -> int:
        batch: list[tuple[BankChannel[Any], npt.NDArray[np.float32], object]] = []
        for ch in busy:
            ch.leave_quiet()
            samples, tag = ch._pending.popleft()
            if len(samples) == FRAME_SAMPLES and not len(ch._carry):
                batch.append((ch, samples, tag))
                continue
            try:
                alone = ch.process(samples)
            except Exception as exc:
                self._fail(ch, tag, exc)
            else:
                ch._results.append(BankResult(tag, *alone))
        if not batch:
            return len(busy)
        self.rounds += 1
        columns = np.fromiter((ch.column for ch, _, _ in batch), np.intp, len(batch))
        try:
            sub, energy = self._detect_columns(columns, np.stack([x for _, x, _ in batch]))
        except Exception as exc:
            for ch, _, tag in batch:
                self._fail(ch, tag, exc)
            return len(busy)
        self._last_energy[columns] = energy.T
        try:
            # Every channel's tracker in one compiled call; only events become objects.
            found = self._trackers.run(columns, sub, energy)
        except Exception as exc:
            for ch, _, tag in batch:
                self._fail(ch, tag, exc)
            return len(busy)
        for i, (ch, samples, tag) in enumerate(batch):
            events: list[ToneEvent] = found.get(i) or []
            try:
                frame = ch._finish(samples, events)
            except Exception as exc:
                self._fail(ch, tag, exc)
            else:
                ch._results.append(BankResult(tag, frame, events))
        return len(busy)

    def _detect_columns(
        self, columns: npt.NDArray[np.intp], samples: npt.NDArray[np.float32],
    ) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]]:
        """One 20 ms frame for each of ``columns`` (``samples``: float32 ``(n, 160)``).

        Returns the decisions ``(blocks, 3, n)`` and sub-block energies ``(blocks, n)``.
        """
        audio = self.frame_buffer(len(columns))
        audio[:, : len(columns)] = samples.T
        return self.detect_frames(columns, audio)

    def frame_buffer(self, n: int) -> npt.NDArray[np.float32]:
        """A float32 ``(160, >= n)`` buffer for :meth:`detect_frames` (reused: fill, then detect)."""
        return self._compact_for(n)[0]

    def detect_frames(
        self, columns: npt.NDArray[np.intp], audio: npt.NDArray[np.float32], *,
        quiet: npt.NDArray[np.uint8] | None = None, takes: npt.NDArray[np.uint8] | None = None,
    ) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]]:
        """Run the kernels on one frame per column: ``audio[:, j]`` is the next 20 ms of
        ``columns[j]``; ``audio`` is a buffer from :meth:`frame_buffer` for at least that
        many columns.

        The columns' kernel history is gathered into that compact batch, run, and
        scattered back; no other column is touched. With ``quiet`` (uint8, at least
        ``n`` long) ``quiet[j]`` is set to whether column ``j``'s frame holds no
        tone-pair decision (TONE or DIGIT), or, with ``takes`` (uint8 per ``j``, see
        :func:`~dtmfguard.kernels.packets.lane_quiet`), whether the lane keeps it; only
        those columns keep their new history: the others can see their frame again
        later as if this run never happened. Returns the
        decisions ``(blocks, 3, n)`` and sub-block energies ``(blocks, n)`` (views of
        the batch's buffers, valid until the next run).
        """
        n = len(columns)
        compact = self._compact.get(audio.shape[1])
        if compact is None or compact[0] is not audio or n > audio.shape[1]:
            raise ValueError("audio must be a buffer from frame_buffer() for at least this many columns")
        _, spectra, bank = compact
        columns = columns.astype(np.intp, copy=False)
        gather_rows(self._history, columns, bank.state)
        goertzel_blocks(audio, spectra)
        keys = bank.process(spectra)
        if quiet is None:
            mask = self._all_columns(audio.shape[1])
        else:
            lane_quiet(keys, n, quiet, self._takes_quiet(n) if takes is None else takes)
            mask = quiet
        scatter_rows(bank.state, columns, mask, self._history)
        return keys[:, :, :n], spectra.energy[:, :n]

    def _takes_quiet(self, n: int) -> npt.NDArray[np.uint8]:
        if len(self._quiet_takes) < n:
            self._quiet_takes = np.full(max(n, 2 * len(self._quiet_takes)), TAKES_QUIET, np.uint8)
        return self._quiet_takes

    def track_kept(
        self, columns: npt.NDArray[np.intp], keys: npt.NDArray[np.int8], energy: npt.NDArray[np.float32],
        quiet: npt.NDArray[np.uint8],
    ) -> tuple[npt.NDArray[np.int64], int]:
        """:meth:`track_quiet` with the rows left in the tracker's int64 buffer: ``(buffer, count)``."""
        return self._trackers.run_array(columns, keys, energy, quiet)

    def track_quiet(
        self, columns: npt.NDArray[np.intp], keys: npt.NDArray[np.int8], energy: npt.NDArray[np.float32],
        quiet: npt.NDArray[np.uint8],
    ) -> list[list[int]]:
        """After :meth:`detect_frames` with ``quiet``: feed the quiet frames' decisions to
        their columns' trackers (the others will see their frame again); returns the
        events as rows ``[batch index, kind, a, b, c, d]`` (:meth:`TrackerBank.run_rows`).
        A quiet frame holds no tone-pair decision, so these are only onsets
        (:class:`ToneStarted`), refinements and cancellations."""
        return self._trackers.run_rows(columns, keys, energy, quiet)

    def _all_columns(self, size: int) -> npt.NDArray[np.uint8]:
        ones = self._ones.get(size)
        if ones is None:
            ones = self._ones[size] = np.ones(size, np.uint8)
        return ones

    @property
    def last_energy(self) -> npt.NDArray[np.float32]:
        """Per column ``(capacity, blocks)``: the sub-block energies of its last frame."""
        return self._last_energy

    def _compact_for(self, n: int) -> tuple[npt.NDArray[np.float32], BlockSpectra, FeatureBank]:
        size = compact_size(n)
        compact = self._compact.pop(size, None)
        if compact is None:
            compact = (
                np.zeros((FRAME_SAMPLES, size), np.float32), BlockSpectra(_BLOCKS, size),
                FeatureBank(size, _BLOCKS, self.thresholds),
            )
            if len(self._compact) >= COMPACT_SIZES:
                del self._compact[next(iter(self._compact))]  # the least recently used
        self._compact[size] = compact  # most recently used last
        return compact

    def _detect_alone(self, ch: BankChannel[T], samples: npt.NDArray[np.float32]) -> list[ToneEvent]:
        """One channel, any length: its column's history through a one-column kernel."""
        x = np.concatenate([ch._carry, samples]) if len(ch._carry) else samples
        n_blocks = len(x) // BLOCK_SAMPLES
        ch._carry = x[n_blocks * BLOCK_SAMPLES :].copy()
        events: list[ToneEvent] = []
        if n_blocks == 0:
            return events
        pair = self._alone.get(n_blocks)
        if pair is None:
            pair = (BlockSpectra(n_blocks, 1), FeatureBank(1, n_blocks, self.thresholds))
            self._alone[n_blocks] = pair
        spectra, bank = pair
        column = np.array([ch.column], np.intp)
        gather_rows(self._history, column, bank.state)
        chunk = np.ascontiguousarray(x[: n_blocks * BLOCK_SAMPLES].reshape(-1, 1))
        goertzel_blocks(chunk, spectra)
        keys = bank.process(spectra)
        scatter_rows(bank.state, column, _ONE, self._history)
        ch.tracker.feed(
            keys[:, ONSET, 0].tolist(), keys[:, TONE, 0].tolist(), keys[:, DIGIT, 0].tolist(),
            spectra.energy[:, 0], events,
        )
        return events

    def _fail(self, ch: BankChannel[Any], tag: object, exc: Exception) -> None:
        # Fail closed: this frame and every frame queued after it come back as errors.
        ch._results.append(BankResult(tag, None, [], exc))
        while ch._pending:
            _, later = ch._pending.popleft()
            ch._results.append(BankResult(later, None, [], exc))


def compact_size(n: int) -> int:
    """Columns of the compact batch that runs ``n`` frames: ``n`` rounded up to a multiple
    of 16 (two AVX2 registers) up to 128, above that to an eighth of its octave (at most
    12.5 % of padding; the kernels run every column of the batch, padding included)."""
    n = max(n, 1)
    step = max(16, 1 << max(0, (n - 1).bit_length() - 4))
    return -(-n // step) * step


COMPACT_SIZES = 12
"""Compact batches a bank keeps (least recently used dropped first): under a steady load
the number of frames per pass varies over a few neighbouring sizes."""


_ONE = np.ones(1, np.uint8)


def _decode(payload: bytes, codec: int) -> npt.NDArray[np.float32]:
    """A G.711 payload of ``QUIET_CODECS[codec]`` as float32 samples."""
    return DECODE_TABLE[np.frombuffer(payload, np.uint8).astype(np.intp) + codec * 256]
