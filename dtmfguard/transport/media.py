"""The sockets of every call: one epoll set read in batches, datagrams pumped through CallMedia.

Each leg of a call has a local RTP port and the RTCP port above it (RFC 3550 section
11). :class:`MediaRelay` binds the four sockets of a call (non-blocking, plain
``socket`` objects) and adds them to the process's :class:`MediaPump`: one
``epoll`` set (epoll(7), level-triggered) whose descriptor the asyncio loop watches.
When any media socket is readable the pump reads one datagram from each ready socket
(``MAX_EVENTS`` at most per pass; a socket with more left is reported again on the
next pass), hands it with its arrival time to
:class:`~dtmfguard.control.media.CallMedia` (RTP to ``on_rtp``, RTCP to ``on_rtcp``)
and sends what comes back from the same kind of socket of the leg it names. There is
no queue between receiving and sending: the kernel's socket receive buffer is the only
queue on the way in (when it is full the kernel drops, and the loss shows in the peer's
RTCP and in our concealment counters), and on the way out a datagram the kernel's send
buffer cannot take is dropped and counted (``send_dropped``), never buffered.

Batched calls (their :class:`CallMedia` shares a
:class:`~dtmfguard.pipeline.batch.DetectorBank`) are relayed with a
:class:`MediaTicker` and its :class:`~dtmfguard.control.lane.QuietLane`:

* A call whose caller stream is in the quiet lane (nothing open in its detector or
  masker; see :mod:`dtmfguard.control.lane`) has its caller datagrams from the latched
  source held for the lane. When the hold ends (``HOLD_S`` after the first datagram
  held, or ``MAX_HELD`` datagrams), the lane checks, decodes and detects them in one
  batch per round (a stream's second datagram held, after a delay, is in the second
  round, and so on: one frame per stream per kernel run); the pump sends each quiet
  packet it built from the agent leg's socket, and hands each datagram that falls
  back to the call's :class:`CallMedia` in arrival order (the call leaves the lane).
* Every other datagram goes to :class:`CallMedia` at once; caller audio is queued on
  its bank channel, and at the end of the hold the ticker runs the bank once for all
  of it, then each such call sends what it masked and, if it is quiet again, enters
  the lane.

Under load a hold gathers many packets (one kernel run serves them all); when idle it
gathers one, so a packet waits at most ``HOLD_S`` plus the processing. The ticker's
own ``TICK_S`` timer is a safety net that runs the bank if audio was queued outside a
pass. Media time still comes from RTP timestamps, never from the hold.
"""


from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import time
import weakref
from collections.abc import Callable
from typing import Any

from dtmfguard.control.lane import QuietLane
from dtmfguard.control.media import CallMedia
from dtmfguard.kernels.packets import DATAGRAM_BYTES
from dtmfguard.log import get_logger
from dtmfguard.pipeline.batch import DetectorBank

__all__ = ["MAX_DATAGRAM_BYTES", "MAX_EVENTS", "TICK_S", "MediaPump", "MediaRelay", "MediaTicker"]

TICK_S = 0.005
"""How often a :class:`MediaTicker`'s safety-net timer runs the bank if packets wait."""

MAX_EVENTS = 1024
"""Ready sockets read per poll of the pump."""

MAX_POLLS = 8
"""Polls per event-loop pass while datagrams keep arriving."""

HOLD_S = 0.001
"""Batched audio (quiet lanes, banks) waits at most this long for others to share its kernel run."""

MAX_HELD = 512
"""Datagrams held for the lanes at most; more run at once."""

MAX_DATAGRAM_BYTES = 65536
"""Receive size: any UDP datagram arrives whole (the RTP parser rejects what is too big)."""

_RECEIVE_BUFFER_BYTES = 256 * 1024


class _Endpoint:
    """One bound port of a call, as the pump sees it."""

    __slots__ = ("sock", "relay", "leg", "rtcp", "lane", "lane_slot", "lane_source", "held")

    def __init__(self, sock: socket.socket, relay: MediaRelay, leg: str, rtcp: bool) -> None:
        self.sock = sock
        self.relay = relay
        self.leg = leg
        self.rtcp = rtcp
        # Set while the call's caller stream is in a quiet lane (caller RTP port only):
        # datagrams from the latched source go to the lane.
        self.lane: QuietLane | None = None
        self.lane_slot = -1
        self.lane_source: tuple[str, int] | None = None
        self.held = 0  # datagrams of this port held by the pump right now


class MediaPump:
    """Every media socket of one event loop in one epoll set; see the module docstring.

    :meth:`for_loop` gives the loop's pump (made on first use). The loop watches the
    epoll descriptor only while the pump has sockets.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._epoll = select.epoll()
        self._endpoints: dict[int, _Endpoint] = {}
        self._tickers: dict[MediaTicker, int] = {}  # ticker -> relays using it
        # Per lane: slot -> (agent socket, destination, relay) for its quiet packets.
        self.lane_targets: dict[QuietLane, dict[int, tuple[socket.socket, tuple[str, int], MediaRelay]]] = {}
        self._watching = False
        # Batched audio waits up to HOLD_S so one kernel run serves many packets.
        # (endpoint, source, datagram, lane slot or -1), in arrival order.
        # Held datagrams in rounds: a port's n-th datagram held goes to round n, so a
        # round has at most one frame per stream; each entry is (endpoint, source,
        # datagram, lane slot or -1), in arrival order within its round.
        self._held: list[list[tuple[_Endpoint, Any, bytes, int]]] = []
        self._held_count = 0
        self._due_s: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.passes = 0
        self.datagrams = 0
        self.errors = 0
        self._log = get_logger(component="media-pump")

    @classmethod
    def for_loop(cls, loop: asyncio.AbstractEventLoop) -> MediaPump:
        pump = _PUMPS.get(loop)
        if pump is None:
            pump = _PUMPS[loop] = cls(loop)
        return pump

    @property
    def sockets(self) -> int:
        return len(self._endpoints)

    def add(self, endpoint: _Endpoint) -> None:
        fd = endpoint.sock.fileno()
        self._epoll.register(fd, select.EPOLLIN)
        self._endpoints[fd] = endpoint
        if not self._watching:
            self._loop.add_reader(self._epoll.fileno(), self._ready)
            self._watching = True

    def remove(self, endpoint: _Endpoint) -> None:
        fd = endpoint.sock.fileno()
        if self._endpoints.get(fd) is endpoint:
            del self._endpoints[fd]
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(fd)
        if not self._endpoints and self._watching:
            self._loop.remove_reader(self._epoll.fileno())
            self._watching = False

    def use_ticker(self, ticker: MediaTicker) -> None:
        self._tickers[ticker] = self._tickers.get(ticker, 0) + 1

    def release_ticker(self, ticker: MediaTicker) -> None:
        left = self._tickers.get(ticker, 0) - 1
        if left > 0:
            self._tickers[ticker] = left
        else:
            self._tickers.pop(ticker, None)

    def _ready(self) -> None:
        """A datagram from each ready socket, for up to ``MAX_POLLS`` polls while more
        arrive (fewer event-loop passes under load), then the hold. Never raises."""
        self.passes += 1
        endpoints = self._endpoints
        for _ in range(MAX_POLLS):
            try:
                events = self._epoll.poll(0, MAX_EVENTS)
            except OSError:
                return
            if not events:
                break
            for fd, _mask in events:
                endpoint = endpoints.get(fd)
                if endpoint is None:
                    continue
                try:
                    data, addr = endpoint.sock.recvfrom(MAX_DATAGRAM_BYTES)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    # E.g. ICMP port unreachable for an earlier send: the peer is not listening yet.
                    endpoint.relay.socket_errors += 1
                    continue
                self.datagrams += 1
                if endpoint.held or (endpoint.lane is not None and addr == endpoint.lane_source):
                    self._hold(endpoint, data, addr)
                else:
                    self._deliver(endpoint, data, addr)
            if self._held or any(ticker.waiting for ticker in self._tickers):
                now = self._loop.time()
                if self._due_s is None:
                    self._due_s = now + HOLD_S
                    self._timer = self._loop.call_at(self._due_s, self._flush)
                if now >= self._due_s or self._held_count >= MAX_HELD:
                    self._flush()

    def _hold(self, endpoint: _Endpoint, data: bytes, addr: Any) -> None:
        """Hold a datagram for the lane; a port with datagrams held keeps holding (order)."""
        slot = endpoint.lane_slot if endpoint.lane is not None and addr == endpoint.lane_source else -1
        rounds = self._held
        n = endpoint.held  # a burst (the server was late) spreads over later rounds
        while len(rounds) <= n:
            rounds.append([])
        rounds[n].append((endpoint, addr, data, slot))
        endpoint.held = n + 1
        self._held_count += 1

    def _flush(self) -> None:
        """Run the lanes and the banks on everything held: one kernel run each for many packets."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due_s = None
        rounds = self._held
        if rounds:
            self._held, self._held_count = [], 0
            for endpoint, _, _, _ in rounds[0]:
                endpoint.held = 0  # every port with anything held has an entry in round 0
            for held in rounds:
                self._run_lanes(held)
        for ticker in self._tickers:
            if ticker.waiting:
                ticker.tick()

    def _deliver(self, endpoint: _Endpoint, data: bytes, addr: Any) -> None:
        try:
            endpoint.relay._received(endpoint.leg, endpoint.rtcp, data, addr)
        except Exception as exc:
            self.errors += 1
            if self.errors == 1:
                self._log.error("relaying a datagram failed", error=type(exc).__name__)

    def _run_lanes(self, held: list[tuple[_Endpoint, Any, bytes, int]]) -> None:
        """The held datagrams: the lanes send the quiet packets, the rest go over in order.

        A datagram held for a lane whose call has left it since (and every later one of
        that port, held to keep the order) takes the ordinary path after the lanes ran.
        """
        by_lane: dict[QuietLane, list[int]] = {}
        later: list[int] = []
        for i, (endpoint, _, _, slot) in enumerate(held):
            lane = endpoint.lane
            if slot >= 0 and lane is not None and endpoint.lane_slot == slot:
                by_lane.setdefault(lane, []).append(i)
            else:
                later.append(i)
        for lane, picked in by_lane.items():
            first = held[picked[0]][0].relay
            try:
                result = lane.process([held[i][2] for i in picked], [held[i][3] for i in picked], first._clock())
            except Exception as exc:
                # Nothing was sent: every datagram takes the ordinary path.
                self.errors += 1
                if self.errors == 1:
                    self._log.error("the quiet lane failed", error=type(exc).__name__)
                for i in picked:
                    endpoint, addr, data, _ = held[i]
                    endpoint.relay.media.leave_lane()
                    self._deliver(endpoint, data, addr)
                continue
            out = result.out
            targets = self.lane_targets.get(lane, {})
            size = DATAGRAM_BYTES
            for row, slot in result.sends:
                target = targets.get(slot)
                if target is None:
                    continue
                sock, destination, relay = target
                try:
                    sock.sendto(out[row * size : (row + 1) * size], destination)
                except (BlockingIOError, InterruptedError):
                    relay.send_dropped += 1
                except OSError:
                    relay.socket_errors += 1
            for k in result.fallbacks:
                endpoint, addr, data, _ = held[picked[k]]
                endpoint.relay.media.leave_lane()
                self._deliver(endpoint, data, addr)
        for i in later:
            endpoint, addr, data, _ = held[i]
            self._deliver(endpoint, data, addr)


_PUMPS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, MediaPump] = weakref.WeakKeyDictionary()


class MediaRelay:
    """The RTP and RTCP sockets of both legs of one call.

    Open with :meth:`open`; :meth:`close` closes the sockets (and leaves the
    :class:`CallMedia` to its owner, who closes it for the call's summary).
    """

    def __init__(self, media: CallMedia, clock: Callable[[], float], ticker: MediaTicker | None = None) -> None:
        self.media = media
        self._clock = clock
        self._ticker = ticker
        self._endpoints: dict[tuple[str, bool], _Endpoint] = {}
        self._pump: MediaPump | None = None
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
        ticker: MediaTicker | None = None,
    ) -> MediaRelay:
        """Bind ``interface`` at each leg's ``(rtp_port, rtcp_port)`` and start relaying.

        ``clock`` gives the arrival time passed to ``media`` (default: the event loop's
        monotonic clock). ``ticker`` is needed when ``media`` is batched (it runs the
        bank its audio waits in). Raises :class:`OSError` when a port cannot be bound;
        the ports bound so far are closed again.
        """
        loop = asyncio.get_running_loop()
        relay = cls(media, clock or loop.time, ticker)
        pump = relay._pump = MediaPump.for_loop(loop)
        if ticker is not None:
            pump.use_ticker(ticker)
        try:
            for leg, (rtp_port, rtcp_port) in ports.items():
                for port, rtcp in ((rtp_port, False), (rtcp_port, True)):
                    endpoint = _Endpoint(_bind(interface, port), relay, leg, rtcp)
                    relay._endpoints[(leg, rtcp)] = endpoint
                    pump.add(endpoint)
        except BaseException:
            await relay.close()
            raise
        return relay

    def local_address(self, leg: str, *, rtcp: bool = False) -> tuple[str, int]:
        """The ``(host, port)`` a leg's RTP (or RTCP) socket is bound to."""
        sockname = self._endpoints[(leg, rtcp)].sock.getsockname()
        return sockname[0], sockname[1]

    def _received(self, leg: str, rtcp: bool, data: bytes, addr: Any) -> None:
        if self._closed:
            return
        now_s = self._clock()
        media = self.media
        try:
            out = media.on_rtcp(leg, data, addr, now_s) if rtcp else media.on_rtp(leg, data, addr, now_s)
        except Exception as exc:
            # CallMedia does not raise on bad input; if it ever does, drop this
            # datagram and keep the call (and the event loop) running.
            self.engine_errors += 1
            if self.engine_errors == 1:
                self._log.error("media engine failed on a packet", error=type(exc).__name__)
            return
        if self._ticker is not None and media.pending:
            self._ticker.waiting.add(self)
        if out:
            self._send(out, rtcp)

    def _tick(self) -> None:
        """The ticker ran the bank: send this call's masked caller packets; enter the lane if quiet."""
        if not self._closed:
            out = self.media.process_tick()
            if out:
                self._send(out, False)
            if self._ticker is not None and self.media.lane_slot is None:
                self._enter_lane(self._ticker.lane)

    def _enter_lane(self, lane: QuietLane) -> None:
        pump = self._pump
        if pump is None:
            return
        slot = self.media.enter_lane(lane, self._lane_left)
        if slot is None:
            return
        caller_leg, source, agent_leg, destination = self.media.lane_route()
        caller = self._endpoints.get((caller_leg, False))
        agent = self._endpoints.get((agent_leg, False))
        if caller is None or agent is None:
            self.media.leave_lane()
            return
        pump.lane_targets.setdefault(lane, {})[slot] = (agent.sock, destination, self)
        caller.lane, caller.lane_slot, caller.lane_source = lane, slot, source

    def _lane_left(self) -> None:
        """The caller stream left its lane: its datagrams take the ordinary path again."""
        for endpoint in self._endpoints.values():
            lane = endpoint.lane
            if lane is not None:
                if self._pump is not None:
                    self._pump.lane_targets.get(lane, {}).pop(endpoint.lane_slot, None)
                endpoint.lane, endpoint.lane_slot, endpoint.lane_source = None, -1, None

    def _send(self, out: list[tuple[str, bytes, tuple[str, int]]], rtcp: bool) -> None:
        endpoints = self._endpoints
        for out_leg, datagram, destination in out:
            endpoint = endpoints.get((out_leg, rtcp))
            if endpoint is None:
                continue
            try:
                endpoint.sock.sendto(datagram, destination)
            except (BlockingIOError, InterruptedError):
                # The kernel's send buffer is full: drop rather than queue without bound.
                self.send_dropped += 1
            except OSError:
                # E.g. ICMP port unreachable reported on this socket, or no route.
                self.socket_errors += 1

    async def close(self) -> None:
        """Close every socket of the call. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.media.leave_lane()
        pump = self._pump
        if self._ticker is not None:
            self._ticker.waiting.discard(self)
            if pump is not None:
                pump.release_ticker(self._ticker)
        for endpoint in self._endpoints.values():
            if pump is not None:
                pump.remove(endpoint)
            endpoint.sock.close()
        await asyncio.sleep(0)


def _bind(interface: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to ``(interface, port)``; raises OSError."""
    infos = socket.getaddrinfo(interface, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER_BYTES)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


class MediaTicker:
    """Runs a :class:`DetectorBank` and sends what each waiting call masked.

    The :class:`MediaPump` calls :meth:`tick` at the end of every pass that queued
    audio; the timer task (every ``tick_s``) only catches audio queued outside a pass.
    :meth:`start` begins the timer task and :meth:`stop` ends it. ``kernel_s`` adds up
    the time spent in the bank (for the per-tick kernel time metric); ``late_ticks``
    counts ticks that began more than a tick late.
    """

    def __init__(self, bank: DetectorBank, tick_s: float = TICK_S) -> None:
        self.bank = bank
        self.lane = QuietLane(bank)
        self.tick_s = tick_s
        self.waiting: set[MediaRelay] = set()
        self.ticks = 0
        self.late_ticks = 0
        self.kernel_s = 0.0
        self.errors = 0
        self._task: asyncio.Task[None] | None = None
        self._log = get_logger(component="media-ticker")

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="media-ticker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def tick(self) -> None:
        """One tick now: run the bank, then let each waiting call send. Never raises."""
        self.ticks += 1
        waiting = self.waiting
        self.waiting = set()
        started = time.perf_counter()
        self.bank.run()
        self.kernel_s += time.perf_counter() - started
        for relay in waiting:
            try:
                relay._tick()
            except Exception as exc:
                self.errors += 1
                if self.errors == 1:
                    self._log.error("sending a tick's packets failed", error=type(exc).__name__)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_s = loop.time() + self.tick_s
        while True:
            await asyncio.sleep(max(0.0, next_s - loop.time()))
            now = loop.time()
            if now - next_s > self.tick_s:
                self.late_ticks += 1
                next_s = now  # behind by more than a tick: restart the schedule from now
            next_s += self.tick_s
            if self.waiting:
                self.tick()
