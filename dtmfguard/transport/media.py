"""The sockets of one call: asyncio UDP endpoints that pump datagrams through its CallMedia.

Each leg of a call has a local RTP port and the RTCP port above it (RFC 3550 section
11). :class:`MediaRelay` binds the four sockets, hands every datagram that arrives,
with the time it arrived, to :class:`~dtmfguard.control.media.CallMedia` (RTP to
``on_rtp``, RTCP to ``on_rtcp``) and sends what comes back from the same kind of
socket of the leg it names. There is no queue between receiving and sending: a packet
is processed inside ``datagram_received``, so the kernel's socket receive buffer is the
only queue on the way in (when it is full the kernel drops, and the loss shows up in
the peer's RTCP and in our concealment counters). On the way out, asyncio would buffer
without bound when a socket cannot take more; a datagram is dropped and counted
instead once ``MAX_SEND_BUFFER_BYTES`` are waiting.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

from dtmfguard.control.media import CallMedia
from dtmfguard.log import get_logger

__all__ = ["MAX_SEND_BUFFER_BYTES", "MediaRelay"]

MAX_SEND_BUFFER_BYTES = 64 * 1024
"""Bytes a socket may hold back (the OS would block) before further datagrams are dropped."""


class _LegSocket(asyncio.DatagramProtocol):
    """One bound port: forwards what it receives to the relay."""

    def __init__(self, relay: MediaRelay, leg: str, rtcp: bool) -> None:
        self._relay = relay
        self._leg = leg
        self._rtcp = rtcp

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._relay._received(self._leg, self._rtcp, data, addr)

    def error_received(self, exc: Exception) -> None:
        # E.g. ICMP port unreachable for an earlier send: the peer is not listening yet.
        self._relay.socket_errors += 1


class MediaRelay:
    """The RTP and RTCP sockets of both legs of one call.

    Open with :meth:`open`; :meth:`close` closes the sockets (and leaves the
    :class:`CallMedia` to its owner, who closes it for the call's summary).
    """

    def __init__(self, media: CallMedia, clock: Callable[[], float]) -> None:
        self.media = media
        self._clock = clock
        self._sockets: dict[tuple[str, bool], asyncio.DatagramTransport] = {}
        self.socket_errors = 0
        self.send_dropped = 0
        self.engine_errors = 0
        self._closed = False
        self._log = get_logger(call_id=media.call_id)

    @classmethod
    async def open(
        cls,
        media: CallMedia,
        interface: str,
        ports: dict[str, tuple[int, int]],
        *,
        clock: Callable[[], float] | None = None,
    ) -> MediaRelay:
        """Bind ``interface`` at each leg's ``(rtp_port, rtcp_port)`` and start relaying.

        ``clock`` gives the arrival time passed to ``media`` (default: the event loop's
        monotonic clock). Raises :class:`OSError` when a port cannot be bound; the ports
        bound so far are closed again.
        """
        loop = asyncio.get_running_loop()
        relay = cls(media, clock or loop.time)
        try:
            for leg, (rtp_port, rtcp_port) in ports.items():
                for port, rtcp in ((rtp_port, False), (rtcp_port, True)):
                    transport, _ = await loop.create_datagram_endpoint(
                        functools.partial(_LegSocket, relay, leg, rtcp),
                        local_addr=(interface, port),
                    )
                    relay._sockets[(leg, rtcp)] = transport
        except BaseException:
            await relay.close()
            raise
        return relay

    def local_address(self, leg: str, *, rtcp: bool = False) -> tuple[str, int]:
        """The ``(host, port)`` a leg's RTP (or RTCP) socket is bound to."""
        sockname = self._sockets[(leg, rtcp)].get_extra_info("sockname")
        return sockname[0], sockname[1]

    def _received(self, leg: str, rtcp: bool, data: bytes, addr: Any) -> None:
        if self._closed:
            return
        now_s = self._clock()
        handle = self.media.on_rtcp if rtcp else self.media.on_rtp
        try:
            out = handle(leg, data, addr, now_s)
        except Exception as exc:
            # CallMedia does not raise on bad input; if it ever does, drop this
            # datagram and keep the call (and the event loop) running.
            self.engine_errors += 1
            if self.engine_errors == 1:
                self._log.error("media engine failed on a packet", error=type(exc).__name__)
            return
        for out_leg, datagram, destination in out:
            transport = self._sockets.get((out_leg, rtcp))
            if transport is None or transport.is_closing():
                continue
            # asyncio's datagram transports have the flow-control size; typeshed omits it.
            if transport.get_write_buffer_size() > MAX_SEND_BUFFER_BYTES:  # type: ignore[attr-defined]
                self.send_dropped += 1
                continue
            transport.sendto(datagram, destination)

    async def close(self) -> None:
        """Close every socket of the call. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for transport in self._sockets.values():
            transport.close()
        # Let the transports finish closing (their callbacks run on the next loop pass).
        await asyncio.sleep(0)
