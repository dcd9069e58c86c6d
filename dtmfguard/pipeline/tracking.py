"""Tone trackers for a bank of channels, compiled (:mod:`dtmfguard.kernels.tracker`).

:class:`TrackerBank` keeps one :class:`~dtmfguard.pipeline.detect.ToneTracker` state
per column and runs a whole round of frames through the compiled state machine in one
call (:meth:`TrackerBank.run`); only the events it reports become Python objects.
:class:`BankTracker` is one column seen through the :class:`ToneTracker` interface
(``active``, ``block``, ``feed``, ``idle``, ``flush``, ``reset``), for a channel's odd
frames and for tests. Events, their order and their sample counts are those of
:class:`ToneTracker` for the same decisions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from dtmfguard.kernels import tracker as k
from dtmfguard.levels import DTMF_KEYS, SAMPLE_RATE_HZ
from dtmfguard.pipeline.detect import (
    DigitConfirmed,
    DigitEnded,
    ToneArmed,
    ToneCancelled,
    ToneEnded,
    ToneEvent,
    ToneRefined,
    ToneStarted,
    ToneSustained,
)

__all__ = ["MAKE_EVENT", "BankTracker", "TrackerBank"]

MAKE_EVENT: tuple[Callable[[int, int, int, int], ToneEvent], ...] = (  # by EV_* code: the event of a row
    lambda a, b, c, d: ToneStarted(a, b),
    lambda a, b, c, d: ToneArmed(a, b),
    lambda a, b, c, d: ToneSustained(a, b),
    lambda a, b, c, d: ToneRefined(a),
    lambda a, b, c, d: ToneCancelled(a, b),
    lambda a, b, c, d: ToneEnded(a, b, c),
    lambda a, b, c, d: DigitConfirmed(DTMF_KEYS[a], b, c),
    lambda a, b, c, d: DigitEnded(DTMF_KEYS[a], b, c, d),
)


class TrackerBank:
    """Tracker state for ``capacity`` columns (grown with :meth:`grow`)."""

    def __init__(self, capacity: int, min_digit_ms: float = 26.0) -> None:
        self.state = k.TrackerState(capacity)
        self.min_digit_samples = min_digit_ms * SAMPLE_RATE_HZ / 1000.0
        self._ev = np.zeros((0, k.EVENT_FIELDS), np.int64)
        self._cov = np.zeros(k.SCRATCH, np.float64)
        self._all: npt.NDArray[np.uint8] = np.ones(0, np.uint8)

    def grow(self, capacity: int) -> None:
        self.state.grow(capacity)

    def open(self, column: int) -> BankTracker:
        """A fresh tracker on ``column``."""
        self.state.reset(column)
        return BankTracker(self, column)

    def _events(self, n: int) -> npt.NDArray[np.int64]:
        if self._ev.shape[0] < n:
            self._ev = np.zeros((max(n, 2 * self._ev.shape[0]), k.EVENT_FIELDS), np.int64)
        return self._ev

    def run(
        self, columns: npt.NDArray[np.intp], keys: npt.NDArray[np.int8], energy: npt.NDArray[np.float32],
        select: npt.NDArray[np.uint8] | None = None,
    ) -> dict[int, list[ToneEvent]]:
        """Feed ``keys`` ``(blocks, 3, n)`` and ``energy`` ``(blocks, n)`` of batch channel
        ``j`` to the tracker of ``columns[j]`` (only where ``select[j]``, uint8, is set,
        when given); returns the events by ``j`` (channels without events are left out)."""
        n_blocks, _, n = keys.shape
        if energy.shape != (n_blocks, n) or len(columns) != n or (select is not None and len(select) < n):
            raise ValueError(f"keys {keys.shape}, energy {energy.shape} and {len(columns)} columns do not match")
        if select is None:
            if len(self._all) < n:
                self._all = np.ones(max(n, 2 * len(self._all)), np.uint8)
            select = self._all
        out: dict[int, list[ToneEvent]] = {}
        for who, kind, a, b, c, d in self.run_rows(columns, keys, energy, select):
            events = out.get(who)
            if events is None:
                events = out[who] = []
            events.append(MAKE_EVENT[kind](a, b, c, d))
        return out

    def run_rows(
        self, columns: npt.NDArray[np.intp], keys: npt.NDArray[np.int8], energy: npt.NDArray[np.float32],
        select: npt.NDArray[np.uint8],
    ) -> list[list[int]]:
        """:meth:`run`, with the events as the kernel's rows ``[j, kind, a, b, c, d]``
        (``kind``: an ``EV_*`` code of :mod:`dtmfguard.kernels.tracker`), for callers that
        handle a few kinds themselves. ``keys`` and ``energy`` may be wider than ``columns``."""
        ev, count = self.run_array(columns, keys, energy, select)
        return ev[:count].tolist() if count else []

    def run_array(
        self, columns: npt.NDArray[np.intp], keys: npt.NDArray[np.int8], energy: npt.NDArray[np.float32],
        select: npt.NDArray[np.uint8],
    ) -> tuple[npt.NDArray[np.int64], int]:
        """:meth:`run_rows`, with the rows left in the kernel's int64 buffer: ``(buffer, count)``
        (valid until the next run)."""
        n = len(columns)
        n_blocks = keys.shape[0]
        if keys.shape[2] < n or energy.shape[1] < n or len(select) < n:
            raise ValueError(f"keys {keys.shape}, energy {energy.shape} and {len(columns)} columns do not match")
        ev = self._events(k.MAX_EVENTS_PER_BLOCK * n_blocks * n + k.MAX_FLUSH_EVENTS)
        s = self.state
        count = k.track_frames(
            s.ints, s.floats, np.ascontiguousarray(columns, np.intp), select, np.ascontiguousarray(keys),
            np.ascontiguousarray(energy, np.float32), self.min_digit_samples, ev, self._cov,
        )
        return ev, int(count)

    def flush(self, column: int) -> list[ToneEvent]:
        ev = self._events(k.MAX_FLUSH_EVENTS)
        count = k.track_flush(self.state.ints, self.state.floats, column, ev, self._cov)
        return [MAKE_EVENT[kind](a, b, c, d) for _, kind, a, b, c, d in ev[:count].tolist()]


class BankTracker:
    """The tracker of one column of a :class:`TrackerBank`, as a :class:`ToneTracker`."""

    __slots__ = ("bank", "column")

    def __init__(self, bank: TrackerBank, column: int) -> None:
        self.bank = bank
        self.column = column

    @property
    def active(self) -> bool:
        return k.is_active(self.bank.state, self.column)

    @property
    def block(self) -> int:
        """The next sub-block this tracker will see."""
        return k.position(self.bank.state, self.column)

    def reset(self) -> None:
        self.bank.state.reset(self.column)

    def idle(self, energy: npt.ArrayLike, skip: int = 0) -> None:
        """``skip`` sub-blocks whose energies no longer matter, then sub-blocks with these
        energies, all with no decision, while no run is open (:meth:`ToneTracker.idle`)."""
        e = np.ascontiguousarray(energy, np.float32).reshape(-1)
        if not k.track_idle(self.bank.state.ints, self.bank.state.floats, self.column, skip, e):
            raise ValueError("idle() is only for a tracker with no open run; use feed()")

    def feed(
        self, onset: Sequence[int], tone: Sequence[int], digit: Sequence[int],
        energy: Sequence[float] | npt.NDArray[np.float32], events: list[ToneEvent],
    ) -> None:
        """Consume decisions for consecutive sub-blocks; append events to ``events``."""
        keys = np.array([onset, tone, digit], np.int8).T.reshape(-1, 3, 1)
        e = np.asarray(energy, np.float32).reshape(-1, 1)
        found = self.bank.run(np.array([self.column], np.intp), keys, e)
        events.extend(found.get(0, ()))

    def flush(self, events: list[ToneEvent]) -> None:
        """End of stream: close any open run."""
        events.extend(self.bank.flush(self.column))
