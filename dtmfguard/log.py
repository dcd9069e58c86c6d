"""Structured logging for dtmfguard, with card-digit redaction as defence in depth.

One structlog processor chain serves the whole process: dtmfguard's own loggers and,
through a stdlib handler, the loggers of the libraries it uses (aiortc, websockets).
Both chains end the same way: exceptions are formatted to text, then
:func:`redact_digits` replaces every run of six or more digits, then the line is
rendered (JSON when the stream is not a terminal, a readable console line on one).
PCI DSS v4.0.1 requirement 3.3 and 3.4 forbid card data in logs; the card-capture
code never hands digits to a logger in the first place, and this chain is the second
wall should a digit string leak into an event, a value or an exception message.

Redaction is blunt by design: any run of 6+ digits, also when the digits are split by
single spaces or dashes ("4111 1111 1111 1111", "4111-1111-..."), and any int (or
the integer part of a float) of 6+ digits, becomes ``[redacted]``. Log large numbers
that are not card data (SSRCs, byte counts, RTP timestamps) as separate small values
or in units that keep them short; five-digit values such as ports survive.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

from dtmfguard.errors import ConfigError

REDACTED = "[redacted]"
"""What every redacted digit run is replaced with, whatever its length."""

LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
"""Log level names accepted by :func:`configure_logging` (and by ``[log] level``)."""

FORMATS: tuple[str, ...] = ("auto", "json", "console")
"""Output formats accepted by :func:`configure_logging` (and by ``[log] format``)."""

# A digit, then at least five more, each optionally preceded by one space or dash.
# \d also matches non-ASCII digits, which a renderer would print just the same.
_DIGIT_RUN = re.compile(r"\d(?:[ -]?\d){5,}")
_MIN_REDACTED_ABS = 100_000  # the smallest number with six digits
_MAX_DEPTH = 16  # nesting followed into containers; deeper (or cyclic) ones are redacted as text

# Library loggers that are far too chatty below WARNING (numba logs every compile step).
_QUIET_LIBRARIES = ("numba",)


def _redact_text(text: str) -> str:
    return _DIGIT_RUN.sub(REDACTED, text)


def _redact(value: Any, depth: int = 0) -> Any:
    """Return ``value`` with every digit run redacted, keeping containers' shape."""
    if isinstance(value, str):
        return _redact_text(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return REDACTED if abs(value) >= _MIN_REDACTED_ABS else value
    if isinstance(value, float):
        # Only the integer part: fractional digits (-20.123456 dBm0) are not card data.
        return REDACTED if abs(value) >= _MIN_REDACTED_ABS else value
    if isinstance(value, bytes | bytearray):
        text = bytes(value).decode("latin-1")
        return _redact_text(text).encode("latin-1") if _DIGIT_RUN.search(text) else value
    if depth < _MAX_DEPTH:
        if isinstance(value, Mapping):
            return {_redact(k, depth + 1): _redact(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [_redact(v, depth + 1) for v in value]
        if isinstance(value, tuple | set | frozenset):
            # Subclasses (namedtuples) come back as the plain type: renderers only need the values.
            kind = frozenset if isinstance(value, frozenset) else set if isinstance(value, set) else tuple
            return kind(_redact(v, depth + 1) for v in value)
    # Any other object (and a container nested too deep, or holding itself) is rendered
    # through repr() by both renderers: if that text would carry a digit run, log the
    # redacted text in its place.
    try:
        text = repr(value)
    except Exception:
        return f"<{type(value).__name__} with a failing repr>"
    return _redact_text(text) if _DIGIT_RUN.search(text) else value


def redact_digits(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: redact digit runs in every key and value, recursively.

    Runs after the exception formatter (so traceback text is covered) and before the
    renderer. Returns a new event dict; never raises on odd values.
    """
    return {_redact(key): _redact(value) for key, value in event_dict.items()}


class _CurrentStderr:
    """A stream that writes to whatever ``sys.stderr`` is at the time of the write.

    Binding the stream object at configuration time would keep writing to a replaced
    (possibly closed) stream, e.g. after a test harness swapped ``sys.stderr``.
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


_stdlib_handler: logging.Handler | None = None


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog and the stdlib root logger for the whole process.

    ``level`` is one of :data:`LEVELS`; ``fmt`` is ``"json"``, ``"console"`` or
    ``"auto"`` (console on a terminal, JSON otherwise). ``stream`` defaults to the
    current ``sys.stderr``. Calling it again replaces the previous configuration.
    Raises :class:`ConfigError` for an unknown level or format.
    """
    if level not in LEVELS:
        raise ConfigError(f"log.level: must be one of {', '.join(map(repr, LEVELS))}, got {level!r}")
    if fmt not in FORMATS:
        raise ConfigError(f"log.format: must be one of {', '.join(map(repr, FORMATS))}, got {fmt!r}")
    out: Any = stream if stream is not None else _CurrentStderr()
    is_tty = bool(getattr(out, "isatty", lambda: False)())
    renderer: Processor
    if fmt == "console" or (fmt == "auto" and is_tty):
        renderer = structlog.dev.ConsoleRenderer(colors=is_tty)
    else:
        renderer = structlog.processors.JSONRenderer(sort_keys=True)
    # The common tail: exceptions become text, then everything is redacted, then the
    # timestamp is added (an ISO date is itself a dash-separated digit run), then render.
    tail: list[Processor] = [
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        redact_digits,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        renderer,
    ]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            *tail,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        # Loggers bound at import time must follow a later reconfiguration (CLI flags, tests);
        # nothing logs per frame, so the lookup cost does not matter.
        cache_logger_on_first_use=False,
    )
    _configure_stdlib(LEVELS[level], out, tail)


def _configure_stdlib(level: int, out: TextIO, tail: list[Processor]) -> None:
    """Route stdlib ``logging`` records (libraries) through the same redacting tail."""
    global _stdlib_handler
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    if _stdlib_handler is not None:
        root.removeHandler(_stdlib_handler)
    root.addHandler(handler)
    root.setLevel(level)
    _stdlib_handler = handler
    for name in _QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


def get_logger(**initial_values: Any) -> FilteringBoundLogger:
    """Return a structlog logger with ``initial_values`` bound (e.g. ``call_id=...``).

    If logging was never configured, configures it with the defaults first, so that no
    line is ever written without redaction.
    """
    if not structlog.is_configured():
        configure_logging()
    logger: FilteringBoundLogger = structlog.get_logger(**initial_values)
    return logger
