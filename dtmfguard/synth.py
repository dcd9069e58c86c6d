"""Deterministic test-signal generation: DTMF tones, sequences, noise, dial tone, speech and music.

Signals for unit tests, the ITU-T Q.24 detection benchmarks, talk-off runs and the demo. DTMF
follows ITU-T Q.23 (frequency pairs in ``dtmfguard.levels``) with the Q.24 test parameters as
arguments: level, twist (high minus low, dB), relative and absolute frequency offsets, on/off
timing and a break inside a tone. Noise levels follow the Q.24 "per tone SNR" convention: noise
power over 0-4 kHz relative to one sine at a reference level. Every output is float32 mono at
8000 Hz on the +/-1.0 full-scale convention; every random choice comes from a numpy
``Generator`` (or an int seed), so the same seed always gives the same samples. Durations in ms
become sample counts by rounding ``ms * 8``, segment by segment, so truth positions are exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import signal as sps

from dtmfguard.levels import (
    SAMPLE_RATE_HZ,
    dbm0_to_peak,
    dbm0_to_power,
    dtmf_frequencies_hz,
)

__all__ = [
    "DtmfSpec",
    "Segment",
    "ToneTruth",
    "add_white_noise",
    "clip_int16",
    "dial_tone",
    "dtmf_sequence",
    "dtmf_tone",
    "from_int16",
    "mix",
    "ms_to_samples",
    "music_like",
    "render_segments",
    "speech_like",
    "to_int16",
]

FloatArray = npt.NDArray[np.float32]
RngLike = np.random.Generator | int | None

_INT16_SCALE = 32768.0
_NYQUIST_HZ = SAMPLE_RATE_HZ / 2.0


def _rng(rng: RngLike) -> np.random.Generator:
    """A Generator from a Generator, an int seed, or None (seed 0, for determinism)."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(0 if rng is None else rng)


def ms_to_samples(duration_ms: float) -> int:
    """Number of 8 kHz samples in ``duration_ms`` (rounded to nearest). Raises ValueError if negative."""
    if duration_ms < 0:
        raise ValueError(f"duration must not be negative, got {duration_ms!r} ms")
    return round(duration_ms * SAMPLE_RATE_HZ / 1000.0)


# --------------------------------------------------------------------------- DTMF


def dtmf_tone(
    key: str,
    duration_ms: float,
    *,
    level_low_dbm0: float = -10.0,
    twist_db: float = 0.0,
    low_offset: float = 0.0,
    high_offset: float = 0.0,
    low_offset_hz: float = 0.0,
    high_offset_hz: float = 0.0,
    low_phase: float | None = None,
    high_phase: float | None = None,
    rng: RngLike = None,
) -> FloatArray:
    """One DTMF tone: float32 array of ``ms_to_samples(duration_ms)`` samples at 8 kHz.

    The low-group sine is at ``level_low_dbm0``; the high-group sine at
    ``level_low_dbm0 + twist_db`` (twist = high minus low, Q.24 convention). Each frequency is
    ``nominal_hz * (1 + offset) + offset_hz`` (``offset`` relative, e.g. +0.015 = +1.5 %;
    ``offset_hz`` absolute). Starting phases (radians) are the given ones, else drawn uniformly
    from ``rng``; with ``rng=None`` and no phase given the phase is 0.
    Raises ValueError for an unknown key or a negative duration.
    """
    nominal_low_hz, nominal_high_hz = dtmf_frequencies_hz(key)
    low_hz = nominal_low_hz * (1.0 + low_offset) + low_offset_hz
    high_hz = nominal_high_hz * (1.0 + high_offset) + high_offset_hz
    if rng is None:
        phases = (0.0 if low_phase is None else low_phase, 0.0 if high_phase is None else high_phase)
    else:
        generator = _rng(rng)
        drawn = generator.uniform(0.0, 2.0 * math.pi, size=2)
        phases = (
            float(drawn[0]) if low_phase is None else low_phase,
            float(drawn[1]) if high_phase is None else high_phase,
        )
    t_s = np.arange(ms_to_samples(duration_ms), dtype=np.float64) / SAMPLE_RATE_HZ
    low = dbm0_to_peak(level_low_dbm0) * np.sin(2.0 * math.pi * low_hz * t_s + phases[0])
    high = dbm0_to_peak(level_low_dbm0 + twist_db) * np.sin(2.0 * math.pi * high_hz * t_s + phases[1])
    return (low + high).astype(np.float32)


@dataclass(frozen=True)
class DtmfSpec:
    """Parameters of one DTMF tone, as taken by :func:`dtmf_tone` (see there for meanings)."""

    level_low_dbm0: float = -10.0
    twist_db: float = 0.0
    low_offset: float = 0.0
    high_offset: float = 0.0
    low_offset_hz: float = 0.0
    high_offset_hz: float = 0.0

    def tone_kwargs(self) -> dict[str, float]:
        """The keyword arguments of :func:`dtmf_tone` this spec stands for."""
        return {
            "level_low_dbm0": self.level_low_dbm0,
            "twist_db": self.twist_db,
            "low_offset": self.low_offset,
            "high_offset": self.high_offset,
            "low_offset_hz": self.low_offset_hz,
            "high_offset_hz": self.high_offset_hz,
        }


@dataclass(frozen=True)
class Segment:
    """A piece of a test sequence: a DTMF tone (``key`` set) or silence (``key`` None).

    ``duration_ms`` is the whole span. A tone may have a break (silence) of ``break_ms``
    starting ``break_at_ms`` after its start (default: centred); the break does not split the
    digit in the truth.
    """

    key: str | None
    duration_ms: float
    spec: DtmfSpec = field(default_factory=DtmfSpec)
    break_ms: float = 0.0
    break_at_ms: float | None = None


@dataclass(frozen=True)
class ToneTruth:
    """Where a generated digit is: samples ``[start_sample, end_sample)`` of the sequence.

    ``breaks`` lists the silent ``(start_sample, end_sample)`` gaps inside the tone, if any.
    """

    key: str
    start_sample: int
    end_sample: int
    breaks: tuple[tuple[int, int], ...] = ()

    @property
    def duration_samples(self) -> int:
        """Span of the tone in samples, breaks included."""
        return self.end_sample - self.start_sample


def render_segments(segments: Sequence[Segment], *, rng: RngLike = None) -> tuple[FloatArray, list[ToneTruth]]:
    """Concatenate ``segments`` into one float32 signal at 8 kHz and return it with its truth.

    Tone phases are drawn from ``rng`` (None: seed 0). Raises ValueError if a break does not
    fit inside its tone.
    """
    generator = _rng(rng)
    pieces: list[FloatArray] = []
    truth: list[ToneTruth] = []
    position = 0
    for segment in segments:
        n_samples = ms_to_samples(segment.duration_ms)
        if segment.key is None:
            pieces.append(np.zeros(n_samples, dtype=np.float32))
        else:
            tone = dtmf_tone(segment.key, segment.duration_ms, rng=generator, **segment.spec.tone_kwargs())
            breaks: tuple[tuple[int, int], ...] = ()
            if segment.break_ms > 0:
                break_samples = ms_to_samples(segment.break_ms)
                if segment.break_at_ms is None:
                    break_start = (n_samples - break_samples) // 2
                else:
                    break_start = ms_to_samples(segment.break_at_ms)
                if break_start <= 0 or break_start + break_samples >= n_samples:
                    raise ValueError(
                        f"break of {segment.break_ms} ms at {segment.break_at_ms} ms "
                        f"does not fit inside a {segment.duration_ms} ms tone"
                    )
                tone[break_start : break_start + break_samples] = 0.0
                breaks = ((position + break_start, position + break_start + break_samples),)
            pieces.append(tone)
            truth.append(ToneTruth(segment.key.upper(), position, position + n_samples, breaks))
        position += n_samples
    samples = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    return samples.astype(np.float32, copy=False), truth


def dtmf_sequence(
    keys: str,
    on_ms: float = 60.0,
    off_ms: float = 60.0,
    lead_ms: float = 100.0,
    tail_ms: float = 100.0,
    *,
    break_ms: float = 0.0,
    break_at_ms: float | None = None,
    rng: RngLike = None,
    **tone_kwargs: Any,
) -> tuple[FloatArray, list[ToneTruth]]:
    """A keypad sequence: ``lead_ms`` silence, each key for ``on_ms`` separated by ``off_ms``, ``tail_ms``.

    ``on_ms`` is the whole span of each tone including a break of ``break_ms`` (placed at
    ``break_at_ms`` from the tone start, default centred). ``tone_kwargs`` are the level,
    twist and offset arguments of :func:`dtmf_tone`, applied to every tone. Returns float32
    samples at 8 kHz and one :class:`ToneTruth` per key with exact sample positions.
    """
    spec = DtmfSpec(**tone_kwargs)
    segments: list[Segment] = [Segment(None, lead_ms)]
    for index, key in enumerate(keys):
        if index:
            segments.append(Segment(None, off_ms))
        segments.append(Segment(key, on_ms, spec, break_ms, break_at_ms))
    segments.append(Segment(None, tail_ms))
    return render_segments(segments, rng=rng)


# --------------------------------------------------------------------------- utilities


def add_white_noise(x: npt.ArrayLike, snr_db: float, *, reference_dbm0: float, rng: RngLike = None) -> FloatArray:
    """Return ``x`` plus white Gaussian noise over 0-4 kHz, as float32.

    The noise's mean-square power is exactly ``snr_db`` below that of a sine at
    ``reference_dbm0`` (the realised noise is rescaled to the target power, so measured SNR
    equals the request). Pass the level of one DTMF component as reference for Q.24's
    "per tone" SNR.
    """
    signal = np.asarray(x, dtype=np.float64)
    noise = _rng(rng).standard_normal(signal.shape)
    if noise.size:
        target_power = dbm0_to_power(reference_dbm0) / 10.0 ** (snr_db / 10.0)
        noise *= math.sqrt(target_power / float(np.mean(noise**2)))
    return (signal + noise).astype(np.float32)


def dial_tone(duration_ms: float, level_dbm0: float = -13.0) -> FloatArray:
    """Precise dial tone (350 Hz + 440 Hz, each sine at ``level_dbm0``), float32 at 8 kHz."""
    t_s = np.arange(ms_to_samples(duration_ms), dtype=np.float64) / SAMPLE_RATE_HZ
    peak = dbm0_to_peak(level_dbm0)
    return (peak * (np.sin(2 * math.pi * 350.0 * t_s) + np.sin(2 * math.pi * 440.0 * t_s))).astype(np.float32)


def mix(*signals: npt.ArrayLike) -> FloatArray:
    """Sum 1-D signals sample by sample; shorter ones are padded with zeros at the end. float32."""
    arrays = [np.asarray(s, dtype=np.float64).reshape(-1) for s in signals]
    length = max((a.size for a in arrays), default=0)
    total = np.zeros(length, dtype=np.float64)
    for array in arrays:
        total[: array.size] += array
    return total.astype(np.float32)


def clip_int16(x: npt.ArrayLike) -> FloatArray:
    """Clip float audio to what int16 can hold: [-32768/32768, 32767/32768]. float32."""
    return np.clip(np.asarray(x, dtype=np.float32), -1.0, 32767.0 / _INT16_SCALE).astype(np.float32)


def to_int16(x: npt.ArrayLike) -> npt.NDArray[np.int16]:
    """Float audio (full scale +/-1.0) to int16: scale by 32768, round, clip. NaN becomes 0."""
    scaled = np.nan_to_num(np.asarray(x, dtype=np.float64) * _INT16_SCALE, nan=0.0, posinf=32767, neginf=-32768)
    return np.clip(np.rint(scaled), -32768, 32767).astype(np.int16)


def from_int16(x: npt.ArrayLike) -> FloatArray:
    """int16 samples to float32 audio on the +/-1.0 scale (value / 32768)."""
    return (np.asarray(x, dtype=np.float32) / np.float32(_INT16_SCALE)).astype(np.float32)


def _telephone_channel(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The 300-3400 Hz passband of a telephone channel (G.712 send filter), 4th-order Butterworth."""
    sos = sps.butter(4, [300.0, 3400.0], btype="bandpass", fs=SAMPLE_RATE_HZ, output="sos")
    return np.asarray(sps.sosfilt(sos, x), dtype=np.float64)


def _normalise(x: npt.NDArray[np.float64], level_dbm0: float) -> FloatArray:
    """Scale ``x`` so its mean-square power is that of a sine at ``level_dbm0``; clip to int16 range."""
    power = float(np.mean(x**2)) if x.size else 0.0
    if power > 0.0:
        x = x * math.sqrt(dbm0_to_power(level_dbm0) / power)
    return clip_int16(x)


# --------------------------------------------------------------------------- speech-like

# Formant targets (F1, F2, F3 in Hz) of English vowels for an adult male voice
# (Peterson & Barney 1952); scaled per speaker for shorter vocal tracts.
_VOWEL_FORMANTS_HZ: tuple[tuple[float, float, float], ...] = (
    (270.0, 2290.0, 3010.0),  # i  (beet)
    (390.0, 1990.0, 2550.0),  # I  (bit)
    (530.0, 1840.0, 2480.0),  # E  (bet)
    (660.0, 1720.0, 2410.0),  # ae (bat)
    (730.0, 1090.0, 2440.0),  # a  (father)
    (570.0, 840.0, 2410.0),  # O  (bought)
    (440.0, 1020.0, 2240.0),  # U  (book)
    (300.0, 870.0, 2240.0),  # u  (boot)
    (520.0, 1190.0, 2390.0),  # V  (but)
    (490.0, 1350.0, 1690.0),  # 3  (bird)
)
_BLOCK_SAMPLES = 40  # 5 ms: formant and pitch parameters are updated at this rate


def _resonator_coefficients(
    freq_hz: float, bandwidth_hz: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Formant resonator ``(b, a)``: the analogue two-pole section, bilinear-transformed.

    Unit gain at 0 Hz and a zero at 4 kHz, like an analogue cascade formant synthesiser. (The
    plain digital two-pole resonator is avoided: near 4 kHz its mirror pole builds a peak some
    25 dB too high.) The centre frequency is pre-warped so the peak lands on ``freq_hz``.
    """
    k = 2.0 * SAMPLE_RATE_HZ
    omega = k * math.tan(math.pi * freq_hz / SAMPLE_RATE_HZ)
    beta = 2.0 * math.pi * bandwidth_hz
    a0 = k * k + beta * k + omega * omega
    a = np.array([1.0, (2.0 * omega * omega - 2.0 * k * k) / a0, (k * k - beta * k + omega * omega) / a0])
    b = omega * omega / a0 * np.array([1.0, 2.0, 1.0])
    return b, a


def _time_varying_resonator(
    x: npt.NDArray[np.float64], freq_hz: npt.NDArray[np.float64], bandwidth_hz: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Filter ``x`` block by block through a resonator whose centre follows ``freq_hz`` (one per block)."""
    out = np.empty_like(x)
    state = np.zeros(2)
    for block, (f_hz, bw_hz) in enumerate(zip(freq_hz, bandwidth_hz, strict=True)):
        start = block * _BLOCK_SAMPLES
        stop = min(start + _BLOCK_SAMPLES, x.size)
        if start >= stop:
            break
        b, a = _resonator_coefficients(float(f_hz), float(bw_hz))
        out[start:stop], state = sps.lfilter(b, a, x[start:stop], zi=state)
    return out


def _glottal_source(f0_hz: npt.NDArray[np.float64], rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """Glottal flow derivative for a per-sample f0 track: jittered pulse train with spectral tilt."""
    n = f0_hz.size
    # Cycle-to-cycle jitter (~1.5 %) and shimmer (~10 %): perturb each period as it is emitted.
    pulses = np.zeros(n)
    position = 0.0
    while position < n:
        index = int(position)
        period = SAMPLE_RATE_HZ / f0_hz[index] * (1.0 + 0.015 * rng.standard_normal())
        fraction = position - index
        amplitude = 1.0 + 0.1 * rng.standard_normal()
        pulses[index] += amplitude * (1.0 - fraction)  # split the impulse over two samples
        if index + 1 < n:
            pulses[index + 1] += amplitude * fraction
        position += max(period, 8.0)
    # Glottal flow: two real poles near 100 Hz (-12 dB/octave); lip radiation: first difference (+6).
    pole = math.exp(-2.0 * math.pi * 100.0 / SAMPLE_RATE_HZ)
    flow = sps.lfilter([1.0], np.convolve([1.0, -pole], [1.0, -pole]), pulses)
    return np.diff(flow, prepend=0.0)


def _smooth_track(values: npt.NDArray[np.float64], blocks: int) -> npt.NDArray[np.float64]:
    """Moving-average smoothing over ``blocks`` blocks (articulator inertia)."""
    if blocks <= 1:
        return values
    kernel = np.ones(blocks) / blocks
    padded = np.concatenate([np.full(blocks, values[0]), values, np.full(blocks, values[-1])])
    return np.convolve(padded, kernel, mode="same")[blocks:-blocks]


def _bandpass_noise(n: int, low_hz: float, high_hz: float, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    high_hz = min(high_hz, _NYQUIST_HZ - 100.0)
    sos = sps.butter(4, [low_hz, high_hz], btype="bandpass", fs=SAMPLE_RATE_HZ, output="sos")
    return np.asarray(sps.sosfilt(sos, rng.standard_normal(n)), dtype=np.float64)


def speech_like(duration_ms: float, rng: RngLike = None, *, level_dbm0: float = -20.0) -> FloatArray:
    """A synthetic talker: float32 at 8 kHz, long-term power of a sine at ``level_dbm0``.

    A source-filter model: a glottal pulse train (speaker f0 drawn in 90-250 Hz, intonation
    contour, cycle jitter and shimmer) through 3-5 cascaded formant resonators whose targets
    move from vowel to vowel, shaped by a syllabic envelope (syllables of 80-350 ms, pauses
    and phrase breaks), plus noise bursts for fricatives and plosive releases, heard through a
    300-3400 Hz telephone channel. It is talk-off material: nothing in it steers clear of DTMF
    frequencies.
    """
    generator = _rng(rng)
    n = ms_to_samples(duration_ms)
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    n_blocks = -(-n // _BLOCK_SAMPLES)

    # Speaker: base pitch, vocal-tract scale (higher voices have shorter tracts), formant count.
    base_f0_hz = generator.uniform(90.0, 250.0)
    tract_scale = 1.0 + 0.2 * (base_f0_hz - 90.0) / 160.0
    n_formants = int(generator.integers(3, 6))

    envelope = np.zeros(n)
    voicing = np.zeros(n)
    frication_band_hz: list[tuple[int, int, float, float]] = []
    vowel_per_block = np.zeros(n_blocks, dtype=np.int64)
    f0_contour = np.zeros(n_blocks)

    position = int(generator.integers(0, ms_to_samples(150) + 1))
    phrase_f0_hz = base_f0_hz
    while position < n:
        # One phrase of 2-8 syllables with falling intonation (declination).
        n_syllables = int(generator.integers(2, 9))
        phrase_f0_hz = base_f0_hz * generator.uniform(0.9, 1.2)
        for syllable in range(n_syllables):
            if position >= n:
                break
            length = ms_to_samples(generator.uniform(80.0, 350.0))
            stop = min(position + length, n)
            t = np.linspace(0.0, 1.0, stop - position, endpoint=False)
            attack = generator.uniform(0.1, 0.3)
            shape = np.minimum(1.0, t / attack) * np.clip((1.0 - t) / (1.0 - attack), 0.0, 1.0) ** 0.7
            stress = generator.uniform(0.4, 1.0)
            envelope[position:stop] = np.maximum(envelope[position:stop], stress * shape)
            voicing[position:stop] = 1.0
            first_block, last_block = position // _BLOCK_SAMPLES, -(-stop // _BLOCK_SAMPLES)
            vowel_per_block[first_block:last_block] = generator.integers(0, len(_VOWEL_FORMANTS_HZ))
            declination = 1.0 - 0.15 * syllable / max(n_syllables - 1, 1)
            f0_contour[first_block:last_block] = phrase_f0_hz * declination * generator.uniform(0.92, 1.12)
            # Fricative or plosive release at onset or coda, sometimes.
            if generator.random() < 0.45:
                fric_len = ms_to_samples(generator.uniform(40.0, 140.0) if generator.random() < 0.7 else 15.0)
                at_onset = generator.random() < 0.6
                fric_start = max(position - fric_len // 2, 0) if at_onset else max(stop - fric_len // 2, 0)
                fric_stop = min(fric_start + fric_len, n)
                kind = generator.integers(0, 3)
                band = ((2600.0, 3900.0), (1700.0, 3500.0), (400.0, 3800.0))[int(kind)]
                frication_band_hz.append((fric_start, fric_stop, band[0], band[1]))
            position = stop + ms_to_samples(generator.uniform(0.0, 60.0))
        position += ms_to_samples(generator.uniform(150.0, 500.0))  # phrase break / breath

    # Per-block pitch with slow wander, then per-sample f0.
    f0_contour[f0_contour == 0.0] = base_f0_hz
    f0_contour = _smooth_track(f0_contour, 8) * (1.0 + 0.03 * _smooth_track(generator.standard_normal(n_blocks), 20))
    f0_per_sample = np.repeat(np.clip(f0_contour, 70.0, 320.0), _BLOCK_SAMPLES)[:n]
    source = _glottal_source(f0_per_sample, generator)
    aspiration = 0.02 * generator.standard_normal(n)
    excitation = (source + aspiration) * voicing

    # Formant tracks: vowel targets per block, smoothed for coarticulation, with slight jitter.
    # Formants keep at least 250 Hz apart and under staggered ceilings (the top one 3.75 kHz):
    # coinciding resonators would build a peak no vocal tract makes.
    targets = np.array(_VOWEL_FORMANTS_HZ)[vowel_per_block] * tract_scale
    fourth = np.full(n_blocks, 3300.0 * min(tract_scale, 1.05))
    fifth = np.full(n_blocks, 3650.0)
    tracks = [targets[:, 0], targets[:, 1], targets[:, 2], fourth, fifth][:n_formants]
    bandwidths_hz = (70.0, 100.0, 150.0, 250.0, 300.0)
    voiced = excitation
    below = np.zeros(n_blocks)
    for index, track in enumerate(tracks):
        smooth = _smooth_track(track, 12) * (1.0 + 0.01 * generator.standard_normal(n_blocks))
        ceiling_hz = 3750.0 - 300.0 * (n_formants - 1 - index)
        smooth = np.clip(np.maximum(smooth, below + 250.0), 150.0, ceiling_hz)
        below = smooth
        bandwidth = np.full(n_blocks, bandwidths_hz[index]) * generator.uniform(0.8, 1.3)
        voiced = _time_varying_resonator(voiced, smooth, bandwidth)
    voiced *= envelope

    # Fricatives sit 3-15 dB below the vowels around them.
    active = envelope > 0.2
    vowel_rms = math.sqrt(float(np.mean(voiced[active] ** 2))) if active.any() else 1.0
    noise = np.zeros(n)
    for start, stop, low_hz, high_hz in frication_band_hz:
        length = stop - start
        if length < 4:
            continue
        burst = _bandpass_noise(length, low_hz, high_hz, generator) * np.hanning(length)
        burst_rms = math.sqrt(float(np.mean(burst**2))) or 1.0
        noise[start:stop] += burst * (vowel_rms / burst_rms) * 10.0 ** (-generator.uniform(3.0, 15.0) / 20.0)
    combined = voiced + noise
    return _normalise(_telephone_channel(combined), level_dbm0)


# --------------------------------------------------------------------------- music-like


def _note(f0_hz: float, length: int, instrument: str, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """One note of ``instrument`` ("piano", "strings", "organ", "pluck"): harmonics below 3.9 kHz."""
    if length < 2:
        return np.zeros(length)
    t_s = np.arange(length) / SAMPLE_RATE_HZ
    max_harmonic = max(1, int((_NYQUIST_HZ - 100.0) // f0_hz))
    harmonics = np.arange(1, max_harmonic + 1, dtype=np.float64)
    if instrument == "piano":
        inharmonicity = rng.uniform(1e-4, 5e-4)
        freqs_hz = f0_hz * harmonics * np.sqrt(1.0 + inharmonicity * harmonics**2)
        amps = harmonics ** -rng.uniform(1.0, 1.6) * rng.uniform(0.6, 1.0, harmonics.size)
        decay_s = rng.uniform(0.6, 1.8) / harmonics**0.6
        envelope = np.minimum(1.0, t_s / 0.004)[:, None] * np.exp(-t_s[:, None] / decay_s[None, :])
        vibrato = np.zeros(length)
    elif instrument == "pluck":
        freqs_hz = f0_hz * harmonics
        amps = harmonics ** -rng.uniform(0.8, 1.4) * rng.uniform(0.5, 1.0, harmonics.size)
        decay_s = rng.uniform(0.3, 0.9) / harmonics**0.8
        envelope = np.minimum(1.0, t_s / 0.002)[:, None] * np.exp(-t_s[:, None] / decay_s[None, :])
        vibrato = np.zeros(length)
    else:
        freqs_hz = f0_hz * harmonics
        if instrument == "strings":
            amps = harmonics**-1.0 * rng.uniform(0.5, 1.0, harmonics.size)
            attack_s, release_s = rng.uniform(0.06, 0.18), rng.uniform(0.08, 0.2)
            vibrato = 0.005 * np.sin(2 * math.pi * rng.uniform(4.5, 6.5) * t_s + rng.uniform(0, 2 * math.pi))
            vibrato *= np.minimum(1.0, t_s / 0.3)  # vibrato develops after the attack
        else:  # organ: a few strong partials, steady
            amps = np.where(harmonics <= 8, rng.uniform(0.2, 1.0, harmonics.size), 0.0) / harmonics**0.5
            attack_s, release_s = 0.02, 0.05
            vibrato = np.zeros(length)
        hold = np.minimum(1.0, t_s / attack_s) * np.clip((t_s[-1] - t_s) / release_s, 0.0, 1.0)
        envelope = np.repeat(hold[:, None], harmonics.size, axis=1)
    keep = freqs_hz < _NYQUIST_HZ - 50.0
    phases = rng.uniform(0.0, 2.0 * math.pi, harmonics.size)[keep]
    # Instantaneous phase: integrate frequency (vibrato is a relative deviation).
    base_phase = 2.0 * math.pi * np.cumsum(1.0 + vibrato) / SAMPLE_RATE_HZ
    partials = np.sin(base_phase[:, None] * freqs_hz[keep][None, :] + phases[None, :])
    return np.asarray((partials * envelope[:, keep] * amps[keep][None, :]).sum(axis=1), dtype=np.float64)


def music_like(duration_ms: float, rng: RngLike = None, *, level_dbm0: float = -20.0) -> FloatArray:
    """Synthetic music: float32 at 8 kHz, long-term power of a sine at ``level_dbm0``.

    Melody, chords and a bass line in a random key and tempo (60-140 bpm), played by
    harmonic-rich instruments (piano with inharmonic decaying partials, plucked strings, bowed
    strings with vibrato, organ), heard through a 300-3400 Hz telephone channel. Every partial
    below 3.9 kHz is kept; notes are equal-tempered, so pairs near DTMF frequencies do occur,
    as in real hold music.
    """
    generator = _rng(rng)
    n = ms_to_samples(duration_ms)
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    out = np.zeros(n)
    beat = ms_to_samples(60000.0 / generator.uniform(60.0, 140.0))
    tonic = int(generator.integers(45, 57))  # MIDI A2..G#3
    scale = np.array([0, 2, 4, 5, 7, 9, 11]) if generator.random() < 0.6 else np.array([0, 2, 3, 5, 7, 8, 10])
    chord_instrument = str(generator.choice(["piano", "strings", "organ"]))
    melody_instrument = str(generator.choice(["piano", "strings", "pluck", "organ"]))

    def midi_to_hz(midi: float) -> float:
        return 440.0 * math.pow(2.0, (midi - 69) / 12.0)

    position = 0
    degree = 0
    while position < n:
        # A chord every bar (4 beats): root position triad or seventh, in the lower octave.
        root = int(generator.choice([0, 3, 4, 5, 0, 4]))
        chord_len = min(beat * 4, n - position)
        chord_degrees = [root, root + 2, root + 4] + ([root + 6] if generator.random() < 0.3 else [])
        for chord_degree in chord_degrees:
            midi = tonic + 12 + scale[chord_degree % 7] + 12 * (chord_degree // 7)
            chord_note = _note(midi_to_hz(midi), chord_len, chord_instrument, generator)
            out[position : position + chord_len] += 0.35 * chord_note
        # Bass: the chord root an octave below, on beats one and three.
        bass_midi = tonic + scale[root % 7]
        for half in (0, 2 * beat):
            bass_start = position + half
            bass_len = min(2 * beat, n - bass_start)
            if bass_len > 0:
                bass_note = _note(midi_to_hz(bass_midi), bass_len, "pluck", generator)
                out[bass_start : bass_start + bass_len] += 0.5 * bass_note
        # Melody over the bar: stepwise motion with leaps, notes of 1/2 to 2 beats.
        bar_end = position + beat * 4
        note_start = position
        while note_start < min(bar_end, n):
            note_len = min(int(beat * generator.choice([0.5, 1.0, 1.0, 1.5, 2.0])), n - note_start)
            degree = int(np.clip(degree + generator.choice([-2, -1, -1, 0, 1, 1, 2, 4, -4]), -3, 12))
            if generator.random() < 0.1:  # rest
                note_start += note_len
                continue
            midi = tonic + 24 + scale[degree % 7] + 12 * (degree // 7)
            out[note_start : note_start + note_len] += _note(midi_to_hz(midi), note_len, melody_instrument, generator)
            note_start += note_len
        position = bar_end
    return _normalise(_telephone_channel(out), level_dbm0)
