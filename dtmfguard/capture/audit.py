"""The capture audit trail: an append-only, hash-chained JSON-lines file that holds no card digits.

Every capture event (who started, cleared, cancelled or submitted a capture, a rejected field,
the gateway's outcome and reference) is one line: a JSON object with the event's fields, the
line number ``seq``, the time ``ts`` (UTC, ISO 8601, milliseconds), ``prev`` (the ``hash`` of the
line before; :data:`GENESIS` for the first line) and ``hash``, the SHA-256 of the line as written
without its ``hash`` member. Editing, reordering or removing a line breaks the chain at that line,
which :func:`verify` (and ``dtmfguard audit-log verify FILE``) reports. Chaining detects edits but
cannot stop someone who rewrites every line from the edit to the end, nor tell that the last lines
were cut off: ship the file (or its last ``hash``) to write-once storage for that. This serves
PCI DSS v4.0.1 requirement 10.2 (audit logs of actions on cardholder data) and 10.3.4 (change
detection on audit logs), while keeping requirement 3.3/3.4 (no card data in logs): field names
come from a fixed table (:data:`FIELDS`), each with a value kind that cannot carry a card number,
and free text may not hold a run of six or more digits.

One line per event, written with a single ``write`` on a file opened for appending, under an
exclusive ``flock``; the chain is read back from the file's last line at every append, so several
writers (threads, processes) share one file safely. Lines are fsync'd unless told otherwise.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import json
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from dtmfguard.errors import DtmfguardError

GENESIS = hashlib.sha256(b"dtmfguard capture audit log, version 1").hexdigest()
"""The ``prev`` of the first line of every audit log."""

MAX_LINE_BYTES = 4096
"""The longest line :meth:`AuditLog.append` writes, and :func:`verify` accepts, newline included."""

MAX_TEXT_LENGTH = 200
MAX_IDENTIFIER_LENGTH = 128
MAX_COUNT = 99_999  # five digits at most
MAX_AMOUNT_MINOR = 99_999_999_999  # eleven digits: shorter than any card number


class AuditError(DtmfguardError):
    """An event was refused (the message names the field, never its value), or the file is unusable."""


class Kind(Enum):
    """The value kinds of audit fields. None (JSON null) is accepted for every field."""

    CODE = "code"  # lower-case word: a-z and "_" (event names, outcomes, reasons); no digits at all
    TEXT = "text"  # printable text; no run of 6+ digits (even split by spaces or dashes)
    IDENTIFIER = "identifier"  # printable ASCII without spaces; no run of 12+ digits (a card number's)
    COUNT = "count"  # whole number 0..99 999
    AMOUNT = "amount"  # whole number of minor units 0..99 999 999 999
    CURRENCY = "currency"  # ISO 4217 code: three capital letters
    TIMESTAMP = "timestamp"  # ISO 8601 date and time with an offset or Z
    FLAG = "flag"  # true or false


FIELDS: Mapping[str, Kind] = {
    "event": Kind.CODE,  # capture_started, capture_cleared, capture_cancelled, capture_submitted, ...
    "source": Kind.CODE,  # who acted: agent, api, ng, trigger, caller, system
    "actor": Kind.IDENTIFIER,  # the agent's or client's id
    "call_id": Kind.IDENTIFIER,
    "capture_id": Kind.IDENTIFIER,
    "node": Kind.IDENTIFIER,
    "field": Kind.CODE,
    "reason": Kind.CODE,
    "outcome": Kind.CODE,  # approved, declined, error, cancelled
    "brand": Kind.CODE,
    "retries_left": Kind.COUNT,
    "attempts": Kind.COUNT,
    "connector": Kind.IDENTIFIER,
    "operation": Kind.CODE,  # authorize, tokenize
    "amount_minor": Kind.AMOUNT,
    "currency": Kind.CURRENCY,
    "reference": Kind.IDENTIFIER,  # the merchant's reference
    "idempotency_key": Kind.IDENTIFIER,
    "gateway_reference": Kind.IDENTIFIER,
    "error": Kind.TEXT,
    "detail": Kind.TEXT,
    "started_at": Kind.TIMESTAMP,
    "occurred_at": Kind.TIMESTAMP,
    "test": Kind.FLAG,
}
"""Every field an event may carry, with its kind. To log a new field, add it here."""

RESERVED = ("seq", "ts", "prev", "hash")
"""Fields the log itself writes on every line."""

_CODE = re.compile(r"[a-z][a-z_]{0,39}")
_DIGITS_6 = re.compile(r"\d(?:[ -]?\d){5,}")
_DIGITS_12 = re.compile(r"\d(?:[ -]?\d){11,}")
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d)")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _check_value(name: str, kind: Kind, value: object) -> None:
    """Raise AuditError (naming ``name``, never showing ``value``) unless ``value`` fits ``kind``."""
    if value is None:
        return
    if kind in (Kind.COUNT, Kind.AMOUNT):
        top = MAX_COUNT if kind is Kind.COUNT else MAX_AMOUNT_MINOR
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
            raise AuditError(f"audit field {name!r}: must be a whole number from 0 to {top}")
        return
    if kind is Kind.FLAG:
        if not isinstance(value, bool):
            raise AuditError(f"audit field {name!r}: must be true or false")
        return
    if not isinstance(value, str):
        raise AuditError(f"audit field {name!r}: must be a string")
    if kind is Kind.CODE:
        if not _CODE.fullmatch(value):
            raise AuditError(f"audit field {name!r}: must be a lower-case code (a-z and '_', at most 40)")
    elif kind is Kind.CURRENCY:
        if not (len(value) == 3 and value.isascii() and value.isalpha() and value.isupper()):
            raise AuditError(f"audit field {name!r}: must be an ISO 4217 currency code")
    elif kind is Kind.TIMESTAMP:
        if not _TIMESTAMP.fullmatch(value):
            raise AuditError(f"audit field {name!r}: must be an ISO 8601 date and time with an offset")
    elif kind is Kind.IDENTIFIER:
        if not 1 <= len(value) <= MAX_IDENTIFIER_LENGTH or not value.isascii() or not value.isprintable():
            raise AuditError(f"audit field {name!r}: must be 1-{MAX_IDENTIFIER_LENGTH} printable ASCII characters")
        if " " in value:
            raise AuditError(f"audit field {name!r}: must not contain spaces")
        if _DIGITS_12.search(value):
            raise AuditError(f"audit field {name!r}: must not hold a run of 12 or more digits")
    else:  # Kind.TEXT
        if len(value) > MAX_TEXT_LENGTH or not value.isprintable():
            raise AuditError(f"audit field {name!r}: must be printable text of at most {MAX_TEXT_LENGTH} characters")
        if _DIGITS_6.search(value):
            raise AuditError(f"audit field {name!r}: must not hold a run of 6 or more digits")


def check_event(event: Mapping[str, object]) -> None:
    """Raise AuditError unless every field of ``event`` is known and of its kind, and ``event`` is set.

    The message names the first offending field and never carries its value.
    """
    if "event" not in event or event["event"] is None:
        raise AuditError("audit event: the 'event' field is required")
    for name, value in event.items():
        if not isinstance(name, str):
            raise AuditError("audit event: field names must be strings")
        if name in RESERVED:
            raise AuditError(f"audit field {name!r}: written by the log itself")
        kind = FIELDS.get(name)
        if kind is None:
            # The name itself may be anything the caller passed: shown only when it is a plain code.
            shown = repr(name) if _CODE.fullmatch(name) else "(a name that is not a lower-case code)"
            raise AuditError(f"audit field {shown}: not an audit field")
        _check_value(name, kind, value)


def _encode(seq: int, ts: str, event: Mapping[str, object], prev: str) -> str:
    """The canonical text of a line without its hash: seq, ts, the event's fields by name, prev."""
    record: dict[str, object] = {"seq": seq, "ts": ts}
    record.update(sorted(event.items()))
    record["prev"] = prev
    return json.dumps(record, separators=(",", ":"), ensure_ascii=True)


def _seal(unsealed: str) -> tuple[str, str]:
    """The hash of an encoded line, and the full line (newline included) that carries it."""
    digest = hashlib.sha256(unsealed.encode("ascii")).hexdigest()
    return digest, f'{unsealed[:-1]},"hash":"{digest}"}}\n'


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def format_ts(moment: datetime.datetime) -> str:
    """``moment`` (timezone-aware) as the log writes it: UTC, milliseconds, ``Z``."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class AuditLog:
    """Appends chained events to the JSON-lines file at ``path`` (created when missing).

    ``clock`` returns an aware datetime for ``ts``; ``fsync`` makes each line durable before
    :meth:`append` returns. :meth:`append` blocks on the disk: from a coroutine, call it through
    ``asyncio.to_thread`` (the lock makes that safe).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], datetime.datetime] = _utc_now,
        fsync: bool = True,
    ) -> None:
        self.path = os.fspath(path)
        self._clock = clock
        self._fsync = fsync
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AuditLog({self.path!r})"

    def append(self, event: Mapping[str, object]) -> dict[str, Any]:
        """Write one event; return the line written, as a dict (with ``seq``, ``ts``, ``prev``, ``hash``).

        Raises AuditError when a field is unknown or of the wrong kind (the message names the
        field, never the value), when the line would exceed :data:`MAX_LINE_BYTES`, or when the
        file's last line is incomplete or not an audit line; OSError when the file cannot be written.
        """
        check_event(event)
        ts = format_ts(self._clock())
        with self._lock:
            descriptor = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX)
                seq, prev = _tail(descriptor)
                digest, line = _seal(_encode(seq + 1, ts, event, prev))
                data = line.encode("ascii")
                if len(data) > MAX_LINE_BYTES:
                    raise AuditError(f"audit event: the line would exceed {MAX_LINE_BYTES} bytes")
                written = os.write(descriptor, data)
                if written != len(data):
                    raise AuditError("audit log: short write (disk full?); the last line is incomplete")
                if self._fsync:
                    os.fsync(descriptor)
            finally:
                os.close(descriptor)  # also releases the lock
        record: dict[str, Any] = json.loads(line)
        assert record["hash"] == digest
        return record


def _tail(descriptor: int) -> tuple[int, str]:
    """``seq`` and ``hash`` of the file's last line; (0, GENESIS) for an empty file."""
    size = os.fstat(descriptor).st_size
    if size == 0:
        return 0, GENESIS
    start = max(0, size - MAX_LINE_BYTES - 1)
    tail = os.pread(descriptor, size - start, start)
    if not tail.endswith(b"\n"):
        raise AuditError("audit log: the last line is incomplete; check the file with 'dtmfguard audit-log verify'")
    cut = tail.rfind(b"\n", 0, len(tail) - 1)
    if cut < 0 and start > 0:
        raise AuditError("audit log: the last line is too long to be an audit line")
    try:
        last = json.loads(tail[cut + 1 :])
        seq, digest = last["seq"], last["hash"]
    except (ValueError, TypeError, KeyError):
        raise AuditError("audit log: the last line is not an audit line") from None
    if isinstance(seq, bool) or not isinstance(seq, int) or not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        raise AuditError("audit log: the last line is not an audit line")
    return seq, digest


# --------------------------------------------------------------------------- verification


@dataclass(frozen=True, slots=True)
class AuditCheck:
    """The result of checking a whole file: how many lines are intact, and the first that is not."""

    lines: int
    first_bad_line: int | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.first_bad_line is None


def _check_line(number: int, raw: bytes, prev: str) -> tuple[str | None, str]:
    """Why line ``number`` is bad (or None), and its hash (for the next line's ``prev``)."""
    if not raw.endswith(b"\n"):
        return ("line too long" if len(raw) >= MAX_LINE_BYTES else "incomplete line (no newline)"), ""
    try:
        record = json.loads(raw)
    except ValueError:
        return "not JSON", ""
    if not isinstance(record, dict):
        return "not a JSON object", ""
    digest = record.get("hash")
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        return "no valid 'hash'", ""
    if record.get("seq") != number or isinstance(record.get("seq"), bool):
        return f"'seq' is not {number} (a line was removed, added or moved)", digest
    if record.get("prev") != prev:
        return "'prev' does not match the previous line's hash (a line was removed, changed or moved)", digest
    ts = record.get("ts")
    if not isinstance(ts, str) or not _TIMESTAMP.fullmatch(ts):
        return "no valid 'ts'", digest
    event = {key: value for key, value in record.items() if key not in RESERVED}
    try:
        check_event(event)
    except AuditError as exc:
        return str(exc), digest
    expected_digest, expected_line = _seal(_encode(number, ts, event, prev))
    if expected_digest != digest:
        return "'hash' does not match the line's content (the line was changed)", digest
    if expected_line.encode("ascii") != raw:
        return "the line is not in its canonical form (the line was changed)", digest
    return None, digest


def check(path: str | os.PathLike[str]) -> AuditCheck:
    """Check the chain of the audit log at ``path`` line by line. Raises OSError if unreadable."""
    prev = GENESIS
    number = 0
    with open(path, "rb") as stream:
        while raw := stream.readline(MAX_LINE_BYTES):
            number += 1
            reason, prev = _check_line(number, raw, prev)
            if reason is not None:
                return AuditCheck(number - 1, number, reason)
    return AuditCheck(number)


def verify(path: str | os.PathLike[str]) -> tuple[bool, int | None]:
    """``(True, None)`` when the audit log at ``path`` is intact, else ``(False, first bad line number)``.

    Lines are numbered from 1; an empty file is intact. Raises OSError if the file cannot be read.
    """
    result = check(path)
    return result.ok, result.first_bad_line
