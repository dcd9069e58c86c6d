"""Tests of the capture runner: key presses and commands in, agent messages, audit events and one
gateway call out, with a fake connector and stream time passed in (no sleeping)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import pytest

from dtmfguard.capture.machine import CaptureSettings, CardData, State
from dtmfguard.capture.runner import CaptureRequest, CaptureRunner
from dtmfguard.errors import CaptureError
from dtmfguard.integrations.gateway import GatewayResult
from dtmfguard.pipeline.detect import DigitConfirmed, DigitEnded
from dtmfguard.protocol.rfc4733 import KeyDown, KeyUp

PAN = "4111111111111111"  # public Visa test number
EXPIRY = "1230"
CODE = "123"


class FakeConnector:
    def __init__(self, result: GatewayResult | None = None, *, delay_s: float = 0.0, raises: bool = False) -> None:
        self.result = result or GatewayResult("approved", "AUTHOK", "simref_abc")
        self.delay_s = delay_s
        self.raises = raises
        self.calls: list[dict[str, Any]] = []
        self.cards: list[CardData] = []

    async def authorize(
        self, card: CardData, *, amount_minor: int, currency: str, reference: str, idempotency_key: str
    ) -> GatewayResult:
        self.cards.append(card)
        self.calls.append(
            {
                "number_ok": card.pan.reveal() == PAN,
                "expiry_ok": card.expiry is not None and card.expiry.reveal() == EXPIRY,
                "code_ok": card.cvv is not None and card.cvv.reveal() == CODE,
                "amount_minor": amount_minor,
                "currency": currency,
                "reference": reference,
                "key": idempotency_key,
            }
        )
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.raises:
            raise RuntimeError("boom " + PAN)
        return self.result

    async def tokenize(self, card: CardData, *, idempotency_key: str) -> GatewayResult:
        self.cards.append(card)
        self.calls.append({"tokenize": True, "number_ok": card.pan.reveal() == PAN, "key": idempotency_key})
        return GatewayResult("approved", "tok_abc", "simref_tok")


def make_runner(connector: FakeConnector | None, audit: list[Mapping[str, object]], **kwargs: Any) -> CaptureRunner:
    return CaptureRunner(
        "call-a",
        settings=CaptureSettings(today=(2026, 11), field_timeout_ms=5000, capture_timeout_ms=60000),
        connector=connector,
        today=lambda: (2026, 11),
        audit=audit.append,
        connector_name="fake",
        **kwargs,
    )


def inband(keys: str, start_ms: int) -> list[object]:
    events: list[object] = []
    for i, key in enumerate(keys):
        at = (start_ms + 100 * i) * 8
        events += [DigitConfirmed(key, at - 240, at), DigitEnded(key, at - 240, at, at + 400)]
    return events


def drain(runner: CaptureRunner) -> list[dict[str, Any]]:
    queue = runner.messages()
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


def assert_no_digits(*texts: str) -> None:
    for text in texts:
        for secret in (PAN[:6], PAN[6:12], "4111 1111", EXPIRY, "=" + CODE, '"' + CODE):
            assert secret not in text, secret


REQUEST = CaptureRequest(1250, "GBP", "order-A", who="agent-7", source="api")


class TestHappyPath:
    async def test_agent_submits_and_gateway_approves(self) -> None:
        audit: list[Mapping[str, object]] = []
        connector = FakeConnector()
        runner = make_runner(connector, audit)
        runner.start(REQUEST, 0)
        runner.feed(inband(PAN, 1000), 3000)
        runner.feed(inband(EXPIRY + CODE, 4000), 5000)
        assert runner.state is State.COMPLETE
        assert runner.status()["masked_pan"].endswith("1111")
        runner.submit("agent-7", now_ms=5100)
        await asyncio.sleep(0)
        await runner.close()
        assert len(connector.calls) == 1
        call = connector.calls[0]
        assert call["number_ok"]
        assert call["expiry_ok"]
        assert call["code_ok"]
        assert (call["amount_minor"], call["currency"], call["reference"]) == (1250, "GBP", "order-A")
        assert len(call["key"]) == 26
        assert call["key"].isalnum()
        assert len(connector.cards[0].pan) == 0  # wiped
        messages = drain(runner)
        kinds = [m["type"] for m in messages]
        assert kinds[0] == "capture_started"
        assert "capture_complete" in kinds
        assert kinds[-2:] == ["capture_submitted", "gateway_result"]
        assert messages[-1]["status"] == "approved"
        assert messages[-1]["auth_code"] == "AUTHOK"
        events = [e["event"] for e in audit]
        assert events == ["capture_started", "capture_submitted", "gateway_result"]
        assert audit[2]["outcome"] == "approved"
        assert audit[1]["idempotency_key"] == call["key"]
        assert runner.status()["outcome"] == "approved"
        assert_no_digits(json.dumps(messages), json.dumps(audit), repr(runner), json.dumps(runner.status()))

    async def test_rfc4733_key_presses_count_once_each(self) -> None:
        audit: list[Mapping[str, object]] = []
        runner = make_runner(FakeConnector(), audit)
        runner.start(REQUEST, 0)
        events: list[object] = []
        for key in PAN[:5]:
            events += [KeyDown(key, 1000), KeyUp(key, 1000, 800)]
        runner.feed(events, 200)
        assert runner.status()["digits_entered"] == 5
        assert runner.status()["brand"] == "visa"

    async def test_auto_submit(self) -> None:
        connector = FakeConnector()
        runner = make_runner(connector, [])
        runner.start(CaptureRequest(99, "EUR", "ref-B", who="kamailio", source="ng", auto_submit=True), 0)
        runner.feed(inband(PAN + EXPIRY + CODE, 100), 4000)
        await runner.close()
        assert len(connector.calls) == 1
        assert connector.calls[0]["currency"] == "EUR"


class TestOutsideCapture:
    async def test_digits_before_start_are_dropped(self) -> None:
        runner = make_runner(FakeConnector(), [])
        runner.feed(inband("4111", 0), 500)
        assert runner.state is State.IDLE
        runner.start(REQUEST, 600)
        assert runner.status()["digits_entered"] == 0

    async def test_trigger_starts_a_tokenize_capture(self) -> None:
        connector = FakeConnector()
        audit: list[Mapping[str, object]] = []
        runner = make_runner(connector, audit, trigger_digits="*9", trigger_currency="GBP")
        runner.feed(inband("1*9", 0), 500)
        assert runner.state is State.COLLECTING
        runner.feed(inband(PAN + EXPIRY + CODE, 1000), 5000)
        await runner.close()
        assert connector.calls == [{"tokenize": True, "number_ok": True, "key": connector.calls[0]["key"]}]
        assert audit[0]["source"] == "trigger"
        assert drain(runner)[-1]["token"] == "tok_abc"


class TestCommands:
    async def test_no_gateway_refuses_start(self) -> None:
        runner = make_runner(None, [])
        with pytest.raises(CaptureError, match="no payment gateway"):
            runner.start(REQUEST, 0)

    async def test_second_start_and_early_submit_are_refused(self) -> None:
        runner = make_runner(FakeConnector(), [])
        runner.start(REQUEST, 0)
        with pytest.raises(CaptureError, match="already in progress"):
            runner.start(REQUEST, 10)
        with pytest.raises(CaptureError, match="submit refused: the capture is collecting"):
            runner.submit("agent-7", now_ms=20)

    async def test_clear_and_cancel_are_audited(self) -> None:
        audit: list[Mapping[str, object]] = []
        runner = make_runner(FakeConnector(), audit)
        runner.start(REQUEST, 0)
        runner.feed(inband(PAN[:8], 100), 1000)
        runner.clear("agent-7", source="agent", now_ms=1100)
        assert runner.status()["digits_entered"] == 0
        runner.cancel("agent-7", source="agent")
        assert runner.state is State.CANCELLED
        assert [e["event"] for e in audit] == ["capture_started", "capture_cleared", "capture_cancelled"]
        assert audit[2]["reason"] == "agent"
        with pytest.raises(CaptureError, match="cancel refused"):
            runner.cancel("agent-7")

    @pytest.mark.parametrize(
        ("request_args", "message"),
        [
            ((0, "GBP", "r"), "amount"),
            ((10, "gbp", "r"), "invalid currency"),
            ((10, "GBP", ""), "reference is required"),
            ((10, "GBP", "has space"), "invalid reference"),
            ((10, "GBP", "ref" + PAN), "invalid reference"),
        ],
    )
    def test_bad_requests(self, request_args: tuple[Any, Any, Any], message: str) -> None:
        with pytest.raises(CaptureError, match=message) as info:
            CaptureRequest(*request_args, who="agent-7")
        assert PAN not in str(info.value)


class TestTimeAndFaults:
    async def test_field_timeout_on_stream_time(self) -> None:
        audit: list[Mapping[str, object]] = []
        runner = make_runner(FakeConnector(), audit)
        runner.start(REQUEST, 0)
        runner.feed(inband(PAN[:4], 100), 600)
        runner.tick(6000)
        assert [m["type"] for m in drain(runner)][-2:] == ["field_rejected", "progress"]
        assert audit[-1]["reason"] == "timeout"

    async def test_capture_timeout_cancels(self) -> None:
        runner = make_runner(FakeConnector(), [])
        runner.start(REQUEST, 0)
        for at in range(4000, 64000, 4000):
            runner.feed(inband("4", at), at)
        runner.tick(61000)
        assert runner.state is State.CANCELLED
        assert drain(runner)[-1] == {
            "type": "capture_cancelled", "call_id": "call-a", "capture_id": runner.status()["capture_id"],
            "state": "cancelled", "reason": "timeout",
        }

    @pytest.mark.parametrize(
        ("connector", "deadline_s", "error"),
        [
            (FakeConnector(GatewayResult.failure("gateway unreachable")), 5.0, "gateway unreachable"),
            (FakeConnector(raises=True), 5.0, "gateway connector failed (RuntimeError)"),
            (FakeConnector(delay_s=5.0), 0.05, "did not answer in time"),
        ],
    )
    async def test_gateway_failure_is_an_error_message(
        self, connector: FakeConnector, deadline_s: float, error: str
    ) -> None:
        audit: list[Mapping[str, object]] = []
        runner = make_runner(connector, audit, gateway_deadline_s=deadline_s)
        runner.start(REQUEST, 0)
        runner.feed(inband(PAN + EXPIRY + CODE, 100), 4000)
        runner.submit("agent-7")
        await runner.close()
        result = drain(runner)[-1]
        assert result["type"] == "gateway_result"
        assert result["status"] == "error"
        assert error in result["error"]
        assert audit[-1]["outcome"] == "error"
        assert all(len(card.pan) == 0 and card.cvv is not None and len(card.cvv) == 0 for card in connector.cards)
        assert_no_digits(json.dumps(audit), json.dumps(result))

    async def test_hangup_cancels_a_capture_in_progress(self) -> None:
        audit: list[Mapping[str, object]] = []
        runner = make_runner(FakeConnector(), audit)
        runner.start(REQUEST, 0)
        runner.feed(inband(PAN[:6], 100), 1000)
        await runner.close()
        assert audit[-1]["reason"] == "hangup"
        with pytest.raises(CaptureError, match="the call has ended"):
            runner.start(REQUEST, 2000)

    async def test_message_queue_drops_oldest(self) -> None:
        runner = make_runner(FakeConnector(), [], queue_size=4)
        runner.start(REQUEST, 0)
        runner.feed(inband(PAN[:10], 100), 2000)
        messages = drain(runner)
        assert len(messages) == 4
        assert runner.messages_dropped > 0
        assert messages[-1]["digits_entered"] == 10


async def test_progress_iterates_until_the_call_ends() -> None:
    runner = make_runner(FakeConnector(), [])
    runner.start(REQUEST, 0)
    runner.feed(inband(PAN[:2], 100), 500)
    await runner.close()
    kinds = [message["type"] async for message in runner.progress()]
    assert kinds == ["capture_started", "progress", "progress", "progress", "capture_cancelled"]
