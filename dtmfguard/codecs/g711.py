"""G.711 mu-law and A-law companding, vectorised with lookup tables.

Implements ITU-T G.711 (11/88) sections 2 and 3 bit-exactly: mu-law works on the
14-bit and A-law on the 13-bit linear range of the standard, reached from 16-bit
PCM by an arithmetic right shift (the convention of the classic reference
implementation, so results agree with every telephony stack's 16-bit API).
Audio is float32 on the dtmfguard scale (full scale +/-1.0 = int16 / 32768);
codes are uint8 as they travel in RTP payload types 0 (PCMU) and 8 (PCMA).
Decoding uses a 256-entry table, encoding a 65536-entry table indexed by the
int16 sample, both built once at import time. One packet of float32 audio (the media
path's case) is encoded by a small compiled loop over that table: scale, clip and round
per sample, then one lookup, with no temporaries (the NumPy table path, kept for any
other input, is its twin and gives the same codes).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt
from numba import njit, types

__all__ = [
    "Law",
    "alaw_decode",
    "alaw_decode_int16",
    "alaw_decode_payload",
    "alaw_encode",
    "float_to_int16",
    "roundtrip",
    "ulaw_decode",
    "ulaw_decode_int16",
    "ulaw_decode_payload",
    "ulaw_encode",
]

Law = Literal["ulaw", "alaw"]

_INT16_SCALE = 32768.0


def _build_ulaw_decode_table() -> npt.NDArray[np.int16]:
    code = ~np.arange(256, dtype=np.int32) & 0xFF  # codes are sent inverted
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    # 14-bit magnitude: ((2 * mantissa + 33) << exponent) - 33, scaled to 16 bits.
    magnitude = (((mantissa << 1) + 33) << exponent) - 33
    linear = np.where(code & 0x80, -magnitude, magnitude) << 2
    return linear.astype(np.int16)


def _build_alaw_decode_table() -> npt.NDArray[np.int16]:
    code = np.arange(256, dtype=np.int32) ^ 0x55  # even bits are sent inverted
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    # 13-bit magnitude: segment 0 is linear; segment s >= 1 is (2m + 33) << (s - 1).
    magnitude = np.where(
        exponent == 0,
        (mantissa << 1) + 1,
        ((mantissa << 1) + 33) << np.maximum(exponent - 1, 0),
    )
    linear = np.where(code & 0x80, magnitude, -magnitude) << 3
    return linear.astype(np.int16)


def _segment(magnitude: npt.NDArray[np.int32], first_end: int) -> npt.NDArray[np.int32]:
    """Index of the first segment end (first_end, 2*first_end+1, ...) >= magnitude; 8 if none."""
    ends = (first_end + 1) * (1 << np.arange(8, dtype=np.int32)) - 1
    return np.searchsorted(ends, magnitude, side="left").astype(np.int32)


def _build_ulaw_encode_table() -> npt.NDArray[np.uint8]:
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 2  # 14-bit linear
    negative = pcm < 0
    magnitude = np.minimum(np.abs(pcm), 8159) + 33  # clip, then add the bias
    seg = _segment(magnitude, 0x3F)
    mantissa = (magnitude >> (seg + 1)) & 0x0F
    code = np.where(seg >= 8, 0x7F, (seg << 4) | mantissa)  # beyond the last segment: saturate
    code = np.where(negative, code ^ 0x7F, code ^ 0xFF)
    return code.astype(np.uint8)


def _build_alaw_encode_table() -> npt.NDArray[np.uint8]:
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 3  # 13-bit linear
    negative = pcm < 0
    magnitude = np.where(negative, -pcm - 1, pcm)  # one's-complement style magnitude
    seg = _segment(magnitude, 0x1F)
    mantissa = np.where(seg < 2, magnitude >> 1, magnitude >> np.maximum(seg, 1)) & 0x0F
    code = np.where(seg >= 8, 0x7F, (seg << 4) | mantissa)  # beyond the last segment: saturate
    code = np.where(negative, code ^ 0x55, code ^ 0xD5)
    return code.astype(np.uint8)


_ULAW_DECODE = _build_ulaw_decode_table()
_ALAW_DECODE = _build_alaw_decode_table()
_ULAW_DECODE_F32 = (_ULAW_DECODE / _INT16_SCALE).astype(np.float32)
_ALAW_DECODE_F32 = (_ALAW_DECODE / _INT16_SCALE).astype(np.float32)
_ULAW_ENCODE = _build_ulaw_encode_table()
_ALAW_ENCODE = _build_alaw_encode_table()
for _table in (_ULAW_DECODE, _ALAW_DECODE, _ULAW_DECODE_F32, _ALAW_DECODE_F32, _ULAW_ENCODE, _ALAW_ENCODE):
    _table.flags.writeable = False


@njit(
    [
        types.void(
            types.Array(types.float32, 1, layout, readonly=ro),
            types.Array(types.uint8, 1, "C", readonly=True),
            types.uint8[::1],
        )
        for layout in ("C", "A") for ro in (False, True)
    ],
    cache=True, nogil=True, error_model="numpy", boundscheck=False,
)
def _encode_float32(samples, table, out):  # type: ignore[no-untyped-def]  # numba kernel
    # Same arithmetic as float_to_int16 + table lookup: scaling by 2**15 is exact in
    # float32, so clipping and rounding (half to even) there give the same int16.
    for i in range(samples.shape[0]):
        v = samples[i] * np.float32(_INT16_SCALE)
        if v != v:  # NaN
            v = np.float32(0.0)
        elif v > np.float32(32767.0):
            v = np.float32(32767.0)
        elif v < np.float32(-32768.0):
            v = np.float32(-32768.0)
        out[i] = table[np.int32(np.rint(v)) + 32768]


def _encode(samples: npt.ArrayLike, table: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    if isinstance(samples, np.ndarray) and samples.dtype == np.float32 and samples.ndim == 1:
        out = np.empty(samples.shape[0], np.uint8)
        _encode_float32(samples, table, out)
        return out
    return table[float_to_int16(samples).view(np.uint16) ^ 0x8000]


def float_to_int16(samples: npt.ArrayLike) -> npt.NDArray[np.int16]:
    """Convert float audio (full scale +/-1.0) to int16: scale by 32768, round half to even, clip.

    NaN becomes 0. The output has the input's shape.
    """
    x = np.asarray(samples, dtype=np.float64) * _INT16_SCALE
    x = np.nan_to_num(x, nan=0.0, posinf=32767.0, neginf=-32768.0)
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def _codes(codes: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    array = np.asarray(codes)
    if array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError("G.711 codes must be in 0..255")
        array = array.astype(np.uint8)
    return array


def ulaw_encode(samples: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """Encode float audio (any shape, full scale +/-1.0) to mu-law codes (uint8, same shape)."""
    return _encode(samples, _ULAW_ENCODE)


def alaw_encode(samples: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """Encode float audio (any shape, full scale +/-1.0) to A-law codes (uint8, same shape)."""
    return _encode(samples, _ALAW_ENCODE)


def ulaw_decode(codes: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Decode mu-law codes (uint8 or ints in 0..255, any shape) to float32 audio of the same shape.

    Raises ValueError for values outside 0..255.
    """
    return _ULAW_DECODE_F32[_codes(codes)]


def alaw_decode(codes: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Decode A-law codes (uint8 or ints in 0..255, any shape) to float32 audio of the same shape.

    Raises ValueError for values outside 0..255.
    """
    return _ALAW_DECODE_F32[_codes(codes)]


def ulaw_decode_payload(payload: bytes) -> npt.NDArray[np.float32]:
    """Decode one RTP payload of mu-law codes to float32 audio (a new array, one sample
    per byte): :func:`ulaw_decode` of its bytes, without the checks a code array needs."""
    return _ULAW_DECODE_F32[np.frombuffer(payload, np.uint8)]


def alaw_decode_payload(payload: bytes) -> npt.NDArray[np.float32]:
    """Decode one RTP payload of A-law codes to float32 audio (a new array, one sample
    per byte): :func:`alaw_decode` of its bytes, without the checks a code array needs."""
    return _ALAW_DECODE_F32[np.frombuffer(payload, np.uint8)]


def ulaw_decode_int16(codes: npt.ArrayLike) -> npt.NDArray[np.int16]:
    """Decode mu-law codes to int16 linear PCM (same shape)."""
    return _ULAW_DECODE[_codes(codes)]


def alaw_decode_int16(codes: npt.ArrayLike) -> npt.NDArray[np.int16]:
    """Decode A-law codes to int16 linear PCM (same shape)."""
    return _ALAW_DECODE[_codes(codes)]


def roundtrip(samples: npt.ArrayLike, law: Law) -> npt.NDArray[np.float32]:
    """Return float audio after one G.711 encode and decode with ``law`` ("ulaw" or "alaw").

    Raises ValueError for any other law.
    """
    if law == "ulaw":
        return ulaw_decode(ulaw_encode(samples))
    if law == "alaw":
        return alaw_decode(alaw_encode(samples))
    raise ValueError(f"unknown G.711 law {law!r}; expected 'ulaw' or 'alaw'")
