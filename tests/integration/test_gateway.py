"""The http-json connector against the reference gateway over real HTTPS on 127.0.0.1.

Every fault the issue lists (gateway down, slow, 5xx, dropped connection, TLS failure, malformed
reply) ends in an error result, never an exception, with the card wiped and nothing charged
twice. Every test also checks, on teardown, that no log line carries a run of a test card's digits.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import signal
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from dtmfguard.capture.cards import detect_brand
from dtmfguard.capture.machine import CardData
from dtmfguard.capture.sensitive import SensitiveDigits
from dtmfguard.gateway_sim import DECLINED_CARDS, GatewaySim, generate_certificate
from dtmfguard.integrations.gateway import GatewayResult, submit_and_wipe
from dtmfguard.integrations.http_json import HttpJsonConnector
from dtmfguard.log import configure_logging

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TOKEN = "test-bearer-token"
VISA = "4111111111111111"
MASTERCARD = "5555555555554444"
AMEX = "378282246310005"
DISCOVER = "6011111111111117"
DECLINE = "4000000000000002"
TEST_PANS = (VISA, MASTERCARD, AMEX, DISCOVER, *DECLINED_CARDS)
PAYMENT: dict[str, Any] = {"amount_minor": 1099, "currency": "GBP", "reference": "order-42"}


def make_card(number: str = VISA, *, expiry: str = "1230", cvv: str | None = None) -> CardData:
    brand = detect_brand(number[:6])
    assert brand is not None
    code = cvv if cvv is not None else ("1234" if brand.value == "amex" else "123")
    return CardData(
        brand,
        SensitiveDigits(number),
        expiry=SensitiveDigits(expiry, capacity=4),
        cvv=SensitiveDigits(code, capacity=4),
    )


def card_runs(number: str) -> set[str]:
    """Every six-digit window of a card number: none may appear in a log line or an error."""
    return {number[start : start + 6] for start in range(len(number) - 5)}


def leaks(text: str) -> list[str]:
    return sorted(run for number in TEST_PANS for run in card_runs(number) if run in text)


def is_wiped(card: CardData) -> bool:
    return all(len(part) == 0 for part in (card.pan, card.expiry, card.cvv) if part is not None)


def connector_for(sim: GatewaySim, **overrides: Any) -> HttpJsonConnector:
    settings: dict[str, Any] = {
        "url": sim.url,
        "ca_file": str(sim.ca_file),
        "auth_token": TOKEN,
        "timeout_s": 3.0,
        "connect_timeout_s": 2.0,
        "retry_backoff_s": 0.01,
    }
    return HttpJsonConnector({**settings, **overrides})


async def authorize(connector: HttpJsonConnector, card: CardData | None = None, key: str = "key-1") -> GatewayResult:
    return await submit_and_wipe(connector, card or make_card(), idempotency_key=key, **PAYMENT)


@pytest.fixture(autouse=True)
def log_stream() -> Iterator[io.StringIO]:
    """Capture every log line of the test as JSON; afterwards, no line may hold card digits."""
    out = io.StringIO()
    configure_logging("debug", "json", out)
    yield out
    configure_logging()
    for line in out.getvalue().splitlines():
        record = json.loads(line)
        record.pop("timestamp", None)  # an ISO time is itself a digit run, and not card data
        assert leaks(json.dumps(record)) == [], line


@pytest.fixture
async def sim() -> AsyncIterator[GatewaySim]:
    async with GatewaySim(auth_token=TOKEN) as running:
        yield running


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@contextlib.asynccontextmanager
async def raw_gateway(cert_dir: Path, reply: bytes) -> AsyncIterator[tuple[str, Path]]:
    """An HTTPS server that answers every request with ``reply``, byte for byte, then closes."""
    cert, key = generate_certificate(cert_dir)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"Content-Length: (\d+)", head)
            await reader.readexactly(int(length.group(1)) if length else 0)
            writer.write(reply)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    try:
        yield f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}", cert
    finally:
        server.close()
        await server.wait_closed()


async def post_json(sim: GatewaySim, path: str, document: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """A plain HTTPS POST to the simulator's control endpoints."""
    context = ssl.create_default_context(cafile=str(sim.ca_file))
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port, ssl=context, server_hostname="127.0.0.1")
    body = json.dumps(document).encode()
    writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    reply = await reader.read()
    writer.close()
    head, _, payload = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


class TestOutcomes:
    @pytest.mark.parametrize("number", [VISA, MASTERCARD, AMEX, DISCOVER])
    async def test_approved(self, sim: GatewaySim, number: str) -> None:
        card = make_card(number)
        result = await authorize(connector_for(sim), card)
        assert result.status == "approved"
        assert re.fullmatch(r"[A-Z]{6}", result.token_or_auth_code or "")
        assert (result.gateway_reference or "").startswith("simref_")
        assert result.error is None
        assert sim.charges == 1
        charge = sim.charge_log[0]
        assert (charge.amount_minor, charge.currency, charge.reference) == (1099, "GBP", "order-42")
        assert (charge.last4, charge.idempotency_key, charge.gateway_reference) == (
            number[-4:],
            "key-1",
            result.gateway_reference,
        )
        assert is_wiped(card)

    @pytest.mark.parametrize(("number", "reason"), sorted(DECLINED_CARDS.items()))
    async def test_declined(self, sim: GatewaySim, number: str, reason: str) -> None:
        card = make_card(number)
        result = await authorize(connector_for(sim), card)
        assert (result.status, result.token_or_auth_code, result.error) == ("declined", None, reason)
        assert sim.charges == 0
        assert sim.requests == 1  # a decline is never retried
        assert is_wiped(card)

    async def test_expired_card_declines(self, sim: GatewaySim) -> None:
        result = await authorize(connector_for(sim), make_card(expiry="0120"))
        assert (result.status, result.error) == ("declined", "expired_card")

    async def test_luhn_failure_declines(self, sim: GatewaySim) -> None:
        result = await authorize(connector_for(sim), make_card("4111111111111112"))
        assert (result.status, result.error) == ("declined", "incorrect_number")

    async def test_tokenize(self, sim: GatewaySim) -> None:
        connector = connector_for(sim)
        first = await submit_and_wipe(connector, make_card(), operation="tokenize", idempotency_key="t-1")
        second = await submit_and_wipe(connector, make_card(), operation="tokenize", idempotency_key="t-2")
        other = await submit_and_wipe(connector, make_card(MASTERCARD), operation="tokenize", idempotency_key="t-3")
        assert first.status == "approved"
        assert re.fullmatch(r"tok_[a-z]{24}", first.token_or_auth_code or "")
        assert first.token_or_auth_code == second.token_or_auth_code != other.token_or_auth_code
        assert sim.charges == 0

    async def test_invalid_request_is_not_sent(self, sim: GatewaySim) -> None:
        card = make_card()
        result = await submit_and_wipe(
            connector_for(sim), card, idempotency_key="k", amount_minor=1099, currency="GBP", reference=""
        )
        assert result == GatewayResult.failure("reference must be 1-255 characters")
        assert sim.requests == 0
        assert is_wiped(card)


class TestIdempotency:
    async def test_retry_after_a_5xx_charges_once(self, sim: GatewaySim) -> None:
        sim.set_faults(fail_5xx=1)  # the first attempt is charged, then answered with 503
        result = await authorize(connector_for(sim))
        assert result.status == "approved"
        assert sim.requests == 2
        assert sim.charges == 1
        assert result.gateway_reference == sim.charge_log[0].gateway_reference

    async def test_5xx_after_every_retry_is_an_error_and_a_later_retry_is_not_charged(self, sim: GatewaySim) -> None:
        sim.set_faults(fail_5xx=3)
        connector = connector_for(sim)
        result = await authorize(connector)
        assert result == GatewayResult.failure("gateway answered HTTP 503; gave up after 3 attempts")
        assert (sim.requests, sim.charges) == (3, 1)
        # Reconciliation: the same key later returns the original approval, no second charge.
        again = await authorize(connector)
        assert again.status == "approved"
        assert again.gateway_reference == sim.charge_log[0].gateway_reference
        assert sim.charges == 1

    async def test_same_key_same_request_replays(self, sim: GatewaySim) -> None:
        connector = connector_for(sim)
        first = await authorize(connector)
        second = await authorize(connector)
        assert first == second
        assert sim.charges == 1

    async def test_same_key_other_request_is_refused(self, sim: GatewaySim) -> None:
        connector = connector_for(sim)
        await authorize(connector)
        result = await authorize(connector, make_card(MASTERCARD))
        assert result.status == "error"
        assert "HTTP 409" in (result.error or "")
        assert sim.charges == 1

    async def test_new_key_is_a_new_charge(self, sim: GatewaySim) -> None:
        connector = connector_for(sim)
        await authorize(connector, key="a")
        await authorize(connector, key="b")
        assert sim.charges == 2


class TestFaults:
    async def test_slow_gateway_times_out_without_retry(self, sim: GatewaySim) -> None:
        sim.set_faults(slow_s=2.0)
        started = time.monotonic()
        result = await authorize(connector_for(sim, timeout_s=0.3, connect_timeout_s=0.3))
        assert time.monotonic() - started < 1.5
        assert result.status == "error"
        assert "no reply from the gateway within 0.3 s" in (result.error or "")
        assert sim.requests == 1

    async def test_dropped_connections_are_retried_then_an_error(self, sim: GatewaySim) -> None:
        sim.set_faults(drop=3)
        result = await authorize(connector_for(sim))
        assert result == GatewayResult.failure(
            "the gateway closed the connection before a complete reply; gave up after 3 attempts"
        )
        assert (sim.requests, sim.charges) == (3, 1)

    async def test_one_dropped_connection_is_retried_with_the_same_key(self, sim: GatewaySim) -> None:
        sim.set_faults(drop=1)
        result = await authorize(connector_for(sim))
        assert result.status == "approved"
        assert (sim.requests, sim.charges) == (2, 1)

    async def test_retries_are_limited_by_settings(self, sim: GatewaySim) -> None:
        sim.set_faults(fail_5xx=5)
        result = await authorize(connector_for(sim, retries=0))
        assert result.error == "gateway answered HTTP 503; gave up after 1 attempts"
        assert sim.requests == 1

    async def test_gateway_down(self) -> None:
        connector = HttpJsonConnector(
            {"url": f"https://127.0.0.1:{free_port()}", "auth_token": TOKEN, "retry_backoff_s": 0.01}
        )
        card = make_card()
        result = await authorize(connector, card)
        assert result == GatewayResult.failure("the gateway refused the connection; gave up after 3 attempts")
        assert is_wiped(card)

    async def test_fault_control_endpoint(self, sim: GatewaySim) -> None:
        status, faults = await post_json(sim, "/v1/_faults", {"fail_5xx": 1, "slow_s": 0})
        assert (status, faults) == (200, {"slow_s": 0, "fail_5xx": 1, "drop": 0})
        assert (await authorize(connector_for(sim))).approved
        assert (sim.requests, sim.charges) == (2, 1)
        assert await post_json(sim, "/v1/_faults", {"drop": -1}) == (
            400,
            {"status": "error", "error": "invalid_fault_value"},
        )

    async def test_stats_endpoint(self, sim: GatewaySim) -> None:
        await authorize(connector_for(sim))
        context = ssl.create_default_context(cafile=str(sim.ca_file))
        reader, writer = await asyncio.open_connection("127.0.0.1", sim.port, ssl=context, server_hostname="127.0.0.1")
        writer.write(b"GET /v1/_stats HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = await reader.read()
        writer.close()
        assert json.loads(reply.partition(b"\r\n\r\n")[2]) == {"charges": 1, "requests": 1}


class TestTls:
    async def test_wrong_ca_is_an_error_without_fallback(self, sim: GatewaySim, tmp_path: Path) -> None:
        other_ca, _ = generate_certificate(tmp_path / "other")
        card = make_card()
        result = await authorize(connector_for(sim, ca_file=str(other_ca)), card)
        assert result.status == "error"
        assert (result.error or "").startswith("TLS certificate verification failed")
        assert sim.requests == 0  # not retried, and nothing reached the gateway
        assert is_wiped(card)

    async def test_system_trust_store_does_not_trust_the_simulator(self, sim: GatewaySim) -> None:
        result = await authorize(connector_for(sim, ca_file=None))
        assert (result.error or "").startswith("TLS certificate verification failed")
        assert sim.requests == 0

    async def test_host_name_is_checked(self) -> None:
        try:
            running = GatewaySim(host="127.0.0.2", auth_token=TOKEN)
            await running.start()
        except OSError:
            pytest.skip("127.0.0.2 is not a loopback address here")
        try:
            result = await authorize(connector_for(running))
        finally:
            await running.close()
        assert (result.error or "").startswith("TLS certificate verification failed")
        assert "mismatch" in (result.error or "")


class TestMalformedReplies:
    @pytest.mark.parametrize(
        ("reply", "reason"),
        [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nnot json", "malformed reply from the gateway (HTTP 200)"),
            (
                b'HTTP/1.1 200 OK\r\nContent-Length: 18\r\n\r\n{"status":"maybe"}',
                "'status' must be approved, declined or error",
            ),
            (
                b'HTTP/1.1 200 OK\r\nContent-Length: 21\r\n\r\n{"status":"approved"}',
                "'auth_code' required",
            ),
            (b"garbage\r\n\r\n", "malformed reply from the gateway: not an HTTP/1.x status line"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n", "larger than"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        ],
    )
    async def test_malformed_reply_is_an_error(self, tmp_path: Path, reply: bytes, reason: str) -> None:
        card = make_card()
        async with raw_gateway(tmp_path, reply) as (url, ca):
            result = await authorize(HttpJsonConnector({"url": url, "ca_file": str(ca), "auth_token": TOKEN}), card)
        assert result.status == "error"
        assert reason in (result.error or "")
        assert is_wiped(card)

    async def test_truncated_reply_is_retried_then_an_error(self, tmp_path: Path) -> None:
        reply = b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"status":'
        async with raw_gateway(tmp_path, reply) as (url, ca):
            connector = HttpJsonConnector({"url": url, "ca_file": str(ca), "auth_token": TOKEN, "retry_backoff_s": 0})
            result = await authorize(connector)
        assert result.error == "the gateway closed the connection before a complete reply; gave up after 3 attempts"

    async def test_reply_echoing_the_card_number_is_discarded(self, tmp_path: Path) -> None:
        body = json.dumps({"status": "approved", "auth_code": "ABCDEF", "gateway_reference": f"ref-{VISA}"}).encode()
        reply = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        async with raw_gateway(tmp_path, reply) as (url, ca):
            result = await authorize(HttpJsonConnector({"url": url, "ca_file": str(ca), "auth_token": TOKEN}))
        assert result == GatewayResult.failure("the gateway's reply contained the card number; reply discarded")

    @pytest.mark.parametrize(
        "reply",
        [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'10\r\n{"status":"appro\r\n1a\r\nved","auth_code":"ABCDEF"}\r\n0\r\n\r\n',
            b'HTTP/1.0 200 OK\r\n\r\n{"status":"approved","auth_code":"ABCDEF"}',
        ],
        ids=["chunked", "until-close"],
    )
    async def test_other_framings_are_understood(self, tmp_path: Path, reply: bytes) -> None:
        async with raw_gateway(tmp_path, reply) as (url, ca):
            result = await authorize(HttpJsonConnector({"url": url, "ca_file": str(ca), "auth_token": TOKEN}))
        assert result == GatewayResult("approved", "ABCDEF", None)


class TestAuthentication:
    async def test_wrong_bearer_token_is_refused_and_not_retried(self, sim: GatewaySim) -> None:
        result = await authorize(connector_for(sim, auth_token="wrong"))
        assert result == GatewayResult.failure("the gateway refused the credentials (HTTP 401)")
        assert (sim.requests, sim.charges) == (1, 0)

    async def test_hmac_signature(self) -> None:
        async with GatewaySim(hmac_secret="hmac-secret") as running:
            good = await authorize(connector_for(running, auth_token=None, hmac_secret="hmac-secret"), key="a")
            bad = await authorize(connector_for(running, auth_token=None, hmac_secret="other"), key="b")
        assert good.approved
        assert bad.error == "the gateway refused the credentials (HTTP 401)"

    async def test_stale_hmac_signature_is_refused(self) -> None:
        async with GatewaySim(hmac_secret="hmac-secret", clock=lambda: time.time() + 3600) as running:
            result = await authorize(connector_for(running, auth_token=None, hmac_secret="hmac-secret"))
        assert result.error == "the gateway refused the credentials (HTTP 401)"

    async def test_bearer_and_hmac_together(self) -> None:
        async with GatewaySim(auth_token=TOKEN, hmac_secret="hmac-secret") as running:
            both = await authorize(connector_for(running, hmac_secret="hmac-secret"), key="a")
            token_only = await authorize(connector_for(running), key="b")
        assert both.approved
        assert token_only.status == "error"

    async def test_retry_is_signed_afresh(self) -> None:
        clock_s = [time.time()]

        def clock() -> float:
            clock_s[0] += 1.0
            return clock_s[0]

        async with GatewaySim(hmac_secret="hmac-secret") as running:
            running.set_faults(fail_5xx=1)
            settings = {
                "url": running.url,
                "ca_file": str(running.ca_file),
                "hmac_secret": "hmac-secret",
                "retry_backoff_s": 0.0,
            }
            result = await authorize(HttpJsonConnector(settings, clock=clock))
        assert result.approved
        assert running.charges == 1


class TestNoDigitsAnywhere:
    async def test_every_outcome_leaves_no_card_digits(self, sim: GatewaySim, log_stream: io.StringIO) -> None:
        connector = connector_for(sim, timeout_s=0.3, connect_timeout_s=0.3)
        texts: list[str] = []
        scenarios: list[tuple[str, dict[str, Any]]] = [
            (VISA, {}),
            (DECLINE, {}),
            (MASTERCARD, {"fail_5xx": 3}),
            (AMEX, {"drop": 3}),
            (DISCOVER, {"slow_s": 1.0}),
        ]
        for index, (number, faults) in enumerate(scenarios):
            sim.set_faults(slow_s=0, fail_5xx=0, drop=0)
            sim.set_faults(**faults)
            card = make_card(number)
            result = await authorize(connector, card, key=f"k{index}")
            texts += [repr(result), str(result), result.error or ""]
            assert is_wiped(card)
        assert leaks("\n".join(texts)) == []
        assert len(log_stream.getvalue().splitlines()) >= len(scenarios)  # the scan below is not vacuous


class TestCommand:
    async def test_gateway_sim_command(self, tmp_path: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "dtmfguard",
            "gateway-sim",
            "--listen",
            "127.0.0.1:0",
            "--cert-dir",
            str(tmp_path / "certs"),
            "--auth-token",
            TOKEN,
            cwd=tmp_path,
            env=env,
            stderr=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
        )
        assert process.stderr is not None
        try:
            async with asyncio.timeout(60):
                while True:
                    line = (await process.stderr.readline()).decode()
                    assert line, "gateway-sim exited before listening"
                    found = re.search(r"listening on (https://127\.0\.0\.1:\d+) \(CA file: ([^;]+);", line)
                    if found:
                        break
            url, ca_file = found.group(1), found.group(2)
            assert Path(ca_file) == tmp_path / "certs" / "cert.pem"
            assert (tmp_path / "certs" / "key.pem").stat().st_mode & 0o077 == 0
            connector = HttpJsonConnector({"url": url, "ca_file": ca_file, "auth_token": TOKEN})
            assert (await authorize(connector)).approved
        finally:
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                code = await process.wait()
        assert code == 0

    def test_bad_listen_address(self, capsys: pytest.CaptureFixture[str]) -> None:
        from dtmfguard import cli

        assert cli.main(["gateway-sim", "--listen", "localhost"]) == 2
        assert "expected HOST:PORT" in capsys.readouterr().err
