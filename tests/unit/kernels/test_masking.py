"""Masking kernels against their NumPy twins, bit for bit, and the masker's gain against
the NumPy expression it replaced (also beyond the kernels' exact range)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from dtmfguard.kernels.masking import (
    EXACT_POSITION,
    mix_frame,
    mix_reference,
    ramp_gain,
    ramp_gain_reference,
    ramp_table,
)
from dtmfguard.pipeline.detect import ToneArmed, ToneEnded, ToneStarted
from dtmfguard.pipeline.frames import AudioFrame
from dtmfguard.pipeline.mask import Masker, MaskMode, MaskSettings

pytestmark = pytest.mark.kernels


def _bits(a: npt.NDArray[np.float32]) -> npt.NDArray[np.uint32]:
    return a.view(np.uint32)


@pytest.mark.parametrize("ramp", [1, 12, 16, 20, 23])
def test_ramp_gain_matches_the_numpy_expression(ramp: int) -> None:
    rng = np.random.default_rng(ramp)
    table = ramp_table(ramp)
    for _ in range(300):
        n = int(rng.choice([160, 80, 1, 37]))
        start = int(rng.integers(-400, 4000))
        lo = start + int(rng.integers(-3 * ramp - n, n + 3 * ramp))
        hi = None if rng.random() < 0.3 else lo + int(rng.integers(0, 4 * ramp + n))
        gain = np.empty(n, np.float32)
        ramp_gain(gain, start, lo, hi, table, False)
        np.testing.assert_array_equal(_bits(gain), _bits(ramp_gain_reference(start, n, lo, hi, ramp)))
        # combined with a second window: the element-wise maximum
        lo2 = start + int(rng.integers(-n, n))
        hi2 = lo2 + int(rng.integers(0, 3 * ramp))
        expected = np.maximum(gain, ramp_gain_reference(start, n, lo2, hi2, ramp))
        ramp_gain(gain, start, lo2, hi2, table, True)
        np.testing.assert_array_equal(_bits(gain), _bits(expected))


def test_ramp_gain_near_the_end_of_the_exact_range() -> None:
    table = ramp_table(16)
    start = EXACT_POSITION - 160
    for lo, hi in [(start + 5, None), (start - 10, start + 100), (start + 150, EXACT_POSITION)]:
        gain = np.empty(160, np.float32)
        ramp_gain(gain, start, lo, hi, table, False)
        np.testing.assert_array_equal(_bits(gain), _bits(ramp_gain_reference(start, 160, lo, hi, 16)))


def test_ramp_table_rises_from_zero_to_one() -> None:
    table = ramp_table(16)
    assert table.dtype == np.float32
    assert table.shape == (17,)
    assert table[0] == 0.0
    assert table[-1] == 1.0
    assert np.all(np.diff(table) > 0)
    with pytest.raises(ValueError, match="at least 1"):
        ramp_table(0)


def test_mix_matches_the_numpy_expression() -> None:
    rng = np.random.default_rng(7)
    table = ramp_table(16)
    for _ in range(200):
        n = int(rng.choice([160, 40, 3]))
        x = (rng.standard_normal(n) * rng.choice([0.01, 0.3, 2.0])).astype(np.float32)
        x[rng.random(n) < 0.05] = -0.0
        gain = table[rng.integers(0, 17, n)]
        gain[rng.random(n) < 0.2] = 0.0
        repl = (rng.standard_normal(n + 20) * 0.1).astype(np.float32)
        offset = int(rng.integers(0, 21))
        expected, count = mix_reference(x, gain, repl[offset : offset + n])
        out = x.copy()
        assert mix_frame(out, gain, repl, offset) == count
        np.testing.assert_array_equal(_bits(out), _bits(expected))


def test_mix_refuses_short_inputs() -> None:
    out = np.zeros(160, np.float32)
    with pytest.raises(ValueError, match="160 samples"):
        mix_frame(out, np.zeros(160, np.float32), np.zeros(170, np.float32), 16)
    with pytest.raises(ValueError, match="160 samples"):
        mix_frame(out, np.zeros(150, np.float32), np.zeros(170, np.float32), 0)


def _gain_reference(masker: Masker, start: int, n: int) -> npt.NDArray[np.float32] | None:
    """The masker's window loop as it was written with NumPy alone (all ones, exactly
    when one window covers the whole frame past its ramps)."""
    g = None
    end_out = start + n
    for w in masker._windows:
        if not w.armed and w.end is None:
            continue
        lo = w.start - masker.pre
        hi = None if w.end is None else w.end + masker.post
        if lo >= end_out or (hi is not None and hi <= start):
            continue
        if lo + masker.ramp <= start and (hi is None or hi - masker.ramp >= end_out):
            return np.ones(n, np.float32)
        gw = ramp_gain_reference(start, n, lo, hi, masker.ramp)
        g = gw if g is None else np.maximum(g, gw)
    return g


@pytest.mark.parametrize("base", [0, EXACT_POSITION - 2000, EXACT_POSITION + 3 * 2**20, 2**31 - 1000])
@pytest.mark.parametrize("mode", [MaskMode.FLAT_TONE, MaskMode.SILENCE])
def test_masker_frames_match_the_numpy_masker(base: int, mode: MaskMode) -> None:
    """Random windows, including streams far past the kernels' exact range (a long call)."""
    rng = np.random.default_rng(base % 1000)
    masker = Masker(MaskSettings(mode=mode))
    masker._in_pos = base  # as if the stream had run this long
    for step in range(120):
        pos = masker._in_pos
        start = pos - masker.delay
        if step % 6 == 0:
            onset = start + int(rng.integers(-40, 200))
            events: list[object] = [ToneStarted(onset, onset)]
            if rng.random() < 0.5:
                events.append(ToneArmed(onset, onset))
            if rng.random() < 0.5:
                events.append(ToneEnded(onset, onset + int(rng.integers(1, 500)), onset))
            masker.on_events(events)  # type: ignore[arg-type]
        x = (rng.standard_normal(160) * 0.1).astype(np.float32)
        delayed = masker._buf.copy()
        expected_gain = _gain_reference(masker, start, 160) if masker._windows else None
        frame = masker.process(AudioFrame(x, pos))
        if expected_gain is None:
            assert frame.gain is None
            np.testing.assert_array_equal(frame.samples, delayed)
            continue
        assert frame.gain is not None
        np.testing.assert_array_equal(_bits(frame.gain), _bits(expected_gain))
        repl = masker._replacement(start, 160)
        expected, count = mix_reference(delayed, expected_gain, repl)
        if frame.gain is masker._ones.get(160):
            assert expected_gain.min() == 1.0
            expected = repl  # wholly masked: the replacement itself
        assert frame.masked_samples == count
        np.testing.assert_array_equal(_bits(frame.samples), _bits(expected))


def test_gain_edges_match_the_numpy_expression() -> None:
    from dtmfguard.kernels.masking import gain_edges, gain_edges_reference

    rng = np.random.default_rng(11)
    table = ramp_table(16)
    edges = np.empty(160, np.intp)
    for n in (1, 2, 80, 160):
        for _ in range(100):
            gain = table[rng.integers(0, 17, n)]
            gain[rng.random(n) < rng.random()] = 0.0
            count = gain_edges(gain, edges)
            np.testing.assert_array_equal(edges[:count], gain_edges_reference(gain))
    with pytest.raises(ValueError, match="need 159 slots"):
        gain_edges(np.zeros(160, np.float32), np.empty(100, np.intp))
