"""Batched UDP I/O for the load generator: many IPv4 datagrams per system call, via ctypes.

Linux only. :class:`Sender` sends rows of a caller-owned datagram table, each row to its
own destination, with one ``sendmmsg(2)``; :class:`Receiver` receives up to ``capacity``
datagrams with one ``recvmmsg(2)`` into a preallocated ``(capacity, datagram_bytes)``
uint8 table, with their lengths, source addresses and kernel receive timestamps
(``SO_TIMESTAMPNS``, ``socket(7)``; delivered as ``SCM_TIMESTAMPNS`` control messages,
``cmsg(3)``). The C structures (``struct mmsghdr``, ``msghdr`` and ``iovec`` from
``recvmmsg(2)``/``recvmsg(2)``, ``sockaddr_in`` from ``ip(7)``, ``cmsghdr`` and
``timespec``) are declared once as ctypes Structures, which give the platform's layout,
and stored as NumPy structured arrays of that layout, filled once per table, so a batch
costs one foreign call plus a few vector operations. Both calls use ``MSG_DONTWAIT``:
a full send buffer or an empty receive queue (``EAGAIN``) is a count, not an exception.
Kernel timestamps are ``CLOCK_REALTIME``: compare them with :func:`time.time_ns`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Received", "Receiver", "Sender"]

MSG_DONTWAIT = 0x40  # <bits/socket.h>
# SO_TIMESTAMPNS is SO_TIMESTAMPNS_OLD (35) on the generic and x86 ABIs, with a timespec of
# two longs; Python's socket module does not export it.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SCM_TIMESTAMPNS = SO_TIMESTAMPNS


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),  # socklen_t
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


class _SockAddrIn(ctypes.Structure):
    _fields_ = [
        ("sin_family", ctypes.c_ushort),
        ("sin_port", ctypes.c_uint16),  # network byte order
        ("sin_addr", ctypes.c_uint32),  # network byte order
        ("sin_zero", ctypes.c_uint8 * 8),
    ]


class _CMsgHdr(ctypes.Structure):
    _fields_ = [("cmsg_len", ctypes.c_size_t), ("cmsg_level", ctypes.c_int), ("cmsg_type", ctypes.c_int)]


class _TimeSpec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _cmsg_align(n: int) -> int:
    word = ctypes.sizeof(ctypes.c_size_t)
    return (n + word - 1) & ~(word - 1)


_CMSG_DATA = _cmsg_align(ctypes.sizeof(_CMsgHdr))  # CMSG_DATA offset
_CMSG_TIMESTAMP_LEN = _CMSG_DATA + ctypes.sizeof(_TimeSpec)  # CMSG_LEN(sizeof(struct timespec))
# Room for the timestamp and one more control message, should another option be on.
_CONTROL_BYTES = 2 * (_CMSG_DATA + _cmsg_align(ctypes.sizeof(_TimeSpec)))


def _native(ctype: Any) -> np.dtype:
    """The NumPy scalar type of a ctypes integer or pointer type (same size, same signedness)."""
    size = ctypes.sizeof(ctype)
    signed = ctype in (ctypes.c_int, ctypes.c_long, ctypes.c_short, ctypes.c_longlong, ctypes.c_byte)
    return np.dtype(f"{'i' if signed else 'u'}{size}")


def _flat_fields(struct: type[ctypes.Structure], base: int = 0, **big_endian: bool) -> dict[str, tuple[np.dtype, int]]:
    """Field name -> (dtype, offset) for ``struct``'s scalar fields, nested structures flattened."""
    fields: dict[str, tuple[np.dtype, int]] = {}
    for name, ctype, *_ in struct._fields_:
        offset = base + getattr(struct, name).offset
        if isinstance(ctype, type) and issubclass(ctype, ctypes.Structure):
            fields.update(_flat_fields(ctype, offset, **big_endian))
        elif hasattr(ctype, "_length_"):  # an array (sin_zero): raw bytes
            fields[name] = (np.dtype((np.uint8, ctypes.sizeof(ctype))), offset)
        else:
            dtype = _native(ctype)
            fields[name] = (dtype.newbyteorder(">") if big_endian.get(name) else dtype, offset)
    return fields


def _structured(struct: type[ctypes.Structure], **big_endian: bool) -> np.dtype:
    fields = _flat_fields(struct, **big_endian)
    return np.dtype({
        "names": list(fields),
        "formats": [f for f, _ in fields.values()],
        "offsets": [o for _, o in fields.values()],
        "itemsize": ctypes.sizeof(struct),
    })


_MMSGHDR = _structured(_MMsgHdr)
_IOVEC = _structured(_IoVec)
_SOCKADDR_IN = _structured(_SockAddrIn, sin_port=True, sin_addr=True)
# One control buffer: the first cmsghdr and, after it, the timespec of SCM_TIMESTAMPNS.
_CONTROL = np.dtype({
    "names": ["cmsg_len", "cmsg_level", "cmsg_type", "tv_sec", "tv_nsec"],
    "formats": [_native(ctypes.c_size_t), np.intc, np.intc, _native(ctypes.c_long), _native(ctypes.c_long)],
    "offsets": [_CMsgHdr.cmsg_len.offset, _CMsgHdr.cmsg_level.offset, _CMsgHdr.cmsg_type.offset,
                _CMSG_DATA + _TimeSpec.tv_sec.offset, _CMSG_DATA + _TimeSpec.tv_nsec.offset],
    "itemsize": _CONTROL_BYTES,
})

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_sendmmsg = _libc.sendmmsg
_sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
_sendmmsg.restype = ctypes.c_int
_recvmmsg = _libc.recvmmsg
_recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
_recvmmsg.restype = ctypes.c_int


def _address(array: np.ndarray) -> int:
    return int(array.ctypes.data)


def _rows(array: np.ndarray) -> np.ndarray:
    """The address of each row of a C-contiguous array, as uintp."""
    return _address(array) + np.arange(len(array), dtype=np.uintp) * np.uintp(array.strides[0])


def _sockaddrs(destinations: Sequence[tuple[str, int]]) -> np.ndarray:
    out = np.zeros(len(destinations), _SOCKADDR_IN)
    out["sin_family"] = socket.AF_INET
    hosts = {host: int.from_bytes(socket.inet_aton(host), "big") for host in {h for h, _ in destinations}}
    out["sin_addr"] = [hosts[h] for h, _ in destinations]
    out["sin_port"] = [p for _, p in destinations]
    return out


class Sender:
    """Send rows of a datagram table with ``sendmmsg(2)``: row ``i`` goes to ``destinations[i]``.

    ``datagrams`` is a C-contiguous ``(M, L)`` uint8 array the caller owns and may rewrite
    between sends (the kernel reads it during :meth:`send`); row ``i`` is sent as its first
    ``lengths[i]`` bytes (all ``L`` by default). ``destinations`` are ``M`` IPv4
    ``(host, port)`` pairs. The message table is built once here.
    """

    def __init__(self, sock: socket.socket, datagrams: np.ndarray, destinations: Sequence[tuple[str, int]],
                 lengths: np.ndarray | None = None) -> None:
        if datagrams.dtype != np.uint8 or datagrams.ndim != 2 or not datagrams.flags.c_contiguous:
            raise ValueError("datagrams must be a C-contiguous 2-D uint8 array")
        if len(destinations) != len(datagrams):
            raise ValueError(f"{len(destinations)} destinations for {len(datagrams)} datagrams")
        m = len(datagrams)
        self._sock = sock
        self._datagrams = datagrams  # kept alive: the table points into it
        self._addrs = _sockaddrs(destinations)
        self._iov = np.zeros(m, _IOVEC)
        self._iov["iov_base"] = _rows(datagrams)
        self._iov["iov_len"] = datagrams.shape[1] if lengths is None else lengths
        self._msgs = np.zeros(m, _MMSGHDR)
        self._msgs["msg_name"] = _rows(self._addrs)
        self._msgs["msg_namelen"] = _SOCKADDR_IN.itemsize
        self._msgs["msg_iov"] = _rows(self._iov)
        self._msgs["msg_iovlen"] = 1
        self._base = _address(self._msgs)
        self._size = _MMSGHDR.itemsize
        self._destinations = destinations

    def __len__(self) -> int:
        return len(self._msgs)

    def send(self, start: int, stop: int) -> int:
        """Send rows ``start`` to ``stop - 1`` in order; the number sent, counted from ``start``.

        Fewer than asked when the send buffer fills (``EAGAIN``): the rest were not sent.
        A partial send (``sendmmsg`` may stop early) is continued. Raises ``OSError``, naming
        the datagram and its destination, on any other error.
        """
        if not 0 <= start <= stop <= len(self._msgs):
            raise IndexError(f"rows {start}:{stop} of {len(self._msgs)}")
        fd = self._sock.fileno()
        done = start
        while done < stop:
            sent = _sendmmsg(fd, self._base + done * self._size, stop - done, MSG_DONTWAIT)
            if sent > 0:
                done += sent
                continue
            code = ctypes.get_errno() if sent < 0 else 0
            if code == errno.EINTR:
                continue
            if sent == 0 or code in (errno.EAGAIN, errno.EWOULDBLOCK):
                break
            host, port = self._destinations[done]
            raise OSError(code, f"sendmmsg: datagram {done} to {host}:{port}: {os.strerror(code)}")
        return done - start


@dataclass(slots=True)
class Received:
    """One :meth:`Receiver.receive` batch; views valid until the next receive.

    ``data`` is ``(count, datagram_bytes)`` uint8 (bytes past ``lengths[i]`` are stale);
    ``lengths`` the bytes received per datagram, uint32 (a datagram longer than the row is
    truncated to it); ``ports`` the source UDP ports, big-endian uint16; ``hosts`` the
    source IPv4 addresses, big-endian uint32; ``stamps_ns`` the kernel receive times in
    ``CLOCK_REALTIME`` ns, int64 (0 where the datagram came without one).
    """

    count: int
    data: np.ndarray
    lengths: np.ndarray
    ports: np.ndarray
    hosts: np.ndarray
    stamps_ns: np.ndarray


class Receiver:
    """Receive up to ``capacity`` datagrams per ``recvmmsg(2)`` into preallocated tables.

    Turns ``SO_TIMESTAMPNS`` on for ``sock`` (IPv4 UDP) unless ``timestamps`` is false.
    """

    def __init__(self, sock: socket.socket, capacity: int = 256, datagram_bytes: int = 2048,
                 timestamps: bool = True) -> None:
        if capacity < 1 or datagram_bytes < 1:
            raise ValueError("capacity and datagram_bytes must be positive")
        if timestamps:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._sock = sock
        self.capacity = capacity
        self.data = np.zeros((capacity, datagram_bytes), np.uint8)
        self._addrs = np.zeros(capacity, _SOCKADDR_IN)
        self._control = np.zeros(capacity, _CONTROL)
        self._iov = np.zeros(capacity, _IOVEC)
        self._iov["iov_base"] = _rows(self.data)
        self._iov["iov_len"] = datagram_bytes
        self._msgs = np.zeros(capacity, _MMSGHDR)
        self._msgs["msg_name"] = _rows(self._addrs)
        self._msgs["msg_namelen"] = _SOCKADDR_IN.itemsize
        self._msgs["msg_iov"] = _rows(self._iov)
        self._msgs["msg_iovlen"] = 1
        self._msgs["msg_control"] = _rows(self._control)
        self._msgs["msg_controllen"] = _CONTROL_BYTES
        self._base = _address(self._msgs)
        self._stamps_ns = np.zeros(capacity, np.int64)

    def receive(self) -> Received:
        """What is queued, up to ``capacity`` datagrams; a count of 0 when nothing is (``EAGAIN``).

        Raises ``OSError`` on any other error (a pending ICMP error on a connected socket,
        for one).
        """
        while True:
            got = _recvmmsg(self._sock.fileno(), self._base, self.capacity, MSG_DONTWAIT, None)
            if got >= 0:
                break
            code = ctypes.get_errno()
            if code == errno.EINTR:
                continue
            if code in (errno.EAGAIN, errno.EWOULDBLOCK):
                got = 0
                break
            raise OSError(code, f"recvmmsg: {os.strerror(code)}")
        msgs = self._msgs[:got]
        control = self._control[:got]
        stamps = self._stamps_ns[:got]
        np.multiply(control["tv_sec"], 1_000_000_000, out=stamps)
        stamps += control["tv_nsec"]
        # The timestamp comes first (the socket layer's control messages precede the IP
        # layer's); anything else there means this datagram has none.
        stamped = msgs["msg_controllen"] >= _CMSG_TIMESTAMP_LEN
        stamped &= control["cmsg_level"] == socket.SOL_SOCKET
        stamped &= control["cmsg_type"] == SCM_TIMESTAMPNS
        if not stamped.all():
            stamps[~stamped] = 0
        # The kernel rewrote these two lengths: restore the room for the next call.
        msgs["msg_namelen"] = _SOCKADDR_IN.itemsize
        msgs["msg_controllen"] = _CONTROL_BYTES
        return Received(got, self.data[:got], msgs["msg_len"], self._addrs["sin_port"][:got],
                        self._addrs["sin_addr"][:got], stamps)
