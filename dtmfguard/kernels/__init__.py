"""Numba DSP kernels: the Goertzel bank and the per-sub-block DTMF decisions.

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

    from dtmfguard.kernels.columns import gather_columns, scatter_columns
    from dtmfguard.kernels.features import FeatureState

    state = FeatureState(2)
    picked = np.arange(1, dtype=np.intp)
    for name in FeatureState.__slots__:
        if name != "n_channels":
            column = getattr(state, name)
            gather_columns(column, picked, column)
            scatter_columns(column, picked, picked, column)

    from dtmfguard.kernels.packets import DATAGRAM_BYTES, DECODE_TABLE, LaneTable, lane_accept, lane_emit

    table = LaneTable(1)
    datagram = np.zeros((1, DATAGRAM_BYTES), np.uint8)
    buf = np.frombuffer(bytes(DATAGRAM_BYTES), np.uint8)  # read-only, as the lane's joined datagrams are
    one = np.zeros(1, np.int64)
    lengths = np.full(1, DATAGRAM_BYTES, np.int64)
    status = np.zeros(1, np.uint8)
    n = lane_accept(buf, one, lengths, one, table.active, table.pt, table.ssrc, table.next_ts, table.codec,
                    table.seen, DECODE_TABLE, x, status, one.copy())
    lane_emit(buf, one, one, one, status, n, table.next_ts, table.vseq, table.vts, table.out_pt, table.seq_off,
              table.ts_off, table.out_ssrc, table.prev, table.count, datagram)
