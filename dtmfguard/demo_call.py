"""The live part of ``dtmfguard demo``: one call through a running proxy, over loopback.

Starts the proxy (:class:`dtmfguard.app.Proxy`, the engine of ``dtmfguard serve``) on the
given configuration, NG control on ``[control] ng_listen`` (127.0.0.1:22222 by default; a
free port when that one is taken), recordings in the demo folder and metrics on a free
loopback port. Then it plays both SIP endpoints and the SIP proxy's part:

* NG ``offer``, ``answer`` and ``delete`` over UDP, as Kamailio's rtpengine module sends them;
* a caller that streams 20 ms PCMU packets in real time: recorded speech (the Debian set
  asterisk-core-sounds-en-wav, else synthetic speech), then the public test card number
  4111 1111 1111 1111 typed in-band, except one key sent as RFC 4733 telephone-events;
* an agent that records what reaches it and talks back with quiet line noise;
* with a :class:`Payment`, the reference gateway in process (:class:`~dtmfguard.gateway_sim.GatewaySim`
  over HTTPS, its certificate as ``[gateway] ca_file``, a fresh bearer token), a capture started
  by NG ``block DTMF`` with a ``capture`` dictionary, the expiry and security code typed after the
  card number, and the agent's view read from :meth:`~dtmfguard.app.Proxy.progress` as it comes.

The claims checked: the call went through; multimon-ng (an independent decoder) hears the
in-band digits in what the caller sent and no digit in what the agent received; no
telephone-event reached the agent; dtmfguard's media engine captured every key (shown as
``•••• •••• •••• 1111``, never in full); the recording holds no digit (dtmfguard's audit);
the metrics endpoint serves and carries no card digits; for a paying call, the gateway approved,
charged exactly once, the agent's messages and the capture audit trail hold no card digit but
the masked last four, and the trail's hash chain verifies. Key presses are read from the
call's :meth:`~dtmfguard.control.media.CallMedia.drain_events` through the proxy's capture
service hook, so the demo sees exactly what a capture session would.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from scipy import signal as sps

from dtmfguard import kernels, synth
from dtmfguard.app import Proxy
from dtmfguard.capture.audit import verify
from dtmfguard.capture.sensitive import SensitiveDigits
from dtmfguard.capture.service import CaptureService, KeySource
from dtmfguard.codecs.g711 import ulaw_decode, ulaw_encode
from dtmfguard.config import Config
from dtmfguard.errors import CaptureError, ProtocolError
from dtmfguard.gateway_sim import Charge, GatewaySim
from dtmfguard.levels import SAMPLE_RATE_HZ, dbm0_to_power
from dtmfguard.offline import DetectorOptions, audit_paths
from dtmfguard.pipeline.detect import DigitConfirmed
from dtmfguard.protocol import bencode
from dtmfguard.protocol.rfc4733 import KeyDown, TelephoneEvent
from dtmfguard.protocol.rtp import RtpPacket
from dtmfguard.protocol.sdp import remote_endpoints
from dtmfguard.wavio import write_wav

__all__ = [
    "LOOPBACK", "MultimonMissing", "Payment", "agent_line", "card_leaks", "live_call_checks", "multimon_digits",
    "run_live_call",
]

LOOPBACK = "127.0.0.1"
FRAME_SAMPLES = 160  # 20 ms of PCMU at 8 kHz
PACKET_S = FRAME_SAMPLES / SAMPLE_RATE_HZ
PCMU_PT = 0
EVENT_PT = 101
TONE_MS = 70.0
GAP_MS = 80.0
TONE_LEVEL_DBM0 = -10.0
LINE_NOISE_DBM0 = -65.0
AGENT_NOISE_DBM0 = -55.0
PAUSE_MS = 600.0
GAP_BETWEEN_PROMPTS_MS = 250.0
PAYMENT_TIMEOUT_S = 15.0
"""Longest wait after the caller's last key for the gateway's answer."""
SETTLE_S = 0.3
"""Time after the caller's last packet for the proxy's last packets (delay line) to arrive."""
NG_TIMEOUT_S = 3.0
CALLER_PROMPTS = ("hello.wav", "vm-toenternumber.wav")
AFTER_PROMPTS = ("auth-thankyou.wav",)
MULTIMON_RATE_HZ = 22050

CALLER_FILE = "live-caller.wav"
AGENT_FILE = "live-agent.wav"
RECORDINGS_DIR = "recordings"
CAPTURE_AUDIT_FILE = "capture-audit.jsonl"

FloatArray = npt.NDArray[np.float32]
Say = Callable[[str], None]
AgentView = Callable[[float, dict[str, Any]], None]
"""Receives each agent message of the call's capture, with the call time in seconds."""


class MultimonMissing(RuntimeError):
    """multimon-ng is not installed; ``make deps`` installs it."""


def multimon_digits(samples_8k: npt.ArrayLike, *, timeout_s: float = 60.0) -> str:
    """Digits multimon-ng hears in 8 kHz float audio (+/-1.0).

    Fed as the test suite feeds it: ``multimon-ng -q -c -a DTMF -t raw -`` on signed 16-bit
    samples resampled to 22050 Hz, 40 ms of silence appended. Raises MultimonMissing when
    the program is missing or fails.
    """
    program = shutil.which("multimon-ng")
    if program is None:
        raise MultimonMissing("multimon-ng is not installed: run `make deps` (Debian package multimon-ng)")
    x = np.concatenate([np.asarray(samples_8k, np.float64).reshape(-1), np.zeros(320)])
    pcm = np.clip(np.rint(x * 32768.0), -32768, 32767)
    resampled = sps.resample_poly(pcm, 441, 160)
    payload = np.clip(np.rint(resampled), -32768, 32767).astype("<i2").tobytes()
    result = subprocess.run(
        [program, "-q", "-c", "-a", "DTMF", "-t", "raw", "-"],
        input=payload, capture_output=True, timeout=timeout_s, check=False,
    )
    if result.returncode != 0:
        raise MultimonMissing(f"multimon-ng exited with status {result.returncode}")
    lines = result.stdout.decode(errors="replace").splitlines()
    return "".join(line.split(":", 1)[1].strip() for line in lines if line.startswith("DTMF:"))


# --------------------------------------------------------------------------- the caller's audio


@dataclass(frozen=True)
class CallerScript:
    """What the caller plays: float32 samples at 8 kHz, and the RFC 4733 key's span."""

    samples: FloatArray
    event_key: str
    event_start_sample: int
    event_samples: int
    inband_digits: str
    speech_source: str


def _silence(ms: float) -> FloatArray:
    return np.zeros(synth.ms_to_samples(ms), np.float32)


def _speech(rng: np.random.Generator, short: bool) -> tuple[FloatArray, FloatArray, str]:
    from dtmfguard.corpus import speech_files, speech_root
    from dtmfguard.wavio import read_wav

    try:
        root = speech_root()
        names = {p.name: p for p in speech_files(root)}
        wanted = CALLER_PROMPTS[:1] if short else CALLER_PROMPTS
        clips = [read_wav(names[n])[0] for n in (*wanted, *AFTER_PROMPTS)]
    except (FileNotFoundError, KeyError, OSError, ValueError):
        ms = 1200.0 if short else 3000.0
        return synth.speech_like(ms, rng), synth.speech_like(ms / 2, rng), "synthetic speech"
    before = [clips[0]]
    for clip in clips[1 : len(wanted)]:
        before += [_silence(GAP_BETWEEN_PROMPTS_MS), clip]
    return np.concatenate(before), clips[-1], f"recorded speech from {root}"


def caller_script(
    card: str, event_index: int, *, short: bool = False, seed: int = 7, expiry: str = "", code: str = "",
) -> CallerScript:
    """Speech, a pause, ``card`` then ``expiry`` (MMYY) and ``code`` on the keypad (key
    ``event_index`` of the card number left out: it goes as RFC 4733), speech."""
    if not 0 <= event_index < len(card):
        raise ValueError(f"event_index {event_index} is outside the {len(card)}-digit card number")
    rng = np.random.default_rng(seed)
    before, after, source = _speech(rng, short)
    typed = card + expiry + code
    keypad, _ = synth.dtmf_sequence(
        typed, on_ms=TONE_MS, off_ms=GAP_MS, lead_ms=0.0, tail_ms=0.0, rng=rng, level_low_dbm0=TONE_LEVEL_DBM0,
    )
    keypad = keypad.astype(np.float32)
    period = synth.ms_to_samples(TONE_MS + GAP_MS)
    tone = synth.ms_to_samples(TONE_MS)
    keypad[event_index * period : event_index * period + tone] = 0.0  # that key goes out of band
    pause = _silence(PAUSE_MS)
    call = np.concatenate([before, pause, keypad, pause, after]).astype(np.float32)
    noise = rng.standard_normal(len(call)) * math.sqrt(dbm0_to_power(LINE_NOISE_DBM0))
    call = synth.clip_int16(call + noise.astype(np.float32))
    # Whole packets, so every sample is sent.
    call = np.concatenate([call, np.zeros(-len(call) % FRAME_SAMPLES, np.float32)])
    start = len(before) + len(pause) + event_index * period
    return CallerScript(
        call, typed[event_index], start, tone, typed[:event_index] + typed[event_index + 1 :], source,
    )


# --------------------------------------------------------------------------- endpoints


class _Endpoint(asyncio.DatagramProtocol):
    """A UDP socket that keeps every datagram it receives."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.replies: asyncio.Queue[bytes] = asyncio.Queue(maxsize=64)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append(data)
        if not self.replies.full():  # only the NG client reads these; media endpoints never do
            self.replies.put_nowait(data)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, to)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def _endpoint() -> _Endpoint:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(_Endpoint, local_addr=(LOOPBACK, 0))
    return protocol


def _sdp(port: int, session: str) -> str:
    return "\r\n".join([
        "v=0",
        f"o={session} 1 1 IN IP4 {LOOPBACK}",
        "s=-",
        f"c=IN IP4 {LOOPBACK}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {PCMU_PT} {EVENT_PT}",
        f"a=rtpmap:{PCMU_PT} PCMU/8000",
        f"a=rtpmap:{EVENT_PT} telephone-event/8000",
        f"a=fmtp:{EVENT_PT} 0-16",
        "a=ptime:20",
        "a=sendrecv",
        "",
    ])


class NgClient:
    """The SIP proxy's side of NG: one request at a time, ``cookie SP bencode`` over UDP."""

    def __init__(self, endpoint: _Endpoint, server: tuple[str, int]) -> None:
        self._endpoint = endpoint
        self._server = server

    async def request(self, **body: Any) -> dict[str, Any]:
        cookie = secrets.token_hex(6).encode()
        self._endpoint.send(cookie + b" " + bencode.encode(body), self._server)
        while True:
            data = await asyncio.wait_for(self._endpoint.replies.get(), timeout=NG_TIMEOUT_S)
            got, _, payload = data.partition(b" ")
            if got == cookie:
                reply = bencode.to_text(bencode.decode(payload))
                if not isinstance(reply, dict):
                    raise ProtocolError("NG reply is not a dictionary")
                return reply


def _port_of(sdp: str) -> int:
    return remote_endpoints(sdp)[0].port


# --------------------------------------------------------------------------- capture hook


class _Replay:
    """A KeySource handing on events already drained."""

    def __init__(self, events: list[Any]) -> None:
        self._events = events

    def drain_events(self) -> list[Any]:
        return self._events


class _DemoCapture(CaptureService):
    """The proxy's capture service, keeping a copy of every key press it is handed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.presses: dict[str, list[Any]] = {}

    def poll(self, call_id: str, media: KeySource, now_ms: int) -> None:
        try:
            events = list(media.drain_events())
        except Exception:
            events = []
        self.presses.setdefault(call_id, []).extend(events)
        super().poll(call_id, _Replay(events), now_ms)


def _captured(events: Iterable[Any], pan_length: int) -> tuple[SensitiveDigits, SensitiveDigits, int]:
    """The keys pressed, in order: the first ``pan_length`` (the card number), the rest (expiry and
    code), and how many came as RFC 4733 events."""
    pan = SensitiveDigits(capacity=64)
    rest = SensitiveDigits(capacity=64)
    from_events = 0
    for event in events:
        if isinstance(event, DigitConfirmed | KeyDown):
            try:
                (pan if len(pan) < pan_length else rest).append(event.key)
            except CaptureError:
                continue
            from_events += isinstance(event, KeyDown)
    return pan, rest, from_events


_DIGIT_RUN = re.compile(r"\d(?:[ -]?\d)*")
_DECIMAL = re.compile(r"\d*\.\d+")
_HEX_DIGEST = re.compile(r"\b[0-9a-f]{64}\b")


def audit_trail_leaks(text: str, card: str, expiry: str = "", code: str = "") -> list[str]:
    """:func:`card_leaks` of a capture audit trail: its chain's SHA-256 digests (``prev``,
    ``hash``) are hex, and the digit runs inside them are chance, not card data."""
    return card_leaks(_HEX_DIGEST.sub("<digest>", text), card, expiry, code)


def card_leaks(text: str, card: str, expiry: str = "", code: str = "") -> list[str]:
    """The digit runs of ``text`` that carry card data: four or more consecutive digits of the card
    number (its masked form, bullets or asterisks and the last four, excepted), the expiry, or the
    security code (a run of its own, or inside a longer run)."""
    shown = card[-4:]
    for bullet in ("\u2022", "*"):
        masked = bullet * (len(card) - 4) + shown
        groups = " ".join(masked[i : i + 4] for i in range(0, len(masked), 4))
        text = text.replace(groups, "<masked>")
    # Times and levels ("8.234 s", "-10.5 dBm0") are never card data, but a list of them
    # would join into one long run across the spaces between them.
    text = _DECIMAL.sub("<decimal>", text)
    windows = {card[i : i + 4] for i in range(len(card) - 3)}
    found = []
    for match in _DIGIT_RUN.finditer(text):
        digits = re.sub(r"[ -]", "", match.group())
        if (
            any(window in digits for window in windows)
            or (expiry and expiry in digits)
            or (code and (digits == code or code in digits[4:]))
        ):
            found.append(match.group())
    return found


# --------------------------------------------------------------------------- the call


@dataclass(frozen=True)
class Payment:
    """What the demo call pays for (``block DTMF`` with a ``capture`` dictionary) and the card typed
    after the card number: its expiry (MMYY) and security code."""

    amount_minor: int
    currency: str
    reference: str
    expiry: str
    code: str


@dataclass
class PaymentOutcome:
    """The payment side of the live call: the NG reply that started the capture, every agent message,
    the gateway's answer (the ``gateway_result`` message, None when none came), the reference
    gateway's charges, and the capture audit trail written by the proxy."""

    request: Payment
    started: dict[str, Any]
    messages: list[dict[str, Any]]
    result: dict[str, Any] | None
    charges: list[Charge]
    audit_file: Path


@dataclass
class LiveCall:
    """What happened on the live call (audio as float32 at 8 kHz)."""

    script: CallerScript
    sent_audio: FloatArray
    agent_audio: FloatArray
    agent_packets: int
    agent_event_packets: int
    caller_packets_received: int
    packets_sent: int
    presses: list[Any]
    ng_port: int
    ng_port_note: str
    metrics_text: str
    recordings: list[Path] = field(default_factory=list)
    payment: PaymentOutcome | None = None


def _demo_config(config: Config, out_dir: Path, sim: GatewaySim | None = None, token: str = "") -> Config:
    demo = dataclasses.replace(
        config,
        recording=dataclasses.replace(config.recording, dir=str(out_dir / RECORDINGS_DIR)),
        metrics=dataclasses.replace(config.metrics, listen=f"{LOOPBACK}:0"),
    )
    if sim is None:
        return demo
    return dataclasses.replace(
        demo,
        gateway=dataclasses.replace(
            demo.gateway, connector="http-json", url=sim.url, ca_file=str(sim.ca_file), auth_token=token,
        ),
        capture=dataclasses.replace(demo.capture, audit_log=str(out_dir / CAPTURE_AUDIT_FILE)),
    )


async def _start_proxy(config: Config) -> tuple[Proxy, _DemoCapture, str]:
    capture = _DemoCapture(config.capture, config.gateway)
    proxy = Proxy(config, capture=capture)
    try:
        await proxy.start()
        return proxy, capture, ""
    except OSError:
        host, port = config.control.ng_address
        busy = dataclasses.replace(config, control=dataclasses.replace(config.control, ng_listen=f"{host}:0"))
        capture = _DemoCapture(busy.capture, busy.gateway)
        proxy = Proxy(busy, capture=capture)
        await proxy.start()
        return proxy, capture, f"{host}:{port} was busy, so a free port was used"


async def _scrape(address: tuple[str, int]) -> str:
    reader, writer = await asyncio.open_connection(*address)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: dtmfguard\r\n\r\n")
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), timeout=5.0)
    writer.close()
    _, _, body = data.partition(b"\r\n\r\n")
    return body.decode("utf-8", errors="replace")


def _event_packets(script: CallerScript, slot: int) -> list[TelephoneEvent]:
    """The telephone-event payloads the caller sends in packet slot ``slot`` (RFC 4733 2.5)."""
    first = script.event_start_sample // FRAME_SAMPLES
    last = (script.event_start_sample + script.event_samples - 1) // FRAME_SAMPLES
    key = int(script.event_key) if script.event_key.isdigit() else "*#ABCD".index(script.event_key) + 10
    if first <= slot <= last:
        duration = min((slot - first + 1) * FRAME_SAMPLES, script.event_samples)
        return [TelephoneEvent(key, False, 10, duration)]
    if slot == last + 1:  # the end packet, sent three times
        return [TelephoneEvent(key, True, 10, script.event_samples)] * 3
    return []


async def place_call(
    config: Config, out_dir: Path, script: CallerScript, *,
    payment: Payment | None = None, agent_view: AgentView | None = None,
) -> LiveCall:
    """Start the proxy, run the call through it in real time, end it, stop the proxy.

    With ``payment``, the reference gateway runs in process over HTTPS (the proxy's ``[gateway]``
    points at it, trusting its certificate), the capture starts by NG ``block DTMF`` before the
    caller types, and ``agent_view`` gets each agent message with the call time in seconds.
    """
    kernels.warmup()  # as `dtmfguard serve` does before its first call
    if payment is None:
        return await _place_call(config, out_dir, script, None, None, None, "")
    token = secrets.token_urlsafe(24)
    async with GatewaySim(auth_token=token) as sim:
        return await _place_call(config, out_dir, script, payment, agent_view, sim, token)


async def _watch(
    proxy: Proxy, call_id: str, messages: list[dict[str, Any]], paid: asyncio.Event,
    agent_view: AgentView | None, started_at: Callable[[], float],
) -> None:
    async for message in proxy.progress(call_id):
        messages.append(message)
        if agent_view is not None:
            agent_view(started_at(), message)
        if message.get("type") in ("gateway_result", "capture_cancelled"):
            paid.set()


async def _place_call(
    config: Config, out_dir: Path, script: CallerScript, payment: Payment | None,
    agent_view: AgentView | None, sim: GatewaySim | None, token: str,
) -> LiveCall:
    audit_file = out_dir / CAPTURE_AUDIT_FILE
    if sim is not None:
        audit_file.unlink(missing_ok=True)  # one call's trail per demo run
    proxy, capture, note = await _start_proxy(_demo_config(config, out_dir, sim, token))
    caller, agent, control = await _endpoint(), await _endpoint(), await _endpoint()
    call_id = "dtmfguard-demo-call"
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    messages: list[dict[str, Any]] = []
    paid = asyncio.Event()
    watcher: asyncio.Task[None] | None = None
    started: dict[str, Any] = {}
    try:
        ng_host, ng_port = proxy.ng_address
        ng = NgClient(control, (ng_host, ng_port))
        offer = await ng.request(command="offer", **{"call-id": call_id, "from-tag": "caller"},
                                 sdp=_sdp(caller.port, "caller"))
        if offer.get("result") != "ok":
            raise RuntimeError(f"NG offer failed: {offer.get('error-reason')}")
        answer = await ng.request(command="answer", **{"call-id": call_id, "from-tag": "caller", "to-tag": "agent"},
                                  sdp=_sdp(agent.port, "agent"))
        if answer.get("result") != "ok":
            raise RuntimeError(f"NG answer failed: {answer.get('error-reason')}")
        to_agent_side = (LOOPBACK, _port_of(str(offer["sdp"])))  # where the agent sends
        to_caller_side = (LOOPBACK, _port_of(str(answer["sdp"])))  # where the caller sends

        t0 = loop.time()
        if payment is not None:
            watcher = loop.create_task(
                _watch(proxy, call_id, messages, paid, agent_view, lambda: loop.time() - t0), name="demo-agent-view",
            )
            # As Kamailio would, when the agent asks for the card: the capture rides on `block DTMF`.
            started = await ng.request(
                command="block DTMF", **{"call-id": call_id},
                capture={"amount": payment.amount_minor, "currency": payment.currency,
                         "reference": payment.reference, "submit": "auto"},
            )

        rng = np.random.default_rng(11)
        ssrc, agent_ssrc = secrets.randbits(32), secrets.randbits(32)
        seq, agent_seq = secrets.randbits(16), secrets.randbits(16)
        start_ts, agent_ts = secrets.randbits(32), secrets.randbits(32)
        agent_level = math.sqrt(dbm0_to_power(AGENT_NOISE_DBM0))
        samples = script.samples
        sent = np.empty_like(samples)
        slots = len(samples) // FRAME_SAMPLES
        for slot in range(slots + 2):
            delay = t0 + slot * PACKET_S - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            for event in _event_packets(script, slot):
                ts = (start_ts + script.event_start_sample) & 0xFFFFFFFF
                marker = slot == script.event_start_sample // FRAME_SAMPLES
                caller.send(RtpPacket(EVENT_PT, seq, ts, ssrc, event.serialize(), marker).serialize(), to_caller_side)
                seq = (seq + 1) & 0xFFFF
            if slot < slots:
                frame = samples[slot * FRAME_SAMPLES : (slot + 1) * FRAME_SAMPLES]
                payload = ulaw_encode(frame).tobytes()
                sent[slot * FRAME_SAMPLES : (slot + 1) * FRAME_SAMPLES] = ulaw_decode(np.frombuffer(payload, np.uint8))
                ts = (start_ts + slot * FRAME_SAMPLES) & 0xFFFFFFFF
                caller.send(RtpPacket(PCMU_PT, seq, ts, ssrc, payload, slot == 0).serialize(), to_caller_side)
                seq = (seq + 1) & 0xFFFF
                talk = (rng.standard_normal(FRAME_SAMPLES) * agent_level).astype(np.float32)
                agent.send(
                    RtpPacket(PCMU_PT, agent_seq, agent_ts, agent_ssrc, ulaw_encode(talk).tobytes(), slot == 0)
                    .serialize(), to_agent_side,
                )
                agent_seq, agent_ts = (agent_seq + 1) & 0xFFFF, (agent_ts + FRAME_SAMPLES) & 0xFFFFFFFF
        await asyncio.sleep(SETTLE_S)
        proxy.poll_captures()  # the presses of the last packets
        if payment is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(paid.wait(), timeout=PAYMENT_TIMEOUT_S)
        metrics_address = proxy.metrics_address
        metrics_text = await _scrape(metrics_address) if metrics_address is not None else ""
        await ng.request(command="delete", **{"call-id": call_id, "from-tag": "caller"})
        if watcher is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(watcher), timeout=NG_TIMEOUT_S)
    finally:
        for endpoint in (caller, agent, control):
            endpoint.close()
        await proxy.stop()
        if watcher is not None and not watcher.done():
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, CaptureError):
                await watcher

    audio, events = _agent_audio(agent.received)
    recordings = sorted((out_dir / RECORDINGS_DIR).glob(f"*{call_id}*.wav"))
    outcome = None
    if payment is not None and sim is not None:
        result = next((m for m in messages if m.get("type") == "gateway_result"), None)
        outcome = PaymentOutcome(payment, started, messages, result, list(sim.charge_log), audit_file)
    return LiveCall(
        script, sent, audio, sum(1 for _ in agent.received) - events, events, len(caller.received),
        slots, capture.presses.get(call_id, []), ng_port, note, metrics_text, recordings, outcome,
    )


def _agent_audio(datagrams: list[bytes]) -> tuple[FloatArray, int]:
    """The agent's received PCMU laid out by RTP timestamp, and the count of telephone-event packets."""
    packets: list[RtpPacket] = []
    events = 0
    for data in datagrams:
        try:
            packet = RtpPacket.parse(data)
        except ProtocolError:
            continue
        if packet.payload_type == PCMU_PT:
            packets.append(packet)
        else:
            events += 1
    if not packets:
        return np.zeros(0, np.float32), events
    first = packets[0].timestamp
    offsets = [((p.timestamp - first + 0x8000_0000) & 0xFFFFFFFF) - 0x8000_0000 for p in packets]
    base = min(offsets)
    end = max(o - base + len(p.payload) for o, p in zip(offsets, packets, strict=True))
    audio = np.zeros(end, np.float32)
    for offset, packet in zip(offsets, packets, strict=True):
        at = offset - base
        audio[at : at + len(packet.payload)] = ulaw_decode(np.frombuffer(packet.payload, np.uint8))
    return audio, events


# --------------------------------------------------------------------------- claims


def _payment_checks(payment: PaymentOutcome, card: str, bullet: str) -> list[tuple[bool, str]]:
    """The claims about the payment: started over NG, approved, charged once, nothing leaked to the agent."""
    request = payment.request
    result = payment.result or {}
    approved = result.get("status") == "approved" and bool(result.get("auth_code"))
    charges = payment.charges
    charge_ok = len(charges) == 1 and (
        charges[0].amount_minor, charges[0].currency, charges[0].reference, charges[0].last4,
    ) == (request.amount_minor, request.currency, request.reference, card[-4:])
    fields = {m.get("field") for m in payment.messages if m.get("type") == "progress" and m.get("valid")}
    seen = "\n".join(repr(m) for m in payment.messages)
    view_clean = not card_leaks(seen, card, request.expiry, request.code)
    amount = f"{request.amount_minor / 100:.2f} {request.currency}"
    masked = bullet * (len(card) - 4) + card[-4:]
    shown = " ".join(masked[i : i + 4] for i in range(0, len(masked), 4))
    checks: list[tuple[bool, str]] = [
        (
            payment.started.get("result") == "ok",
            f"NG `block DTMF` with a capture of {amount} (reference {request.reference}) answered "
            + str(payment.started.get("result", "nothing")),
        ),
        (
            fields == {"pan", "expiry", "cvv"} and view_clean,
            "the agent saw the card number, expiry and security code accepted, and no card digit "
            "but the last four",
        ),
        (
            approved,
            f"the gateway answered {result.get('status', 'nothing')}"
            + (f", auth code {result['auth_code']}" if result.get("auth_code") else ""),
        ),
        (
            charge_ok,
            f"the reference gateway charged {'once' if len(charges) == 1 else f'{len(charges)} times'} "
            f"(expected exactly once, {amount}, "
            f"reference {request.reference}, card {shown})",
        ),
    ]
    try:
        intact, bad_line = verify(payment.audit_file)
        text = payment.audit_file.read_text(encoding="utf-8")
    except OSError:
        intact, bad_line, text = False, None, ""
    lines = len(text.splitlines())
    clean = not audit_trail_leaks(text, card, request.expiry, request.code)
    checks.append((
        intact and lines > 0 and clean,
        f"the capture audit trail ({payment.audit_file.name}, {lines} events) verifies"
        + ("" if intact else f" NOT (line {bad_line})") + " and holds no card digits",
    ))
    return checks


def live_call_checks(call: LiveCall, card: str, out_dir: Path, config: Config, bullet: str) -> list[tuple[bool, str]]:
    """The demo's claims about the live call, each ``(holds, text)``. Raises MultimonMissing."""
    from dtmfguard.demo import masked_pan

    script = call.script
    write_wav(out_dir / CALLER_FILE, call.sent_audio)
    write_wav(out_dir / AGENT_FILE, call.agent_audio)
    heard_sent = multimon_digits(call.sent_audio)
    heard_agent = multimon_digits(call.agent_audio)
    payment = call.payment
    captured, rest, from_events = _captured(call.presses, len(card))
    expected = SensitiveDigits(card)
    expected_rest = SensitiveDigits(payment.request.expiry + payment.request.code if payment else "", capacity=64)
    typed = len(card) + len(expected_rest)
    checks: list[tuple[bool, str]] = [
        (
            call.agent_packets >= call.packets_sent - 2 and call.caller_packets_received >= call.packets_sent - 2,
            f"the call went through: the agent got {call.agent_packets} of {call.packets_sent} packets, "
            f"the caller {call.caller_packets_received} of the agent's {call.packets_sent}",
        ),
        (
            heard_sent == script.inband_digits,
            f"multimon-ng hears {len(heard_sent)} digits in what the caller sent ({CALLER_FILE}; "
            f"expected {len(script.inband_digits)}: every key but the one sent as RFC 4733)",
        ),
        (
            heard_agent == "" and len(call.agent_audio) > 0,
            f"multimon-ng hears {len(heard_agent)} digits in what the agent received ({AGENT_FILE}; expected 0)",
        ),
        (
            call.agent_event_packets == 0,
            f"{call.agent_event_packets} telephone-event packets reached the agent (expected 0)",
        ),
        (
            captured == expected and rest == expected_rest and from_events == 1,
            f"dtmfguard captured {len(captured) + len(rest)} of {typed} keys ({from_events} as RFC 4733): "
            + (masked_pan(captured, bullet) if len(captured) >= 4 else "(too few to show)")
            + (", then the expiry and the security code" if payment else ""),
        ),
    ]
    captured.wipe()
    rest.wipe()
    expected.wipe()
    expected_rest.wipe()
    if payment is not None:
        checks += _payment_checks(payment, card, bullet)
    if call.recordings:
        report = audit_paths([str(p) for p in call.recordings], DetectorOptions.from_config(config.detector))
        hits = sum(len(f.hits) for f in report.files)
        errors = [f for f in report.files if f.error is not None]
        checks.append((
            hits == 0 and not errors,
            f"audit finds {hits} digits in the call's recording ({call.recordings[0].name}; expected 0)",
        ))
    else:
        checks.append((False, f"the proxy wrote no recording in {RECORDINGS_DIR}/"))
    leaks = [card[i : i + 8] for i in range(len(card) - 7)] if len(card) >= 8 else [card]
    served = "dtmfguard_calls_total" in call.metrics_text
    clean = not any(run in call.metrics_text for run in leaks)
    checks.append((served and clean, "the metrics endpoint serves the call's counters and no card digits"))
    return checks


_FIELD_NAMES = {"pan": "card number", "expiry": "expiry", "cvv": "security code", "postcode": "postcode"}


def agent_line(message: dict[str, Any], bullet: str = "\u2022") -> str | None:
    """What an agent's screen shows for one capture message (None: nothing new to show).

    Built from the message's counts, brand, validity and masked card number only: messages carry
    no digit the caller typed.
    """
    kind = message.get("type")
    name = _FIELD_NAMES.get(str(message.get("field")), str(message.get("field")))
    if kind == "progress":
        entered, expected = message.get("digits_entered", 0), message.get("expected_length")
        brand = str(message.get("brand") or "").replace("mastercard", "Mastercard").capitalize() or None
        if message.get("valid"):
            if message.get("field") == "pan" and message.get("masked_pan"):
                masked = str(message["masked_pan"]).replace("\u2022", bullet)
                return f"{masked} {brand or ''}, valid".replace("  ", " ")
            return f"{name} entered, valid"
        if entered == 0:
            return f"waiting for the {name}"
        of = f" of {expected}" if expected else ""
        note = f" ({brand})" if brand and message.get("field") == "pan" else ""
        if message.get("valid") is False:
            note += " (matches no card brand)"
        return f"{name} {entered}{of}{note}"
    if kind == "field_rejected":
        return f"{name} rejected ({message.get('reason')}), {message.get('retries_left')} tries left"
    if kind == "capture_complete":
        return None
    if kind == "capture_submitted":
        return "submitted to the payment gateway"
    if kind == "capture_cancelled":
        return f"capture cancelled ({message.get('reason')})"
    if kind == "gateway_result":
        status = str(message.get("status"))
        if message.get("auth_code"):
            return f"{status}: auth code {message['auth_code']}"
        return f"{status}: {message.get('error') or message.get('decline_reason') or 'no detail'}"
    return None


def run_live_call(
    config: Config, out_dir: str | os.PathLike[str], say: Say, bullet: str, *,
    card: str, event_index: int, short: bool = False, payment: Payment | None = None,
) -> list[tuple[bool, str]]:
    """Place the demo call and check its claims; prints what happens with ``say``.

    With ``payment`` the call pays: the caller types the card number, then ``payment.expiry`` and
    ``payment.code``, and the agent's view is printed as it changes.
    Raises MultimonMissing when multimon-ng is not installed (checked before the call).
    """
    if shutil.which("multimon-ng") is None:
        raise MultimonMissing("multimon-ng is not installed: run `make deps` (Debian package multimon-ng)")
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    script = caller_script(
        card, event_index, short=short,
        expiry=payment.expiry if payment else "", code=payment.code if payment else "",
    )
    seconds = len(script.samples) / SAMPLE_RATE_HZ
    say(f"  live call   {seconds:.1f} s of {script.speech_source}, in 20 ms PCMU packets, in real time;")
    say(f"              the test card number typed on the keypad, key {event_index + 1} of {len(card)} "
        "sent as RFC 4733 telephone-events instead"
        + ("; then the expiry and the security code" if payment else ""))
    if payment is not None:
        say(f"  gateway     the reference gateway over HTTPS on {LOOPBACK} (its own certificate as"
            " [gateway] ca_file); capture started by NG `block DTMF`, "
            f"{payment.amount_minor / 100:.2f} {payment.currency}, reference {payment.reference}")
        say("")
        say("  the agent's screen:")

    def show(at_s: float, message: dict[str, Any]) -> None:
        line = agent_line(message, bullet)
        if line is not None:
            say(f"    {at_s:5.1f} s  {line}")

    call = asyncio.run(place_call(config, folder, script, payment=payment, agent_view=show))
    if payment is not None:
        say("")
    say(f"  proxy       NG on {LOOPBACK}:{call.ng_port}" + (f" ({call.ng_port_note})" if call.ng_port_note else "")
        + "; offer, answer" + (", block DTMF" if payment else "")
        + " and delete sent as Kamailio's rtpengine module does")
    for line in call.metrics_text.splitlines():
        if line.startswith(("dtmfguard_masked_tones_total", "dtmfguard_tone_onset_latency_ms_count",
                            "dtmfguard_digit_latency_ms_sum", "dtmfguard_digit_latency_ms_count")):
            say(f"  metrics     {line}")
    say("")
    return live_call_checks(call, card, folder, config, bullet)
