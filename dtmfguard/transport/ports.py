"""RTP/RTCP port pairs for relayed calls (RFC 3550 section 11).

Each leg of a call gets an even RTP port and the odd port above it for RTCP, taken
from ``[media] port_min..port_max`` on ``[media] interface``. :class:`PortPool` only
keeps the books: which pairs are free and which are lent out; the sockets are bound
by :mod:`dtmfguard.transport.media`. Pairs are handed out in rotation (a released pair
goes to the back of the line), so a late packet of an ended call is unlikely to reach
the next call that uses the same ports. When binding a pair fails because another
program holds one of its ports, release the pair and allocate the next one.
"""

from __future__ import annotations

from collections import deque

from dtmfguard.errors import DtmfguardError

__all__ = ["PortPool", "PortsExhausted"]


class PortsExhausted(DtmfguardError):
    """Every RTP/RTCP port pair of the pool is in use."""


class PortPool:
    """Even/odd port pairs in ``[port_min, port_max]`` (both inclusive).

    Raises :class:`ValueError` when the range holds no pair.
    """

    def __init__(self, interface: str, port_min: int, port_max: int) -> None:
        first = port_min + (port_min % 2)  # RTP takes the even port of a pair
        if not 0 < first < first + 1 <= port_max <= 65535:
            raise ValueError(f"port range {port_min}-{port_max} holds no even/odd port pair")
        self.interface = interface
        self.port_min = port_min
        self.port_max = port_max
        self._free: deque[int] = deque(range(first, port_max, 2))
        self._used: set[int] = set()

    @property
    def capacity(self) -> int:
        """Number of pairs in the pool."""
        return len(self._free) + len(self._used)

    @property
    def in_use(self) -> int:
        """Number of pairs lent out."""
        return len(self._used)

    def allocate_pair(self) -> tuple[int, int]:
        """Lend a free pair ``(rtp_port, rtcp_port)``; raises :class:`PortsExhausted`."""
        if not self._free:
            raise PortsExhausted("Ran out of ports")
        rtp_port = self._free.popleft()
        self._used.add(rtp_port)
        return rtp_port, rtp_port + 1

    def release_pair(self, rtp_port: int) -> None:
        """Return the pair of ``rtp_port``; releasing a pair that is not lent out does nothing."""
        if rtp_port in self._used:
            self._used.remove(rtp_port)
            self._free.append(rtp_port)
