"""Reading and writing audio files and raw streams at the edge of dtmfguard.

Parses RIFF/WAVE files (Microsoft "Multimedia Programming Interface and Data Specifications
1.0" plus the WAVE_FORMAT_EXTENSIBLE header) with its own chunk walker, so that every defect
gets a precise :class:`~dtmfguard.errors.AudioFormatError` naming the file. Supported
encodings: PCM unsigned 8-bit and signed 16/24/32-bit, IEEE float 32/64-bit, and G.711 mu-law
(format 7) and A-law (format 6); any sample rate, any channel count. Everything is turned into
the internal form: float32 mono at 8000 Hz, full scale +/-1.0 (channels averaged, rate changed
with a polyphase filter, ``scipy.signal.resample_poly``). A file whose data chunk is cut short
(a recording interrupted while being written) is read up to its last whole frame and flagged
``truncated`` in the returned :class:`WavInfo`: audit and masking still see every sample there
is. Writing produces 16-bit PCM WAV (mono, or stereo for two-party recordings).
"""

from __future__ import annotations

import io
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt
from scipy import signal as sps

from dtmfguard.codecs import g711
from dtmfguard.errors import AudioFormatError
from dtmfguard.levels import SAMPLE_RATE_HZ

__all__ = [
    "WavInfo",
    "read_raw_s16le",
    "read_wav",
    "resample_to_8k",
    "write_wav",
    "write_wav_stereo",
]

FloatArray = npt.NDArray[np.float32]
PathLike = str | os.PathLike[str]

_FORMAT_PCM = 0x0001
_FORMAT_FLOAT = 0x0003
_FORMAT_ALAW = 0x0006
_FORMAT_MULAW = 0x0007
_FORMAT_EXTENSIBLE = 0xFFFE
# Sub-format GUIDs of WAVE_FORMAT_EXTENSIBLE end with this; the first two bytes are the format tag.
_KSDATAFORMAT_SUFFIX = bytes.fromhex("000000001000800000aa00389b71")
_UNBOUNDED_SIZES = (0, 0xFFFFFFFF)  # data sizes left by writers that stream or were interrupted


@dataclass(frozen=True)
class WavInfo:
    """What :func:`read_wav` found in a file and did to it.

    ``encoding`` is one of "pcm_u8", "pcm_s16", "pcm_s24", "pcm_s32", "float32", "float64",
    "ulaw", "alaw". ``source_frames`` counts frames (one sample per channel) read from the
    file; ``duration_ms`` is their duration. ``mixed_down`` says channels were averaged,
    ``resampled`` that the rate was changed to 8000 Hz, ``truncated`` that the data chunk was
    shorter than its header said (only the whole frames present were read).
    """

    path: str
    source_rate_hz: int
    channels: int
    encoding: str
    bits_per_sample: int
    source_frames: int
    duration_ms: float
    mixed_down: bool
    resampled: bool
    truncated: bool


@dataclass(frozen=True)
class _Format:
    tag: int
    channels: int
    rate_hz: int
    block_align: int
    bits_per_sample: int


def _parse_fmt(name: str, body: bytes) -> _Format:
    if len(body) < 16:
        raise AudioFormatError(f"{name}: fmt chunk too short ({len(body)} bytes, need 16)")
    tag, channels, rate_hz, _byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", body)
    if tag == _FORMAT_EXTENSIBLE:
        if len(body) < 40:
            raise AudioFormatError(f"{name}: WAVE_FORMAT_EXTENSIBLE fmt chunk too short ({len(body)} bytes)")
        sub_format = body[24:40]
        if sub_format[2:] != _KSDATAFORMAT_SUFFIX:
            raise AudioFormatError(f"{name}: unsupported WAVE_FORMAT_EXTENSIBLE sub-format {sub_format.hex()}")
        tag = struct.unpack_from("<H", sub_format)[0]
    if channels == 0:
        raise AudioFormatError(f"{name}: fmt chunk says 0 channels")
    if rate_hz == 0:
        raise AudioFormatError(f"{name}: fmt chunk says sample rate 0 Hz")
    if block_align == 0 or block_align % channels:
        raise AudioFormatError(f"{name}: block align {block_align} does not fit {channels} channel(s)")
    return _Format(tag, channels, rate_hz, block_align, bits)


def _encoding(name: str, fmt: _Format) -> str:
    container_bytes = fmt.block_align // fmt.channels
    if fmt.tag == _FORMAT_PCM:
        encodings = {1: "pcm_u8", 2: "pcm_s16", 3: "pcm_s24", 4: "pcm_s32"}
    elif fmt.tag == _FORMAT_FLOAT:
        encodings = {4: "float32", 8: "float64"}
    elif fmt.tag == _FORMAT_MULAW:
        encodings = {1: "ulaw"}
    elif fmt.tag == _FORMAT_ALAW:
        encodings = {1: "alaw"}
    else:
        raise AudioFormatError(
            f"{name}: unsupported WAV encoding (format tag 0x{fmt.tag:04x}); "
            "supported: PCM, IEEE float, G.711 mu-law and A-law"
        )
    if container_bytes not in encodings:
        raise AudioFormatError(
            f"{name}: unsupported sample size for format tag 0x{fmt.tag:04x}: "
            f"{container_bytes * 8} bits per sample ({fmt.bits_per_sample} declared)"
        )
    return encodings[container_bytes]


def _decode(data: bytes, encoding: str, channels: int) -> npt.NDArray[np.float64]:
    """Interleaved sample bytes to float64 of shape (frames, channels), full scale +/-1.0."""
    raw: npt.NDArray[np.float64]
    if encoding == "pcm_u8":
        raw = (np.frombuffer(data, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
    elif encoding == "pcm_s16":
        raw = np.frombuffer(data, dtype="<i2").astype(np.float64) / 32768.0
    elif encoding == "pcm_s24":
        triplets = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        value = triplets[:, 0] | (triplets[:, 1] << 8) | (triplets[:, 2] << 16)
        value = np.where(value & 0x800000, value - (1 << 24), value)  # sign-extend
        raw = value.astype(np.float64) / 8388608.0
    elif encoding == "pcm_s32":
        raw = np.frombuffer(data, dtype="<i4").astype(np.float64) / 2147483648.0
    elif encoding == "float32":
        raw = np.frombuffer(data, dtype="<f4").astype(np.float64)
    elif encoding == "float64":
        raw = np.frombuffer(data, dtype="<f8").astype(np.float64)
    elif encoding == "ulaw":
        raw = g711.ulaw_decode(np.frombuffer(data, dtype=np.uint8)).astype(np.float64)
    else:  # "alaw"
        raw = g711.alaw_decode(np.frombuffer(data, dtype=np.uint8)).astype(np.float64)
    return raw.reshape(-1, channels)


def resample_to_8k(samples: npt.ArrayLike, rate_hz: int) -> FloatArray:
    """Resample 1-D audio from ``rate_hz`` to 8000 Hz (polyphase, Kaiser-windowed FIR). float32.

    Returns a float32 copy unchanged when ``rate_hz`` is already 8000. Raises ValueError for a
    non-positive rate.
    """
    if rate_hz <= 0:
        raise ValueError(f"sample rate must be positive, got {rate_hz}")
    x = np.asarray(samples, dtype=np.float64)
    if rate_hz == SAMPLE_RATE_HZ or x.size == 0:
        return x.astype(np.float32)
    common = math.gcd(SAMPLE_RATE_HZ, rate_hz)
    return np.asarray(sps.resample_poly(x, SAMPLE_RATE_HZ // common, rate_hz // common), dtype=np.float32)


def read_wav(path: PathLike) -> tuple[FloatArray, WavInfo]:
    """Read a WAV file as float32 mono at 8000 Hz (full scale +/-1.0), with what was found.

    Channels are averaged; other rates are resampled. Raises AudioFormatError, naming the
    file, for: an empty file, a file that is not RIFF/WAVE, a missing or malformed fmt or data
    chunk, an unsupported encoding, a file with no whole frame of audio, and NaN or infinity
    in float data. A data chunk shorter than declared is read up to its last whole frame and
    reported with ``info.truncated``. OSError from opening the file propagates.
    """
    name = str(path)
    with open(path, "rb") as stream:
        header = stream.read(12)
        if not header:
            raise AudioFormatError(f"{name}: empty file")
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            if header[:4] in (b"RIFX", b"RF64"):
                raise AudioFormatError(f"{name}: unsupported WAV variant {header[:4].decode()} (only RIFF)")
            raise AudioFormatError(f"{name}: not a WAV file (no RIFF/WAVE header)")
        fmt: _Format | None = None
        data: bytes | None = None
        truncated = False
        while True:
            chunk_header = stream.read(8)
            if len(chunk_header) < 8:
                break
            chunk_id = chunk_header[:4]
            (size,) = struct.unpack("<I", chunk_header[4:])
            if chunk_id == b"data":
                if fmt is None:
                    raise AudioFormatError(f"{name}: data chunk before fmt chunk")
                if size in _UNBOUNDED_SIZES:
                    # Size never filled in: take the rest of the file. A zero means the
                    # writer stopped before finishing the header, so say it was cut short.
                    data = stream.read()
                    truncated = size == 0 and len(data) > 0
                else:
                    data = stream.read(size)
                    truncated = len(data) < size
                break
            body = stream.read(size + (size & 1))  # chunks are padded to an even size
            if chunk_id == b"fmt ":
                fmt = _parse_fmt(name, body[:size])
    if fmt is None:
        raise AudioFormatError(f"{name}: no fmt chunk")
    if data is None:
        raise AudioFormatError(f"{name}: no data chunk")
    encoding = _encoding(name, fmt)
    frames = len(data) // fmt.block_align
    if frames == 0:
        raise AudioFormatError(f"{name}: no audio samples (data chunk holds {len(data)} bytes)")
    if len(data) % fmt.block_align:
        truncated = True  # a partial last frame: drop it
    sample_bytes = fmt.block_align // fmt.channels
    interleaved = _decode(data[: frames * fmt.block_align], encoding, fmt.channels)
    if encoding.startswith("float") and not np.all(np.isfinite(interleaved)):
        bad = int(np.count_nonzero(~np.isfinite(interleaved)))
        raise AudioFormatError(f"{name}: float data holds {bad} NaN or infinite sample(s)")
    mono = interleaved.mean(axis=1) if fmt.channels > 1 else interleaved[:, 0]
    samples = resample_to_8k(mono, fmt.rate_hz)
    info = WavInfo(
        path=name,
        source_rate_hz=fmt.rate_hz,
        channels=fmt.channels,
        encoding=encoding,
        bits_per_sample=sample_bytes * 8,
        source_frames=frames,
        duration_ms=1000.0 * frames / fmt.rate_hz,
        mixed_down=fmt.channels > 1,
        resampled=fmt.rate_hz != SAMPLE_RATE_HZ,
        truncated=truncated,
    )
    return samples, info


def read_raw_s16le(source: bytes | bytearray | memoryview | BinaryIO) -> FloatArray:
    """Raw signed 16-bit little-endian mono 8 kHz PCM (bytes, or a binary stream read to its end).

    Returns float32 on the +/-1.0 scale (value / 32768); an empty input gives an empty array.
    Raises AudioFormatError for an odd number of bytes.
    """
    data = bytes(source) if isinstance(source, bytes | bytearray | memoryview) else source.read()
    if len(data) % 2:
        raise AudioFormatError(f"raw s16le input has an odd number of bytes ({len(data)}): not 16-bit samples")
    return (np.frombuffer(data, dtype="<i2").astype(np.float32) / np.float32(32768.0)).astype(np.float32)


def _to_s16(samples: npt.ArrayLike) -> npt.NDArray[np.int16]:
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(x)):
        raise AudioFormatError("cannot write NaN or infinite samples to a WAV file")
    return np.clip(np.rint(x * 32768.0), -32768, 32767).astype(np.int16)


def _write_s16(path: PathLike, interleaved: npt.NDArray[np.int16], channels: int, rate_hz: int) -> None:
    if rate_hz <= 0:
        raise ValueError(f"sample rate must be positive, got {rate_hz}")
    payload = interleaved.astype("<i2").tobytes()
    header = io.BytesIO()
    header.write(b"RIFF" + struct.pack("<I", 36 + len(payload)) + b"WAVE")
    header.write(
        b"fmt " + struct.pack("<IHHIIHH", 16, _FORMAT_PCM, channels, rate_hz, rate_hz * 2 * channels, 2 * channels, 16)
    )
    header.write(b"data" + struct.pack("<I", len(payload)))
    Path(path).write_bytes(header.getvalue() + payload)


def write_wav(path: PathLike, samples: npt.ArrayLike, rate: int = SAMPLE_RATE_HZ) -> None:
    """Write 1-D float audio (full scale +/-1.0) as 16-bit PCM mono WAV at ``rate`` Hz.

    Samples are scaled by 32768, rounded and clipped to the int16 range. Raises
    AudioFormatError for NaN or infinite samples, ValueError for a non-positive rate.
    """
    _write_s16(path, _to_s16(samples), 1, rate)


def write_wav_stereo(path: PathLike, left: npt.ArrayLike, right: npt.ArrayLike, rate: int = SAMPLE_RATE_HZ) -> None:
    """Write two equal-length float channels as 16-bit PCM stereo WAV at ``rate`` Hz (clipping).

    Raises AudioFormatError if the channels differ in length or hold NaN/infinity.
    """
    left_s16, right_s16 = _to_s16(left), _to_s16(right)
    if left_s16.size != right_s16.size:
        raise AudioFormatError(f"stereo channels differ in length: {left_s16.size} and {right_s16.size} samples")
    _write_s16(path, np.column_stack([left_s16, right_s16]).reshape(-1), 2, rate)
