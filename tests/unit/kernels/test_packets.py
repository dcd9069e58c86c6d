"""The quiet lane's packet kernels on their own: which datagrams are accepted, and how they are decoded."""

from __future__ import annotations

import numpy as np
import pytest

from dtmfguard.codecs.g711 import alaw_decode, ulaw_decode
from dtmfguard.kernels.packets import (
    ACCEPTED,
    DATAGRAM_BYTES,
    DECODE_TABLE,
    FALLBACK,
    LaneTable,
    lane_accept,
    lane_decode,
)

pytestmark = pytest.mark.kernels


def _datagram(ssrc: int, ts: int, payload: np.ndarray, pt: int = 0) -> bytes:
    return bytes([0x80, pt, 0, 1]) + ts.to_bytes(4, "big") + ssrc.to_bytes(4, "big") + payload.tobytes()


def _lane(n: int, rng: np.random.Generator) -> tuple[LaneTable, list[bytes], list[np.ndarray]]:
    """Slot ``2 * i`` expects datagram ``i``: PCMU for even ``i``, PCMA for odd."""
    table = LaneTable(2 * n + 1)
    datagrams, payloads = [], []
    for i in range(n):
        s = 2 * i
        table.active[s] = 1
        table.pt[s] = 8 if i % 2 else 0
        table.ssrc[s] = 0x1000 + i
        table.next_ts[s] = 160 * (i + 1)
        table.codec[s] = i % 2
        payload = rng.integers(0, 256, 160).astype(np.uint8)
        payloads.append(payload)
        datagrams.append(_datagram(0x1000 + i, 160 * (i + 1), payload, pt=8 if i % 2 else 0))
    return table, datagrams, payloads


def _run(table: LaneTable, datagrams: list[bytes], slots: list[int], stride: int, width: int) -> tuple:
    """The datagrams laid out ``stride`` bytes apart, as the media pump's receive rows are."""
    n = len(datagrams)
    rows = np.zeros((n, stride), np.uint8)
    for i, d in enumerate(datagrams):
        rows[i, : len(d)] = np.frombuffer(d, np.uint8)
    lengths = np.array([len(d) for d in datagrams], np.int64)
    offsets = np.arange(n, dtype=np.int64) * stride
    slot_arr = np.array(slots, np.int64)
    status = np.zeros(n, np.uint8)
    accepted = np.zeros(n, np.int64)
    buf = rows.reshape(-1)
    n_acc = lane_accept(buf, lengths, offsets, slot_arr, table.active, table.ints, table.seen, status, accepted)
    audio = np.full((160, width), np.nan, np.float32)
    lane_decode(buf, offsets, slot_arr, accepted, n_acc, table.ints, DECODE_TABLE, audio, np.zeros((2, n), np.int64))
    return n_acc, status, accepted, audio


@pytest.mark.parametrize("n", [1, 15, 16, 17, 40])
@pytest.mark.parametrize("width", [64, 256, 48, 144])
def test_each_accepted_payload_is_decoded_into_its_column_with_its_codec(n: int, width: int) -> None:
    rng = np.random.default_rng(n)
    table, datagrams, payloads = _lane(n, rng)
    n_acc, status, accepted, audio = _run(table, datagrams, [2 * i for i in range(n)], 2112, width)
    assert n_acc == n
    assert (status[:n] == ACCEPTED).all()
    for j in range(n):
        i = int(accepted[j])
        want = alaw_decode(payloads[i]) if i % 2 else ulaw_decode(payloads[i])
        np.testing.assert_array_equal(audio[:, j], want.astype(np.float32))
    assert np.isnan(audio[:, n:]).all(), "columns past the accepted ones are not touched"


def test_only_the_exact_next_packet_of_a_slot_is_accepted_and_decoded() -> None:
    rng = np.random.default_rng(1)
    table, datagrams, payloads = _lane(4, rng)
    wrong_ts = _datagram(0x1001, 999, payloads[1], pt=8)
    wrong_ssrc = _datagram(0x7777, 160 * 3, payloads[2])
    short = datagrams[3][: DATAGRAM_BYTES - 1]
    batch = [datagrams[0], wrong_ts, wrong_ssrc, short, datagrams[0]]
    n_acc, status, accepted, audio = _run(table, batch, [0, 2, 4, 6, 0], DATAGRAM_BYTES, 8)
    assert n_acc == 1
    assert status[:5].tolist() == [ACCEPTED, FALLBACK, FALLBACK, FALLBACK, FALLBACK], "one per slot per pass"
    assert accepted[0] == 0
    np.testing.assert_array_equal(audio[:, 0], ulaw_decode(payloads[0]).astype(np.float32))
    assert np.isnan(audio[:, 1:]).all()


def test_what_the_lane_takes_of_each_slots_frame() -> None:
    from dtmfguard.kernels.lanemask import M_MASKING, M_POS, M_WINDOWS, ROOM_WINDOWS, LaneMasks
    from dtmfguard.kernels.packets import TAKES_ALL, TAKES_NOTHING, TAKES_QUIET, lane_takes

    masks = LaneMasks(5)
    masks.ints[[1, 2, 3], M_MASKING] = 1  # the lane runs the masker of slots 1-3, not of 0 and 4
    masks.ints[2, M_POS] = 1000  # at the limit: positions past it are not exact in float32
    masks.ints[3, M_WINDOWS] = ROOM_WINDOWS + 1  # no room for the windows a frame may open
    masks.ints[4, M_WINDOWS] = ROOM_WINDOWS
    takes = np.zeros(5, np.uint8)
    lane_takes(np.array([0, 1, 2, 3, 4], np.int64), masks.ints, 1000, takes)
    assert takes.tolist() == [TAKES_QUIET, TAKES_ALL, TAKES_QUIET, TAKES_NOTHING, TAKES_QUIET]
