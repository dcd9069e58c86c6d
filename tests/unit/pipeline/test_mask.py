"""Masker: window bounds against the truth, modes, smooth edges, isolation, frame types."""

from __future__ import annotations

import numpy as np
import pytest

from dtmfguard import q24, synth
from dtmfguard.levels import DTMF_KEYS
from dtmfguard.pipeline.chain import CallerChain, mask_recording
from dtmfguard.pipeline.frames import AudioFrame, MaskedFrame
from dtmfguard.pipeline.mask import Masker, MaskMode, MaskSettings

ACCEPT = [c for c in q24.all_cases() if c.must_accept]


@pytest.mark.parametrize("case", ACCEPT, ids=lambda c: c.name)
def test_mask_window_covers_each_tone_tightly(case: q24.Case) -> None:
    rng = np.random.default_rng(abs(hash(case.name)) % 2**32)
    pad = int(rng.integers(0, 40))
    x = np.concatenate([np.zeros(pad, np.float32), case.samples])
    result = mask_recording(x)
    intervals = result.masked_intervals()
    for truth in case.truth:
        a, b = truth.start_sample + pad, truth.end_sample + pad
        assert result.gain[a:b].min() == 1.0, "every tone sample fully replaced"
        (window,) = [(p, q) for p, q in intervals if p < b and q > a]
        assert 0 <= a - window[0] <= 40, "starts at most 5 ms before the tone"
        assert 0 <= window[1] - b <= 160, "ends at most 20 ms after the tone"


def test_output_is_time_aligned_and_untouched_outside_masks() -> None:
    x, _ = synth.dtmf_sequence("42", on_ms=60, off_ms=300, rng=3)
    result = mask_recording(x)
    assert len(result.samples) == len(x)
    outside = result.gain == 0
    np.testing.assert_array_equal(result.samples[outside], x[outside])
    assert outside.mean() > 0.5


def _masked_segments(mode: MaskMode, key: str) -> np.ndarray:
    x, truth = synth.dtmf_sequence(key, on_ms=80, off_ms=100, rng=4, level_low_dbm0=-5)
    result = mask_recording(x, MaskSettings(mode=mode))
    t = truth[0]
    return result.samples[t.start_sample : t.end_sample]


def test_flat_tone_is_identical_for_every_key() -> None:
    segments = [_masked_segments(MaskMode.FLAT_TONE, k) for k in DTMF_KEYS]
    for seg in segments[1:]:
        np.testing.assert_allclose(seg, segments[0], atol=1e-6)
    spectrum = np.abs(np.fft.rfft(segments[0] * np.hanning(len(segments[0]))))
    peak_hz = np.argmax(spectrum) * 8000 / len(segments[0])
    assert abs(peak_hz - 500) < 15


def test_silence_mode_zeroes_the_tone() -> None:
    assert np.abs(_masked_segments(MaskMode.SILENCE, "5")).max() == 0.0


def test_comfort_noise_is_low_level_noise() -> None:
    seg = _masked_segments(MaskMode.COMFORT_NOISE, "5")
    rms = float(np.sqrt(np.mean(seg**2)))
    assert 0 < rms < 0.01


def test_edges_are_smooth() -> None:
    x, _ = synth.dtmf_sequence("8", on_ms=80, off_ms=100, rng=2, level_low_dbm0=-5)
    speech = synth.speech_like(len(x) / 8, np.random.default_rng(3), level_dbm0=-25)[: len(x)]
    y = synth.mix(x, speech)
    out = mask_recording(y).samples
    # The largest step anywhere is no bigger than the signal's own largest step plus the
    # flat tone's: no click from switching.
    flat_step = 2 * np.pi * 500 / 8000 * synth.dbm0_to_peak(-20)
    assert np.abs(np.diff(out)).max() <= np.abs(np.diff(y)).max() + flat_step


def test_channels_share_no_state() -> None:
    x, _ = synth.dtmf_sequence("1", on_ms=60, off_ms=60, rng=1)
    silent = np.zeros_like(x)
    a, b = CallerChain(), CallerChain()
    for i in range(0, len(x), 160):
        a.process(x[i : i + 160])
        out_b, _ = b.process(silent[i : i + 160])
        assert out_b.masked_samples == 0
        assert not out_b.samples.any()
    assert a.masker.windows_total == 1
    assert b.masker.windows_total == 0


def test_only_the_masker_builds_masked_frames() -> None:
    with pytest.raises(TypeError, match="only by the masker"):
        MaskedFrame(np.zeros(160, np.float32), 0, 0)
    with pytest.raises(TypeError, match="float32"):
        AudioFrame(np.zeros(160, np.float64), 0)  # type: ignore[arg-type]


def test_frames_must_be_contiguous_in_stream_time() -> None:
    masker = Masker()
    masker.process(AudioFrame(np.zeros(160, np.float32), 0))
    with pytest.raises(ValueError, match="expected 160"):
        masker.process(AudioFrame(np.zeros(160, np.float32), 320))


def test_disabled_masking_is_a_pure_delay() -> None:
    x, _ = synth.dtmf_sequence("3", on_ms=60, off_ms=60, rng=1)
    result = mask_recording(x, MaskSettings(enabled=False))
    np.testing.assert_array_equal(result.samples, x)


@pytest.mark.parametrize("delay_ms", [10, 20, 40])
def test_other_delays_still_cover_the_tone(delay_ms: int) -> None:
    x, truth = synth.dtmf_sequence("9", on_ms=60, off_ms=60, rng=1)
    x = np.concatenate([np.zeros(13, np.float32), x])
    result = mask_recording(x, MaskSettings(delay_ms=delay_ms))
    t = truth[0]
    covered = result.gain[t.start_sample + 13 : t.end_sample + 13].min()
    # One packet (20 ms) or more of delay gives a clean mask from the first sample;
    # a 10 ms line cannot see far enough ahead and must still cover most of the tone.
    if delay_ms >= 20:
        assert covered == 1.0
    else:
        assert (result.gain[t.start_sample + 13 : t.end_sample + 13] == 1.0).mean() > 0.7


def test_a_refined_start_moves_freely_until_the_window_reaches_the_output() -> None:
    from dtmfguard.pipeline.mask import refined_start

    # Nothing of the window (padded by 40) has left the delay line: the new estimate wins.
    assert refined_start(1000, 1030, out_pos=900, pre=40) == 1030
    assert refined_start(1000, 980, out_pos=900, pre=40) == 980
    # Part of it has left: the window never shrinks, it may only grow.
    assert refined_start(1000, 1030, out_pos=990, pre=40) == 1000
    assert refined_start(1000, 970, out_pos=990, pre=40) == 970


def test_an_onset_resumed_from_elsewhere_masks_once_armed() -> None:
    from dtmfguard.pipeline.detect import ToneArmed, ToneEnded

    m = Masker(MaskSettings(delay_ms=20.0))
    x = np.full(160, 0.25, np.float32)
    m.process(AudioFrame(x, 0))
    m.resume_window(200, 240, started=3)
    assert m.windows_total == 3
    out = m.process(AudioFrame(x, 160))  # not armed: audio passes
    assert out.masked_samples == 0
    m.on_events([ToneArmed(200, 360), ToneEnded(200, 600, 640)])
    out = m.process(AudioFrame(x, 320))  # samples 160..319 leave: masked from 200 - pad
    assert out.masked_samples > 0
    assert out.gain is not None
    assert out.gain[: 200 - m.pre - 160].max() == 0.0
    assert out.gain[200 - 160 :].min() > 0.0
