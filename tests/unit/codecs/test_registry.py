"""Payload-type registry: kinds per SDP, static G.711 numbers, the per-packet encoder."""

from __future__ import annotations

import numpy as np

from dtmfguard.codecs.g711 import alaw_encode, ulaw_encode
from dtmfguard.codecs.registry import PCMA, PCMU, PayloadKind, PayloadTypes


def test_kinds_follow_the_sdp_names() -> None:
    types = PayloadTypes({0: "PCMU", 8: "pcma", 18: "G729", 96: "opus", 101: "telephone-event"})
    assert types.kind(0) is PayloadKind.AUDIO
    assert types.codec(8) is PCMA
    assert types.kind(101) is PayloadKind.EVENT
    assert types.kind(18) is PayloadKind.OTHER
    assert types.kind(96) is PayloadKind.OTHER
    assert types.codec(18) is None


def test_static_g711_needs_no_rtpmap_and_the_event_type_may_be_given_apart() -> None:
    types = PayloadTypes({}, telephone_event_pt=97)
    assert types.codec(0) is PCMU
    assert types.codec(8) is PCMA
    assert types.kind(97) is PayloadKind.EVENT
    assert types.payload_type_for("TELEPHONE-EVENT") == 97
    assert types.payload_type_for("G722") is None


def test_g711_at_another_clock_rate_is_not_decoded() -> None:
    types = PayloadTypes({96: "PCMU/16000"})
    assert types.kind(96) is PayloadKind.OTHER


def test_the_fast_encoder_is_bit_exact_with_g711() -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(200_000) * 0.4).astype(np.float32)
    x[:8] = [1.0, -1.0, 0.99999, -0.99999, 3.0, -3.0, 0.0, -0.0]
    assert PCMU.encode(x) == ulaw_encode(x).tobytes()
    assert PCMA.encode(x) == alaw_encode(x).tobytes()


def test_odd_values_encode_safely() -> None:
    x = np.array([np.nan, np.inf, -np.inf], np.float32)
    assert PCMU.encode(x) == ulaw_encode(np.array([0.0, 1.0, -1.0])).tobytes()


def test_silence_and_round_trip() -> None:
    assert PCMU.silence(3) == b"\xff\xff\xff"
    assert PCMA.silence(2) == b"\xd5\xd5"
    tone = (0.3 * np.sin(np.arange(160) * 0.3)).astype(np.float32)
    np.testing.assert_allclose(PCMU.decode(PCMU.encode(tone)), tone, atol=0.01)
