"""MediaRelay over real loopback UDP: a caller and an agent endpoint talk through it.

The caller streams 20 ms PCMU packets, in real time, with the test card number typed
in-band; the agent streams its own audio back. The agent's received audio must decode
to no digit with multimon-ng and spandsp, the call must have captured every key, and
the caller must receive the agent's packets.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import numpy as np
import pytest

from dtmfguard import synth
from dtmfguard.codecs.g711 import ulaw_decode, ulaw_encode
from dtmfguard.control.media import CallMedia, LegEndpoint
from dtmfguard.pipeline.batch import DetectorBank
from dtmfguard.pipeline.detect import DigitConfirmed
from dtmfguard.pipeline.mask import MaskSettings
from dtmfguard.protocol.rtp import RtpPacket
from dtmfguard.transport.media import MediaRelay, MediaTicker
from dtmfguard.transport.ports import PortPool
from tests.support.decoders import multimon_digits, spandsp_digits

pytestmark = pytest.mark.integration

TEST_PAN = "4111111111111111"
LOOPBACK = "127.0.0.1"
FRAME = 160
NAMES = {0: "PCMU", 101: "telephone-event"}


class Peer(asyncio.DatagramProtocol):
    """A fake SIP endpoint's media socket: sends what it is told, keeps what it receives."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, tuple[str, int]]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append((data, addr))

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, to)


async def bind_peer() -> Peer:
    loop = asyncio.get_running_loop()
    _, peer = await loop.create_datagram_endpoint(Peer, local_addr=(LOOPBACK, 0))
    return peer


async def open_relay(
    media: CallMedia, pool: PortPool, ticker: MediaTicker | None = None, **options: Any,
) -> tuple[MediaRelay, dict[str, tuple[int, int]]]:
    """Bind a relay on pairs from the test range, skipping pairs another program holds."""
    for _ in range(50):
        ports = {"offer": pool.allocate_pair(), "answer": pool.allocate_pair()}
        try:
            return await MediaRelay.open(media, LOOPBACK, ports, ticker=ticker, **options), ports
        except OSError:
            continue
    raise RuntimeError("no free port pair in the test range")


async def wait_for(condition: Any, timeout_s: float = 3.0) -> None:
    """Poll ``condition`` until it holds or ``timeout_s`` passes (the assertions follow)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition() and loop.time() < deadline:  # noqa: ASYNC110 - datagrams arrive on their own; nothing to await
        await asyncio.sleep(0.01)


@pytest.fixture
def pool() -> PortPool:
    return PortPool(LOOPBACK, 42000, 42999)


@pytest.mark.parametrize("batched", [False, True], ids=["per-packet", "batched"])
async def test_a_call_through_the_relay_masks_the_caller_and_relays_the_agent(pool: PortPool, batched: bool) -> None:
    tones, _ = synth.dtmf_sequence(TEST_PAN, on_ms=60, off_ms=60, lead_ms=93, tail_ms=100, rng=11)
    tones = np.concatenate([tones, np.zeros((-len(tones)) % FRAME, np.float32)])
    agent_voice = synth.speech_like(len(tones) / 8.0, rng=3)
    caller, caller_rtcp, agent, agent_rtcp = [await bind_peer() for _ in range(4)]
    ticker = MediaTicker(DetectorBank(capacity=4)) if batched else None
    media = CallMedia("relay-test", masking=MaskSettings(), bank=ticker.bank if ticker else None)
    media.set_endpoint("offer", LegEndpoint(LOOPBACK, caller.port, caller_rtcp.port, NAMES, 101))
    media.set_endpoint("answer", LegEndpoint(LOOPBACK, agent.port, agent_rtcp.port, NAMES, 101))
    relay, ports = await open_relay(media, pool, ticker)
    if ticker is not None:
        ticker.start()
    try:
        to_offer = (LOOPBACK, ports["offer"][0])
        to_answer = (LOOPBACK, ports["answer"][0])
        assert relay.local_address("offer") == to_offer
        loop = asyncio.get_running_loop()
        start = loop.time()
        n_packets = len(tones) // FRAME
        for i in range(n_packets):
            chunk = slice(i * FRAME, (i + 1) * FRAME)
            caller.send(RtpPacket(0, 1000 + i, 160 * i, 0xCA11E2, ulaw_encode(tones[chunk]).tobytes(),
                                  i == 0).serialize(), to_offer)
            agent.send(RtpPacket(0, 7000 + i, 50_000 + 160 * i, 0xA6E47, ulaw_encode(agent_voice[chunk]).tobytes(),
                                 i == 0).serialize(), to_answer)
            # Real-time pacing on an absolute schedule: 20 ms per packet.
            await asyncio.sleep(max(0.0, start + 0.02 * (i + 1) - loop.time()))
        await wait_for(lambda: len(agent.received) >= n_packets and len(caller.received) >= n_packets)

        # An RTCP receiver report from the caller reaches the agent's RTCP port.
        rr = bytes([0x80, 201, 0, 1]) + (0xCA11E2).to_bytes(4, "big")
        caller_rtcp.send(rr, (LOOPBACK, ports["offer"][1]))
        await wait_for(lambda: len(agent_rtcp.received) >= 1)
    finally:
        await relay.close()
        if ticker is not None:
            await ticker.stop()
        for peer in (caller, caller_rtcp, agent, agent_rtcp):
            assert peer.transport is not None
            peer.transport.close()

    if ticker is not None:
        assert ticker.bank.frames == n_packets, "every caller packet went through the bank"
    at_agent = [RtpPacket.parse(data) for data, _ in agent.received]
    assert len(at_agent) == n_packets
    assert all(addr == to_answer for _, addr in agent.received), "symmetric: sent from the agent leg's port"
    at_agent.sort(key=lambda p: p.sequence_number)
    audio = np.concatenate([ulaw_decode(np.frombuffer(p.payload, np.uint8)) for p in at_agent])
    assert multimon_digits(audio) == ""
    assert spandsp_digits(audio) == ""
    keys = "".join(e.key for e in media.drain_events() if isinstance(e, DigitConfirmed))
    assert keys == TEST_PAN

    at_caller = [RtpPacket.parse(data) for data, _ in caller.received]
    assert len(at_caller) == n_packets
    assert all(addr == to_offer for _, addr in caller.received)
    sent_back = {bytes(ulaw_encode(agent_voice[i * FRAME : (i + 1) * FRAME])) for i in range(n_packets)}
    assert {p.payload for p in at_caller} == sent_back
    assert len({p.ssrc for p in at_caller}) == 1

    (rtcp_data, rtcp_from), = agent_rtcp.received
    assert rtcp_from == (LOOPBACK, ports["answer"][1])
    assert int.from_bytes(rtcp_data[4:8], "big") == at_agent[0].ssrc

    stats = media.stats()
    assert stats["offer"]["packets"] == n_packets
    assert stats["answer"]["packets"] == n_packets
    assert stats["masked_tones"] == 16
    assert relay.send_dropped == 0


async def test_packets_from_a_stranger_are_dropped(pool: PortPool) -> None:
    caller, agent = await bind_peer(), await bind_peer()
    media = CallMedia("stranger-test", masking=MaskSettings())
    media.set_endpoint("offer", LegEndpoint(LOOPBACK, caller.port, caller.port + 1, NAMES, 101))
    media.set_endpoint("answer", LegEndpoint(LOOPBACK, agent.port, agent.port + 1, NAMES, 101))
    relay, ports = await open_relay(media, pool)
    stranger = await bind_peer()
    try:
        silence = b"\xff" * FRAME
        # Both sides latch on their first packet (loopback: same host, so the port decides).
        caller.send(RtpPacket(0, 1, 0, 1, silence).serialize(), (LOOPBACK, ports["offer"][0]))
        agent.send(RtpPacket(0, 1, 0, 2, silence).serialize(), (LOOPBACK, ports["answer"][0]))
        await wait_for(lambda: len(agent.received) == 1 and len(caller.received) == 1)
        stranger.send(RtpPacket(0, 2, 160, 1, silence).serialize(), (LOOPBACK, ports["offer"][0]))
        stranger.send(b"\x00garbage", (LOOPBACK, ports["answer"][0]))
        await wait_for(lambda: media.stats()["offer"]["dropped"] == 1 and media.stats()["answer"]["dropped"] == 1)
    finally:
        await relay.close()
        for peer in (caller, agent, stranger):
            assert peer.transport is not None
            peer.transport.close()
    assert len(agent.received) == 1
    assert len(caller.received) == 1
    assert media.stats()["offer"]["dropped"] == 1
    assert media.stats()["answer"]["dropped"] == 1


async def test_ports_are_free_again_after_close(pool: PortPool) -> None:
    media = CallMedia("close-test", masking=MaskSettings())
    relay, ports = await open_relay(media, pool)
    await relay.close()
    await relay.close()
    again = await MediaRelay.open(CallMedia("reuse", masking=MaskSettings()), LOOPBACK, ports)
    await again.close()


async def test_a_taken_port_fails_the_open_and_frees_the_others(pool: PortPool) -> None:
    blocker = await bind_peer()
    media = CallMedia("taken-test", masking=MaskSettings())
    rtp, rtcp = pool.allocate_pair()
    with pytest.raises(OSError):
        await MediaRelay.open(media, LOOPBACK, {"offer": (rtp, rtcp), "answer": (blocker.port, blocker.port + 1)})
    assert blocker.transport is not None
    blocker.transport.close()
    relay = await MediaRelay.open(media, LOOPBACK, {"offer": (rtp, rtcp), "answer": pool.allocate_pair()})
    await relay.close()


def compiled_kernels() -> list[Any]:
    """Every Numba dispatcher of the kernels package and of the pump's socket I/O."""
    import importlib
    import pkgutil

    import dtmfguard.kernels
    from dtmfguard.transport import udpio

    path = dtmfguard.kernels.__path__
    modules = [importlib.import_module(f"dtmfguard.kernels.{info.name}") for info in pkgutil.iter_modules(path)]
    return [f for module in (*modules, udpio) for f in vars(module).values() if hasattr(f, "signatures")]


async def test_a_long_call_rides_the_quiet_lane_and_still_masks_every_key(pool: PortPool) -> None:
    """Speech, a typed card, speech: the packets go through the quiet lane, which masks
    the tones, and the agent gets one continuous stream with no decodable digit. After
    the start-up warm-up nothing on the way compiles (no packet waits for Numba)."""
    from dtmfguard.kernels import warmup
    from dtmfguard.transport import udpio

    warmup()
    udpio.warmup()
    kernels = compiled_kernels()
    signatures = {f"{f.py_func.__module__}.{f.__name__}": len(f.signatures) for f in kernels}
    tones, _ = synth.dtmf_sequence(TEST_PAN, on_ms=70, off_ms=80, lead_ms=13, rng=5)
    voice = synth.speech_like(4000 + len(tones) / 8.0, rng=6, level_dbm0=-30.0)
    voice[16000 : 16000 + len(tones)] += tones
    x = np.clip(voice[: len(voice) // FRAME * FRAME], -1.0, 1.0)
    caller, caller_rtcp, agent, agent_rtcp = [await bind_peer() for _ in range(4)]
    ticker = MediaTicker(DetectorBank(capacity=4))
    media = CallMedia("lane-test", masking=MaskSettings(), bank=ticker.bank)
    media.set_endpoint("offer", LegEndpoint(LOOPBACK, caller.port, caller_rtcp.port, NAMES, 101))
    media.set_endpoint("answer", LegEndpoint(LOOPBACK, agent.port, agent_rtcp.port, NAMES, 101))
    reports: list[bool] = []  # whether key presses were waiting each time the relay said so
    relay, ports = await open_relay(media, pool, ticker, on_events=lambda: reports.append(media.events_waiting))
    ticker.start()
    n_packets = len(x) // FRAME
    try:
        to_offer = (LOOPBACK, ports["offer"][0])
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(n_packets):
            payload = ulaw_encode(x[i * FRAME : (i + 1) * FRAME]).tobytes()
            caller.send(RtpPacket(0, 40_000 + i, 9_000 + 160 * i, 0x5EED, payload, i == 0).serialize(), to_offer)
            # Ten times real time: media time comes from the timestamps.
            await asyncio.sleep(max(0.0, start + 0.002 * (i + 1) - loop.time()))
        await wait_for(lambda: len(agent.received) >= n_packets)
    finally:
        await relay.close()
        await ticker.stop()
        for peer in (caller, caller_rtcp, agent, agent_rtcp):
            assert peer.transport is not None
            peer.transport.close()

    # After the first packet the whole call stays in the lane: it masks the keys itself.
    assert ticker.lane.frames == n_packets - 1
    assert ticker.lane.fallbacks == 0
    compiled = {f"{f.py_func.__module__}.{f.__name__}": len(f.signatures) for f in kernels}
    assert compiled == signatures, "a kernel compiled on the media path"
    at_agent = sorted((RtpPacket.parse(data) for data, _ in agent.received), key=lambda p: p.sequence_number)
    assert len(at_agent) == n_packets
    seq = np.array([p.sequence_number for p in at_agent])
    ts = np.array([p.timestamp for p in at_agent], np.int64)
    assert len({p.ssrc for p in at_agent}) == 1
    assert set(((seq[1:] - seq[:-1]) & 0xFFFF).tolist()) == {1}
    assert set(((ts[1:] - ts[:-1]) & 0xFFFFFFFF).tolist()) == {FRAME}
    audio = np.concatenate([ulaw_decode(np.frombuffer(p.payload, np.uint8)) for p in at_agent])
    assert multimon_digits(audio) == ""
    assert spandsp_digits(audio) == ""
    # Before the card, the agent hears exactly what the caller sent, one packet late
    # (speech is not altered at this level: nothing in it was masked).
    sent = ulaw_decode(ulaw_encode(x))
    np.testing.assert_array_equal(audio[FRAME:15000], sent[: 15000 - FRAME])  # -0.0 == 0.0
    keys = "".join(e.key for e in media.drain_events() if isinstance(e, DigitConfirmed))
    assert keys == TEST_PAN
    assert reports, "the relay reported the key presses"
    assert all(reports)
    stats = media.stats()
    assert stats["offer"]["packets"] == n_packets
    assert stats["offer"]["concealed"] == stats["offer"]["late"] == 0, "no packet was lost or reordered on the way"


async def test_a_burst_that_leaves_the_quiet_lane_loses_nothing(pool: PortPool) -> None:
    """Quiet packets put the call in the lane; then a tone's first packet and the next one
    arrive back to back: the first falls back, the second (held behind it) must still be
    processed, in order, and the tone masked."""
    tone, _ = synth.dtmf_sequence("5", on_ms=200, off_ms=0, lead_ms=0, rng=2)
    quiet = np.zeros(FRAME * 60, np.float32)
    x = np.concatenate([quiet, tone[: FRAME * 10], quiet[: FRAME * 10]])
    caller, caller_rtcp, agent, agent_rtcp = [await bind_peer() for _ in range(4)]
    ticker = MediaTicker(DetectorBank(capacity=2))
    media = CallMedia("burst-test", masking=MaskSettings(), bank=ticker.bank)
    media.set_endpoint("offer", LegEndpoint(LOOPBACK, caller.port, caller_rtcp.port, NAMES, 101))
    media.set_endpoint("answer", LegEndpoint(LOOPBACK, agent.port, agent_rtcp.port, NAMES, 101))
    relay, ports = await open_relay(media, pool, ticker)
    n_packets = len(x) // FRAME
    try:
        to_offer = (LOOPBACK, ports["offer"][0])
        for i in range(n_packets):
            payload = ulaw_encode(x[i * FRAME : (i + 1) * FRAME]).tobytes()
            caller.send(RtpPacket(0, 100 + i, 160 * i, 0xB0B, payload).serialize(), to_offer)
            if i == 59:
                assert media.lane_slot is not None, "the quiet start put the call in the lane"
            if i in (60, 61, 62):
                continue  # the tone's first three packets go out back to back
            await asyncio.sleep(0.004)
        await wait_for(lambda: len(agent.received) >= n_packets)
    finally:
        await relay.close()
        for peer in (caller, caller_rtcp, agent, agent_rtcp):
            assert peer.transport is not None
            peer.transport.close()
    stats = media.stats()["offer"]
    assert stats["packets"] == n_packets
    assert stats["concealed"] == stats["late"] == 0
    at_agent = sorted((RtpPacket.parse(data) for data, _ in agent.received), key=lambda p: p.sequence_number)
    assert len(at_agent) == n_packets
    audio = np.concatenate([ulaw_decode(np.frombuffer(p.payload, np.uint8)) for p in at_agent])
    assert multimon_digits(audio) == ""
    assert spandsp_digits(audio) == ""
    assert [e.key for e in media.drain_events() if isinstance(e, DigitConfirmed)] == ["5"]
