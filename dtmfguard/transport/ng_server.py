"""The NG control socket: rtpengine's NG protocol over UDP, bytes in and bytes out.

One datagram is one request, ``COOKIE SP PAYLOAD``; the reply goes back to the sender
with the same cookie (:mod:`dtmfguard.protocol.ng` does the framing). This module only
moves bytes and keeps three promises a SIP proxy relies on:

- a retransmitted request (same source, same cookie) is answered from a
  :class:`~dtmfguard.protocol.ng.ReplyCache` and never acted on twice, also while the
  first copy is still being handled (the copy is dropped and counted; the one reply
  answers both);
- a datagram that cannot be parsed is answered with an ``error`` reply when a cookie
  can be read from it, and otherwise dropped and counted: without a cookie a reply
  could not be matched to anything;
- nothing a peer sends stops the server: every failure is counted and logged.

Requests are handled concurrently up to ``max_in_flight``; beyond that new requests
are dropped and counted (the client retransmits), so a flood cannot queue without
bound. The command semantics live in :mod:`dtmfguard.control.commands`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from structlog.typing import FilteringBoundLogger

from dtmfguard.errors import ProtocolError
from dtmfguard.log import get_logger
from dtmfguard.protocol.ng import (
    MAX_COOKIE_BYTES,
    MAX_DATAGRAM_BYTES,
    NgRequest,
    ReplyCache,
    error_reply,
    parse_request,
    serialize_reply,
)

__all__ = ["Handler", "NgServer", "NgServerStats", "salvage_cookie", "start_ng_server", "stats_dict"]

Address = Any  # what asyncio reports as a datagram's source: (host, port) or (host, port, flow, scope)
#: ``handler(body, now_s=..., source=...) -> reply body``; must not raise (errors are replies).
Handler = Callable[..., Awaitable[dict[str, Any]]]

DEFAULT_MAX_IN_FLIGHT = 256
INTERNAL_ERROR = "Internal error"


def _log() -> FilteringBoundLogger:
    return get_logger(component="ng")


def salvage_cookie(datagram: bytes) -> tuple[bytes, bool] | None:
    """The cookie of a datagram that failed to parse, and whether its payload is JSON.

    Returns None when no well-formed cookie (printable ASCII, at most
    :data:`~dtmfguard.protocol.ng.MAX_COOKIE_BYTES`, followed by a space) can be read.
    """
    space = datagram.find(b" ", 0, MAX_COOKIE_BYTES + 1)
    if space <= 0:
        return None
    cookie = bytes(datagram[:space])
    if not all(0x21 <= byte <= 0x7E for byte in cookie):
        return None
    return cookie, datagram[space + 1 : space + 2] == b"{"


@dataclass
class NgServerStats:
    """Counters of the control socket (exported as metrics, checked by tests)."""

    received: int = 0
    replied: int = 0
    from_cache: int = 0
    duplicates_in_flight: int = 0
    malformed: int = 0
    oversized: int = 0
    dropped: int = 0
    overloaded: int = 0
    handler_errors: int = 0
    send_errors: int = 0


class NgServer(asyncio.DatagramProtocol):
    """asyncio datagram protocol serving NG requests with ``handler``.

    ``clock`` (monotonic seconds) stamps the reply cache and is passed to the handler
    as ``now_s``. ``max_datagram_bytes`` may be set below the protocol's 64 KiB limit.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        clock: Callable[[], float] = time.monotonic,
        cache: ReplyCache | None = None,
        max_datagram_bytes: int = MAX_DATAGRAM_BYTES,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        if max_in_flight <= 0:
            raise ValueError("max_in_flight must be positive")
        self._handler = handler
        self._clock = clock
        self.cache = cache if cache is not None else ReplyCache()
        self.max_datagram_bytes = min(max_datagram_bytes, MAX_DATAGRAM_BYTES)
        self.max_in_flight = max_in_flight
        self.stats = NgServerStats()
        self._transport: asyncio.DatagramTransport | None = None
        self._in_flight: dict[tuple[Address, bytes], asyncio.Task[None]] = {}
        self._closed = asyncio.Event()

    # ----------------------------------------------------------------------- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's selector transport does not derive from DatagramTransport; it has its methods.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._closed.set()

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a client that went away: nothing to do but note it.
        self.stats.send_errors += 1
        _log().debug("ng socket error", error=str(exc))

    def datagram_received(self, data: bytes, addr: Address) -> None:
        try:
            self._receive(data, addr)
        except Exception:
            # Never let one datagram end the protocol (asyncio would log and carry on, but
            # the count and our own log line are what operators look at).
            self.stats.handler_errors += 1
            _log().exception("ng datagram failed", source=_show(addr))

    # ----------------------------------------------------------------------- request path

    def _receive(self, data: bytes, addr: Address) -> None:
        self.stats.received += 1
        now_s = self._clock()
        if len(data) > self.max_datagram_bytes:
            self.stats.oversized += 1
            reason = f"ng: datagram of {len(data)} bytes exceeds the limit of {self.max_datagram_bytes} bytes"
            self._refuse(data, addr, reason)
            return
        try:
            request = parse_request(data)
        except ProtocolError as exc:
            self.stats.malformed += 1
            self._refuse(data, addr, str(exc))
            return
        cached = self.cache.get(addr, request.cookie, now_s)
        if cached is not None:
            self.stats.from_cache += 1
            self._send(cached, addr)
            return
        key = (addr, request.cookie)
        if key in self._in_flight:
            self.stats.duplicates_in_flight += 1
            return
        if len(self._in_flight) >= self.max_in_flight:
            self.stats.overloaded += 1
            return
        task = asyncio.get_running_loop().create_task(self._serve(request, addr, now_s))
        self._in_flight[key] = task
        task.add_done_callback(lambda _task: self._in_flight.pop(key, None))

    def _refuse(self, data: bytes, addr: Address, reason: str) -> None:
        salvaged = salvage_cookie(data)
        if salvaged is None:
            self.stats.dropped += 1
            _log().info("ng datagram dropped", source=_show(addr), reason=reason, size=len(data))
            return
        cookie, is_json = salvaged
        _log().info("ng request refused", source=_show(addr), reason=reason)
        # Not cached: a malformed datagram costs no work to refuse again.
        self._send(serialize_reply(cookie, error_reply(reason), is_json), addr)

    async def _serve(self, request: NgRequest, addr: Address, now_s: float) -> None:
        try:
            body = await self._handler(request.body, now_s=now_s, source=addr)
            reply = serialize_reply(request.cookie, body, request.json)
        except Exception:
            self.stats.handler_errors += 1
            _log().exception("ng handler failed", source=_show(addr))
            reply = serialize_reply(request.cookie, error_reply(INTERNAL_ERROR), request.json)
        self.cache.put(addr, request.cookie, reply, self._clock())
        self._send(reply, addr)

    def _send(self, reply: bytes, addr: Address) -> None:
        if self._transport is None:
            self.stats.send_errors += 1
            return
        try:
            self._transport.sendto(reply, addr)
        except OSError as exc:  # a reply larger than a datagram, or the route went away
            self.stats.send_errors += 1
            _log().warning("ng reply not sent", source=_show(addr), size=len(reply), error=str(exc))
            return
        self.stats.replied += 1

    # ----------------------------------------------------------------------- lifecycle

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``; useful when listening on port 0."""
        if self._transport is None:
            raise RuntimeError("the NG server is not listening")
        sockname = self._transport.get_extra_info("sockname")
        return sockname[0], sockname[1]

    async def drain(self) -> None:
        """Wait for the requests being handled to be answered."""
        while self._in_flight:
            await asyncio.gather(*list(self._in_flight.values()), return_exceptions=True)

    async def close(self) -> None:
        """Answer the requests in flight, then close the socket."""
        await self.drain()
        if self._transport is not None:
            self._transport.close()
            await self._closed.wait()


def _show(addr: Address) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(addr)


async def start_ng_server(
    handler: Handler,
    host: str,
    port: int,
    **options: Any,
) -> NgServer:
    """Bind ``host:port`` (port 0: any free port) and serve NG requests with ``handler``.

    ``options`` go to :class:`NgServer`. Raises OSError when the address cannot be bound.
    """
    loop = asyncio.get_running_loop()
    server = NgServer(handler, **options)
    await loop.create_datagram_endpoint(lambda: server, local_addr=(host, port))
    return server


def stats_dict(stats: NgServerStats) -> Mapping[str, int]:
    """The counters as a plain mapping (for logs and metrics)."""
    return dict(vars(stats))
