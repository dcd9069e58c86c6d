"""Numba kernels: the Goertzel bank, the per-sub-block DTMF decisions, the tone tracker's
state machine, the media lane's packet work and the masker's ramps and mix.

Every kernel is a private ``@njit(cache=True)`` function behind a typed public wrapper
that validates and allocates, with a plain-NumPy twin that tests compare against.
:func:`warmup` compiles every signature the media path uses, so nothing compiles
while a call is running.
"""

from __future__ import annotations

import numpy as np


def warmup() -> None:
    """Compile (or load from cache) every kernel signature; call once at start-up."""
    from dtmfguard.kernels.features import FeatureBank
    from dtmfguard.kernels.goertzel import goertzel_blocks

    x = np.zeros((160, 2), np.float32)
    x[:, 0] = np.sin(np.arange(160) * 0.55).astype(np.float32)
    spectra = goertzel_blocks(x)
    FeatureBank(2, spectra.n_blocks).process(spectra)

    from dtmfguard.kernels.columns import HistoryRows, gather_rows, scatter_rows
    from dtmfguard.kernels.features import FeatureState

    store, state = HistoryRows(2), FeatureState(2)
    picked = np.arange(1, dtype=np.intp)
    gather_rows(store, picked, state)
    scatter_rows(state, picked, np.ones(1, np.uint8), store)

    from dtmfguard.kernels.lanemask import MAX_EDGES, LaneMasks
    from dtmfguard.kernels.lanemask import ramp_table as lane_ramp_table
    from dtmfguard.kernels.packets import (
        DATAGRAM_BYTES,
        DECODE_TABLE,
        LaneTable,
        lane_accept,
        lane_decode,
        lane_emit,
        lane_mask,
        lane_quiet,
        lane_takes,
    )

    table = LaneTable(1)
    one = np.zeros(1, np.int64)
    lengths = np.full(1, DATAGRAM_BYTES, np.int64)
    status = np.zeros(1, np.uint8)
    quiet = np.zeros(1, np.uint8)
    keys = FeatureBank(2, spectra.n_blocks).process(spectra)
    # Datagrams come joined into read-only bytes (QuietLane.process) or in the media
    # pump's receive rows (writable): both array types are compiled here.
    for buf in (np.frombuffer(bytes(DATAGRAM_BYTES), np.uint8), np.zeros(DATAGRAM_BYTES, np.uint8)):
        n = lane_accept(buf, lengths, one.copy(), one, table.active, table.ints, table.seen, status, one.copy())
        lane_decode(buf, one, one, one, n, table.ints, DECODE_TABLE, x, np.zeros((2, 1), np.int64))
        masks = LaneMasks(1)
        lane_takes(one, masks.ints, 1 << 24, quiet)
        lane_quiet(keys, n, quiet, np.ones(1, np.uint8))
        lane_mask(np.zeros((1, 6), np.int64), 0, one, one, quiet, n, table.ints, table.prev,
                  np.zeros((1, DATAGRAM_BYTES), np.uint8), masks.wins, masks.ints, 16, lane_ramp_table(16),
                  np.zeros(176, np.float32), DECODE_TABLE, np.zeros((2, 65536), np.uint8),
                  np.zeros(160, np.float32), np.zeros((MAX_EDGES, 2), np.int64))
        # The energies come as a column slice of the batch's array (detect_frames): strided
        # while the pass leaves columns over, C-contiguous when it fills an unpadded batch.
        for energy in (spectra.energy[:, :1], np.zeros((spectra.n_blocks, 1), np.float32)):
            lane_emit(buf, one, one, one, quiet, n, table.ints, table.prev, table.last_s, 0.0, energy,
                      np.zeros((1, spectra.n_blocks), np.float32), np.zeros((1, DATAGRAM_BYTES), np.uint8),
                      np.zeros((1, 2), np.int64), status)

    from dtmfguard.kernels.tracker import MAX_FLUSH_EVENTS, SCRATCH, TrackerState, track_flush, track_frames, track_idle

    tracker = TrackerState(2)
    events = np.zeros((8 * spectra.n_blocks * 2 + MAX_FLUSH_EVENTS, 6), np.int64)
    scratch = np.zeros(SCRATCH, np.float64)
    track_frames(tracker.ints, tracker.floats, np.arange(2, dtype=np.intp), np.ones(2, np.uint8),
                 np.ascontiguousarray(keys[:, :, :2]),
                 np.ascontiguousarray(spectra.energy[:, :2]), 208.0, events, scratch)
    track_idle(tracker.ints, tracker.floats, 0, 0, np.zeros(spectra.n_blocks, np.float32))
    track_flush(tracker.ints, tracker.floats, 0, events, scratch)

    from dtmfguard.kernels.masking import gain_edges, mix_frame, ramp_gain, ramp_table

    ramp = ramp_table(16)
    gain = np.empty(160, np.float32)
    for combine in (False, True):
        ramp_gain(gain, 0, 0, None, ramp, combine)
    mix_frame(np.zeros(160, np.float32), gain, np.zeros(176, np.float32), 16)
    gain_edges(gain, np.empty(160, np.intp))
