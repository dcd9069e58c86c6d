"""The live part of ``dtmfguard demo``: a real-time call through the proxy over loopback sockets.

Shorter calls than ``make demo`` places (less speech): one with the whole test card number typed
so the metrics scrape can be checked for its digit runs, and paying calls (card number, expiry and
security code typed, the capture started over NG, the reference gateway in process over HTTPS)
that must be approved, charged exactly once, and printed without a card digit but the masked
last four.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from pathlib import Path

import pytest

from dtmfguard import demo_call
from dtmfguard.config import Config
from dtmfguard.demo_call import (
    MultimonMissing,
    Payment,
    audit_trail_leaks,
    caller_script,
    card_leaks,
    live_call_checks,
    place_call,
    run_live_call,
)

pytestmark = pytest.mark.integration

TEST_PAN = "4111111111111111"  # the public Visa test number
EXPIRY = "0931"  # MMYY, in the future
CODE = "737"
PAYMENT = Payment(1999, "GBP", "order-test", EXPIRY, CODE)


def _config() -> Config:
    defaults = Config.defaults()
    # A free NG port: other tests may hold 22222.
    return dataclasses.replace(defaults, control=dataclasses.replace(defaults.control, ng_listen="127.0.0.1:0"))


def test_live_call_claims_hold_and_metrics_carry_no_card_digits(tmp_path: Path) -> None:
    config = _config()
    script = caller_script(TEST_PAN, 9, short=True)
    call = asyncio.run(place_call(config, tmp_path, script))

    checks = live_call_checks(call, TEST_PAN, tmp_path, config, "*")
    failed = [text for ok, text in checks if not ok]
    assert not failed, failed
    texts = "\n".join(text for _, text in checks)
    assert "**** **** **** 1111" in texts
    assert TEST_PAN not in texts
    assert (tmp_path / "live-agent.wav").is_file()
    assert call.recordings

    # The scrape after the call: counters of the call, and no run of the card's digits.
    metrics = call.metrics_text
    assert re.search(r"^dtmfguard_calls_total 1$", metrics, re.M)
    assert re.search(r'^dtmfguard_packets_total\{direction="caller_to_agent"\} [1-9]\d*$', metrics, re.M)
    assert re.search(r"^dtmfguard_masked_tones_total (1[6-9]|[2-9]\d)$", metrics, re.M)
    assert re.search(r'^dtmfguard_ng_commands_total\{command="offer",result="ok"\} 1$', metrics, re.M)
    assert re.search(r"^dtmfguard_digit_latency_ms_count 15$", metrics, re.M)  # the RFC 4733 key has none
    for length in range(6, len(TEST_PAN) + 1):
        for start in range(len(TEST_PAN) - length + 1):
            assert TEST_PAN[start : start + length] not in metrics


def test_a_paying_call_is_approved_and_charged_once(tmp_path: Path) -> None:
    config = _config()
    script = caller_script(TEST_PAN, 3, short=True, expiry=EXPIRY, code=CODE)
    seen: list[dict[str, object]] = []
    call = asyncio.run(
        place_call(config, tmp_path, script, payment=PAYMENT, agent_view=lambda _at, message: seen.append(message))
    )

    assert call.payment is not None
    assert call.payment.started == {"result": "ok"}
    assert call.payment.result is not None
    assert call.payment.result["status"] == "approved"
    assert call.payment.result["auth_code"]
    assert len(call.payment.charges) == 1  # the reference gateway charged exactly once
    charge = call.payment.charges[0]
    assert (charge.amount_minor, charge.currency, charge.reference, charge.last4) == (1999, "GBP", "order-test", "1111")
    assert seen == call.payment.messages
    assert [m["type"] for m in seen][-2:] == ["capture_submitted", "gateway_result"]
    assert card_leaks(repr(seen), TEST_PAN, EXPIRY, CODE) == []
    checks = live_call_checks(call, TEST_PAN, tmp_path, config, "*")
    failed = [text for ok, text in checks if not ok]
    assert not failed, failed
    assert (tmp_path / "capture-audit.jsonl").is_file()


def test_run_live_call_prints_the_payment_without_the_card(tmp_path: Path) -> None:
    lines: list[str] = []
    checks = run_live_call(
        _config(), tmp_path, lines.append, "*", card=TEST_PAN, event_index=0, short=True, payment=PAYMENT,
    )
    assert all(ok for ok, _ in checks), checks
    printed = "\n".join(lines + [text for _, text in checks])
    assert "key 1 of 16 sent as RFC 4733" in printed
    assert "card number 7 of 16" in printed
    assert "**** **** **** 1111 Visa, valid" in printed
    assert "expiry entered" in printed
    assert "security code entered" in printed
    assert "submitted to the payment gateway" in printed
    assert re.search(r"approved: auth code \S+", printed)
    assert "charged once" in printed
    # No card digit printed but the masked last four: no run of the number, no expiry, no code.
    assert card_leaks(printed, TEST_PAN, EXPIRY, CODE) == []
    assert printed.count("1111") == printed.count("**** **** **** 1111")
    for secret in (TEST_PAN, TEST_PAN[:6], EXPIRY, CODE):
        assert secret not in printed


def test_missing_multimon_is_a_clear_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo_call.shutil, "which", lambda _name: None)
    with pytest.raises(MultimonMissing, match="make deps"):
        run_live_call(_config(), tmp_path, print, "*", card=TEST_PAN, event_index=6)


def test_audit_trail_digests_are_not_card_data_but_a_card_number_in_a_field_is() -> None:
    digest = "ab12" + "4111" + "0" * 8 + "1230" + "c" * 44  # hex whose digit runs look like card data
    line = f'{{"seq": 1, "reason": "typed", "prev": "{digest}", "hash": "{digest}"}}'
    assert card_leaks(line, TEST_PAN, EXPIRY, CODE) != []  # the plain scan would flag the digests
    assert audit_trail_leaks(line, TEST_PAN, EXPIRY, CODE) == []
    leaked = line.replace('"typed"', f'"{TEST_PAN}"')
    assert audit_trail_leaks(leaked, TEST_PAN, EXPIRY, CODE) != []
