"""Datagram I/O of many sockets from compiled code: one call reads a pass, one call sends the quiet packets.

With a thousand calls the media pump moves 50 000 datagrams a second each way. Python
costs several microseconds per ``recvfrom``/``sendto`` (the call, a ``bytes`` and an
address tuple per datagram) on top of the system call itself, so the pump does its
socket work here, in Numba-compiled loops that call the C library directly
(``epoll_wait(2)``, ``recvfrom(2)``, ``sendto(2)``; errors read from ``errno``):

* :func:`receive` asks the pump's ``epoll`` set (level-triggered, each socket
  registered with its descriptor as the event data, as :class:`select.epoll` does) for
  ready sockets and reads one datagram from each into the next row of a
  :class:`Batch`, poll after poll, until nothing is ready, the polls are used up or the
  rows are full. A socket with more datagrams waiting is reported again by the next
  poll, so a pass takes a burst in order. Each row records the descriptor, length,
  source address (``struct sockaddr``, as the kernel wrote it), the lane slot when the
  socket's :class:`FdTable` row names one and the source is the one latched there,
  and the round: the n-th datagram of a socket in a pass is in round n.
* :func:`send_rows` sends rows of a datagram table, each to the descriptor and address
  of its slot in a :class:`Targets` table, and records each failure's ``errno``.

Everything else (which call a socket belongs to, what the datagrams mean) stays in
Python: :mod:`dtmfguard.transport.media` turns the rows that are not for a lane into
``bytes`` and address tuples (:meth:`Batch.datagram`) for the call's ordinary path.
Linux only (``epoll``). Under ``NUMBA_DISABLE_JIT=1`` the same loops run as Python over
``ctypes``, which the ``kernels`` test pass covers.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import socket
import struct
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import config, njit, types

__all__ = [
    "ADDR_BYTES",
    "ROW_BYTES",
    "Batch",
    "FdTable",
    "Targets",
    "decode_address",
    "encode_address",
    "receive",
    "send_rows",
]

ROW_BYTES = 2048 + 64
"""Bytes per received datagram: room for any audio packet (200 ms of G.711 is 1612).
The extra cache line keeps consecutive rows off the same cache sets. A longer datagram
is cut short by the kernel; its row keeps the full length (``MSG_TRUNC``) so the pump
can drop and count it."""

ADDR_BYTES = 32
"""Room for a ``struct sockaddr_in6`` (28 bytes) per address row."""

MSG_DONTWAIT = 0x40  # <bits/socket.h>
MSG_TRUNC = 0x20

# struct epoll_event is packed on x86-64 (12 bytes: u32 events, then the u64 data) and
# naturally aligned elsewhere (16 bytes, data at offset 8). The descriptor is the low
# 32 bits of the data.
_PACKED = platform.machine() in ("x86_64", "AMD64")
EVENT_BYTES = 12 if _PACKED else 16
_DATA_AT = 4 if _PACKED else 8

# Columns of Batch.ints.
FD, LENGTH, ADDR_LEN, SLOT, LANE, ROUND = range(6)
# Columns of FdTable.ints.
F_SLOT, F_LANE, F_SRC_LEN, F_SEEN = range(4)
# Columns of Targets.ints.
T_FD, T_ADDR_LEN = range(2)
_EAGAIN = errno.EAGAIN
_EINTR = errno.EINTR

# The C functions: ctypes objects without the compiler, Numba external functions with it.
epoll_wait: Any
recvfrom: Any
sendto: Any
_errno: Any

if getattr(config, "DISABLE_JIT", False):  # the loops below run as Python: the C library through ctypes
    _libc = ctypes.CDLL(None, use_errno=True)
    epoll_wait = _libc.epoll_wait
    epoll_wait.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    epoll_wait.restype = ctypes.c_int
    recvfrom = _libc.recvfrom
    recvfrom.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    recvfrom.restype = ctypes.c_ssize_t
    sendto = _libc.sendto
    sendto.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32]
    sendto.restype = ctypes.c_ssize_t
    _errno = ctypes.get_errno  # errno as it was right after the last call through ctypes

else:  # resolved by name in the process (the C library is loaded), so the kernels can be cached
    epoll_wait = types.ExternalFunction("epoll_wait", types.int32(types.int32, types.voidptr, types.int32, types.int32))
    recvfrom = types.ExternalFunction(
        "recvfrom", types.intp(types.int32, types.voidptr, types.uintp, types.int32, types.voidptr, types.voidptr),
    )
    sendto = types.ExternalFunction(
        "sendto", types.intp(types.int32, types.voidptr, types.uintp, types.int32, types.voidptr, types.uint32),
    )
    _errno_location = types.ExternalFunction("__errno_location", types.CPointer(types.int32)())

    @njit(cache=True)
    def _errno_compiled() -> int:  # pragma: no cover - compiled
        return _errno_location()[0]  # type: ignore[index]  # a C pointer to the thread's errno

    _errno = _errno_compiled


class Batch:
    """The datagrams of one pass: ``rows`` (uint8 ``(capacity, ROW_BYTES)``), ``addrs``
    (uint8 ``(capacity, ADDR_BYTES)``, the sources) and ``ints`` (int64 ``(capacity, 6)``:
    descriptor, length, address length, lane slot or -1, lane index or -1, round)."""

    __slots__ = ("rows", "addrs", "ints", "addr_lens", "events", "_names")

    def __init__(self, capacity: int, max_events: int) -> None:
        self.rows = np.zeros((capacity, ROW_BYTES), np.uint8)
        self.addrs = np.zeros((capacity, ADDR_BYTES), np.uint8)
        self.ints = np.zeros((capacity, 6), np.int64)
        self.addr_lens = np.zeros(capacity, np.uint32)  # socklen_t, written by the kernel
        self.events = np.zeros(max_events * EVENT_BYTES, np.uint8)
        self._names: dict[bytes, Any] = {}  # address bytes -> the tuple Python's socket module gives

    @property
    def capacity(self) -> int:
        return len(self.rows)

    def datagram(self, i: int) -> tuple[bytes, Any]:
        """Row ``i`` as ``recvfrom`` in Python returns it: ``(data, address)``."""
        raw = self.addrs[i, : self.ints[i, ADDR_LEN]].tobytes()
        name = self._names.get(raw)
        if name is None:
            if len(self._names) > 4096:
                self._names.clear()
            name = self._names[raw] = decode_address(raw)
        return self.rows[i, : self.ints[i, LENGTH]].tobytes(), name


class FdTable:
    """Per socket descriptor (row = descriptor): lane slot and index (-1 when none), and
    the latched source (``src``: ``struct sockaddr`` bytes) whose datagrams go to the lane."""

    __slots__ = ("ints", "src")

    def __init__(self, size: int = 1024) -> None:
        self.ints = np.full((size, 4), -1, np.int64)
        self.ints[:, F_SEEN] = 0
        self.src = np.zeros((size, ADDR_BYTES), np.uint8)

    def ensure(self, fd: int) -> None:
        """Make room for descriptor ``fd``."""
        size = len(self.ints)
        if fd >= size:
            new = max(fd + 1, 2 * size)
            ints = np.full((new, 4), -1, np.int64)
            ints[:, F_SEEN] = 0
            ints[:size] = self.ints
            src = np.zeros((new, ADDR_BYTES), np.uint8)
            src[:size] = self.src
            self.ints, self.src = ints, src

    def set_lane(self, fd: int, lane: int, slot: int, source: bytes) -> None:
        self.ensure(fd)
        self.ints[fd, F_SLOT] = slot
        self.ints[fd, F_LANE] = lane
        self.ints[fd, F_SRC_LEN] = len(source)
        self.src[fd, : len(source)] = np.frombuffer(source, np.uint8)

    def clear_lane(self, fd: int) -> None:
        if fd < len(self.ints):
            self.ints[fd, F_SLOT] = -1
            self.ints[fd, F_LANE] = -1
            self.ints[fd, F_SRC_LEN] = -1


class Targets:
    """Per lane slot: the descriptor and destination its packets are sent from and to."""

    __slots__ = ("ints", "addrs", "codes")

    def __init__(self, size: int = 64) -> None:
        self.ints = np.full((size, 2), -1, np.int64)
        self.addrs = np.zeros((size, ADDR_BYTES), np.uint8)
        self.codes = np.zeros(size, np.int64)  # scratch: errno per send row

    def set(self, slot: int, fd: int, destination: bytes) -> None:
        size = len(self.ints)
        if slot >= size:
            new = max(slot + 1, 2 * size)
            ints = np.full((new, 2), -1, np.int64)
            ints[:size] = self.ints
            addrs = np.zeros((new, ADDR_BYTES), np.uint8)
            addrs[:size] = self.addrs
            self.ints, self.addrs = ints, addrs
        self.ints[slot, T_FD] = fd
        self.ints[slot, T_ADDR_LEN] = len(destination)
        self.addrs[slot, : len(destination)] = np.frombuffer(destination, np.uint8)

    def clear(self, slot: int) -> None:
        if slot < len(self.ints):
            self.ints[slot, T_FD] = -1

    def scratch(self, n: int) -> npt.NDArray[np.int64]:
        if len(self.codes) < n:
            self.codes = np.zeros(max(n, 2 * len(self.codes)), np.int64)
        return self.codes


@njit(cache=True, boundscheck=False)
def receive(  # pragma: no cover - compiled; covered by the NUMBA_DISABLE_JIT run
    epfd: int,
    events: npt.NDArray[np.uint8],
    polls: int,
    rows: npt.NDArray[np.uint8],
    addrs: npt.NDArray[np.uint8],
    addr_lens: npt.NDArray[np.uint32],
    ints: npt.NDArray[np.int64],
    fd_ints: npt.NDArray[np.int64],
    fd_src: npt.NDArray[np.uint8],
) -> int:
    """Read up to ``polls`` polls of the ready sockets of epoll set ``epfd`` into the
    rows of a :class:`Batch` (see the module docstring); returns the rows filled.

    A failed read (other than ``EAGAIN``/``EINTR``) fills a row with length ``-errno``.
    ``fd_ints``/``fd_src``: the :class:`FdTable` arrays, which must have a row for every
    socket in the set (a descriptor beyond them has no lane and every datagram of it is
    in round 0).
    """
    capacity = rows.shape[0]
    max_events = events.shape[0] // EVENT_BYTES
    n = 0
    for _ in range(polls):
        room = capacity - n
        if room <= 0:
            break
        k = epoll_wait(epfd, events.ctypes, min(max_events, room), 0)
        if k <= 0:
            break
        for e in range(k):
            at = e * EVENT_BYTES + _DATA_AT
            fd = (
                int(events[at]) | (int(events[at + 1]) << 8) | (int(events[at + 2]) << 16)
                | (int(events[at + 3]) << 24)
            )
            addr_lens[n] = ADDR_BYTES
            r = recvfrom(fd, rows[n].ctypes, ROW_BYTES, MSG_DONTWAIT | MSG_TRUNC, addrs[n].ctypes, addr_lens[n:].ctypes)
            if r < 0:
                err = _errno()
                if err in (_EAGAIN, _EINTR):
                    continue
                r = -err
            alen = int(addr_lens[n]) if r >= 0 else 0
            ints[n, FD] = fd
            ints[n, LENGTH] = r
            ints[n, ADDR_LEN] = alen
            slot = -1
            lane = -1
            rnd = 0
            if fd < fd_ints.shape[0]:
                rnd = fd_ints[fd, F_SEEN]
                fd_ints[fd, F_SEEN] = rnd + 1
                if fd_ints[fd, F_SLOT] >= 0 and 0 <= r <= ROW_BYTES and alen == fd_ints[fd, F_SRC_LEN]:
                    same = True
                    for b in range(alen):
                        if addrs[n, b] != fd_src[fd, b]:
                            same = False
                            break
                    if same:
                        slot = fd_ints[fd, F_SLOT]
                        lane = fd_ints[fd, F_LANE]
            ints[n, SLOT] = slot
            ints[n, LANE] = lane
            ints[n, ROUND] = rnd
            n += 1
    for i in range(n):
        fd = ints[i, FD]
        if fd < fd_ints.shape[0]:
            fd_ints[fd, F_SEEN] = 0
    return n


@njit(cache=True, boundscheck=False)
def send_rows(  # pragma: no cover - compiled; covered by the NUMBA_DISABLE_JIT run
    out: npt.NDArray[np.uint8],
    sends: npt.NDArray[np.int64],
    n_sends: int,
    target_ints: npt.NDArray[np.int64],
    target_addrs: npt.NDArray[np.uint8],
    codes: npt.NDArray[np.int64],
) -> int:
    """Send row ``sends[k, 0]`` of ``out`` (all of it) from and to slot ``sends[k, 1]``'s
    target, for ``k < n_sends``; ``codes[k]`` is 0 or the ``errno`` of the failure
    (-1 for a slot with no target). Returns the number of failures."""
    size = out.shape[1]
    failed = 0
    for k in range(n_sends):
        row = sends[k, 0]
        slot = sends[k, 1]
        code = 0
        fd = target_ints[slot, T_FD] if slot < target_ints.shape[0] else -1
        if fd < 0:
            code = -1
        else:
            addr_len = target_ints[slot, T_ADDR_LEN]
            r = sendto(fd, out[row].ctypes, size, MSG_DONTWAIT, target_addrs[slot].ctypes, addr_len)
            if r < 0:
                code = _errno()
        codes[k] = code
        if code != 0:
            failed += 1
    return failed


def encode_address(family: int, address: Any) -> bytes | None:
    """``address`` (a Python socket address tuple with a numeric host) as a ``struct
    sockaddr`` of ``family``; None when it is not numeric or not of that family."""
    try:
        host, port = address[0], int(address[1])
        if not 0 <= port <= 0xFFFF:
            return None
        fam = family.to_bytes(2, "little" if _LITTLE else "big")
        if family == socket.AF_INET:
            return fam + struct.pack("!H", port) + socket.inet_pton(socket.AF_INET, host) + bytes(8)
        if family == socket.AF_INET6:
            flowinfo = int(address[2]) if len(address) > 2 else 0
            scope_id = int(address[3]) if len(address) > 3 else 0
            if "%" in host:
                host, _, scope = host.partition("%")
                scope_id = int(scope) if scope.isdigit() else socket.if_nametoindex(scope)
            packed = socket.inet_pton(socket.AF_INET6, host)
            return fam + struct.pack("!HI", port, flowinfo) + packed + struct.pack("=I", scope_id)
    except (OSError, ValueError, TypeError, IndexError):
        return None
    return None


def decode_address(raw: bytes) -> Any:
    """A ``struct sockaddr`` as the address tuple Python's socket module gives for it."""
    family = int.from_bytes(raw[:2], "little" if _LITTLE else "big")
    if family == socket.AF_INET and len(raw) >= 8:
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), struct.unpack("!H", raw[2:4])[0]
    if family == socket.AF_INET6 and len(raw) >= 28:
        port, flowinfo = struct.unpack("!HI", raw[2:8])
        (scope_id,) = struct.unpack("=I", raw[24:28])
        host = socket.inet_ntop(socket.AF_INET6, raw[8:24])
        if scope_id:
            try:
                host = f"{host}%{socket.if_indextoname(scope_id)}"
            except OSError:
                host = f"{host}%{scope_id}"
        return host, port, flowinfo, scope_id
    return None


_LITTLE = struct.pack("=H", 1) == b"\x01\x00"


def warmup() -> None:
    """Compile both kernels (an empty epoll set, nothing to send)."""
    import select

    batch = Batch(1, 1)
    table = FdTable(1)
    with select.epoll() as ep:
        receive(
            ep.fileno(), batch.events, 1, batch.rows, batch.addrs, batch.addr_lens, batch.ints, table.ints, table.src,
        )
    targets = Targets(1)
    send_rows(np.zeros((1, 172), np.uint8), np.zeros((1, 2), np.int64), 0, targets.ints, targets.addrs, targets.codes)
