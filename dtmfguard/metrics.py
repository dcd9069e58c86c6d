"""Prometheus metrics of a running proxy: a tiny registry, the proxy's meters, and an HTTP endpoint.

The registry (:class:`Counter`, :class:`Gauge`, :class:`Histogram` with fixed buckets,
:class:`Registry`) renders the Prometheus text exposition format, version 0.0.4. It needs
no third-party package: the proxy exports a few dozen series and the format is simple.

:class:`ProxyMetrics` holds what ``dtmfguard serve`` exports: active calls, packets,
drops and errors per direction, masked tones, NG commands by command and result, tone
onset and digit latency histograms (from the detector's events, in ms of media time)
and a per-packet processing time histogram. Per-call counters are read from each
call's :meth:`~dtmfguard.control.media.CallMedia.stats` at scrape time, so the packet
path pays for no counter updates; only the timing histogram is fed per packet.

PCI DSS: label values come from fixed sets (directions, drop reasons, NG command
names); a label value holding a digit is refused, so no key or card number can ever
reach a label. Values are counts, durations and sums rounded to a microsecond.

:func:`start_metrics_server` serves ``GET /metrics`` over a minimal asyncio HTTP/1.x
server: one request per connection, request head at most :data:`MAX_REQUEST_BYTES`,
:data:`REQUEST_TIMEOUT_S` to send it; anything else is answered 4xx and a client error
never reaches the event loop.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from dtmfguard.control.media import CallMedia
from dtmfguard.errors import ProtocolError
from dtmfguard.log import get_logger
from dtmfguard.pipeline.detect import DigitConfirmed, ToneEvent, ToneStarted
from dtmfguard.protocol.ng import Command, parse_command

__all__ = [
    "CONTENT_TYPE",
    "LATENCY_BUCKETS_MS",
    "MAX_REQUEST_BYTES",
    "PROCESSING_BUCKETS_MS",
    "Counter",
    "Gauge",
    "Histogram",
    "MeteredCallMedia",
    "MetricsServer",
    "ProxyMetrics",
    "Registry",
    "start_metrics_server",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_REQUEST_BYTES = 8192
"""Largest request head (request line and headers) read; a larger one gets 431."""
REQUEST_TIMEOUT_S = 5.0
SAMPLE_RATE_HZ = 8000

LATENCY_BUCKETS_MS = (2.5, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 75.0, 100.0, 200.0)
PROCESSING_BUCKETS_MS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0)

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")

Labels = tuple[str, ...]
_M = TypeVar("_M", bound="_Metric")


def _log() -> Any:
    return get_logger(component="metrics")


def _number(value: float) -> str:
    """A sample value: integers as integers, others rounded to 6 decimals (no long digit tails)."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _label_text(names: Labels, values: Labels, extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labelnames: Iterable[str] = ()) -> None:
        if not _NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        self.name = name
        self.help = help_text
        self.labelnames: Labels = tuple(labelnames)
        for label in self.labelnames:
            if not _LABEL.match(label) or label == "le":
                raise ValueError(f"invalid label name {label!r}")

    def _key(self, labels: Mapping[str, str]) -> Labels:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name}: labels {sorted(labels)} (expected {sorted(self.labelnames)})")
        values = tuple(str(labels[n]) for n in self.labelnames)
        for value in values:
            # Defence in depth: no key or card number can become a label value.
            if any(c.isdigit() for c in value):
                raise ValueError(f"{self.name}: a label value may not contain digits")
        return values

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def render(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    """A monotonically increasing count per label set."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labelnames: Iterable[str] = ()) -> None:
        super().__init__(name, help_text, labelnames)
        self._values: dict[Labels, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError(f"{self.name}: a counter only goes up (got {amount})")
        key = self._key(labels)
        self._values[key] = self._values.get(key, 0.0) + amount

    def set_total(self, total: float, **labels: str) -> None:
        """Set the count from a source that keeps its own monotonic total (read at scrape time)."""
        self._values[self._key(labels)] = float(total)

    def value(self, **labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def render(self) -> list[str]:
        lines = self.header()
        for key, value in sorted(self._values.items()):
            lines.append(f"{self.name}{_label_text(self.labelnames, key)} {_number(value)}")
        return lines


class Gauge(Counter):
    """A value that goes up and down."""

    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        self._values[self._key(labels)] = float(value)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        self._values[key] = self._values.get(key, 0.0) + amount

    def dec(self, amount: float = 1.0, **labels: str) -> None:
        self.inc(-amount, **labels)


class Histogram(_Metric):
    """Observations counted into fixed cumulative buckets (upper bounds, ``le``), plus sum and count."""

    kind = "histogram"

    def __init__(
        self, name: str, help_text: str, buckets: Iterable[float], labelnames: Iterable[str] = (),
    ) -> None:
        super().__init__(name, help_text, labelnames)
        bounds = [float(b) for b in buckets if not math.isinf(b)]
        if not bounds or bounds != sorted(set(bounds)):
            raise ValueError(f"{self.name}: buckets must be increasing and distinct")
        self.buckets = tuple(bounds)
        self._series: dict[Labels, list[float]] = {}  # per-bucket counts, then +Inf, sum

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels) if labels or self.labelnames else ()
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = [0.0] * (len(self.buckets) + 2)
        # Non-cumulative counts here; render() accumulates. Values above the last bound go to +Inf.
        series[bisect.bisect_left(self.buckets, value)] += 1
        series[-1] += value

    def count(self, **labels: str) -> int:
        series = self._series.get(self._key(labels) if labels or self.labelnames else ())
        return 0 if series is None else int(sum(series[:-1]))

    def render(self) -> list[str]:
        lines = self.header()
        for key, series in sorted(self._series.items()):
            running = 0.0
            for bound, count in zip((*self.buckets, math.inf), series[:-1], strict=True):
                running += count
                le = f'le="{_number(bound)}"'
                lines.append(f"{self.name}_bucket{_label_text(self.labelnames, key, le)} {_number(running)}")
            labels = _label_text(self.labelnames, key)
            lines.append(f"{self.name}_sum{labels} {_number(series[-1])}")
            lines.append(f"{self.name}_count{labels} {_number(running)}")
        return lines


class Registry:
    """Metrics in registration order, and collectors run before each render (to refresh values)."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}
        self._collectors: list[Callable[[], None]] = []

    def register(self, metric: _M) -> _M:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name} is already registered")
        self._metrics[metric.name] = metric
        return metric

    def add_collector(self, collect: Callable[[], None]) -> None:
        self._collectors.append(collect)

    def render(self) -> str:
        """The exposition text; a failing collector is logged and its metrics keep their last values."""
        for collect in self._collectors:
            try:
                collect()
            except Exception as exc:
                _log().warning("metrics collector failed", error=type(exc).__name__)
        lines: list[str] = []
        for metric in self._metrics.values():
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the proxy's metrics

CALLER_TO_AGENT = "caller_to_agent"
AGENT_TO_CALLER = "agent_to_caller"
DIRECTIONS = (CALLER_TO_AGENT, AGENT_TO_CALLER)
# CallMedia counter -> drop reason.
_DROP_REASONS = {"dropped": "unexpected_source", "late": "late", "muted": "muted"}
_COUNTER_KEYS = ("packets", "bytes", "errors", "dropped", "late", "concealed", "muted", "rtcp_packets")


def _samples_to_ms(samples: int) -> float:
    return 1000.0 * samples / SAMPLE_RATE_HZ


class ProxyMetrics:
    """The metrics of one ``dtmfguard serve`` process; see the module docstring."""

    def __init__(self) -> None:
        r = self.registry = Registry()
        self.calls_active = r.register(Gauge("dtmfguard_calls_active", "Calls with media set up now."))
        self.calls = r.register(Counter("dtmfguard_calls_total", "Calls set up since start."))
        self.packets = r.register(
            Counter("dtmfguard_packets_total", "Valid RTP packets received, by direction.", ["direction"])
        )
        self.bytes = r.register(
            Counter("dtmfguard_bytes_total", "Bytes of valid RTP packets received, by direction.", ["direction"])
        )
        self.dropped = r.register(
            Counter(
                "dtmfguard_packets_dropped_total",
                "RTP packets not relayed, by direction and reason (unexpected_source, late, muted).",
                ["direction", "reason"],
            )
        )
        self.errors = r.register(
            Counter(
                "dtmfguard_packet_errors_total",
                "Malformed packets and packets dropped after a processing error, by direction.",
                ["direction"],
            )
        )
        self.concealed = r.register(
            Counter("dtmfguard_packets_concealed_total", "Lost caller packets concealed (through the masker).")
        )
        self.rtcp = r.register(Counter("dtmfguard_rtcp_packets_total", "RTCP packets relayed.", ["direction"]))
        self.masked_tones = r.register(Counter("dtmfguard_masked_tones_total", "Tones masked toward the agent."))
        self.key_presses = r.register(
            Counter("dtmfguard_key_presses_total", "Key presses captured (in-band or RFC 4733); a count only.")
        )
        self.ng_commands = r.register(
            Counter("dtmfguard_ng_commands_total", "NG commands answered, by command and result.",
                    ["command", "result"])
        )
        self.onset_latency = r.register(
            Histogram(
                "dtmfguard_tone_onset_latency_ms",
                "Media time from a tone's estimated start to its detection (ms).",
                LATENCY_BUCKETS_MS,
            )
        )
        self.digit_latency = r.register(
            Histogram(
                "dtmfguard_digit_latency_ms",
                "Media time from a digit's onset to its confirmation (ms).",
                LATENCY_BUCKETS_MS,
            )
        )
        self.processing = r.register(
            Histogram(
                "dtmfguard_packet_processing_ms",
                "Wall time to process one RTP packet (parse, detect, mask, encode), by direction (ms).",
                PROCESSING_BUCKETS_MS,
                ["direction"],
            )
        )
        self._live: dict[int, CallMedia] = {}
        self._ended: dict[str, dict[str, float]] = {d: dict.fromkeys(_COUNTER_KEYS, 0.0) for d in DIRECTIONS}
        self._ended_tones = 0.0
        self._ended_presses = 0.0
        r.add_collector(self._collect_calls)

    # -- calls

    def call_started(self, media: CallMedia) -> None:
        self._live[id(media)] = media
        self.calls.inc()

    def call_ended(self, media: CallMedia) -> None:
        """Fold a closed call's final counts into the totals; idempotent."""
        if self._live.pop(id(media), None) is None:
            return
        stats = media.stats()
        for direction, counts in self._directions(stats).items():
            for key in _COUNTER_KEYS:
                self._ended[direction][key] += counts.get(key, 0)
        self._ended_tones += stats.get("masked_tones", 0)
        self._ended_presses += stats.get("digits", 0)

    @staticmethod
    def _directions(stats: Mapping[str, Any]) -> dict[str, Mapping[str, int]]:
        caller = stats.get("caller", "offer")
        agent = "answer" if caller == "offer" else "offer"
        return {CALLER_TO_AGENT: stats.get(caller, {}), AGENT_TO_CALLER: stats.get(agent, {})}

    def _collect_calls(self) -> None:
        totals: dict[str, dict[str, float]] = {d: dict(v) for d, v in self._ended.items()}
        tones, presses = self._ended_tones, self._ended_presses
        for media in list(self._live.values()):
            stats = media.stats()
            for direction, leg in self._directions(stats).items():
                for key in _COUNTER_KEYS:
                    totals[direction][key] += leg.get(key, 0)
            tones += stats.get("masked_tones", 0)
            presses += stats.get("digits", 0)
        self.calls_active.set(len(self._live))
        for direction, counts in totals.items():
            self.packets.set_total(counts["packets"], direction=direction)
            self.bytes.set_total(counts["bytes"], direction=direction)
            self.errors.set_total(counts["errors"], direction=direction)
            self.rtcp.set_total(counts["rtcp_packets"], direction=direction)
            for key, reason in _DROP_REASONS.items():
                if key == "muted" and direction == AGENT_TO_CALLER:
                    continue  # only the caller's stream is ever muted
                self.dropped.set_total(counts[key], direction=direction, reason=reason)
        self.concealed.set_total(totals[CALLER_TO_AGENT]["concealed"])
        self.masked_tones.set_total(tones)
        self.key_presses.set_total(presses)

    # -- detector events and timing

    def tone_events(self, events: Iterable[ToneEvent]) -> None:
        for event in events:
            if isinstance(event, ToneStarted):
                self.onset_latency.observe(_samples_to_ms(event.detected_sample - event.start_sample))
            elif isinstance(event, DigitConfirmed):
                self.digit_latency.observe(_samples_to_ms(event.confirmed_sample - event.onset_sample))

    def packet_time(self, direction: str, elapsed_ns: int) -> None:
        self.processing.observe(elapsed_ns / 1e6, direction=direction)

    # -- NG

    def wrap_ng(
        self, handle: Callable[..., Awaitable[dict[str, Any]]],
    ) -> Callable[..., Awaitable[dict[str, Any]]]:
        """``handle`` (the NG command handler) counting each reply by command and result."""

        async def metered(body: Mapping[str, Any], **kwargs: Any) -> dict[str, Any]:
            reply = await handle(body, **kwargs)
            try:
                command = parse_command(body).value
            except ProtocolError:
                command = "invalid"
            result = reply.get("result") if isinstance(reply, Mapping) else None
            outcome = result if result in ("ok", "pong", "error") else "other"
            if command not in _KNOWN_COMMANDS:
                command = "invalid"
            self.ng_commands.inc(command=command, result=outcome)
            return reply

        return metered

    def render(self) -> str:
        return self.registry.render()


_KNOWN_COMMANDS = frozenset(c.value for c in Command)


class MeteredCallMedia(CallMedia):
    """A :class:`CallMedia` that reports to :class:`ProxyMetrics`: its counters, detector events, packet times.

    Used only when metrics are on, so a proxy without metrics pays nothing per packet.
    """

    def __init__(self, call_id: str, *, metrics: ProxyMetrics, **kwargs: Any) -> None:
        super().__init__(call_id, **kwargs)
        self._metrics = metrics
        metrics.call_started(self)
        self._path.observer = metrics.tone_events  # onset and digit latencies

    def on_rtp(
        self, leg: str, data: bytes, src: tuple[str, int], now_s: float,
    ) -> list[tuple[str, bytes, tuple[str, int]]]:
        started_ns = time.perf_counter_ns()
        out = super().on_rtp(leg, data, src, now_s)
        direction = CALLER_TO_AGENT if leg == self.caller else AGENT_TO_CALLER
        self._metrics.packet_time(direction, time.perf_counter_ns() - started_ns)
        return out

    def close(self) -> dict[str, Any]:
        summary = super().close()
        self._metrics.call_ended(self)
        return summary


# --------------------------------------------------------------------------- HTTP endpoint

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 431: "Request Header Fields Too Large", 500: "Internal Server Error"}


def _response(status: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
              head_only: bool = False) -> bytes:
    headers = [
        f"HTTP/1.1 {status} {_REASONS[status]}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if status == 405:
        headers.append("Allow: GET, HEAD")
    return ("\r\n".join(headers) + "\r\n\r\n").encode("ascii") + (b"" if head_only else body)


def respond(head: bytes, render: Callable[[], str]) -> bytes:
    """The response to one request head (bytes up to and including the blank line). Sans-I/O."""
    try:
        request_line = head.split(b"\r\n", 1)[0].decode("ascii")
        method, target, version = request_line.split(" ")
    except (UnicodeDecodeError, ValueError):
        return _response(400, b"bad request\n")
    if not version.startswith("HTTP/1."):
        return _response(400, b"bad request\n")
    path = target.split("?", 1)[0]
    if path != "/metrics":
        return _response(404, b"not found\n")
    if method not in ("GET", "HEAD"):
        return _response(405, b"method not allowed\n")
    try:
        body = render().encode("utf-8")
    except Exception as exc:
        _log().error("metrics rendering failed", error=type(exc).__name__)
        return _response(500, b"metrics unavailable\n")
    return _response(200, body, CONTENT_TYPE, head_only=method == "HEAD")


class MetricsServer:
    """A running metrics endpoint; :attr:`address` is where it listens."""

    def __init__(self, server: asyncio.Server, render: Callable[[], str]) -> None:
        self._server = server
        self._render = render

    @property
    def address(self) -> tuple[str, int]:
        sockname = self._server.sockets[0].getsockname()
        return sockname[0], sockname[1]

    async def close(self) -> None:
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), timeout=2.0)


async def _read_head(reader: asyncio.StreamReader) -> bytes | int:
    """The request head, or the status to answer (408 slow, 431 too large, 400 cut short)."""
    try:
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=REQUEST_TIMEOUT_S)
    except TimeoutError:
        return 408
    except asyncio.LimitOverrunError:
        return 431
    except asyncio.IncompleteReadError:
        return 400


async def start_metrics_server(render: Callable[[], str], host: str, port: int) -> MetricsServer:
    """Serve ``render()`` on ``http://host:port/metrics``; raises OSError when the address is taken."""

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await _read_head(reader)
            if isinstance(head, int):
                reply = _response(head, f"{_REASONS[head].lower()}\n".encode())
            else:
                reply = respond(head, render)
            writer.write(reply)
            await asyncio.wait_for(writer.drain(), timeout=REQUEST_TIMEOUT_S)
        except Exception as exc:  # a client that goes away, or worse, never takes the server down
            _log().debug("metrics client failed", error=type(exc).__name__)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), timeout=1.0)

    server = await asyncio.start_server(client, host, port, limit=MAX_REQUEST_BYTES)
    return MetricsServer(server, render)
