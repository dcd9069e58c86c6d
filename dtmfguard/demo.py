"""``dtmfguard demo``: the product end to end on one machine, with the claims it makes checked.

Two parts. The live part (:mod:`dtmfguard.demo_call`) starts the reference gateway
(:class:`~dtmfguard.gateway_sim.GatewaySim`, HTTPS on loopback) and the proxy on the
configuration's defaults, and places a real-time call through it that pays: the capture starts
over NG ``block DTMF`` (:data:`DEMO_AMOUNT_MINOR` GBP minor units), the caller types the
test card number, the expiry :data:`DEMO_EXPIRY` and the code :data:`DEMO_CODE`, and the agent's
view is printed as it changes. It checks the approval, that the gateway charged exactly once,
with multimon-ng that the agent heard no digit while dtmfguard captured every key, and that
nothing printed shows a card digit but the masked last four. The offline part works on a
recording: it builds a short call (about 16 s
of recorded speech from Debian's asterisk-core-sounds-en-wav, or synthetic speech when that set
is missing) with the public test card number 4111 1111 1111 1111 typed on the keypad in a
pause (70 ms tones, 80 ms gaps, -10 dBm0), writes it as ``call.wav``, masks it through the same
per-channel chain a call would use into ``call-masked.wav``, and audits both. It then states,
and checks, that the audit finds all 16 digits before masking and none after, that dtmfguard's
own detector captured the 16 digits (shown masked, last four only, per PCI DSS v4.0.1
requirement 3.4.1), and that no sample outside the keypad span was altered. Any claim that
does not hold makes the demo fail (exit status 1), so ``make demo`` is a real check; so does a
missing multimon-ng (``make deps`` installs it).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TextIO

import numpy as np
import numpy.typing as npt

from dtmfguard import kernels, synth
from dtmfguard.capture.sensitive import SensitiveDigits
from dtmfguard.config import Config
from dtmfguard.corpus import speech_files, speech_root
from dtmfguard.errors import AudioFormatError, CaptureError
from dtmfguard.levels import SAMPLE_RATE_HZ, dbm0_to_power
from dtmfguard.offline import DetectorOptions, audit_paths, format_audit_table
from dtmfguard.pipeline.chain import mask_recording
from dtmfguard.pipeline.detect import DigitEnded, ToneEnded
from dtmfguard.pipeline.mask import MaskSettings
from dtmfguard.wavio import read_wav, write_wav

__all__ = ["DEMO_CARD", "CallRecording", "build_call", "masked_pan", "run_demo"]

FloatArray = npt.NDArray[np.float32]

DEMO_CARD = "4111111111111111"
"""The card number typed in the demo: the public Visa test number, never a real card."""

TONE_MS = 70.0
GAP_MS = 80.0
TONE_LEVEL_DBM0 = -10.0
LINE_NOISE_DBM0 = -65.0
"""Level of the white line noise under the whole call, so no stretch is digital silence."""
PROMPT_GAP_MS = 300.0
KEYPAD_PAUSE_MS = 700.0
"""Silence (line noise only) before and after the typed number."""

# Prompts of the Asterisk English sound set: the agent's side of a payment call, roughly.
PROMPTS_BEFORE = ("hello.wav", "dir-welcome.wav", "vm-toenternumber.wav", "astcc-followed-by-the-pound-key.wav")
PROMPTS_AFTER = ("auth-thankyou.wav", "one-moment-please.wav", "queue-thankyou.wav", "goodbye.wav")
_SYNTH_SPEECH_MS = 6500.0
# Masking may start this much before the first tone and end this much after the last one
# (the masker's pads and ramps, with margin); masking further out altered speech.
_SPAN_MARGIN_MS = 30.0

LIVE_EVENT_INDEX = 6
"""Which key of the card number the live call's caller sends as RFC 4733 events (the 7th)."""
LIVE_FILES = "live-caller.wav, live-agent.wav, capture-audit.jsonl, recordings/"
DEMO_EXPIRY = "0931"
"""The expiry the caller types after the card number (MMYY, September 2031: in the future)."""
DEMO_CODE = "737"
"""The security code the caller types last (a test value)."""
DEMO_AMOUNT_MINOR = 1999
DEMO_CURRENCY = "GBP"
DEMO_REFERENCE = "order-demo"

CALL_FILE = "call.wav"
MASKED_FILE = "call-masked.wav"


@dataclass(frozen=True)
class CallRecording:
    """A generated call: float32 samples at 8 kHz and where the keypad digits are."""

    samples: FloatArray
    keypad_start_sample: int
    keypad_end_sample: int
    digits: int
    speech_source: str

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE_HZ


def _silence(ms: float) -> FloatArray:
    return np.zeros(synth.ms_to_samples(ms), np.float32)


def _with_gaps(clips: list[FloatArray]) -> FloatArray:
    pieces: list[FloatArray] = []
    for index, clip in enumerate(clips):
        if index:
            pieces.append(_silence(PROMPT_GAP_MS))
        pieces.append(clip)
    return np.concatenate(pieces) if pieces else _silence(0)


def _recorded_speech() -> tuple[list[FloatArray], list[FloatArray], str] | None:
    """The demo prompts from the speech corpus; other corpus files if some are missing; None if none."""
    root = speech_root()
    try:
        available = speech_files(root)
    except FileNotFoundError:
        return None
    if not available:
        return None
    named = [root / name for name in (*PROMPTS_BEFORE, *PROMPTS_AFTER)]
    paths = named if all(p.is_file() for p in named) else available[: len(named)]
    clips: list[FloatArray] = []
    for path in paths:
        try:
            clips.append(read_wav(path)[0])
        except (AudioFormatError, OSError):
            return None
    half = len(PROMPTS_BEFORE) if len(clips) == len(named) else len(clips) // 2
    return clips[:half], clips[half:], f"recorded speech from {root}"


def build_call(seed: int = 2024) -> CallRecording:
    """Speech, a pause, the test card number on the keypad, a pause, speech; over low line noise.

    Uses the recorded-speech corpus (:mod:`dtmfguard.corpus`) when installed, else
    :func:`dtmfguard.synth.speech_like`. Deterministic for a given ``seed``.
    """
    rng = np.random.default_rng(seed)
    recorded = _recorded_speech()
    if recorded is not None:
        before_clips, after_clips, source = recorded
        before, after = _with_gaps(before_clips), _with_gaps(after_clips)
    else:
        before = synth.speech_like(_SYNTH_SPEECH_MS, rng)
        after = synth.speech_like(_SYNTH_SPEECH_MS, rng)
        source = "synthetic speech (the recorded-speech set asterisk-core-sounds-en-wav is not installed)"
    keypad, _truth = synth.dtmf_sequence(
        DEMO_CARD, on_ms=TONE_MS, off_ms=GAP_MS, lead_ms=0.0, tail_ms=0.0, rng=rng, level_low_dbm0=TONE_LEVEL_DBM0
    )
    pause = _silence(KEYPAD_PAUSE_MS)
    call = np.concatenate([before, pause, keypad, pause, after]).astype(np.float32)
    noise = rng.standard_normal(len(call)) * math.sqrt(dbm0_to_power(LINE_NOISE_DBM0))
    call = synth.clip_int16(call + noise.astype(np.float32))
    start = len(before) + len(pause)
    return CallRecording(call, start, start + len(keypad), len(DEMO_CARD), source)


def masked_pan(digits: SensitiveDigits, bullet: str = "\u2022") -> str:
    """``•••• •••• •••• 1111``: every digit but the last four hidden, in groups of four."""
    shown = bullet * (len(digits) - 4) + digits.last4()
    return " ".join(shown[i : i + 4] for i in range(0, len(shown), 4))


def _bullet(out: TextIO) -> str:
    try:
        "\u2022".encode(getattr(out, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return "*"
    return "\u2022"


def _captured(events: list[object]) -> tuple[SensitiveDigits, bool]:
    """The digits the detector reported, in a SensitiveDigits; False if a non-decimal key came."""
    digits = SensitiveDigits(capacity=64)
    decimal_only = True
    for event in events:
        if isinstance(event, DigitEnded):
            try:
                digits.append(event.key)
            except CaptureError:
                decimal_only = False
    return digits, decimal_only


def run_demo(out_dir: str | os.PathLike[str], config: Config, out: TextIO, *, live: bool = True) -> int:
    """Run the live call (unless ``live`` is False), then build, mask and audit the demo recording,
    all in ``out_dir``; print what happened to ``out``.

    Returns 0 when every claim holds, 1 otherwise (multimon-ng missing included). Raises
    OSError when the folder or the files cannot be written, or the proxy cannot bind.
    """
    kernels.warmup()
    options = DetectorOptions.from_config(config.detector)
    settings = MaskSettings.from_config(config.masking)
    os.makedirs(out_dir, exist_ok=True)
    call_path = os.path.join(out_dir, CALL_FILE)
    masked_path = os.path.join(out_dir, MASKED_FILE)

    printed: list[str] = []

    def say(text: str) -> None:
        printed.append(text)
        print(text, file=out, flush=True)

    live_checks: list[tuple[bool, str]] = []
    if live:
        from dtmfguard.demo_call import MultimonMissing, Payment, run_live_call
        from dtmfguard.log import configure_logging

        payment = Payment(DEMO_AMOUNT_MINOR, DEMO_CURRENCY, DEMO_REFERENCE, DEMO_EXPIRY, DEMO_CODE)
        say("dtmfguard demo, part 1: a live card payment call through `dtmfguard serve`, paid by phone")
        say("")
        configure_logging("warning", config.log.format)  # the proxy's own lines only when something is wrong
        try:
            live_checks = run_live_call(
                config, out_dir, say, _bullet(out), card=DEMO_CARD, event_index=LIVE_EVENT_INDEX, payment=payment,
            )
        except MultimonMissing as exc:
            say(f"  [FAILED] {exc}")
            say("demo FAILED: the live call needs multimon-ng to check what the agent heard")
            return 1
        for ok, text in live_checks:
            say(f"  [{'ok' if ok else 'FAILED'}] {text}")
        say("")
        say("dtmfguard demo, part 2: a recording, masked and audited offline")
        say("")

    call = build_call()
    write_wav(call_path, call.samples)
    start_s = call.keypad_start_sample / SAMPLE_RATE_HZ
    end_s = call.keypad_end_sample / SAMPLE_RATE_HZ
    if not live:
        say("dtmfguard demo: a card payment call, masked and audited")
        say("")
    say(f"  call        {call_path}")
    say(f"              {call.duration_s:.1f} s of {call.speech_source};")
    say(
        f"              the test card number typed on the keypad at {start_s:.2f}-{end_s:.2f} s "
        f"({TONE_MS:.0f} ms tones, {GAP_MS:.0f} ms gaps, {TONE_LEVEL_DBM0:.0f} dBm0)"
    )

    # Mask through the live per-channel chain (delay line included, then taken out).
    result = mask_recording(
        call.samples, settings, thresholds=options.thresholds, min_digit_ms=options.min_digit_ms
    )
    write_wav(masked_path, result.samples)
    masked_samples = int(np.count_nonzero(result.gain > 0))
    tones = sum(isinstance(e, ToneEnded) for e in result.events)
    digits = sum(isinstance(e, DigitEnded) for e in result.events)
    say(f"  masked      {masked_path}")
    say(
        f"              {tones} tones masked ({digits} of them digits; {settings.mode.value}), "
        f"{1000.0 * masked_samples / SAMPLE_RATE_HZ:.0f} ms of audio replaced"
    )
    say("")

    before_report = audit_paths([call_path], options)
    after_report = audit_paths([masked_path], options)
    for label, report in (("audit of the call", before_report), ("audit of the masked call", after_report)):
        say(f"  {label}:")
        for line in format_audit_table(report) or [f"{report.files[0].path}: no DTMF digit found"]:
            say(f"    {line}")
    say("")
    before, after = before_report.files[0], after_report.files[0]

    captured, decimal_only = _captured(list(result.events))
    expected = SensitiveDigits(DEMO_CARD)
    margin = round(_SPAN_MARGIN_MS * SAMPLE_RATE_HZ / 1000.0)
    outside = [
        (a, b)
        for a, b in result.masked_intervals()
        if b <= call.keypad_start_sample - margin or a >= call.keypad_end_sample + margin
    ]
    checks: list[tuple[bool, str]] = [
        (
            before.error is None and len(before.hits) == call.digits,
            f"audit finds {len(before.hits)} digits in {CALL_FILE} (expected {call.digits})"
            + (f", the first at {before.first_at_s:.3f} s" if before.hits else ""),
        ),
        (
            after.error is None and not after.hits and len(result.samples) == len(call.samples),
            f"audit finds {len(after.hits)} digits in {MASKED_FILE} (expected 0; same length as the call)",
        ),
        (
            decimal_only and captured == expected,
            f"dtmfguard's detector captured {len(captured)} of {call.digits} digits: "
            + (masked_pan(captured, _bullet(out)) if len(captured) >= 4 else "(too few to show)")
            + (" (Luhn check passes)" if captured.luhn_ok() else " (Luhn check fails)"),
        ),
    ]
    captured.wipe()
    expected.wipe()
    for ok, text in checks:
        say(f"  [{'ok' if ok else 'FAILED'}] {text}")
    # Not a pass/fail claim: a false tone onset in speech costs a few tens of ms of masked
    # speech; the budget for that is set over the whole speech corpus, not one call.
    if outside:
        outside_ms = 1000.0 * sum(b - a for a, b in outside) / SAMPLE_RATE_HZ
        at = ", ".join(f"{a / SAMPLE_RATE_HZ:.2f} s" for a, _ in outside)
        say(f"  [info] speech masked outside the keypad span: {outside_ms:.0f} ms, at {at}")
    else:
        say("  [info] speech untouched: every masked sample lies within the keypad span")
    say("")
    from dtmfguard.demo_call import card_leaks

    shown = card_leaks("\n".join(printed), DEMO_CARD, DEMO_EXPIRY if live else "", DEMO_CODE if live else "")
    checks.append((
        not shown,
        "this output shows no card number, expiry or security code (the card number masked, last four only)",
    ))
    say(f"  [{'ok' if not shown else 'FAILED'}] {checks[-1][1]}")
    say("")
    live_files = f", {LIVE_FILES}" if live else ""
    say(f"files are in {os.path.abspath(out_dir)}/ ({CALL_FILE}, {MASKED_FILE}{live_files})")
    if all(ok for ok, _ in (*live_checks, *checks)):
        return 0
    say("demo FAILED: see the lines marked FAILED above")
    return 1
