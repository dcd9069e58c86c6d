"""The capture audit trail: chained lines, tampering found, card digits refused (PCI DSS 10.2, 10.3.4, 3.4)."""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from dtmfguard import cli
from dtmfguard.capture.audit import (
    FIELDS,
    GENESIS,
    MAX_LINE_BYTES,
    AuditError,
    AuditLog,
    Kind,
    check,
    check_event,
    verify,
)

VISA = "4111111111111111"
AMEX = "378282246310005"
T0 = datetime.datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=datetime.UTC)

EVENTS: list[dict[str, Any]] = [
    {"event": "capture_started", "source": "agent", "actor": "agent-17", "call_id": "a84b4c76e66710@pbx"},
    {"event": "field_rejected", "field": "pan", "reason": "luhn", "retries_left": 2},
    {"event": "capture_cleared", "source": "agent", "actor": "agent-17"},
    {"event": "capture_submitted", "source": "agent", "amount_minor": 1099, "currency": "GBP", "reference": "ord-42"},
    {"event": "gateway_result", "outcome": "approved", "gateway_reference": "simref_abc", "attempts": 1},
]


def clock() -> datetime.datetime:
    return T0


def write(path: Path, events: list[dict[str, Any]] = EVENTS) -> list[dict[str, Any]]:
    log = AuditLog(path, clock=clock, fsync=False)
    return [log.append(event) for event in events]


def lines(path: Path) -> list[str]:
    return path.read_text("ascii").splitlines(keepends=True)


class TestAppend:
    def test_lines_carry_the_event_and_the_chain(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        records = write(path)
        written = [json.loads(line) for line in lines(path)]
        assert written == records
        assert [record["seq"] for record in written] == [1, 2, 3, 4, 5]
        assert written[0]["prev"] == GENESIS
        assert [record["prev"] for record in written[1:]] == [record["hash"] for record in written[:-1]]
        assert written[0]["ts"] == "2025-06-01T12:00:00.123Z"
        assert {key: written[3][key] for key in EVENTS[3]} == EVENTS[3]

    def test_hash_is_sha256_of_the_line_without_it(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        write(path, EVENTS[:1])
        line = lines(path)[0].rstrip("\n")
        unsealed, _, tail = line.rpartition(',"hash":"')
        assert hashlib.sha256((unsealed + "}").encode()).hexdigest() == tail[:-2]

    def test_first_line_chains_to_a_fixed_genesis(self) -> None:
        assert re.fullmatch(r"[0-9a-f]{64}", GENESIS)
        assert hashlib.sha256(b"dtmfguard capture audit log, version 1").hexdigest() == GENESIS

    def test_a_second_writer_continues_the_chain(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        write(path, EVENTS[:2])
        write(path, EVENTS[2:])
        assert verify(path) == (True, None)
        assert len(lines(path)) == len(EVENTS)

    def test_concurrent_appends_keep_one_chain(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        logs = [AuditLog(path, fsync=False) for _ in range(4)]

        def work(log: AuditLog) -> None:
            for _ in range(25):
                log.append({"event": "capture_started", "source": "api"})

        threads = [threading.Thread(target=work, args=(log,)) for log in logs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert verify(path) == (True, None)
        assert len(lines(path)) == 100

    def test_incomplete_last_line_stops_appends(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        write(path, EVENTS[:2])
        path.write_text(path.read_text()[:-10])
        with pytest.raises(AuditError, match="last line is incomplete"):
            write(path, EVENTS[2:3])

    def test_file_that_is_not_an_audit_log_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "notes.txt"
        path.write_text("hello\n")
        with pytest.raises(AuditError, match="not an audit line"):
            write(path, EVENTS[:1])
        assert path.read_text() == "hello\n"


class TestCardDigitsRefused:
    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("error", f"card {VISA} declined"),
            ("error", "card 4111 1111 1111 1111 declined"),
            ("error", "card 4111-1111-1111-1111 declined"),
            ("detail", "typed 123456"),
            ("call_id", f"{VISA}@pbx"),
            ("reference", f"order-{AMEX}"),
            ("gateway_reference", "4111-1111-1111-1111"),
            ("actor", f"agent{VISA}"),
        ],
    )
    def test_digit_runs_are_refused_without_echoing_them(self, tmp_path: Path, field: str, value: str) -> None:
        path = tmp_path / "audit.jsonl"
        with pytest.raises(AuditError, match=re.escape(repr(field))) as caught:
            write(path, [{"event": "capture_submitted", field: value}])
        assert not re.search(r"\d{4}", str(caught.value))
        assert not path.exists() or path.read_text() == ""

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("amount_minor", 4111111111111111),
            ("retries_left", 123456),
            ("event", "capture4111"),
            ("outcome", 411111.0),
            ("currency", "411"),
            ("occurred_at", VISA),
            ("test", 1),
        ],
    )
    def test_numbers_where_codes_or_small_counts_belong_are_refused(self, field: str, value: object) -> None:
        with pytest.raises(AuditError, match=re.escape(repr(field))) as caught:
            check_event({"event": "capture_submitted", field: value})
        assert "4111" not in str(caught.value)

    def test_unknown_fields_are_refused(self) -> None:
        with pytest.raises(AuditError, match="'pan': not an audit field"):
            check_event({"event": "capture_submitted", "pan": "4111"})

    def test_an_unknown_name_made_of_digits_is_not_echoed(self) -> None:
        with pytest.raises(AuditError, match="not an audit field") as caught:
            check_event({"event": "capture_submitted", VISA: True})
        assert "4111" not in str(caught.value)

    @pytest.mark.parametrize("field", ["seq", "ts", "prev", "hash"])
    def test_reserved_fields_are_written_by_the_log_only(self, field: str) -> None:
        with pytest.raises(AuditError, match="written by the log itself"):
            check_event({"event": "capture_started", field: "x"})

    def test_event_is_required(self) -> None:
        with pytest.raises(AuditError, match="'event' field is required"):
            check_event({"source": "agent"})

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("occurred_at", "2025-06-01T12:00:00.123456+00:00"),
            ("started_at", "2025-06-01T12:00:00Z"),
            ("call_id", "1234567890a@10.0.0.1"),  # SIP Call-IDs: digit runs shorter than a card number
            ("gateway_reference", "ch_00000012345"),
            ("amount_minor", 123456789),
            ("error", "no reply from the gateway within 10 s"),
            ("error", "card number [redacted] refused"),
            ("outcome", None),
        ],
    )
    def test_allowed_values(self, field: str, value: object) -> None:
        check_event({"event": "gateway_result", field: value})

    def test_every_field_has_a_kind(self) -> None:
        assert all(isinstance(kind, Kind) for kind in FIELDS.values())

    def test_overlong_line_is_refused(self, tmp_path: Path) -> None:
        # Each non-ASCII character is written as a six-byte escape.
        longest = {"identifier": "x" * 128, "code": "a" * 40, "text": "\u00e9" * 200}
        event: dict[str, Any] = {name: longest[kind.value] for name, kind in FIELDS.items() if kind.value in longest}
        path = tmp_path / "audit.jsonl"
        with pytest.raises(AuditError, match=f"exceed {MAX_LINE_BYTES} bytes"):
            write(path, [event])
        assert not path.exists() or path.read_text() == ""


class TestVerify:
    def test_intact_log(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        write(path)
        assert verify(path) == (True, None)
        assert check(path).lines == len(EVENTS)

    def test_empty_log_is_intact(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        path.write_text("")
        assert verify(path) == (True, None)

    def test_changed_middle_line(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        write(path)
        text = lines(path)
        text[2] = text[2].replace('"agent-17"', '"agent-18"')
        path.write_text("".join(text))
        assert verify(path) == (False, 3)
        assert "hash" in (check(path).reason or "")

    def test_changed_middle_line_with_its_hash_recomputed(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        write(path)
        records = [json.loads(line) for line in lines(path)]
        forged = dict(records[1])
        forged["reason"] = "length"
        del forged["hash"]
        body = json.dumps(forged, separators=(",", ":"))
        forged["hash"] = hashlib.sha256(body.encode()).hexdigest()
        text = lines(path)
        text[1] = json.dumps(forged, separators=(",", ":")) + "\n"
        path.write_text("".join(text))
        # The forged line is self-consistent; the next line's prev no longer matches it.
        assert verify(path) == (False, 3)

    def test_removed_line(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        write(path)
        text = lines(path)
        del text[1]
        path.write_text("".join(text))
        assert verify(path) == (False, 2)

    def test_swapped_lines(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        write(path)
        text = lines(path)
        text[1], text[2] = text[2], text[1]
        path.write_text("".join(text))
        assert verify(path) == (False, 2)

    def test_whitespace_edit_is_a_change(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        write(path)
        text = lines(path)
        text[3] = text[3].replace(",", ", ", 1)
        path.write_text("".join(text))
        assert verify(path) == (False, 4)

    def test_digits_smuggled_in_with_a_rebuilt_chain_are_reported(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        write(path, EVENTS[:1])
        record = json.loads(lines(path)[0])
        del record["hash"]
        record["detail"] = VISA
        body = json.dumps(record, separators=(",", ":"))
        record["hash"] = hashlib.sha256(body.encode()).hexdigest()
        path.write_text(json.dumps(record, separators=(",", ":")) + "\n")
        result = check(path)
        assert (result.ok, result.first_bad_line) == (False, 1)
        assert "4111" not in (result.reason or "")

    def test_truncated_last_line(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        write(path)
        path.write_text(path.read_text()[:-5])
        assert verify(path) == (False, len(EVENTS))

    def test_garbage_line(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        write(path)
        path.write_text(path.read_text() + "x" * (MAX_LINE_BYTES * 2) + "\n")
        assert verify(path) == (False, len(EVENTS) + 1)


class TestCommand:
    def test_intact_exits_zero(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        path = tmp_path / "audit.jsonl"
        write(path)
        assert cli.main(["audit-log", "verify", str(path)]) == 0
        assert capsys.readouterr().out == f"{path}: intact, {len(EVENTS)} lines\n"

    def test_tampered_exits_one_with_the_line(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        path = tmp_path / "audit.jsonl"
        write(path)
        text = lines(path)
        del text[2]
        path.write_text("".join(text))
        assert cli.main(["audit-log", "verify", str(path)]) == 1
        out = capsys.readouterr().out
        assert out.startswith(f"{path}: broken at line 3: ")

    def test_missing_file_is_a_usage_error(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert cli.main(["audit-log", "verify", str(tmp_path / "missing.jsonl")]) == 2
        assert capsys.readouterr().err.startswith("dtmfguard: error: ")

    def test_verify_is_required(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert cli.main(["audit-log"]) == 2
