"""Load benchmark: concurrent masked calls through one ``dtmfguard serve`` process on one core.

The server runs as a subprocess pinned to core 0; the load generator (this process)
runs pinned to core 1. It sets up N calls over the NG protocol (offer/answer over UDP,
as Kamailio would), then streams 20 ms PCMU to every call's caller leg on a staggered
schedule (speech-like audio; every fourth call types digits in-band over it) and
receives every call's agent leg, all on 127.0.0.1. One caller socket sends for every
call (each call latches to it) and one agent socket receives for every call (the
server's source port names the call). Both move packets in batches (``sendmmsg`` /
``recvmmsg``, :mod:`bench.mmsg`), so one core drives a few thousand streams.

A step's new calls all start at once, so each step first streams a warm-up
(``LoadPlan.warm_s``) in which their first packets take the ordinary path and the server
absorbs that burst; the warm-up's packets count for loss but not for latency, and the
step records when its last late packet was sent (``settled_ms``). Per step it measures
packet loss and the packet latency ``arrival at the agent - send at the caller`` (the
kernel's receive timestamp, minus the time just before the send call of the packet's
batch), matched by the agent stream's RTP timestamp. The audio in an agent packet is
the caller's previous packet (the delay line), so the latency the proxy adds to the
audio is that plus the delay line. A step passes with zero loss and p99 packet latency
within the engine's stated hold plus 5 ms: 0 ms for dtmfguard, batched or per packet
(its delay line shifts the audio inside the packets, and the up to 2 ms a batched packet
waits for its batch counts against the 5 ms), the delay buffer for rtpengine (which
holds packets rather than shifting audio).

N ramps 50, 100, 200, ... until a step fails, then bisects between the last pass and
the first failure. CPU per call is the server's CPU time over the step divided by the
wall time and N. When Debian's ``rtpengine`` daemon is installed, the same load runs
through it (userspace, ``block DTMF`` with ``DTMF-security`` ``tone`` and
``delay-buffer`` 40) and the ratio of the two capacities is reported.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import os
import re
import resource
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.mmsg import Received, Receiver, Sender
from dtmfguard import synth
from dtmfguard.codecs.g711 import ulaw_encode
from dtmfguard.protocol import bencode

LOOPBACK = "127.0.0.1"
FRAME = 160
PACKET_S = 0.020
SERVER_CORE = 0
CLIENT_CORE = 1
DTMFGUARD_DELAY_MS = 20.0
RTPENGINE_DELAY_MS = 40.0
SLACK_MS = 5.0
MAX_CALLS = 4000  # 4 sockets per call on the server, under the descriptor limit
PACKET_NS = round(PACKET_S * 1e9)
SLICE_S = 0.0005  # the generator sends what is due and drains the agent socket this often
LATE_S = 0.002  # a packet sent later than this after its due time is a late send
RECV_BATCH = 256  # datagrams per recvmmsg


@dataclass(frozen=True)
class LoadPlan:
    step_s: float  # measured streaming time per step
    # Streamed first in each step, counted for loss but not for latency: the step's new
    # calls all start at once (in a contact centre they come a few a second), their first
    # packets take the ordinary path, and the server catches up from that burst.
    warm_s: float
    ramp: tuple[int, ...]
    bisect_steps: int
    budget_s: float  # wall time for one engine's search, setup included
    rtpengine: bool
    per_packet: bool  # also measure dtmfguard with batching off (the "before")

    @classmethod
    def full(cls) -> LoadPlan:
        return cls(step_s=3.0, warm_s=1.5, ramp=(50, 100, 200, 400, 800, 1600, 3200), bisect_steps=3,
                   budget_s=70.0, rtpengine=True, per_packet=True)

    @classmethod
    def short(cls) -> LoadPlan:
        return cls(step_s=1.0, warm_s=0.3, ramp=(50, 100), bisect_steps=0, budget_s=15.0,
                   rtpengine=False, per_packet=False)


# --------------------------------------------------------------------------- audio


def _clips(n: int, seconds: float, seed: int = 5) -> list[bytes]:
    """PCMU clips: speech-like audio, every fourth with digits typed over it."""
    rng = np.random.default_rng(seed)
    out = []
    n_samples = int(seconds * 8000) // FRAME * FRAME
    for i in range(n):
        x = synth.speech_like(seconds * 1000, rng=int(rng.integers(1 << 30)))[:n_samples].astype(np.float32)
        if i % 4 == 0:
            keys = "".join(str(d) for d in rng.integers(0, 10, 8))
            tones, _ = synth.dtmf_sequence(keys, on_ms=70, off_ms=80, lead_ms=300, rng=i)
            m = min(len(tones), n_samples)
            x[:m] = x[:m] * 0.3 + tones[:m]
        out.append(ulaw_encode(np.clip(x, -1.0, 1.0)).tobytes())
    return out


# --------------------------------------------------------------------------- NG client


class NgClient:
    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(2.0)
        self._n = 0

    def command(self, body: dict[str, Any]) -> dict[bytes, Any]:
        self._n += 1
        cookie = f"c{os.getpid()}x{self._n}".encode()
        self.sock.sendto(cookie + b" " + bencode.encode(body), self.address)
        for _ in range(3):
            data, _ = self.sock.recvfrom(65536)
            got, _, payload = data.partition(b" ")
            if got == cookie:
                reply = bencode.decode(payload)
                assert isinstance(reply, dict)
                return reply
        raise TimeoutError("no NG reply")

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.sock.settimeout(0.5)
                if self.command({"command": "ping"}).get(b"result") == b"pong":
                    self.sock.settimeout(2.0)
                    return
            except (OSError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the server did not answer ping")
            time.sleep(0.2)

    def close(self) -> None:
        self.sock.close()


def _sdp(port: int, session: int) -> str:
    return (
        f"v=0\r\no=- {session} 1 IN IP4 {LOOPBACK}\r\ns=-\r\nc=IN IP4 {LOOPBACK}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n"
    )


def _port(reply: dict[bytes, Any]) -> int:
    if reply.get(b"result") != b"ok":
        raise RuntimeError(f"NG error: {reply.get(b'error-reason', reply)!r}")
    match = re.search(rb"m=audio (\d+)", reply[b"sdp"])
    if match is None:
        raise RuntimeError("no m=audio line in the reply")
    return int(match.group(1))


@dataclass
class Call:
    call_id: str
    to_caller_leg: int  # where the caller sends
    from_agent_leg: int  # the port the agent's packets come from


# --------------------------------------------------------------------------- engines


@dataclass(frozen=True)
class Engine:
    name: str
    hold_ms: float  # how long the engine holds a packet by design
    shift_ms: float  # audio delay carried inside the packets (a delay line)
    argv: tuple[str, ...]
    block_dtmf: bool = False  # send "block DTMF" after the answer (rtpengine)


def _dtmfguard(config: Path, batched: bool) -> Engine:
    argv: tuple[str, ...]
    if batched:
        argv = (sys.executable, "-m", "dtmfguard", "serve", "--config", str(config))
        # The batched server holds a packet up to HOLD_S for its batch; the bound
        # (delay line + 5 ms) leaves that inside the 5 ms, so no hold is granted here.
        return Engine("dtmfguard", 0.0, DTMFGUARD_DELAY_MS, argv)
    argv = (sys.executable, "-m", "bench.load", "--per-packet-server", str(config))
    return Engine("dtmfguard-per-packet", 0.0, DTMFGUARD_DELAY_MS, argv)


def _rtpengine(ng_port: int, port_min: int, port_max: int) -> Engine | None:
    binary = shutil.which("rtpengine")
    if binary is None:
        return None
    argv = (
        binary, "--config-file=none", "--foreground", "--log-stderr", "--log-level=3", "--table=-1",
        f"--interface={LOOPBACK}",
        f"--listen-ng={LOOPBACK}:{ng_port}", f"--port-min={port_min}", f"--port-max={port_max}",
        # One worker thread each (the load is one core's); no --codec-num-threads: the
        # 10.x daemon in Debian 12 refuses it and exits.
        "--num-threads=1", "--media-num-threads=1", "--delete-delay=0",
    )
    return Engine("rtpengine", RTPENGINE_DELAY_MS, 0.0, argv, block_dtmf=True)


def _serve_config(directory: Path, ng_port: int, port_min: int, port_max: int) -> Path:
    path = directory / "load.toml"
    path.write_text(
        '[log]\nlevel = "warning"\nformat = "json"\n'
        f'[control]\nng_listen = "{LOOPBACK}:{ng_port}"\n'
        f'[media]\ninterface = "{LOOPBACK}"\nport_min = {port_min}\nport_max = {port_max}\ntimeout_s = 600.0\n',
        encoding="utf-8",
    )
    return path


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def _server(engine: Engine) -> Iterator[subprocess.Popen[bytes]]:
    argv = list(engine.argv)
    if shutil.which("taskset"):
        argv = ["taskset", "-c", str(SERVER_CORE), *argv]
    # stderr goes to a file so that a server that will not start can say why (_exit_note).
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL)
        proc.stderr_log = log  # type: ignore[attr-defined]  # read back by _exit_note
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _exit_note(proc: subprocess.Popen[bytes]) -> str | None:
    """When the server has exited: its exit code and the last lines it wrote to stderr."""
    code = proc.poll()
    if code is None:
        return None
    log = proc.stderr_log  # type: ignore[attr-defined]
    log.seek(0)
    tail = log.read().decode("utf-8", "replace").strip().splitlines()[-3:]
    return f"server exited with code {code}" + (f": {' | '.join(tail)}" if tail else " (nothing on stderr)")


# --------------------------------------------------------------------------- the generator


class Generator:
    """Caller and agent sockets, the calls set up so far, and the streaming loop.

    The loop batches: every ``SLICE_S`` it sends all packets now due with one
    ``sendmmsg`` and drains the agent socket with ``recvmmsg`` (:mod:`bench.mmsg`), so
    Python costs tens of microseconds per slice rather than ~10 per packet; what remains
    per packet is the kernel's loopback path (a few microseconds per packet sent and
    received, the delivery into the server's socket included).
    """

    def __init__(self, ng: NgClient, engine: Engine, clips: list[bytes]) -> None:
        self.ng = ng
        self.engine = engine
        self.clips = clips
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for s in (self.tx, self.rx):
            _big_buffers(s)
            s.bind((LOOPBACK, 0))
            s.setblocking(False)
        self.receiver = Receiver(self.rx, capacity=RECV_BATCH)
        self.calls: list[Call] = []
        self.ng_notes: set[str] = set()
        self._serial = 0
        self._k0 = 0  # packets already streamed: each call's timestamps continue across steps
        # Per call: the agent-side RTP timestamp of global packet 0, learned from the first
        # packet the call ever delivers. Kept across steps, so a packet still queued from
        # an overloaded step is not taken for the first packet of the next one.
        self._agent_ts0: dict[str, int] = {}

    def close(self) -> None:
        self.tx.close()
        self.rx.close()

    def resize(self, n: int) -> None:
        while len(self.calls) > n:
            call = self.calls.pop()
            self.ng.command({"command": "delete", "call-id": call.call_id, "from-tag": "caller"})
        while len(self.calls) < n:
            self._serial += 1
            cid = f"load-{self._serial}"
            offer = self.ng.command({
                "command": "offer", "call-id": cid, "from-tag": "caller",
                "sdp": _sdp(self.tx.getsockname()[1], self._serial),
                **({"flags": ["inject-DTMF"]} if self.engine.block_dtmf else {}),
            })
            agent_side = _port(offer)
            answer = self.ng.command({
                "command": "answer", "call-id": cid, "from-tag": "caller", "to-tag": "agent",
                "sdp": _sdp(self.rx.getsockname()[1], self._serial),
            })
            caller_side = _port(answer)
            if self.engine.block_dtmf:
                reply = self.ng.command({
                    "command": "block DTMF", "call-id": cid, "DTMF-security": "tone", "delay-buffer": 40,
                })
                self.ng_notes.add(f"block DTMF: {reply.get(b'result')!r} {reply.get(b'warning', b'')!r}")
            self.calls.append(Call(cid, caller_side, agent_side))

    def stream(self, seconds: float, skip_s: float) -> dict[str, Any]:
        """Stream to every call for ``seconds``: loss over all of it, latency over the part after ``skip_s``.

        Packet ``k`` of call ``i`` is due ``k * PACKET_S + i * PACKET_S / n`` after the
        start, so in the flat order ``j = k * n + i`` the packets fall due one by one and
        the due set of a slice is a contiguous range. Send times are taken just before the
        ``sendmmsg`` of a packet's batch, receive times are the kernel's (both on
        ``CLOCK_REALTIME``, in ns).
        """
        calls = self.calls
        n = len(calls)
        k_total = int(seconds / PACKET_S)
        k0 = self._k0
        self._k0 += k_total
        # Row k, column i: packet k of call i (0: not sent / not received).
        send_ns = np.zeros((k_total, n), np.int64)
        matcher = _Matcher(calls, self._agent_ts0, k0, k_total)
        if n == 0 or k_total == 0:
            return _stats(send_ns, matcher.recv_ns, skip_s, 0)
        rtp = _RtpTable(n, k0, self.clips)
        sender = Sender(self.tx, rtp.packets, [(LOOPBACK, c.to_caller_leg) for c in calls])
        receiver = self.receiver

        def drain() -> None:
            while True:
                batch = receiver.receive()
                if batch.count:
                    matcher.match(batch)
                if batch.count < receiver.capacity:
                    return

        total = k_total * n
        spacing_ns = PACKET_NS / n
        late_ns = int(LATE_S * 1e9)
        slice_ns = int(SLICE_S * 1e9)
        t0 = time.time_ns() + 50_000_000
        late_sends = 0
        cursor = 0  # the first packet (flat index) not sent yet
        with _collector_paused():
            while cursor < total:
                now = time.time_ns()
                due_end = min(total, int((now - t0) // spacing_ns) + 1) if now >= t0 else 0
                while cursor < due_end:
                    k, first = divmod(cursor, n)
                    last = min(n, first + due_end - cursor)
                    rtp.fill(k, first, last)
                    sent_at = time.time_ns()
                    sent = sender.send(first, last)
                    send_ns[k, first : first + sent] = sent_at
                    # Packets due before sent_at - late_ns are late: those before on_time.
                    on_time = math.ceil((sent_at - t0 - late_ns) / spacing_ns)
                    late_sends += max(0, min(cursor + sent, on_time) - cursor)
                    cursor += sent
                    if sent < last - first:
                        break  # the send buffer is full (EAGAIN): the rest go in the next slice, late
                drain()
                if cursor >= total:
                    break
                wake_ns = max(cursor * spacing_ns, now - t0 + slice_ns)  # after t0
                delay_ns = wake_ns - (time.time_ns() - t0)
                if delay_ns > 0:
                    time.sleep(delay_ns / 1e9)
        end = time.monotonic() + 0.25 + self.engine.hold_ms / 1000
        rx_fd = self.rx.fileno()
        while time.monotonic() < end:
            drain()
            select.select([rx_fd], [], [], 0.01)
        drain()
        matcher.save()
        return _stats(send_ns, matcher.recv_ns, skip_s, late_sends)


class _RtpTable:
    """One RTP packet per call, rewritten in place for each packet index: ``(n, 172)`` uint8.

    Packet ``k`` of the step (global ``k0 + k``) of call ``i``: SSRC ``0x10000 + i``,
    sequence number ``i * 31 + k0 + k``, RTP timestamp ``(k0 + k) * 160`` (the marker bit
    on global packet 0), and frame ``(k + 8 * i) % (frames - 1)`` of clip
    ``i % len(clips)`` as the payload.
    """

    def __init__(self, n: int, k0: int, clips: list[bytes]) -> None:
        # Every clip's 20 ms frames, one row each, and where each clip starts.
        frames = [np.frombuffer(c, np.uint8)[: len(c) // FRAME * FRAME].reshape(-1, FRAME) for c in clips]
        clip_start = np.cumsum([0] + [len(f) for f in frames[:-1]])
        clip_frames = np.array([len(f) for f in frames])
        self.packets = np.zeros((n, 12 + FRAME), np.uint8)
        self.packets[:, 0] = 0x80  # version 2, PT 0 (PCMU) below
        calls = np.arange(n)
        self.packets[:, 8:12].view(">u4")[:, 0] = 0x10000 + calls
        self._seq = self.packets[:, 2:4].view(">u2")[:, 0]
        self._ts = self.packets[:, 4:8].view(">u4")[:, 0]
        self._seq0 = (calls * 31 + k0) & 0xFFFF
        clip = calls % len(clip_start)
        self._frame0 = clip_start[clip]
        self._period = clip_frames[clip] - 1
        self._phase = 8 * calls
        self._frames = np.concatenate(frames)
        self._k0 = k0

    def fill(self, k: int, first: int, last: int) -> None:
        """Rows ``first`` to ``last - 1`` become packet ``k`` of this step (global ``k0 + k``)."""
        rows = slice(first, last)
        global_k = self._k0 + k
        self.packets[rows, 1] = 0x80 if global_k == 0 else 0
        self._seq[rows] = (self._seq0[rows] + k) & 0xFFFF
        self._ts[rows] = (global_k * FRAME) & 0xFFFFFFFF
        self.packets[rows, 12:] = self._frames[self._frame0[rows] + (k + self._phase[rows]) % self._period[rows]]


class _Matcher:
    """Received agent packets -> (packet index, call): by source port and RTP timestamp.

    A call's agent-side RTP timestamp base (``ts0``: that of global packet 0, per call id,
    shared across steps) is learned from the first packet the call ever delivers, taken
    as this step's first packet, global ``k0``. ``recv_ns[k, i]`` is the kernel's receive
    time of packet ``k`` of this step of call ``i`` (0: not received). Packets of unknown
    ports, runts and timestamps outside the step land in a spare row and column.
    """

    def __init__(self, calls: list[Call], ts0: dict[str, int], k0: int, k_total: int) -> None:
        n = len(calls)
        self._by_port = np.full(1 << 16, n, np.intp)
        self._by_port[[c.from_agent_leg for c in calls]] = np.arange(n)
        self._ids = [c.call_id for c in calls]
        self._ts0_by_id = ts0
        # Per call (and the spare): the agent RTP timestamp of this step's packet 0, -1 unknown.
        start = np.array([ts0.get(cid, -1) for cid in self._ids] + [0], np.int64)
        self._ts_start = np.where(start >= 0, (start + k0 * FRAME) & 0xFFFFFFFF, -1)
        self._k0 = k0
        self._k_total = k_total
        self._arrivals = np.zeros((k_total + 1, n + 1), np.int64)
        self.recv_ns = self._arrivals[:k_total, :n]

    def match(self, batch: Received) -> None:
        calls = self._by_port[batch.ports]
        if (batch.lengths < 12).any():
            calls = np.where(batch.lengths >= 12, calls, len(self._ids))
        ts = batch.data[:, 4:8].view(">u4")[:, 0].astype(np.int64)
        start = self._ts_start[calls]
        new = start < 0
        if new.any():
            first_calls, first = np.unique(calls[new], return_index=True)
            self._ts_start[first_calls] = ts[new][first]
            start = self._ts_start[calls]
        # Timestamps before this step's start wrap around to far beyond its end.
        k = (ts - start) & 0xFFFFFFFF
        k //= FRAME
        np.minimum(k, self._k_total, out=k)
        stamps = batch.stamps_ns
        if not stamps.all():
            stamps = np.where(stamps == 0, time.time_ns(), stamps)  # no kernel timestamp: now is the next best
        self._arrivals[k, calls] = stamps

    def save(self) -> None:
        """Keep the bases learned in this step for the next ones."""
        for cid, start in zip(self._ids, self._ts_start.tolist(), strict=False):
            if start >= 0:
                self._ts0_by_id.setdefault(cid, (start - self._k0 * FRAME) & 0xFFFFFFFF)


def _stats(send_ns: np.ndarray, recv_ns: np.ndarray, skip_s: float, late_sends: int) -> dict[str, Any]:
    """Loss over every packet; latency over those sent after ``skip_s``."""
    skip = min(len(send_ns), int(skip_s / PACKET_S))
    sent = recv_ns.size
    lost = int(sent - np.count_nonzero(recv_ns > 0))
    got, sent_at = recv_ns[skip:], send_ns[skip:]
    arrived = got > 0
    latency_ms = (got - sent_at)[arrived & (sent_at > 0)] / 1e6
    # No packet arrived: no latency to give (JSON null; the step fails on its losses).
    p = np.percentile(latency_ms, [50, 99]).tolist() if latency_ms.size else [None, None]
    # Which 100 ms windows of the step (by send time) held a packet later than the
    # slack: one or two mean a stall, many mean the server could not keep up.
    per_window = round(0.1 / PACKET_S)
    late = np.where((recv_ns > 0) & (send_ns > 0), (recv_ns - send_ns) / 1e6, 0.0)
    row_max = late.max(axis=1) if late.size else np.zeros(len(late))
    slow = np.flatnonzero(row_max > SLACK_MS)
    slow_windows = np.unique(slow[slow >= skip] // per_window)
    settling = slow[slow < skip]
    return {
        "calls": send_ns.shape[1],
        "sent": int(sent),
        "lost": lost,
        "packet_p50_ms": p[0],
        "packet_p99_ms": p[1],
        "packet_max_ms": float(latency_ms.max()) if latency_ms.size else None,
        "slow_windows": int(slow_windows.size),
        "windows": -(-(len(row_max) - skip) // per_window),
        # How long after the start the last packet later than the slack was sent (the
        # warm-up's burst of new calls absorbed): 0 when none was.
        "settled_ms": float((settling[-1] + 1) * PACKET_S * 1000) if settling.size else 0.0,
        "late_sends": late_sends,
    }


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """No garbage collection inside.

    A full pass over the ~150 000 objects of the imported libraries takes tens of ms: a
    burst of late sends that would say nothing about the server.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _big_buffers(sock: socket.socket) -> None:
    """8 MB socket buffers (the kernel caps them at net.core.[rw]mem_max), more where allowed."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    # SO_RCVBUFFORCE / SO_SNDBUFFORCE (33 / 32, socket(7)) pass the cap with CAP_NET_ADMIN:
    # 32 MB holds a few hundred ms of 3000 streams: a scheduling hiccup of the generator.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 32 << 20)
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_SNDBUFFORCE", 32), 32 << 20)


def _step(gen: Generator, pid: int, n: int, plan: LoadPlan) -> dict[str, Any]:
    gen.resize(n)
    time.sleep(0.2)
    cpu0, wall0 = _cpu_s(pid), time.perf_counter()
    row = gen.stream(plan.warm_s + plan.step_s, plan.warm_s)
    cpu1, wall1 = _cpu_s(pid), time.perf_counter()
    engine = gen.engine
    p99 = row["packet_p99_ms"]
    row["audio_p99_ms"] = None if p99 is None else p99 + engine.shift_ms
    row["limit_ms"] = engine.hold_ms + SLACK_MS
    row["cpu_per_call_pct"] = 100.0 * (cpu1 - cpu0) / (wall1 - wall0) / n
    row["server_cpu_pct"] = 100.0 * (cpu1 - cpu0) / (wall1 - wall0)
    # The generator itself must keep up, or the step says nothing about the server.
    row["generator_ok"] = row["late_sends"] <= 0.01 * row["sent"]
    row["pass"] = row["lost"] == 0 and p99 is not None and p99 <= row["limit_ms"]
    return row


def search(engine: Engine, ng_port: int, plan: LoadPlan, clips: list[bytes]) -> dict[str, Any]:
    """Largest N that passes, within ``plan.budget_s``."""
    started = time.monotonic()
    steps: list[dict[str, Any]] = []
    notes: list[str] = []
    with _server(engine) as proc:
        ng = NgClient((LOOPBACK, ng_port))
        gen: Generator | None = None
        try:
            ng.wait_ready(30.0)
            gen = Generator(ng, engine, clips)
            best, worst = 0, None
            for n in plan.ramp:
                if time.monotonic() - started > plan.budget_s:
                    notes.append("time budget reached during the ramp")
                    break
                row = _step(gen, proc.pid, n, plan)
                steps.append(row)
                if not row["pass"]:
                    worst = n
                    break
                best = n
            for _ in range(plan.bisect_steps if worst is not None else 0):
                if time.monotonic() - started > plan.budget_s or worst is None or worst - best <= max(10, best // 20):
                    break
                n = (best + worst) // 2
                row = _step(gen, proc.pid, n, plan)
                steps.append(row)
                if row["pass"]:
                    best = n
                else:
                    worst = n
            notes.extend(sorted(gen.ng_notes))
            failed = [r for r in steps if not r["pass"] and r["generator_ok"]]
            if failed and all(r["lost"] == 0 and r["server_cpu_pct"] < 90.0 for r in failed):
                # A batched server fails on p99 latency (the tick's hold plus the time to
                # process the whole tick) long before it runs out of CPU.
                first = min(failed, key=lambda r: r["calls"])
                notes.append(
                    f"bound by latency, not CPU: {first['calls']} calls failed on p99 "
                    f"{first['packet_p99_ms']:.2f} ms at {first['server_cpu_pct']:.0f} % CPU "
                    f"(late packets in {first['slow_windows']} of {first['windows']} 100 ms windows, "
                    f"worst {first['packet_max_ms']:.0f} ms)"
                )
        except (OSError, TimeoutError, RuntimeError) as exc:
            notes.append(f"{type(exc).__name__}: {exc}")
            exited = _exit_note(proc)
            if exited is not None:
                notes.append(exited)
            best = max((r["calls"] for r in steps if r["pass"]), default=0)
        finally:
            if gen is not None:
                gen.close()
            ng.close()
    passing = [r for r in steps if r["pass"]]
    at_best = max(passing, key=lambda r: r["calls"]) if passing else None
    return {
        "engine": engine.name,
        "max_calls": best,
        "cpu_per_call_pct": at_best["cpu_per_call_pct"] if at_best else None,
        "limit_ms": engine.hold_ms + SLACK_MS,
        "steps": steps,
        "notes": notes,
        "elapsed_s": time.monotonic() - started,
    }


def _pin(core: int) -> set[int] | None:
    try:
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {core})
        return before
    except (AttributeError, OSError):
        return None


def run(plan: LoadPlan) -> dict[str, Any]:
    """The whole load benchmark (dtmfguard batched, optionally per packet and rtpengine)."""
    started = time.monotonic()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    plan = LoadPlan(**{**asdict(plan), "ramp": tuple(n for n in plan.ramp if n <= MAX_CALLS)})
    clips = _clips(8, 6.0)
    affinity = _pin(CLIENT_CORE)
    engines: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="dtmfguard-load-") as tmp:
            ng_port = _free_udp_port()
            config = _serve_config(Path(tmp), ng_port, 20000, 20000 + 4 * MAX_CALLS + 100)
            engines.append(search(_dtmfguard(config, batched=True), ng_port, plan, clips))
            if plan.per_packet:
                engines.append(search(_dtmfguard(config, batched=False), ng_port, plan, clips))
            rtpengine_note = None
            if plan.rtpengine:
                rtpe_ng = _free_udp_port()
                rtpe = _rtpengine(rtpe_ng, 20000, 20000 + 4 * MAX_CALLS + 100)
                if rtpe is None:
                    rtpengine_note = "rtpengine is not installed (apt-get install rtpengine-daemon): no comparison"
                else:
                    engines.append(search(rtpe, rtpe_ng, plan, clips))
    finally:
        if affinity is not None:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, affinity)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    by_name = {e["engine"]: e for e in engines}
    ratio = None
    ratios: dict[str, float] = {}  # every dtmfguard mode measured, against rtpengine
    if "rtpengine" in by_name and by_name["rtpengine"]["max_calls"]:
        ratio = by_name["dtmfguard"]["max_calls"] / by_name["rtpengine"]["max_calls"]
        ratios = {
            name: e["max_calls"] / by_name["rtpengine"]["max_calls"]
            for name, e in by_name.items() if name.startswith("dtmfguard")
        }
    return {
        "plan": asdict(plan),
        "server_core": SERVER_CORE,
        "client_core": CLIENT_CORE,
        "engines": engines,
        "ratio_vs_rtpengine": ratio,
        "ratios_vs_rtpengine": ratios,
        "rtpengine_note": rtpengine_note,
        "elapsed_s": time.monotonic() - started,
    }


def _ms(value: float | None) -> str:
    return f"{'-':>8}" if value is None else f"{value:8.2f}"


def format_table(load: dict[str, Any]) -> str:
    lines = ["", "Load: concurrent one-way masked PCMU streams, server on one core "
             f"(core {load['server_core']}), generator on core {load['client_core']}"]
    lines.append(f"  {'engine':22} {'N':>6} {'lost':>6} {'p50 ms':>8} {'p99 ms':>8} {'limit':>6} "
                 f"{'cpu %':>6} {'cpu/call %':>10}  result")
    for e in load["engines"]:
        for r in e["steps"]:
            gen = "" if r["generator_ok"] else "  (generator late)"
            lines.append(
                f"  {e['engine']:22} {r['calls']:6d} {r['lost']:6d} {_ms(r['packet_p50_ms'])} "
                f"{_ms(r['packet_p99_ms'])} {r['limit_ms']:6.1f} {r['server_cpu_pct']:6.1f} "
                f"{r['cpu_per_call_pct']:10.4f}  {'pass' if r['pass'] else 'FAIL'}{gen}"
            )
    lines.append("  (latency: agent arrival - caller send per packet; the audio adds the delay line on top)")
    for e in load["engines"]:
        cpu = e["cpu_per_call_pct"]
        cpu_text = f", {cpu:.4f} % of a core per call" if cpu is not None else ""
        lines.append(f"  {e['engine']}: max {e['max_calls']} streams per core{cpu_text}")
        lines.extend(f"    note: {note}" for note in e["notes"])
    if load["ratio_vs_rtpengine"] is not None:
        lines.append(f"  dtmfguard / rtpengine capacity: {load['ratio_vs_rtpengine']:.2f}")
        for name, value in load.get("ratios_vs_rtpengine", {}).items():
            if name != "dtmfguard":
                lines.append(f"  {name} / rtpengine capacity: {value:.2f}")
    if load["rtpengine_note"]:
        lines.append(f"  {load['rtpengine_note']}")
    target = next((e for e in load["engines"] if e["engine"] == "dtmfguard"), None)
    if target is not None:
        verdict = "PASS" if target["max_calls"] >= 1000 else "FAIL"
        lines.append(f"  target >= 1000 streams per core: {verdict}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- per-packet server


def _serve_per_packet(config_path: str) -> int:
    """``dtmfguard serve`` with batching off: the "before" of the comparison."""
    import asyncio
    import signal

    from dtmfguard.app import LiveMedia, Proxy
    from dtmfguard.config import load_config
    from dtmfguard.kernels import warmup
    from dtmfguard.log import configure_logging
    from dtmfguard.transport import udpio

    config = load_config(config_path)
    configure_logging(config.log.level, config.log.format)
    warmup()
    udpio.warmup()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        async with Proxy(config, backend=LiveMedia(config, batched=False)):
            await stop.wait()

    asyncio.run(main())
    return 0


def _main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--per-packet-server":
        return _serve_per_packet(argv[1])
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="the CI plan: 1 s steps at 50 and 100 calls")
    parser.add_argument("--batched-only", action="store_true",
                        help="dtmfguard batched only: no per-packet server, no rtpengine")
    parser.add_argument("--ramp", type=lambda text: tuple(int(n) for n in text.split(",")),
                        help="the calls of the ramp steps, e.g. 500,1000,2000 (then the plan's bisection)")
    parser.add_argument("--bisect-steps", type=int, help="bisection steps after the first failure")
    parser.add_argument("--step-s", type=float, help="streaming seconds per step")
    args = parser.parse_args(argv)
    plan = LoadPlan.short() if args.short else LoadPlan.full()
    if args.batched_only:
        plan = replace(plan, per_packet=False, rtpengine=False)
    if args.ramp:
        plan = replace(plan, ramp=args.ramp)
    if args.bisect_steps is not None:
        plan = replace(plan, bisect_steps=args.bisect_steps)
    if args.step_s is not None:
        plan = replace(plan, step_s=args.step_s)
    result = run(plan)
    print(format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
