"""Tests of dtmfguard.log: card digits never reach a log line, whatever carries them."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from dtmfguard.errors import ConfigError
from dtmfguard.log import REDACTED, configure_logging, get_logger, redact_digits

# Public test card numbers (Visa and Mastercard test PANs), never real cards.
VISA_TEST_PAN = "4111111111111111"
MASTERCARD_TEST_PAN = "5555555555554444"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Leave the process logging to stderr with the defaults, as other tests expect."""
    yield
    configure_logging()


@pytest.fixture
def stream() -> io.StringIO:
    out = io.StringIO()
    configure_logging("debug", "json", out)
    return out


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def redact(**event: Any) -> dict[str, Any]:
    return dict(redact_digits(None, "info", event))


class TestRedactDigits:
    @pytest.mark.parametrize(
        "text",
        [
            VISA_TEST_PAN,
            MASTERCARD_TEST_PAN,
            "4111 1111 1111 1111",
            "5555-5555-5555-4444",
            "4111 1111-1111 1111",
            "123456",
            "12 34 56",
        ],
    )
    def test_digit_runs_of_six_or_more_are_redacted(self, text: str) -> None:
        assert redact(event=f"caller typed {text} then hung up") == {"event": f"caller typed {REDACTED} then hung up"}

    def test_marker_does_not_tell_the_length(self) -> None:
        assert redact(a="123456", b=MASTERCARD_TEST_PAN) == {"a": REDACTED, "b": REDACTED}

    def test_digits_glued_to_letters_are_redacted(self) -> None:
        assert redact(event=f"pan={VISA_TEST_PAN}x") == {"event": f"pan={REDACTED}x"}

    @pytest.mark.parametrize("text", ["12345", "port 12345", "127.0.0.1:22222", "1234.5678", "v1.2.3", "-20.5 dBm0"])
    def test_five_digit_runs_survive(self, text: str) -> None:
        assert redact(event=text) == {"event": text}

    def test_ints(self) -> None:
        assert redact(port=12345, big=411111, negative=-4111111111111111, flag=True) == {
            "port": 12345,
            "big": REDACTED,
            "negative": REDACTED,
            "flag": True,
        }

    def test_floats_by_their_integer_part(self) -> None:
        assert redact(level=-20.123456, pan=4111111111111111.0, small=99999.99) == {
            "level": -20.123456,
            "pan": REDACTED,
            "small": 99999.99,
        }

    def test_nested_values(self) -> None:
        event = redact(
            event="capture",
            card={"pan": VISA_TEST_PAN, "parts": ["4111", "1111 1111 1111"], "meta": ({"n": 5555555555554444},)},
            tags={"x 123456"},
            raw=b"PAN 5555555555554444",
            port=5060,
        )
        assert event == {
            "event": "capture",
            "card": {"pan": REDACTED, "parts": ["4111", REDACTED], "meta": ({"n": REDACTED},)},
            "tags": {f"x {REDACTED}"},
            "raw": f"PAN {REDACTED}".encode(),
            "port": 5060,
        }

    def test_keys_are_redacted_too(self) -> None:
        assert redact(**{VISA_TEST_PAN: 1}) == {REDACTED: 1}

    def test_other_objects_are_redacted_by_their_repr(self) -> None:
        class Leaky:
            def __repr__(self) -> str:
                return f"Leaky({MASTERCARD_TEST_PAN})"

        class Quiet:
            def __repr__(self) -> str:
                return "Quiet(12345)"

        quiet = Quiet()
        assert redact(a=Leaky(), b=quiet) == {"a": f"Leaky({REDACTED})", "b": quiet}


    def test_cyclic_container_is_redacted_without_recursing_forever(self) -> None:
        cyclic: list[Any] = [VISA_TEST_PAN]
        cyclic.append(cyclic)
        assert VISA_TEST_PAN not in repr(redact(a=cyclic))

    def test_object_whose_repr_fails(self) -> None:
        class Broken:
            def __repr__(self) -> str:
                raise RuntimeError(VISA_TEST_PAN)

        assert redact(a=Broken()) == {"a": "<Broken with a failing repr>"}


class TestRenderedLines:
    def test_event_and_values(self, stream: io.StringIO) -> None:
        get_logger(call_id="c-1").info(f"digits {VISA_TEST_PAN}", card={"pan": [MASTERCARD_TEST_PAN]}, port=30000)
        (line,) = lines(stream)
        assert line["event"] == f"digits {REDACTED}"
        assert line["card"] == {"pan": [REDACTED]}
        assert line["port"] == 30000
        assert line["call_id"] == "c-1"
        assert line["level"] == "info"
        assert VISA_TEST_PAN not in stream.getvalue()
        assert MASTERCARD_TEST_PAN not in stream.getvalue()

    def test_timestamp_is_not_redacted(self, stream: io.StringIO) -> None:
        get_logger().info("tick")
        (line,) = lines(stream)
        assert REDACTED not in line["timestamp"]
        assert line["timestamp"][:2] == "20"

    def test_exception_traceback(self, stream: io.StringIO) -> None:
        log = get_logger()
        try:
            raise ValueError(f"gateway refused {VISA_TEST_PAN}")
        except ValueError:
            log.exception("payment failed")
        try:
            try:
                raise KeyError(MASTERCARD_TEST_PAN)
            except KeyError as exc:
                raise RuntimeError("wrapped 5555 5555 5555 4444") from exc
        except RuntimeError:
            log.error("chained", exc_info=True)
        first, second = lines(stream)
        assert "Traceback" in first["exception"]
        assert first["exception"].endswith(f"ValueError: gateway refused {REDACTED}")
        assert f"KeyError: '{REDACTED}'" in second["exception"]
        assert f"RuntimeError: wrapped {REDACTED}" in second["exception"]
        text = stream.getvalue()
        assert VISA_TEST_PAN not in text
        assert MASTERCARD_TEST_PAN not in text
        assert "5555 5555 5555 4444" not in text

    def test_stdlib_loggers_of_libraries_are_redacted(self, stream: io.StringIO) -> None:
        library = logging.getLogger("some.library")
        library.warning("peer sent %s", VISA_TEST_PAN)
        try:
            raise ValueError(MASTERCARD_TEST_PAN)
        except ValueError:
            library.exception("library failed")
        first, second = lines(stream)
        assert first["event"] == f"peer sent {REDACTED}"
        assert first["logger"] == "some.library"
        assert second["exception"].endswith(f"ValueError: {REDACTED}")
        assert VISA_TEST_PAN not in stream.getvalue()
        assert MASTERCARD_TEST_PAN not in stream.getvalue()

    def test_five_digit_values_survive(self, stream: io.StringIO) -> None:
        get_logger().info("listening on 127.0.0.1:22222", port_min=30000, port_max=40000, note="12345")
        (line,) = lines(stream)
        assert line["event"] == "listening on 127.0.0.1:22222"
        assert (line["port_min"], line["port_max"], line["note"]) == (30000, 40000, "12345")


class TestConfiguration:
    def test_level_filters(self) -> None:
        out = io.StringIO()
        configure_logging("warning", "json", out)
        log = get_logger()
        log.info("hidden")
        log.warning("shown")
        logging.getLogger("lib").info("hidden too")
        assert [line["event"] for line in lines(out)] == ["shown"]

    def test_auto_is_json_when_not_a_terminal(self) -> None:
        out = io.StringIO()
        configure_logging("info", "auto", out)
        get_logger().info("hello", n=1)
        line = json.loads(out.getvalue())
        assert line.pop("timestamp")
        assert line == {"event": "hello", "level": "info", "n": 1}

    def test_auto_is_console_on_a_terminal(self) -> None:
        class Terminal(io.StringIO):
            def isatty(self) -> bool:
                return True

        out = Terminal()
        configure_logging("info", "auto", out)
        get_logger().info(f"hello {VISA_TEST_PAN}", n=1)
        text = out.getvalue()
        assert "hello" in text
        assert REDACTED in text
        assert VISA_TEST_PAN not in text
        assert not text.startswith("{")

    def test_console_exception_is_redacted(self) -> None:
        out = io.StringIO()
        configure_logging("info", "console", out)
        try:
            raise ValueError(f"bad {MASTERCARD_TEST_PAN}")
        except ValueError:
            get_logger().exception("failed")
        assert f"ValueError: bad {REDACTED}" in out.getvalue()
        assert MASTERCARD_TEST_PAN not in out.getvalue()

    def test_default_stream_follows_sys_stderr(self, capsys: pytest.CaptureFixture[str]) -> None:
        configure_logging("info", "json")
        get_logger().info(f"to stderr {VISA_TEST_PAN}")
        captured = capsys.readouterr()
        assert json.loads(captured.err)["event"] == f"to stderr {REDACTED}"
        assert captured.out == ""

    @pytest.mark.parametrize(
        ("level", "fmt", "message"),
        [
            ("loud", "json", "log.level: must be one of 'debug', 'info', 'warning', 'error', got 'loud'"),
            ("info", "xml", "log.format: must be one of 'auto', 'json', 'console', got 'xml'"),
        ],
    )
    def test_bad_arguments(self, level: str, fmt: str, message: str) -> None:
        with pytest.raises(ConfigError) as info:
            configure_logging(level, fmt, io.StringIO())
        assert str(info.value) == message
