"""Configuration: a TOML file loaded into frozen, validated dataclasses.

``configs/default.toml`` documents every key with its default; a key left out of a
file takes its default. Each section is a frozen dataclass whose fields carry their
own check (type and range), and whose ``__post_init__`` runs the checks, so a section
built in code is validated exactly like one read from a file. Every problem is a
:class:`~dtmfguard.errors.ConfigError` naming the key and why, e.g.
``masking.delay_ms: must be an integer between 10 and 200 and a multiple of 5, got 'x'``;
an unknown section or key is an error too (``unknown key 'masking.foo'``), so a typo
never silently falls back to a default. All problems of a file are reported at once.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from dtmfguard.errors import ConfigError
from dtmfguard.levels import DTMF_HIGH_HZ, DTMF_LOW_HZ

# A check takes the raw value and returns it normalised (int -> float for a number
# field), or raises ValueError whose text says what the value must be.
Check = Callable[[Any], Any]

FLAT_TONE_MIN_DTMF_DISTANCE = 0.05
"""The masking tone must stay further than this fraction from every DTMF frequency."""


def _show(value: Any) -> str:
    """Render a value the way the TOML file spells it, for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _fmt(number: float) -> str:
    return f"{number:g}"


def _choice(*options: str) -> Check:
    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in options:
            raise ValueError(f"must be one of {', '.join(map(repr, options))}, got {_show(value)}")
        return value

    return check


def _boolean() -> Check:
    def check(value: Any) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, got {_show(value)}")
        return value

    return check


def _integer(low: int, high: int, multiple_of: int = 1) -> Check:
    what = f"must be an integer between {low} and {high}"
    if multiple_of > 1:
        what += f" and a multiple of {multiple_of}"

    def check(value: Any) -> int:
        # bool is an int subclass in Python, but `true` is no port number.
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{what}, got {_show(value)}")
        if not low <= value <= high or value % multiple_of:
            raise ValueError(f"{what}, got {_show(value)}")
        return value

    return check


def _number(low: float = -math.inf, high: float = math.inf, *, above: float | None = None) -> Check:
    """A finite number within [low, high], or strictly greater than ``above``."""
    if above is not None:
        what = f"must be a number greater than {_fmt(above)}"
    else:
        what = f"must be a number between {_fmt(low)} and {_fmt(high)}"

    def check(value: Any) -> float:
        # TOML allows nan and inf; neither is a usable setting.
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{what}, got {_show(value)}")
        if (above is not None and value <= above) or not low <= value <= high:
            raise ValueError(f"{what}, got {_show(value)}")
        return float(value)

    return check


def _text() -> Check:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"must be a string, got {_show(value)}")
        return value

    return check


_HOSTNAME_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def _valid_host(host: str) -> bool:
    """An IPv4 literal, or a DNS name of RFC 1123 labels."""
    try:
        ipaddress.IPv4Address(host)
        return True
    except ValueError:
        pass
    if re.fullmatch(r"[0-9.]+", host):  # looks like an IPv4 address but is not one
        return False
    return 0 < len(host) <= 253 and all(_HOSTNAME_LABEL.fullmatch(label) for label in host.split("."))


def parse_host_port(value: str) -> tuple[str, int]:
    """Split ``"host:port"`` (``"[v6]:port"`` for IPv6) into ``(host, port)``.

    The host is an IPv4 or bracketed IPv6 literal or a DNS name; the port is 0..65535
    (0 lets the operating system choose, which tests use). Raises ValueError saying why.
    """
    what = "must be 'host:port' (IPv6 as '[addr]:port')"
    if not isinstance(value, str):
        raise ValueError(f"{what}, got {_show(value)}")
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{what}, got {_show(value)}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{what}: {host!r} is not an IPv6 address, got {_show(value)}") from None
    elif ":" in host:
        raise ValueError(f"{what}: an IPv6 address goes in brackets, got {_show(value)}")
    elif not _valid_host(host):
        raise ValueError(f"{what}: {host!r} is not an IP address or host name, got {_show(value)}")
    if not port_text.isascii() or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"{what} with a port between 0 and 65535, got {_show(value)}")
    return host, int(port_text)


def _host_port(*, allow_empty: bool = False) -> Check:
    def check(value: Any) -> str:
        if allow_empty and value == "":
            return value
        parse_host_port(value)
        return value

    return check


def _ip_address() -> Check:
    def check(value: Any) -> str:
        try:
            if not isinstance(value, str):
                raise ValueError
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"must be an IPv4 or IPv6 address, got {_show(value)}") from None
        return value

    return check


def _setting(default: Any, check: Check) -> Any:
    """A dataclass field with its default and its check."""
    return field(default=default, metadata={"check": check})


class _Section:
    """Base of the section dataclasses: runs each field's check, then ``_check_together``."""

    NAME: ClassVar[str]
    # Declared so that type checkers see every section as a dataclass.
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def __post_init__(self) -> None:
        problems: list[str] = []
        for f in dataclasses.fields(self):
            try:
                value = f.metadata["check"](getattr(self, f.name))
            except ValueError as exc:
                problems.append(f"{self.NAME}.{f.name}: {exc}")
            else:
                object.__setattr__(self, f.name, value)
        if not problems:
            problems.extend(f"{self.NAME}.{message}" for message in self._check_together())
        if problems:
            raise ConfigError("\n".join(problems))

    def _check_together(self) -> list[str]:
        """Rules that tie several keys; each message starts with the key it blames."""
        return []


@dataclass(frozen=True)
class LogConfig(_Section):
    """``[log]``: level and output format of the structured log."""

    NAME: ClassVar[str] = "log"
    level: Literal["debug", "info", "warning", "error"] = _setting("info", _choice("debug", "info", "warning", "error"))
    format: Literal["auto", "json", "console"] = _setting("auto", _choice("auto", "json", "console"))


@dataclass(frozen=True)
class MaskingConfig(_Section):
    """``[masking]``: what replaces a keypad tone on the audio toward the agent and recorder."""

    NAME: ClassVar[str] = "masking"
    enabled: bool = _setting(True, _boolean())
    mode: Literal["flat-tone", "silence", "comfort-noise"] = _setting(
        "flat-tone", _choice("flat-tone", "silence", "comfort-noise")
    )
    delay_ms: int = _setting(20, _integer(10, 200, multiple_of=5))
    flat_tone_hz: float = _setting(500.0, _number(100, 3400))
    flat_tone_level_dbm0: float = _setting(-20.0, _number(-60, -6))
    comfort_noise_level_dbm0: float = _setting(-55.0, _number(-80, -20))
    pre_pad_ms: float = _setting(3.5, _number(0, 5))
    post_pad_ms: float = _setting(8.0, _number(0, 20))
    ramp_ms: float = _setting(2.0, _number(0, 5))

    def _check_together(self) -> list[str]:
        problems = []
        for dtmf_hz in (*DTMF_LOW_HZ, *DTMF_HIGH_HZ):
            if abs(self.flat_tone_hz - dtmf_hz) <= FLAT_TONE_MIN_DTMF_DISTANCE * dtmf_hz:
                problems.append(
                    f"flat_tone_hz: must not be within 5 % of a DTMF frequency ({dtmf_hz} Hz), "
                    f"got {_show(self.flat_tone_hz)}"
                )
        if self.ramp_ms > self.pre_pad_ms or self.ramp_ms > self.post_pad_ms:
            problems.append(
                f"ramp_ms: must not exceed pre_pad_ms ({_fmt(self.pre_pad_ms)}) or post_pad_ms "
                f"({_fmt(self.post_pad_ms)}), got {_show(self.ramp_ms)}"
            )
        return problems


@dataclass(frozen=True)
class DetectorConfig(_Section):
    """``[detector]``: acceptance limits of the DTMF detector (ITU-T Q.24)."""

    NAME: ClassVar[str] = "detector"
    min_level_dbm0: float = _setting(-36.0, _number(-50, -10))
    max_reverse_twist_db: float = _setting(5.0, _number(0, 10))
    max_normal_twist_db: float = _setting(9.0, _number(0, 16))
    min_digit_ms: float = _setting(26.0, _number(20, 40))


@dataclass(frozen=True)
class ControlConfig(_Section):
    """``[control]``: where the NG control protocol (Kamailio / OpenSIPS) is served."""

    NAME: ClassVar[str] = "control"
    ng_listen: str = _setting("127.0.0.1:22222", _host_port())

    @property
    def ng_address(self) -> tuple[str, int]:
        """``ng_listen`` as ``(host, port)``."""
        return parse_host_port(self.ng_listen)


@dataclass(frozen=True)
class MediaConfig(_Section):
    """``[media]``: RTP ports and addresses of the relayed calls."""

    NAME: ClassVar[str] = "media"
    interface: str = _setting("127.0.0.1", _ip_address())
    port_min: int = _setting(30000, _integer(1024, 65535))
    port_max: int = _setting(40000, _integer(1024, 65535))
    timeout_s: float = _setting(60.0, _number(above=0))
    caller_side: Literal["offer", "answer"] = _setting("offer", _choice("offer", "answer"))

    def _check_together(self) -> list[str]:
        problems = []
        if self.port_min % 2:
            # RTP takes the even port of a pair and RTCP the odd one above it (RFC 3550 11).
            problems.append(f"port_min: must be even (RTP takes even ports), got {self.port_min}")
        if self.port_min >= self.port_max:
            problems.append(f"port_max: must be greater than port_min ({self.port_min}), got {self.port_max}")
        return problems


@dataclass(frozen=True)
class RecordingConfig(_Section):
    """``[recording]``: where masked recordings are written; empty ``dir`` = off."""

    NAME: ClassVar[str] = "recording"
    dir: str = _setting("", _text())

    @property
    def enabled(self) -> bool:
        return self.dir != ""


@dataclass(frozen=True)
class MetricsConfig(_Section):
    """``[metrics]``: where Prometheus metrics are served; empty ``listen`` = off."""

    NAME: ClassVar[str] = "metrics"
    listen: str = _setting("", _host_port(allow_empty=True))

    @property
    def enabled(self) -> bool:
        return self.listen != ""

    @property
    def address(self) -> tuple[str, int] | None:
        """``listen`` as ``(host, port)``, or None when metrics are off."""
        return parse_host_port(self.listen) if self.listen else None


_KEYPAD = frozenset("0123456789*#")
MAX_TRIGGER_DIGITS = 8


def _keypad_sequence() -> Check:
    def check(value: Any) -> str:
        if not isinstance(value, str) or len(value) > MAX_TRIGGER_DIGITS or not set(value) <= _KEYPAD:
            raise ValueError(
                f"must be up to {MAX_TRIGGER_DIGITS} keypad keys (0-9, * and #), or empty, got {_show(value)}"
            )
        return value

    return check


def _currency() -> Check:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not re.fullmatch(r"[A-Z]{3}", value):
            raise ValueError(f"must be an ISO 4217 code of three capital letters, got {_show(value)}")
        return value

    return check


@dataclass(frozen=True)
class CaptureConfig(_Section):
    """``[capture]``: secure card capture on a call (trigger, currency, timeouts, audit trail)."""

    NAME: ClassVar[str] = "capture"
    trigger_digits: str = _setting("", _keypad_sequence())
    currency: str = _setting("GBP", _currency())
    show_bin: bool = _setting(False, _boolean())
    field_timeout_s: float = _setting(20.0, _number(1, 600))
    capture_timeout_s: float = _setting(180.0, _number(10, 3600))
    max_retries: int = _setting(3, _integer(0, 10))
    audit_log: str = _setting("", _text())

    def _check_together(self) -> list[str]:
        if self.capture_timeout_s < self.field_timeout_s:
            return [
                f"capture_timeout_s: must not be shorter than field_timeout_s ({_fmt(self.field_timeout_s)}), "
                f"got {_show(self.capture_timeout_s)}"
            ]
        return []


@dataclass(frozen=True)
class GatewayConfig(_Section):
    """``[gateway]``: the payment gateway that completed captures go to; empty ``url`` = none."""

    NAME: ClassVar[str] = "gateway"
    connector: str = _setting("http-json", _text())
    url: str = _setting("", _text())
    ca_file: str = _setting("", _text())
    auth_token: str = _setting("", _text())
    timeout_s: float = _setting(10.0, _number(above=0))

    @property
    def enabled(self) -> bool:
        return self.url != ""

    def connector_settings(self) -> dict[str, Any]:
        """The table handed to the connector: every key, empty strings left out."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) != ""}


@dataclass(frozen=True)
class Config:
    """The whole configuration: one attribute per TOML section."""

    log: LogConfig = field(default_factory=LogConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    media: MediaConfig = field(default_factory=MediaConfig)
    recording: RecordingConfig = field(default_factory=RecordingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)

    @classmethod
    def defaults(cls) -> Self:
        """The configuration with every key at its default."""
        return cls()

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Self:
        """Build from parsed TOML (section name -> table). Raises ConfigError listing every problem."""
        problems: list[str] = []
        sections: dict[str, Any] = {}
        for name, table in data.items():
            if name not in _SECTION_TYPES:
                problems.append(f"unknown section {name!r}")
                continue
            if not isinstance(table, Mapping):
                problems.append(f"{name}: must be a table ([{name}]), got {_show(table)}")
                continue
            section_cls = _SECTION_TYPES[name]
            known = {f.name for f in dataclasses.fields(section_cls)}
            unknown = [key for key in table if key not in known]
            problems.extend(f"unknown key '{name}.{key}'" for key in unknown)
            if unknown:
                continue
            try:
                sections[name] = section_cls(**table)
            except ConfigError as exc:
                problems.append(str(exc))
        if problems:
            raise ConfigError("\n".join(problems))
        return cls(**sections)


_SECTION_TYPES: dict[str, type[_Section]] = {
    section.NAME: section
    for section in (
        LogConfig, MaskingConfig, DetectorConfig, ControlConfig, MediaConfig, RecordingConfig, MetricsConfig,
        CaptureConfig, GatewayConfig,
    )
}


def load_config(path: str | Path | None) -> Config:
    """Load a TOML configuration file; ``None`` gives :meth:`Config.defaults`.

    Raises ConfigError, its message starting with the file name, when the file cannot
    be read, is not valid TOML (with the line), or holds unknown or invalid keys.
    """
    if path is None:
        return Config.defaults()
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not UTF-8 text (at line {line})") from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message ends with "(at line L, column C)".
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    try:
        return Config.from_mapping(data)
    except ConfigError as exc:
        raise ConfigError("\n".join(f"{path}: {line}" for line in str(exc).splitlines())) from None
