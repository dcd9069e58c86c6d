"""Detection for many channels at once: one kernel run per 20 ms tick over every call.

A :class:`DetectorBank` owns preallocated ``(160, capacity)`` float32 audio and one
:class:`~dtmfguard.kernels.features.FeatureBank` for ``capacity`` columns. Each active
caller channel holds a column (:class:`BankChannel`, taken from a free list; its
kernel history is cleared when the column is reused). Per tick the caller's decoded
packets are queued on their channels with :meth:`BankChannel.submit`; :meth:`DetectorBank.run`
then copies one 20 ms frame per channel into its column, runs
:func:`~dtmfguard.kernels.goertzel.goertzel_blocks` and the decision kernel once over all
columns, and hands each channel's decisions to its own :class:`ToneTracker` and
:class:`Masker`. Channels are independent: the per-channel result is the one
:class:`~dtmfguard.pipeline.chain.CallerChain` gives for the same audio, event for
event and sample for sample.

* A channel with two frames queued (jitter) is served by a second round in the same
  tick; columns without a frame in a round keep their kernel history (it is restored
  after the run), so a round never advances a channel that had no audio.
* A frame that is not exactly 160 samples (10/30 ms packets, a partial concealment
  slot) runs alone through a one-column kernel on that channel's history, exactly as
  :class:`~dtmfguard.pipeline.detect.ChannelDetector` would.
* Most channels carry speech or silence with no decision at all: their trackers are
  fed only the sub-block energies (NumPy finds the columns with any decision).

Synchronous and I/O-free: the caller of :meth:`DetectorBank.run` is the scheduler (a
20 ms tick in the live proxy); media time still comes from sample counts only.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt

from dtmfguard.kernels.features import DIGIT, ONSET, TONE, FeatureBank, FeatureState, Thresholds
from dtmfguard.kernels.goertzel import BLOCK_SAMPLES, BlockSpectra, goertzel_blocks
from dtmfguard.pipeline.detect import GAP_BLOCKS, ToneEvent, ToneTracker
from dtmfguard.pipeline.frames import AudioFrame, MaskedFrame
from dtmfguard.pipeline.mask import Masker, MaskSettings

__all__ = ["FRAME_SAMPLES", "BankChannel", "BankResult", "DetectorBank"]

FRAME_SAMPLES = 160
"""Samples per column per round: one 20 ms packet at 8 kHz (four 5 ms sub-blocks)."""
_BLOCKS = FRAME_SAMPLES // BLOCK_SAMPLES

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

    __slots__ = ("bank", "column", "tracker", "masker", "pos", "_carry", "_pending", "_results", "closed")

    def __init__(self, bank: DetectorBank, column: int, masker: Masker, tracker: ToneTracker) -> None:
        self.bank = bank
        self.column = column
        self.tracker = tracker
        self.masker = masker
        self.pos = 0
        self.closed = False
        self._carry = np.zeros(0, np.float32)
        self._pending: deque[tuple[npt.NDArray[np.float32], T]] = deque()
        self._results: list[BankResult[T]] = []

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

    def take_results(self) -> list[BankResult[T]]:
        results = self._results
        self._results = []
        return results

    def process(self, samples: npt.NDArray[np.float32]) -> tuple[MaskedFrame, list[ToneEvent]]:
        """Run one frame now (any length), as :meth:`CallerChain.process` does."""
        x = np.asarray(samples, np.float32)
        events = self.bank._detect_alone(self, x)
        return self._finish(x, events), events

    def flush(self) -> tuple[MaskedFrame, list[ToneEvent]]:
        """End of stream: close open tones and drain the delay line (as :meth:`CallerChain.flush`)."""
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
        self._busy: list[BankChannel[Any]] = []  # channels with frames queued (each once)
        self._open = 0
        self._alone: dict[int, tuple[BlockSpectra, FeatureBank]] = {}
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
        old = getattr(self, "_features", None)
        self._capacity = capacity
        self._audio = np.zeros((FRAME_SAMPLES, capacity), np.float32)
        self._spectra = BlockSpectra(_BLOCKS, capacity)
        self._features = FeatureBank(capacity, _BLOCKS, self.thresholds)
        if old is not None:
            n = old.state.n_channels
            for name in ("hist_re", "hist_im", "hist_e", "gate"):
                getattr(self._features.state, name)[..., :n] = getattr(old.state, name)
        start = 0 if old is None else old.state.n_channels
        self._free.extend(range(capacity - 1, start - 1, -1))

    # -- channels

    def open(self, settings: MaskSettings | None = None, *, seed: int = 0) -> BankChannel[T]:
        """A channel on a free column (history cleared), with its own tracker and masker."""
        if not self._free:
            self._allocate(self._capacity * 2)
        column = self._free.pop()
        self._features.state.reset_channel(column)
        self._open += 1
        return BankChannel(self, column, Masker(settings, seed=seed), ToneTracker(self.min_digit_ms))

    def release(self, channel: BankChannel[T]) -> None:
        if channel.closed:
            return
        channel.closed = True
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
        busy = [c for c in self._busy if not c.closed and c._pending]
        self._busy = []
        if not busy:
            return 0
        self.ticks += 1
        done = 0
        while busy:
            done += self._round(busy)
            busy = [c for c in busy if c._pending]
        self.frames += done
        return done

    def _round(self, busy: list[BankChannel[Any]]) -> int:
        batch: list[tuple[BankChannel[Any], npt.NDArray[np.float32], object]] = []
        for ch in busy:
            samples, tag = ch._pending.popleft()
            if len(samples) == FRAME_SAMPLES and not len(ch._carry):
                self._audio[:, ch.column] = samples
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
            keys, energy = self._detect_batch(columns)
        except Exception as exc:
            for ch, _, tag in batch:
                self._fail(ch, tag, exc)
            return len(busy)
        # Columns with any decision in this frame: only their trackers see decisions.
        sub = keys[:, :, columns]
        decided: list[bool] = np.any(sub >= 0, axis=(0, 1)).tolist()
        energies: list[list[float]] = energy[:, columns].T.tolist()
        for i, (ch, samples, tag) in enumerate(batch):
            events: list[ToneEvent] = []
            try:
                if decided[i] or ch.tracker.active:
                    ch.tracker.feed(
                        sub[:, ONSET, i].tolist(), sub[:, TONE, i].tolist(), sub[:, DIGIT, i].tolist(),
                        energies[i], events,
                    )
                else:
                    ch.tracker.idle(energies[i])
                frame = ch._finish(samples, events)
            except Exception as exc:
                self._fail(ch, tag, exc)
            else:
                ch._results.append(BankResult(tag, frame, events))
        return len(busy)

    def _detect_batch(self, columns: npt.NDArray[np.intp]) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]]:
        state = self._features.state
        partial = len(columns) < self._capacity
        if partial:
            # Columns without a frame this round must not see the run: keep their history.
            saved = (state.hist_re.copy(), state.hist_im.copy(), state.hist_e.copy(), state.gate.copy())
        goertzel_blocks(self._audio, self._spectra)
        keys = self._features.process(self._spectra)
        if partial:
            idle = np.ones(self._capacity, bool)
            idle[columns] = False
            state.hist_re[:, :, idle] = saved[0][:, :, idle]
            state.hist_im[:, :, idle] = saved[1][:, :, idle]
            state.hist_e[:, idle] = saved[2][:, idle]
            state.gate[idle] = saved[3][idle]
        return keys, self._spectra.energy

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
        one, shared, c = bank.state, self._features.state, ch.column
        _copy_column(shared, c, one, 0)
        chunk = np.ascontiguousarray(x[: n_blocks * BLOCK_SAMPLES].reshape(-1, 1))
        goertzel_blocks(chunk, spectra)
        keys = bank.process(spectra)
        _copy_column(one, 0, shared, c)
        ch.tracker.feed(
            keys[:, ONSET, 0].tolist(), keys[:, TONE, 0].tolist(), keys[:, DIGIT, 0].tolist(),
            spectra.energy[:, 0].tolist(), events,
        )
        return events

    def _fail(self, ch: BankChannel[Any], tag: object, exc: Exception) -> None:
        # Fail closed: this frame and every frame queued after it come back as errors.
        ch._results.append(BankResult(tag, None, [], exc))
        while ch._pending:
            _, later = ch._pending.popleft()
            ch._results.append(BankResult(later, None, [], exc))


def _copy_column(src: FeatureState, i: int, dst: FeatureState, j: int) -> None:
    dst.hist_re[:, :, j] = src.hist_re[:, :, i]
    dst.hist_im[:, :, j] = src.hist_im[:, :, i]
    dst.hist_e[:, j] = src.hist_e[:, i]
    dst.gate[j] = src.gate[i]
