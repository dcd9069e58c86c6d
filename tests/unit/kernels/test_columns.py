"""History rows: a channel's kernel history moved into and out of a compact batch's columns."""

from __future__ import annotations

import numpy as np
import pytest

from dtmfguard.kernels.columns import ROW_FLOATS, HistoryRows, gather_rows, scatter_rows
from dtmfguard.kernels.features import HISTORY_ROWS, FeatureState

pytestmark = pytest.mark.kernels


def _filled(capacity: int, seed: int) -> HistoryRows:
    rng = np.random.default_rng(seed)
    store = HistoryRows(capacity)
    store.rows[:, :HISTORY_ROWS] = rng.standard_normal((capacity, HISTORY_ROWS)).astype(np.float32)
    store.rows[:, HISTORY_ROWS] = (rng.random(capacity) < 0.5).astype(np.float32)
    return store


def test_a_row_is_whole_cache_lines_with_room_for_the_gate() -> None:
    assert ROW_FLOATS % 16 == 0
    assert ROW_FLOATS > HISTORY_ROWS


def test_gathered_columns_hold_each_channels_history_in_the_kernels_layout() -> None:
    store = _filled(64, 3)
    columns = np.random.default_rng(1).permutation(64)[:40].astype(np.intp)
    state = FeatureState(48)
    gather_rows(store, columns, state)
    for j, c in enumerate(columns):
        row = store.rows[c]
        np.testing.assert_array_equal(state.hist_re[:, :, j].ravel(), row[:40])
        np.testing.assert_array_equal(state.hist_im[:, :, j].ravel(), row[40:80])
        np.testing.assert_array_equal(state.hist_e[:, j], row[80:HISTORY_ROWS])
        assert state.gate[j] == row[HISTORY_ROWS]
    assert not state.rows[:, 40:].any(), "columns past the gathered ones are untouched"
    assert not state.gate[40:].any()


def test_only_masked_columns_go_back_and_other_channels_keep_their_rows() -> None:
    store = _filled(64, 4)
    before = store.rows.copy()
    columns = np.array([5, 9, 63, 0], np.intp)
    state = FeatureState(4)
    gather_rows(store, columns, state)
    state.rows += 1.0
    state.gate[:] = 1 - state.gate
    mask = np.array([1, 0, 1, 0], np.uint8)
    scatter_rows(state, columns, mask, store)
    expected = before.copy()
    for j in (0, 2):
        expected[columns[j], :HISTORY_ROWS] += 1.0
        expected[columns[j], HISTORY_ROWS] = 1.0 - before[columns[j], HISTORY_ROWS]
    np.testing.assert_array_equal(store.rows, expected)


def test_a_grown_store_keeps_every_row_and_a_reset_clears_one() -> None:
    store = _filled(8, 5)
    bigger = store.grown(20)
    assert bigger.capacity == 20
    np.testing.assert_array_equal(bigger.rows[:8], store.rows)
    assert not bigger.rows[8:].any()
    bigger.reset(3)
    assert not bigger.rows[3].any()
    np.testing.assert_array_equal(bigger.rows[4], store.rows[4])
