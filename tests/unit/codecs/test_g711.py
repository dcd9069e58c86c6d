"""Bit-exactness of dtmfguard.codecs.g711 against the ITU G.711 reference (audioop)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dtmfguard.codecs import g711

with warnings.catch_warnings():
    # audioop is deprecated (removed in 3.13) but is the reference here, in tests only.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = np.arange(256, dtype=np.uint8)


def test_ulaw_encode_matches_reference_for_every_int16() -> None:
    expected = np.frombuffer(audioop.lin2ulaw(ALL_INT16.tobytes(), 2), dtype=np.uint8)
    np.testing.assert_array_equal(g711.ulaw_encode(ALL_INT16 / 32768.0), expected)


def test_alaw_encode_matches_reference_for_every_int16() -> None:
    expected = np.frombuffer(audioop.lin2alaw(ALL_INT16.tobytes(), 2), dtype=np.uint8)
    np.testing.assert_array_equal(g711.alaw_encode(ALL_INT16 / 32768.0), expected)


def test_ulaw_decode_matches_reference_for_every_code() -> None:
    expected = np.frombuffer(audioop.ulaw2lin(ALL_CODES.tobytes(), 2), dtype=np.int16)
    np.testing.assert_array_equal(g711.ulaw_decode_int16(ALL_CODES), expected)
    decoded = g711.ulaw_decode(ALL_CODES)
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, (expected / 32768.0).astype(np.float32))


def test_alaw_decode_matches_reference_for_every_code() -> None:
    expected = np.frombuffer(audioop.alaw2lin(ALL_CODES.tobytes(), 2), dtype=np.int16)
    np.testing.assert_array_equal(g711.alaw_decode_int16(ALL_CODES), expected)
    decoded = g711.alaw_decode(ALL_CODES)
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, (expected / 32768.0).astype(np.float32))


def test_known_codes() -> None:
    # Silence: mu-law 0xFF (positive zero), A-law 0xD5.
    assert g711.ulaw_encode(np.zeros(1))[0] == 0xFF
    assert g711.alaw_encode(np.zeros(1))[0] == 0xD5
    # Full-scale peaks: mu-law 32124, A-law 32256.
    assert g711.ulaw_decode_int16(np.array([0x80]))[0] == 32124
    assert g711.alaw_decode_int16(np.array([0xAA]))[0] == 32256
    assert g711.ulaw_encode(np.array([1.0]))[0] == 0x80
    assert g711.ulaw_encode(np.array([-1.0]))[0] == 0x00


@given(hnp.arrays(np.float64, st.integers(0, 400), elements=st.floats(-1.5, 1.5)))
def test_float_input_matches_reference_after_rounding(x: np.ndarray) -> None:
    pcm = np.clip(np.rint(x * 32768.0), -32768, 32767).astype(np.int16).tobytes()
    np.testing.assert_array_equal(g711.ulaw_encode(x), np.frombuffer(audioop.lin2ulaw(pcm, 2), dtype=np.uint8))
    np.testing.assert_array_equal(g711.alaw_encode(x), np.frombuffer(audioop.lin2alaw(pcm, 2), dtype=np.uint8))


def test_decode_is_a_fixed_point_of_roundtrip() -> None:
    for law, decode in (("ulaw", g711.ulaw_decode), ("alaw", g711.alaw_decode)):
        levels = decode(ALL_CODES)
        np.testing.assert_array_equal(g711.roundtrip(levels, law), levels)  # type: ignore[arg-type]


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_roundtrip_snr_of_a_sine(law: g711.Law) -> None:
    n = np.arange(8000)
    x = (0.5 * np.sin(2 * np.pi * 1004 * n / 8000)).astype(np.float32)  # 1004 Hz: not sample-synchronous
    y = g711.roundtrip(x, law)
    assert y.dtype == np.float32
    assert y.shape == x.shape
    snr_db = 10 * np.log10(np.sum(x.astype(np.float64) ** 2) / np.sum((x - y).astype(np.float64) ** 2))
    assert snr_db > 35.0  # G.712 asks about 35 dB of a loud sine through one codec pair


def test_shapes_are_kept() -> None:
    x = np.zeros((3, 5), dtype=np.float32)
    assert g711.ulaw_encode(x).shape == (3, 5)
    assert g711.alaw_decode(g711.alaw_encode(x)).shape == (3, 5)
    assert g711.ulaw_encode(np.zeros(0)).shape == (0,)


def test_nan_and_out_of_range_floats_saturate() -> None:
    codes = g711.ulaw_encode(np.array([np.nan, 5.0, -5.0, np.inf, -np.inf]))
    assert list(codes) == [0xFF, 0x80, 0x00, 0x80, 0x00]


def test_unknown_law_raises() -> None:
    with pytest.raises(ValueError, match="law"):
        g711.roundtrip(np.zeros(4), "g722")  # type: ignore[arg-type]


def test_codes_out_of_range_raise() -> None:
    with pytest.raises(ValueError):
        g711.ulaw_decode(np.array([256]))
    with pytest.raises(ValueError):
        g711.alaw_decode(np.array([-1]))
    assert g711.ulaw_decode([0, 255]).dtype == np.float32


def test_payload_decoders_match_the_array_decoders() -> None:
    payload = bytes(range(256)) * 2
    pairs = ((g711.ulaw_decode_payload, g711.ulaw_decode), (g711.alaw_decode_payload, g711.alaw_decode))
    for by_payload, by_array in pairs:
        out = by_payload(payload)
        assert out.dtype == np.float32
        assert out.flags.writeable
        np.testing.assert_array_equal(out, by_array(np.frombuffer(payload, np.uint8)))
