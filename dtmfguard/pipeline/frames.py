"""Frame types of the media pipeline, and who may build them.

An :class:`AudioFrame` is decoded caller audio that may still hold keypad tones. A
:class:`MaskedFrame` is audio that went through the masker and is safe for the agent
and the recorder. Only :mod:`dtmfguard.pipeline.mask` can construct a
``MaskedFrame`` (construction needs a token that only that module imports), so unmasked audio
cannot be handed to an agent encoder or a recorder by mistake: their ``write``
methods accept ``MaskedFrame`` only.

Both carry float32 mono samples at 8 kHz and ``start_sample``, the stream time of
their first sample.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_MASKER_TOKEN = object()
"""Proof of origin for :class:`MaskedFrame`: imported by :mod:`dtmfguard.pipeline.mask` only.
(It lives here rather than in the masker so that building a frame, once per packet,
needs no import.)"""


class AudioFrame:
    """Raw (possibly tone-bearing) audio: float32 mono 8 kHz from ``start_sample``."""

    __slots__ = ("samples", "start_sample")

    def __init__(self, samples: npt.NDArray[np.float32], start_sample: int) -> None:
        if samples.dtype != np.float32 or samples.ndim != 1:
            raise TypeError(f"AudioFrame needs 1-D float32 samples, got {samples.dtype} {samples.shape}")
        self.samples = samples
        self.start_sample = start_sample

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return f"AudioFrame(start_sample={self.start_sample}, n={len(self.samples)})"


class MaskedFrame:
    """Audio safe for the agent and the recorder; built only by the masker."""

    __slots__ = ("samples", "start_sample", "masked_samples", "gain")

    def __init__(
        self, samples: npt.NDArray[np.float32], start_sample: int, masked_samples: int,
        gain: npt.NDArray[np.float32] | None = None, *, _token: object = None,
    ) -> None:
        if _token is not _MASKER_TOKEN:
            raise TypeError("MaskedFrame is built only by the masker")
        self.samples = samples
        self.start_sample = start_sample
        self.masked_samples = masked_samples
        # Mask gain per sample (0 = original audio, 1 = fully replaced); None = none.
        self.gain = gain

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return (
            f"MaskedFrame(start_sample={self.start_sample}, n={len(self.samples)}, "
            f"masked={self.masked_samples})"
        )
