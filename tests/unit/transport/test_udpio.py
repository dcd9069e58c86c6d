"""udpio over real loopback sockets: what one receive pass reads, how it routes to lane slots, what it sends."""

from __future__ import annotations

import errno
import select
import socket
from collections.abc import Iterator

import numpy as np
import pytest

from dtmfguard.transport import udpio

pytestmark = pytest.mark.kernels


def _udp(family: int = socket.AF_INET) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
    sock.setblocking(False)
    return sock


class Rig:
    """``ports`` sockets in one epoll set, a batch, a descriptor table, and a sender."""

    def __init__(self, ports: int, capacity: int = 64) -> None:
        self.epoll = select.epoll()
        self.socks = [_udp() for _ in range(ports)]
        for sock in self.socks:
            self.epoll.register(sock.fileno(), select.EPOLLIN)
        self.peer = _udp()
        self.stranger = _udp()
        self.batch = udpio.Batch(capacity, 16)
        self.table = udpio.FdTable(4)  # small: grows on demand
        for sock in self.socks:
            self.table.ensure(sock.fileno())  # as the pump does for each socket it adds

    def receive(self, polls: int = 8) -> int:
        b, t = self.batch, self.table
        return udpio.receive(self.epoll.fileno(), b.events, polls, b.rows, b.addrs, b.addr_lens, b.ints, t.ints, t.src)

    def rows(self, n: int) -> list[tuple[int, int, int, int, int]]:
        """(socket index, length, slot, lane, round) per row."""
        index = {s.fileno(): k for k, s in enumerate(self.socks)}
        ints = self.batch.ints
        return [
            (index[int(ints[i, udpio.FD])], int(ints[i, udpio.LENGTH]), int(ints[i, udpio.SLOT]),
             int(ints[i, udpio.LANE]), int(ints[i, udpio.ROUND]))
            for i in range(n)
        ]

    def close(self) -> None:
        for sock in [*self.socks, self.peer, self.stranger]:
            sock.close()
        self.epoll.close()


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig(3)
    yield r
    r.close()


def test_nothing_ready_reads_nothing(rig: Rig) -> None:
    assert rig.receive() == 0


def test_a_burst_on_one_socket_is_read_in_order_one_round_per_datagram(rig: Rig) -> None:
    for k in range(4):
        rig.peer.sendto(bytes([k]) * 172, rig.socks[0].getsockname())
    rig.peer.sendto(b"x" * 40, rig.socks[2].getsockname())
    n = rig.receive()
    assert n == 5
    rows = rig.rows(n)
    assert sorted((r[0], r[4]) for r in rows) == [(0, 0), (0, 1), (0, 2), (0, 3), (2, 0)]
    first = [i for i, r in enumerate(rows) if r[0] == 0]
    assert [rig.batch.rows[i, 0] for i in first] == [0, 1, 2, 3], "a socket's datagrams keep their order"
    assert all(r[2] == -1 and r[3] == -1 for r in rows), "no socket is in a lane"
    assert rig.receive() == 0, "all of it was read; the rounds start at 0 again next pass"
    rig.peer.sendto(b"y", rig.socks[0].getsockname())
    assert rig.receive() == 1
    assert rig.rows(1)[0][4] == 0


def test_datagram_bytes_and_source_are_what_python_would_receive(rig: Rig) -> None:
    payload = bytes(range(200))
    rig.peer.sendto(payload, rig.socks[1].getsockname())
    assert rig.receive() == 1
    data, source = rig.batch.datagram(0)
    assert data == payload
    assert source == rig.peer.getsockname()


def test_only_the_latched_source_goes_to_the_lane_slot(rig: Rig) -> None:
    src = udpio.encode_address(socket.AF_INET, rig.peer.getsockname())
    assert src is not None
    rig.table.set_lane(rig.socks[1].fileno(), 2, 7, src)
    rig.peer.sendto(b"a" * 172, rig.socks[1].getsockname())
    rig.stranger.sendto(b"b" * 172, rig.socks[1].getsockname())
    rig.peer.sendto(b"c" * 172, rig.socks[0].getsockname())
    n = rig.receive()
    by_first_byte = {chr(rig.batch.rows[i, 0]): row for i, row in enumerate(rig.rows(n))}
    assert by_first_byte["a"][2:4] == (7, 2)
    assert by_first_byte["b"][2:4] == (-1, -1), "a stranger on the lane's port is not the stream"
    assert by_first_byte["c"][2:4] == (-1, -1)
    rig.table.clear_lane(rig.socks[1].fileno())
    rig.peer.sendto(b"a" * 172, rig.socks[1].getsockname())
    assert rig.receive() == 1
    assert rig.rows(1)[0][2] == -1


def test_a_datagram_longer_than_a_row_keeps_its_length_and_never_reaches_a_lane(rig: Rig) -> None:
    src = udpio.encode_address(socket.AF_INET, rig.peer.getsockname())
    assert src is not None
    rig.table.set_lane(rig.socks[0].fileno(), 0, 3, src)
    rig.peer.sendto(b"z" * 5000, rig.socks[0].getsockname())
    assert rig.receive() == 1
    _, length, slot, _, _ = rig.rows(1)[0]
    assert length == 5000 > udpio.ROW_BYTES
    assert slot == -1


def test_a_full_batch_stops_and_the_rest_waits_in_the_socket() -> None:
    rig = Rig(1, capacity=3)
    try:
        for k in range(5):
            rig.peer.sendto(bytes([k]), rig.socks[0].getsockname())
        assert rig.receive() == 3
        assert [int(rig.batch.rows[i, 0]) for i in range(3)] == [0, 1, 2]
        assert rig.receive() == 2
        assert [int(rig.batch.rows[i, 0]) for i in range(2)] == [3, 4]
        assert [r[4] for r in rig.rows(2)] == [0, 1]
    finally:
        rig.close()


def test_polls_bound_a_burst(rig: Rig) -> None:
    for k in range(5):
        rig.peer.sendto(bytes([k]), rig.socks[0].getsockname())
    assert rig.receive(polls=2) == 2, "one datagram per ready socket per poll"
    assert rig.receive() == 3


def test_a_socket_error_fills_a_row_with_minus_errno(rig: Rig) -> None:
    closed = _udp()
    gone = closed.getsockname()
    closed.close()
    rig.socks[0].connect(gone)  # a connected socket hears of the ICMP port unreachable
    rig.socks[0].send(b"x")
    n = rig.receive()
    assert n == 1
    assert rig.rows(1)[0][1] == -errno.ECONNREFUSED


def test_send_rows_sends_each_row_to_its_slots_target_and_reports_failures(rig: Rig) -> None:
    targets = udpio.Targets(2)  # grows to fit slot 5
    dst = udpio.encode_address(socket.AF_INET, rig.peer.getsockname())
    assert dst is not None
    targets.set(5, rig.socks[0].fileno(), dst)
    out = np.arange(3 * 172, dtype=np.uint8).reshape(3, 172)
    sends = np.array([[2, 5], [0, 5], [1, 4]], np.int64)  # slot 4 has no target
    codes = targets.scratch(3)
    assert udpio.send_rows(out, sends, 3, targets.ints, targets.addrs, codes) == 1
    assert codes[:3].tolist() == [0, 0, -1]
    got = [rig.peer.recvfrom(1000) for _ in range(2)]
    assert [d for d, _ in got] == [out[2].tobytes(), out[0].tobytes()]
    assert all(a == rig.socks[0].getsockname() for _, a in got)
    targets.clear(5)
    assert udpio.send_rows(out, sends, 1, targets.ints, targets.addrs, codes) == 1


def test_send_rows_sends_nothing_for_no_rows(rig: Rig) -> None:
    targets = udpio.Targets(1)
    out = np.zeros((1, 172), np.uint8)
    assert udpio.send_rows(out, np.zeros((1, 2), np.int64), 0, targets.ints, targets.addrs, targets.codes) == 0


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_addresses_round_trip_as_the_socket_module_spells_them(family: int) -> None:
    try:
        a, b = _udp(family), _udp(family)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        raw = udpio.encode_address(family, b.getsockname())
        assert raw is not None
        assert udpio.decode_address(raw) == b.getsockname()
        a.sendto(b"hi", b.getsockname())
        _, source = b.recvfrom(10)
        assert udpio.decode_address(udpio.encode_address(family, source) or b"") == source
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize(
    ("family", "address"),
    [
        (socket.AF_INET, ("example.invalid", 5000)),
        (socket.AF_INET, ("127.0.0.1", 70000)),
        (socket.AF_INET, ("::1", 5000)),
        (socket.AF_INET6, ("127.0.0.1", 5000)),
        (socket.AF_INET, ()),
        (socket.AF_UNIX, ("127.0.0.1", 5000)),
    ],
)
def test_what_cannot_be_a_numeric_address_of_the_family_is_none(family: int, address: tuple[object, ...]) -> None:
    assert udpio.encode_address(family, address) is None


def test_an_unknown_family_decodes_to_none() -> None:
    assert udpio.decode_address(bytes(16)) is None
