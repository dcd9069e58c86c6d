"""Per-channel kernel history kept as one row per channel, moved to and from compact batches.

The decision kernel reads its history as columns of ``(rows, n_channels)`` arrays (the
channel on the last axis, so its loops vectorise across channels). A bank that serves
many channels but runs only some of them at a time (the media lane takes the calls that
had a packet in a pass) keeps each channel's history in a row of its own instead:
:class:`HistoryRows`, ``HISTORY_ROWS`` values then the gate flag, padded to whole cache
lines. Moving a channel in (:func:`gather_rows`) or out (:func:`scatter_rows`) of a
compact batch then touches six cache lines of the store, where a column of a
``(rows, capacity)`` array touches one line per value (85), and a call's state stays
together in memory however many calls the bank holds.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

from dtmfguard.kernels.features import HISTORY_ROWS, FeatureState

__all__ = ["ROW_FLOATS", "HistoryRows", "gather_rows", "scatter_rows"]

_GATE = HISTORY_ROWS
"""Where a row keeps the gate flag (0.0 or 1.0), after the history values."""
ROW_FLOATS = -(-(HISTORY_ROWS + 1) // 16) * 16
"""float32 values per row: the history and the gate, padded to whole 64-byte lines."""


class HistoryRows:
    """The kernel history of ``capacity`` channels, one row each (float32 ``(capacity, ROW_FLOATS)``)."""

    __slots__ = ("rows",)

    def __init__(self, capacity: int) -> None:
        self.rows: npt.NDArray[np.float32] = np.zeros((capacity, ROW_FLOATS), np.float32)

    @property
    def capacity(self) -> int:
        return int(self.rows.shape[0])

    def grown(self, capacity: int) -> HistoryRows:
        """A store for ``capacity`` channels holding these rows first (the others cleared)."""
        bigger = HistoryRows(capacity)
        bigger.rows[: self.capacity] = self.rows
        return bigger

    def reset(self, channel: int) -> None:
        """A fresh channel: no history, gate closed."""
        self.rows[channel] = 0.0


@njit(cache=True, boundscheck=False)
def _gather(store, columns, hist, gate):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    for j in range(len(columns)):
        row = store[columns[j]]
        for h in range(HISTORY_ROWS):
            hist[h, j] = row[h]
        gate[j] = np.uint8(row[_GATE] != np.float32(0.0))


@njit(cache=True, boundscheck=False)
def _scatter(hist, gate, columns, mask, store):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    for j in range(len(columns)):
        if mask[j]:
            row = store[columns[j]]
            for h in range(HISTORY_ROWS):
                row[h] = hist[h, j]
            row[_GATE] = np.float32(gate[j])


def gather_rows(store: HistoryRows, columns: npt.NDArray[np.intp], state: FeatureState) -> None:
    """Channel ``columns[j]`` of ``store`` into column ``j`` of ``state`` (which may be wider)."""
    _gather(store.rows, columns, state.rows, state.gate)


def scatter_rows(
    state: FeatureState, columns: npt.NDArray[np.intp], mask: npt.NDArray[np.uint8], store: HistoryRows,
) -> None:
    """Column ``j`` of ``state`` back into channel ``columns[j]`` of ``store``, for each ``j``
    with ``mask[j]`` (uint8); the other channels keep their rows."""
    _scatter(state.rows, state.gate, columns, mask, store.rows)
