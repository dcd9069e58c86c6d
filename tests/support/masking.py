"""Masking quality in figures: speech altered, Q.24 coverage, decoder leaks, detector latency.

``python -m tests.support.masking [--quick] [--json FILE]`` measures, through the live chain
(:func:`dtmfguard.pipeline.chain.mask_recording`, 20 ms packets, the default settings):

* **speech altered**: the share of samples of the recorded-speech corpus
  (:mod:`dtmfguard.corpus`) that the masker changes (gain above zero), and false digits;
* **Q.24 coverage**: the share of tone samples of the acceptance set (:mod:`dtmfguard.q24`,
  off the 5 ms grid) that are fully replaced, and the digits multimon-ng and spandsp still
  hear in the masked set;
* **card over speech**: the test card typed four times (64 digits) over the corpus's first
  40 files at -20, -10, -5 and 0 dB speech-to-tone, as ``tests/security/test_leak.py`` builds
  it; digits each decoder hears before and after masking;
* **stress** (skipped with ``--quick``): 32 sequences of 16 random keys (512 digits) per
  level over speech from the whole corpus, once at -12 dBm0 per tone with no twist and
  once with random level (-20 to -6 dBm0), twist (-6 to +4 dB), frequency offsets
  (+/-1.5 %) and tone lengths (50, 70, 100 ms). Each tone is decoded on its own
  (the masked signal from 30 ms before to 30 ms after it) and counts as leaked when a
  decoder hears its key there, so talk-off of a decoder on the speech is not counted;
* **latency**: onset and digit-confirmation latency of :mod:`bench.latency` (600 digits).

Every signal is seeded: two runs of the same code give the same figures. The decoders are
those of :mod:`tests.support.decoders` (Debian's multimon-ng and libspandsp); spandsp runs
with its defaults and once widened (twist 10 dB, reverse 8 dB, threshold -50 dBm0).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from dtmfguard import corpus, q24, synth
from dtmfguard.levels import DTMF_KEYS
from dtmfguard.pipeline.chain import mask_recording
from dtmfguard.pipeline.detect import DigitEnded
from tests.support.decoders import multimon_digits, spandsp_digits

Samples = npt.NDArray[np.float32]

TEST_PAN = "4111111111111111"
CARD_LEVELS_DB = (-20.0, -10.0, -5.0, 0.0)
STRESS_LEVELS_DB = (-10.0, -5.0, 0.0)
_TONE_MARGIN_SAMPLES = 240  # 30 ms either side of a tone when it is decoded on its own


def wide_spandsp(x: npt.ArrayLike) -> str:
    """spandsp widened to hear all it can (twist 10 dB, reverse twist 8 dB, -50 dBm0)."""
    return spandsp_digits(x, twist_db=10, reverse_twist_db=8, threshold_dbm0=-50)


DECODERS: dict[str, Callable[[npt.ArrayLike], str]] = {
    "multimon-ng": multimon_digits,
    "spandsp": spandsp_digits,
    "spandsp-wide": wide_spandsp,
}


def speech_altered() -> dict[str, Any]:
    """Samples of the speech corpus the masker changes, false digits, the worst files."""
    total = masked = false_digits = 0
    worst: list[tuple[int, str]] = []
    for path, x in corpus.load_speech_corpus():
        result = mask_recording(x)
        n = int(np.count_nonzero(result.gain))
        total += len(x)
        masked += n
        false_digits += sum(isinstance(e, DigitEnded) for e in result.events)
        if n:
            worst.append((n, path.name))
    worst.sort(reverse=True)
    return {
        "minutes": total / 8000 / 60,
        "altered_pct": 100.0 * masked / total,
        "altered_samples": masked,
        "false_digits": false_digits,
        "files_altered": len(worst),
        "worst_files": [{"file": name, "samples": n} for n, name in worst[:10]],
    }


def q24_coverage() -> dict[str, Any]:
    """Fully replaced share of the Q.24 acceptance tones, and what decoders hear when masked."""
    pad = 23  # off the 5 ms grid
    tone = covered = 0
    heard = dict.fromkeys(DECODERS, 0)
    for case in q24.all_cases():
        if not case.must_accept:
            continue
        x = np.concatenate([np.zeros(pad, np.float32), case.samples])
        result = mask_recording(x)
        for t in case.truth:
            a, b = t.start_sample + pad, t.end_sample + pad
            tone += b - a
            covered += int(np.count_nonzero(result.gain[a:b] >= 1.0))
        for name, decode in DECODERS.items():
            heard[name] += len(decode(result.samples))
    return {"covered_pct": 100.0 * covered / tone, "masked_heard": heard}


def _first_files(n: int) -> Samples:
    parts = [x for _, x in zip(range(n), (s for _, s in corpus.load_speech_corpus()), strict=False)]
    return np.concatenate(parts)


def _over_speech(tones: Samples, seg: Samples, speech_db: float, tone_power: float) -> Samples:
    gain = np.sqrt(tone_power / np.mean(seg**2) * 10 ** (speech_db / 10))
    return synth.clip_int16(tones + seg * gain)


def card_over_speech(speech: Samples, speech_db: float, reps: int = 4) -> dict[str, Any]:
    """The test card typed ``reps`` times over ``speech`` (as tests/security/test_leak.py)."""
    rng = np.random.default_rng(int(-speech_db))
    heard = dict.fromkeys(DECODERS, 0)
    leaked = dict.fromkeys(DECODERS, 0)
    for i in range(reps):
        tones, _ = synth.dtmf_sequence(TEST_PAN, on_ms=70, off_ms=80, lead_ms=300, rng=rng,
                                       level_low_dbm0=-12.0)
        seg = speech[i * 60_000 : i * 60_000 + len(tones)]
        y = _over_speech(tones, seg, speech_db, 2 * synth.dbm0_to_power(-12.0))
        masked = mask_recording(y).samples
        for name, decode in DECODERS.items():
            heard[name] += len(decode(y))
            leaked[name] += len(decode(masked))
    return {"digits": reps * len(TEST_PAN), "heard": heard, "leaked": leaked}


def stress_sequences(
    speech: Samples, speech_db: float, varied: bool, reps: int,
) -> Iterator[tuple[Samples, list[synth.ToneTruth]]]:
    """``reps`` sequences of 16 random keys over ``speech`` at ``speech_db`` (seeded), with
    each tone's truth: -12 dBm0 per tone and no twist, or ``varied`` as the module says."""
    seed = (200 if varied else 100) + int(-speech_db)
    rng = np.random.default_rng(seed)
    offset = 2_000_000 if varied else 400_000
    for i in range(reps):
        keys = "".join(DTMF_KEYS[int(k)] for k in rng.integers(0, len(DTMF_KEYS), 16))
        kw: dict[str, float] = {"level_low_dbm0": -12.0}
        on_ms = 70.0
        if varied:
            kw = {
                "level_low_dbm0": float(rng.uniform(-20, -6)), "twist_db": float(rng.uniform(-6, 4)),
                "low_offset": float(rng.uniform(-0.015, 0.015)),
                "high_offset": float(rng.uniform(-0.015, 0.015)),
            }
            on_ms = float(rng.choice([50.0, 70.0, 100.0]))
        tones, truth = synth.dtmf_sequence(keys, on_ms=on_ms, off_ms=80, lead_ms=300, rng=rng, **kw)
        start = (offset + i * 60_000) % (len(speech) - len(tones))
        seg = speech[start : start + len(tones)]
        on = np.concatenate([np.arange(t.start_sample, t.end_sample) for t in truth])
        yield _over_speech(tones, seg, speech_db, float(np.mean(tones[on] ** 2))), truth


def stress(speech: Samples, speech_db: float, varied: bool, reps: int = 32) -> dict[str, Any]:
    """Random keys over speech, each tone decoded on its own before and after masking."""
    heard = dict.fromkeys(DECODERS, 0)
    leaked = dict.fromkeys(DECODERS, 0)
    for y, truth in stress_sequences(speech, speech_db, varied, reps):
        masked = mask_recording(y).samples
        for t in truth:
            a = max(t.start_sample - _TONE_MARGIN_SAMPLES, 0)
            b = t.end_sample + _TONE_MARGIN_SAMPLES
            for name, decode in DECODERS.items():
                heard[name] += t.key in decode(y[a:b])
                leaked[name] += t.key in decode(masked[a:b])
    return {"digits": reps * 16, "heard": heard, "leaked": leaked}


def latency(n_digits: int = 600) -> dict[str, Any]:
    """Onset and digit latency as the benchmark measures them (:mod:`bench.latency`)."""
    from bench import latency as bench_latency

    m = bench_latency.measure(bench_latency.generate(n_digits))
    return {key: m[key] for key in ("n_digits", "onset_ms", "digit_ms", "missed_onsets",
                                    "missed_digits", "wrong_digits")}


def run(quick: bool = False) -> dict[str, Any]:
    t0 = time.monotonic()
    out: dict[str, Any] = {"speech": speech_altered(), "q24": q24_coverage()}
    first40 = _first_files(40)
    out["card_over_speech"] = {f"{db:g}": card_over_speech(first40, db) for db in CARD_LEVELS_DB}
    if not quick:
        whole = np.concatenate([x for _, x in corpus.load_speech_corpus()])
        out["stress"] = {f"{db:g}": stress(whole, db, varied=False) for db in STRESS_LEVELS_DB}
        out["stress_varied"] = {f"{db:g}": stress(whole, db, varied=True) for db in STRESS_LEVELS_DB}
    out["latency"] = latency(200 if quick else 600)
    out["seconds"] = round(time.monotonic() - t0, 1)
    return out


def _leak_line(label: str, row: dict[str, Any]) -> str:
    cells = "  ".join(f"{name} {row['leaked'][name]}/{row['heard'][name]}" for name in DECODERS)
    return f"  {label:>6}  of {row['digits']}: {cells}"


def format_report(out: dict[str, Any]) -> str:
    s, q, lat = out["speech"], out["q24"], out["latency"]
    lines = [
        f"speech altered: {s['altered_pct']:.4f} % of {s['minutes']:.1f} min "
        f"({s['files_altered']} files, {s['false_digits']} false digits)",
        f"Q.24 acceptance set: {q['covered_pct']:.2f} % of tone samples fully replaced; "
        f"digits heard when masked: {q['masked_heard']}",
        "card over speech (speech-to-tone dB; leaked after masking / heard before):",
    ]
    lines += [_leak_line(db, row) for db, row in out["card_over_speech"].items()]
    for key, title in (("stress", "random keys, -12 dBm0"), ("stress_varied", "random keys, varied")):
        if key in out:
            lines.append(f"{title} (per tone; leaked / heard):")
            lines += [_leak_line(db, row) for db, row in out[key].items()]
    lines.append(
        f"latency ({lat['n_digits']} digits): onset max {lat['onset_ms']['max']:.2f} ms, "
        f"digit p50 {lat['digit_ms']['p50']:.2f} ms, p99 {lat['digit_ms']['p99']:.2f} ms, "
        f"missed {lat['missed_digits']}, wrong {lat['wrong_digits']}"
    )
    lines.append(f"({out['seconds']} s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.support.masking", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="skip the 3000-digit stress sets, 200 latency digits")
    p.add_argument("--json", type=Path, help="also write the figures as JSON to this file")
    args = p.parse_args(argv)
    if not corpus.speech_corpus_available():
        print("the recorded-speech corpus is not installed (tools/install-debian-deps.sh)", file=sys.stderr)
        return 2
    out = run(quick=args.quick)
    print(format_report(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
