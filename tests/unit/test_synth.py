"""Tests of the test-signal generators (dtmfguard.synth): frequencies, levels, truth, SNR, determinism."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from dtmfguard import levels, synth

FS = levels.SAMPLE_RATE_HZ


def measure_peak(x: npt.ArrayLike, near_hz: float, search_hz: float = 60.0) -> tuple[float, float]:
    """(frequency_hz, level_dbm0) of the strongest sine within ``search_hz`` of ``near_hz``."""
    samples = np.asarray(x, dtype=np.float64)
    window = np.hanning(samples.size)
    n_fft = 1 << 18  # zero padding: ~0.03 Hz bins, negligible scalloping
    spectrum = np.abs(np.fft.rfft(samples * window, n_fft))
    freqs = np.fft.rfftfreq(n_fft, 1.0 / FS)
    band = np.nonzero(np.abs(freqs - near_hz) <= search_hz)[0]
    k = int(band[np.argmax(spectrum[band])])
    # Parabolic interpolation on the log magnitude.
    alpha, beta, gamma = np.log(spectrum[k - 1 : k + 2])
    delta = 0.5 * (alpha - gamma) / (alpha - 2 * beta + gamma)
    freq_hz = (k + delta) * FS / n_fft
    peak = 2.0 * float(np.exp(beta - 0.25 * (alpha - gamma) * delta)) / window.sum()
    return freq_hz, levels.peak_to_dbm0(peak)


@pytest.mark.parametrize("key", list(levels.DTMF_KEYS))
def test_every_key_has_its_frequencies_and_level(key: str) -> None:
    x = synth.dtmf_tone(key, 1000, level_low_dbm0=-10.0, rng=np.random.default_rng(1))
    assert x.dtype == np.float32
    assert x.shape == (8000,)
    low_hz, high_hz = levels.dtmf_frequencies_hz(key)
    for nominal_hz in (low_hz, high_hz):
        f_hz, level_dbm0 = measure_peak(x, nominal_hz)
        assert f_hz == pytest.approx(nominal_hz, abs=0.5)
        assert level_dbm0 == pytest.approx(-10.0, abs=0.2)


@pytest.mark.parametrize(
    ("kwargs", "low_hz", "high_hz", "low_dbm0", "high_dbm0"),
    [
        ({"low_offset": 0.015, "high_offset": -0.015}, 852 * 1.015, 1477 * 0.985, -10.0, -10.0),
        ({"low_offset": -0.035, "high_offset": 0.035}, 852 * 0.965, 1477 * 1.035, -10.0, -10.0),
        ({"low_offset_hz": 2.0, "high_offset_hz": -2.0}, 854.0, 1475.0, -10.0, -10.0),
        ({"low_offset": 0.015, "low_offset_hz": 2.0}, 852 * 1.015 + 2.0, 1477.0, -10.0, -10.0),
        ({"level_low_dbm0": -20.0, "twist_db": 4.0}, 852.0, 1477.0, -20.0, -16.0),
        ({"level_low_dbm0": -3.0, "twist_db": -8.0}, 852.0, 1477.0, -3.0, -11.0),
        ({"level_low_dbm0": -45.0}, 852.0, 1477.0, -45.0, -45.0),
    ],
)
def test_offsets_levels_and_twist(
    kwargs: dict[str, float], low_hz: float, high_hz: float, low_dbm0: float, high_dbm0: float
) -> None:
    x = synth.dtmf_tone("9", 1000, rng=np.random.default_rng(7), **kwargs)
    f_low, l_low = measure_peak(x, low_hz)
    f_high, l_high = measure_peak(x, high_hz)
    assert f_low == pytest.approx(low_hz, abs=0.5)
    assert f_high == pytest.approx(high_hz, abs=0.5)
    assert l_low == pytest.approx(low_dbm0, abs=0.2)
    assert l_high == pytest.approx(high_dbm0, abs=0.2)


def test_given_phases_are_used() -> None:
    x = synth.dtmf_tone("1", 10, low_phase=math.pi / 2, high_phase=math.pi / 2)
    assert x[0] == pytest.approx(2 * levels.dbm0_to_peak(-10.0), rel=1e-6)
    y = synth.dtmf_tone("1", 10)
    assert y[0] == 0.0  # no rng, no phase: phase 0


def test_duration_rounds_to_samples_and_rejects_bad_input() -> None:
    assert synth.dtmf_tone("5", 40).size == 320
    assert synth.dtmf_tone("5", 0.0625).size == 0  # half a sample rounds to even: 0
    assert synth.ms_to_samples(22.5) == 180
    with pytest.raises(ValueError):
        synth.dtmf_tone("E", 40)
    with pytest.raises(ValueError):
        synth.dtmf_tone("5", -1)


def test_sequence_truth_positions_are_exact() -> None:
    x, truth = synth.dtmf_sequence("0123456789*#ABCD", on_ms=45, off_ms=35, lead_ms=100, tail_ms=70, rng=3)
    assert [t.key for t in truth] == list("0123456789*#ABCD")
    assert x.size == 800 + 16 * 360 + 15 * 280 + 560
    for index, t in enumerate(truth):
        assert t.start_sample == 800 + index * (360 + 280)
        assert t.end_sample == t.start_sample + 360
        assert t.duration_samples == 360
    mask = np.zeros(x.size, dtype=bool)
    for t in truth:
        mask[t.start_sample : t.end_sample] = True
    assert np.all(x[~mask] == 0.0)
    for t in truth:  # every tone sounds at its first and last 5 ms
        assert np.max(np.abs(x[t.start_sample : t.start_sample + 40])) > 0.1
        assert np.max(np.abs(x[t.end_sample - 40 : t.end_sample])) > 0.1


def test_sequence_tones_have_the_right_key() -> None:
    x, truth = synth.dtmf_sequence("47#", on_ms=200, rng=5)
    for t in truth:
        low_hz, high_hz = levels.dtmf_frequencies_hz(t.key)
        tone = x[t.start_sample : t.end_sample]
        assert measure_peak(tone, low_hz, 30)[0] == pytest.approx(low_hz, abs=3)
        assert measure_peak(tone, high_hz, 30)[0] == pytest.approx(high_hz, abs=3)


def test_sequence_passes_tone_parameters() -> None:
    x, truth = synth.dtmf_sequence("5", on_ms=1000, level_low_dbm0=-25.0, twist_db=-4.0, low_offset=0.01, rng=1)
    tone = x[truth[0].start_sample : truth[0].end_sample]
    assert measure_peak(tone, 770 * 1.01)[1] == pytest.approx(-25.0, abs=0.2)
    assert measure_peak(tone, 1336)[1] == pytest.approx(-29.0, abs=0.2)


def test_break_inside_a_tone() -> None:
    x, truth = synth.dtmf_sequence("12", on_ms=90, off_ms=50, lead_ms=20, tail_ms=20, break_ms=10, rng=2)
    assert len(truth) == 2  # the break does not split the digit
    for t in truth:
        assert t.duration_samples == 720
        ((b0, b1),) = t.breaks
        assert (b0 - t.start_sample, b1 - t.start_sample) == (320, 400)  # centred
        assert np.all(x[b0:b1] == 0.0)
        assert np.max(np.abs(x[b0 - 8 : b0])) > 0.05
        assert np.max(np.abs(x[b1 : b1 + 8])) > 0.05

    x, truth = synth.dtmf_sequence("3", on_ms=100, lead_ms=0, tail_ms=0, break_ms=10, break_at_ms=30)
    assert truth[0].breaks == ((240, 320),)
    assert np.all(x[240:320] == 0.0)
    assert np.all(x[230:240] != 0.0)

    with pytest.raises(ValueError, match="does not fit"):
        synth.dtmf_sequence("3", on_ms=40, break_ms=10, break_at_ms=35)


def test_render_segments_with_per_tone_specs() -> None:
    quiet = synth.DtmfSpec(level_low_dbm0=-30.0)
    loud = synth.DtmfSpec(level_low_dbm0=-5.0, twist_db=2.0)
    x, truth = synth.render_segments(
        [synth.Segment("1", 500, quiet), synth.Segment(None, 40), synth.Segment("d", 500, loud)], rng=4
    )
    assert [(t.key, t.start_sample, t.end_sample) for t in truth] == [("1", 0, 4000), ("D", 4320, 8320)]
    assert measure_peak(x[:4000], 697)[1] == pytest.approx(-30.0, abs=0.2)
    assert measure_peak(x[4320:], 1633)[1] == pytest.approx(-3.0, abs=0.2)


@pytest.mark.parametrize("snr_db", [15.0, 20.0, 6.0])
def test_white_noise_snr(snr_db: float) -> None:
    silence = np.zeros(16000, dtype=np.float32)
    noisy = synth.add_white_noise(silence, snr_db, reference_dbm0=-20.0, rng=np.random.default_rng(9))
    assert noisy.dtype == np.float32
    measured_db = levels.dbm0_to_power(-20.0) / float(np.mean(noisy.astype(np.float64) ** 2))
    assert 10 * math.log10(measured_db) == pytest.approx(snr_db, abs=0.3)
    # White: the two halves of the band carry the same power.
    spectrum = np.abs(np.fft.rfft(noisy.astype(np.float64))) ** 2
    half = spectrum.size // 2
    assert 10 * math.log10(spectrum[:half].sum() / spectrum[half:].sum()) == pytest.approx(0.0, abs=0.3)


def test_white_noise_adds_to_the_signal() -> None:
    x, _ = synth.dtmf_sequence("5", on_ms=1000, lead_ms=0, tail_ms=0, rng=1)
    noisy = synth.add_white_noise(x, 15.0, reference_dbm0=-10.0, rng=1)
    noise = noisy.astype(np.float64) - x
    snr_db = 10 * math.log10(levels.dbm0_to_power(-10.0) / float(np.mean(noise**2)))
    assert snr_db == pytest.approx(15.0, abs=0.3)
    assert measure_peak(noisy, 770)[1] == pytest.approx(-10.0, abs=0.3)


def test_dial_tone() -> None:
    x = synth.dial_tone(1000, -13.0)
    assert x.dtype == np.float32
    assert x.size == 8000
    for f_hz in (350.0, 440.0):
        measured_hz, level_dbm0 = measure_peak(x, f_hz, 30)
        assert measured_hz == pytest.approx(f_hz, abs=0.5)
        assert level_dbm0 == pytest.approx(-13.0, abs=0.2)


def test_mix_pads_shorter_signals() -> None:
    out = synth.mix(np.ones(3), np.ones(5, dtype=np.float32), [0.5])
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [2.5, 2.0, 2.0, 1.0, 1.0])
    assert synth.mix().size == 0


def test_int16_helpers() -> None:
    clipped = synth.clip_int16(np.array([-2.0, -1.0, 0.5, 1.0, 3.0]))
    np.testing.assert_array_equal(clipped, np.array([-1.0, -1.0, 0.5, 32767 / 32768, 32767 / 32768], dtype=np.float32))
    ints = np.array([-32768, -1, 0, 1, 32767], dtype=np.int16)
    floats = synth.from_int16(ints)
    assert floats.dtype == np.float32
    np.testing.assert_array_equal(floats, ints / 32768.0)
    np.testing.assert_array_equal(synth.to_int16(floats), ints)
    np.testing.assert_array_equal(synth.to_int16([1.5, -1.5, np.nan]), np.array([32767, -32768, 0], dtype=np.int16))


def test_determinism_with_a_seed() -> None:
    a, ta = synth.dtmf_sequence("159", rng=np.random.default_rng(42))
    b, tb = synth.dtmf_sequence("159", rng=np.random.default_rng(42))
    c, _ = synth.dtmf_sequence("159", rng=np.random.default_rng(43))
    np.testing.assert_array_equal(a, b)
    assert ta == tb
    assert not np.array_equal(a, c)
    for generator in (synth.speech_like, synth.music_like):
        np.testing.assert_array_equal(generator(1500, 11), generator(1500, np.random.default_rng(11)))
        assert not np.array_equal(generator(1500, 11), generator(1500, 12))
    np.testing.assert_array_equal(
        synth.add_white_noise(np.zeros(100), 10, reference_dbm0=0, rng=5),
        synth.add_white_noise(np.zeros(100), 10, reference_dbm0=0, rng=5),
    )


@pytest.mark.parametrize("generator", [synth.speech_like, synth.music_like])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_talk_off_material_level_and_band(generator: object, seed: int) -> None:
    x = generator(8000, seed)  # type: ignore[operator]
    assert x.dtype == np.float32
    assert x.shape == (64000,)
    assert np.all(np.isfinite(x))
    assert np.max(np.abs(x)) <= 1.0
    power = float(np.mean(x.astype(np.float64) ** 2))
    assert levels.power_to_dbm0(power) == pytest.approx(-20.0, abs=0.5)
    # Most energy in the voice band, and real energy across the DTMF range.
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(x.size, 1.0 / FS)
    in_band = spectrum[(freqs >= 250) & (freqs <= 3500)].sum() / spectrum.sum()
    assert in_band > 0.95
    dtmf_band = spectrum[(freqs >= 650) & (freqs <= 1700)].sum() / spectrum.sum()
    assert dtmf_band > 0.05


def test_speech_like_has_pauses_and_pitch() -> None:
    x = synth.speech_like(10000, 3).astype(np.float64)
    frame_power = np.mean(x[: x.size // 160 * 160].reshape(-1, 160) ** 2, axis=1)
    silent = frame_power < levels.dbm0_to_power(-55.0)
    assert 0.1 < silent.mean() < 0.7  # syllables and pauses, not a drone
    # A loud voiced frame repeats at a pitch period of 32-89 samples (90-250 Hz).
    loud = int(np.argmax(frame_power))
    frame = x[loud * 160 : loud * 160 + 400]
    frame = frame - frame.mean()
    corr = np.correlate(frame, frame, mode="full")[frame.size - 1 :]
    lag = 25 + int(np.argmax(corr[25:120]))
    assert 28 <= lag <= 100
    assert corr[lag] > 0.3 * corr[0]


def test_empty_durations() -> None:
    assert synth.speech_like(0, 1).size == 0
    assert synth.music_like(0, 1).size == 0
    x, truth = synth.dtmf_sequence("", lead_ms=10, tail_ms=10)
    assert x.size == 160
    assert truth == []
