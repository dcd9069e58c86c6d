"""bench.mmsg on real loopback sockets (sendmmsg to many destinations, recvmmsg with kernel
timestamps), and the load generator's packet table and matcher around those batches."""

from __future__ import annotations

import ctypes
import errno
import select
import socket
import struct
import time
from collections.abc import Iterator

import numpy as np
import pytest

from bench import mmsg
from bench.load import FRAME, Call, _Matcher, _RtpTable
from bench.mmsg import Received, Receiver, Sender

LOOPBACK = "127.0.0.1"


def _udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOOPBACK, 0))
    sock.setblocking(False)
    return sock


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def _open(sockets: list[socket.socket], n: int) -> list[socket.socket]:
    new = [_udp() for _ in range(n)]
    sockets.extend(new)
    return new


def _table(n: int, width: int) -> np.ndarray:
    # Row i: i in the first two bytes, then a pattern that differs per row.
    table = (np.arange(n * width).reshape(n, width) * 7 % 251).astype(np.uint8)
    table[:, :2] = np.arange(n, dtype=">u2").view(np.uint8).reshape(n, 2)
    return table


def _wait_readable(sock: socket.socket) -> None:
    """Loopback delivers within the send call; still, wait for readability rather than flake."""
    readable, _, _ = select.select([sock], [], [], 2.0)
    assert readable, "nothing arrived"


def test_one_send_reaches_many_destinations_with_the_right_bytes(sockets: list[socket.socket]) -> None:
    tx, *rxs = _open(sockets, 41)
    packets = _table(40, 172)
    sender = Sender(tx, packets, [rx.getsockname() for rx in rxs])
    assert len(sender) == 40
    assert sender.send(0, 40) == 40
    for i, rx in enumerate(rxs):
        _wait_readable(rx)
        data, source = rx.recvfrom(2048)
        assert data == packets[i].tobytes()
        assert source == tx.getsockname()
        with pytest.raises(BlockingIOError):
            rx.recvfrom(2048)


def test_a_range_of_rows_with_their_own_lengths(sockets: list[socket.socket]) -> None:
    tx, rx = _open(sockets, 2)
    packets = _table(10, 64)
    lengths = np.arange(10) + 20
    sender = Sender(tx, packets, [rx.getsockname()] * 10, lengths=lengths)
    assert sender.send(3, 7) == 4
    assert sender.send(5, 5) == 0
    _wait_readable(rx)
    got = [rx.recv(2048) for _ in range(4)]
    assert got == [packets[i, : lengths[i]].tobytes() for i in range(3, 7)]


def test_rows_are_read_at_send_time(sockets: list[socket.socket]) -> None:
    tx, rx = _open(sockets, 2)
    packets = np.zeros((1, 12), np.uint8)
    sender = Sender(tx, packets, [rx.getsockname()])
    for value in (1, 2):
        packets[0] = value
        assert sender.send(0, 1) == 1
    _wait_readable(rx)
    assert [rx.recv(64), rx.recv(64)] == [b"\x01" * 12, b"\x02" * 12]


def test_a_burst_comes_back_with_lengths_ports_and_kernel_timestamps(sockets: list[socket.socket]) -> None:
    rx, *txs = _open(sockets, 6)
    receiver = Receiver(rx, capacity=64)
    before_ns = time.time_ns()
    sent = []
    for i in range(50):
        tx = txs[i % len(txs)]
        payload = bytes([i]) * (12 + i)
        tx.sendto(payload, rx.getsockname())
        sent.append((payload, tx.getsockname()[1]))
    after_ns = time.time_ns()
    _wait_readable(rx)
    batch = receiver.receive()
    assert batch.count == 50
    assert batch.lengths.tolist() == [len(p) for p, _ in sent]
    assert batch.ports.tolist() == [port for _, port in sent]
    assert set(batch.hosts.tolist()) == {0x7F000001}
    assert [batch.data[i, : batch.lengths[i]].tobytes() for i in range(50)] == [p for p, _ in sent]
    # CLOCK_REALTIME, stamped as each datagram was queued: inside the sending window, in order.
    assert (batch.stamps_ns >= before_ns - 1_000_000).all()
    assert (batch.stamps_ns <= after_ns + 1_000_000).all()
    assert (np.diff(batch.stamps_ns) >= 0).all()
    assert receiver.receive().count == 0


def test_more_than_capacity_takes_several_receives(sockets: list[socket.socket]) -> None:
    tx, rx = _open(sockets, 2)
    receiver = Receiver(rx, capacity=16, datagram_bytes=32)
    packets = _table(40, 48)  # longer than the receive rows: truncated to them
    assert Sender(tx, packets, [rx.getsockname()] * 40).send(0, 40) == 40
    _wait_readable(rx)
    counts, firsts = [], []
    while (batch := receiver.receive()).count:
        counts.append(batch.count)
        firsts.extend(batch.data[:, :2].copy().view(">u2")[:, 0].tolist())
        assert (batch.lengths == 32).all()
        assert (batch.stamps_ns > 0).all()  # the room for control messages was restored
    assert counts == [16, 16, 8]
    assert firsts == list(range(40))


def test_an_empty_socket_gives_zero_not_an_exception(sockets: list[socket.socket]) -> None:
    (rx,) = _open(sockets, 1)
    rx.setblocking(True)  # MSG_DONTWAIT: a blocking socket does not block either
    batch = Receiver(rx).receive()
    assert batch.count == 0
    assert batch.data.shape == (0, 2048)
    assert batch.lengths.size == batch.ports.size == batch.stamps_ns.size == 0


def test_without_timestamps_the_stamps_are_zero(sockets: list[socket.socket]) -> None:
    tx, rx = _open(sockets, 2)
    receiver = Receiver(rx, timestamps=False)
    tx.sendto(b"x" * 12, rx.getsockname())
    _wait_readable(rx)
    batch = receiver.receive()
    assert batch.count == 1
    assert batch.stamps_ns.tolist() == [0]


class _ScriptedSendmmsg:
    """Stands in for libc's sendmmsg: each call sends at most the next scripted count, or fails."""

    def __init__(self, script: list[int | str]) -> None:
        self.script = script
        self.calls: list[int] = []

    def __call__(self, fd: int, msgvec: int, vlen: int, flags: int) -> int:
        self.calls.append(vlen)
        step = self.script.pop(0)
        if isinstance(step, str):
            ctypes.set_errno(getattr(errno, step))
            return -1
        return min(step, vlen)


def test_a_partial_send_is_continued(sockets: list[socket.socket], monkeypatch: pytest.MonkeyPatch) -> None:
    (tx,) = _open(sockets, 1)
    fake = _ScriptedSendmmsg([3, "EINTR", 4, 3])
    monkeypatch.setattr(mmsg, "_sendmmsg", fake)
    sender = Sender(tx, np.zeros((10, 8), np.uint8), [(LOOPBACK, 9)] * 10)
    assert sender.send(0, 10) == 10
    assert fake.calls == [10, 7, 7, 3]


def test_a_full_send_buffer_leaves_the_rest_unsent(sockets: list[socket.socket],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    (tx,) = _open(sockets, 1)
    # Loopback frees the send buffer as it delivers, so EAGAIN is scripted here.
    fake = _ScriptedSendmmsg([2, "EAGAIN", "EWOULDBLOCK"])
    monkeypatch.setattr(mmsg, "_sendmmsg", fake)
    sender = Sender(tx, np.zeros((10, 8), np.uint8), [(LOOPBACK, 9)] * 10)
    assert sender.send(4, 10) == 2
    assert sender.send(6, 10) == 0


def test_an_error_names_the_datagram_and_its_destination(sockets: list[socket.socket]) -> None:
    tx, rx = _open(sockets, 2)
    packets = _table(3, 16)
    sender = Sender(tx, packets, [rx.getsockname(), ("0.0.0.0", 0), rx.getsockname()])
    with pytest.raises(OSError, match=r"datagram 1 to 0\.0\.0\.0:0") as caught:
        sender.send(0, 3)
    assert caught.value.errno in (errno.EINVAL, errno.EDESTADDRREQ, errno.ENETUNREACH)
    _wait_readable(rx)
    assert rx.recv(64) == packets[0].tobytes()  # the one before the error went out


def test_bad_tables_are_refused(sockets: list[socket.socket]) -> None:
    (tx,) = _open(sockets, 1)
    with pytest.raises(ValueError, match="C-contiguous 2-D uint8"):
        Sender(tx, np.zeros((4, 8), np.int16), [(LOOPBACK, 9)] * 4)
    with pytest.raises(ValueError, match="C-contiguous 2-D uint8"):
        Sender(tx, np.zeros((4, 8), np.uint8)[:, :4], [(LOOPBACK, 9)] * 4)
    with pytest.raises(ValueError, match="3 destinations for 4 datagrams"):
        Sender(tx, np.zeros((4, 8), np.uint8), [(LOOPBACK, 9)] * 3)
    with pytest.raises(IndexError):
        Sender(tx, np.zeros((4, 8), np.uint8), [(LOOPBACK, 9)] * 4).send(2, 5)


# -- the load generator's packet table and matcher, which feed and read these batches


def _reference_packet(clips: list[bytes], i: int, k0: int, k: int) -> bytes:
    """Packet k of call i as the per-packet generator built it, one struct.pack at a time."""
    clip = clips[i % len(clips)]
    off = (k * FRAME + i * 8 * FRAME) % (len(clip) - FRAME)
    seq = (i * 31 + k0 + k) & 0xFFFF
    header = struct.pack("!BBHII", 0x80, 0x80 if k0 + k == 0 else 0, seq, ((k0 + k) * FRAME) & 0xFFFFFFFF, 0x10000 + i)
    return header + clip[off : off + FRAME]


@pytest.mark.parametrize("k0", [0, 65_530, 26_843_540])  # start, sequence wrap, timestamp wrap
def test_the_packet_table_matches_the_per_packet_layout(k0: int) -> None:
    rng = np.random.default_rng(3)
    clips = [rng.integers(0, 256, FRAME * frames, np.uint8).tobytes() for frames in (12, 20, 7)]
    table = _RtpTable(10, k0, clips)
    for k in range(30):
        table.fill(k, 0, 4)
        table.fill(k, 4, 10)
        for i in range(10):
            assert table.packets[i].tobytes() == _reference_packet(clips, i, k0, k), (k, i)


def _agent_batch(ports: list[int], rtp_ts: list[int], stamps_ns: list[int], length: int = 172) -> Received:
    data = np.zeros((len(ports), 2048), np.uint8)
    data[:, 4:8] = np.array(rtp_ts, ">u4").view(np.uint8).reshape(-1, 4)
    return Received(len(ports), data, np.full(len(ports), length), np.array(ports), np.zeros(len(ports), np.uint32),
                    np.array(stamps_ns, np.int64))


def test_the_matcher_learns_each_calls_base_and_keeps_it_across_steps() -> None:
    calls = [Call("a", 1000, 2000), Call("b", 1001, 2001)]
    ts0: dict[str, int] = {}
    first = _Matcher(calls, ts0, k0=0, k_total=5)
    # Call b's agent stream starts at 4 000 000 000: its timestamps wrap within the step.
    first.match(_agent_batch([2000, 2001, 2001, 2000], [500, 4_000_000_000, 4_000_000_160, 820], [11, 12, 13, 14]))
    assert first.recv_ns.tolist() == [[11, 12], [0, 13], [14, 0], [0, 0], [0, 0]]
    first.save()
    assert ts0 == {"a": 500, "b": 4_000_000_000}

    second = _Matcher(calls, ts0, k0=5, k_total=5)
    late_from_the_first_step = 4_000_000_000 + 4 * FRAME
    second.match(_agent_batch([2001, 2001, 2000], [late_from_the_first_step, (4_000_000_000 + 6 * FRAME) % 2**32,
                                                   500 + 9 * FRAME], [21, 22, 23]))
    assert second.recv_ns.tolist() == [[0, 0], [0, 22], [0, 0], [0, 0], [23, 0]]


def test_the_matcher_skips_strangers_and_runts_and_stamps_what_the_kernel_did_not() -> None:
    matcher = _Matcher([Call("a", 1000, 2000)], {}, k0=0, k_total=2)
    matcher.match(_agent_batch([2999], [0], [5]))  # an unknown port
    matcher.match(_agent_batch([2000], [0], [5], length=8))  # shorter than an RTP header
    assert matcher.recv_ns.tolist() == [[0], [0]]
    before_ns = time.time_ns()
    matcher.match(_agent_batch([2000], [0], [0]))
    assert matcher.recv_ns[0, 0] >= before_ns
