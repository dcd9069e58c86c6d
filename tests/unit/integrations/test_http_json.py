"""The http-json connector without sockets: settings, request bytes, reply parsing; the registry and hand-off."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from importlib.metadata import EntryPoint
from typing import Any

import pytest

from dtmfguard.capture.cards import Brand, detect_brand
from dtmfguard.capture.machine import CardData
from dtmfguard.capture.sensitive import SensitiveDigits
from dtmfguard.errors import ConfigError
from dtmfguard.integrations import gateway
from dtmfguard.integrations.gateway import (
    GatewayConnector,
    GatewayResult,
    available_connectors,
    load_connector,
    submit_and_wipe,
)
from dtmfguard.integrations.http_json import (
    HttpJsonConnector,
    HttpJsonSettings,
    MalformedReply,
    _Retry,
    check_request,
    encode_body,
    encode_head,
    interpret_reply,
    parse_head,
    sign_body,
)

VISA = "4111111111111111"
AMEX = "378282246310005"
BASE = {"url": "https://gateway.test:9443/api", "auth_token": "secret-token"}


def make_card(number: str = VISA, *, expiry: str | None = "1230", cvv: str | None = "123") -> CardData:
    brand = detect_brand(number[:6])
    assert brand is not None
    return CardData(
        brand,
        SensitiveDigits(number),
        expiry=None if expiry is None else SensitiveDigits(expiry, capacity=4),
        cvv=None if cvv is None else SensitiveDigits(cvv, capacity=4),
    )


def settings(**overrides: Any) -> HttpJsonSettings:
    return HttpJsonSettings.from_mapping({**BASE, **overrides})


class TestSettings:
    def test_defaults(self) -> None:
        parsed = settings()
        assert (parsed.host, parsed.port, parsed.base_path) == ("gateway.test", 9443, "/api")
        assert (parsed.timeout_s, parsed.connect_timeout_s, parsed.retries) == (10.0, 5.0, 2)
        assert (parsed.authorize_path, parsed.tokenize_path) == ("/v1/authorize", "/v1/tokenize")
        assert parsed.host_header == "gateway.test:9443"

    def test_ipv6_host_header(self) -> None:
        assert settings(url="https://[::1]/").host_header == "[::1]"

    @pytest.mark.parametrize(
        ("overrides", "message"),
        [
            ({"url": "http://gateway.test"}, "gateway.url: must start with https://"),
            ({"url": ""}, "gateway.url: required"),
            ({"url": "https://gateway.test/?x=1"}, "gateway.url: needs a host"),
            ({"url": "https://user:pw@gateway.test/"}, "gateway.url: needs a host"),
            ({"url": "https://gateway.test:99999/"}, "gateway.url: not a valid URL"),
            ({"auth_token": None}, "gateway.auth_token: required"),
            ({"auth_token": "bad\r\nX-Injected: 1"}, "gateway.auth_token: must be printable ASCII"),
            ({"timeout_s": 0}, "gateway.timeout_s: must be positive"),
            ({"timeout_s": "10"}, "gateway.timeout_s: must be a number"),
            ({"timeout_s": 1.0, "connect_timeout_s": 2.0}, "gateway.connect_timeout_s: must not exceed"),
            ({"retries": 6}, "gateway.retries: must be a whole number from 0 to 5"),
            ({"retries": True}, "gateway.retries"),
            ({"retry_backoff_s": -1}, "gateway.retry_backoff_s: must be zero or more"),
            ({"authorize_path": "v1/pay"}, "gateway.authorize_path"),
            ({"verify": False}, "gateway.verify: unknown setting"),
            ({"insecure": True}, "gateway.insecure: unknown setting"),
        ],
    )
    def test_refused(self, overrides: dict[str, Any], message: str) -> None:
        with pytest.raises(ConfigError, match=re.escape(message)):
            settings(**overrides)

    def test_connector_key_is_ignored(self) -> None:
        assert settings(connector="http-json").url == BASE["url"]

    def test_hmac_alone_is_enough(self) -> None:
        parsed = settings(auth_token="", hmac_secret="k")
        assert (parsed.auth_token, parsed.hmac_secret) == (None, "k")

    def test_secrets_are_not_in_repr(self) -> None:
        text = repr(settings(hmac_secret="hmac-key"))
        assert "secret-token" not in text
        assert "hmac-key" not in text

    def test_unreadable_ca_file(self, tmp_path: Any) -> None:
        with pytest.raises(ConfigError, match=r"gateway\.ca_file: cannot load"):
            HttpJsonConnector({**BASE, "ca_file": str(tmp_path / "missing.pem")})

    def test_ca_file_without_certificates(self, tmp_path: Any) -> None:
        path = tmp_path / "empty.pem"
        path.write_text("not a certificate\n")
        with pytest.raises(ConfigError, match=r"gateway\.ca_file: cannot load"):
            HttpJsonConnector({**BASE, "ca_file": str(path)})

    def test_verification_is_always_on(self) -> None:
        connector = HttpJsonConnector(BASE)
        context = connector._tls
        assert context.check_hostname
        assert context.verify_mode.name == "CERT_REQUIRED"


class TestRequest:
    def test_authorize_body(self) -> None:
        envelope = {"amount_minor": 1099, "currency": "GBP", "reference": "ord-1"}
        body = encode_body(envelope, make_card())
        assert json.loads(body) == {
            "amount_minor": 1099,
            "currency": "GBP",
            "reference": "ord-1",
            "card": {"brand": "visa", "number": VISA, "expiry": "1230", "security_code": "123"},
        }

    def test_tokenize_body_has_only_the_card(self) -> None:
        card = make_card(AMEX, cvv="1234")
        card.postcode = SensitiveDigits("12345", capacity=5)
        body = encode_body({}, card)
        assert json.loads(body) == {
            "card": {"brand": "amex", "number": AMEX, "expiry": "1230", "security_code": "1234", "postcode": "12345"}
        }

    def test_fields_not_collected_are_absent(self) -> None:
        assert json.loads(encode_body({}, make_card(expiry=None, cvv=None))) == {
            "card": {"brand": "visa", "number": VISA}
        }

    def test_number_is_one_string_of_digits(self) -> None:
        assert f'"number":"{VISA}"'.encode() in encode_body({}, make_card())

    def test_body_is_a_zeroable_buffer(self) -> None:
        assert isinstance(encode_body({}, make_card()), bytearray)

    def test_head(self) -> None:
        head = encode_head(settings(), "/v1/authorize", b"{}", "key-1", 1_700_000_000.5).decode()
        assert head.startswith("POST /api/v1/authorize HTTP/1.1\r\n")
        assert head.endswith("\r\n\r\n")
        for line in (
            "Host: gateway.test:9443",
            "Content-Type: application/json",
            "Content-Length: 2",
            "Idempotency-Key: key-1",
            "Authorization: Bearer secret-token",
        ):
            assert f"\r\n{line}\r\n" in head
        assert "X-Signature" not in head

    def test_hmac_signature_covers_timestamp_and_body(self) -> None:
        body = b'{"card":{}}'
        head = encode_head(settings(auth_token=None, hmac_secret="k3y"), "/v1/tokenize", body, "k", 1_700_000_000.9)
        header = re.search(r"\r\nX-Signature: (\S+)\r\n", head.decode())
        assert header is not None
        expected = hmac.new(b"k3y", b"1700000000." + body, hashlib.sha256).hexdigest()
        assert header.group(1) == f"t=1700000000,v1={expected}"
        assert sign_body("k3y", 1_700_000_000, body) == header.group(1)
        assert "Authorization" not in head.decode()

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"amount_minor": 0}, "amount_minor must be a positive"),
            ({"amount_minor": True}, "amount_minor must be a positive"),
            ({"amount_minor": None}, "amount_minor must be a positive"),
            ({"currency": "gbp"}, "currency must be an ISO 4217"),
            ({"currency": "GBPX"}, "currency must be an ISO 4217"),
            ({"reference": ""}, "reference must be"),
        ],
    )
    def test_bad_authorize_arguments(self, kwargs: dict[str, Any], message: str) -> None:
        arguments: dict[str, Any] = {"amount_minor": 100, "currency": "GBP", "reference": "r", **kwargs}
        reason = check_request(make_card(), "key", **arguments)
        assert reason is not None
        assert message in reason

    @pytest.mark.parametrize("key", ["", "a\r\nb", "k" * 256, "caf\u00e9"])
    def test_bad_idempotency_key(self, key: str) -> None:
        reason = check_request(make_card(), key, operation="tokenize")
        assert reason is not None
        assert "idempotency key" in reason

    def test_wiped_card_is_not_sent(self) -> None:
        card = make_card()
        card.wipe()
        reason = check_request(card, "key", operation="tokenize")
        assert reason is not None
        assert "already wiped" in reason


class TestReply:
    def test_parse_head(self) -> None:
        status, headers = parse_head(b"HTTP/1.1 402 Payment Required\r\nContent-Length: 5\r\nX-A:  b \r\n\r\n")
        assert status == 402
        assert headers == {"content-length": "5", "x-a": "b"}

    @pytest.mark.parametrize(
        "head",
        [
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 20x OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nbad\r\n\r\n",
        ],
    )
    def test_bad_head(self, head: bytes) -> None:
        with pytest.raises(MalformedReply):
            parse_head(head)

    def test_approved_authorize(self) -> None:
        body = json.dumps({"status": "approved", "auth_code": "ABCDEF", "gateway_reference": "ref_1"}).encode()
        assert interpret_reply("authorize", 200, body) == GatewayResult("approved", "ABCDEF", "ref_1")

    def test_approved_tokenize(self) -> None:
        body = json.dumps({"status": "approved", "token": "tok_x"}).encode()
        assert interpret_reply("tokenize", 200, body) == GatewayResult("approved", "tok_x", None)

    @pytest.mark.parametrize("status", [200, 402])
    def test_declined(self, status: int) -> None:
        body = json.dumps({"status": "declined", "decline_reason": "card_declined", "gateway_reference": "r"})
        result = interpret_reply("authorize", status, body.encode())
        assert result == GatewayResult("declined", None, "r", "card_declined")

    def test_gateway_error_status(self) -> None:
        result = interpret_reply("authorize", 200, b'{"status":"error","error":"issuer_unavailable"}')
        assert result == GatewayResult("error", error="the gateway reported an error: issuer_unavailable")

    @pytest.mark.parametrize("status", [500, 502, 503, 504])
    def test_5xx_is_retried(self, status: int) -> None:
        assert interpret_reply("authorize", status, b"") == _Retry(f"gateway answered HTTP {status}")

    @pytest.mark.parametrize(
        ("status", "body", "reason"),
        [
            (400, b'{"error":"invalid_amount"}', "the gateway refused the request (HTTP 400: invalid_amount)"),
            (404, b"<html>", "the gateway refused the request (HTTP 404)"),
            (401, b"", "the gateway refused the credentials (HTTP 401)"),
            (403, b"", "the gateway refused the credentials (HTTP 403)"),
            (409, b"", "idempotency key"),
            (301, b"", "the gateway refused the request (HTTP 301)"),
        ],
    )
    def test_final_errors(self, status: int, body: bytes, reason: str) -> None:
        result = interpret_reply("authorize", status, body)
        assert isinstance(result, GatewayResult)
        assert result.status == "error"
        assert reason in (result.error or "")

    @pytest.mark.parametrize(
        "body",
        [
            b"not json",
            b"[1, 2]",
            b'{"status": "ok"}',
            b'{"status": "approved"}',
            b'{"status": "approved", "auth_code": 123456}',
            b'{"status": "approved", "auth_code": ""}',
            b'{"status": "approved", "auth_code": "A\\nB"}',
            b'{"status": "approved", "auth_code": "A", "gateway_reference": ["x"]}',
            b"[" * 100_000,
        ],
    )
    def test_malformed(self, body: bytes) -> None:
        with pytest.raises(MalformedReply):
            interpret_reply("authorize", 200, body)

    def test_approval_with_402_is_malformed(self) -> None:
        with pytest.raises(MalformedReply):
            interpret_reply("authorize", 402, b'{"status":"approved","auth_code":"A"}')


class TestGatewayResult:
    def test_error_never_holds_digit_runs(self) -> None:
        result = GatewayResult.failure(f"gateway said: card {VISA} refused (4111 1111 1111 1111)")
        assert result.error == "gateway said: card [redacted] refused ([redacted])"

    def test_repr_redacts_token_and_reference(self) -> None:
        text = repr(GatewayResult("approved", f"tok_{VISA}", f"ref-{AMEX}"))
        assert text == "GatewayResult(status='approved', token_or_auth_code='tok_[redacted]', " + (
            "gateway_reference='ref-[redacted]', error=None)"
        )
        assert str(GatewayResult("approved", "123456")) == (
            "GatewayResult(status='approved', token_or_auth_code='[redacted]', gateway_reference=None, error=None)"
        )

    def test_values_are_kept_for_the_runner(self) -> None:
        assert GatewayResult("approved", "123456").token_or_auth_code == "123456"

    def test_unknown_status(self) -> None:
        with pytest.raises(ValueError, match="status must be one of"):
            GatewayResult("maybe")  # type: ignore[arg-type]  # deliberately outside the Literal


class TestRegistry:
    def test_builtin_http_json(self) -> None:
        connector = load_connector("http-json", BASE)
        assert isinstance(connector, HttpJsonConnector)
        assert isinstance(connector, GatewayConnector)
        assert "http-json" in available_connectors()

    def test_unknown_name(self) -> None:
        with pytest.raises(ConfigError, match=r"unknown connector 'stripe'; known connectors: .*http-json"):
            load_connector("stripe", BASE)

    def test_connector_settings_errors_surface(self) -> None:
        with pytest.raises(ConfigError, match=r"gateway\.url"):
            load_connector("http-json", {"auth_token": "t"})

    def test_entry_points_are_found(self, monkeypatch: pytest.MonkeyPatch) -> None:
        points = [EntryPoint("acme", "dtmfguard.integrations.http_json:HttpJsonConnector", gateway.ENTRY_POINT_GROUP)]
        monkeypatch.setattr(gateway, "entry_points", fake_entry_points(points))
        assert isinstance(load_connector("acme", BASE), HttpJsonConnector)
        assert "acme" in available_connectors()

    def test_conflicting_registrations(self, monkeypatch: pytest.MonkeyPatch) -> None:
        points = [
            EntryPoint("acme", "dtmfguard.integrations.http_json:HttpJsonConnector", gateway.ENTRY_POINT_GROUP),
            EntryPoint("acme", "acme_pay:Connector", gateway.ENTRY_POINT_GROUP),
        ]
        monkeypatch.setattr(gateway, "entry_points", fake_entry_points(points))
        with pytest.raises(ConfigError, match="registered more than once"):
            load_connector("acme", BASE)

    def test_broken_registration(self, monkeypatch: pytest.MonkeyPatch) -> None:
        points = [EntryPoint("acme", "no_such_module_here:Connector", gateway.ENTRY_POINT_GROUP)]
        monkeypatch.setattr(gateway, "entry_points", fake_entry_points(points))
        with pytest.raises(ConfigError, match=r"'acme' .* cannot be loaded"):
            load_connector("acme", BASE)

    def test_factory_must_build_a_connector(self, monkeypatch: pytest.MonkeyPatch) -> None:
        points = [EntryPoint("acme", "builtins:dict", gateway.ENTRY_POINT_GROUP)]
        monkeypatch.setattr(gateway, "entry_points", fake_entry_points(points))
        with pytest.raises(ConfigError, match="does not build a gateway connector"):
            load_connector("acme", BASE)


def fake_entry_points(points: list[EntryPoint]) -> Any:
    def select(*, group: str, name: str | None = None) -> list[EntryPoint]:
        return [p for p in points if p.group == group and (name is None or p.name == name)]

    return select


class FakeConnector:
    """Answers (or raises) as told, and records what it saw of the card while it was whole."""

    def __init__(self, outcome: GatewayResult | BaseException | None) -> None:
        self.outcome = outcome
        self.seen_lengths: list[int] = []

    async def _answer(self, card: CardData) -> GatewayResult:
        self.seen_lengths.append(len(card.pan))
        if self.outcome is None:
            await asyncio.Event().wait()  # never answers
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        assert self.outcome is not None
        return self.outcome

    async def authorize(
        self, card: CardData, *, amount_minor: int, currency: str, reference: str, idempotency_key: str
    ) -> GatewayResult:
        return await self._answer(card)

    async def tokenize(self, card: CardData, *, idempotency_key: str) -> GatewayResult:
        return await self._answer(card)


AUTHORIZE: Mapping[str, Any] = {"amount_minor": 1099, "currency": "GBP", "reference": "ord-1", "idempotency_key": "k"}


class TestSubmitAndWipe:
    @pytest.mark.parametrize(
        "outcome",
        [
            GatewayResult("approved", "ABC", "r"),
            GatewayResult("declined", None, "r", "card_declined"),
            GatewayResult.failure("gateway down"),
        ],
        ids=["approved", "declined", "error"],
    )
    async def test_wipes_after_an_answer(self, outcome: GatewayResult) -> None:
        card, connector = make_card(), FakeConnector(outcome)
        assert await submit_and_wipe(connector, card, **AUTHORIZE) == outcome
        assert connector.seen_lengths == [16]
        assert (len(card.pan), len(card.expiry or ""), len(card.cvv or "")) == (0, 0, 0)

    async def test_tokenize(self) -> None:
        card, connector = make_card(), FakeConnector(GatewayResult("approved", "tok"))
        result = await submit_and_wipe(connector, card, operation="tokenize", idempotency_key="k")
        assert result.approved
        assert len(card.pan) == 0

    async def test_wipes_when_the_connector_raises_and_hides_the_message(self) -> None:
        card = make_card()
        connector = FakeConnector(RuntimeError(f"boom {VISA}"))
        result = await submit_and_wipe(connector, card, **AUTHORIZE)
        assert result == GatewayResult.failure("gateway connector failed (RuntimeError)")
        assert len(card.pan) == 0

    async def test_wipes_when_cancelled(self) -> None:
        card = make_card()
        task = asyncio.create_task(submit_and_wipe(FakeConnector(None), card, **AUTHORIZE))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(card.pan) == 0

    @pytest.mark.parametrize(
        ("kwargs", "reason"),
        [
            ({"operation": "authorize", "idempotency_key": "k"}, "authorize needs amount_minor"),
            ({**AUTHORIZE, "operation": "tokenize"}, "tokenize takes no amount"),
            ({"operation": "refund", "idempotency_key": "k"}, "unknown gateway operation 'refund'"),
        ],
    )
    async def test_bad_calls_are_errors_and_still_wipe(self, kwargs: dict[str, Any], reason: str) -> None:
        card, connector = make_card(), FakeConnector(GatewayResult("approved", "A"))
        result = await submit_and_wipe(connector, card, **kwargs)
        assert result.status == "error"
        assert reason in (result.error or "")
        assert connector.seen_lengths == []
        assert len(card.pan) == 0


def test_brand_names_match_the_documented_shape() -> None:
    assert {brand.value for brand in Brand} == {
        "visa",
        "mastercard",
        "amex",
        "discover",
        "diners",
        "jcb",
        "unionpay",
        "maestro",
    }
