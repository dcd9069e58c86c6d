"""The media engine of one call: packets in, packets out, no sockets and no clock.

A call has two legs, ``"offer"`` and ``"answer"`` (the sides of the SDP offer/answer);
one of them is the caller. The transport hands every datagram that reaches a leg's
local RTP or RTCP port to :meth:`CallMedia.on_rtp` / :meth:`CallMedia.on_rtcp` with the
time it arrived, and sends what comes back. The packet path:

* Both legs: symmetric latching (the first valid packet from the host named in the
  leg's SDP fixes the source port; other sources are dropped and counted), RTP parsing
  (malformed packets are counted and dropped), RTCP relayed with its SSRCs mapped to
  the rewritten streams (RFC 3550 section 6.4). Each stream dtmfguard sends keeps one
  SSRC and continuous sequence numbers and timestamps (:class:`RtpRewriter`).
* Agent -> caller: relayed untouched apart from the RTP header rewrite.
* Caller -> agent, G.711 (PCMU/PCMA, RFC 3551): decoded, run through the
  :class:`CallerChain` (detector, one-packet delay line, masker), re-encoded with the
  same codec. The delay line makes the agent's stream lag by one packet: the packet
  sent for caller timestamp ``T`` carries the masked audio of the packet before it.
  Playout follows RTP timestamps: a packet older than the last one played (late or
  duplicate) is dropped; up to 60 ms of missing audio is concealed by repeating the
  last pitch period (so a lost packet inside a keypad tone neither splits the digit
  nor escapes the masker: the concealed audio goes through the chain like any other);
  a longer gap (silence suppression, heavy loss) is bridged by one packet of silence,
  which also flushes the delay line.
* Caller -> agent, RFC 4733 telephone-events: parsed into key presses
  (:class:`EventReceiver`). While masking is on they are never forwarded; instead the
  masker replaces the event's span of audio with its flat tone, and when the caller
  sends events without audio the agent gets generated packets of that tone.
  While masking is off they are forwarded like any packet.
* Caller -> agent, any other payload type: forwarded while masking is off, muted
  (not sent) while it is on: dtmfguard cannot look inside it, so it fails closed.
* Batched calls with nothing open in their detector and masker may move their caller
  stream into a :class:`~dtmfguard.control.lane.QuietLane` (:meth:`CallMedia.enter_lane`),
  which relays its plain 20 ms PCMU/PCMA packets in batch, without this path, until a
  packet or a frame is anything but plainly quiet; :meth:`CallMedia.leave_lane` then
  brings this path's state up to date and the packet continues here.
* An exception while processing a caller packet sends that packet's time as silence
  and restarts the chain; raw audio is never forwarded.
* Batched mode (a :class:`~dtmfguard.pipeline.batch.DetectorBank` shared by all calls):
  the same path, except that a caller audio slot waits in the bank until the next
  20 ms tick runs the kernels over every call at once (:meth:`CallMedia.process_tick`
  returns it then). A packet therefore leaves at most one tick later than it would
  per packet: added latency <= one tick (20 ms) on top of the delay line. Media time
  is unchanged: it comes from RTP timestamps and sample counts, never from the tick.

Key presses from both sources go to :meth:`CallMedia.drain_events`, each press once
(a carrier that sends a key both in-band and as RFC 4733 events yields one press).
Statistics and the close summary carry counts only, never keys.
"""

from __future__ import annotations

import ipaddress
import random
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from dtmfguard.codecs.g711 import alaw_decode_payload, alaw_encode, ulaw_decode_payload, ulaw_encode
from dtmfguard.codecs.registry import CODECS, AudioCodec, PayloadKind, PayloadTypes
from dtmfguard.control.lane import ROOM_WINDOWS, LaneEntry, LaneExit, QuietLane
from dtmfguard.errors import ProtocolError
from dtmfguard.kernels.features import Thresholds
from dtmfguard.kernels.masking import gain_edges
from dtmfguard.log import get_logger
from dtmfguard.pipeline.batch import QUIET_CODECS, BankChannel, BankResult, DetectorBank
from dtmfguard.pipeline.chain import CallerChain
from dtmfguard.pipeline.detect import DigitConfirmed, DigitEnded, ToneEnded, ToneEvent, ToneStarted
from dtmfguard.pipeline.frames import MaskedFrame
from dtmfguard.pipeline.mask import MaskSettings
from dtmfguard.protocol.rfc4733 import EventReceiver, KeyDown, KeyEvent, KeyUp, TelephoneEvent
from dtmfguard.protocol.rtp import RtpPacket, RtpRewriter, looks_like_rtcp, rewrite_rtcp_ssrc
from dtmfguard.protocol.sdp import MediaEndpoint

__all__ = [
    "LEGS",
    "CallMedia",
    "LegEndpoint",
    "MaskIntervals",
    "MediaEvent",
    "MediaTap",
]

LEGS = ("offer", "answer")

SAMPLE_RATE_HZ = 8000
MAX_CONCEAL_MS = 60
"""Missing audio up to this long is concealed; a longer gap is bridged with silence."""
MAX_LATE_MS = 2000
"""Two consecutive packets further behind the playout point than this are a restart of
their source; one alone is a very late packet."""
MAX_PAYLOAD_SAMPLES = 1600
"""Largest G.711 packet accepted (200 ms); larger ones are counted as errors."""
EVENT_LAG_MS = 60
"""While a key is held, audio may trail the RFC 4733 reports by this much before the
agent gets generated packets of masking tone in its place."""
EVENT_MARGIN_MS = 40
"""While a key is held, its masking runs this far past the duration reported so far
(events are updated every 20-50 ms; the delay line covers the first 20 ms)."""
MAX_EVENT_FILL_SLOTS = 10
"""Generated tone packets per event packet at most; a longer gap is skipped over."""
PRESS_MATCH_MS = 80
"""An in-band digit and an RFC 4733 key this close in time are one key press."""
MAX_PENDING_EVENTS = 256
"""Key events kept for :meth:`CallMedia.drain_events`; older ones are dropped."""

_PLC_MIN_LAG = 40  # 5 ms: the shortest period concealment repeats
_PLC_MAX_LAG = 160  # 20 ms
_HISTORY_SAMPLES = _PLC_MAX_LAG * 2

#: What :meth:`CallMedia.drain_events` returns: digit events (in-band) and key events (RFC 4733).
MediaEvent = DigitConfirmed | DigitEnded | KeyDown | KeyUp


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - 0x1_0000_0000 if value >= 0x8000_0000 else value


def _ms_to_samples(ms: float) -> int:
    return round(ms * SAMPLE_RATE_HZ / 1000)


_QUIET_DATAGRAM_BYTES = 12 + 160



@dataclass(slots=True)
class LegEndpoint:
    """What one side's SDP says: where to send its media and which payload types it uses.

    ``payload_types`` maps payload type -> encoding name (``"PCMU"``, ``"PCMA"``,
    ``"telephone-event"`` or any other name; static types need no entry).
    """

    address: str
    rtp_port: int
    rtcp_port: int
    payload_types: dict[int, str]
    telephone_event_pt: int | None
    ptime_ms: int = 20

    @classmethod
    def from_sdp(cls, endpoint: MediaEndpoint) -> LegEndpoint:
        """From one media section of a peer's SDP (:func:`dtmfguard.protocol.sdp.remote_endpoints`).

        A G.711 name at a clock rate other than 8 kHz is kept under ``NAME/RATE`` so it
        is relayed, never decoded as G.711.
        """
        names: dict[int, str] = {}
        for pt in endpoint.payload_types:
            name = pt.encoding
            if name.upper() in CODECS and pt.clock_rate_hz not in (0, SAMPLE_RATE_HZ):
                name = f"{name}/{pt.clock_rate_hz}"
            names[pt.payload_type] = name
        ptime = round(endpoint.ptime_ms) if endpoint.ptime_ms else 20
        return cls(
            address=endpoint.address,
            rtp_port=endpoint.port,
            rtcp_port=endpoint.rtcp_port,
            payload_types=names,
            telephone_event_pt=endpoint.telephone_event.payload_type if endpoint.telephone_event else None,
            ptime_ms=ptime,
        )


class MediaTap(Protocol):
    """Where a call's audio is copied for recording (:mod:`dtmfguard.integrations.recorder`).

    Positions are samples at 8 kHz on the call's recording timeline (0 = the call's
    first packet). Implementations must not block: they are called on the media path.
    """

    def write_caller(self, frame: MaskedFrame, position_samples: int) -> None:
        """Caller audio exactly as sent to the agent (after masking)."""

    def write_agent(self, payload: bytes, encoding: str, position_samples: int) -> None:
        """An agent packet's payload as received, with its encoding name."""

    def close(self, summary: Mapping[str, Any]) -> None:
        """The call ended; ``summary`` is :meth:`CallMedia.close`'s (no digits)."""


class MaskIntervals:
    """``[start, end)`` sample ranges in which consecutive masked frames were masked.

    Feed every frame in order with :meth:`feed`; ``position`` places the frame on
    another timeline than its ``start_sample`` (e.g. a recording's). Keeps at most
    ``max_kept`` intervals (``count`` counts them all).
    """

    def __init__(self, max_kept: int = 10_000) -> None:
        self.intervals: list[tuple[int, int]] = []
        self.count = 0
        self._max_kept = max_kept
        self._open_at: int | None = None
        self._edges = np.empty(0, np.intp)  # gain_edges' output, grown to the longest frame

    @property
    def masking(self) -> bool:
        return self._open_at is not None

    def feed(self, frame: MaskedFrame, position: int | None = None) -> None:
        base = frame.start_sample if position is None else position
        gain = frame.gain
        if gain is None or not frame.masked_samples:
            self.end(base)
            return
        if frame.masked_samples == len(gain):
            # Masked throughout (the usual frame inside a tone): at most an opening edge.
            if self._open_at is None:
                self._toggle(base)
            return
        if len(self._edges) < len(gain):
            self._edges = np.empty(len(gain), np.intp)
        edges = self._edges[: gain_edges(gain, self._edges)]
        if bool(gain[0] > 0) != (self._open_at is not None):
            self._toggle(base)
        for edge in edges.tolist():
            self._toggle(base + edge)

    def edge(self, position: int) -> None:
        """An interval opens (none is open) or closes at ``position`` (as fed elsewhere: the quiet lane)."""
        self._toggle(position)

    def end(self, position: int) -> None:
        """Close an open interval at ``position`` (a gap in the stream, or its end)."""
        if self._open_at is not None:
            self._toggle(position)

    def _toggle(self, position: int) -> None:
        if self._open_at is None:
            self._open_at = position
            self.count += 1
        else:
            if len(self.intervals) < self._max_kept:
                self.intervals.append((self._open_at, position))
            self._open_at = None


@dataclass(slots=True)
class _Counters:
    packets: int = 0
    bytes: int = 0
    errors: int = 0
    dropped: int = 0
    late: int = 0
    concealed: int = 0
    muted: int = 0
    rtcp_packets: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "packets": self.packets,
            "bytes": self.bytes,
            "errors": self.errors,
            "dropped": self.dropped,
            "late": self.late,
            "concealed": self.concealed,
            "muted": self.muted,
            "rtcp_packets": self.rtcp_packets,
        }


def _parse_host(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return parsed.ipv4_mapped
    return parsed


@dataclass(slots=True)
class _Leg:
    """One side of the call: what its SDP said, where it sends from, what we send it."""

    name: str
    out: RtpRewriter  # the stream dtmfguard sends to this leg
    endpoint: LegEndpoint | None = None
    host: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    types: PayloadTypes = field(default_factory=lambda: PayloadTypes({}))
    rtp_latch: tuple[str, int] | None = None
    rtcp_latch: tuple[str, int] | None = None
    source_ssrc: int | None = None  # the SSRC this leg sends with
    counters: _Counters = field(default_factory=_Counters)


@dataclass(slots=True)
class _Slot:
    """One packet time of caller audio, masked and encoded, ready for the agent.

    ``timestamp`` is on the agent-bound timeline (continuous across source restarts).
    """

    payload_type: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool


@dataclass(slots=True)
class _Deferred:
    """A slot waiting in a :class:`DetectorBank` for the tick that masks it."""

    slot: _Slot
    codec: AudioCodec
    n: int
    now_s: float | None


@dataclass(slots=True)
class _Press:
    key: str
    position: int
    inband: bool
    matched: bool = False


class _CallerPath:
    """Caller -> agent processing: playout by timestamp, concealment, chain, key presses."""

    def __init__(
        self, settings: MaskSettings, thresholds: Thresholds | None, min_digit_ms: float, owner: CallMedia,
        bank: DetectorBank | None = None,
    ) -> None:
        self._settings = settings
        self._thresholds = thresholds
        self._min_digit_ms = min_digit_ms
        # A weak reference: the call owns its path, and a path that held its call would make
        # the pair a reference cycle, left for the garbage collector's (stalling) full passes.
        self._owner: CallMedia = weakref.proxy(owner)
        self._bank = bank
        self.chain: CallerChain | BankChannel[_Deferred] = self._new_chain()
        self.masking = settings.enabled
        self.receiver = EventReceiver()
        self.types = PayloadTypes({})
        self.step = _ms_to_samples(20)  # samples per packet
        self.events: deque[MediaEvent] = deque()
        self.events_dropped = 0
        self.digits = 0
        self.intervals = MaskIntervals(max_kept=0)
        self._ssrc: int | None = None
        self._event_ssrc: int | None = None
        self._next_ts: int | None = None  # RTP timestamp of the next slot
        self._probation_ts: int | None = None  # where a restarted source would continue
        self._anchor_ts = 0  # caller RTP timestamp <-> chain position <-> outgoing timestamp
        self._anchor_pos = 0
        self._pos = 0  # chain position of the next input sample
        # Timestamps of the stream toward the agent: they advance with the audio played
        # and keep going when the caller's source restarts or changes.
        self._vts = 0
        self._anchor_vts = 0
        # The last slots played: samples, or (codec, datagram) from the quiet lane.
        self._recent: deque[npt.NDArray[np.float32] | tuple[AudioCodec, bytes]] = deque(maxlen=8)
        self._quiet_pts: dict[int, tuple[AudioCodec, int]] = {}  # payload type -> codec, lane codec index
        self._plc_period: npt.NDArray[np.float32] | None = None
        self._plc_phase = 0
        self._audio_pt: int | None = None
        self._presses: deque[_Press] = deque(maxlen=16)
        self._inband_suppressed = False
        self._suppressed_keys: deque[tuple[str, int]] = deque(maxlen=16)
        #: Sees every detector event of the caller's audio first (metrics); None: nobody.
        self.observer: Callable[[list[ToneEvent]], None] | None = None

    # -- configuration

    def set_types(self, types: PayloadTypes, ptime_ms: int) -> None:
        self.types = types
        self.step = max(1, _ms_to_samples(ptime_ms))
        self._quiet_pts = {}
        for pt in types.names:
            codec = types.codec(pt)
            if codec is not None and codec.name in QUIET_CODECS:
                self._quiet_pts[pt] = (codec, QUIET_CODECS.index(codec.name))
        if self._audio_pt is None or types.codec(self._audio_pt) is None:
            audio = sorted(pt for pt in types.names if types.codec(pt) is not None)
            self._audio_pt = audio[0] if audio else None

    def set_masking(self, enabled: bool) -> None:
        self.masking = enabled
        self.chain.masker.enabled = enabled

    def _new_chain(self) -> CallerChain | BankChannel[_Deferred]:
        if self._bank is None:
            return CallerChain(self._settings, self._thresholds, self._min_digit_ms)
        return self._bank.open(self._settings)

    @property
    def pending(self) -> bool:
        """Slots wait for the bank's next tick (batched mode only)."""
        return isinstance(self.chain, BankChannel) and self.chain.pending > 0

    @property
    def results_waiting(self) -> bool:
        """Batched mode: the bank has masked slots for :meth:`complete`."""
        chain = self.chain
        return isinstance(chain, BankChannel) and chain.results_waiting

    def complete(self) -> list[_Slot]:
        """Batched mode, after the bank ran: the slots it masked, in order, encoded."""
        chain = self.chain
        if not isinstance(chain, BankChannel):
            return []
        out: list[_Slot] = []
        failed = False
        for result in chain.take_results():
            out.append(self._completed(result))
            failed = failed or result.error is not None
        if failed:
            # Everything submitted has come back (as silence from the failure on): a
            # fresh chain takes over at the playout point.
            self._reset_chain()
        return out

    def _completed(self, result: BankResult[_Deferred]) -> _Slot:
        job = result.tag
        slot = job.slot
        frame = result.frame
        if frame is not None:
            try:
                if result.events:
                    self._on_tone_events(result.events)
                slot.payload = _encode(job.codec, frame.samples)
            except Exception as exc:
                result.error = exc
            else:
                self.intervals.feed(frame)
                if self._owner._tap is not None:
                    self._owner._tap_caller(frame, slot.timestamp, job.now_s)
                return slot
        slot.payload = job.codec.silence(job.n)
        self._owner._caller.counters.errors += 1
        self._owner._warn_once(
            "media_error", "caller audio processing failed; muted", error=type(result.error).__name__,
        )
        return slot

    def close(self) -> None:
        if isinstance(self.chain, BankChannel):
            self.chain.close()

    # -- packets

    def audio(self, packet: RtpPacket, codec: AudioCodec, now_s: float) -> list[_Slot]:
        n = len(packet.payload)
        if not 0 < n <= MAX_PAYLOAD_SAMPLES:
            raise ProtocolError(f"rtp: G.711 payload of {n} bytes (expected 1-{MAX_PAYLOAD_SAMPLES})")
        ssrc = packet.ssrc
        ts = packet.timestamp
        self._audio_pt = packet.payload_type
        if ssrc != self._ssrc or self._next_ts is None:
            self._restart(ssrc, ts)
        assert self._next_ts is not None
        gap = _signed32(ts - self._next_ts)
        if gap < 0:
            # Far behind: the source restarted its timestamps, believed (as in RFC 3550
            # A.1) only once a second packet follows on from the first one.
            if gap < -_ms_to_samples(MAX_LATE_MS) and ts == self._probation_ts:
                self._restart(ssrc, ts)
                gap = 0
            else:
                self._probation_ts = (ts + n) & 0xFFFFFFFF
                self._owner._caller.counters.late += 1
                return []
        self._probation_ts = None
        keys = self.receiver.tick(ts)
        if keys:
            self._emit_keys(keys)
        out: list[_Slot] = []
        if gap > 0:
            self._bridge(gap, ssrc, out)
        samples = _decode(codec, packet.payload)
        _keep(out, self._play(samples, packet.payload_type, codec, ts, ssrc, packet.marker, now_s))
        self._plc_period = None
        return out

    def event(self, packet: RtpPacket, now_s: float) -> list[_Slot]:
        """Feed a telephone-event packet; while masking, mask its span (and fill for missing audio)."""
        if self._event_ssrc is not None and packet.ssrc != self._event_ssrc:
            self.receiver.reset()
        self._event_ssrc = packet.ssrc
        keys = self.receiver.receive(packet.timestamp, packet.sequence_number, packet.marker, packet.payload)
        if self._next_ts is None:
            self._restart(packet.ssrc, packet.timestamp)
        self._emit_keys(keys)
        if not self.masking:
            return []
        event = TelephoneEvent.parse(packet.payload)
        covered_ts = (packet.timestamp + event.duration) & 0xFFFFFFFF
        start = self._position(packet.timestamp)
        stop = self._position(covered_ts)
        if not event.end:
            stop += _ms_to_samples(EVENT_MARGIN_MS)
        if isinstance(self.chain, BankChannel):
            self.chain.leave_quiet()  # the masker's state must be current
        if stop > start and stop > self.chain.masker.out_pos:
            # A closed window of the masker's own kind: only the masker builds masked audio.
            self.chain.masker.on_events(
                [ToneStarted(start, start), ToneEnded(start, stop, start)]
            )
        return self._fill_for_event(covered_ts, event.end, packet.ssrc, now_s)

    # -- internals

    def _restart(self, ssrc: int, ts: int) -> None:
        self._ssrc = ssrc
        self._next_ts = ts
        self._anchor_ts = ts
        self._anchor_pos = self._pos
        self._anchor_vts = self._vts
        self._plc_period = None

    def _position(self, ts: int) -> int:
        """Chain position of caller RTP timestamp ``ts``."""
        return self._anchor_pos + _signed32(ts - self._anchor_ts)

    def out_ts(self, ts: int) -> int:
        """Timestamp toward the agent of caller RTP timestamp ``ts``."""
        return (self._anchor_vts + _signed32(ts - self._anchor_ts)) & 0xFFFFFFFF

    def _skip(self, samples: int) -> None:
        """Move the playout point on without audio (the agent sees a timestamp jump)."""
        assert self._next_ts is not None
        self._next_ts = (self._next_ts + samples) & 0xFFFFFFFF
        self._vts = (self._vts + samples) & 0xFFFFFFFF

    def _bridge(self, gap: int, ssrc: int, out: list[_Slot]) -> None:
        """Fill ``gap`` samples of missing audio before the next packet."""
        assert self._next_ts is not None
        pt = self._audio_pt
        codec = self.types.codec(pt) if pt is not None else None
        if pt is None or codec is None:
            self._skip(gap)
            return
        if gap <= _ms_to_samples(MAX_CONCEAL_MS):
            while gap > 0:
                n = min(gap, self.step)
                samples = self._conceal(n)
                self._owner._caller.counters.concealed += 1
                _keep(out, self._play(samples, pt, codec, self._next_ts, ssrc, False, None))
                gap -= n
            return
        # Silence suppression or a long loss: one packet of silence flushes the delay
        # line (the last audio leaves on time), then the stream jumps.
        n = min(self.step, gap)
        _keep(out, self._play(np.zeros(n, np.float32), pt, codec, self._next_ts, ssrc, False, None))
        self._skip(gap - n)
        self._plc_period = None

    def _fill_for_event(self, covered_ts: int, ended: bool, ssrc: int, now_s: float) -> list[_Slot]:
        """Masked packets for the time a held key covers but no audio arrived for."""
        pt = self._audio_pt
        codec = self.types.codec(pt) if pt is not None else None
        if pt is None or codec is None or self._next_ts is None:
            return []
        step = self.step
        lag = step if ended else _ms_to_samples(EVENT_LAG_MS)
        missing = _signed32(covered_ts - lag - self._next_ts)
        if missing < step:
            return []
        slots = missing // step
        if slots > MAX_EVENT_FILL_SLOTS:
            # Skip ahead rather than generate a long burst in one go.
            self._skip((slots - MAX_EVENT_FILL_SLOTS) * step)
            self._anchor_ts = self._next_ts
            self._anchor_pos = self._pos
            self._anchor_vts = self._vts
            slots = MAX_EVENT_FILL_SLOTS
        out: list[_Slot] = []
        for _ in range(slots):
            _keep(out, self._play(np.zeros(step, np.float32), pt, codec, self._next_ts, ssrc, False, None))
        self._plc_period = None
        return out

    def _conceal(self, n: int) -> npt.NDArray[np.float32]:
        """Continue the last pitch period of the audio played (waveform-repetition PLC)."""
        if self._plc_period is None:
            played = [r if isinstance(r, np.ndarray) else r[0].decode(r[1][12:]) for r in self._recent]
            h = np.concatenate([np.zeros(_HISTORY_SAMPLES, np.float32), *played])[-_HISTORY_SAMPLES:]
            recent = h[-_PLC_MAX_LAG:]
            best_lag, best = _PLC_MIN_LAG, -np.inf
            energy = float(np.dot(recent, recent))
            if energy > 0.0:
                for lag in range(_PLC_MIN_LAG, _PLC_MAX_LAG + 1):
                    past = h[-_PLC_MAX_LAG - lag : -lag]
                    norm = float(np.dot(past, past))
                    if norm <= 0.0:
                        continue
                    score = float(np.dot(recent, past)) / np.sqrt(norm * energy)
                    if score > best:
                        best_lag, best = lag, score
            self._plc_period = h[-best_lag:].copy()
            self._plc_phase = 0
        period = self._plc_period
        idx = (self._plc_phase + np.arange(n)) % len(period)
        self._plc_phase = (self._plc_phase + n) % len(period)
        return period[idx]

    def _play(
        self, samples: npt.NDArray[np.float32], pt: int, codec: AudioCodec, ts: int, ssrc: int, marker: bool,
        now_s: float | None,
    ) -> _Slot | None:
        """Run one slot through the chain; never lets unmasked audio out.

        Batched: the slot waits in the bank for the next tick (:meth:`complete`); None.
        """
        n = len(samples)
        vts = self._vts
        self._anchor_ts = ts
        self._anchor_pos = self._pos
        self._anchor_vts = vts
        chain = self.chain
        if isinstance(chain, BankChannel):
            chain.submit(samples, _Deferred(_Slot(pt, vts, ssrc, b"", marker), codec, n, now_s))
            self._pos += n
            self._recent.append(samples)
            self._next_ts = (ts + n) & 0xFFFFFFFF
            self._vts = (vts + n) & 0xFFFFFFFF
            return None
        try:
            frame, events = self.chain.process(samples)
            self._pos += n
            self._on_tone_events(events)
            payload = _encode(codec, frame.samples)
        except Exception as exc:
            # Fail closed: this packet's time goes out as silence, and a fresh chain
            # (empty delay line) takes over from the next packet.
            payload = codec.silence(n)
            self._owner._caller.counters.errors += 1
            self._owner._warn_once("media_error", "caller audio processing failed; muted", error=type(exc).__name__)
            self._reset_chain()
            self._anchor_ts = (ts + n) & 0xFFFFFFFF
            self._anchor_vts = (vts + n) & 0xFFFFFFFF
        else:
            self.intervals.feed(frame)
            self._owner._tap_caller(frame, vts, now_s)
        self._recent.append(samples)  # joined only when a loss needs concealing
        self._next_ts = (ts + n) & 0xFFFFFFFF
        self._vts = (vts + n) & 0xFFFFFFFF
        return _Slot(pt, vts, ssrc, payload, marker)

    def _reset_chain(self) -> None:
        self.close()
        self.chain = self._new_chain()
        self.chain.masker.enabled = self.masking
        self.intervals.end(self._pos)
        self._pos = 0
        self._anchor_pos = 0
        if self._next_ts is not None:
            self._anchor_ts = self._next_ts
            self._anchor_vts = self._vts
        self._presses.clear()
        self._inband_suppressed = False

    # -- key presses, once each

    def _on_tone_events(self, events: list[ToneEvent]) -> None:
        if self.observer is not None:
            self.observer(events)
        for ev in events:
            if isinstance(ev, DigitConfirmed):
                match = self._match(ev.key, ev.onset_sample, inband=False)
                if match is not None:
                    self._inband_suppressed = True
                    continue
                self._presses.append(_Press(ev.key, ev.onset_sample, inband=True))
                self._push(ev)
                self.digits += 1
            elif isinstance(ev, DigitEnded):
                if self._inband_suppressed:
                    self._inband_suppressed = False
                    continue
                self._push(ev)

    def _emit_keys(self, keys: list[KeyEvent]) -> None:
        for ev in keys:
            if isinstance(ev, KeyDown):
                position = self._position(ev.rtp_ts)
                if self._match(ev.key, position, inband=True) is not None:
                    self._suppressed_keys.append((ev.key, ev.rtp_ts))
                    continue
                self._presses.append(_Press(ev.key, position, inband=False))
                self._push(ev)
                self.digits += 1
            else:
                if (ev.key, ev.rtp_ts) in self._suppressed_keys:
                    self._suppressed_keys.remove((ev.key, ev.rtp_ts))
                    continue
                self._push(ev)

    def _match(self, key: str, position: int, *, inband: bool) -> _Press | None:
        """The unmatched press of ``key`` from the other source near ``position``, marked matched."""
        limit = _ms_to_samples(PRESS_MATCH_MS)
        best: _Press | None = None
        for press in self._presses:
            if press.inband == inband and not press.matched and press.key == key:
                distance = abs(press.position - position)
                if distance <= limit and (best is None or distance < abs(best.position - position)):
                    best = press
        if best is not None:
            best.matched = True
        return best

    def _push(self, event: MediaEvent) -> None:
        if len(self.events) >= MAX_PENDING_EVENTS:
            self.events.popleft()
            self.events_dropped += 1
        self.events.append(event)


_G711_ENCODERS = {"PCMU": ulaw_encode, "PCMA": alaw_encode}
_G711_DECODERS = {"PCMU": ulaw_decode_payload, "PCMA": alaw_decode_payload}


def _decode(codec: AudioCodec, payload: bytes) -> npt.NDArray[np.float32]:
    """``codec.decode``; PCMU and PCMA go straight to G.711's table."""
    decode = _G711_DECODERS.get(codec.name)
    return codec.decode(payload) if decode is None else decode(payload)


def _encode(codec: AudioCodec, samples: npt.NDArray[np.float32]) -> bytes:
    """``codec.encode``; PCMU and PCMA go straight to G.711's compiled per-packet loop."""
    encode = _G711_ENCODERS.get(codec.name)
    return codec.encode(samples) if encode is None else encode(samples).tobytes()


def _keep(out: list[_Slot], slot: _Slot | None) -> None:
    if slot is not None:
        out.append(slot)


class _RecordingClock:
    """Maps one stream's RTP timestamps to the call's recording timeline (samples)."""

    __slots__ = ("_start_s", "_ts", "_pos")

    def __init__(self, start_s: float) -> None:
        self._start_s = start_s
        self._ts: int | None = None
        self._pos = 0

    def position(self, ts: int, now_s: float | None) -> int:
        if self._ts is not None:
            delta = _signed32(ts - self._ts)
            if 0 <= delta <= 60 * SAMPLE_RATE_HZ:
                self._ts = ts
                self._pos += delta
                return self._pos
            if -2 * SAMPLE_RATE_HZ <= delta < 0 or now_s is None:
                return self._pos + delta  # a late packet: in the past, anchor unchanged
        wall = self._start_s if now_s is None else now_s
        self._ts = ts
        self._pos = max(0, round((wall - self._start_s) * SAMPLE_RATE_HZ))
        return self._pos


class CallMedia:
    """Sans-I/O media engine of one call. See the module docstring for the packet path.

    ``caller`` names the leg whose audio is masked (``"offer"`` by default). Time is
    passed in (``now_s``, seconds on any monotonic clock). Never raises on bad input.

    With a ``bank`` (batched mode) the caller's audio slots are not returned by
    :meth:`on_rtp`: they wait in the bank's column of this call until its owner runs
    :meth:`DetectorBank.run`, and :meth:`process_tick` then returns them masked.
    Without one, every packet runs through its own chain at once.
    """

    def __init__(
        self,
        call_id: str,
        *,
        masking: MaskSettings,
        thresholds: Thresholds | None = None,
        min_digit_ms: float = 26.0,
        caller: str = "offer",
        bank: DetectorBank | None = None,
    ) -> None:
        if caller not in LEGS:
            raise ValueError(f"caller must be one of {LEGS}, got {caller!r}")
        self.call_id = call_id
        self.caller = caller
        rng = random.SystemRandom()
        self._legs = {
            name: _Leg(
                name,
                RtpRewriter(
                    ssrc=rng.getrandbits(32), first_sequence_number=rng.getrandbits(16),
                    first_timestamp=rng.getrandbits(32),
                ),
            )
            for name in LEGS
        }
        self._caller = self._legs[caller]
        self._agent = self._legs[LEGS[1] if caller == LEGS[0] else LEGS[0]]
        self._path = _CallerPath(masking, thresholds, min_digit_ms, self, bank)
        self._vseq = rng.getrandbits(16)  # numbering of the caller->agent stream before rewriting
        self._pt_maps: dict[str, dict[int, int]] = {}
        self._first_packet_s: float | None = None
        self._last_packet_s: float | None = None
        self._warned: set[str] = set()
        self._log = get_logger(call_id=call_id)
        self._tap: MediaTap | None = None
        self._caller_clock: _RecordingClock | None = None
        self._agent_clock: _RecordingClock | None = None
        self._closed = False
        self._summary: dict[str, Any] | None = None
        self._lane: QuietLane | None = None
        self._lane_slot: int | None = None

    # -- control

    def set_endpoint(self, leg: str, endpoint: LegEndpoint) -> None:
        """Set (or change, on a re-INVITE) where ``leg`` sends from and wants media."""
        side = self._legs[leg]
        self.leave_lane()
        old = side.endpoint
        if old is None or (old.address, old.rtp_port, old.rtcp_port) != (
            endpoint.address, endpoint.rtp_port, endpoint.rtcp_port,
        ):
            side.rtp_latch = side.rtcp_latch = None  # it moved: latch again
        side.endpoint = endpoint
        side.host = _parse_host(endpoint.address)
        side.types = PayloadTypes(endpoint.payload_types, endpoint.telephone_event_pt)
        if side is self._caller:
            self._path.set_types(side.types, endpoint.ptime_ms)
        self._pt_maps.clear()

    def set_masking(self, enabled: bool) -> None:
        """Block (True) or let through (False) the caller's keypad tones and events."""
        self.leave_lane()  # the lane masks as the masker was when the stream entered
        self._path.set_masking(enabled)

    @property
    def masking_enabled(self) -> bool:
        return self._path.masking

    def attach_recorder(self, tap: MediaTap | None) -> None:
        """Copy the call's audio to ``tap`` (a recording) from now on; None detaches."""
        self.leave_lane()
        self._tap = tap

    # -- the quiet lane (dtmfguard.control.lane)

    @property
    def lane_slot(self) -> int | None:
        """The caller stream's slot in a quiet lane, or None."""
        return self._lane_slot

    def enter_lane(self, lane: QuietLane, on_leave: Callable[[], None]) -> int | None:
        """Move the caller stream into ``lane`` when it qualifies now; returns its slot or None.

        It qualifies when the call is batched on ``lane``'s bank, its channel is in the
        bank's quiet lane with nothing queued, the caller sends plain 20 ms PCMU/PCMA
        from a latched source, no RFC 4733 key is held, no recording is attached, and
        the agent stream continues without a re-anchor. ``on_leave`` is called when the
        stream leaves the lane (:meth:`leave_lane`, or the lane's own decision).
        """
        entry = self._lane_entry(lane)
        if entry is None:
            return None
        # Digit events are all a call needs from the lane, unless someone observes them all.
        slot = lane.enter(entry, on_leave, self._lane_events, all_events=self._path.observer is not None)
        self._lane = lane
        self._lane_slot = slot
        return slot

    def lane_route(self) -> tuple[str, tuple[str, int], str, tuple[str, int]]:
        """In a lane: the caller leg and its latched source, the agent leg and where it gets media."""
        caller, agent = self._caller, self._agent
        destination = self._destination(agent, rtcp=False)
        if self._lane_slot is None or caller.rtp_latch is None or destination is None:
            raise ValueError("the call is not in a quiet lane")
        return caller.name, caller.rtp_latch, agent.name, destination

    def leave_lane(self) -> None:
        """Take the caller stream out of its lane (if in one) and catch up with what it relayed."""
        lane, slot = self._lane, self._lane_slot
        if lane is None or slot is None:
            return
        self._lane = self._lane_slot = None
        self._lane_exit(lane.leave(slot))

    def _lane_events(self, events: list[ToneEvent], edges: list[int]) -> None:
        """The lane's tracker events for this call's frames, and where masked intervals
        opened or closed: as if the frames had taken the ordinary path."""
        path = self._path
        if events:
            path._on_tone_events(events)
        for position in edges:
            path.intervals.edge(position)

    def _lane_entry(self, lane: QuietLane) -> LaneEntry | None:
        path = self._path
        chain = path.chain
        if not isinstance(chain, BankChannel) or not (chain.quiet or chain.can_go_quiet()):
            return None  # the usual refusal (a window or a tone run is open): checked first
        pt = path._audio_pt
        caller, agent = self._caller, self._agent
        if (
            self._closed or self._lane_slot is not None or self._tap is not None
            or not isinstance(chain, BankChannel) or chain.bank is not lane.bank
            or pt is None or pt not in path._quiet_pts or path.step != 160
            or path._next_ts is None or path._ssrc is None or path.receiver.active_key is not None
            or caller.rtp_latch is None or caller.source_ssrc != path._ssrc
            or self._destination(agent, rtcp=False) is None
        ):
            return None
        offsets = agent.out.steady_offsets(self._vseq, path._ssrc)
        codec, index = path._quiet_pts[pt]
        if offsets is None:
            return None
        if not chain.quiet:
            if not chain.can_go_quiet():
                return None
            chain.go_quiet(_encode(codec, chain.delay_line()), index)
        prev, prev_codec = chain.quiet_prev
        if not chain.idle_quiet or prev_codec != index:
            return None
        out_pt = self._pt_map(caller, agent).get(pt, pt)
        masking = replace(chain.lane_masking(), interval_open=path.intervals.masking)
        if len(masking.windows) > ROOM_WINDOWS:
            return None
        return LaneEntry(
            column=chain.column, pt=pt, ssrc=path._ssrc, next_ts=path._next_ts, codec=index, vseq=self._vseq,
            vts=path._vts, out_pt=out_pt, seq_off=offsets[0], ts_off=offsets[1], out_ssrc=agent.out.ssrc,
            prev_payload=prev, masking=masking,
        )

    def _lane_exit(self, done: LaneExit) -> None:
        path = self._path
        chain = path.chain
        assert isinstance(chain, BankChannel)
        # The lane ran the masker from the windows it had: they (a tone may be open) go back.
        chain.restore_masker(list(done.windows), done.opened, done.masked)
        n = done.packets
        if n == 0:
            return
        assert path._ssrc is not None
        assert path._audio_pt is not None
        codec, index = path._quiet_pts[path._audio_pt]
        self._agent.out.advance_steady(self._vseq, path._vts, path._ssrc, n, 160)
        self._vseq = done.vseq
        path._anchor_ts = (done.next_ts - 160) & 0xFFFFFFFF
        path._anchor_pos = path._pos + (n - 1) * 160
        path._anchor_vts = (done.vts - 160) & 0xFFFFFFFF
        path._pos += n * 160
        path._next_ts = done.next_ts
        path._vts = done.vts
        # The audio played last, for concealing a loss: the lane's last two packets (or its
        # one packet after what the path played before).
        if n >= 2:
            path._recent.clear()
            path._recent.append((codec, bytes(12) + done.before_payload))
        path._recent.append((codec, bytes(12) + done.prev_payload))
        path._plc_period = None
        path._probation_ts = None
        chain.quiet_relayed(done.prev_payload, index, n * 160)
        counters = self._caller.counters
        counters.packets += n
        counters.bytes += n * _QUIET_DATAGRAM_BYTES
        if self._last_packet_s is None or done.last_s > self._last_packet_s:
            self._last_packet_s = done.last_s

    # -- packets

    def on_rtp(
        self, leg: str, data: bytes, src: tuple[str, int], now_s: float,
    ) -> list[tuple[str, bytes, tuple[str, int]]]:
        """A datagram on ``leg``'s RTP port; returns ``(out_leg, datagram, destination)`` to send.

        Each datagram is sent from ``out_leg``'s local RTP port. RTCP multiplexed on the
        RTP port (RFC 5761) is handled as by :meth:`on_rtcp`.
        """
        side = self._legs[leg]
        if self._closed:
            return []
        if looks_like_rtcp(data):
            return self._relay_rtcp(side, data, src, now_s, muxed=True)
        source = (src[0], src[1])
        if not self._source_ok(side, source, side.rtp_latch):
            return []
        try:
            packet = RtpPacket.parse(data)
        except ProtocolError:
            side.counters.errors += 1
            self._warn_once(f"malformed_{side.name}", "malformed RTP dropped", leg=side.name)
            return []
        if side.rtp_latch != source and self._lane_slot is not None:
            self.leave_lane()  # the lane sends to where the agent was latched
        side.rtp_latch = source
        side.source_ssrc = packet.ssrc
        side.counters.packets += 1
        side.counters.bytes += len(data)
        self._touch(now_s)
        try:
            if side is self._caller:
                return self._from_caller(packet, now_s)
            return self._from_agent(packet, now_s)
        except Exception as exc:
            # Fail closed: nothing of this packet goes out.
            side.counters.errors += 1
            self._warn_once(f"error_{side.name}", "packet dropped after an error", leg=side.name,
                            error=type(exc).__name__)
            return []

    @property
    def pending(self) -> bool:
        """Batched mode: caller audio waits for the bank's next run."""
        return self._path.pending

    def process_tick(self) -> list[tuple[str, bytes, tuple[str, int]]]:
        """Batched mode, after :meth:`DetectorBank.run`: the masked caller packets to send.

        Returns ``(out_leg, datagram, destination)`` as :meth:`on_rtp` does; [] without a bank.
        """
        if self._closed:
            return []
        path = self._path
        try:
            return self._send_slots(path.complete()) if path.results_waiting else []
        except Exception as exc:
            self._caller.counters.errors += 1
            self._warn_once("error_tick", "masked packets dropped after an error", error=type(exc).__name__)
            return []

    def on_rtcp(
        self, leg: str, data: bytes, src: tuple[str, int], now_s: float,
    ) -> list[tuple[str, bytes, tuple[str, int]]]:
        """A datagram on ``leg``'s RTCP port; returns what to send from ``out_leg``'s RTCP port."""
        side = self._legs[leg]
        if self._closed:
            return []
        return self._relay_rtcp(side, data, src, now_s, muxed=False)

    # -- state

    def idle_s(self, now_s: float) -> float:
        """Seconds since the last valid packet from either side.

        Before the first packet, idle time counts from the first call of this method.
        """
        if self._last_packet_s is None:
            self._last_packet_s = now_s
        last = self._last_packet_s
        if self._lane is not None and self._lane_slot is not None:
            last = max(last, self._lane.last_packet_s(self._lane_slot))
        return max(0.0, now_s - last)

    def stats(self) -> dict[str, Any]:
        """Per-leg counters, masked tones and key presses; never a key."""
        legs = {name: side.counters.as_dict() for name, side in self._legs.items()}
        if self._lane is not None and self._lane_slot is not None:
            relayed = self._lane.packets(self._lane_slot)
            legs[self.caller]["packets"] += relayed
            legs[self.caller]["bytes"] += relayed * _QUIET_DATAGRAM_BYTES
        return {
            **legs,
            "caller": self.caller,
            "masking": self._path.masking,
            "masked_tones": self._path.intervals.count,
            "digits": self._path.digits,
        }

    @property
    def events_waiting(self) -> bool:
        """:meth:`drain_events` has key presses to give."""
        return bool(self._path.events)

    def drain_events(self) -> list[MediaEvent]:
        """Key presses since the last call: :class:`DigitConfirmed`/:class:`DigitEnded` (in-band)
        and :class:`KeyDown`/:class:`KeyUp` (RFC 4733), each press from one source only.

        They carry keys: hand them to the capture session only, never to a log.
        """
        events = list(self._path.events)
        self._path.events.clear()
        return events

    def close(self) -> dict[str, Any]:
        """End the call: the summary for its one log line (counts only). Idempotent."""
        if self._summary is not None:
            return self._summary
        self.leave_lane()
        self._closed = True
        self._path.intervals.end(self._path._pos)
        self._path.close()
        duration = 0.0
        if self._first_packet_s is not None and self._last_packet_s is not None:
            duration = self._last_packet_s - self._first_packet_s
        summary = {
            "call_id": self.call_id,
            **self.stats(),
            "media_s": round(duration, 3),
            "events_dropped": self._path.events_dropped,
        }
        self._summary = summary
        if self._tap is not None:
            try:
                self._tap.close(summary)
            except Exception as exc:
                self._warn_once("tap_close", "recording close failed", error=type(exc).__name__)
            self._tap = None
        self._path.events.clear()
        return summary

    # -- internals

    def _touch(self, now_s: float) -> None:
        if self._first_packet_s is None:
            self._first_packet_s = now_s
            self._caller_clock = _RecordingClock(now_s)
            self._agent_clock = _RecordingClock(now_s)
        self._last_packet_s = now_s

    def _source_ok(self, side: _Leg, source: tuple[str, int], latch: tuple[str, int] | None) -> bool:
        # Latched: that exact address and port; not yet: any port of the SDP's host.
        ok = source == latch if latch is not None else side.host is not None and _parse_host(source[0]) == side.host
        if not ok:
            side.counters.dropped += 1
            self._warn_once(f"source_{side.name}", "packets from an unexpected source dropped", leg=side.name)
        return ok

    def _destination(self, side: _Leg, rtcp: bool) -> tuple[str, int] | None:
        endpoint = side.endpoint
        if endpoint is None:
            return None
        if rtcp and endpoint.rtcp_port != endpoint.rtp_port:
            return side.rtcp_latch or (endpoint.address, endpoint.rtcp_port)
        return side.rtp_latch or (endpoint.address, endpoint.rtp_port)

    def _pt_map(self, src: _Leg, dst: _Leg) -> dict[int, int]:
        """Payload type numbers of ``src`` mapped to ``dst``'s numbers for the same encoding."""
        key = src.name
        mapping = self._pt_maps.get(key)
        if mapping is None:
            mapping = {}
            if dst.endpoint is not None:
                for pt, name in src.types.names.items():
                    if dst.types.names.get(pt, "").casefold() == name.casefold():
                        continue
                    other = dst.types.payload_type_for(name)
                    if other is not None:
                        mapping[pt] = other
            self._pt_maps[key] = mapping
        return mapping

    def _from_agent(self, packet: RtpPacket, now_s: float) -> list[tuple[str, bytes, tuple[str, int]]]:
        agent, caller = self._agent, self._caller
        if self._tap is not None and self._agent_clock is not None:
            codec = agent.types.codec(packet.payload_type)
            if codec is not None:
                position = self._agent_clock.position(packet.timestamp, now_s)
                try:
                    self._tap.write_agent(packet.payload, codec.name, position)
                except Exception as exc:
                    self._warn_once("tap_write", "recording write failed", error=type(exc).__name__)
        destination = self._destination(caller, rtcp=False)
        if destination is None:
            return []
        pt = self._pt_map(agent, caller).get(packet.payload_type)
        return [(caller.name, caller.out.rewrite_to_bytes(packet, payload_type=pt), destination)]

    def _from_caller(self, packet: RtpPacket, now_s: float) -> list[tuple[str, bytes, tuple[str, int]]]:
        caller = self._caller
        path = self._path
        codec = caller.types.codec(packet.payload_type)
        if codec is not None:  # PayloadKind.AUDIO, the usual packet
            slots = path.audio(packet, codec, now_s)
            return self._send_slots(slots) if slots else []  # (batched: the slot waits in the bank)
        if caller.types.kind(packet.payload_type) is PayloadKind.EVENT:
            try:
                slots = path.event(packet, now_s)
            except ProtocolError:
                caller.counters.errors += 1
                self._warn_once("malformed_event", "malformed telephone-event dropped")
                return []
            if path.masking:
                return self._send_slots(slots)
            return self._forward(packet)
        if path.masking:
            caller.counters.muted += 1
            self._warn_once("muted_payload", "payload type not maskable; muted toward the agent",
                            payload_type=packet.payload_type)
            return []
        return self._forward(packet)

    def _next_vseq(self) -> int:
        seq = self._vseq
        self._vseq = (seq + 1) & 0xFFFF
        return seq

    def _forward(self, packet: RtpPacket) -> list[tuple[str, bytes, tuple[str, int]]]:
        agent = self._agent
        destination = self._destination(agent, rtcp=False)
        upstream = RtpPacket(
            packet.payload_type, self._next_vseq(), self._path.out_ts(packet.timestamp), packet.ssrc, packet.payload,
            packet.marker, packet.csrc, packet.extension, packet.padding_size,
        )
        pt = self._pt_map(self._caller, agent).get(packet.payload_type)
        out = agent.out.rewrite_to_bytes(upstream, payload_type=pt)
        if destination is None:
            return []
        return [(agent.name, out, destination)]

    def _send_slots(self, slots: list[_Slot]) -> list[tuple[str, bytes, tuple[str, int]]]:
        if not slots:
            return []
        agent = self._agent
        destination = self._destination(agent, rtcp=False)
        mapping = self._pt_map(self._caller, agent)
        result = []
        pack = agent.out.pack  # rewrite_to_bytes without building the upstream packet
        for slot in slots:
            pt = mapping.get(slot.payload_type, slot.payload_type)
            out = pack(pt, self._next_vseq(), slot.timestamp, slot.ssrc, slot.marker, slot.payload)
            if destination is not None:
                result.append((agent.name, out, destination))
        return result

    def _tap_caller(self, frame: MaskedFrame, ts: int, now_s: float | None) -> None:
        if self._tap is not None and self._caller_clock is not None:
            try:
                self._tap.write_caller(frame, self._caller_clock.position(ts, now_s))
            except Exception as exc:
                self._warn_once("tap_write", "recording write failed", error=type(exc).__name__)

    def _relay_rtcp(
        self, side: _Leg, data: bytes, src: tuple[str, int], now_s: float, *, muxed: bool,
    ) -> list[tuple[str, bytes, tuple[str, int]]]:
        source = (src[0], src[1])
        if not self._source_ok(side, source, side.rtp_latch if muxed else side.rtcp_latch):
            return []
        other = self._agent if side is self._caller else self._caller
        mapping: dict[int, int] = {}
        if side.source_ssrc is not None:
            mapping[side.source_ssrc] = other.out.ssrc
        if other.source_ssrc is not None:
            mapping[side.out.ssrc] = other.source_ssrc
        try:
            out = rewrite_rtcp_ssrc(data, mapping)
        except ProtocolError:
            side.counters.errors += 1
            self._warn_once(f"malformed_rtcp_{side.name}", "malformed RTCP dropped", leg=side.name)
            return []
        if muxed:
            if side.rtp_latch != source and self._lane_slot is not None:
                self.leave_lane()
            side.rtp_latch = source
        else:
            side.rtcp_latch = source
        side.counters.rtcp_packets += 1
        self._touch(now_s)
        destination = self._destination(other, rtcp=True)
        if destination is None:
            return []
        return [(other.name, out, destination)]

    def _warn_once(self, kind: str, message: str, **fields: Any) -> None:
        if kind in self._warned:
            return
        self._warned.add(kind)
        self._log.warning(message, **fields)

