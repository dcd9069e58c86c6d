"""The proxy's capture service: one gateway connector, one audit trail, a runner per call.

:class:`CaptureService` is built once per proxy from ``[capture]`` and ``[gateway]``. It loads
the configured connector (none when ``[gateway] url`` is empty: captures are then refused),
opens the audit trail (:class:`~dtmfguard.capture.audit.AuditLog`, written in order by one
worker through ``asyncio.to_thread`` so no disk write blocks the event loop), and keeps a
:class:`~dtmfguard.capture.runner.CaptureRunner` per call that has a capture or may start one by
its trigger sequence. The proxy feeds it each call's key presses (:meth:`CaptureService.poll`)
and tells it when a call ends; agents, API clients and the NG command table call
:meth:`~CaptureService.start_capture`, :meth:`~CaptureService.clear_capture`,
:meth:`~CaptureService.cancel_capture` and :meth:`~CaptureService.submit_capture`, and read
:meth:`~CaptureService.progress` (messages without digits) and :meth:`~CaptureService.status`.

Audit events wait on a bounded queue (:data:`AUDIT_QUEUE_SIZE`); when it is full the event is
dropped and an error is logged (the alarm), because a stalled disk must not stall calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, Protocol

from dtmfguard.capture.audit import AuditLog
from dtmfguard.capture.machine import CaptureSettings
from dtmfguard.capture.runner import CaptureRequest, CaptureRunner
from dtmfguard.config import CaptureConfig, GatewayConfig
from dtmfguard.errors import CaptureError
from dtmfguard.integrations.gateway import GatewayConnector, load_connector
from dtmfguard.log import get_logger

__all__ = ["AUDIT_QUEUE_SIZE", "AuditWriter", "CaptureService"]

AUDIT_QUEUE_SIZE = 1024
"""Audit events waiting for the disk at most; beyond this they are dropped with an error logged."""


class KeySource(Protocol):
    """What the service reads key presses from (a :class:`~dtmfguard.control.media.CallMedia`)."""

    def drain_events(self) -> list[Any]: ...


def _this_month() -> tuple[int, int]:
    today = datetime.datetime.now(datetime.UTC)
    return today.year, today.month


class AuditWriter:
    """Appends audit events to an :class:`AuditLog` in order, off the event loop.

    Calling the writer queues one event (never blocks, never raises); :meth:`close` writes what
    is queued and stops. ``dropped`` and ``failed`` count events lost to a full queue or a
    write error.
    """

    def __init__(self, log: AuditLog, *, queue_size: int = AUDIT_QUEUE_SIZE) -> None:
        self.log = log
        self.dropped = 0
        self.failed = 0
        self._queue: asyncio.Queue[Mapping[str, object] | None] = asyncio.Queue(maxsize=queue_size)
        self._task: asyncio.Task[None] | None = None
        self._logger = get_logger(component="audit")

    def __call__(self, event: Mapping[str, object]) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="capture-audit-writer")
        try:
            self._queue.put_nowait(dict(event))
        except asyncio.QueueFull:
            self.dropped += 1
            self._logger.error("audit queue full: event dropped", audit_event=str(event.get("event")))

    async def _run(self) -> None:
        while True:
            event = await self._queue.get()
            if event is None:
                return
            try:
                await asyncio.to_thread(self.log.append, event)
            except Exception as exc:
                self.failed += 1
                self._logger.error("audit event not written", audit_event=str(event.get("event")),
                                   error=type(exc).__name__)

    async def close(self) -> None:
        """Write every queued event, then stop."""
        if self._task is None:
            return
        await self._queue.put(None)
        await self._task
        self._task = None


class CaptureService:
    """Card capture for every call of one proxy; see the module docstring.

    ``connector`` and ``audit_log`` replace what the configuration would build (tests inject
    them); ``today`` gives (year, month) for the expiry check; ``new_id`` makes capture ids and
    idempotency keys. Raises ConfigError when the configured connector cannot be built.
    """

    def __init__(
        self,
        capture: CaptureConfig,
        gateway: GatewayConfig,
        *,
        connector: GatewayConnector | None = None,
        audit_log: AuditLog | None = None,
        today: Callable[[], tuple[int, int]] = _this_month,
        new_id: Callable[[], str] | None = None,
    ) -> None:
        self.config = capture
        if connector is None and gateway.enabled:
            connector = load_connector(gateway.connector, gateway.connector_settings())
        self.connector = connector
        self._connector_name = gateway.connector if connector is not None else ""
        # A gateway operation may retry after connection errors and 5xx: give it several timeouts.
        self._gateway_deadline_s = gateway.timeout_s * 4 + 5.0
        if audit_log is None and capture.audit_log:
            audit_log = AuditLog(capture.audit_log)
        self.audit = AuditWriter(audit_log) if audit_log is not None else None
        self._settings = CaptureSettings(
            today=today(),
            field_timeout_ms=round(capture.field_timeout_s * 1000),
            capture_timeout_ms=round(capture.capture_timeout_s * 1000),
            max_retries=capture.max_retries,
            show_bin=capture.show_bin,
        )
        self._today = today
        self._new_id = new_id
        self._runners: dict[str, CaptureRunner] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._log = get_logger(component="capture")

    def __repr__(self) -> str:
        return f"CaptureService(calls={len(self._runners)}, gateway={'yes' if self.connector else 'no'})"

    @property
    def enabled(self) -> bool:
        """Whether captures can start (a gateway is configured)."""
        return self.connector is not None

    # -- runners ---------------------------------------------------------------------------

    def runner(self, call_id: str) -> CaptureRunner:
        """The call's runner, created on first use."""
        runner = self._runners.get(call_id)
        if runner is None:
            extra: dict[str, Any] = {} if self._new_id is None else {"new_id": self._new_id}
            runner = CaptureRunner(
                call_id,
                settings=self._settings,
                connector=self.connector,
                today=self._today,
                audit=self.audit,
                connector_name=self._connector_name,
                trigger_digits=self.config.trigger_digits if self.connector is not None else "",
                trigger_currency=self.config.currency,
                gateway_deadline_s=self._gateway_deadline_s,
                **extra,
            )
            self._runners[call_id] = runner
        return runner

    def running(self, call_id: str) -> bool:
        """A capture is under way on the call (its timeouts need polling)."""
        return call_id in self._runners

    def running_calls(self) -> list[str]:
        """The calls with a capture under way."""
        return list(self._runners)

    def poll(self, call_id: str, media: KeySource, now_ms: int) -> None:
        """Take the call's key presses since the last poll and apply timeouts due by ``now_ms``.

        Presses of a call with no capture (and no trigger configured) are dropped. Never raises.
        """
        try:
            events: Iterable[Any] = media.drain_events()
        except Exception as exc:
            self._log.error("reading key presses failed", call_id=call_id, error_type=type(exc).__name__)
            return
        runner = self._runners.get(call_id)
        if runner is None and self.config.trigger_digits and self.connector is not None:
            runner = self.runner(call_id)
        if runner is not None:
            runner.feed(events, now_ms)

    # -- commands ----------------------------------------------------------------------------

    def start_capture(
        self,
        call_id: str,
        amount_minor: int,
        currency: str | None,
        reference: str,
        who: str,
        *,
        source: str = "api",
        auto_submit: bool = False,
        media: KeySource | None = None,
        now_ms: int | None = None,
    ) -> str:
        """Start a capture on the call; returns its id. ``currency`` None takes ``[capture] currency``.

        With ``media``, key presses typed before now are dropped first. Raises CaptureError when
        the request is invalid, no gateway is configured, or a capture is already running.
        """
        request = CaptureRequest(
            amount_minor, currency or self.config.currency, reference, who=who, source=source,
            auto_submit=auto_submit,
        )
        runner = self.runner(call_id)
        if media is not None:
            with contextlib.suppress(Exception):
                media.drain_events()
        return runner.start(request, now_ms)

    def clear_capture(self, call_id: str, who: str, *, source: str = "api", now_ms: int | None = None) -> None:
        """Wipe what the caller typed and restart at the card number. Raises CaptureError when refused."""
        self._existing(call_id, "clear").clear(who, source=source, now_ms=now_ms)

    def cancel_capture(self, call_id: str, who: str, *, source: str = "api") -> None:
        """End the capture without paying. Raises CaptureError when refused."""
        self._existing(call_id, "cancel").cancel(who, source=source)

    def submit_capture(self, call_id: str, who: str, *, source: str = "api", now_ms: int | None = None) -> None:
        """Send the completed card to the gateway. Raises CaptureError unless every field is valid."""
        self._existing(call_id, "submit").submit(who, source=source, now_ms=now_ms)

    def _existing(self, call_id: str, command: str) -> CaptureRunner:
        runner = self._runners.get(call_id)
        if runner is None:
            raise CaptureError(f"{command} refused: no capture on this call")
        return runner

    # -- agent view -------------------------------------------------------------------------

    def messages(self, call_id: str) -> asyncio.Queue[dict[str, Any]]:
        """The call's queue of agent messages."""
        return self.runner(call_id).messages()

    def progress(self, call_id: str) -> AsyncIterator[dict[str, Any]]:
        """The call's agent messages as they come, until the call ends."""
        return self.runner(call_id).progress()

    def status(self, call_id: str) -> dict[str, Any] | None:
        """The call's capture state for NG ``query`` (no digits), or None when it never had one."""
        runner = self._runners.get(call_id)
        if runner is None or (runner.state.value == "idle" and not runner.paying):
            return None
        return runner.status()

    # -- life cycle -------------------------------------------------------------------------

    def call_ended(self, call_id: str) -> None:
        """The call is gone: cancel its capture; a payment in flight finishes in the background."""
        runner = self._runners.pop(call_id, None)
        if runner is None:
            return
        task = asyncio.get_running_loop().create_task(runner.close(), name="capture-close")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """End every call's capture, wait for payments in flight, write the queued audit events."""
        for call_id in list(self._runners):
            self.call_ended(call_id)
        if self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)
        if self.audit is not None:
            await self.audit.close()
