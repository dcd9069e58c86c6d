"""RFC 4733 telephone-events: the payload format and a receiver that yields key presses.

:class:`TelephoneEvent` is the 4-byte payload of RFC 4733 section 2.3 (event code,
E bit, volume, duration). :class:`EventReceiver` turns the stream of such packets from
one RTP source into key presses reported exactly once (section 2.5.2, receiver
procedures): :class:`KeyDown` at the first packet seen of an event (the start packet
may be lost, so that can be an update or even an end packet), :class:`KeyUp` at its
end (the end packet is usually sent three times). It survives duplicates and
reordering (late packets of a finished event are ignored, not taken for a new press),
long-duration events split into segments with a new timestamp (section 2.5.1.3) or
whose duration field wraps under the same timestamp, and a lost end: the caller passes
the stream's current RTP timestamp to :meth:`EventReceiver.tick`, which ends an event
that has had no update for the timeout. Events 0-15 are the keys ``0-9 * # A-D``
(section 3.2); other events are tracked so they end a key press, but are only counted.
Media time is RTP timestamps throughout; there is no clock and no I/O here.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from dtmfguard.errors import ProtocolError

__all__ = [
    "KEYS",
    "EventReceiver",
    "KeyDown",
    "KeyEvent",
    "KeyUp",
    "TelephoneEvent",
]

#: Event codes 0-15 in order (RFC 4733 section 3.2, table 7).
KEYS = "0123456789*#ABCD"

_MAX_DURATION = 0xFFFF


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """One RFC 4733 event payload; ``duration`` is in RTP timestamp units (samples)."""

    event: int
    end: bool
    volume: int
    duration: int

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        """Parse the first 4 bytes of ``payload``; the reserved R bit is ignored.

        Raises :class:`ProtocolError` for a payload shorter than 4 bytes.
        """
        if len(payload) < 4:
            raise ProtocolError(f"rfc4733: payload of {len(payload)} bytes is shorter than the 4-byte event")
        flags = payload[1]
        return cls(payload[0], bool(flags & 0x80), flags & 0x3F, (payload[2] << 8) | payload[3])

    def serialize(self) -> bytes:
        """The 4-byte payload; raises :class:`ValueError` for a field out of range."""
        if not 0 <= self.event <= 255:
            raise ValueError(f"event {self.event} is not 0-255")
        if not 0 <= self.volume <= 63:
            raise ValueError(f"volume {self.volume} is not 0-63")
        if not 0 <= self.duration <= _MAX_DURATION:
            raise ValueError(f"duration {self.duration} is not 0-65535")
        flags = (0x80 if self.end else 0) | self.volume
        return bytes((self.event, flags, self.duration >> 8, self.duration & 0xFF))

    @property
    def key(self) -> str | None:
        """``"0"``-``"9"``, ``"*"``, ``"#"``, ``"A"``-``"D"`` for events 0-15, else ``None``."""
        return KEYS[self.event] if self.event < len(KEYS) else None


@dataclass(frozen=True, slots=True)
class KeyDown:
    """A key press began; ``rtp_ts`` is the event's timestamp (its start in media time)."""

    key: str
    rtp_ts: int


@dataclass(frozen=True, slots=True)
class KeyUp:
    """A key press ended after ``duration_samples`` (the longest duration reported)."""

    key: str
    rtp_ts: int
    duration_samples: int


KeyEvent = KeyDown | KeyUp


def _signed32(value: int) -> int:
    """RTP timestamp difference as a signed 32-bit number (serial arithmetic)."""
    value &= 0xFFFFFFFF
    return value - 0x1_0000_0000 if value >= 0x8000_0000 else value


def _newer16(seq: int, than: int) -> bool:
    delta = (seq - than) & 0xFFFF
    return 0 < delta < 0x8000


class _Event:
    """The event currently in progress."""

    __slots__ = ("code", "key", "start_ts", "segment_ts", "wraps", "segment_duration", "last_seq")

    def __init__(self, code: int, rtp_ts: int, duration: int, seq: int) -> None:
        self.code = code
        self.key = KEYS[code] if code < len(KEYS) else None
        self.start_ts = rtp_ts
        self.segment_ts = rtp_ts
        self.wraps = 0
        self.segment_duration = duration
        self.last_seq = seq

    @property
    def duration_samples(self) -> int:
        offset = _signed32(self.segment_ts - self.start_ts)
        return offset + self.wraps * 0x10000 + self.segment_duration

    @property
    def covered_until_ts(self) -> int:
        """Media time up to which the sender has reported the event (mod 2**32)."""
        return (self.segment_ts + self.wraps * 0x10000 + self.segment_duration) & 0xFFFFFFFF


class EventReceiver:
    """Key presses, exactly once, from one source's telephone-event packets.

    ``receive()`` and ``tick()`` return the :data:`KeyEvent` list they caused (usually
    empty). Counters: ``ignored_events`` (non-key events seen), ``duplicates`` (packets
    of finished events, late or repeated), ``stale`` (packets older than the latest
    event), ``lost_starts`` (events first seen without their marker-bit start packet),
    ``timeouts`` (events ended by :meth:`tick`). Call :meth:`reset` when the source's
    SSRC changes.
    """

    def __init__(
        self,
        *,
        clock_rate_hz: int = 8000,
        timeout_ms: int = 250,
        reorder_window_ms: int = 60,
        stale_limit_ms: int = 10_000,
    ) -> None:
        self.clock_rate_hz = clock_rate_hz
        self._timeout_samples = clock_rate_hz * timeout_ms // 1000
        self._window_samples = clock_rate_hz * reorder_window_ms // 1000
        self._stale_limit_samples = clock_rate_hz * stale_limit_ms // 1000
        self.ignored_events = 0
        self.duplicates = 0
        self.stale = 0
        self.lost_starts = 0
        self.timeouts = 0
        self.reset()

    def reset(self) -> None:
        """Forget the event in progress and the recent ones (counters are kept)."""
        self._current: _Event | None = None
        self._latest_ts: int | None = None
        # (segment timestamp, code) of recently finished segments: their late packets.
        self._finished: deque[tuple[int, int]] = deque(maxlen=32)

    @property
    def active_key(self) -> str | None:
        """The key held down right now, if any."""
        current = self._current
        return current.key if current is not None else None

    def receive(self, rtp_ts: int, seq: int, marker: bool, payload: bytes) -> list[KeyEvent]:
        """Take one telephone-event packet; raises :class:`ProtocolError` if malformed.

        The timestamp identifies the event (RFC 4733 2.5.1.1); ``marker`` only feeds the
        ``lost_starts`` counter, since the start packet that carries it may be lost.
        """
        event = TelephoneEvent.parse(payload)
        rtp_ts &= 0xFFFFFFFF
        seq &= 0xFFFF
        if (rtp_ts, event.event) in self._finished:
            self.duplicates += 1
            return []
        current = self._current
        if current is not None and current.code == event.event:
            if rtp_ts == current.segment_ts:
                return self._update(current, seq, event)
            if self._continues(current, rtp_ts):
                # RFC 4733 2.5.1.3: a long event goes on in a new segment, new timestamp.
                self._finished.append((current.segment_ts, current.code))
                current.segment_ts = rtp_ts
                current.wraps = 0
                current.segment_duration = event.duration
                current.last_seq = seq
                self._latest_ts = rtp_ts
                return self._finish(current) if event.end else []
        if self._latest_ts is not None and 0 < -_signed32(rtp_ts - self._latest_ts) <= self._stale_limit_samples:
            self.stale += 1  # older than the latest event: a late packet, never a new press
            return []
        out: list[KeyEvent] = []
        if current is not None:
            out.extend(self._finish(current))  # a new event ends the previous one
        current = _Event(event.event, rtp_ts, event.duration, seq)
        self._current = current
        self._latest_ts = rtp_ts
        if not marker:
            self.lost_starts += 1
        if current.key is None:
            self.ignored_events += 1
        else:
            out.append(KeyDown(current.key, rtp_ts))
        if event.end:
            out.extend(self._finish(current))
        return out

    def tick(self, now_rtp_ts: int) -> list[KeyEvent]:
        """End the event in progress if nothing extended it for the timeout.

        ``now_rtp_ts`` is the source's current media time (e.g. the timestamp of its
        latest audio packet, same clock as the events).
        """
        current = self._current
        if current is None:
            return []
        if _signed32(now_rtp_ts - current.covered_until_ts) <= self._timeout_samples:
            return []
        self.timeouts += 1
        return self._finish(current)

    def _continues(self, current: _Event, rtp_ts: int) -> bool:
        """Is a packet at ``rtp_ts`` the next segment of the long event in progress?"""
        window = self._window_samples
        if current.wraps == 0 and current.segment_duration < _MAX_DURATION - window:
            return False  # segments only end at the maximum duration
        gap = _signed32(rtp_ts - current.covered_until_ts)
        return -window <= gap <= window

    def _update(self, current: _Event, seq: int, event: TelephoneEvent) -> list[KeyEvent]:
        newer = _newer16(seq, current.last_seq)
        duration = event.duration
        if newer and duration + 0x8000 < current.segment_duration:
            # Same timestamp, duration field wrapped past 0xFFFF: count the lap.
            current.wraps += 1
            current.segment_duration = duration
        elif not newer and duration > current.segment_duration + 0x8000:
            self.duplicates += 1  # a late packet from before the wrap
            return []
        elif duration > current.segment_duration:
            current.segment_duration = duration
        if newer:
            current.last_seq = seq
        return self._finish(current) if event.end else []

    def _finish(self, current: _Event) -> list[KeyEvent]:
        self._current = None
        self._finished.append((current.segment_ts, current.code))
        if current.key is None:
            return []
        return [KeyUp(current.key, current.start_ts, current.duration_samples)]
