"""Payment gateway connectors: the interface, the result type, the registry, and the hand-off.

A capture that completes hands its :class:`~dtmfguard.capture.machine.CardData` to one
:class:`GatewayConnector`, which ``authorize``\\ s a payment or ``tokenize``\\ s the card and
answers with a :class:`GatewayResult`: approved, declined or error, plus the gateway's
authorisation code or token and its own reference. Connectors are plugins: a distribution
registers a factory (a callable taking the ``[gateway]`` settings mapping, usually the class
itself) under the entry-point group ``dtmfguard.gateways``, and :func:`load_connector` finds it
by the name set in ``[gateway] connector``. The built-in ``http-json`` connector
(:mod:`dtmfguard.integrations.http_json`) is found even when dtmfguard runs from a source tree
that was never installed.

PCI DSS v4.0.1: this is the one place where card digits leave the process (requirement 4.2.1,
strong cryptography in transit, is the connector's job); :func:`submit_and_wipe` makes sure the
digits are wiped as soon as the gateway has answered, whatever the outcome (3.3.1: no sensitive
authentication data after authorisation). A :class:`GatewayResult` never shows a run of six or
more digits in its ``repr``/``str``, and its ``error`` text never holds one at all.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Literal, Protocol, TypeAlias, runtime_checkable

from dtmfguard.capture.machine import CardData
from dtmfguard.errors import ConfigError
from dtmfguard.log import get_logger

ENTRY_POINT_GROUP = "dtmfguard.gateways"
"""The entry-point group connectors register under (``name = package.module:Factory``)."""

BUILTIN_CONNECTORS: Mapping[str, str] = {"http-json": "dtmfguard.integrations.http_json:HttpJsonConnector"}
"""Connectors shipped with dtmfguard, by name: ``module:attribute`` of their factory."""

GatewayStatus: TypeAlias = Literal["approved", "declined", "error"]
Operation: TypeAlias = Literal["authorize", "tokenize"]

STATUSES: tuple[GatewayStatus, ...] = ("approved", "declined", "error")
REDACTED = "[redacted]"

# The same blunt rule as the log redactor: six or more digits, optionally split by single spaces
# or dashes, are treated as possible card digits.
_DIGIT_RUN = re.compile(r"\d(?:[ -]?\d){5,}")


def redact_digit_runs(text: str) -> str:
    """Return ``text`` with every run of six or more digits replaced by ``[redacted]``."""
    return _DIGIT_RUN.sub(REDACTED, text)


@dataclass(frozen=True, slots=True)
class GatewayResult:
    """What the gateway answered (or why there is no answer).

    ``status`` is ``"approved"``, ``"declined"`` or ``"error"``. ``token_or_auth_code`` is the
    authorisation code of an approved ``authorize`` or the token of an approved ``tokenize``;
    ``gateway_reference`` is the gateway's own id for the operation (both as the gateway sent them,
    for the runner and the audit trail). ``error`` says why, without digits: for ``"error"`` the
    reason the operation failed (the outcome of an ``authorize`` whose reply never came is
    unknown: retrying later with the same idempotency key returns the gateway's original answer);
    for ``"declined"`` the gateway's decline reason code when it gave one.

    Construction redacts digit runs in ``error``; ``repr``/``str`` also redact them in the token
    and the reference. Raises ValueError for an unknown status.
    """

    status: GatewayStatus
    token_or_auth_code: str | None = None
    gateway_reference: str | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        if self.error is not None:
            # Frozen: the one sanctioned way to normalise a field.
            object.__setattr__(self, "error", redact_digit_runs(self.error))

    @property
    def approved(self) -> bool:
        """Whether the gateway approved the operation."""
        return self.status == "approved"

    @classmethod
    def failure(cls, reason: str) -> GatewayResult:
        """An ``"error"`` result with ``reason`` (digit runs are redacted)."""
        return cls("error", error=reason)

    def __repr__(self) -> str:
        def show(value: str | None) -> str:
            return "None" if value is None else repr(redact_digit_runs(value))

        return (
            f"GatewayResult(status={self.status!r}, token_or_auth_code={show(self.token_or_auth_code)}, "
            f"gateway_reference={show(self.gateway_reference)}, error={show(self.error)})"
        )

    def __str__(self) -> str:
        return repr(self)


@runtime_checkable
class GatewayConnector(Protocol):
    """A payment gateway, as the capture runner sees it.

    Both methods send the card's digits to the gateway and return its answer. They must not
    raise for anything the network or the gateway does (unreachable, slow, TLS failure, 5xx,
    malformed reply): those come back as ``status="error"`` with a reason. They must not wipe
    ``card`` (the caller owns it: use :func:`submit_and_wipe`), log it, keep it, or retry from
    anything but memory. ``idempotency_key`` identifies the operation: a retry, by the connector
    or later by an operator, carries the same key so the gateway never charges twice.
    """

    async def authorize(
        self, card: CardData, *, amount_minor: int, currency: str, reference: str, idempotency_key: str
    ) -> GatewayResult:
        """Authorise ``amount_minor`` (minor units of ISO 4217 ``currency``) for the merchant ``reference``."""
        ...

    async def tokenize(self, card: CardData, *, idempotency_key: str) -> GatewayResult:
        """Exchange the card for a reusable token; no money moves."""
        ...


ConnectorFactory: TypeAlias = Callable[[Mapping[str, Any]], GatewayConnector]


def available_connectors() -> dict[str, str]:
    """Every connector name that :func:`load_connector` accepts, with its ``module:attribute``."""
    found = dict(BUILTIN_CONNECTORS)
    for point in entry_points(group=ENTRY_POINT_GROUP):
        found[point.name] = point.value
    return found


def _load_target(target: str, name: str) -> ConnectorFactory:
    module_name, _, attribute = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attribute.split(".") if attribute else ():
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"gateway.connector: connector {name!r} ({target}) cannot be loaded: {exc}") from None
    if not callable(obj):
        raise ConfigError(f"gateway.connector: connector {name!r} ({target}) is not callable")
    factory: ConnectorFactory = obj
    return factory


def load_connector(name: str, settings: Mapping[str, Any]) -> GatewayConnector:
    """Build the connector registered as ``name`` with ``settings`` (the ``[gateway]`` table).

    Looks in the ``dtmfguard.gateways`` entry points, then in :data:`BUILTIN_CONNECTORS`. Raises
    ConfigError for an unknown name (listing the known ones), for a name registered twice with
    different targets, for a factory that cannot be imported, and for whatever ConfigError the
    connector raises about its settings.
    """
    targets = {point.value for point in entry_points(group=ENTRY_POINT_GROUP, name=name)}
    if len(targets) > 1:
        raise ConfigError(
            f"gateway.connector: {name!r} is registered more than once ({', '.join(sorted(targets))}); "
            "uninstall one of the distributions"
        )
    target = targets.pop() if targets else BUILTIN_CONNECTORS.get(name)
    if target is None:
        known = ", ".join(sorted(available_connectors())) or "none"
        raise ConfigError(f"gateway.connector: unknown connector {name!r}; known connectors: {known}")
    connector = _load_target(target, name)(settings)
    if not isinstance(connector, GatewayConnector):
        raise ConfigError(f"gateway.connector: {name!r} ({target}) does not build a gateway connector")
    return connector


async def submit_and_wipe(
    connector: GatewayConnector,
    card: CardData,
    *,
    idempotency_key: str,
    operation: Operation = "authorize",
    amount_minor: int | None = None,
    currency: str | None = None,
    reference: str | None = None,
) -> GatewayResult:
    """Send ``card`` to the gateway, then wipe it, whatever happened.

    ``operation="authorize"`` needs ``amount_minor``, ``currency`` and ``reference``;
    ``"tokenize"`` takes none of them. The card is wiped in a ``finally`` block: after an
    approval, a decline, an error result, an exception from the connector, or cancellation of
    the calling task. Never raises except :class:`asyncio.CancelledError` (and other
    ``BaseException``\\ s): a connector that raises is reported as an ``"error"`` result naming
    only the exception type (its message could hold anything).
    """
    log = get_logger(component="gateway", operation=operation)
    try:
        if operation == "authorize":
            if amount_minor is None or currency is None or reference is None:
                return GatewayResult.failure("authorize needs amount_minor, currency and reference")
            return await connector.authorize(
                card,
                amount_minor=amount_minor,
                currency=currency,
                reference=reference,
                idempotency_key=idempotency_key,
            )
        if operation == "tokenize":
            if amount_minor is not None or currency is not None or reference is not None:
                return GatewayResult.failure("tokenize takes no amount, currency or reference")
            return await connector.tokenize(card, idempotency_key=idempotency_key)
        return GatewayResult.failure(f"unknown gateway operation {operation!r}")
    except Exception as exc:
        # The message is not logged or returned: a third-party connector may put anything in it.
        log.error("gateway connector raised", error_type=type(exc).__name__)
        return GatewayResult.failure(f"gateway connector failed ({type(exc).__name__})")
    finally:
        card.wipe()
