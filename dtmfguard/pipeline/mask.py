"""Masking stage: a one-packet delay line and the replacement of keypad tones.

Audio is held for ``delay_ms`` (one packet time, 20 ms by default) before it leaves
toward the agent and the recorder. That look-ahead is what makes masking leak-free:
the detector recognises a tone a few milliseconds into it, and by then the tone's
first sample is still in the delay line, so the replacement can start before it.

The mask window of a tone runs from ``pre_pad_ms`` before the detector's estimate of
its start to ``post_pad_ms`` after its estimated end, with raised-cosine ramps of
``ramp_ms`` inside the pads so the edges do not click. Once the detector has seen a tone pair after an onset
(``ToneArmed``), everything after the tone's start is masked until its end is known:
the stage fails closed. An onset the detector cancels (not a tone after all) is let
through if none of it has been masked yet.

Modes (:class:`MaskMode`): ``flat-tone`` replaces every tone with one fixed sine of
fixed level, identical for every key and continuous in phase (stream time), so the
agent hears that a key was pressed but not which; ``silence``; ``comfort-noise``
(low-level white noise). Each :class:`Masker` owns its delay line, mask windows and
noise generator: nothing is shared between channels.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dtmfguard.kernels.masking import EXACT_POSITION, mix_frame, ramp_gain, ramp_gain_reference, ramp_table
from dtmfguard.levels import SAMPLE_RATE_HZ, dbm0_to_peak, dbm0_to_power
from dtmfguard.pipeline.detect import (
    ToneArmed,
    ToneCancelled,
    ToneEnded,
    ToneEvent,
    ToneRefined,
    ToneStarted,
    ToneSustained,
)
from dtmfguard.pipeline.frames import _MASKER_TOKEN, AudioFrame, MaskedFrame


class MaskMode(enum.Enum):
    FLAT_TONE = "flat-tone"
    SILENCE = "silence"
    COMFORT_NOISE = "comfort-noise"


@dataclass(frozen=True)
class MaskSettings:
    """What replaces a tone and how tightly. Field names match ``[masking]`` config keys."""

    enabled: bool = True
    mode: MaskMode = MaskMode.FLAT_TONE
    delay_ms: int = 20
    flat_tone_hz: float = 500.0
    flat_tone_level_dbm0: float = -20.0
    comfort_noise_level_dbm0: float = -55.0
    pre_pad_ms: float = 3.5
    post_pad_ms: float = 8.0
    ramp_ms: float = 2.0

    @classmethod
    def from_config(cls, masking: object) -> MaskSettings:
        """Build from a ``[masking]`` config section (any object with those attributes)."""
        values = {f: getattr(masking, f) for f in cls.__dataclass_fields__ if hasattr(masking, f)}
        if isinstance(values.get("mode"), str):
            values["mode"] = MaskMode(values["mode"])
        return cls(**values)

    @property
    def delay_samples(self) -> int:
        return round(self.delay_ms * SAMPLE_RATE_HZ / 1000)


_TONE_TABLE_SAMPLES = 1600
"""Frames up to this long (200 ms) read the flat tone from its table."""


def _ms(ms: float) -> int:
    return round(ms * SAMPLE_RATE_HZ / 1000)


def refined_start(start: int, refined: int, out_pos: int, pre: int) -> int:
    """Where an open window starts after a :class:`ToneRefined` to ``refined``, with the
    delay line's output at ``out_pos``: the new estimate while nothing of the window
    (padded by ``pre``) has left the line, else the earlier of the two (a window never
    shrinks once it has begun)."""
    return refined if out_pos <= min(start, refined) - pre else min(start, refined)


class _Window:
    __slots__ = ("start", "end", "detected", "sustained", "armed")

    def __init__(self, start: int, detected: int) -> None:
        self.start = start
        self.end: int | None = None  # None: the tone is still open
        self.detected = detected
        self.sustained = False
        self.armed = False


class Masker:
    """Delay line + tone replacement for one channel.

    Feed the detector's events with :meth:`on_events`, then each frame of raw audio to
    :meth:`process`, which returns the frame that left the delay line ``delay_ms``
    earlier in stream time, masked. Works with any frame size.
    """

    def __init__(self, settings: MaskSettings | None = None, *, seed: int = 0) -> None:
        self.settings = s = settings or MaskSettings()
        self.delay = s.delay_samples
        self.pre = _ms(s.pre_pad_ms)
        self.post = _ms(s.post_pad_ms)
        self.ramp = max(1, _ms(s.ramp_ms))
        self.enabled = s.enabled
        self._buf = np.zeros(self.delay, np.float32)
        self._in_pos = 0  # stream time of the next input sample
        self._windows: list[_Window] = []
        self._rng = np.random.default_rng(seed)
        self._tone_peak = dbm0_to_peak(s.flat_tone_level_dbm0)
        self._tone_w = 2.0 * math.pi * s.flat_tone_hz / SAMPLE_RATE_HZ
        self._noise_rms = math.sqrt(dbm0_to_power(s.comfort_noise_level_dbm0))
        self.masked_total = 0
        self.windows_total = 0
        self._ones: dict[int, npt.NDArray[np.float32]] = {}  # read-only all-ones gains by length
        # The flat tone, when its period is a whole number of samples (500 Hz: 16), as a
        # table covering any frame start: sample i of the stream is table[i % period + k].
        cycle = SAMPLE_RATE_HZ / s.flat_tone_hz if s.flat_tone_hz > 0 else 0.0
        self._tone_period = round(cycle) if cycle and abs(cycle - round(cycle)) < 1e-9 else 0
        self._tone_table = (
            self._tone_peak * np.sin(self._tone_w * np.arange(self._tone_period + _TONE_TABLE_SAMPLES))
        ).astype(np.float32)
        self._ramp_table = ramp_table(self.ramp)  # the gain k samples into a ramp

    @property
    def out_pos(self) -> int:
        """Stream time of the next sample that will leave the delay line."""
        return self._in_pos - self.delay

    def on_events(self, events: list[ToneEvent]) -> None:
        for ev in events:
            if isinstance(ev, ToneStarted):
                self._windows.append(_Window(ev.start_sample, ev.detected_sample))
                self.windows_total += 1
            elif isinstance(ev, ToneArmed | ToneSustained):
                w = self._open()
                if w is not None:
                    w.armed = True
                    w.sustained = w.sustained or isinstance(ev, ToneSustained)
            elif isinstance(ev, ToneRefined):
                w = self._open()
                if w is not None:
                    w.start = refined_start(w.start, ev.start_sample, self.out_pos, self.pre)
            elif isinstance(ev, ToneCancelled):
                w = self._open()
                if w is not None:
                    if self.out_pos <= w.start - self.pre or not w.armed:
                        # Nothing of it has been masked yet: let the audio through.
                        self._windows.remove(w)
                    else:
                        # Part of it has already been masked: finish it smoothly.
                        w.end = max(self.out_pos, w.start)
            elif isinstance(ev, ToneEnded):
                w = self._open()
                if w is not None:
                    w.sustained = w.armed = True
                    w.start = min(w.start, ev.start_sample) if self.out_pos > w.start - self.pre else ev.start_sample
                    w.end = ev.end_sample

    def resume_window(self, start_sample: int, detected_sample: int, started: int) -> None:
        """An onset whose events were handled elsewhere (the media path's quiet lane):
        ``started`` windows were opened and cancelled there without masking anything
        (counted here), and, with ``start_sample >= 0``, the last one is still open and
        unarmed, starting at ``start_sample`` as :meth:`on_events` would have refined it."""
        self.windows_total += started
        if start_sample >= 0:
            self._windows.append(_Window(start_sample, detected_sample))

    def _open(self) -> _Window | None:
        for w in reversed(self._windows):
            if w.end is None:
                return w
        return None

    def process(self, frame: AudioFrame) -> MaskedFrame:
        """Push ``frame`` in; return the masked frame of equal length leaving the line."""
        x = frame.samples
        n = len(x)
        if frame.start_sample != self._in_pos:
            raise ValueError(
                f"frame starts at sample {frame.start_sample}, expected {self._in_pos}"
            )
        out = self._shift(x, n)
        start = self._in_pos - self.delay
        self._in_pos += n
        masked = 0
        gain = None
        if self._windows:
            # Speech and silence (no window) skip the envelope entirely.
            if self.enabled:
                gain = self._gain(start, n)
            if gain is not None:
                if gain is self._ones.get(n):
                    masked = n  # wholly masked: the replacement is the frame
                    out = self._replacement(start, n)
                else:
                    # Mixed in place: ``out`` left the delay line and nothing else holds it.
                    period = self._tone_period
                    if self.settings.mode is MaskMode.FLAT_TONE and period and n <= _TONE_TABLE_SAMPLES:
                        masked = mix_frame(out, gain, self._tone_table, start % period)
                    else:
                        masked = mix_frame(out, gain, self._replacement(start, n), 0)
                self.masked_total += masked
            self._prune(start + n)
        return MaskedFrame(out, start, masked, gain, _token=_MASKER_TOKEN)

    def _shift(self, x: npt.NDArray[np.float32], n: int) -> npt.NDArray[np.float32]:
        """Push ``x`` into the delay line; return the ``n`` samples that leave it (a new array)."""
        buf = self._buf
        d = self.delay
        if n == d:
            # The usual case (one packet in, one packet out): the line's array itself
            # leaves, and a copy of the new packet takes its place.
            self._buf = x.copy()
            return buf
        if n > d:
            out = np.empty(n, np.float32)
            out[:d] = buf
            out[d:] = x[: n - d]
            self._buf = x[n - d :].copy()
            return out
        self._buf = np.concatenate((buf[n:], x))
        return buf[:n]

    def _gain(self, start: int, n: int) -> npt.NDArray[np.float32] | None:
        g: npt.NDArray[np.float32] | None = None
        end_out = start + n
        for w in self._windows:
            if not w.armed and w.end is None:
                # An onset with no tone-pair decision yet: wait (the delay line still
                # holds its start); speech onsets are mostly cancelled before this.
                continue
            lo = w.start - self.pre
            hi = None if w.end is None else w.end + self.post
            if lo >= end_out or (hi is not None and hi <= start):
                continue
            if lo + self.ramp <= start and (hi is None or hi - self.ramp >= end_out):
                # The whole frame is inside the window, past its ramps: fully masked.
                ones = self._ones.get(n)
                if ones is None:
                    ones = self._ones[n] = np.ones(n, np.float32)
                    ones.flags.writeable = False
                return ones
            if (
                start >= -EXACT_POSITION and end_out <= EXACT_POSITION and abs(lo) <= EXACT_POSITION
                and (hi is None or abs(hi) <= EXACT_POSITION)
            ):
                # The ramp kernel: the same float32 gains as the NumPy twin below, one call.
                if g is None:
                    g = np.empty(n, np.float32)
                    ramp_gain(g, start, lo, hi, self._ramp_table, False)
                else:
                    ramp_gain(g, start, lo, hi, self._ramp_table, True)
            else:
                gw = ramp_gain_reference(start, n, lo, hi, self.ramp)
                g = gw if g is None else np.maximum(g, gw)
        return g

    def _replacement(self, start: int, n: int) -> npt.NDArray[np.float32]:
        mode = self.settings.mode
        if mode is MaskMode.FLAT_TONE:
            period = self._tone_period
            if period and n <= _TONE_TABLE_SAMPLES:
                # A whole number of samples per cycle: read the tone from one table.
                offset = start % period
                return self._tone_table[offset : offset + n].copy()
            idx = np.arange(start, start + n, dtype=np.float64)
            return (self._tone_peak * np.sin(self._tone_w * idx)).astype(np.float32)
        if mode is MaskMode.COMFORT_NOISE:
            return (self._rng.standard_normal(n) * self._noise_rms).astype(np.float32)
        return np.zeros(n, np.float32)

    def _prune(self, out_pos: int) -> None:
        self._windows = [
            w for w in self._windows if w.end is None or w.end + self.post > out_pos
        ]

    def flush(self) -> MaskedFrame:
        """Drain the delay line (end of stream): returns the last ``delay`` samples."""
        return self.process(AudioFrame(np.zeros(self.delay, np.float32), self._in_pos))
