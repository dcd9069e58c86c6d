"""DTMF detection stage: kernel decisions per 5 ms sub-block -> tone and digit events.

The kernels (:mod:`dtmfguard.kernels`) say, for every 5 ms sub-block, whether a
keypad-like tone pair may have begun (ONSET), is present (TONE) or meets the strict
ITU-T Q.24 limits (DIGIT). :class:`ToneTracker` turns that per-channel stream into
events, all on stream time (sample counts from the channel's first sample, 8 kHz),
never the wall clock:

* :class:`ToneStarted` -- "mask now": raised at the first ONSET, within 10 ms of the
  tone's start, with the estimated start sample (refined by :class:`ToneRefined`
  while the start is still in the delay line).
* :class:`ToneArmed` -- the first tone-pair decision after the onset: the masker starts
  masking (from the estimated start, still in the delay line).
* :class:`ToneSustained` -- enough tone-pair evidence that this is a keypad tone.
* :class:`ToneCancelled` -- the onset was not followed by a sustained tone pair within
  20 ms (speech, a click): the masker lets that audio through if it had not begun.
* :class:`ToneEnded` -- the tone pair is gone (after bridging breaks of up to 10 ms);
  carries the estimated end sample.
* :class:`DigitConfirmed` / :class:`DigitEnded` -- the Q.24 digit decision: confirmed
  once at least ``min_digit_ms`` of tone meets the strict limits in three or more
  15 ms windows, so tones of 23 ms or less are rejected and 40 ms or more accepted.

Start and end are estimated from sub-block energies: a sub-block the tone covers
only partly carries a proportional share of the tone's energy, which places the edge
within about a millisecond. The detector never looks at the wall clock and holds no
state shared between channels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dtmfguard.kernels.features import DIGIT, ONSET, TONE, FeatureBank, Thresholds
from dtmfguard.kernels.goertzel import BLOCK_SAMPLES, BlockSpectra, goertzel_blocks
from dtmfguard.kernels.tracker import (  # one set of constants for this tracker and its compiled twin
    CLEAR_COVERAGE as _CLEAR_COVERAGE,
)
from dtmfguard.kernels.tracker import (
    DIGIT_MIN_WINDOWS,
    GAP_BLOCKS,
    QUICK_CANCEL_BLOCKS,
    STRICT_WEIGHT,
    SUSTAIN_BLOCKS,
    SUSTAIN_HITS,
)
from dtmfguard.kernels.tracker import (
    HEAD_BLOCKS as _HEAD_BLOCKS,
)
from dtmfguard.kernels.tracker import (
    PRE_BLOCKS as _PRE_BLOCKS,
)
from dtmfguard.kernels.tracker import (
    TAIL_BLOCKS as _TAIL_BLOCKS,
)
from dtmfguard.levels import DTMF_KEYS, SAMPLE_RATE_HZ

L = BLOCK_SAMPLES


@dataclass(frozen=True, slots=True)
class ToneStarted:
    start_sample: int
    detected_sample: int


@dataclass(frozen=True, slots=True)
class ToneArmed:
    """The onset was followed by a first tone-pair decision: mask while it is pending."""

    start_sample: int
    detected_sample: int


@dataclass(frozen=True, slots=True)
class ToneSustained:
    start_sample: int
    detected_sample: int


@dataclass(frozen=True, slots=True)
class ToneRefined:
    start_sample: int


@dataclass(frozen=True, slots=True)
class ToneCancelled:
    start_sample: int
    detected_sample: int


@dataclass(frozen=True, slots=True)
class ToneEnded:
    start_sample: int
    end_sample: int
    detected_sample: int


@dataclass(frozen=True, slots=True)
class DigitConfirmed:
    key: str
    onset_sample: int
    confirmed_sample: int


@dataclass(frozen=True, slots=True)
class DigitEnded:
    key: str
    onset_sample: int
    confirmed_sample: int
    end_sample: int

    @property
    def duration_samples(self) -> int:
        return self.end_sample - self.onset_sample


ToneEvent = (
    ToneStarted | ToneArmed | ToneSustained | ToneRefined | ToneCancelled | ToneEnded
    | DigitConfirmed | DigitEnded
)


def samples_to_ms(samples: int) -> float:
    return samples * 1000.0 / SAMPLE_RATE_HZ


def _edge_share(cov: list[float], j: int, step: int) -> float:
    """Tone share of the one or two sub-blocks beyond ``j`` in direction ``step``."""
    i = j + step
    if not 0 <= i < len(cov):
        return 0.0
    share = cov[i]
    k = i + step
    if share >= 0.5 and 0 <= k < len(cov):
        share += cov[k]
    return share


class _Run:
    """One tone run: from the first ONSET to GAP_BLOCKS sub-blocks without decisions."""

    __slots__ = (
        "first_block", "energies", "pre", "start_sample", "sustained", "last_pos_block",
        "gap", "strict", "digit", "confirmed_sample", "alt_key", "alt_count", "refines",
        "tone_hits", "tail", "n_blocks", "armed", "tone_key", "tone_gap",
    )

    def __init__(self, first_block: int, pre: list[float]) -> None:
        self.first_block = first_block
        self.energies: list[float] = []  # the first _HEAD_BLOCKS sub-blocks of the run
        self.tail: list[float] = []  # the last _TAIL_BLOCKS sub-blocks of the run
        self.n_blocks = 0
        self.pre = pre
        self.start_sample = first_block * L
        self.sustained = False
        self.last_pos_block = first_block
        self.gap = 0
        self.strict: dict[int, int] = {}
        self.digit = -1
        self.confirmed_sample = -1
        self.alt_key = -1
        self.alt_count = 0
        self.refines = 0
        self.tone_hits = 0
        self.armed = False
        self.tone_key = -1
        self.tone_gap = 0

    def reference_energy(self) -> float:
        # Two-tone energy per sub-block beats by up to +/-25 %; the mean over the
        # sub-blocks near the maximum is a steady estimate of a fully covered one.
        seen = self.energies + self.tail
        if not seen:
            return 0.0
        floor = 0.6 * max(seen)
        full = [e for e in seen if e >= floor]
        return sum(full) / len(full)

    def coverage(self, e: float, ref: float) -> float:
        return min(1.0, e / ref) if ref > 0.0 else 0.0

    def estimate_start(self) -> int:
        # From the first sub-block the tone clearly fills (coverage >= 0.75) walk back
        # adding each sub-block's share of tone energy: onset = end(j) - L * sum(c).
        # A sub-block in a beat trough (0.5-0.75) may still be full, so one more is
        # taken then. Robust to the +/-25 % beat that defeats a fixed "full" threshold.
        ref = self.reference_energy()
        seq = self.pre + self.energies[:6]
        base_block = self.first_block - len(self.pre)
        cov = [min(1.0, e / ref) for e in seq] if ref > 0.0 else [0.0] * len(seq)  # coverage(), inlined
        for j, c in enumerate(cov):
            if c >= _CLEAR_COVERAGE:
                return int((base_block + j + 1) * L - L * (c + _edge_share(cov, j, -1)))
        return self.first_block * L

    def estimate_end(self) -> int:
        ref = self.reference_energy()
        tail = self.tail
        cov = [min(1.0, e / ref) for e in tail] if ref > 0.0 else [0.0] * len(tail)  # coverage(), inlined
        base_block = self.first_block + self.n_blocks - len(self.tail)
        for j in range(len(cov) - 1, -1, -1):
            c = cov[j]
            if c >= _CLEAR_COVERAGE:
                share = c + _edge_share(cov, j, +1)
                return math.ceil((base_block + j) * L + L * share)
        return (self.last_pos_block + 1) * L

    def tone_samples(self) -> float:
        ref = self.reference_energy()
        seq = self.pre[-1:] + self.energies
        # Beyond the head, sub-blocks count as fully covered (the digit is long).
        return (sum(self.coverage(e, ref) for e in seq) + self.n_blocks - len(self.energies)) * L


class ToneTracker:
    """Per-channel state machine over sub-block decisions. Pure: no I/O, no clock."""

    def __init__(self, min_digit_ms: float = 26.0) -> None:
        self.min_digit_samples = min_digit_ms * SAMPLE_RATE_HZ / 1000.0
        self.block = 0
        self._pre: list[float] = []
        self._run: _Run | None = None

    @property
    def active(self) -> bool:
        return self._run is not None

    def reset(self) -> None:
        self.block = 0
        self._pre = []
        self._run = None

    def idle(self, energy: Sequence[float]) -> None:
        """Consecutive sub-blocks with no decision at all while no run is open.

        The same as :meth:`feed` with every decision -1, in one step: all the tracker
        keeps then is the last few energies (for a later onset's start estimate).
        """
        if self._run is not None:
            raise ValueError("idle() is only for a tracker with no open run; use feed()")
        self._pre = (self._pre + list(energy))[-_PRE_BLOCKS:]
        self.block += len(energy)

    def feed(
        self, onset: Sequence[int], tone: Sequence[int], digit: Sequence[int],
        energy: Sequence[float], events: list[ToneEvent],
    ) -> None:
        """Consume decisions for consecutive sub-blocks; append events to ``events``."""
        for i in range(len(onset)):
            o = onset[i]
            t = tone[i]
            d = digit[i]
            e = energy[i]
            if self._run is None:
                if o < 0 and t < 0 and d < 0:
                    pre = self._pre
                    pre.append(e)
                    if len(pre) > _PRE_BLOCKS:
                        del pre[0]
                    self.block += 1
                    continue
                self._start_run(events)
            self._step(o, t, d, e, events)
            self.block += 1

    def flush(self, events: list[ToneEvent]) -> None:
        """End of stream: close any open run."""
        if self._run is not None:
            self._end_run(events)

    # -- internals

    def _start_run(self, events: list[ToneEvent], block: int | None = None) -> None:
        first = self.block if block is None else block
        run = _Run(first, self._pre)
        self._pre = []
        self._run = run
        events.append(ToneStarted(run.start_sample, (self.block + 1) * L))

    def _step(self, o: int, t: int, d: int, e: float, events: list[ToneEvent]) -> None:
        run = self._run
        assert run is not None
        k = self.block
        if k < run.first_block:
            return
        run.n_blocks += 1
        if len(run.energies) < _HEAD_BLOCKS:
            run.energies.append(e)
        run.tail.append(e)
        if len(run.tail) > _TAIL_BLOCKS:
            del run.tail[0]
        positive = o >= 0 or t >= 0 or d >= 0
        if positive:
            run.gap = 0
            run.last_pos_block = k
        else:
            run.gap += 1
        if t >= 0 or d >= 0:
            if run.tone_hits == 0 and not run.armed:
                run.armed = True
                events.append(ToneArmed(run.start_sample, (k + 1) * L))
            key = t if t >= 0 else d
            if key != run.tone_key:
                # Points count for one key pair only: speech wanders between pairs.
                run.tone_key = key
                run.tone_hits = 0
            run.tone_hits += 1
            if d >= 0:
                run.tone_hits += STRICT_WEIGHT
            if run.tone_hits >= SUSTAIN_HITS and not run.sustained:
                run.sustained = True
                events.append(ToneSustained(run.start_sample, (k + 1) * L))
        # Refine the start while it is still early in the run (better energy reference).
        if run.refines < 4:
            run.refines += 1
            start = run.estimate_start()
            if start != run.start_sample:
                run.start_sample = start
                events.append(ToneRefined(start))
        if t >= 0 or d >= 0:
            run.tone_gap = 0
        else:
            run.tone_gap += 1
        if not run.sustained and (
            k - run.first_block + 1 >= SUSTAIN_BLOCKS + 1
            or (run.armed and run.tone_gap >= QUICK_CANCEL_BLOCKS)
        ):
            events.append(ToneCancelled(run.start_sample, (k + 1) * L))
            self._pre = (run.pre + run.energies)[-_PRE_BLOCKS:]
            self._run = None
            return
        if d >= 0:
            self._strict(run, d, events)
        if run.gap >= GAP_BLOCKS:
            self._end_run(events)

    def _strict(self, run: _Run, d: int, events: list[ToneEvent]) -> None:
        k = self.block
        if run.digit >= 0 and d != run.digit:
            # A different valid digit without a pause: split when it persists.
            if d == run.alt_key:
                run.alt_count += 1
            else:
                run.alt_key, run.alt_count = d, 1
            if run.alt_count >= 2:
                self._split(events)
            return
        run.alt_count = 0
        run.strict[d] = run.strict.get(d, 0) + 1
        if (
            run.digit < 0
            and run.strict[d] >= DIGIT_MIN_WINDOWS
            and run.tone_samples() >= self.min_digit_samples
        ):
            best = max(run.strict, key=lambda key: run.strict[key])
            run.digit = best
            run.confirmed_sample = (k + 1) * L
            events.append(DigitConfirmed(DTMF_KEYS[best], run.estimate_start(), run.confirmed_sample))

    def _split(self, events: list[ToneEvent]) -> None:
        # Close the old digit here; the next sub-block starts the new one's run.
        self._end_run(events)
        self._pre = []
        self._start_run(events, self.block + 1)
        assert self._run is not None
        self._run.sustained = True

    def _end_run(self, events: list[ToneEvent]) -> None:
        run = self._run
        assert run is not None
        k = self.block
        if not run.sustained:
            # Gone before it was ever a tone pair (speech, a click): not a tone.
            events.append(ToneCancelled(run.start_sample, (k + 1) * L))
            self._pre = run.tail[-_PRE_BLOCKS:]
            self._run = None
            return
        start = run.estimate_start()
        end = max(run.estimate_end(), start + 1)
        events.append(ToneEnded(start, end, (k + 1) * L))
        if run.digit >= 0:
            events.append(DigitEnded(DTMF_KEYS[run.digit], start, run.confirmed_sample, end))
        self._pre = run.tail[-_PRE_BLOCKS:]
        self._run = None


class ChannelDetector:
    """Detector for one channel of float32 audio at 8 kHz, any chunk size.

    ``process(samples)`` buffers to whole 5 ms sub-blocks and returns the events the
    new samples produced; ``flush()`` ends the stream. Chunks of up to ``max_blocks``
    sub-blocks are run through the kernels per call.
    """

    def __init__(
        self, thresholds: Thresholds | None = None, min_digit_ms: float = 26.0,
        max_blocks: int = 4096,
    ) -> None:
        self.max_blocks = max_blocks
        self._banks: dict[int, tuple[BlockSpectra, FeatureBank]] = {}
        self._thresholds = thresholds or Thresholds()
        self._state = None
        self.tracker = ToneTracker(min_digit_ms)
        self._carry = np.zeros(0, np.float32)
        self._feature_state = FeatureBank(1, 1, self._thresholds).state

    def _bank(self, n_blocks: int) -> tuple[BlockSpectra, FeatureBank]:
        pair = self._banks.get(n_blocks)
        if pair is None:
            bank = FeatureBank(1, n_blocks, self._thresholds)
            bank.state = self._feature_state
            pair = (BlockSpectra(n_blocks, 1), bank)
            self._banks[n_blocks] = pair
        return pair

    def process(self, samples: npt.NDArray[np.float32]) -> list[ToneEvent]:
        x = np.concatenate([self._carry, np.asarray(samples, np.float32)])
        n_blocks = len(x) // L
        self._carry = x[n_blocks * L :].copy()
        events: list[ToneEvent] = []
        pos = 0
        while n_blocks > 0:
            nb = min(n_blocks, self.max_blocks)
            chunk = np.ascontiguousarray(x[pos * L : (pos + nb) * L].reshape(-1, 1))
            spectra, bank = self._bank(nb)
            goertzel_blocks(chunk, spectra)
            keys = bank.process(spectra)
            self.tracker.feed(
                keys[:, ONSET, 0].tolist(), keys[:, TONE, 0].tolist(),
                keys[:, DIGIT, 0].tolist(), spectra.energy[:, 0].tolist(), events,
            )
            pos += nb
            n_blocks -= nb
        return events

    def flush(self) -> list[ToneEvent]:
        events: list[ToneEvent] = []
        if len(self._carry):
            pad = np.zeros(L - len(self._carry), np.float32)
            events.extend(self.process(pad))
        # Run a few silent sub-blocks so windows drain, then close any open run.
        events.extend(self.process(np.zeros(L * (GAP_BLOCKS + 3), np.float32)))
        self.tracker.flush(events)
        return events


def detect_digits(samples: npt.NDArray[np.float32], **kwargs: object) -> list[DigitEnded]:
    """All digits in a whole recording (float32, 8 kHz), in order."""
    det = ChannelDetector(**kwargs)  # type: ignore[arg-type]
    events = det.process(samples) + det.flush()
    return [e for e in events if isinstance(e, DigitEnded)]
