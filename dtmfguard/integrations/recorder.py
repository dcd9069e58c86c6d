"""Call recordings: a stereo WAV of what the agent heard and said, plus a JSON sidecar.

When ``[recording] dir`` is set, each call is written as ``<start>_<call-id>.wav``
(8 kHz, 16-bit, two channels: left the caller exactly as sent to the agent, i.e. after
masking; right the agent as received) and ``<start>_<call-id>.json`` (call-id, start
time, duration, the masked intervals in ms, the number of key presses, frames lost to
overflow; never a digit). The caller channel accepts only
:class:`~dtmfguard.pipeline.frames.MaskedFrame`, which only the masker builds, so
unmasked audio cannot reach a recording by mistake.

Writes never block the media path. A :class:`CallRecording` collects frames into
batches on the media thread; a batch is handed to the :class:`Recorder`'s one writer
thread through a queue bounded at ``max_pending_batches``. Overflow policy: when the
writer is that far behind (a slow disk), the new batch is dropped and its frames are
counted; frames carry their position on the call's timeline, so a dropped batch
becomes silence in the file and both channels stay aligned. Opening and closing a
call are small control messages that always get through (at most two per call).
"""

from __future__ import annotations

import contextlib
import json
import queue
import re
import threading
import wave
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from dtmfguard.codecs.g711 import float_to_int16
from dtmfguard.codecs.registry import CODECS
from dtmfguard.control.media import MaskIntervals
from dtmfguard.log import get_logger
from dtmfguard.pipeline.frames import MaskedFrame

__all__ = ["CHANNEL_LEAD_LIMIT_SAMPLES", "CallRecording", "Recorder"]

SAMPLE_RATE_HZ = 8000
BATCH_FRAMES = 32
"""Frames (both channels) collected before a batch goes to the writer (~0.3 s of a call)."""
MAX_PENDING_BATCHES = 256
"""Batches waiting for the writer, over all calls, before new ones are dropped."""
CHANNEL_LEAD_LIMIT_SAMPLES = 2 * SAMPLE_RATE_HZ
"""How far one channel may run ahead of a silent other before the file moves on
(audio arriving later for the skipped time is dropped)."""
MAX_GAP_SAMPLES = 3600 * SAMPLE_RATE_HZ
"""A timeline jump larger than this (an hour) is not filled with silence."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe_name(call_id: str) -> str:
    return _UNSAFE.sub("_", call_id).strip("._")[:80] or "call"


@dataclass(slots=True)
class _CallerItem:
    frame: MaskedFrame
    position: int


@dataclass(slots=True)
class _AgentItem:
    payload: bytes
    encoding: str
    position: int


_Item = _CallerItem | _AgentItem


class Recorder:
    """The recordings of a process: one directory, one writer thread, one bounded queue.

    ``wall_clock`` gives a call's start time when :meth:`open_call` is not told it.
    Call :meth:`close` at shutdown: it finishes every open recording.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        max_pending_batches: int = MAX_PENDING_BATCHES,
        batch_frames: int = BATCH_FRAMES,
        wall_clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_pending_batches = max_pending_batches
        self.batch_frames = batch_frames
        self._wall_clock = wall_clock or (lambda: datetime.now(UTC))
        self._queue: queue.SimpleQueue[tuple[str, CallRecording | None, Any]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending = 0
        self._open: set[CallRecording] = set()
        self.dropped_batches = 0
        self._closed = False
        self._log = get_logger(component="recorder")
        self._thread = threading.Thread(target=self._run, name="dtmfguard-recorder", daemon=True)
        self._thread.start()

    def open_call(self, call_id: str, started_at: datetime | None = None) -> CallRecording:
        """A new recording; attach it with ``CallMedia.attach_recorder``."""
        if self._closed:
            raise RuntimeError("the recorder is closed")
        recording = CallRecording(self, call_id, started_at or self._wall_clock())
        self._queue.put(("open", recording, None))
        return recording

    def close(self, timeout_s: float = 10.0) -> None:
        """Finish every recording still open and stop the writer thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(("stop", None, None))
        self._thread.join(timeout_s)

    @property
    def pending_batches(self) -> int:
        return self._pending

    # -- media thread

    def _submit(self, recording: CallRecording, items: list[_Item]) -> bool:
        with self._lock:
            if self._pending >= self.max_pending_batches or self._closed:
                self.dropped_batches += 1
                return False
            self._pending += 1
        self._queue.put(("frames", recording, items))
        return True

    def _finish(
        self, recording: CallRecording, summary: Mapping[str, Any], dropped_frames: int, end_samples: int,
    ) -> None:
        self._queue.put(("close", recording, (dict(summary), dropped_frames, end_samples)))

    # -- writer thread

    def _run(self) -> None:
        while True:
            kind, recording, payload = self._queue.get()
            if kind == "stop":
                break
            assert recording is not None
            try:
                if kind == "open":
                    self._open.add(recording)
                elif kind == "frames":
                    with self._lock:
                        self._pending -= 1
                    recording._write(payload)
                elif kind == "close":
                    self._open.discard(recording)
                    summary, dropped, end = payload
                    recording._finalize(summary, dropped, end)
            except Exception as exc:
                recording._fail(exc)
        for recording in list(self._open):
            try:
                recording._finalize({}, recording.dropped_frames, 0, complete=False)
            except Exception as exc:
                recording._fail(exc)
        self._open.clear()


class CallRecording:
    """One call's recording; the :class:`~dtmfguard.control.media.MediaTap` of its CallMedia.

    The ``write_*`` methods and :meth:`close` run on the media thread and never block;
    the rest runs on the recorder's writer thread.
    """

    def __init__(self, recorder: Recorder, call_id: str, started_at: datetime) -> None:
        self._recorder = recorder
        self.call_id = call_id
        self.started_at = started_at.astimezone(UTC)
        stem = f"{self.started_at:%Y%m%dT%H%M%S}Z_{_safe_name(call_id)}"
        self.wav_path = recorder.directory / f"{stem}.wav"
        self.json_path = recorder.directory / f"{stem}.json"
        self.dropped_frames = 0
        self._end_samples = 0  # the latest position written to, dropped or not
        self._items: list[_Item] = []
        self._closed = False
        # Writer-thread state.
        self._wav: wave.Wave_write | None = None
        self._written = 0  # frames (sample pairs) in the file
        self._pending: list[npt.NDArray[np.float32]] = [np.zeros(0, np.float32), np.zeros(0, np.float32)]
        self._masks = MaskIntervals()
        self._caller_end: int | None = None
        self._failed = False

    # -- media thread (MediaTap)

    def write_caller(self, frame: MaskedFrame, position_samples: int) -> None:
        """Caller audio as sent to the agent; raises TypeError for anything but a MaskedFrame."""
        if not isinstance(frame, MaskedFrame):
            raise TypeError(f"the caller channel records MaskedFrame only, not {type(frame).__name__}")
        self._add(_CallerItem(frame, position_samples), position_samples + len(frame))

    def write_agent(self, payload: bytes, encoding: str, position_samples: int) -> None:
        """An agent packet's G.711 payload (decoded on the writer thread)."""
        self._add(_AgentItem(bytes(payload), encoding, position_samples), position_samples + len(payload))

    def close(self, summary: Mapping[str, Any]) -> None:
        """The call ended: write what is left and the sidecar. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._flush()
        self._recorder._finish(self, summary, self.dropped_frames, self._end_samples)

    def _add(self, item: _Item, end_samples: int) -> None:
        if self._closed:
            return
        self._end_samples = max(self._end_samples, end_samples)
        self._items.append(item)
        if len(self._items) >= self._recorder.batch_frames:
            self._flush()

    def _flush(self) -> None:
        if self._items:
            items, self._items = self._items, []
            if not self._recorder._submit(self, items):
                self.dropped_frames += len(items)

    # -- writer thread

    def _open_file(self) -> wave.Wave_write:
        if self._wav is None:
            path, n = self.wav_path, 1
            while path.exists():
                path = self.wav_path.with_name(f"{self.wav_path.stem}-{n}.wav")
                n += 1
            if path != self.wav_path:
                self.wav_path = path
                self.json_path = path.with_suffix(".json")
            wav = wave.open(str(path), "wb")  # noqa: SIM115 - kept open for the call, closed in _finalize
            wav.setnchannels(2)
            wav.setsampwidth(2)
            wav.setframerate(SAMPLE_RATE_HZ)
            self._wav = wav
        return self._wav

    def _write(self, items: list[_Item]) -> None:
        if self._failed:
            return
        for item in items:
            if isinstance(item, _CallerItem):
                frame = item.frame
                if self._caller_end is not None and item.position != self._caller_end:
                    self._masks.end(self._caller_end)
                self._masks.feed(frame, item.position)
                self._caller_end = item.position + len(frame)
                self._place(0, item.position, frame.samples)
            else:
                codec = CODECS.get(item.encoding.upper())
                if codec is not None:
                    self._place(1, item.position, codec.decode(item.payload))
        self._drain(final=False)

    def _end(self, channel: int) -> int:
        return self._written + len(self._pending[channel])

    def _place(self, channel: int, position: int, samples: npt.NDArray[np.float32]) -> None:
        end = self._end(channel)
        if position < end:
            samples = samples[end - position :]  # overlaps what is already there: dropped
            position = end
        if not len(samples):
            return
        gap = position - end
        parts = [self._pending[channel]]
        if 0 < gap <= MAX_GAP_SAMPLES:
            parts.append(np.zeros(gap, np.float32))
        parts.append(np.asarray(samples, np.float32))
        self._pending[channel] = np.concatenate(parts)

    def _drain(self, *, final: bool) -> None:
        left, right = self._pending
        ends = (len(left), len(right))
        # Both channels up to the shorter one, unless one ran far ahead of a silent other;
        # at the end, everything (the shorter channel padded with silence).
        n = max(ends) if final else max(min(ends), max(ends) - CHANNEL_LEAD_LIMIT_SAMPLES)
        if n <= 0:
            return
        stereo = np.zeros((n, 2), np.float32)
        stereo[: min(n, len(left)), 0] = left[:n]
        stereo[: min(n, len(right)), 1] = right[:n]
        self._open_file().writeframes(float_to_int16(stereo).astype("<i2").tobytes())
        self._pending = [left[n:], right[n:]]
        self._written += n

    def _finalize(
        self, summary: Mapping[str, Any], dropped_frames: int, end_samples: int, *, complete: bool = True,
    ) -> None:
        if self._failed:
            return
        # Audio dropped at the very end still counts: the file lasts as long as the call.
        pad = end_samples - max(self._end(0), self._end(1))
        if 0 < pad <= MAX_GAP_SAMPLES:
            self._pending[0] = np.concatenate([self._pending[0], np.zeros(pad, np.float32)])
        self._drain(final=True)
        self._masks.end(self._caller_end if self._caller_end is not None else self._written)
        self._open_file().close()
        ms = 1000 / SAMPLE_RATE_HZ
        sidecar = {
            "call_id": self.call_id,
            "start": self.started_at.isoformat().replace("+00:00", "Z"),
            "duration_ms": round(self._written * ms),
            "sample_rate_hz": SAMPLE_RATE_HZ,
            "channels": ["caller as sent to the agent (masked)", "agent"],
            "wav": self.wav_path.name,
            "masked_intervals_ms": [[round(a * ms, 1), round(b * ms, 1)] for a, b in self._masks.intervals],
            "masked_tones": self._masks.count,
            "digits": int(summary.get("digits", 0)),
            "dropped_frames": int(dropped_frames),
            "complete": complete,
        }
        tmp = self.json_path.with_suffix(".json.tmp")
        # One line, through the C encoder: the indenting encoder builds closures that refer to
        # each other, garbage only the collector's passes free.
        tmp.write_text(json.dumps(sidecar, separators=(", ", ": ")) + "\n", encoding="utf-8")
        tmp.replace(self.json_path)

    def _fail(self, exc: Exception) -> None:
        if not self._failed:
            self._failed = True
            self._recorder._log.error("recording failed", call_id=self.call_id, error=type(exc).__name__,
                                      reason=str(exc)[:200])
        if self._wav is not None:
            with contextlib.suppress(Exception):  # already failing; the error above is the report
                self._wav.close()
