"""The caller->agent chain for one channel: detect, delay line, mask.

A frame of decoded caller audio goes in; the detector's events and the masked frame
that leaves the delay line come out. Synchronous and I/O-free: the live proxy calls
it once per packet, the offline tools once per chunk of a file.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from dtmfguard.kernels.features import Thresholds
from dtmfguard.pipeline.detect import ChannelDetector, ToneEvent
from dtmfguard.pipeline.frames import AudioFrame, MaskedFrame
from dtmfguard.pipeline.mask import Masker, MaskSettings


class CallerChain:
    """Detector + masker of one caller->agent channel."""

    def __init__(
        self, settings: MaskSettings | None = None, thresholds: Thresholds | None = None,
        min_digit_ms: float = 26.0, seed: int = 0,
    ) -> None:
        self.detector = ChannelDetector(thresholds, min_digit_ms)
        self.masker = Masker(settings, seed=seed)
        self._pos = 0

    def process(self, samples: npt.NDArray[np.float32]) -> tuple[MaskedFrame, list[ToneEvent]]:
        events = self.detector.process(samples)
        self.masker.on_events(events)
        frame = AudioFrame(np.asarray(samples, np.float32), self._pos)
        self._pos += len(samples)
        return self.masker.process(frame), events

    def flush(self) -> tuple[MaskedFrame, list[ToneEvent]]:
        """End of stream: close open tones and drain the delay line."""
        events = self.detector.flush()
        self.masker.on_events(events)
        return self.masker.flush(), events


class MaskResult:
    """A masked recording: ``samples``, the mask ``gain`` per sample, and the events."""

    __slots__ = ("samples", "gain", "events")

    def __init__(
        self, samples: npt.NDArray[np.float32], gain: npt.NDArray[np.float32],
        events: list[ToneEvent],
    ) -> None:
        self.samples = samples
        self.gain = gain
        self.events = events

    def masked_intervals(self) -> list[tuple[int, int]]:
        """``[start, end)`` sample ranges where the gain is above zero."""
        on = np.concatenate([[False], self.gain > 0, [False]])
        edges = np.flatnonzero(np.diff(on.astype(np.int8)))
        return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def mask_recording(
    samples: npt.NDArray[np.float32], settings: MaskSettings | None = None,
    frame_samples: int = 160, **kwargs: object,
) -> MaskResult:
    """Mask a whole recording through the live chain; output is time-aligned with input.

    The chain runs packet by packet exactly as on a call; the delay line's latency is
    then removed so the result has the input's length and timing.
    """
    x = np.asarray(samples, np.float32)
    chain = CallerChain(settings, **kwargs)  # type: ignore[arg-type]
    outs: list[npt.NDArray[np.float32]] = []
    gains: list[npt.NDArray[np.float32]] = []
    events: list[ToneEvent] = []

    def keep(frame: MaskedFrame) -> None:
        outs.append(frame.samples)
        gains.append(frame.gain if frame.gain is not None else np.zeros(len(frame), np.float32))

    for i in range(0, len(x), frame_samples):
        out, ev = chain.process(x[i : i + frame_samples])
        keep(out)
        events.extend(ev)
    tail, ev = chain.flush()
    keep(tail)
    events.extend(ev)
    y = np.concatenate(outs)
    g = np.concatenate(gains)
    delay = chain.masker.delay
    return MaskResult(y[delay : delay + len(x)], g[delay : delay + len(x)], events)
