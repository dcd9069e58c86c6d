"""The live part of ``dtmfguard demo``: a real-time call through the proxy over loopback sockets.

A shorter call than ``make demo`` places (less speech), with the whole test card number
typed so the metrics scrape can be checked for its digit runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from pathlib import Path

import pytest

from dtmfguard import demo_call
from dtmfguard.config import Config
from dtmfguard.demo_call import MultimonMissing, caller_script, live_call_checks, place_call, run_live_call

pytestmark = pytest.mark.integration

TEST_PAN = "4111111111111111"


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


def test_run_live_call_prints_without_the_card(tmp_path: Path) -> None:
    lines: list[str] = []
    checks = run_live_call(_config(), tmp_path, lines.append, "*", card="41111111", event_index=0, short=True)
    assert all(ok for ok, _ in checks), checks
    assert "key 1 of 8 sent as RFC 4733" in "\n".join(lines)
    assert "41111111" not in "\n".join(lines + [text for _, text in checks])


def test_missing_multimon_is_a_clear_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo_call.shutil, "which", lambda _name: None)
    with pytest.raises(MultimonMissing, match="make deps"):
        run_live_call(_config(), tmp_path, print, "*", card=TEST_PAN, event_index=6)
