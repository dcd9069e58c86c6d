"""Whole calls through the live proxy that pay: NG offer/answer over loopback UDP, the caller
types a public test card in-band on PCMU, the capture is started by NG ``block DTMF`` with
``capture``, by the Python API or by the caller's trigger keys, and the card goes to the
reference gateway over verified HTTPS. Also: the gateway failing ends the capture with an
error to the agent while the call goes on."""

from __future__ import annotations

import asyncio
import gc
import struct
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dtmfguard import synth
from dtmfguard.app import Proxy
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
from dtmfguard.control.media import CallMedia
from dtmfguard.errors import CaptureError
from dtmfguard.gateway_sim import GatewaySim
from dtmfguard.kernels import warmup
from dtmfguard.protocol import bencode
from dtmfguard.protocol.sdp import SessionDescription

pytestmark = pytest.mark.integration

PAN = "4111111111111111"  # public Visa test number
EXPIRY = "1230"
CODE = "737"
TOKEN = "capture-test-token"
FRAME = 160
REPLY_TIMEOUT_S = 5.0
PORT_MIN, PORT_MAX = 46000, 46999


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


async def udp() -> Inbox:
    _transport, inbox = await asyncio.get_running_loop().create_datagram_endpoint(
        Inbox, local_addr=("127.0.0.1", 0)
    )
    return inbox


class Ng:
    def __init__(self, peer: Inbox, server: tuple[str, int]) -> None:
        self.peer = peer
        self.server = server
        self.sequence = 0

    async def request(self, body: dict[str, Any]) -> dict[str, Any]:
        self.sequence += 1
        cookie = b"cap_%d" % self.sequence
        self.peer.send(cookie + b" " + bencode.encode(body), self.server)
        reply = await asyncio.wait_for(self.peer.queue.get(), REPLY_TIMEOUT_S)
        got, _, payload = reply.partition(b" ")
        assert got == cookie
        decoded = bencode.to_text(bencode.decode(payload))
        assert isinstance(decoded, dict)
        return decoded


def sdp(owner: str, port: int) -> str:
    return (
        f"v=0\r\no={owner} 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
    )


def media_port(reply_sdp: str) -> int:
    return SessionDescription.parse(reply_sdp).media[0].media.port


@dataclass
class LiveCall:
    call_id: str
    ng: Ng
    caller: Inbox
    agent: Inbox
    to_proxy: tuple[str, int]
    sequence: int = 0

    async def type_keys(self, keys: str) -> None:
        """The caller types ``keys`` in-band (PCMU), paced in real time."""
        tones, _ = synth.dtmf_sequence(keys, on_ms=60, off_ms=60, lead_ms=93, tail_ms=200, rng=7)
        tones = np.concatenate([tones, np.zeros((-len(tones)) % FRAME, np.float32)])
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(len(tones) // FRAME):
            payload = ulaw_encode(tones[i * FRAME : (i + 1) * FRAME]).tobytes()
            header = struct.pack("!BBHII", 0x80, 0, self.sequence & 0xFFFF, (self.sequence * FRAME) & 0xFFFFFFFF,
                                 0x5EC0DE)
            self.caller.send(header + payload, self.to_proxy)
            self.sequence += 1
            await asyncio.sleep(max(0.0, start + 0.02 * (i + 1) - loop.time()))

    async def query(self) -> dict[str, Any]:
        return await self.ng.request({"command": "query", "call-id": self.call_id})

    def close(self) -> None:
        self.caller.close()
        self.agent.close()


async def place_call(ng: Ng, call_id: str) -> LiveCall:
    caller, agent = await udp(), await udp()
    offer = await ng.request(
        {"command": "offer", "call-id": call_id, "from-tag": "alice", "sdp": sdp("alice", caller.port)}
    )
    assert offer["result"] == "ok", offer
    answer = await ng.request(
        {"command": "answer", "call-id": call_id, "from-tag": "alice", "to-tag": "bob", "sdp": sdp("bob", agent.port)}
    )
    assert answer["result"] == "ok", answer
    return LiveCall(call_id, ng, caller, agent, ("127.0.0.1", media_port(answer["sdp"])))


async def next_message(proxy: Proxy, call_id: str, kind: str, timeout_s: float = 20.0) -> dict[str, Any]:
    queue = proxy.capture.messages(call_id)

    async def wait() -> dict[str, Any]:
        while True:
            message = await queue.get()
            if message["type"] == kind:
                return message

    return await asyncio.wait_for(wait(), timeout_s)


def make_config(sim: GatewaySim, **capture: Any) -> Config:
    return Config(
        control=ControlConfig(ng_listen="127.0.0.1:0"),
        media=MediaConfig(interface="127.0.0.1", port_min=PORT_MIN, port_max=PORT_MAX),
        capture=CaptureConfig(**capture),
        gateway=GatewayConfig(url=sim.url, ca_file=str(sim.ca_file), auth_token=TOKEN, timeout_s=2.0),
    )


@pytest.fixture(scope="module", autouse=True)
def _compiled_kernels() -> None:
    """Compile the detector kernels before the first call, as ``dtmfguard serve`` does."""
    warmup()


@pytest.fixture
async def sim() -> AsyncIterator[GatewaySim]:
    async with GatewaySim(auth_token=TOKEN) as running:
        yield running


@pytest.fixture
async def proxy(sim: GatewaySim) -> AsyncIterator[Proxy]:
    async with Proxy(make_config(sim)) as running:
        yield running


@pytest.fixture
async def ng(proxy: Proxy) -> AsyncIterator[Ng]:
    peer = await udp()
    try:
        yield Ng(peer, proxy.ng_address)
    finally:
        peer.close()


async def test_ng_block_dtmf_with_capture_pays_once(proxy: Proxy, ng: Ng, sim: GatewaySim) -> None:
    call = await place_call(ng, "cap-ng-a")
    try:
        await call.type_keys("12")  # typed before the capture: dropped
        started = await ng.request(
            {
                "command": "block DTMF", "call-id": "cap-ng-a",
                "capture": {"amount": 1250, "currency": "GBP", "reference": "order-ng-a"},
            }
        )
        assert started == {"result": "ok"}
        query = await call.query()
        assert query["masking"] == "on"
        assert query["capture"]["state"] == "collecting"
        assert query["capture"]["field"] == "pan"
        assert query["capture"]["digits_entered"] == 0
        await call.type_keys(PAN + EXPIRY + CODE)
        result = await next_message(proxy, "cap-ng-a", "gateway_result")
        assert result["status"] == "approved"
        assert sim.charges == 1
        charge = sim.charge_log[0]
        assert (charge.reference, charge.amount_minor, charge.currency) == ("order-ng-a", 1250, "GBP")
        capture = (await call.query())["capture"]
        assert capture["state"] == "submitted"
        assert capture["outcome"] == "approved"
        assert capture["brand"] == "visa"
        assert capture["masked_pan"] == " ".join(["\u2022" * 4] * 3 + ["1111"])
    finally:
        call.close()


async def test_api_capture_waits_for_the_agent_to_submit(proxy: Proxy, ng: Ng, sim: GatewaySim) -> None:
    call = await place_call(ng, "cap-api-a")
    try:
        capture_id = proxy.start_capture("cap-api-a", 999, None, "order-api-a", "agent-7")
        assert capture_id
        await call.type_keys(PAN + EXPIRY + CODE)
        await next_message(proxy, "cap-api-a", "capture_complete", timeout_s=5.0)
        assert sim.charges == 0
        proxy.submit_capture("cap-api-a", "agent-7")
        result = await next_message(proxy, "cap-api-a", "gateway_result")
        assert result["status"] == "approved"
        assert sim.charges == 1
        assert sim.charge_log[0].currency == "GBP"  # [capture] currency
        with pytest.raises(CaptureError, match="submit refused"):
            proxy.submit_capture("cap-api-a", "agent-7")
    finally:
        call.close()


async def test_unblock_dtmf_with_capture_cancels_it(proxy: Proxy, ng: Ng) -> None:
    call = await place_call(ng, "cap-cancel-a")
    try:
        block = {"command": "block DTMF", "call-id": "cap-cancel-a", "capture": {"amount": "500", "reference": "r-1"}}
        assert await ng.request(block) == {"result": "ok"}
        await call.type_keys(PAN[:6])
        unblock = {"command": "unblock DTMF", "call-id": "cap-cancel-a", "capture": {}}
        assert await ng.request(unblock) == {"result": "ok"}
        cancelled = await next_message(proxy, "cap-cancel-a", "capture_cancelled", timeout_s=5.0)
        assert cancelled["reason"] == "ng"
        assert (await call.query())["capture"]["state"] == "cancelled"
        bad = await ng.request({"command": "block DTMF", "call-id": "cap-cancel-a", "capture": {"amount": 5}})
        assert bad["result"] == "error"
        assert bad["error-reason"] == "capture: reference is required"
    finally:
        call.close()


async def test_a_failing_gateway_ends_the_capture_and_the_call_goes_on(proxy: Proxy, ng: Ng, sim: GatewaySim) -> None:
    sim.set_faults(fail_5xx=10)
    call = await place_call(ng, "cap-fail-a")
    try:
        proxy.start_capture("cap-fail-a", 700, "EUR", "order-fail-a", "agent-7", auto_submit=True)
        await call.type_keys(PAN + EXPIRY + CODE)
        result = await next_message(proxy, "cap-fail-a", "gateway_result")
        assert result["status"] == "error"
        assert "503" in result["error"] or "5xx" in result["error"] or "gateway" in result["error"]
        assert sim.charges <= 1  # a 5xx after the charge: retried with the same key, never twice
        query = await call.query()
        assert query["result"] == "ok"
        assert query["capture"]["outcome"] == "error"
        # The call goes on: a new capture can start once the gateway is back.
        sim.set_faults(fail_5xx=0)
        proxy.start_capture("cap-fail-a", 700, "EUR", "order-fail-b", "agent-7", auto_submit=True)
        await call.type_keys(PAN + EXPIRY + CODE)
        again = await next_message(proxy, "cap-fail-a", "gateway_result")
        assert again["status"] == "approved"
    finally:
        call.close()


async def test_trigger_keys_start_a_tokenize_capture(sim: GatewaySim) -> None:
    async with Proxy(make_config(sim, trigger_digits="*9")) as proxy:
        peer = await udp()
        ng = Ng(peer, proxy.ng_address)
        call = await place_call(ng, "cap-trigger-a")
        try:
            await call.type_keys("*9" + PAN + EXPIRY + CODE)
            result = await next_message(proxy, "cap-trigger-a", "gateway_result")
            assert result["status"] == "approved"
            assert result["token"].startswith("tok_")
            assert sim.charges == 0
        finally:
            call.close()
            peer.close()


async def test_an_ended_call_is_freed_without_the_garbage_collector(sim: GatewaySim, tmp_path: Path) -> None:
    """A deleted call's objects go with their last reference, not in the collector's full passes.

    ``serve`` freezes what survives (so full passes do not stall the media path); a call
    whose objects formed a reference cycle would then stay in memory for good. The call
    here does everything a call can: it is metered, recorded, and pays with a capture.
    """
    config = replace(
        make_config(sim), metrics=MetricsConfig(listen="127.0.0.1:0"), recording=RecordingConfig(dir=str(tmp_path)),
    )
    async with Proxy(config) as proxy:
        peer = await udp()
        ng = Ng(peer, proxy.ng_address)
        for round_ in ("warm", "probe"):  # the first call builds what every call shares
            call_id = f"cap-free-{round_}"
            call = await place_call(ng, call_id)
            gc.collect()
            gc.disable()
            try:
                session = proxy.handler.registry.get(call_id)
                assert session is not None
                assert session.relay is not None
                assert isinstance(session.media, CallMedia)
                # The call, its caller path (detector, masker, bank column) and its sockets.
                kept = [weakref.ref(session.media), weakref.ref(session.media._path), weakref.ref(session.relay)]
                del session
                block = {"command": "block DTMF", "call-id": call_id,
                         "capture": {"amount": 1250, "currency": "GBP", "reference": f"order-{round_}"}}
                assert await ng.request(block) == {"result": "ok"}
                await call.type_keys(PAN + EXPIRY + CODE)
                result = await next_message(proxy, call_id, "gateway_result")
                assert result["status"] == "approved"
                deleted = await ng.request({"command": "delete", "call-id": call_id, "from-tag": "alice"})
                assert deleted["result"] == "ok"
                for _ in range(50):  # the relay closes its sockets on the loop
                    if all(ref() is None for ref in kept):
                        break
                    await asyncio.sleep(0.02)
                assert [ref() for ref in kept] == [None, None, None]
            finally:
                gc.enable()
                call.close()
        peer.close()
