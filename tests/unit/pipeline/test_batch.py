"""DetectorBank: many channels per kernel run, each with CallerChain's exact result."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from dtmfguard import synth
from dtmfguard.pipeline.batch import FRAME_SAMPLES, DetectorBank
from dtmfguard.pipeline.chain import CallerChain
from dtmfguard.pipeline.detect import DigitConfirmed, ToneEvent


def _channel_audio(i: int, seconds: float = 2.0) -> npt.NDArray[np.float32]:
    n = int(seconds * 8000)
    if i % 3 == 0:
        keys, _ = synth.dtmf_sequence("0123456789"[i % 10] + "5#", on_ms=70, off_ms=90, rng=i)
        speech = synth.speech_like(seconds * 1000, rng=i, level_dbm0=-30)
        x = np.zeros(n, np.float32)
        x[: len(keys)] += keys[:n]
        return (x + speech[:n]).astype(np.float32)
    if i % 3 == 1:
        return synth.speech_like(seconds * 1000, rng=i).astype(np.float32)[:n]
    return np.zeros(n, np.float32)


def _reference(x: npt.NDArray[np.float32], chunks: list[int]) -> tuple[list[npt.NDArray[np.float32]], list[ToneEvent]]:
    chain = CallerChain()
    out, events, pos = [], [], 0
    for size in chunks:
        frame, ev = chain.process(x[pos : pos + size])
        out.append(frame.samples)
        events.extend(ev)
        pos += size
    return out, events


def test_batched_channels_match_caller_chain_exactly() -> None:
    n_ch = 7
    audio = [_channel_audio(i) for i in range(n_ch)]
    n_frames = len(audio[0]) // FRAME_SAMPLES
    bank: DetectorBank = DetectorBank(capacity=4)  # grows while channels open
    channels = [bank.open() for _ in range(n_ch)]
    outs: list[list[npt.NDArray[np.float32]]] = [[] for _ in range(n_ch)]
    events: list[list[ToneEvent]] = [[] for _ in range(n_ch)]
    for f in range(n_frames):
        for i, ch in enumerate(channels):
            # Channel 1 skips a tick now and then and catches up on the next (jitter).
            if i == 1 and f % 5 == 1:
                continue
            if i == 1 and f % 5 == 2:
                ch.submit(audio[i][(f - 1) * FRAME_SAMPLES : f * FRAME_SAMPLES], f - 1)
            ch.submit(audio[i][f * FRAME_SAMPLES : (f + 1) * FRAME_SAMPLES], f)
        bank.run()
        for i, ch in enumerate(channels):
            for result in ch.take_results():
                assert result.error is None
                assert result.frame is not None
                outs[i].append(result.frame.samples)
                events[i].extend(result.events)
    assert bank.capacity >= n_ch
    for i in range(n_ch):
        ref_out, ref_events = _reference(audio[i], [FRAME_SAMPLES] * n_frames)
        assert events[i] == ref_events, i
        np.testing.assert_array_equal(np.concatenate(outs[i]), np.concatenate(ref_out))
    assert any(isinstance(e, DigitConfirmed) for e in events[0])


def test_odd_frame_sizes_run_alone_with_the_same_result() -> None:
    x = _channel_audio(3)
    sizes = [160, 160, 80, 240, 100, 60, 160, 320] * 20
    sizes = sizes[: np.searchsorted(np.cumsum(sizes), len(x))]
    bank: DetectorBank = DetectorBank(capacity=2)
    other = bank.open()
    ch = bank.open()
    out, events, pos = [], [], 0
    for size in sizes:
        ch.submit(x[pos : pos + size], None)
        other.submit(np.zeros(FRAME_SAMPLES, np.float32), None)
        pos += size
        bank.run()
        other.take_results()
        for r in ch.take_results():
            assert r.frame is not None
            out.append(r.frame.samples)
            events.extend(r.events)
    ref_out, ref_events = _reference(x, sizes)
    assert events == ref_events
    np.testing.assert_array_equal(np.concatenate(out), np.concatenate(ref_out))
    tail, tail_events = ch.flush()
    ref_chain = CallerChain()
    p = 0
    for size in sizes:
        ref_chain.process(x[p : p + size])
        p += size
    ref_tail, ref_tail_events = ref_chain.flush()
    assert tail_events == ref_tail_events
    np.testing.assert_array_equal(tail.samples, ref_tail.samples)


def test_reused_column_starts_clean() -> None:
    x = _channel_audio(0)
    bank: DetectorBank = DetectorBank(capacity=1)
    first = bank.open()
    for f in range(20):
        first.process(x[f * FRAME_SAMPLES : (f + 1) * FRAME_SAMPLES])
    first.close()
    second = bank.open()
    assert second.column == first.column
    out = []
    events: list[ToneEvent] = []
    for f in range(len(x) // FRAME_SAMPLES):
        second.submit(x[f * FRAME_SAMPLES : (f + 1) * FRAME_SAMPLES], f)
        bank.run()
        for r in second.take_results():
            assert r.frame is not None
            out.append(r.frame.samples)
            events.extend(r.events)
    ref_out, ref_events = _reference(x, [FRAME_SAMPLES] * (len(x) // FRAME_SAMPLES))
    assert events == ref_events
    np.testing.assert_array_equal(np.concatenate(out), np.concatenate(ref_out))


def test_closed_channel_drops_its_frames_and_frees_the_column() -> None:
    bank: DetectorBank = DetectorBank(capacity=2)
    ch = bank.open()
    ch.submit(np.zeros(FRAME_SAMPLES, np.float32), 1)
    ch.close()
    assert bank.run() == 0
    assert bank.open_channels == 0
    with pytest.raises(RuntimeError):
        ch.submit(np.zeros(FRAME_SAMPLES, np.float32), 2)


def test_a_failing_frame_fails_closed_with_the_frames_after_it() -> None:
    bank: DetectorBank = DetectorBank(capacity=2)
    ch = bank.open()
    ch.submit(np.zeros(FRAME_SAMPLES, np.float32), "a")
    ch.submit(np.full(FRAME_SAMPLES, np.nan, np.float32)[:0], "b")  # empty: the masker accepts it
    ch.submit(np.zeros(FRAME_SAMPLES, np.float32), "c")

    def boom(*_: object) -> None:
        raise RuntimeError("masker failed")

    ch.masker.on_events = boom  # type: ignore[method-assign]
    bank.run()
    results = ch.take_results()
    assert [r.tag for r in results] == ["a", "b", "c"]
    assert all(r.frame is None and r.error is not None for r in results)


def test_compact_batches_pad_little_and_a_bank_keeps_a_few_of_them() -> None:
    from dtmfguard.pipeline.batch import COMPACT_SIZES, compact_size

    for n in range(1, 3000):
        size = compact_size(n)
        assert size >= n
        assert size % 16 == 0
        assert size - n < max(16, n / 8), (n, size)  # a sixteen-column step, or an eighth at most
    assert compact_size(130) == 144
    assert compact_size(1024) == 1024

    bank: DetectorBank[int] = DetectorBank(capacity=8)
    for n in range(1, 16 * (COMPACT_SIZES + 5), 16):
        buffer = bank.frame_buffer(n)
        assert buffer.shape == (FRAME_SAMPLES, compact_size(n))
    assert len(bank._compact) == COMPACT_SIZES
    assert bank.frame_buffer(1) is bank.frame_buffer(16)  # the same size: the same buffer
