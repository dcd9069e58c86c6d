"""The metrics registry, its exposition text, the HTTP endpoint and the proxy's meters."""

from __future__ import annotations

import asyncio

import pytest

from dtmfguard.metrics import (
    CONTENT_TYPE,
    MAX_REQUEST_BYTES,
    Counter,
    Gauge,
    Histogram,
    ProxyMetrics,
    Registry,
    respond,
    start_metrics_server,
)
from dtmfguard.pipeline.detect import DigitConfirmed, ToneStarted


class TestExposition:
    def test_counter_and_gauge_text(self) -> None:
        registry = Registry()
        packets = registry.register(Counter("x_packets_total", "Packets.", ["direction"]))
        active = registry.register(Gauge("x_active", "Active."))
        packets.inc(direction="in")
        packets.inc(2, direction="in")
        active.set(3)
        active.dec()
        assert registry.render() == (
            "# HELP x_packets_total Packets.\n"
            "# TYPE x_packets_total counter\n"
            'x_packets_total{direction="in"} 3\n'
            "# HELP x_active Active.\n"
            "# TYPE x_active gauge\n"
            "x_active 2\n"
        )

    def test_label_values_are_escaped(self) -> None:
        counter = Counter("x_total", "X.", ["reason"])
        counter.inc(reason='a "b"\\c')
        assert counter.render()[-1] == 'x_total{reason="a \\"b\\"\\\\c"} 1'

    def test_label_value_with_a_digit_is_refused(self) -> None:
        counter = Counter("x_total", "X.", ["reason"])
        with pytest.raises(ValueError, match="digits"):
            counter.inc(reason="key 7")

    def test_counter_never_goes_down(self) -> None:
        with pytest.raises(ValueError, match="only goes up"):
            Counter("x_total", "X.").inc(-1)

    def test_wrong_labels_refused(self) -> None:
        with pytest.raises(ValueError, match="labels"):
            Counter("x_total", "X.", ["direction"]).inc(reason="late")

    def test_bad_names_refused(self) -> None:
        with pytest.raises(ValueError, match="metric name"):
            Counter("x-total", "X.")
        with pytest.raises(ValueError, match="label name"):
            Histogram("x_ms", "X.", [1.0], ["le"])


class TestHistogram:
    def test_buckets_are_cumulative_with_sum_and_count(self) -> None:
        h = Histogram("lat_ms", "Latency.", [5.0, 10.0, 20.0])
        for value in (1.0, 5.0, 7.5, 30.0):
            h.observe(value)
        assert h.render()[2:] == [
            'lat_ms_bucket{le="5"} 2',  # an observation equal to a bound falls in that bucket
            'lat_ms_bucket{le="10"} 3',
            'lat_ms_bucket{le="20"} 3',
            'lat_ms_bucket{le="+Inf"} 4',
            "lat_ms_sum 43.5",
            "lat_ms_count 4",
        ]
        assert h.count() == 4

    def test_labelled_histogram(self) -> None:
        h = Histogram("t_ms", "T.", [0.5], ["direction"])
        h.observe(0.25, direction="caller_to_agent")
        assert 't_ms_bucket{direction="caller_to_agent",le="0.5"} 1' in h.render()

    def test_buckets_must_increase(self) -> None:
        with pytest.raises(ValueError, match="increasing"):
            Histogram("x_ms", "X.", [10.0, 5.0])

    def test_sum_is_rounded(self) -> None:
        h = Histogram("x_ms", "X.", [1.0])
        h.observe(1 / 3)
        assert "x_ms_sum 0.333333" in h.render()


class TestProxyMetrics:
    def test_detector_events_feed_latencies_in_ms(self) -> None:
        metrics = ProxyMetrics()
        metrics.tone_events([ToneStarted(start_sample=800, detected_sample=880)])
        metrics.tone_events([DigitConfirmed("5", onset_sample=800, confirmed_sample=1040)])
        text = metrics.render()
        assert 'dtmfguard_tone_onset_latency_ms_bucket{le="10"} 1' in text
        assert "dtmfguard_tone_onset_latency_ms_sum 10" in text
        assert "dtmfguard_digit_latency_ms_sum 30" in text
        assert 'dtmfguard_digit_latency_ms_bucket{le="25"} 0' in text

    def test_ng_commands_counted_by_command_and_result(self) -> None:
        metrics = ProxyMetrics()

        async def handle(body: dict[str, object], **_: object) -> dict[str, object]:
            return {"result": "pong"} if body.get("command") == "ping" else {"result": "error"}

        async def go() -> None:
            wrapped = metrics.wrap_ng(handle)
            await wrapped({"command": "ping"}, now_s=0.0)
            await wrapped({"command": "4111111111111111"}, now_s=0.0)
            await wrapped({"command": "block-DTMF"}, now_s=0.0)

        asyncio.run(go())
        text = metrics.render()
        assert 'dtmfguard_ng_commands_total{command="ping",result="pong"} 1' in text
        assert 'dtmfguard_ng_commands_total{command="invalid",result="error"} 1' in text
        assert 'dtmfguard_ng_commands_total{command="block DTMF",result="error"} 1' in text
        assert "4111" not in text


class TestRespond:
    @staticmethod
    def render() -> str:
        return "m 1\n"

    def test_get_metrics(self) -> None:
        reply = respond(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", self.render)
        head, body = reply.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert f"Content-Type: {CONTENT_TYPE}".encode() in head
        assert b"Content-Length: 4" in head
        assert body == b"m 1\n"

    def test_head_has_no_body(self) -> None:
        reply = respond(b"HEAD /metrics HTTP/1.0\r\n\r\n", self.render)
        assert reply.startswith(b"HTTP/1.1 200")
        assert reply.endswith(b"\r\n\r\n")

    @pytest.mark.parametrize(
        ("head", "status"),
        [
            (b"GET / HTTP/1.1\r\n\r\n", b"404"),
            (b"GET /metricsx HTTP/1.1\r\n\r\n", b"404"),
            (b"POST /metrics HTTP/1.1\r\n\r\n", b"405"),
            (b"GARBAGE\r\n\r\n", b"400"),
            (b"GET /metrics SPDY/3\r\n\r\n", b"400"),
            (b"\xff\xfe /metrics HTTP/1.1\r\n\r\n", b"400"),
        ],
    )
    def test_other_requests(self, head: bytes, status: bytes) -> None:
        assert respond(head, self.render).startswith(b"HTTP/1.1 " + status)

    def test_render_failure_is_500(self) -> None:
        def broken() -> str:
            raise RuntimeError("boom")

        assert respond(b"GET /metrics HTTP/1.1\r\n\r\n", broken).startswith(b"HTTP/1.1 500")


async def _exchange(address: tuple[str, int], request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(*address)
    writer.write(request)
    await writer.drain()
    writer.write_eof()  # a client cut short: the server must not wait for the rest
    data = await asyncio.wait_for(reader.read(), timeout=5.0)
    writer.close()
    return data


class TestServer:
    def test_serves_and_survives_bad_clients(self) -> None:
        async def go() -> None:
            server = await start_metrics_server(lambda: "m 1\n", "127.0.0.1", 0)
            try:
                ok = await _exchange(server.address, b"GET /metrics HTTP/1.1\r\n\r\n")
                assert ok.startswith(b"HTTP/1.1 200")
                assert ok.endswith(b"m 1\n")
                huge = await _exchange(server.address, b"GET /metrics HTTP/1.1\r\n" + b"X: y\r\n" * MAX_REQUEST_BYTES)
                assert huge.startswith(b"HTTP/1.1 431")
                cut = await _exchange(server.address, b"GET /met")
                assert cut.startswith(b"HTTP/1.1 400")
                again = await _exchange(server.address, b"GET /metrics HTTP/1.0\r\n\r\n")
                assert again.startswith(b"HTTP/1.1 200")
            finally:
                await server.close()

        asyncio.run(go())
