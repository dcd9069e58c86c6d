"""The built-in ``http-json`` gateway connector: card data POSTed as JSON over verified TLS.

One operation is one HTTPS ``POST`` (HTTP/1.1, one request per connection) to ``url`` joined with
``authorize_path`` or ``tokenize_path``. TLS always verifies the gateway's certificate and host
name, against the system trust store or only the ``ca_file`` given; there is no setting to turn
that off and no fallback to plain HTTP (PCI DSS v4.0.1 requirement 4.2.1). The request is
authenticated by a bearer token, an HMAC-SHA256 signature of the body, or both. A connection
error (refused, reset, closed before a complete reply, connect timeout) or a 5xx reply is retried
up to ``retries`` times, with a doubling pause, carrying the same ``Idempotency-Key`` so the
gateway never charges twice; a 4xx, a decline, a malformed reply, a TLS failure or no reply
within ``timeout_s`` is final. Nothing the network or the gateway does raises: it comes back as a
``GatewayResult(status="error")`` whose reason holds no digits. The request body is the only
place the card digits (and the security code) are written: never logged, never kept; the body
buffer is zeroed once the gateway has answered.

Settings (the ``[gateway]`` table; ``connector`` is ignored here):

===================== ======================================================================
``url``               base URL, ``https://`` only, e.g. ``https://pay.example.com/api`` (required)
``ca_file``           PEM file of the CA(s) to trust instead of the system store
``auth_token``        sends ``Authorization: Bearer <auth_token>``
``hmac_secret``       sends ``X-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>``
``timeout_s``         the longest wait for one attempt's reply (default 10)
``connect_timeout_s`` the longest wait to connect and finish the TLS handshake (default 5, at most
                      ``timeout_s``)
``retries``           further attempts after a connection error or 5xx (default 2, at most 5)
``retry_backoff_s``   pause before the first retry, doubled before each next one (default 0.25)
``authorize_path``    default ``/v1/authorize``
``tokenize_path``     default ``/v1/tokenize``
===================== ======================================================================

At least one of ``auth_token`` and ``hmac_secret`` is required.

Request (headers ``Content-Type: application/json``, ``Idempotency-Key: <key>``, and the
authentication headers above). ``authorize``::

    {"amount_minor": 1099, "currency": "GBP", "reference": "order-42",
     "card": {"brand": "visa", "number": "4111111111111111", "expiry": "1230",
              "security_code": "123", "postcode": "12345"}}

``tokenize`` sends only ``{"card": {...}}``. ``number`` is one JSON string of digits;
``expiry`` is ``MMYY``; ``brand`` is one of ``visa``, ``mastercard``, ``amex``, ``discover``,
``diners``, ``jcb``, ``unionpay``, ``maestro``; ``expiry``, ``security_code`` and ``postcode``
are present only when the capture collected them.

Reply: HTTP 200 (402 is accepted for a decline) with a JSON object::

    {"status": "approved", "auth_code": "KXRWQB", "gateway_reference": "simref_..."}   authorize
    {"status": "approved", "token": "tok_...", "gateway_reference": "simref_..."}      tokenize
    {"status": "declined", "decline_reason": "card_declined", "gateway_reference": "..."}

``gateway_reference`` and ``decline_reason`` are optional. Any other status code is an error:
5xx is retried; 401/403 (credentials), 409 (the idempotency key was used with another request)
and other 4xx are final, and an ``{"error": "<code>"}`` body, if any, is quoted in the reason.
Redirects are not followed. A reply that echoes the card number is discarded as an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import math
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from dtmfguard import __version__
from dtmfguard.capture.machine import CardData
from dtmfguard.errors import ConfigError
from dtmfguard.integrations.gateway import GatewayResult, Operation
from dtmfguard.log import get_logger

SIGNATURE_HEADER = "X-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_RETRIES = 5
MAX_IDEMPOTENCY_KEY_LENGTH = 255
MAX_REFERENCE_LENGTH = 255
MAX_REPLY_BYTES = 64 * 1024
MAX_REPLY_VALUE_LENGTH = 255
_MAX_HEAD_BYTES = 16 * 1024
_CLOSE_TIMEOUT_S = 1.0
_KNOWN_KEYS = frozenset(
    {
        "connector",
        "url",
        "ca_file",
        "auth_token",
        "hmac_secret",
        "timeout_s",
        "connect_timeout_s",
        "retries",
        "retry_backoff_s",
        "authorize_path",
        "tokenize_path",
    }
)


# --------------------------------------------------------------------------- settings


def _header_safe(text: str) -> bool:
    """Printable ASCII without control characters: safe inside an HTTP header value."""
    return text.isascii() and text.isprintable()


def _optional_text(settings: Mapping[str, Any], key: str) -> str | None:
    value = settings.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"gateway.{key}: must be a string")
    return value


def _number(settings: Mapping[str, Any], key: str, default: float, *, positive: bool) -> float:
    value = settings.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"gateway.{key}: must be a number of seconds")
    if value < 0 or (positive and value == 0):
        raise ConfigError(f"gateway.{key}: must be {'positive' if positive else 'zero or more'}")
    return float(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpJsonSettings:
    """The validated settings of one ``http-json`` connector (see the module docstring).

    Build it with :meth:`from_mapping`; secrets never appear in its ``repr``.
    """

    url: str
    host: str
    port: int
    base_path: str
    ca_file: str | None = None
    auth_token: str | None = field(default=None, repr=False)
    hmac_secret: str | None = field(default=None, repr=False)
    timeout_s: float = 10.0
    connect_timeout_s: float = 5.0
    retries: int = 2
    retry_backoff_s: float = 0.25
    authorize_path: str = "/v1/authorize"
    tokenize_path: str = "/v1/tokenize"

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> HttpJsonSettings:
        """Validate ``settings``; raises ConfigError naming the key for anything wrong or unknown."""
        unknown = sorted(set(settings) - _KNOWN_KEYS)
        if unknown:
            raise ConfigError(f"gateway.{unknown[0]}: unknown setting of the http-json connector")
        url = settings.get("url")
        if not isinstance(url, str) or not url:
            raise ConfigError("gateway.url: required (the gateway's https:// base URL)")
        try:
            parts = urlsplit(url)
            port = parts.port or 443
        except ValueError:
            raise ConfigError("gateway.url: not a valid URL") from None
        if parts.scheme != "https":
            raise ConfigError("gateway.url: must start with https:// (TLS is required)")
        if not parts.hostname or parts.query or parts.fragment or parts.username or parts.password:
            raise ConfigError("gateway.url: needs a host, and no query, fragment or user information")
        auth_token = _optional_text(settings, "auth_token")
        hmac_secret = _optional_text(settings, "hmac_secret")
        if auth_token is None and hmac_secret is None:
            raise ConfigError("gateway.auth_token: required (or gateway.hmac_secret, or both)")
        if auth_token is not None and not _header_safe(auth_token):
            raise ConfigError("gateway.auth_token: must be printable ASCII")
        timeout_s = _number(settings, "timeout_s", 10.0, positive=True)
        connect_timeout_s = _number(settings, "connect_timeout_s", min(5.0, timeout_s), positive=True)
        if connect_timeout_s > timeout_s:
            raise ConfigError("gateway.connect_timeout_s: must not exceed gateway.timeout_s")
        retries = settings.get("retries", 2)
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_RETRIES:
            raise ConfigError(f"gateway.retries: must be a whole number from 0 to {MAX_RETRIES}")
        paths = {}
        for key, default in (("authorize_path", "/v1/authorize"), ("tokenize_path", "/v1/tokenize")):
            path = settings.get(key, default)
            if not isinstance(path, str) or not path.startswith("/") or not _header_safe(path) or " " in path:
                raise ConfigError(f"gateway.{key}: must be a path starting with '/'")
            paths[key] = path
        return cls(
            url=url,
            host=parts.hostname,
            port=port,
            base_path=parts.path.rstrip("/"),
            ca_file=_optional_text(settings, "ca_file"),
            auth_token=auth_token,
            hmac_secret=hmac_secret,
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
            retries=retries,
            retry_backoff_s=_number(settings, "retry_backoff_s", 0.25, positive=False),
            **paths,
        )

    @property
    def host_header(self) -> str:
        """The ``Host`` header value: the host (IPv6 in brackets) and a non-default port."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == 443 else f"{host}:{self.port}"


def client_tls_context(ca_file: str | None) -> ssl.SSLContext:
    """A client TLS context that verifies the certificate chain and the host name (TLS 1.2+).

    With ``ca_file`` only the CAs in that PEM file are trusted. Raises ConfigError when the file
    cannot be read or holds no usable certificate.
    """
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    except OSError as exc:  # ssl.SSLError is an OSError too
        why = exc.strerror or getattr(exc, "reason", None) or type(exc).__name__
        raise ConfigError(f"gateway.ca_file: cannot load {ca_file}: {why}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # create_default_context already sets both; restated because they are the contract here.
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    return context


def sign_body(secret: str, timestamp: int, body: bytes | bytearray) -> str:
    """The ``X-Signature`` value for ``body``: ``t=<timestamp>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii"), hashlib.sha256)
    mac.update(body)
    return f"t={timestamp},v1={mac.hexdigest()}"


# --------------------------------------------------------------------------- request and reply (no I/O)


class MalformedReply(Exception):
    """The gateway's reply is not HTTP/1.x with a JSON body of the documented shape."""


@dataclass(frozen=True, slots=True)
class _Retry:
    """An attempt failed in a way that is safe and useful to retry with the same key."""

    reason: str


def check_request(
    card: CardData,
    idempotency_key: str,
    *,
    amount_minor: int | None = None,
    currency: str | None = None,
    reference: str | None = None,
    operation: Operation = "authorize",
) -> str | None:
    """Why this request must not be sent (a reason without digits), or None when it may be.

    ``amount_minor``, ``currency`` and ``reference`` are checked for ``operation="authorize"``.
    """
    if len(card.pan) == 0:
        return "no card number to send (the card data was already wiped)"
    key_ok = isinstance(idempotency_key, str) and 1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_LENGTH
    if not key_ok or not _header_safe(idempotency_key):
        return f"idempotency key must be 1-{MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII characters"
    if operation == "authorize":
        if isinstance(amount_minor, bool) or not isinstance(amount_minor, int) or amount_minor <= 0:
            return "amount_minor must be a positive whole number of minor units"
        if not isinstance(currency, str) or len(currency) != 3 or not (currency.isascii() and currency.isupper()):
            return "currency must be an ISO 4217 code such as GBP"
        if not isinstance(reference, str) or not 1 <= len(reference) <= MAX_REFERENCE_LENGTH:
            return f"reference must be 1-{MAX_REFERENCE_LENGTH} characters"
    return None


def encode_body(envelope: Mapping[str, object], card: CardData) -> bytearray:
    """The JSON request body: ``envelope``'s members, then ``"card"``, in a zeroable buffer.

    The card digits are copied into the buffer one field at a time (they are ASCII digits, so
    no escaping is needed); the caller zeroes the buffer once the gateway has answered.
    """
    body = bytearray(json.dumps(dict(envelope), separators=(",", ":")).encode("utf-8"))
    del body[-1]  # the closing brace: "card" goes in before it
    if len(body) > 1:
        body += b","
    body += b'"card":{"brand":' + json.dumps(card.brand.value).encode("ascii")
    for name, part in (
        ("number", card.pan),
        ("expiry", card.expiry),
        ("security_code", card.cvv),
        ("postcode", card.postcode),
    ):
        if part is not None and len(part) > 0:
            body += b',"' + name.encode("ascii") + b'":"'
            body += part.reveal().encode("ascii")
            body += b'"'
    body += b"}}"
    return body


def encode_head(
    settings: HttpJsonSettings, path: str, body: bytes | bytearray, idempotency_key: str, now_s: float
) -> bytes:
    """The request line and headers (no card data) for ``body``."""
    lines = [
        f"POST {settings.base_path}{path} HTTP/1.1",
        f"Host: {settings.host_header}",
        f"User-Agent: dtmfguard/{__version__}",
        "Accept: application/json",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        f"{IDEMPOTENCY_HEADER}: {idempotency_key}",
        "Connection: close",
    ]
    if settings.auth_token is not None:
        lines.append(f"Authorization: Bearer {settings.auth_token}")
    if settings.hmac_secret is not None:
        lines.append(f"{SIGNATURE_HEADER}: {sign_body(settings.hmac_secret, int(now_s), body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """Status code and headers (names lower-cased) of a reply head ending in a blank line.

    Raises MalformedReply for anything that is not an HTTP/1.x status line and header lines.
    """
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise MalformedReply("reply head is not text") from None
    status_line, *header_lines = text.rstrip("\r\n").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit() or rest[3:4] not in ("", " "):
        raise MalformedReply("not an HTTP/1.x status line")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise MalformedReply("bad header line")
        headers[name.lower()] = value.strip()
    return int(code), headers


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise MalformedReply("bad chunk size") from None
        if size < 0 or len(body) + size > MAX_REPLY_BYTES:
            raise MalformedReply(f"reply body larger than {MAX_REPLY_BYTES} bytes")
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailer fields, ignored
                pass
            return bytes(body)
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise MalformedReply("chunk not followed by CRLF")


async def read_reply(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes, bytes]:
    """Read one reply: status, headers, body, and the raw head.

    Raises MalformedReply for a bad head or body framing, asyncio.IncompleteReadError when the
    connection closes first.
    """
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise MalformedReply("reply head too long") from None
    if len(head) > _MAX_HEAD_BYTES:
        raise MalformedReply("reply head too long")
    status, headers = parse_head(head)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return status, headers, await _read_chunked(reader), head
    length_text = headers.get("content-length")
    if length_text is not None:
        if not length_text.isdigit():
            raise MalformedReply("bad Content-Length")
        length = int(length_text)
        if length > MAX_REPLY_BYTES:
            raise MalformedReply(f"reply body larger than {MAX_REPLY_BYTES} bytes")
        return status, headers, await reader.readexactly(length), head
    body = await reader.read(MAX_REPLY_BYTES + 1)  # no length: the body runs to the end of the connection
    while len(body) <= MAX_REPLY_BYTES:
        more = await reader.read(MAX_REPLY_BYTES + 1 - len(body))
        if not more:
            break
        body += more
    if len(body) > MAX_REPLY_BYTES:
        raise MalformedReply(f"reply body larger than {MAX_REPLY_BYTES} bytes")
    return status, headers, body, head


def _gateway_code(body: bytes) -> str | None:
    """The ``error`` (or ``decline_reason``) code of a JSON body, shortened and made printable."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict):
        return None
    code = document.get("error", document.get("decline_reason"))
    if not isinstance(code, str) or not code:
        return None
    printable = "".join(char if char.isascii() and char.isprintable() else "?" for char in code)
    return printable[:80]


def _reply_value(document: Mapping[str, object], key: str, *, required: bool) -> str | None:
    value = document.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_REPLY_VALUE_LENGTH or not _header_safe(value):
        need = "required" if value is None else f"must be 1-{MAX_REPLY_VALUE_LENGTH} printable ASCII characters"
        raise MalformedReply(f"{key!r} {need}")
    return value


def interpret_reply(operation: Operation, status: int, body: bytes) -> GatewayResult | _Retry:
    """Turn one HTTP reply into a result, or a reason to retry (5xx)."""
    if 500 <= status <= 599:
        return _Retry(f"gateway answered HTTP {status}")
    if status in (401, 403):
        return GatewayResult.failure(f"the gateway refused the credentials (HTTP {status})")
    if status == 409:
        return GatewayResult.failure(
            "the gateway refused the idempotency key: it was already used for a different request (HTTP 409)"
        )
    if not (200 <= status <= 299 or status == 402):
        code = _gateway_code(body)
        return GatewayResult.failure(f"the gateway refused the request (HTTP {status}{': ' + code if code else ''})")
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise MalformedReply("body is not JSON") from None
    if not isinstance(document, dict):
        raise MalformedReply("body is not a JSON object")
    answer = document.get("status")
    reference = _reply_value(document, "gateway_reference", required=False)
    if answer == "approved" and status != 402:
        key = "auth_code" if operation == "authorize" else "token"
        return GatewayResult("approved", _reply_value(document, key, required=True), reference)
    if answer == "declined":
        return GatewayResult("declined", None, reference, _gateway_code(body))
    if answer == "error":
        code = _gateway_code(body)
        return GatewayResult("error", None, reference, f"the gateway reported an error{': ' + code if code else ''}")
    raise MalformedReply("'status' must be approved, declined or error")


# --------------------------------------------------------------------------- the connector


class HttpJsonConnector:
    """The ``http-json`` connector (see the module docstring for settings and wire format).

    ``HttpJsonConnector(settings)`` raises ConfigError for invalid settings or an unreadable
    ``ca_file``; its methods never raise for network or gateway faults. ``clock`` (unix seconds)
    dates HMAC signatures.
    """

    def __init__(
        self, settings: Mapping[str, Any] | HttpJsonSettings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings if isinstance(settings, HttpJsonSettings) else HttpJsonSettings.from_mapping(settings)
        self._tls = client_tls_context(self.settings.ca_file)
        self._clock = clock
        self._log = get_logger(component="gateway", connector="http-json")

    def __repr__(self) -> str:
        return f"HttpJsonConnector(url={self.settings.url!r})"

    async def authorize(
        self, card: CardData, *, amount_minor: int, currency: str, reference: str, idempotency_key: str
    ) -> GatewayResult:
        """POST ``{amount_minor, currency, reference, card}`` to ``authorize_path``."""
        problem = check_request(
            card, idempotency_key, amount_minor=amount_minor, currency=currency, reference=reference
        )
        if problem is not None:
            return GatewayResult.failure(problem)
        envelope = {"amount_minor": amount_minor, "currency": currency, "reference": reference}
        return await self._post("authorize", self.settings.authorize_path, envelope, card, idempotency_key)

    async def tokenize(self, card: CardData, *, idempotency_key: str) -> GatewayResult:
        """POST ``{card}`` to ``tokenize_path``."""
        problem = check_request(card, idempotency_key, operation="tokenize")
        if problem is not None:
            return GatewayResult.failure(problem)
        return await self._post("tokenize", self.settings.tokenize_path, {}, card, idempotency_key)

    async def _post(
        self, operation: Operation, path: str, envelope: Mapping[str, object], card: CardData, idempotency_key: str
    ) -> GatewayResult:
        body = encode_body(envelope, card)
        # Kept to discard a reply that echoes the card number; zeroed with the body.
        pan = bytearray(card.pan.reveal(), "ascii")
        started = time.monotonic()
        try:
            attempts = self.settings.retries + 1
            reason = ""
            for attempt in range(1, attempts + 1):
                # Signed per attempt: a retry carries a fresh timestamp but the same body and key.
                head = encode_head(self.settings, path, body, idempotency_key, self._clock())
                outcome = await self._attempt(operation, head, body, pan)
                if isinstance(outcome, GatewayResult):
                    self._log.info(
                        "gateway answered",
                        operation=operation,
                        status=outcome.status,
                        attempts=attempt,
                        gateway_reference=outcome.gateway_reference,
                        error=outcome.error,
                        elapsed_ms=round((time.monotonic() - started) * 1000),
                    )
                    return outcome
                reason = outcome.reason
                self._log.warning("gateway attempt failed", operation=operation, attempt=attempt, reason=reason)
                if attempt < attempts:
                    await asyncio.sleep(self.settings.retry_backoff_s * 2 ** (attempt - 1))
            result = GatewayResult.failure(f"{reason}; gave up after {attempts} attempts")
            self._log.error("gateway unavailable", operation=operation, attempts=attempts, error=result.error)
            return result
        finally:
            body[:] = bytes(len(body))
            pan[:] = bytes(len(pan))

    async def _attempt(
        self, operation: Operation, head: bytes, body: bytearray, pan: bytearray
    ) -> GatewayResult | _Retry:
        settings = self.settings
        try:
            async with asyncio.timeout(settings.connect_timeout_s):
                reader, writer = await asyncio.open_connection(
                    settings.host,
                    settings.port,
                    ssl=self._tls,
                    server_hostname=settings.host,
                    limit=_MAX_HEAD_BYTES,
                )
        except TimeoutError:
            return _Retry(f"no connection to the gateway within {settings.connect_timeout_s:g} s")
        except ssl.SSLCertVerificationError as exc:
            return GatewayResult.failure(f"TLS certificate verification failed: {exc.verify_message}")
        except ssl.SSLError as exc:
            return GatewayResult.failure(f"TLS handshake with the gateway failed: {exc.reason or type(exc).__name__}")
        except ConnectionRefusedError:
            return _Retry("the gateway refused the connection")
        except OSError as exc:
            return _Retry(f"cannot connect to the gateway: {exc.strerror or type(exc).__name__}")
        try:
            async with asyncio.timeout(settings.timeout_s):
                writer.write(head)
                writer.write(body)
                await writer.drain()
                status, _headers, reply, raw_head = await read_reply(reader)
        except TimeoutError:
            return GatewayResult.failure(
                f"no reply from the gateway within {settings.timeout_s:g} s; the outcome is unknown "
                "(the same idempotency key returns the gateway's answer)"
            )
        except MalformedReply as exc:
            return GatewayResult.failure(f"malformed reply from the gateway: {exc}")
        except asyncio.IncompleteReadError:
            return _Retry("the gateway closed the connection before a complete reply")
        except ssl.SSLError as exc:
            return _Retry(f"TLS error during the exchange: {exc.reason or type(exc).__name__}")
        except OSError as exc:  # reset, broken pipe
            return _Retry(f"connection to the gateway lost: {exc.strerror or type(exc).__name__}")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                    await writer.wait_closed()
        if pan in raw_head or pan in reply:
            return GatewayResult.failure("the gateway's reply contained the card number; reply discarded")
        try:
            return interpret_reply(operation, status, reply)
        except MalformedReply as exc:
            return GatewayResult.failure(f"malformed reply from the gateway (HTTP {status}): {exc}")
