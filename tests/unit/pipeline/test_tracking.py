"""The compiled tone tracker against ToneTracker (the reference) on the same decisions."""

from __future__ import annotations

import numpy as np
import pytest

from dtmfguard.pipeline.detect import DigitEnded, ToneEvent, ToneTracker
from dtmfguard.pipeline.tracking import TrackerBank

# The tracker kernels run as plain Python in the NUMBA_DISABLE_JIT pass too.
pytestmark = pytest.mark.kernels


def _stream(rng: np.random.Generator, n_blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """Decisions (n_blocks, 3) and energies (float32) shaped like a channel's: silence,
    speech blips, keys with breaks, keys changing without a pause, strict windows."""
    keys = np.full((n_blocks, 3), -1, np.int8)
    energy = (rng.random(n_blocks) * 1e-4).astype(np.float32)
    b = 0
    while b < n_blocks:
        kind = rng.integers(0, 5)
        length = int(rng.integers(1, 30))
        end = min(n_blocks, b + length)
        key = int(rng.integers(0, 16))
        if kind == 0:  # nothing
            pass
        elif kind == 1:  # a blip: onsets, maybe a tone decision or two, wandering keys
            for i in range(b, end):
                if rng.random() < 0.5:
                    keys[i, 0] = rng.integers(0, 16)
                if rng.random() < 0.2:
                    keys[i, 1] = rng.integers(0, 16)
                energy[i] = rng.random() * 0.05
        else:  # a key: onset, tone, strict windows, breaks, sometimes another key
            level = float(rng.uniform(0.01, 1.0))
            for i in range(b, end):
                if rng.random() < 0.08 and kind == 4:
                    key = int(rng.integers(0, 16))
                if rng.random() < 0.1:
                    continue  # a break
                keys[i, 0] = key if rng.random() < 0.7 else -1
                keys[i, 1] = key if rng.random() < 0.8 else -1
                keys[i, 2] = key if rng.random() < 0.6 else -1
                edge = i in (b, end - 1)
                energy[i] = level * (rng.uniform(0.1, 1.0) if edge else rng.uniform(0.75, 1.25))
        b = end
    return keys, energy


def _reference(keys: np.ndarray, energy: np.ndarray, chunk: int) -> list[ToneEvent]:
    tracker = ToneTracker()
    events: list[ToneEvent] = []
    for s in range(0, len(keys), chunk):
        part = keys[s : s + chunk]
        tracker.feed(part[:, 0].tolist(), part[:, 1].tolist(), part[:, 2].tolist(),
                     energy[s : s + chunk].tolist(), events)
    tracker.flush(events)
    return events


@pytest.mark.parametrize("seed", range(6))
def test_a_batch_of_channels_gives_the_reference_events(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_channels, n_blocks = 37, 400
    streams = [_stream(rng, n_blocks) for _ in range(n_channels)]
    bank = TrackerBank(64)
    # Scattered columns, as a bank's free list hands them out.
    columns = rng.permutation(64)[:n_channels].astype(np.intp)
    trackers = [bank.open(int(c)) for c in columns]
    got: list[list[ToneEvent]] = [[] for _ in range(n_channels)]
    for s in range(0, n_blocks, 4):
        keys = np.stack([k[s : s + 4] for k, _ in streams], axis=2)  # (4, 3, n)
        energy = np.stack([e[s : s + 4] for _, e in streams], axis=1)
        for j, events in bank.run(columns, keys, energy).items():
            got[j].extend(events)
    for j, tracker in enumerate(trackers):
        tracker.flush(got[j])
    digits = 0
    for j, (keys, energy) in enumerate(streams):
        want = _reference(keys, energy, 4)
        assert got[j] == want, f"channel {j}"
        digits += sum(isinstance(e, DigitEnded) for e in want)
    assert digits > 20  # the streams exercise digit confirmation, not just onsets


def test_one_channel_through_the_tracker_interface_in_odd_chunks() -> None:
    rng = np.random.default_rng(11)
    keys, energy = _stream(rng, 900)
    tracker = TrackerBank(4).open(2)
    events: list[ToneEvent] = []
    s = 0
    while s < len(keys):
        n = int(rng.integers(1, 9))
        part = keys[s : s + n]
        tracker.feed(part[:, 0].tolist(), part[:, 1].tolist(), part[:, 2].tolist(), energy[s : s + n], events)
        s += n
    assert tracker.block == len(keys)
    tracker.flush(events)
    assert events == _reference(keys, energy, 7)
    assert not tracker.active


def test_idle_matches_feeding_no_decisions_and_refuses_an_open_run() -> None:
    rng = np.random.default_rng(3)
    keys, energy = _stream(rng, 200)
    keys[:20] = -1
    bank = TrackerBank(2)
    a, b = bank.open(0), bank.open(1)
    quiet = energy[:20]
    a.idle(quiet[4:], skip=4)  # the energies of the first four no longer matter
    none = [-1] * 20
    b.feed(none, none, none, quiet, [])
    assert a.block == b.block == 20
    ea: list[ToneEvent] = []
    eb: list[ToneEvent] = []
    for t, events in ((a, ea), (b, eb)):
        t.feed(keys[20:, 0].tolist(), keys[20:, 1].tolist(), keys[20:, 2].tolist(), energy[20:], events)
    assert ea == eb
    assert ea
    b.feed([3], [3], [3], [1.0], [])
    assert b.active
    with pytest.raises(ValueError, match="open run"):
        b.idle([0.0])


def test_reset_and_growth_keep_columns_apart() -> None:
    rng = np.random.default_rng(5)
    keys, energy = _stream(rng, 120)
    bank = TrackerBank(2)
    t0 = bank.open(0)
    t0.feed([5, 5], [5, 5], [5, 5], [1.0, 1.0], [])
    bank.grow(8)
    assert t0.active
    assert t0.block == 2
    t7 = bank.open(7)
    events: list[ToneEvent] = []
    t7.feed(keys[:, 0].tolist(), keys[:, 1].tolist(), keys[:, 2].tolist(), energy, events)
    t7.flush(events)
    assert events == _reference(keys, energy, 120)
    assert t0.active
    assert t0.block == 2
    t0.reset()
    assert not t0.active
    assert t0.block == 0


def test_mismatched_shapes_are_refused() -> None:
    bank = TrackerBank(2)
    with pytest.raises(ValueError, match="do not match"):
        bank.run(np.array([0, 1], np.intp), np.full((4, 3, 2), -1, np.int8), np.zeros((4, 1), np.float32))


def test_only_selected_channels_advance() -> None:
    rng = np.random.default_rng(8)
    streams = [_stream(rng, 40) for _ in range(3)]
    bank = TrackerBank(3)
    trackers = [bank.open(c) for c in range(3)]
    keys = np.stack([k[:4] for k, _ in streams], axis=2)
    energy = np.stack([e[:4] for _, e in streams], axis=1)
    bank.run(np.arange(3, dtype=np.intp), keys, energy, select=np.array([1, 0, 1], np.uint8))
    assert [t.block for t in trackers] == [4, 0, 4]
