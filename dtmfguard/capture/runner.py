"""The imperative shell around one call's :class:`~dtmfguard.capture.machine.CaptureMachine`.

A :class:`CaptureRunner` belongs to one call. It takes the call's key presses (the in-band
:class:`~dtmfguard.pipeline.detect.DigitConfirmed` and RFC 4733
:class:`~dtmfguard.protocol.rfc4733.KeyDown` events from
:meth:`~dtmfguard.control.media.CallMedia.drain_events`) and the commands of the agent, the API
and the NG protocol (start, clear, cancel, submit), drives a fresh machine per capture on stream
time, and turns the machine's effects into three kinds of output:

- agent messages: plain dicts on a bounded queue (:meth:`CaptureRunner.messages`), carrying
  counts, brand, validity and at most the masked card number, never a digit typed by the caller;
  when the queue is full the oldest message is dropped (the agent's view is the latest state);
- audit events, handed to an ``audit`` sink (the capture service writes them to the
  hash-chained :class:`~dtmfguard.capture.audit.AuditLog`), with no digits either;
- on :class:`~dtmfguard.capture.machine.CaptureCompleted`, one gateway operation through
  :func:`~dtmfguard.integrations.gateway.submit_and_wipe` (a fresh idempotency key per capture),
  whose outcome becomes a message and an audit event. The card is wiped whatever the outcome; a
  gateway that is down, slow or failing ends the capture with an error message to the agent, and
  the call goes on.

Key presses outside a capture are dropped (they are masked on the audio anyway), except that a
configured trigger sequence typed by the caller starts a capture that tokenizes the card and
submits itself when complete. PCI DSS v4.0.1 requirements 3.3.1, 3.4.1 and 3.5 are kept as in
the machine; this module adds no place where digits could be written.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dtmfguard.capture.audit import AuditError, check_event
from dtmfguard.capture.machine import (
    CancelReason,
    CaptureCancelled,
    CaptureCompleted,
    CaptureMachine,
    CaptureSettings,
    CardData,
    CommandRefused,
    Effect,
    FieldRejected,
    ProgressChanged,
    State,
)
from dtmfguard.errors import CaptureError
from dtmfguard.integrations.gateway import (
    GatewayConnector,
    GatewayResult,
    Operation,
    redact_digit_runs,
    submit_and_wipe,
)
from dtmfguard.log import get_logger
from dtmfguard.pipeline.detect import DigitConfirmed
from dtmfguard.protocol.rfc4733 import KeyDown

__all__ = ["MESSAGE_QUEUE_SIZE", "AuditSink", "CaptureRequest", "CaptureRunner"]

MESSAGE_QUEUE_SIZE = 256
"""Agent messages kept per call; beyond this the oldest is dropped."""
SAMPLES_PER_MS = 8
"""In-band digit positions are 8 kHz sample counts."""
DEFAULT_GATEWAY_DEADLINE_S = 60.0
"""The longest a gateway operation may take, retries included, before the capture gives up on it."""

AuditSink = Callable[[Mapping[str, object]], None]
"""Where audit events go (one dict per event, fields of :data:`~dtmfguard.capture.audit.FIELDS`)."""


def _new_id() -> str:
    """A random uuid4, base32-encoded (26 characters, lower case): no long digit run in it can trip
    the digit filters of the log redactor and the audit trail."""
    return base64.b32encode(uuid.uuid4().bytes).decode("ascii").rstrip("=").lower()


@dataclass(frozen=True, slots=True)
class CaptureRequest:
    """What a capture is for and who asked.

    ``operation`` is ``"authorize"`` (needs ``amount_minor`` > 0, ``currency`` and
    ``reference``) or ``"tokenize"`` (none of them). ``who`` identifies the agent or client
    (printable ASCII, no spaces); ``source`` is ``agent``, ``api``, ``ng`` or ``trigger``.
    ``auto_submit`` sends the card to the gateway as soon as every field is valid.
    Raises CaptureError (naming the field, never its value) for anything invalid.
    """

    amount_minor: int | None
    currency: str | None
    reference: str | None
    who: str
    source: str = "api"
    operation: str = "authorize"
    auto_submit: bool = False

    def __post_init__(self) -> None:
        if self.operation == "authorize":
            if isinstance(self.amount_minor, bool) or not isinstance(self.amount_minor, int) or self.amount_minor <= 0:
                raise CaptureError("capture request: amount must be a positive whole number of minor units")
            if not self.reference:
                raise CaptureError("capture request: a reference is required")
        elif self.operation == "tokenize":
            if self.amount_minor is not None or self.reference is not None:
                raise CaptureError("capture request: a tokenize capture takes no amount or reference")
        else:
            raise CaptureError("capture request: operation must be authorize or tokenize")
        for name, value in (
            ("amount_minor", self.amount_minor),
            ("currency", self.currency),
            ("reference", self.reference),
            ("actor", self.who),
            ("source", self.source),
        ):
            try:
                check_event({"event": "capture_started", name: value})
            except AuditError:
                raise CaptureError(f"capture request: invalid {name}") from None


class CaptureRunner:
    """Runs the captures of one call; see the module docstring.

    ``settings`` is the template of every capture's machine (``today`` and ``auto_submit`` are
    set per capture from ``today()`` and the request). ``connector`` None means no gateway is
    configured: starting a capture is refused. ``audit`` receives audit events. ``new_id``
    makes capture ids and idempotency keys (a base32 ``uuid4`` each). Commands raise CaptureError
    when refused; key presses and ticks never raise.
    """

    def __init__(
        self,
        call_id: str,
        *,
        settings: CaptureSettings,
        connector: GatewayConnector | None,
        today: Callable[[], tuple[int, int]],
        audit: AuditSink | None = None,
        connector_name: str = "",
        trigger_digits: str = "",
        trigger_currency: str | None = None,
        gateway_deadline_s: float = DEFAULT_GATEWAY_DEADLINE_S,
        queue_size: int = MESSAGE_QUEUE_SIZE,
        new_id: Callable[[], str] = _new_id,
    ) -> None:
        self.call_id = call_id
        self._settings = settings
        self._connector = connector
        self._today = today
        self._audit_sink = audit
        self._connector_name = connector_name
        self._trigger = trigger_digits
        self._trigger_currency = trigger_currency
        self._recent: collections.deque[str] = collections.deque(maxlen=max(len(trigger_digits), 1))
        self._gateway_deadline_s = gateway_deadline_s
        self._new_id = new_id
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=queue_size)
        self.messages_dropped = 0
        self._machine: CaptureMachine | None = None
        self._request: CaptureRequest | None = None
        self._capture_id: str | None = None
        self._last_progress: ProgressChanged | None = None
        self._outcome: str | None = None
        self._now_ms = 0
        self._payments: set[asyncio.Task[None]] = set()
        self._closed = False
        self._log = get_logger(component="capture", call_id=call_id)

    def __repr__(self) -> str:
        return f"CaptureRunner(call_id={self.call_id!r}, state={self.state.value!r})"

    # -- state -----------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._machine.state if self._machine is not None else State.IDLE

    @property
    def active(self) -> bool:
        """Whether a capture is collecting or waiting for submit."""
        return self.state in (State.COLLECTING, State.COMPLETE)

    @property
    def paying(self) -> bool:
        """Whether a gateway operation is in flight."""
        return bool(self._payments)

    def status(self) -> dict[str, Any]:
        """The capture as the NG ``query`` reply shows it: no digits, no None values.

        ``state``, and when a capture exists ``capture_id``, ``field``, ``digits_entered``,
        ``expected_length``, ``brand``, ``valid`` (``yes``/``no``), ``masked_pan`` and the
        gateway ``outcome`` (``pending``, ``approved``, ``declined``, ``error``).
        """
        report: dict[str, Any] = {"state": self.state.value}
        if self._capture_id is not None:
            report["capture_id"] = self._capture_id
        field = self._machine.field if self._machine is not None else None
        if field is not None:
            report["field"] = field.value
        progress = self._last_progress
        if progress is not None and self.active:
            report["digits_entered"] = progress.digits_entered
            if progress.expected_length is not None:
                report["expected_length"] = progress.expected_length
            if progress.valid is not None:
                report["valid"] = "yes" if progress.valid else "no"
        if progress is not None:
            if progress.brand is not None:
                report["brand"] = progress.brand.value
            if progress.masked_pan is not None:
                report["masked_pan"] = progress.masked_pan
        if self._outcome is not None:
            report["outcome"] = self._outcome
        return report

    # -- agent messages ----------------------------------------------------------------------

    def messages(self) -> asyncio.Queue[dict[str, Any]]:
        """The queue of agent messages (dicts; each has ``type``, ``call_id``, ``state``)."""
        return self._queue

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        """Agent messages as they come, until the runner is closed and the queue is empty."""
        while not (self._closed and self._queue.empty()):
            try:
                yield await asyncio.wait_for(self._queue.get(), timeout=0.5)
            except TimeoutError:
                continue

    def _send(self, kind: str, **fields: Any) -> None:
        message = {"type": kind, "call_id": self.call_id, "capture_id": self._capture_id, "state": self.state.value}
        message.update(fields)
        if self._queue.full():
            self._queue.get_nowait()
            self.messages_dropped += 1
        self._queue.put_nowait(message)

    def _audit(self, event: str, **fields: Any) -> None:
        if self._audit_sink is None:
            return
        record: dict[str, object] = {"event": event, "call_id": self.call_id, "capture_id": self._capture_id}
        record.update({name: value for name, value in fields.items() if value is not None})
        try:
            self._audit_sink(record)
        except Exception as exc:
            self._log.error("audit event not written", audit_event=event, error_type=type(exc).__name__)

    # -- commands ----------------------------------------------------------------------------

    def start(self, request: CaptureRequest, now_ms: int | None = None) -> str:
        """Start a capture for ``request``; returns its capture id.

        Raises CaptureError when no gateway is configured, a capture is already running or a
        payment is still in flight.
        """
        if self._closed:
            raise CaptureError("the call has ended")
        if self._connector is None:
            raise CaptureError("no payment gateway is configured")
        if self.active or self.paying:
            raise CaptureError(f"a capture is already {'in progress' if self.active else 'being paid'}")
        now = self._time(now_ms)
        settings = dataclasses.replace(self._settings, today=self._today(), auto_submit=request.auto_submit)
        self._machine = CaptureMachine(settings)
        self._request = request
        self._capture_id = self._new_id()
        self._outcome = None
        self._last_progress = None
        self._recent.clear()
        self._audit(
            "capture_started",
            source=request.source,
            actor=request.who,
            operation=request.operation,
            amount_minor=request.amount_minor,
            currency=request.currency,
            reference=request.reference,
            connector=self._connector_name or None,
        )
        self._send(
            "capture_started",
            operation=request.operation,
            amount_minor=request.amount_minor,
            currency=request.currency,
            reference=request.reference,
        )
        self._log.info("capture started", source=request.source, operation=request.operation)
        self._apply(self._machine.start(now), request.source, request.who)
        return self._capture_id

    def clear(self, who: str, *, source: str = "api", now_ms: int | None = None) -> None:
        """Wipe what was typed and restart at the first field. Raises CaptureError when refused."""
        machine = self._need_machine("clear")
        effects = machine.clear(self._time(now_ms))
        self._refuse_if(effects)
        self._audit("capture_cleared", source=source, actor=who)
        self._apply(effects, source, who)

    def cancel(self, who: str, *, source: str = "api", reason: CancelReason | str | None = None) -> None:
        """End the capture without paying; every digit is wiped. Raises CaptureError when refused."""
        machine = self._need_machine("cancel")
        why = reason
        if why is None:
            try:
                why = CancelReason(source)
            except ValueError:
                why = CancelReason.API
        effects = machine.cancel(why)
        self._refuse_if(effects)
        self._apply(effects, source, who)

    def submit(self, who: str, *, source: str = "api", now_ms: int | None = None) -> None:
        """Send the completed card to the gateway. Raises CaptureError unless every field is valid."""
        machine = self._need_machine("submit")
        effects = machine.submit(self._time(now_ms))
        self._refuse_if(effects)
        self._apply(effects, source, who)

    def _need_machine(self, command: str) -> CaptureMachine:
        if self._machine is None:
            raise CaptureError(f"{command} refused: no capture on this call")
        return self._machine

    def _refuse_if(self, effects: tuple[Effect, ...]) -> None:
        for effect in effects:
            if isinstance(effect, CommandRefused):
                # Timeouts that fired before the refusal still count.
                self._apply(tuple(e for e in effects if e is not effect), "system", None)
                raise CaptureError(f"{effect.command} refused: the capture is {effect.state.value}")

    # -- stream ------------------------------------------------------------------------------

    def feed(self, events: Iterable[object], now_ms: int) -> None:
        """Key presses from the call's media, then the timeouts due by ``now_ms``. Never raises.

        In-band digits carry their stream time (their confirmation); RFC 4733 key presses are
        taken at ``now_ms``. Other events (tone ends, key releases) are ignored.
        """
        try:
            for event in events:
                if isinstance(event, DigitConfirmed):
                    self._key(event.key, event.confirmed_sample // SAMPLES_PER_MS)
                elif isinstance(event, KeyDown):
                    self._key(event.key, now_ms)
            self.tick(now_ms)
        except Exception as exc:
            # A bug here must not take the call down; the capture fails closed.
            self._log.error("capture runner failed", error_type=type(exc).__name__)
            self._fail()

    def tick(self, now_ms: int) -> None:
        """Apply the field and capture timeouts due by stream time ``now_ms``."""
        if self._machine is not None and self.active:
            self._apply(self._machine.tick(self._time(now_ms)), "system", None)

    def _key(self, key: str, at_ms: int) -> None:
        now = self._time(at_ms)
        if self._machine is not None and self.active:
            self._apply(self._machine.digit(key, now), "caller", None)
            return
        if not self._trigger or self.paying or self._closed:
            return
        self._recent.append(key)
        if "".join(self._recent) != self._trigger:
            return
        self._recent.clear()
        try:
            self.start(
                CaptureRequest(
                    None, self._trigger_currency, None, who="caller", source="trigger",
                    operation="tokenize", auto_submit=True,
                ),
                now,
            )
        except CaptureError as exc:
            self._log.warning("trigger sequence ignored", reason=str(exc))

    def _time(self, now_ms: int | None) -> int:
        if now_ms is not None and now_ms > self._now_ms:
            self._now_ms = now_ms
        return self._now_ms

    def _fail(self) -> None:
        if self._machine is not None and self.active:
            with contextlib.suppress(Exception):
                self._apply(self._machine.cancel(CancelReason.ERROR), "system", None)

    # -- effects -----------------------------------------------------------------------------

    def _apply(self, effects: tuple[Effect, ...], source: str, who: str | None) -> None:
        for effect in effects:
            if isinstance(effect, ProgressChanged):
                self._last_progress = effect
                self._send(
                    "progress",
                    field=effect.field.value,
                    digits_entered=effect.digits_entered,
                    expected_length=effect.expected_length,
                    brand=effect.brand.value if effect.brand is not None else None,
                    valid=effect.valid,
                    masked_pan=effect.masked_pan,
                )
                if effect.valid and self.state is State.COMPLETE:
                    self._send("capture_complete", masked_pan=effect.masked_pan)
            elif isinstance(effect, FieldRejected):
                self._send(
                    "field_rejected", field=effect.field.value, reason=effect.reason.value,
                    retries_left=effect.retries_left,
                )
                self._audit(
                    "field_rejected", source="caller", field=effect.field.value, reason=effect.reason.value,
                    retries_left=effect.retries_left,
                )
            elif isinstance(effect, CaptureCancelled):
                self._outcome = "cancelled"
                self._send("capture_cancelled", reason=effect.reason.value)
                self._audit("capture_cancelled", source=source, actor=who, reason=effect.reason.value)
                self._log.info("capture cancelled", reason=effect.reason.value)
            elif isinstance(effect, CaptureCompleted):
                self._pay(effect.card, source, who)
            # CommandRefused is raised by the command that caused it (_refuse_if).

    def _pay(self, card: CardData, source: str, who: str | None) -> None:
        request = self._request
        if request is None:
            card.wipe()
            return
        key = self._new_id()
        brand = card.brand.value
        masked_pan = self._last_progress.masked_pan if self._last_progress is not None else None
        self._outcome = "pending"
        self._audit(
            "capture_submitted", source=source, actor=who, operation=request.operation, brand=brand,
            idempotency_key=key, amount_minor=request.amount_minor, currency=request.currency,
            reference=request.reference, connector=self._connector_name or None,
        )
        self._send("capture_submitted", brand=brand, masked_pan=masked_pan)
        try:
            task = asyncio.get_running_loop().create_task(
                self._gateway(card, request, key, brand, self._capture_id), name="capture-gateway"
            )
        except RuntimeError:
            card.wipe()
            failure = GatewayResult.failure("no event loop to reach the payment gateway")
            self._finish(failure, request, brand, key, self._capture_id)
            return
        self._payments.add(task)
        task.add_done_callback(self._payments.discard)

    async def _gateway(
        self, card: CardData, request: CaptureRequest, key: str, brand: str, capture_id: str | None
    ) -> None:
        result: GatewayResult
        try:
            if self._connector is None:
                result = GatewayResult.failure("no payment gateway is configured")
            else:
                operation: Operation = "authorize" if request.operation == "authorize" else "tokenize"
                call = submit_and_wipe(
                    self._connector,
                    card,
                    idempotency_key=key,
                    operation=operation,
                    amount_minor=request.amount_minor if operation == "authorize" else None,
                    currency=request.currency if operation == "authorize" else None,
                    reference=request.reference if operation == "authorize" else None,
                )
                result = await asyncio.wait_for(call, timeout=self._gateway_deadline_s)
        except TimeoutError:
            result = GatewayResult.failure("the payment gateway did not answer in time; outcome unknown")
        except asyncio.CancelledError:
            card.wipe()
            self._finish(GatewayResult.failure("the payment was abandoned"), request, brand, key, capture_id)
            raise
        finally:
            card.wipe()
        self._finish(result, request, brand, key, capture_id)

    def _finish(
        self, result: GatewayResult, request: CaptureRequest, brand: str, key: str, capture_id: str | None
    ) -> None:
        self._outcome = result.status
        code = redact_digit_runs(result.token_or_auth_code) if result.token_or_auth_code else None
        reference = redact_digit_runs(result.gateway_reference) if result.gateway_reference else None
        fields: dict[str, Any] = {"status": result.status, "gateway_reference": reference, "error": result.error}
        if request.operation == "authorize":
            fields["auth_code"] = code
        else:
            fields["token"] = code
        message = {"type": "gateway_result", "call_id": self.call_id, "capture_id": capture_id, "state": "submitted"}
        message.update(fields)
        if self._queue.full():
            self._queue.get_nowait()
            self.messages_dropped += 1
        self._queue.put_nowait(message)
        self._audit(
            "gateway_result", source="system", outcome=result.status, operation=request.operation, brand=brand,
            idempotency_key=key, gateway_reference=reference, error=result.error,
            connector=self._connector_name or None,
        )
        log = self._log.warning if result.status == "error" else self._log.info
        log("capture paid" if result.approved else "payment not approved", outcome=result.status)

    # -- end of call ---------------------------------------------------------------------------

    async def close(self, *, wait_s: float = DEFAULT_GATEWAY_DEADLINE_S) -> None:
        """The call ended: cancel a capture in progress (hangup); let a payment in flight finish.

        A payment still unanswered after ``wait_s`` is abandoned (its card is wiped; the same
        idempotency key lets an operator find out what happened).
        """
        if self._machine is not None and self.active:
            self._apply(self._machine.cancel(CancelReason.HANGUP), "system", None)
        self._closed = True
        self._recent.clear()
        pending = list(self._payments)
        if pending:
            _done, late = await asyncio.wait(pending, timeout=wait_s)
            for task in late:
                task.cancel()
            if late:
                await asyncio.gather(*late, return_exceptions=True)
