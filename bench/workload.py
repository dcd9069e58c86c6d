"""Multi-channel test audio for the kernel benchmarks: a typical mix and the DTMF worst case.

The batch kernels cost more on some audio than on other: the decision kernel skips the
detailed tests for sub-blocks without tone-like energy. So inputs are built like the
traffic of a busy proxy:

* ``typical``: 60 % of channels carry speech-like audio (:func:`dtmfguard.synth.speech_like`,
  -30 to -15 dBm0), 25 % a quiet line (white noise at -60 dBm0), 15 % keypad digits being
  typed (:func:`dtmfguard.synth.dtmf_sequence`, random keys, levels and twist);
* ``dtmf``: every channel carries keypad digits, with short pauses (the worst case).

Channels are drawn from a small pool of generated clips, each at its own random start
offset, so generation stays cheap at 1024 channels while no two channels are in step.
Everything is seeded: the same arguments give the same samples.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from dtmfguard import synth
from dtmfguard.levels import DTMF_KEYS, SAMPLE_RATE_HZ, dbm0_to_power

FRAME_SAMPLES = 160
"""One channel-frame: 20 ms at 8 kHz (four 5 ms sub-blocks)."""

MIXES = ("typical", "dtmf")
_SPEECH_SHARE = 0.60
_QUIET_SHARE = 0.25
_QUIET_LINE_DBM0 = -60.0
_POOL_CLIPS = 6

Float32Array = npt.NDArray[np.float32]


def _keys(rng: np.random.Generator, n: int) -> str:
    return "".join(DTMF_KEYS[int(i)] for i in rng.integers(0, len(DTMF_KEYS), n))


def _typing_clip(rng: np.random.Generator, n_samples: int, *, on_ms: float, off_ms: float) -> Float32Array:
    """Keypad digits over the whole clip: one random level and twist per clip."""
    twist_db = float(rng.uniform(-8.0, 4.0))
    level_low_dbm0 = float(rng.uniform(-25.0 - min(twist_db, 0.0), -5.0 - max(twist_db, 0.0)))
    period_samples = (on_ms + off_ms) * SAMPLE_RATE_HZ / 1000.0
    n_keys = int(n_samples / period_samples) + 2
    x, _ = synth.dtmf_sequence(
        _keys(rng, n_keys), on_ms=on_ms, off_ms=off_ms, lead_ms=off_ms, tail_ms=0.0,
        level_low_dbm0=level_low_dbm0, twist_db=twist_db, rng=rng,
    )
    return x[:n_samples]


class ClipPool:
    """Generated mono clips of ``clip_ms`` each, by kind: ``speech``, ``quiet``, ``dtmf``, ``dtmf_dense``."""

    def __init__(self, clip_ms: float, seed: int = 2) -> None:
        rng = np.random.default_rng(seed)
        n = synth.ms_to_samples(clip_ms)
        self.n_samples = n
        quiet_rms = float(np.sqrt(dbm0_to_power(_QUIET_LINE_DBM0)))
        self.clips: dict[str, list[Float32Array]] = {
            "speech": [
                synth.speech_like(clip_ms, rng, level_dbm0=float(rng.uniform(-30.0, -15.0)))
                for _ in range(_POOL_CLIPS)
            ],
            "quiet": [
                (quiet_rms * rng.standard_normal(n)).astype(np.float32) for _ in range(_POOL_CLIPS)
            ],
            "dtmf": [_typing_clip(rng, n, on_ms=70.0, off_ms=90.0) for _ in range(_POOL_CLIPS)],
            "dtmf_dense": [_typing_clip(rng, n, on_ms=90.0, off_ms=40.0) for _ in range(_POOL_CLIPS)],
        }

    def channel(self, kind: str, rng: np.random.Generator, n_samples: int) -> Float32Array:
        """``n_samples`` of one clip of ``kind``, from a random start (wrapping around)."""
        if n_samples > self.n_samples:
            raise ValueError(f"clips hold {self.n_samples} samples, {n_samples} asked for")
        clip = self.clips[kind][int(rng.integers(len(self.clips[kind])))]
        start = int(rng.integers(self.n_samples))
        return np.roll(clip, -start)[:n_samples]


def channel_kinds(mix: str, n_channels: int, rng: np.random.Generator) -> list[str]:
    """What each channel of a batch carries under ``mix`` (see the module docstring)."""
    if mix == "dtmf":
        return ["dtmf_dense"] * n_channels
    if mix != "typical":
        raise ValueError(f"unknown mix {mix!r}; expected one of {MIXES}")
    draw = rng.random(n_channels)
    return [
        "speech" if u < _SPEECH_SHARE else "quiet" if u < _SPEECH_SHARE + _QUIET_SHARE else "dtmf"
        for u in draw
    ]


def batch_audio(pool: ClipPool, mix: str, n_channels: int, n_frames: int, seed: int = 3) -> Float32Array:
    """float32 ``(n_frames * 160, n_channels)``, C-contiguous: frame ``k`` is rows ``160k..160k+159``."""
    rng = np.random.default_rng(seed)
    n_samples = n_frames * FRAME_SAMPLES
    out = np.empty((n_samples, n_channels), np.float32)
    for c, kind in enumerate(channel_kinds(mix, n_channels, rng)):
        out[:, c] = pool.channel(kind, rng, n_samples)
    return out


def frames(audio: Float32Array) -> list[Float32Array]:
    """The 20 ms frames of ``batch_audio`` output, each a C-contiguous ``(160, n_channels)`` view."""
    return [audio[k : k + FRAME_SAMPLES] for k in range(0, audio.shape[0], FRAME_SAMPLES)]
