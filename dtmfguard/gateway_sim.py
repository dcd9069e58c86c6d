"""The reference payment gateway: the ``http-json`` wire format served over HTTPS, for tests and the demo.

:class:`GatewaySim` is a small asyncio HTTPS server (HTTP/1.1, one request per connection) with
a self-signed certificate for ``localhost``, ``127.0.0.1`` and ``::1`` that it writes at start
into its certificate folder: ``cert.pem`` (the certificate, which is also the CA file clients
trust) and ``key.pem``. It speaks the request and reply shapes documented in
:mod:`dtmfguard.integrations.http_json`:

- ``POST /v1/authorize`` approves a Luhn-valid card number (HTTP 200, ``auth_code``, one charge
  counted) unless it is one of :data:`DECLINED_CARDS`, the public test numbers that decline
  (HTTP 402, ``decline_reason``); a number failing Luhn declines with ``incorrect_number`` and an
  expiry in the past with ``expired_card``.
- ``POST /v1/tokenize`` returns a token (the same for the same card number) for a Luhn-valid
  number, charging nothing.
- Both need an ``Idempotency-Key`` header: the same key with the same body replays the first
  answer (header ``Idempotent-Replayed: true``) without charging again; the same key with another
  body or endpoint is refused with 409. When the simulator was given an ``auth_token`` it requires
  ``Authorization: Bearer <token>``; with an ``hmac_secret`` it requires a valid ``X-Signature``
  no more than :data:`SIGNATURE_TOLERANCE_S` old; otherwise 401.
- ``POST /v1/_faults`` with any of ``{"slow_s": 2.5, "fail_5xx": 1, "drop": 1}`` injects faults
  into the following authorize and tokenize requests (``slow_s`` delays every reply until set back
  to 0; ``fail_5xx`` answers the next n with 503; ``drop`` closes the next n connections without
  a reply). A fault strikes after the request was processed, so the charge has happened: the worst
  case for a client that would retry without its idempotency key. ``GET /v1/_stats`` returns the
  counts. Neither control endpoint asks for authentication: this is a test server.

No card number is logged or kept: a charge is recorded with its brand and last four digits only.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import hmac
import ipaddress
import json
import math
import os
import secrets
import shutil
import signal
import ssl
import string
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dtmfguard.capture.cards import check_expiry, detect_brand, luhn_ok
from dtmfguard.log import get_logger

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8443
SIGNATURE_TOLERANCE_S = 300
MAX_BODY_BYTES = 64 * 1024
CERT_VALID_DAYS = 30
_MAX_HEAD_BYTES = 16 * 1024
_REQUEST_TIMEOUT_S = 10.0

DECLINED_CARDS: Mapping[str, str] = {
    "4000000000000002": "card_declined",
    "4000000000009995": "insufficient_funds",
    "4000000000000069": "expired_card",
    "4000000000000127": "incorrect_cvc",
}
"""Public test card numbers that the simulator declines, with the decline reason it gives."""

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    411: "Length Required",
    413: "Content Too Large",
    503: "Service Unavailable",
}


# --------------------------------------------------------------------------- certificate


def generate_certificate(cert_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write a fresh self-signed certificate and key for localhost into ``cert_dir``.

    Returns the paths of ``cert.pem`` (also the CA file for clients) and ``key.pem`` (mode
    0600). The certificate is an EC P-256 key valid for :data:`CERT_VALID_DAYS` days, with
    subject alternative names ``localhost``, ``127.0.0.1`` and ``::1``.
    """
    # cryptography is imported here so that importing this module stays cheap.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = Path(cert_dir)
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dtmfguard gateway-sim")])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_VALID_DAYS))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        # Its own trust anchor: a CA that may sign nothing but itself.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = folder / "cert.pem"
    key_path = folder / "key.pem"
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(key_bytes)
    os.chmod(key_path, 0o600)  # an existing file keeps its old mode through O_CREAT
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


# --------------------------------------------------------------------------- state


@dataclass(slots=True)
class Faults:
    """Faults injected into the next authorize/tokenize requests (see the module docstring)."""

    slow_s: float = 0.0
    fail_5xx: int = 0
    drop: int = 0


@dataclass(frozen=True, slots=True)
class Charge:
    """One approved authorisation, as the simulator records it (no full card number)."""

    reference: str
    amount_minor: int
    currency: str
    brand: str | None
    last4: str
    idempotency_key: str
    gateway_reference: str


@dataclass(frozen=True, slots=True)
class _Stored:
    """The first answer under one idempotency key, replayed for a retry of the same request."""

    digest: str
    status: int
    body: bytes


@dataclass(slots=True)
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = field(repr=False)


class _BadRequest(Exception):
    def __init__(self, status: int, code: str) -> None:
        super().__init__(code)
        self.status = status
        self.code = code


def _letters(count: int, seed: bytes | None = None) -> str:
    """``count`` lowercase letters: random, or derived from ``seed``. Never digits, so never a card-like run."""
    if seed is None:
        return "".join(secrets.choice(string.ascii_lowercase) for _ in range(count))
    stream = hashlib.shake_256(seed).digest(count)
    return "".join(string.ascii_lowercase[byte % 26] for byte in stream)


def _json(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode("utf-8")


def _error(status: int, code: str) -> tuple[int, bytes]:
    return status, _json({"status": "error", "error": code})


def _valid_signature(secret: str, header: str, body: bytes, now_s: float) -> bool:
    fields = dict(part.partition("=")[::2] for part in header.split(","))
    timestamp, given = fields.get("t", ""), fields.get("v1", "")
    if not timestamp.isdigit() or abs(now_s - int(timestamp)) > SIGNATURE_TOLERANCE_S:
        return False
    expected = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest(), given)


# --------------------------------------------------------------------------- the server


class GatewaySim:
    """The reference gateway, in process: ``async with GatewaySim() as sim: ... sim.url ...``.

    ``charges`` counts approved authorisations (``charge_log`` holds them); ``requests`` counts
    the authorize and tokenize requests received, replays and refused ones included. ``port=0``
    picks a free port. ``cert_dir`` receives ``cert.pem`` and ``key.pem`` (a temporary
    folder, removed on close, when None). ``auth_token`` / ``hmac_secret``: the authentication
    required (none when both are None). ``clock`` (unix seconds) checks signature ages.
    """

    def __init__(
        self,
        *,
        host: str = DEFAULT_HOST,
        port: int = 0,
        cert_dir: str | os.PathLike[str] | None = None,
        auth_token: str | None = None,
        hmac_secret: str | None = None,
        faults: Faults | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.host = host
        self.faults = faults if faults is not None else Faults()
        self.charge_log: list[Charge] = []
        self.requests = 0
        self._port = port
        self._given_cert_dir = cert_dir
        self._cert_dir: Path | None = None
        self._auth_token = auth_token
        self._hmac_secret = hmac_secret
        self._clock = clock
        self._stored: dict[str, _Stored] = {}
        self._token_key = secrets.token_bytes(16)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._log = get_logger(component="gateway-sim")

    # -- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Write the certificate and start listening. Raises OSError when the port is taken."""
        if self._given_cert_dir is None:
            self._cert_dir = Path(tempfile.mkdtemp(prefix="gateway-sim-"))
        else:
            self._cert_dir = Path(self._given_cert_dir)
        cert_path, key_path = generate_certificate(self._cert_dir)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert_path, key_path)
        self._server = await asyncio.start_server(
            self._handle, self.host, self._port, ssl=context, limit=_MAX_HEAD_BYTES
        )
        self._log.info("gateway-sim listening", url=self.url)

    async def close(self) -> None:
        """Stop listening, and remove the temporary certificate folder if there is one."""
        if self._server is not None:
            self._server.close()
            pending = list(self._connections)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None
        if self._given_cert_dir is None and self._cert_dir is not None:
            shutil.rmtree(self._cert_dir, ignore_errors=True)

    async def serve_forever(self) -> None:
        """Serve until cancelled (starting first if needed)."""
        if self._server is None:
            await self.start()
        assert self._server is not None
        await self._server.serve_forever()

    async def __aenter__(self) -> GatewaySim:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- what tests look at ------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port listened on (the real one when constructed with 0)."""
        if self._server is None:
            raise RuntimeError("the simulator is not running")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """The base URL for the ``http-json`` connector, e.g. ``https://127.0.0.1:8443``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    @property
    def ca_file(self) -> Path:
        """The certificate to trust (``cert.pem``)."""
        if self._cert_dir is None:
            raise RuntimeError("the simulator is not running")
        return self._cert_dir / "cert.pem"

    @property
    def charges(self) -> int:
        """How many authorisations were approved (a replayed answer is not a new charge)."""
        return len(self.charge_log)

    def set_faults(self, *, slow_s: float | None = None, fail_5xx: int | None = None, drop: int | None = None) -> None:
        """Change the injected faults; arguments left as None keep their value."""
        if slow_s is not None:
            self.faults.slow_s = slow_s
        if fail_5xx is not None:
            self.faults.fail_5xx = fail_5xx
        if drop is not None:
            self.faults.drop = drop

    # -- HTTP --------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            try:
                async with asyncio.timeout(_REQUEST_TIMEOUT_S):
                    request = await self._read_request(reader)
            except _BadRequest as exc:
                reply: tuple[int, bytes] | None = _error(exc.status, exc.code)
                extra: dict[str, str] = {}
            else:
                reply, extra = await self._dispatch(request)
            if reply is None:  # an injected drop
                transport = writer.transport
                transport.abort()
                return
            status, body = reply
            head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
            head += ["Content-Type: application/json", f"Content-Length: {len(body)}", "Connection: close"]
            head += [f"{name}: {value}" for name, value in extra.items()]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ssl.SSLError):
            pass  # the client went away, stalled, or failed the handshake: nothing to answer
        except asyncio.CancelledError:
            # Only close() cancels a connection, and this task is the root of that connection:
            # ending quietly keeps asyncio from reporting the cancellation as an error.
            writer.transport.abort()
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()

    async def _read_request(self, reader: asyncio.StreamReader) -> _Request:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_line, *header_lines = head.rstrip("\r\n").split("\r\n")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(400, "bad_request_line")
        headers: dict[str, str] = {}
        for line in header_lines:
            name, colon, value = line.partition(":")
            if not colon or not name:
                raise _BadRequest(400, "bad_header")
            headers[name.strip().lower()] = value.strip()
        body = b""
        if parts[0] == "POST":
            length = headers.get("content-length")
            if length is None or not length.isdigit():
                raise _BadRequest(411, "content_length_required")
            if int(length) > MAX_BODY_BYTES:
                raise _BadRequest(413, "body_too_large")
            body = await reader.readexactly(int(length))
        return _Request(parts[0], parts[1], headers, body)

    async def _dispatch(self, request: _Request) -> tuple[tuple[int, bytes] | None, dict[str, str]]:
        routes = {
            "/v1/authorize": "POST",
            "/v1/tokenize": "POST",
            "/v1/_faults": "POST",
            "/v1/_stats": "GET",
        }
        if request.path not in routes:
            return _error(404, "not_found"), {}
        if request.method != routes[request.path]:
            return _error(405, "method_not_allowed"), {"Allow": routes[request.path]}
        if request.path == "/v1/_faults":
            return self._set_faults_from(request.body), {}
        if request.path == "/v1/_stats":
            return (200, _json({"charges": self.charges, "requests": self.requests})), {}
        self.requests += 1
        operation = request.path.rsplit("/", 1)[1]
        reply, replayed = self._payment(operation, request)
        extra = {"Idempotent-Replayed": "true"} if replayed else {}
        self._log.info("gateway-sim request", operation=operation, status=reply[0], replayed=replayed)
        if self.faults.slow_s > 0:
            await asyncio.sleep(self.faults.slow_s)
        if self.faults.drop > 0:
            self.faults.drop -= 1
            return None, {}
        if self.faults.fail_5xx > 0:
            self.faults.fail_5xx -= 1
            return _error(503, "injected_failure"), {}
        return reply, extra

    def _set_faults_from(self, body: bytes) -> tuple[int, bytes]:
        try:
            document = json.loads(body)
        except ValueError:
            return _error(400, "invalid_json")
        if not isinstance(document, dict) or set(document) - {"slow_s", "fail_5xx", "drop"}:
            return _error(400, "unknown_fault")
        slow_s, fail_5xx, drop = document.get("slow_s"), document.get("fail_5xx"), document.get("drop")
        kinds = ((slow_s, int | float), (fail_5xx, int), (drop, int))
        for value, kind in kinds:
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, kind) or not 0 <= value < math.inf
            ):
                return _error(400, "invalid_fault_value")
        self.set_faults(slow_s=slow_s, fail_5xx=fail_5xx, drop=drop)
        return 200, _json(asdict(self.faults))

    # -- payments ----------------------------------------------------------------------------

    def _authenticated(self, request: _Request) -> bool:
        if self._auth_token is not None:
            given = request.headers.get("authorization", "").encode("utf-8", "replace")
            if not hmac.compare_digest(given, f"Bearer {self._auth_token}".encode()):
                return False
        if self._hmac_secret is not None:
            header = request.headers.get("x-signature", "")
            if not _valid_signature(self._hmac_secret, header, request.body, self._clock()):
                return False
        return True

    def _payment(self, operation: str, request: _Request) -> tuple[tuple[int, bytes], bool]:
        """The answer to one authorize/tokenize request, and whether it is a replay."""
        if not self._authenticated(request):
            return _error(401, "unauthorized"), False
        key = request.headers.get("idempotency-key", "")
        if not key:
            return _error(400, "idempotency_key_required"), False
        digest = hashlib.sha256(operation.encode("ascii") + b"\0" + request.body).hexdigest()
        stored = self._stored.get(key)
        if stored is not None:
            if not hmac.compare_digest(stored.digest, digest):
                return _error(409, "idempotency_key_reused"), False
            return (stored.status, stored.body), True
        try:
            document = json.loads(request.body)
        except ValueError:
            return _error(400, "invalid_json"), False
        if not isinstance(document, dict):
            return _error(400, "invalid_json"), False
        if operation == "authorize":
            status, answer = self._authorize(document, key)
        else:
            status, answer = self._tokenize(document)
        body = _json(answer)
        if status in (200, 402):  # a decided answer; a malformed request may be corrected and resent
            self._stored[key] = _Stored(digest, status, body)
        return (status, body), False

    def _card_problem(self, document: Mapping[str, Any]) -> tuple[int, dict[str, Any]] | None:
        card = document.get("card")
        if not isinstance(card, dict):
            return 400, {"status": "error", "error": "card_required"}
        number = card.get("number")
        if not isinstance(number, str) or not (number.isascii() and number.isdigit()) or not 12 <= len(number) <= 19:
            return 400, {"status": "error", "error": "invalid_card_number"}
        if not luhn_ok(number):
            return 402, self._declined("incorrect_number")
        expiry = card.get("expiry")
        if expiry is not None:
            if not isinstance(expiry, str) or len(expiry) != 4 or not (expiry.isascii() and expiry.isdigit()):
                return 400, {"status": "error", "error": "invalid_expiry"}
            today = datetime.date.today()
            if check_expiry(expiry, (today.year, today.month)) is not None:
                return 402, self._declined("expired_card")
        code = card.get("security_code")
        if code is not None and (not isinstance(code, str) or not code.isdigit() or len(code) not in (3, 4)):
            return 400, {"status": "error", "error": "invalid_security_code"}
        return None

    def _declined(self, reason: str) -> dict[str, Any]:
        return {"status": "declined", "decline_reason": reason, "gateway_reference": "simref_" + _letters(16)}

    def _authorize(self, document: Mapping[str, Any], key: str) -> tuple[int, dict[str, Any]]:
        amount = document.get("amount_minor")
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            return 400, {"status": "error", "error": "invalid_amount"}
        currency = document.get("currency")
        if not isinstance(currency, str) or len(currency) != 3 or not (currency.isascii() and currency.isupper()):
            return 400, {"status": "error", "error": "invalid_currency"}
        reference = document.get("reference")
        if not isinstance(reference, str) or not reference:
            return 400, {"status": "error", "error": "invalid_reference"}
        problem = self._card_problem(document)
        if problem is not None:
            return problem
        number: str = document["card"]["number"]
        if number in DECLINED_CARDS:
            return 402, self._declined(DECLINED_CARDS[number])
        gateway_reference = "simref_" + _letters(16)
        brand = detect_brand(number[:6])
        self.charge_log.append(
            Charge(reference, amount, currency, brand.value if brand else None, number[-4:], key, gateway_reference)
        )
        return 200, {
            "status": "approved",
            "auth_code": _letters(6).upper(),
            "gateway_reference": gateway_reference,
        }

    def _tokenize(self, document: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        problem = self._card_problem(document)
        if problem is not None:
            return problem
        number: str = document["card"]["number"]
        token = "tok_" + _letters(24, self._token_key + number.encode("ascii"))
        return 200, {"status": "approved", "token": token, "gateway_reference": "simref_" + _letters(16)}


# --------------------------------------------------------------------------- command line


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as a host and port. Raises ValueError saying why."""
    host, colon, port_text = text.rpartition(":")
    if not colon or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"--listen: expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)


def run(
    host: str,
    port: int,
    cert_dir: str | os.PathLike[str],
    *,
    auth_token: str | None = None,
    hmac_secret: str | None = None,
    announce: Callable[[GatewaySim], None] = lambda sim: None,
) -> int:
    """Serve until SIGTERM (returns 0) or Ctrl-C (KeyboardInterrupt propagates); ``announce`` once listening."""

    async def main() -> None:
        sim = GatewaySim(host=host, port=port, cert_dir=cert_dir, auth_token=auth_token, hmac_secret=hmac_secret)
        async with sim:
            announce(sim)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            with contextlib.suppress(NotImplementedError):  # no signal handlers on some platforms
                loop.add_signal_handler(signal.SIGTERM, stop.set)
            await stop.wait()

    asyncio.run(main())
    return 0
