"""No card digit anywhere: whole paying calls through the real proxy, every output scanned.

A caller streams PCMU over loopback and types a public test card number, its expiry and its
security code in-band; Kamailio's side (NG over UDP) offers, answers, starts the capture with
``block DTMF`` + ``capture`` and queries the call; the card goes to the in-process reference
gateway over verified HTTPS. Then every place the product writes to is scanned: every log line
(the structured log captured in memory), every NG reply, every agent progress message, the
audit trail, the recording's JSON sidecar, and the text of every exception raised along the way.
None may hold a run of four or more consecutive digits of the card number (other than its last
four in the masked form the agent is allowed to see), the expiry, or the security code. The
Prometheus metrics scraped during the call are held to the log redactor's rule (no run of six
digits of the card), since counters may match a four-digit window by chance. The gateway (which
is allowed to see the card) approves the charge exactly once.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import struct
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dtmfguard import synth
from dtmfguard.app import Proxy
from dtmfguard.capture.audit import verify
from dtmfguard.codecs.g711 import ulaw_encode
from dtmfguard.config import (
    CaptureConfig,
    Config,
    ControlConfig,
    GatewayConfig,
    MediaConfig,
    MetricsConfig,
    RecordingConfig,
)
from dtmfguard.errors import CaptureError
from dtmfguard.gateway_sim import GatewaySim
from dtmfguard.kernels import warmup
from dtmfguard.log import configure_logging
from dtmfguard.protocol import bencode
from dtmfguard.protocol.sdp import SessionDescription

FRAME = 160
TOKEN = "no-digits-token"
MASK = "\u2022"
REPLY_TIMEOUT_S = 5.0


# Public test numbers only. Each case: card number, expiry (MMYY, in the future), security code.
CARDS = [
    ("5555555555554444", "0931", "737"),  # Mastercard
    ("378282246310005", "0832", "7373"),  # American Express (4-digit code)
]

_ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)?")
# The NG query reply carries the clock as rtpengine does (Unix seconds and microseconds),
# whose digits match a card's by chance on some days.
_NG_CLOCK = re.compile(r'"(created|created_us|last signal)": \d+')
_DIGIT_RUN = re.compile(r"\d(?:[ -]?\d)*")


def masked_forms(pan: str) -> list[str]:
    """How the agent may see the number: bullets and the last four, grouped in fours from the right."""
    shown = MASK * (len(pan) - 4) + pan[-4:]
    groups = [shown[max(end - 4, 0) : end] for end in range(len(shown), 0, -4)]
    text = " ".join(reversed(groups))
    return [text, json.dumps(text)[1:-1]]


def leaks(text: str, pan: str, expiry: str, code: str) -> list[str]:
    """Every digit run in ``text`` that carries card data (see the module docstring)."""
    for form in masked_forms(pan):
        text = text.replace(form, "<masked>")
    text = _ISO_TIME.sub("<time>", text)
    text = _NG_CLOCK.sub(r'"\1": "<time>"', text)
    windows = {pan[i : i + 4] for i in range(len(pan) - 3)}
    found = []
    for match in _DIGIT_RUN.finditer(text):
        digits = re.sub(r"[ -]", "", match.group())
        if any(window in digits for window in windows) or expiry in digits or digits == code or code in digits[4:]:
            found.append(match.group())
    return found


class Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram endpoint's transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait(data)

    @property
    def port(self) -> int:
        assert self.transport is not None
        port: int = self.transport.get_extra_info("sockname")[1]
        return port

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, to)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def scrape_metrics(proxy: Proxy) -> str:
    address = proxy.metrics_address
    assert address is not None, "metrics are on in this test"
    reader, writer = await asyncio.open_connection(*address)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    await writer.drain()
    body = (await reader.read()).decode("utf-8", errors="replace")
    writer.close()
    return body


async def udp() -> Inbox:
    _transport, inbox = await asyncio.get_running_loop().create_datagram_endpoint(
        Inbox, local_addr=("127.0.0.1", 0)
    )
    return inbox


class Outputs:
    """Everything the product wrote during the test, as text."""

    def __init__(self) -> None:
        self.ng_replies: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self.exceptions: list[str] = []

    def texts(self, log: str, audit_file: Path, recordings: Path) -> Iterator[tuple[str, str]]:
        for number, line in enumerate(log.splitlines()):
            if '"component": "gateway-sim"' not in line:  # the gateway's own log, not ours
                yield f"log line {number + 1}", line
        for reply in self.ng_replies:
            yield "NG reply", json.dumps(reply, ensure_ascii=False)
        for message in self.messages:
            yield "agent message", json.dumps(message, ensure_ascii=False)
        yield from (("exception", text) for text in self.exceptions)
        for line in audit_file.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            # The chain's own SHA-256 hex digests are not data written by the capture.
            record.pop("hash")
            record.pop("prev")
            yield "audit line", json.dumps(record, ensure_ascii=False)
        sidecars = sorted(recordings.glob("*.json"))
        assert sidecars, "recording is on: each call has a JSON sidecar"
        for path in sidecars:
            yield f"sidecar {path.name}", path.read_text(encoding="utf-8")


class Ng:
    def __init__(self, peer: Inbox, server: tuple[str, int], outputs: Outputs) -> None:
        self.peer = peer
        self.server = server
        self.outputs = outputs
        self.sequence = 0

    async def request(self, body: dict[str, Any]) -> dict[str, Any]:
        self.sequence += 1
        cookie = b"sec_%d" % self.sequence
        self.peer.send(cookie + b" " + bencode.encode(body), self.server)
        reply = await asyncio.wait_for(self.peer.queue.get(), REPLY_TIMEOUT_S)
        got, _, payload = reply.partition(b" ")
        assert got == cookie
        decoded = bencode.to_text(bencode.decode(payload))
        assert isinstance(decoded, dict)
        self.outputs.ng_replies.append(decoded)
        return decoded


def sdp(owner: str, port: int) -> str:
    return (
        f"v=0\r\no={owner} 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
    )


_SEQUENCE = [0]


async def type_keys(caller: Inbox, to: tuple[str, int], keys: str) -> None:
    """The caller types ``keys`` in-band on PCMU, paced in real time (one continuing RTP stream)."""
    tones, _ = synth.dtmf_sequence(keys, on_ms=60, off_ms=60, lead_ms=93, tail_ms=200, rng=5)
    tones = np.concatenate([tones, np.zeros((-len(tones)) % FRAME, np.float32)])
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(len(tones) // FRAME):
        sequence = _SEQUENCE[0]
        _SEQUENCE[0] += 1
        header = struct.pack("!BBHII", 0x80, 0, sequence & 0xFFFF, (sequence * FRAME) & 0xFFFFFFFF, 0xC0FFEE)
        caller.send(header + ulaw_encode(tones[i * FRAME : (i + 1) * FRAME]).tobytes(), to)
        await asyncio.sleep(max(0.0, start + 0.02 * (i + 1) - loop.time()))


def drain(queue: asyncio.Queue[dict[str, Any]], into: list[dict[str, Any]]) -> None:
    while not queue.empty():
        into.append(queue.get_nowait())


async def paid(proxy: Proxy, call_id: str, outputs: Outputs, timeout_s: float = 20.0) -> dict[str, Any]:
    queue = proxy.capture.messages(call_id)

    async def wait() -> dict[str, Any]:
        while True:
            message = await queue.get()
            outputs.messages.append(message)
            if message["type"] == "gateway_result":
                return message

    return await asyncio.wait_for(wait(), timeout_s)


@pytest.fixture(scope="module", autouse=True)
def _compiled_kernels() -> None:
    warmup()


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("debug", "json", stream)
    try:
        yield stream
    finally:
        configure_logging()


@pytest.fixture
async def sim() -> AsyncIterator[GatewaySim]:
    async with GatewaySim(auth_token=TOKEN) as running:
        yield running


@pytest.mark.parametrize(("pan", "expiry", "code"), CARDS)
async def test_a_paying_call_leaves_no_card_digit_anywhere(
    pan: str, expiry: str, code: str, tmp_path: Path, log_stream: io.StringIO, sim: GatewaySim
) -> None:
    audit_file = tmp_path / "audit.jsonl"
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    config = Config(
        control=ControlConfig(ng_listen="127.0.0.1:0"),
        media=MediaConfig(interface="127.0.0.1", port_min=20000, port_max=20999),
        recording=RecordingConfig(dir=str(recordings)),
        metrics=MetricsConfig(listen="127.0.0.1:0"),
        capture=CaptureConfig(audit_log=str(audit_file), trigger_digits="*9"),
        gateway=GatewayConfig(url=sim.url, ca_file=str(sim.ca_file), auth_token=TOKEN, timeout_s=5.0),
    )
    outputs = Outputs()
    call_id = "sec-call-a"
    async with Proxy(config) as proxy:
        peer, caller, agent = await udp(), await udp(), await udp()
        ng = Ng(peer, proxy.ng_address, outputs)
        try:
            offer = await ng.request(
                {"command": "offer", "call-id": call_id, "from-tag": "alice", "sdp": sdp("alice", caller.port)}
            )
            answer = await ng.request(
                {"command": "answer", "call-id": call_id, "from-tag": "alice", "to-tag": "bob",
                 "sdp": sdp("bob", agent.port)}
            )
            assert offer["result"] == answer["result"] == "ok"
            agent_view = proxy.capture.messages(call_id)
            to_proxy = ("127.0.0.1", SessionDescription.parse(answer["sdp"]).media[0].media.port)
            started = await ng.request(
                {"command": "block DTMF", "call-id": call_id,
                 "capture": {"amount": 1250, "currency": "GBP", "reference": "order-sec-a"}}
            )
            assert started == {"result": "ok"}
            await type_keys(caller, to_proxy, pan[:8])
            during = await ng.request({"command": "query", "call-id": call_id})
            assert during["capture"]["digits_entered"] == 8
            await type_keys(caller, to_proxy, pan[8:] + expiry + code)
            result = await paid(proxy, call_id, outputs)
            assert result["status"] == "approved", result
            after = await ng.request({"command": "query", "call-id": call_id})
            assert after["capture"]["outcome"] == "approved"
            assert after["capture"]["masked_pan"] == masked_forms(pan)[0]

            # Refusals and bad requests raise; their text is scanned too.
            for attempt in (
                lambda: proxy.submit_capture(call_id, "agent-7"),
                lambda: proxy.start_capture(call_id, 100, "GBP", "ref" + pan, "agent-7"),
                lambda: proxy.start_capture(call_id, 100, "GBP", "ref-ok", "agent " + pan),
            ):
                with pytest.raises(CaptureError) as info:
                    attempt()
                outputs.exceptions += [str(info.value), repr(info.value)]
            # A capture started from the Python API and abandoned half-way.
            proxy.start_capture(call_id, 500, None, "order-sec-b", "agent-7")
            await type_keys(caller, to_proxy, pan[:10])
            proxy.clear_capture(call_id, "agent-7")
            await type_keys(caller, to_proxy, pan[:6])
            assert (await ng.request({"command": "unblock DTMF", "call-id": call_id, "capture": {}}))["result"] == "ok"
            await ng.request({"command": "query", "call-id": call_id})
            scrape = await scrape_metrics(proxy)
            await ng.request({"command": "delete", "call-id": call_id, "from-tag": "alice", "to-tag": "bob"})
        finally:
            for sock in (peer, caller, agent):
                sock.close()
        drain(agent_view, outputs.messages)
    assert sim.charges == 1
    charge = sim.charge_log[0]
    assert (charge.reference, charge.amount_minor, charge.currency, charge.last4) == (
        "order-sec-a", 1250, "GBP", pan[-4:]
    )
    assert verify(audit_file) == (True, None)
    events = [json.loads(line)["event"] for line in audit_file.read_text(encoding="utf-8").splitlines()]
    assert events[:3] == ["capture_started", "capture_submitted", "gateway_result"]
    assert "capture_cleared" in events
    assert events[-1] == "capture_cancelled"
    kinds = {message["type"] for message in outputs.messages}
    assert {"capture_started", "progress", "capture_submitted", "gateway_result", "capture_cancelled"} <= kinds

    # Metrics are counts and histograms: any 4-digit window would match some counter by
    # chance, so they are held to the redactor's rule: no 6-digit window of the card.
    assert "dtmfguard_" in scrape
    windows = {pan[i : i + 6] for i in range(len(pan) - 5)}
    for run in re.findall(r"\d{6,}", scrape):
        assert not any(window in run for window in windows), f"card digits in metrics: {run}"

    scanned = 0
    for where, text in outputs.texts(log_stream.getvalue(), audit_file, recordings):
        scanned += 1
        assert leaks(text, pan, expiry, code) == [], f"card digits in {where}: {text[:300]}"
    assert scanned > 20


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("5555 5555 5555 4444", True),
        ("last digits 5544", True),
        ("\u2022\u2022\u2022\u2022 \u2022\u2022\u2022\u2022 \u2022\u2022\u2022\u2022 4444", False),
        ("4444", True),
        ("expiry 0931", True),
        ("code=737.", True),
        ("port 46737", False),
        ("2026-11-23T03:44:22.555512Z", False),
        ('{"created": 1795457376, "created_us": 555512, "last signal": 1795457376}', False),
        ('{"created": 1795457376, "cvv": 737}', True),
    ],
)
def test_the_scanner_itself(text: str, found: bool) -> None:
    assert bool(leaks(text, "5555555555554444", "0931", "737")) is found
