"""Random keypad streams never crash the capture machine and never leak digits into its effects."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from dtmfguard.capture.cards import (
    Brand,
    allowed_lengths,
    check_expiry,
    detect_brand,
    primary_length,
    security_code_length,
)
from dtmfguard.capture.machine import (
    MASK_CHAR,
    CaptureCompleted,
    CaptureMachine,
    CaptureSettings,
    CardData,
    Effect,
    Field,
    ProgressChanged,
    State,
    mask_pan,
)

TODAY = (2025, 6)
# Public test card numbers published by payment processors; never real cards.
TEST_PANS = [
    "4111111111111111",
    "4242424242424242",
    "4012888888881881",
    "4222222222222",
    "5555555555554444",
    "5105105105105100",
    "2223003122003222",
    "378282246310005",
    "371449635398431",
    "6011111111111117",
    "6011000990139424",
    "30569309025904",
    "36227206271667",
    "3056930009020004",
    "3530111333300000",
    "3566002020360505",
    "6200000000000005",
    "6205500000000000004",
    "6759649826438453",
]
EXPIRIES = ["1230", "0625", "0525", "1325", "0099", "12"]
CODES = ["123", "1234", "12", "90210"]
DIGIT_RUN = re.compile(r"\d{4,}")


def _brand(pan: str) -> Brand:
    brand = detect_brand(pan)
    assert brand is not None
    return brand


# Whole plausible entries (card, expiry, code) as well as fragments and noise, so that runs
# reach completion and submit as well as every kind of rejection.
entries = st.builds(
    "".join,
    st.tuples(
        st.sampled_from(TEST_PANS),
        st.sampled_from(["", "#"]),
        st.sampled_from(EXPIRIES),
        st.sampled_from(CODES),
        st.sampled_from(["", "#", "90210", "123#"]),
    ),
)
chunks = st.one_of(
    entries,
    st.sampled_from(TEST_PANS),
    st.sampled_from(EXPIRIES),
    st.sampled_from(CODES),
    st.text(alphabet="0123456789*#", max_size=24),
    st.sampled_from(["*", "#", "A", "D"]),
)
short_gaps_ms = st.integers(0, 600)
# Mostly keypad pace; sometimes long enough for the field or capture timeouts to fire.
gaps_ms = st.one_of(*[short_gaps_ms] * 6, st.integers(0, 40_000))
key_steps = st.tuples(st.just("keys"), chunks, gaps_ms)
# "entry": clear (or start) first, then type a whole entry at keypad pace, so runs reach submit.
entry_steps = st.tuples(st.just("entry"), entries, short_gaps_ms)
steps = st.lists(
    st.one_of(
        entry_steps,
        key_steps,
        key_steps,
        key_steps,
        st.tuples(st.just("tick"), st.just(""), st.one_of(short_gaps_ms, st.integers(0, 200_000))),
        st.tuples(st.sampled_from(["start", "clear", "cancel", "submit", "submit"]), st.just(""), gaps_ms),
    ),
    max_size=30,
)
capture_settings = st.builds(
    CaptureSettings,
    today=st.just(TODAY),
    fields=st.sampled_from(
        [
            (Field.PAN, Field.EXPIRY, Field.CVV),
            (Field.PAN,),
            (Field.PAN, Field.CVV),
            (Field.PAN, Field.EXPIRY, Field.CVV, Field.POSTCODE),
        ]
    ),
    postcode_min_digits=st.just(3),
    postcode_max_digits=st.just(5),
    field_timeout_ms=st.sampled_from([5_000, 20_000]),
    capture_timeout_ms=st.sampled_from([60_000, 180_000]),
    max_retries=st.integers(0, 3),
    show_bin=st.booleans(),
    pan_ends_with_hash=st.booleans(),
    auto_submit=st.booleans(),
)


def _check_masked_pan(masked: str, show_bin: bool) -> None:
    groups = masked.split(" ")
    assert all(len(group) == 4 for group in groups[1:])
    assert 1 <= len(groups[0]) <= 4
    compact = "".join(groups)
    length = len(compact)
    assert 12 <= length <= 19
    visible = {index for index, char in enumerate(compact) if char.isdigit()}
    allowed = set(range(length - 4, length))
    if show_bin and length >= 15:
        allowed |= set(range(6))
    assert visible == allowed
    assert all(char == MASK_CHAR for index, char in enumerate(compact) if index not in visible)


def _check_card(card: CardData, machine_settings: CaptureSettings) -> None:
    assert DIGIT_RUN.search(repr(card)) is None
    assert card.pan.reveal() not in repr(card)
    assert detect_brand(card.pan.bin6()) is card.brand
    assert len(card.pan) in allowed_lengths(card.brand)
    assert card.pan.luhn_ok()
    if Field.EXPIRY in machine_settings.fields:
        assert card.expiry is not None
        assert check_expiry(card.expiry.reveal(), TODAY) is None
    if Field.CVV in machine_settings.fields:
        assert card.cvv is not None
        assert len(card.cvv) == security_code_length(card.brand)
    if Field.POSTCODE in machine_settings.fields:
        assert card.postcode is not None
        assert 3 <= len(card.postcode) <= 5


class Observer:
    """Checks every effect as it comes out of the machine."""

    def __init__(self, machine_settings: CaptureSettings) -> None:
        self.settings = machine_settings
        self.last_masked: str | None = None
        self.completed: list[CardData] = []

    def see(self, effects: tuple[Effect, ...], machine: CaptureMachine) -> None:
        assert not any(char.isdigit() for char in repr(machine))
        assert (machine.field is not None) == (machine.state is State.COLLECTING)
        for effect in effects:
            shown: Any = effect
            if isinstance(effect, ProgressChanged):
                if effect.masked_pan is not None:
                    _check_masked_pan(effect.masked_pan, self.settings.show_bin)
                    self.last_masked = effect.masked_pan
                shown = dataclasses.replace(effect, masked_pan=None)
            assert DIGIT_RUN.search(repr(shown)) is None, repr(shown)
            assert DIGIT_RUN.search(str(shown)) is None
            if isinstance(effect, CaptureCompleted):
                _check_card(effect.card, self.settings)
                assert self.last_masked == mask_pan(effect.card.pan, show_bin=self.settings.show_bin)
                self.completed.append(effect.card)


def _run(machine: CaptureMachine, observer: Observer, plan: list[tuple[str, str, int]]) -> None:
    now_ms = 0
    observer.see(machine.start(now_ms), machine)
    for operation, keys, gap_ms in plan:
        if operation == "entry":
            effects = machine.clear(now_ms)
            if machine.state is not State.COLLECTING:
                effects = machine.start(now_ms)
            observer.see(effects, machine)
        if operation in ("keys", "entry"):
            for key in keys:
                now_ms += gap_ms
                observer.see(machine.digit(key, now_ms), machine)
            continue
        now_ms += gap_ms
        if operation == "tick":
            effects = machine.tick(now_ms)
        elif operation == "start":
            effects = machine.start(now_ms)
        elif operation == "clear":
            effects = machine.clear(now_ms)
        elif operation == "cancel":
            effects = machine.cancel()
        else:
            effects = machine.submit()
        observer.see(effects, machine)


@settings(max_examples=400, deadline=None)
@given(capture_settings, steps)
def test_random_streams_never_raise_or_leak(
    machine_settings: CaptureSettings, plan: list[tuple[str, str, int]]
) -> None:
    machine = CaptureMachine(machine_settings)
    observer = Observer(machine_settings)
    _run(machine, observer, plan)
    for card in observer.completed:
        card.wipe()
        assert len(card.pan) == 0


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([pan for pan in TEST_PANS if len(pan) == primary_length(_brand(pan))]),
    st.booleans(),
    st.lists(st.integers(0, 7_000), min_size=23, max_size=23),
)
def test_a_valid_card_typed_at_any_pace_within_the_timeouts_completes(
    pan: str, show_bin: bool, gaps: list[int]
) -> None:
    # 23 keys at most 7 s apart stay inside the 20 s field and 180 s capture timeouts.
    code = "1234"[: security_code_length(_brand(pan))]
    machine_settings = CaptureSettings(today=TODAY, show_bin=show_bin, auto_submit=True)
    machine = CaptureMachine(machine_settings)
    observer = Observer(machine_settings)
    observer.see(machine.start(0), machine)
    now_ms = 0
    for key, gap_ms in zip(pan + "1230" + code, gaps, strict=False):
        now_ms += gap_ms
        observer.see(machine.digit(key, now_ms), machine)
    assert machine.state is State.SUBMITTED
    (card,) = observer.completed
    assert card.pan.reveal() == pan
    card.wipe()
