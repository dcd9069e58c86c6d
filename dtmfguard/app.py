"""``dtmfguard serve``: the live proxy process, wired from its configuration.

This is the composition root. It builds the pieces and owns their lifetimes, and holds
no protocol or media logic of its own:

- :class:`LiveMedia` gives the command table real media: port pairs from a
  :class:`~dtmfguard.transport.ports.PortPool`, a
  :class:`~dtmfguard.control.media.CallMedia` per call and its sockets, a
  :class:`~dtmfguard.transport.media.MediaRelay`, and, when ``[recording] dir`` is set,
  a recording per call (:class:`~dtmfguard.integrations.recorder.Recorder`);
- :class:`Proxy` starts the NG control socket on ``[control] ng_listen`` and a sweeper
  that ends calls idle longer than ``[media] timeout_s`` (checked every second, on an
  injectable monotonic clock), and on stop closes the socket, answers the requests in
  flight and deletes every call, each with its one summary log line;
- :func:`serve` runs a proxy until SIGINT or SIGTERM; :func:`run` is the CLI's entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from structlog.typing import FilteringBoundLogger

from dtmfguard.capture.service import CaptureService
from dtmfguard.config import Config, load_config
from dtmfguard.control.commands import CommandHandler, CommandSettings, MediaBackend
from dtmfguard.control.media import CallMedia, LegEndpoint
from dtmfguard.control.registry import Call, MediaSession, Relay, Side
from dtmfguard.errors import CaptureError
from dtmfguard.integrations.recorder import Recorder
from dtmfguard.log import configure_logging, get_logger
from dtmfguard.metrics import MeteredCallMedia, MetricsServer, ProxyMetrics, start_metrics_server
from dtmfguard.offline import DetectorOptions
from dtmfguard.pipeline.batch import DetectorBank
from dtmfguard.pipeline.mask import MaskSettings
from dtmfguard.protocol.sdp import MediaEndpoint
from dtmfguard.transport.media import MediaRelay, MediaTicker
from dtmfguard.transport.ng_server import NgServer, start_ng_server, stats_dict
from dtmfguard.transport.ports import PortPool

__all__ = ["SWEEP_INTERVAL_S", "LiveMedia", "Proxy", "run", "serve"]

#: How often idle calls are looked for; a call ends at most this long after its timeout.
SWEEP_INTERVAL_S = 1.0
SWEEP_TURNS = 10  # the sweep's share of the calls per turn: 1 / SWEEP_TURNS
#: How often each call's key presses are handed to its card capture (one packet time).
CAPTURE_POLL_INTERVAL_S = 0.02
CAPTURE_SCAN_INTERVAL_S = 1.0
"""Every call is looked at within this long, a share at each poll; otherwise only calls
whose relay saw key presses come, and calls with a capture running, are (with a thousand
calls, a look at all of them costs milliseconds)."""
#: How often ``serve`` moves what survived into the garbage collector's frozen set.
FREEZE_INTERVAL_S = 1.0


def _log() -> FilteringBoundLogger:
    return get_logger(component="proxy")


class LiveMedia:
    """The :class:`~dtmfguard.control.commands.MediaBackend` of a running proxy.

    ``clock`` stamps packet arrivals; it must be the clock the media timeout is checked
    on (the proxy's), since a call's idle time is the difference of the two.
    ``batched`` (the default) runs every call's detector in one
    :class:`~dtmfguard.pipeline.batch.DetectorBank`, driven by a 20 ms
    :class:`~dtmfguard.transport.media.MediaTicker`; False processes each packet on arrival.
    """

    def __init__(
        self, config: Config, *, clock: Callable[[], float] = time.monotonic, metrics: ProxyMetrics | None = None,
        batched: bool = True,
    ) -> None:
        self.metrics = metrics
        self.interface = config.media.interface
        self.clock = clock
        self.pool = PortPool(config.media.interface, config.media.port_min, config.media.port_max)
        self._masking = MaskSettings.from_config(config.masking)
        self._detector = DetectorOptions.from_config(config.detector)
        self.recorder = Recorder(config.recording.dir) if config.recording.enabled else None
        self.ticker: MediaTicker | None = None
        #: Calls whose media has key presses waiting (their relay saw them come); the
        #: proxy's capture poll takes the set.
        self.events_ready: set[str] = set()
        if batched:
            bank = DetectorBank(thresholds=self._detector.thresholds, min_digit_ms=self._detector.min_digit_ms)
            self.ticker = MediaTicker(bank)

    def allocate_pair(self) -> tuple[int, int]:
        return self.pool.allocate_pair()

    def release_pair(self, rtp_port: int) -> None:
        self.pool.release_pair(rtp_port)

    def new_media(self, call_id: str, caller: Side) -> CallMedia:
        options: dict[str, Any] = {
            "masking": self._masking,
            "thresholds": self._detector.thresholds,
            "min_digit_ms": self._detector.min_digit_ms,
            "caller": caller,
            "bank": self.ticker.bank if self.ticker is not None else None,
        }
        if self.metrics is not None:
            return MeteredCallMedia(call_id, metrics=self.metrics, **options)
        return CallMedia(call_id, **options)

    def endpoint(self, remote: MediaEndpoint) -> LegEndpoint:
        return LegEndpoint.from_sdp(remote)

    async def open_relay(self, media: MediaSession, ports: dict[Side, tuple[int, int]]) -> Relay:
        if not isinstance(media, CallMedia):
            raise TypeError(f"LiveMedia relays CallMedia sessions, not {type(media).__name__}")
        by_leg: dict[str, tuple[int, int]] = dict(ports.items())
        call_id = media.call_id
        relay: Relay = await MediaRelay.open(
            media, self.interface, by_leg, clock=self.clock, ticker=self.ticker,
            on_events=lambda: self.events_ready.add(call_id),
        )
        if self.ticker is not None:
            self.ticker.start()
        if self.recorder is not None:
            # Only a call that got its sockets is recorded; CallMedia.close() finishes the file.
            media.attach_recorder(self.recorder.open_call(media.call_id))
        return relay

    async def close(self) -> None:
        """Stop the ticker, finish the recordings (the writer thread drains its queue); call after every call ended."""
        if self.ticker is not None:
            await self.ticker.stop()
        if self.recorder is not None:
            await asyncio.to_thread(self.recorder.close)


class Proxy:
    """The NG control socket, the call registry and the media timeout sweeper.

    ``backend`` defaults to :class:`LiveMedia` on ``config``; ``clock`` (monotonic
    seconds) drives the reply cache, call times and media timeouts, so tests can move
    time without sleeping. Use as ``async with Proxy(config) as proxy:`` or call
    :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        config: Config,
        *,
        backend: MediaBackend | None = None,
        clock: Callable[[], float] = time.monotonic,
        sweep_interval_s: float = SWEEP_INTERVAL_S,
        ng_options: dict[str, Any] | None = None,
        capture: CaptureService | None = None,
    ) -> None:
        self.config = config
        #: Card capture on the calls (``[capture]``, ``[gateway]``); see :meth:`start_capture`.
        self.capture = capture if capture is not None else CaptureService(config.capture, config.gateway)
        self.metrics = ProxyMetrics() if config.metrics.enabled else None
        self.backend: MediaBackend = (
            backend if backend is not None else LiveMedia(config, clock=clock, metrics=self.metrics)
        )
        self.clock = clock
        self.sweep_interval_s = sweep_interval_s
        self.handler = CommandHandler(
            self.backend,
            CommandSettings(
                address=config.media.interface,
                caller_side=config.media.caller_side,
                timeout_s=config.media.timeout_s,
            ),
            capture=self.capture,
        )
        self._ng_options = dict(ng_options or {})
        self.ng: NgServer | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._capture_poller: asyncio.Task[None] | None = None
        self._next_scan_s = 0.0  # when poll_captures next starts a round over every call
        self._scan: list[str] = []  # the round's calls, looked at a share per poll
        self._scan_at = 0
        self.metrics_server: MetricsServer | None = None

    @property
    def ng_address(self) -> tuple[str, int]:
        """Where the NG socket listens (the real port when ``ng_listen`` asks for port 0)."""
        if self.ng is None:
            raise RuntimeError("the proxy is not running")
        return self.ng.address

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """Where the metrics endpoint listens (None when ``[metrics] listen`` is empty)."""
        return None if self.metrics_server is None else self.metrics_server.address

    async def start(self) -> None:
        """Bind the NG socket and start the sweeper; raises OSError when the address is taken."""
        host, port = self.config.control.ng_address
        try:
            handle = self.handler.handle if self.metrics is None else self.metrics.wrap_ng(self.handler.handle)
            self.ng = await start_ng_server(handle, host, port, clock=self.clock, **self._ng_options)
        except OSError as exc:
            # Say which address: "Address already in use" alone does not tell an operator much.
            raise OSError(exc.errno, f"[control] ng_listen {host}:{port}: {exc.strerror or exc}") from exc
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="media-timeout-sweeper")
        self._capture_poller = asyncio.get_running_loop().create_task(self._poll_captures(), name="capture-poller")
        metrics_at = self.config.metrics.address
        if self.metrics is not None and metrics_at is not None:
            try:
                self.metrics_server = await start_metrics_server(self.metrics.render, *metrics_at)
            except OSError as exc:
                await self.stop()
                where = f"{metrics_at[0]}:{metrics_at[1]}"
                raise OSError(exc.errno, f"[metrics] listen {where}: {exc.strerror or exc}") from exc
        ng_host, ng_port = self.ng.address
        media = self.config.media
        _log().info(
            "proxy started",
            ng_listen=f"{ng_host}:{ng_port}",
            interface=media.interface,
            port_min=media.port_min,
            port_max=media.port_max,
            timeout_s=media.timeout_s,
            caller_side=media.caller_side,
            masking="on" if self.config.masking.enabled else "off",
        )

    async def _sweep(self) -> None:
        # A tenth of the calls every tenth of the interval: each call there at the start of
        # a round is looked at within it, and the media path never waits for a look at
        # every call at once (a few milliseconds with a thousand calls).
        calls: list[Call] = []
        turn = 0
        while True:
            await asyncio.sleep(self.sweep_interval_s / SWEEP_TURNS)
            if turn == 0:
                calls = list(self.handler.registry)
            await self.sweep(among=calls[turn::SWEEP_TURNS])
            turn = (turn + 1) % SWEEP_TURNS

    async def sweep(self, among: list[Call] | None = None) -> list[str]:
        """End the calls idle past ``[media] timeout_s`` now; return their call-ids. Never raises.

        ``among``: look only at these calls (default: all).
        """
        try:
            return await self.handler.expire_idle(self.clock(), among)
        except Exception:
            _log().exception("media timeout sweep failed")
            return []

    async def _poll_captures(self) -> None:
        while True:
            await asyncio.sleep(CAPTURE_POLL_INTERVAL_S)
            self.poll_captures()

    def poll_captures(self) -> None:
        """Hand calls' key presses to their captures and apply capture timeouts. Never raises.

        Looks at the calls whose relay reported key presses and the calls with a capture
        running, and at a share of every call, so that each is looked at within
        ``CAPTURE_SCAN_INTERVAL_S`` (a safety net, spread over the polls: a look at a
        thousand calls at once holds the media path for milliseconds). With a backend that
        does not report presses every poll looks at every call. A call's capture time is
        milliseconds since the call was created, on the proxy's clock.
        """
        now_s = self.clock()
        capture = self.capture
        registry = self.handler.registry
        ready: set[str] | None = getattr(self.backend, "events_ready", None)
        if ready is None:
            call_ids = [call.call_id for call in registry]
        else:
            scan = self._scan
            if self._scan_at >= len(scan) and now_s >= self._next_scan_s:
                self._next_scan_s = now_s + CAPTURE_SCAN_INTERVAL_S
                scan = self._scan = [call.call_id for call in registry]
                self._scan_at = 0
            share = -(-len(scan) * CAPTURE_POLL_INTERVAL_S // CAPTURE_SCAN_INTERVAL_S)
            part = scan[self._scan_at : self._scan_at + int(share)]
            self._scan_at += len(part)
            call_ids = list(dict.fromkeys([*ready, *capture.running_calls(), *part]))
            ready.clear()
        for call_id in call_ids:
            call = registry.get(call_id)
            if call is None:
                continue
            media = call.media
            # A call with no key press waiting and no capture running has nothing to do.
            if isinstance(media, CallMedia) and (media.events_waiting or capture.running(call_id)):
                capture.poll(call_id, media, self._call_ms(call_id, now_s))

    def _call_ms(self, call_id: str, now_s: float | None = None) -> int:
        call = self.handler.registry.get(call_id)
        if call is None:
            raise CaptureError("unknown call")
        now_s = self.clock() if now_s is None else now_s
        return round(max(0.0, now_s - call.created_s) * 1000)

    def start_capture(
        self, call_id: str, amount_minor: int, currency: str | None, reference: str, who: str,
        *, auto_submit: bool = False,
    ) -> str:
        """Start a card capture on a call (and mask its keypad tones); returns the capture id.

        ``amount_minor`` in minor units of ``currency`` (None: ``[capture] currency``); ``who``
        names the agent or client for the audit trail. Raises CaptureError when refused.
        """
        now_ms = self._call_ms(call_id)
        call = self.handler.registry.get(call_id)
        assert call is not None  # _call_ms raised otherwise
        call.media.set_masking(True)
        return self.capture.start_capture(
            call_id, amount_minor, currency, reference, who, source="api", auto_submit=auto_submit,
            media=call.media if isinstance(call.media, CallMedia) else None, now_ms=now_ms,
        )

    def clear_capture(self, call_id: str, who: str) -> None:
        """Wipe what the caller typed and restart at the card number. Raises CaptureError when refused."""
        self.capture.clear_capture(call_id, who, now_ms=self._call_ms(call_id))

    def cancel_capture(self, call_id: str, who: str) -> None:
        """End the call's capture without paying. Raises CaptureError when refused."""
        self.capture.cancel_capture(call_id, who)

    def submit_capture(self, call_id: str, who: str) -> None:
        """Send the completed card to the gateway. Raises CaptureError unless every field is valid."""
        self.capture.submit_capture(call_id, who, now_ms=self._call_ms(call_id))

    def progress(self, call_id: str) -> AsyncIterator[dict[str, Any]]:
        """The agent's view of the call's captures: messages (dicts) without digits, until it ends.

        Raises CaptureError for a call that does not exist (or has ended).
        """
        self._call_ms(call_id)
        return self.capture.progress(call_id)

    async def stop(self) -> None:
        """Stop taking commands, answer those in flight, then delete every call."""
        if self._capture_poller is not None:
            self._capture_poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._capture_poller
            self._capture_poller = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        ng_stats: dict[str, int] = {}
        if self.ng is not None:
            await self.ng.close()
            ng_stats = dict(stats_dict(self.ng.stats))
            self.ng = None
        if self.metrics_server is not None:
            await self.metrics_server.close()
            self.metrics_server = None
        ended = await self.handler.close_all(self.clock(), "shutdown")
        await self.capture.close()
        if isinstance(self.backend, LiveMedia):
            await self.backend.close()
        _log().info("proxy stopped", calls_ended=ended, ng=ng_stats, commands=dict(self.handler.counts))

    async def __aenter__(self) -> Proxy:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


async def serve(config: Config, *, stop: asyncio.Event | None = None, warm_up: bool = True) -> None:
    """Run the proxy until SIGINT or SIGTERM (or until ``stop`` is set), then shut down cleanly.

    Configures logging from ``[log]`` and compiles the detector kernels before the first
    call can arrive, so no call pays for compilation. Raises OSError when the NG address
    cannot be bound.
    """
    configure_logging(config.log.level, config.log.format)
    if warm_up:
        from dtmfguard.kernels import warmup
        from dtmfguard.transport import udpio

        started_s = time.monotonic()
        warmup()
        udpio.warmup()
        _log().info("kernels ready", seconds=round(time.monotonic() - started_s, 2))
    # Everything built so far (modules, compiled kernels) lives as long as the process:
    # keep it out of the collector's full passes, which otherwise stall the media path.
    gc.freeze()
    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    freezer = loop.create_task(_freeze_survivors(), name="collector-freeze")
    handled: list[signal.Signals] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
            continue
        handled.append(signum)
    try:
        async with Proxy(config):
            await stop.wait()
    finally:
        freezer.cancel()
        for signum in handled:
            loop.remove_signal_handler(signum)


async def _freeze_survivors(interval_s: float = FREEZE_INTERVAL_S) -> None:
    """Keep long-lived objects out of the garbage collector's full passes.

    A full pass walks every tracked object: with a thousand calls' state that is tens of
    milliseconds in which no packet moves. Calls hold no reference cycles (a call's
    objects are freed when its last reference goes, frozen or not), so what survived
    a young collection can be frozen: the full passes then walk only what is newer.
    """
    while True:
        await asyncio.sleep(interval_s)
        gc.collect(1)  # the young cycles first: frozen garbage would never be freed
        gc.freeze()


def run(config: Config | str | Path | None) -> int:
    """``dtmfguard serve``: run until signalled; ``config`` is a Config or a TOML path (None: defaults).

    Returns the exit status (0 after a clean shutdown). Raises ConfigError for a bad
    file and OSError when an address cannot be bound.
    """
    if not isinstance(config, Config):
        config = load_config(config)
    asyncio.run(serve(config))
    return 0
