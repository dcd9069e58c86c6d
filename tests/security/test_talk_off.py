"""Talk-off on real recorded speech (Debian's asterisk-core-sounds-en-wav, about 25 min)."""

from __future__ import annotations

import numpy as np
import pytest

from dtmfguard import corpus
from dtmfguard.pipeline.chain import mask_recording
from dtmfguard.pipeline.detect import DigitEnded


@pytest.fixture(scope="module")
def recordings() -> list[np.ndarray]:
    if not corpus.speech_corpus_available():
        pytest.fail("the recorded-speech corpus (asterisk-core-sounds-en-wav) is not installed")
    return [x for _, x in corpus.load_speech_corpus()]


def test_corpus_is_the_whole_set(recordings: list[np.ndarray]) -> None:
    minutes = sum(len(x) for x in recordings) / 8000 / 60
    assert minutes > 20


def test_no_false_digit_and_little_speech_masked(recordings: list[np.ndarray]) -> None:
    total = masked = 0
    false_digits = []
    for x in recordings:
        result = mask_recording(x)
        total += len(x)
        masked += int(np.count_nonzero(result.gain))
        false_digits += [e for e in result.events if isinstance(e, DigitEnded)]
    assert false_digits == []
    # Measured 0.044 % on this corpus (0.29 % before the relative-peak test moved to a
    # 30 ms window); the target was 0.1 %. The bound guards against regressions.
    assert masked / total < 0.0005
