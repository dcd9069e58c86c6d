"""The sockets of every call: one epoll set read in batches, datagrams pumped through CallMedia.

Each leg of a call has a local RTP port and the RTCP port above it (RFC 3550 section
11). :class:`MediaRelay` binds the four sockets of a call (non-blocking, plain
``socket`` objects) and adds them to the process's :class:`MediaPump`: one
``epoll`` set (epoll(7), level-triggered) whose descriptor the asyncio loop watches.
When any media socket is readable the pump reads a pass: compiled code
(:func:`~dtmfguard.transport.udpio.receive`) takes one datagram from each ready socket,
poll after poll, until none is left or ``MAX_BATCH`` are read, into the rows of one
batch. There is no queue between receiving and sending: the kernel's socket receive
buffer is the only queue on the way in (when it is full the kernel drops, and the loss
shows in the peer's RTCP and in our concealment counters), and on the way out a
datagram the kernel's send buffer cannot take is dropped and counted
(``send_dropped``), never buffered.

Round by round (a socket's n-th datagram of the pass is in round n, so each socket's
datagrams are handled in order):

* Datagrams of a call whose caller stream is in the quiet lane (nothing open in its
  detector or masker; see :mod:`dtmfguard.control.lane`), from the latched source, go
  to the lane as they lie in the batch: it checks, decodes and detects them in one
  kernel run, and the pump sends each quiet packet it built from the agent leg's socket
  with one compiled loop (:func:`~dtmfguard.transport.udpio.send_rows`). A datagram that
  falls back takes its call out of the lane and goes to the ordinary path.
* Every other datagram becomes ``bytes`` and an address and goes to its call's
  :class:`CallMedia` (RTP to ``on_rtp``, RTCP to ``on_rtcp``), which returns what to
  send. A batched call's caller audio is queued on its bank channel.

At the end of the pass each :class:`MediaTicker` with queued audio runs its bank once
for all of it; each such call sends what it masked and, if it is quiet again, enters the
lane. Then, when batched calls are served, the pump stops watching the sockets and
passes again on a timer, ``HOLD_S`` after the start of the pass (at once when the pass
took longer), for as long as its passes find datagrams; after ``IDLE_PASSES`` passes in a
row that found none it watches again. So under load each pass finds many
datagrams (one kernel run and one Python pass serve them all, and the event loop does
not poll per datagram); when idle a datagram is read at once. A packet waits at most
about ``HOLD_S`` plus a pass while passes are shorter than ``HOLD_S``, and about two
passes when they are longer. The ticker's own ``TICK_S`` timer is a safety net that
runs the bank if audio was queued outside a pass. Media time still comes from RTP
timestamps, never from the rest.
"""


from __future__ import annotations

import asyncio
import contextlib
import errno
import select
import socket
import time
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from dtmfguard.control.lane import QuietLane
from dtmfguard.control.media import CallMedia
from dtmfguard.log import get_logger
from dtmfguard.pipeline.batch import DetectorBank
from dtmfguard.transport import udpio

__all__ = ["HOLD_S", "MAX_BATCH", "MAX_EVENTS", "TICK_S", "MediaPump", "MediaRelay", "MediaTicker"]

TICK_S = 0.005
"""How often a :class:`MediaTicker`'s safety-net timer runs the bank if packets wait."""

MAX_EVENTS = 1024
"""Ready sockets read per poll of the pump."""

MAX_POLLS = 8
"""Polls per batch: a socket with a burst waiting gives one datagram per poll."""

MAX_BATCH = 1024
"""Datagrams read per batch at most."""

MAX_BATCHES = 4
"""Batches per pass while they come back full."""

IDLE_PASSES = 8
"""Timed passes in a row that find nothing before the pump watches its sockets again."""

HOLD_S = 0.0015
"""The pump's rest after a pass while batched calls are served: datagrams gather in the
sockets' receive buffers so that one pass and one kernel run serve many. Measured on the
load benchmark at 1000 streams: 1.5 ms lowers the p99 added latency by 0.4-1 ms against
2 ms at the same CPU (a pass's fixed cost is about 0.1 ms)."""

_RECEIVE_BUFFER_BYTES = 256 * 1024


class _Endpoint:
    """One bound port of a call, as the pump sees it."""

    __slots__ = ("sock", "fd", "relay", "leg", "rtcp", "lane")

    def __init__(self, sock: socket.socket, relay: MediaRelay, leg: str, rtcp: bool) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.relay = relay
        self.leg = leg
        self.rtcp = rtcp
        # Set while the call's caller stream is in a quiet lane (caller RTP port only);
        # the pump's descriptor table then routes datagrams from the latched source there.
        self.lane: QuietLane | None = None


class MediaPump:
    """Every media socket of one event loop in one epoll set; see the module docstring.

    :meth:`for_loop` gives the loop's pump (made on first use). The loop watches the
    epoll descriptor only while the pump has sockets and is not resting.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Compiled (or loaded from Numba's cache) before the first socket is added, so no
        # datagram waits for it; `dtmfguard serve` has done this at start-up already.
        udpio.warmup()
        self._loop = loop
        self._epoll = select.epoll()
        self._endpoints: dict[int, _Endpoint] = {}
        self._tickers: dict[MediaTicker, int] = {}  # ticker -> relays using it
        self._batch = udpio.Batch(MAX_BATCH, MAX_EVENTS)
        self._rows = self._batch.rows.reshape(-1)  # the rows as one flat buffer, for the lane
        self._fds = udpio.FdTable()
        self._lanes: list[QuietLane] = []  # lane index in the descriptor table -> lane
        # Per lane: where each slot's quiet packets go, and the relay that counts their failures.
        self._targets: dict[QuietLane, udpio.Targets] = {}
        self._target_relays: dict[QuietLane, dict[int, MediaRelay]] = {}
        self._watching = False
        self._rest: asyncio.TimerHandle | None = None
        self._idle = IDLE_PASSES  # passes in a row that found nothing
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
        fd = endpoint.fd
        self._fds.ensure(fd)
        self._fds.clear_lane(fd)
        self._epoll.register(fd, select.EPOLLIN)
        self._endpoints[fd] = endpoint
        self._watch()

    def remove(self, endpoint: _Endpoint) -> None:
        fd = endpoint.fd
        if self._endpoints.get(fd) is endpoint:
            del self._endpoints[fd]
            self._fds.clear_lane(fd)
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(fd)
        if not self._endpoints:
            if self._watching:
                self._loop.remove_reader(self._epoll.fileno())
                self._watching = False
            if self._rest is not None:
                self._rest.cancel()
                self._rest = None

    def _watch(self) -> None:
        if not self._watching and self._rest is None and self._endpoints:
            self._loop.add_reader(self._epoll.fileno(), self._ready)
            self._watching = True

    def _timed(self) -> None:
        """A pass on the timer (see :meth:`_ready`); when it finds nothing, watch the sockets again."""
        self._rest = None
        if self._endpoints:
            self._ready()

    def use_ticker(self, ticker: MediaTicker) -> None:
        self._tickers[ticker] = self._tickers.get(ticker, 0) + 1

    def release_ticker(self, ticker: MediaTicker) -> None:
        left = self._tickers.get(ticker, 0) - 1
        if left > 0:
            self._tickers[ticker] = left
        else:
            self._tickers.pop(ticker, None)

    def join_lane(
        self, caller: _Endpoint, lane: QuietLane, slot: int, source: Any, agent: _Endpoint, destination: Any,
    ) -> bool:
        """Route ``caller``'s datagrams from ``source`` to ``lane`` as ``slot``; its quiet
        packets go from ``agent``'s socket to ``destination``. False (nothing changed) when
        an address is not numeric."""
        src = udpio.encode_address(caller.sock.family, source)
        dst = udpio.encode_address(agent.sock.family, destination)
        if src is None or dst is None:
            return False
        if lane not in self._targets:
            self._lanes.append(lane)
            self._targets[lane] = udpio.Targets()
            self._target_relays[lane] = {}
        self._targets[lane].set(slot, agent.fd, dst)
        self._target_relays[lane][slot] = caller.relay
        self._fds.set_lane(caller.fd, self._lanes.index(lane), slot, src)
        caller.lane = lane
        return True

    def leave_lane(self, endpoint: _Endpoint) -> None:
        """Datagrams of ``endpoint`` take the ordinary path again."""
        lane = endpoint.lane
        if lane is None:
            return
        fds = self._fds
        if endpoint.fd < len(fds.ints):
            slot = int(fds.ints[endpoint.fd, udpio.F_SLOT])
            if slot >= 0:
                self._targets[lane].clear(slot)
                self._target_relays[lane].pop(slot, None)
        fds.clear_lane(endpoint.fd)
        endpoint.lane = None

    def _ready(self) -> None:
        """Read what the ready sockets hold, a batch at a time, and relay it; then, when
        batched calls are served and datagrams came, rest ``HOLD_S`` so the next pass
        gathers a batch. Never raises."""
        self.passes += 1
        started_s = self._loop.time()
        batch = self._batch
        epfd = self._epoll.fileno()
        fds = self._fds
        read = 0
        for _ in range(MAX_BATCHES):
            try:
                n = udpio.receive(
                    epfd, batch.events, MAX_POLLS, batch.rows, batch.addrs, batch.addr_lens, batch.ints,
                    fds.ints, fds.src,
                )
            except Exception as exc:  # not expected: keep the loop alive
                self._failed("receiving failed", exc)
                break
            if n == 0:
                break
            self.datagrams += n
            read += n
            try:
                self._pass(n)
            except Exception as exc:
                self._failed("relaying a batch failed", exc)
            if n < batch.capacity:
                break
        for ticker in self._tickers:
            if ticker.waiting:
                ticker.tick()
        # With batched calls, rest: stop watching and pass again on a timer (passes start
        # HOLD_S apart) while passes find datagrams, so under load the loop's selector is
        # not asked per datagram. Back to watching only after IDLE_PASSES passes in a row
        # found none: adding the pump's epoll set to the loop's is costly (the kernel checks
        # the nesting across every socket), and a load generator's bursts leave short gaps.
        self._idle = 0 if read else self._idle + 1
        if self._tickers and self._idle < IDLE_PASSES:
            if self._watching:
                self._loop.remove_reader(epfd)
                self._watching = False
            if self._rest is None:
                # HOLD_S from this pass's start: a pass that took longer is followed at once,
                # so under heavy load a packet waits about two passes, not two passes and a rest.
                self._rest = self._loop.call_at(started_s + HOLD_S, self._timed)
        else:
            self._watch()

    def _failed(self, what: str, exc: Exception) -> None:
        self.errors += 1
        if self.errors == 1:
            self._log.error(what, error=type(exc).__name__)

    def _pass(self, n: int) -> None:
        """Relay the batch's first ``n`` rows: round by round (a socket's datagrams in order),
        the lanes' rows first, then every other row on the ordinary path."""
        ints = self._batch.ints
        if int(ints[:n, udpio.SLOT].max()) < 0:  # nothing for a lane: arrival order keeps each socket's order
            for i in range(n):
                self._deliver_row(i)
            return
        rounds = int(ints[:n, udpio.ROUND].max()) + 1
        for r in range(rounds):
            rows = np.arange(n) if rounds == 1 else np.flatnonzero(ints[:n, udpio.ROUND] == r)
            slots = ints[rows, udpio.SLOT]
            # A call that left its lane earlier in this pass takes the ordinary path.
            in_lane = (slots >= 0) & (self._fds.ints[ints[rows, udpio.FD], udpio.F_SLOT] == slots)
            picked = rows[in_lane]
            if len(picked):
                lanes = ints[picked, udpio.LANE]
                first = int(lanes[0])
                if (lanes == first).all():
                    self._run_lane(self._lanes[first], picked)
                else:
                    for index in np.unique(lanes).tolist():
                        self._run_lane(self._lanes[index], picked[lanes == index])
            for i in rows[~in_lane].tolist():
                self._deliver_row(i)

    def _run_lane(self, lane: QuietLane, rows: npt.NDArray[np.intp]) -> None:
        """The lane's rows: it sends the quiet packets; the others fall back in order."""
        ints = self._batch.ints
        endpoint = self._endpoints.get(int(ints[rows[0], udpio.FD]))
        now_s = endpoint.relay._clock() if endpoint is not None else self._loop.time()
        try:
            result = lane.process_buffer(
                self._rows, rows * udpio.ROW_BYTES, ints[rows, udpio.LENGTH], ints[rows, udpio.SLOT], now_s,
            )
        except Exception as exc:
            # Nothing was sent: every datagram takes the ordinary path.
            self._failed("the quiet lane failed", exc)
            for i in rows.tolist():
                self._leave_and_deliver(i)
            return
        n_sends = len(result.sends)
        if n_sends:
            targets = self._targets[lane]
            codes = targets.scratch(n_sends)
            if udpio.send_rows(result.out, result.sends, n_sends, targets.ints, targets.addrs, codes):
                relays = self._target_relays[lane]
                for k in np.flatnonzero(codes[:n_sends]).tolist():
                    relay = relays.get(int(result.sends[k, 1]))
                    if relay is None:
                        continue
                    if codes[k] in (errno.EAGAIN, errno.ENOBUFS):
                        relay.send_dropped += 1  # the send buffer is full: dropped, never queued
                    else:
                        relay.socket_errors += 1
        if result.reported:
            # The lane masked and confirmed keys itself: let their consumer know.
            relays = self._target_relays[lane]
            for slot in result.reported:
                relay = relays.get(slot)
                if relay is not None:
                    relay._events_check()
        for k in result.fallbacks:
            self._leave_and_deliver(int(rows[k]))

    def _leave_and_deliver(self, i: int) -> None:
        endpoint = self._endpoints.get(int(self._batch.ints[i, udpio.FD]))
        if endpoint is not None:
            endpoint.relay.media.leave_lane()
        self._deliver_row(i)

    def _deliver_row(self, i: int) -> None:
        """Row ``i`` on its call's ordinary path (as ``bytes`` and an address tuple)."""
        batch = self._batch
        endpoint = self._endpoints.get(int(batch.ints[i, udpio.FD]))
        if endpoint is None:
            return
        length = int(batch.ints[i, udpio.LENGTH])
        if length < 0:
            # E.g. ICMP port unreachable for an earlier send: the peer is not listening yet.
            endpoint.relay.socket_errors += 1
            return
        if length > udpio.ROW_BYTES:
            endpoint.relay.oversized += 1  # longer than any media packet: dropped
            return
        data, addr = batch.datagram(i)
        try:
            endpoint.relay._received(endpoint.leg, endpoint.rtcp, data, addr)
        except Exception as exc:
            self._failed("relaying a datagram failed", exc)


_PUMPS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, MediaPump] = weakref.WeakKeyDictionary()


class MediaRelay:
    """The RTP and RTCP sockets of both legs of one call.

    Open with :meth:`open`; :meth:`close` closes the sockets (and leaves the
    :class:`CallMedia` to its owner, who closes it for the call's summary).
    """

    def __init__(
        self, media: CallMedia, clock: Callable[[], float], ticker: MediaTicker | None = None,
        on_events: Callable[[], None] | None = None,
    ) -> None:
        self.media = media
        self._clock = clock
        self._ticker = ticker
        self._on_events = on_events
        self._endpoints: dict[tuple[str, bool], _Endpoint] = {}
        self._pump: MediaPump | None = None
        self.socket_errors = 0
        self.send_dropped = 0
        self.oversized = 0  # datagrams longer than any media packet (udpio.ROW_BYTES), dropped
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
        on_events: Callable[[], None] | None = None,
    ) -> MediaRelay:
        """Bind ``interface`` at each leg's ``(rtp_port, rtcp_port)`` and start relaying.

        ``clock`` gives the arrival time passed to ``media`` (default: the event loop's
        monotonic clock). ``ticker`` is needed when ``media`` is batched (it runs the
        bank its audio waits in). ``on_events`` is called after a datagram or a tick of
        the call leaves key presses waiting in ``media`` (``media.events_waiting``), so
        their consumer need not ask every call. Raises :class:`OSError` when a port cannot be bound;
        the ports bound so far are closed again.
        """
        loop = asyncio.get_running_loop()
        relay = cls(media, clock or loop.time, ticker, on_events)
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
        if self._on_events is not None and media.events_waiting:
            self._on_events()
        if out:
            self._send(out, rtcp)

    def _events_check(self) -> None:
        if self._on_events is not None and self.media.events_waiting:
            self._on_events()

    def _tick(self) -> None:
        """The ticker ran the bank: send this call's masked caller packets; enter the lane if quiet."""
        if not self._closed:
            out = self.media.process_tick()
            if self._on_events is not None and self.media.events_waiting:
                self._on_events()
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
        if caller is None or agent is None or not pump.join_lane(caller, lane, slot, source, agent, destination):
            self.media.leave_lane()

    def _lane_left(self) -> None:
        """The caller stream left its lane: its datagrams take the ordinary path again."""
        for endpoint in self._endpoints.values():
            if endpoint.lane is not None:
                if self._pump is not None:
                    self._pump.leave_lane(endpoint)
                endpoint.lane = None

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
        # Endpoints point back at the relay: drop them, so a closed call is freed when
        # its last reference goes rather than in the garbage collector's full passes.
        self._endpoints.clear()
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
