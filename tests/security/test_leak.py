"""Leak proof: masked audio fed to independent DTMF decoders (multimon-ng, spandsp).

The decoders are Debian's multimon-ng and libspandsp's ``dtmf_rx`` (driven through
ctypes). Each test first shows that the decoders do find the digits in the unmasked
signal, so a silent decoder cannot make the leak check pass by itself.
"""

from __future__ import annotations

import numpy as np
import pytest

from dtmfguard import corpus, q24, synth
from dtmfguard.pipeline.chain import mask_recording
from tests.support.decoders import multimon_digits, spandsp_digits
from tests.support.masking import stress_sequences

ACCEPT = [c for c in q24.all_cases() if c.must_accept]
TEST_PAN = "4111111111111111"


def _wide_spandsp(x: np.ndarray) -> str:
    # spandsp's defaults are narrower than Q.24; widen them so it hears all it can.
    return spandsp_digits(x, twist_db=10, reverse_twist_db=8, threshold_dbm0=-50)


def test_decoders_hear_the_unmasked_acceptance_set() -> None:
    heard = sum(len(multimon_digits(c.samples)) for c in ACCEPT)
    # multimon-ng misses some twist and level cases by design; it still hears most.
    assert heard >= 0.7 * sum(len(c.expected) for c in ACCEPT)
    assert sum(len(_wide_spandsp(c.samples)) for c in ACCEPT) > 0


@pytest.mark.parametrize("case", ACCEPT, ids=lambda c: c.name)
def test_masked_acceptance_set_decodes_to_nothing(case: q24.Case) -> None:
    pad = 23  # off the 5 ms grid
    x = np.concatenate([np.zeros(pad, np.float32), case.samples])
    masked = mask_recording(x).samples
    assert multimon_digits(masked) == ""
    assert _wide_spandsp(masked) == ""
    assert spandsp_digits(masked) == ""


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    if not corpus.speech_corpus_available():
        pytest.fail("the recorded-speech corpus (asterisk-core-sounds-en-wav) is not installed")
    parts = [x for _, x in zip(range(40), (s for _, s in corpus.load_speech_corpus()), strict=False)]
    return np.concatenate(parts)


@pytest.mark.parametrize("speech_db", [-20.0, -10.0, -5.0, 0.0])
def test_card_number_typed_over_speech_does_not_leak(speech: np.ndarray, speech_db: float) -> None:
    rng = np.random.default_rng(int(-speech_db))
    leaked = heard = 0
    for i in range(3):
        tones, _ = synth.dtmf_sequence(TEST_PAN, on_ms=70, off_ms=80, lead_ms=300, rng=rng,
                                       level_low_dbm0=-12.0)
        seg = speech[i * 60_000 : i * 60_000 + len(tones)]
        tone_power = 2 * synth.dbm0_to_power(-12.0)
        gain = np.sqrt(tone_power / np.mean(seg**2) * 10 ** (speech_db / 10))
        y = synth.clip_int16(tones + seg * gain)
        heard += len(multimon_digits(y))
        masked = mask_recording(y).samples
        leaked += len(multimon_digits(masked)) + len(_wide_spandsp(masked))
    assert heard >= 16  # the decoders could hear the number before masking
    assert leaked == 0


@pytest.mark.parametrize("speech_db", [-5.0, 0.0])
def test_random_keys_typed_under_loud_speech_do_not_leak(speech: np.ndarray, speech_db: float) -> None:
    # 128 random keys at -12 dBm0 per tone. Each tone is decoded on its own (from 30 ms
    # before to 30 ms after it), so a decoder's talk-off on the speech is not counted.
    heard = leaked = 0
    for y, truth in stress_sequences(speech, speech_db, varied=False, reps=8):
        masked = mask_recording(y).samples
        for t in truth:
            a, b = max(t.start_sample - 240, 0), t.end_sample + 240
            heard += t.key in multimon_digits(y[a:b])
            leaked += (t.key in multimon_digits(masked[a:b])) + (t.key in _wide_spandsp(masked[a:b]))
    assert heard >= 96  # multimon-ng hears most keys before masking
    assert leaked == 0
