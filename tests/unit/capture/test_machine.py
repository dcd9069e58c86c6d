"""The capture state machine: every transition in the module's table, then each rule in turn."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from typing import Any

import pytest

from dtmfguard.capture.cards import Brand, Reason
from dtmfguard.capture.machine import (
    CancelReason,
    CaptureCancelled,
    CaptureCompleted,
    CaptureMachine,
    CaptureSettings,
    CardData,
    CommandRefused,
    Effect,
    Effects,
    Field,
    FieldRejected,
    ProgressChanged,
    State,
    mask_pan,
)
from dtmfguard.capture.sensitive import SensitiveDigits
from dtmfguard.errors import CaptureError, ConfigError

TODAY = (2025, 6)
VISA = "4111111111111111"
VISA_13 = "4222222222222"
AMEX = "378282246310005"
DINERS_14 = "36227206271667"
DINERS_16 = "3056930009020004"
UNIONPAY_19 = "6205500000000000004"
EXPIRY = "1230"
CVV = "123"
KEY_GAP_MS = 250

# (card number, brand, length at which it completes by itself, security-code length)
CARDS: list[tuple[str, Brand, int]] = [
    ("4111111111111111", Brand.VISA, 3),
    ("4242424242424242", Brand.VISA, 3),
    ("4012888888881881", Brand.VISA, 3),
    ("5555555555554444", Brand.MASTERCARD, 3),
    ("5105105105105100", Brand.MASTERCARD, 3),
    ("2223003122003222", Brand.MASTERCARD, 3),
    ("378282246310005", Brand.AMEX, 4),
    ("371449635398431", Brand.AMEX, 4),
    ("6011111111111117", Brand.DISCOVER, 3),
    ("6011000990139424", Brand.DISCOVER, 3),
    ("30569309025904", Brand.DINERS, 3),
    ("36227206271667", Brand.DINERS, 3),
    ("3530111333300000", Brand.JCB, 3),
    ("3566002020360505", Brand.JCB, 3),
    ("6200000000000005", Brand.UNIONPAY, 3),
    ("6759649826438453", Brand.MAESTRO, 3),
]


def _settings(**overrides: Any) -> CaptureSettings:
    return CaptureSettings(**{"today": TODAY, **overrides})


class Caller:
    """Drives a machine the way a call does: keys on a stream clock, effects collected."""

    def __init__(self, **overrides: Any) -> None:
        self.machine = CaptureMachine(_settings(**overrides))
        self.now_ms = 1_000

    def start(self) -> Effects:
        return self.machine.start(self.now_ms)

    def keys(self, keys: str, gap_ms: int = KEY_GAP_MS) -> Effects:
        effects: list[Effect] = []
        for key in keys:
            self.now_ms += gap_ms
            effects.extend(self.machine.digit(key, self.now_ms))
        return tuple(effects)

    def wait(self, ms: int) -> Effects:
        self.now_ms += ms
        return self.machine.tick(self.now_ms)


def _last_progress(effects: Effects) -> ProgressChanged:
    progress = [effect for effect in effects if isinstance(effect, ProgressChanged)]
    assert progress
    return progress[-1]


def _state(caller: Caller) -> State:
    # A call, so the type checker does not carry an earlier narrowing of the property across.
    return caller.machine.state


def _of(effects: Effects, kind: type[Any]) -> list[Any]:
    return [effect for effect in effects if isinstance(effect, kind)]


def _caller_in(state: str, **overrides: Any) -> Caller:
    caller = Caller(**overrides)
    if state == "idle":
        return caller
    caller.start()
    if state == "collecting":
        caller.keys("4111")
    elif state == "complete":
        caller.keys(VISA + EXPIRY + CVV)
    elif state == "cancelled":
        caller.machine.cancel(CancelReason.AGENT)
    elif state == "submitted":
        caller.keys(VISA + EXPIRY + CVV)
        caller.machine.submit()
    assert caller.machine.state == State(state)
    return caller


_ACTIONS: dict[str, Callable[[Caller], Effects]] = {
    "start": Caller.start,
    "clear": lambda caller: caller.machine.clear(caller.now_ms),
    "cancel": lambda caller: caller.machine.cancel(CancelReason.AGENT),
    "submit": lambda caller: caller.machine.submit(),
    "digit": lambda caller: caller.keys("5"),
    "star": lambda caller: caller.keys("*"),
    "tick": lambda caller: caller.wait(10),
    "capture-timeout": lambda caller: caller.wait(200_000),
}

_PROGRESS = ProgressChanged
# (state before, action, state after, effect types in order)
TRANSITIONS: list[tuple[str, str, State, list[type[Any]]]] = [
    ("idle", "start", State.COLLECTING, [_PROGRESS]),
    ("idle", "digit", State.IDLE, []),
    ("idle", "star", State.IDLE, []),
    ("idle", "tick", State.IDLE, []),
    ("idle", "capture-timeout", State.IDLE, []),
    ("idle", "clear", State.IDLE, [CommandRefused]),
    ("idle", "cancel", State.IDLE, [CommandRefused]),
    ("idle", "submit", State.IDLE, [CommandRefused]),
    ("collecting", "start", State.COLLECTING, [CommandRefused]),
    ("collecting", "digit", State.COLLECTING, [_PROGRESS]),
    ("collecting", "star", State.COLLECTING, [_PROGRESS]),
    ("collecting", "tick", State.COLLECTING, []),
    ("collecting", "clear", State.COLLECTING, [_PROGRESS]),
    ("collecting", "cancel", State.CANCELLED, [CaptureCancelled]),
    ("collecting", "submit", State.COLLECTING, [CommandRefused]),
    ("complete", "start", State.COMPLETE, [CommandRefused]),
    ("complete", "digit", State.COMPLETE, []),
    ("complete", "star", State.COMPLETE, []),
    ("complete", "tick", State.COMPLETE, []),
    ("complete", "capture-timeout", State.CANCELLED, [CaptureCancelled]),
    ("complete", "clear", State.COLLECTING, [_PROGRESS]),
    ("complete", "cancel", State.CANCELLED, [CaptureCancelled]),
    ("complete", "submit", State.SUBMITTED, [CaptureCompleted]),
    ("cancelled", "start", State.COLLECTING, [_PROGRESS]),
    ("cancelled", "digit", State.CANCELLED, []),
    ("cancelled", "tick", State.CANCELLED, []),
    ("cancelled", "clear", State.CANCELLED, [CommandRefused]),
    ("cancelled", "cancel", State.CANCELLED, [CommandRefused]),
    ("cancelled", "submit", State.CANCELLED, [CommandRefused]),
    ("submitted", "start", State.COLLECTING, [_PROGRESS]),
    ("submitted", "digit", State.SUBMITTED, []),
    ("submitted", "tick", State.SUBMITTED, []),
    ("submitted", "capture-timeout", State.SUBMITTED, []),
    ("submitted", "clear", State.SUBMITTED, [CommandRefused]),
    ("submitted", "cancel", State.SUBMITTED, [CommandRefused]),
    ("submitted", "submit", State.SUBMITTED, [CommandRefused]),
]


@pytest.mark.parametrize(
    ("before", "action", "after", "kinds"),
    TRANSITIONS,
    ids=[f"{before}-{action}" for before, action, _, _ in TRANSITIONS],
)
def test_transition(before: str, action: str, after: State, kinds: list[type[Any]]) -> None:
    caller = _caller_in(before)
    effects = _ACTIONS[action](caller)
    assert [type(effect) for effect in effects] == kinds
    assert caller.machine.state is after
    for effect in effects:
        if isinstance(effect, CommandRefused):
            assert effect == CommandRefused(action, State(before))  # type: ignore[arg-type]
        if isinstance(effect, ProgressChanged) and action in ("start", "clear"):
            assert effect == ProgressChanged(Field.PAN, 0, None, None, None, None)


@pytest.mark.parametrize(
    ("before", "reason"),
    [("collecting", CancelReason.AGENT), ("complete", CancelReason.HANGUP), ("collecting", "ng")],
)
def test_cancel_reports_its_reason(before: str, reason: CancelReason | str) -> None:
    caller = _caller_in(before)
    assert caller.machine.cancel(reason) == (CaptureCancelled(CancelReason(reason)),)


def test_cancel_refuses_an_unknown_reason_without_echoing_it() -> None:
    caller = _caller_in("collecting")
    with pytest.raises(CaptureError) as caught:
        caller.machine.cancel("4111111111111111")
    assert "4111" not in str(caught.value)
    assert caller.machine.state is State.COLLECTING


class TestWholeCapture:
    @pytest.mark.parametrize(("pan", "brand", "code_length"), CARDS, ids=[pan for pan, _, _ in CARDS])
    def test_card_number_expiry_code_then_submit(self, pan: str, brand: Brand, code_length: int) -> None:
        caller = Caller()
        caller.start()
        effects = caller.keys(pan)
        accepted, expiry_opened = effects[-2:]
        assert accepted == ProgressChanged(Field.PAN, len(pan), len(pan), brand, True, mask_pan(SensitiveDigits(pan)))
        assert expiry_opened == ProgressChanged(Field.EXPIRY, 0, 4, brand, None, accepted.masked_pan)
        effects = caller.keys(EXPIRY)
        assert effects[-1] == ProgressChanged(Field.CVV, 0, code_length, brand, None, accepted.masked_pan)
        effects = caller.keys("1234"[:code_length])
        assert effects[-1] == ProgressChanged(Field.CVV, code_length, code_length, brand, True, accepted.masked_pan)
        assert caller.machine.state is State.COMPLETE
        (completed,) = caller.machine.submit()
        assert isinstance(completed, CaptureCompleted)
        card = completed.card
        assert card.brand is brand
        assert card.pan.reveal() == pan
        assert card.expiry is not None
        assert card.expiry.reveal() == EXPIRY
        assert card.cvv is not None
        assert card.cvv.reveal() == "1234"[:code_length]
        assert card.postcode is None
        card.wipe()

    def test_progress_while_typing_the_card_number(self) -> None:
        caller = Caller()
        assert caller.start() == (ProgressChanged(Field.PAN, 0, None, None, None, None),)
        assert caller.keys("3") == (ProgressChanged(Field.PAN, 1, None, None, None, None),)
        assert caller.keys("7") == (ProgressChanged(Field.PAN, 2, 15, Brand.AMEX, None, None),)
        assert caller.keys("8282") == tuple(
            ProgressChanged(Field.PAN, count, 15, Brand.AMEX, None, None) for count in range(3, 7)
        )

    def test_a_prefix_of_no_brand_shows_invalid_at_once(self) -> None:
        caller = Caller()
        caller.start()
        assert caller.keys("9") == (ProgressChanged(Field.PAN, 1, None, None, False, None),)

    def test_submitted_card_is_owned_by_the_runner(self) -> None:
        caller = _caller_in("complete")
        (completed,) = caller.machine.submit()
        assert isinstance(completed, CaptureCompleted)
        caller.start()
        caller.keys(AMEX)
        caller.machine.cancel()
        # Later captures and their wipes leave the submitted card alone until its owner wipes it.
        assert completed.card.pan.reveal() == VISA
        with completed.card as card:
            assert card.cvv is not None
            assert len(card.cvv) == 3
        assert len(completed.card.pan) == 0
        assert completed.card.cvv is not None
        assert len(completed.card.cvv) == 0

    def test_auto_submit(self) -> None:
        caller = Caller(auto_submit=True)
        caller.start()
        effects = caller.keys(VISA + EXPIRY + CVV)
        assert isinstance(effects[-1], CaptureCompleted)
        assert caller.machine.state is State.SUBMITTED
        effects[-1].card.wipe()

    def test_card_number_only(self) -> None:
        caller = Caller(fields=("pan",))
        caller.start()
        effects = caller.keys(VISA)
        assert effects[-1].valid is True  # type: ignore[union-attr]
        assert caller.machine.state is State.COMPLETE
        (completed,) = caller.machine.submit()
        assert isinstance(completed, CaptureCompleted)
        assert completed.card.expiry is None
        assert completed.card.cvv is None

    def test_postcode(self) -> None:
        caller = Caller(fields=(Field.PAN, Field.EXPIRY, Field.CVV, Field.POSTCODE), postcode_max_digits=5)
        caller.start()
        effects = caller.keys(VISA + EXPIRY + CVV)
        assert effects[-1] == ProgressChanged(Field.POSTCODE, 0, 5, Brand.VISA, None, "•••• •••• •••• 1111")
        caller.keys("90210")
        assert caller.machine.state is State.COMPLETE
        (completed,) = caller.machine.submit()
        assert isinstance(completed, CaptureCompleted)
        assert completed.card.postcode is not None
        assert completed.card.postcode.reveal() == "90210"

    @pytest.mark.parametrize(("typed", "accepted"), [("123#", True), ("1234#", True), ("12#", False)])
    def test_postcode_hash_at_minimum(self, typed: str, accepted: bool) -> None:
        caller = Caller(fields=("pan", "postcode"), postcode_min_digits=3, postcode_max_digits=5)
        caller.start()
        caller.keys(VISA)
        effects = caller.keys(typed)
        if accepted:
            assert caller.machine.state is State.COMPLETE
        else:
            assert FieldRejected(Field.POSTCODE, Reason.LENGTH, 3) in effects


class TestCardNumberCompletion:
    """The completion rule: primary length by itself, ``#`` for other lengths."""

    def test_visa_completes_by_itself_at_16(self) -> None:
        caller = Caller()
        caller.start()
        assert caller.keys(VISA[:15])[-1].field is Field.PAN  # type: ignore[union-attr]
        assert caller.keys(VISA[15])[-1].field is Field.EXPIRY  # type: ignore[union-attr]

    def test_hash_ends_a_13_digit_visa(self) -> None:
        caller = Caller()
        caller.start()
        effects = caller.keys(VISA_13 + "#")
        assert effects[-2] == ProgressChanged(Field.PAN, 13, 13, Brand.VISA, True, "• •••• •••• 2222")
        assert caller.machine.field is Field.EXPIRY

    @pytest.mark.parametrize(
        ("typed", "reason"),
        [
            (VISA[:12] + "#", Reason.LENGTH),
            (VISA[:14] + "#", Reason.LENGTH),
            (AMEX[:14] + "#", Reason.LENGTH),
            ("4#", Reason.LENGTH),
            ("5#", Reason.BRAND),
            ("9111#", Reason.BRAND),
            (VISA_13[:-1] + "3#", Reason.LUHN),
        ],
    )
    def test_hash_at_an_invalid_length_is_rejected(self, typed: str, reason: Reason) -> None:
        caller = Caller()
        caller.start()
        effects = caller.keys(typed)
        assert effects[-2:] == (
            FieldRejected(Field.PAN, reason, 3),
            ProgressChanged(Field.PAN, 0, None, None, None, None),
        )

    def test_hash_on_an_empty_field_is_ignored(self) -> None:
        caller = Caller()
        caller.start()
        assert caller.keys("#") == ()
        assert caller.machine.field is Field.PAN

    def test_luhn_failure_at_the_primary_length(self) -> None:
        caller = Caller()
        caller.start()
        changed = VISA[:-1] + "2"
        effects = caller.keys(changed)
        assert effects[-2:] == (
            FieldRejected(Field.PAN, Reason.LUHN, 3),
            ProgressChanged(Field.PAN, 0, None, None, None, None),
        )

    def test_unknown_brand_ends_at_16_and_is_rejected(self) -> None:
        caller = Caller()
        caller.start()
        effects = caller.keys("9" + VISA[1:])
        assert effects[-2] == FieldRejected(Field.PAN, Reason.BRAND, 3)
        assert [effect.valid for effect in _of(effects[:-2], ProgressChanged)] == [False] * 15

    def test_diners_completes_at_14(self) -> None:
        caller = Caller()
        caller.start()
        assert caller.keys(DINERS_14)[-1].field is Field.EXPIRY  # type: ignore[union-attr]

    def test_default_mode_takes_only_16_digits_of_a_19_digit_card(self) -> None:
        caller = Caller()
        caller.start()
        effects = caller.keys(UNIONPAY_19[:16])
        assert _of(effects, FieldRejected) == [FieldRejected(Field.PAN, Reason.LUHN, 3)]

    @pytest.mark.parametrize(
        ("typed", "length", "masked"),
        [
            (UNIONPAY_19, 19, "••• •••• •••• •••• 0004"),
            (VISA + "#", 16, "•••• •••• •••• 1111"),
            (DINERS_16 + "#", 16, "•••• •••• •••• 0004"),
            (DINERS_14 + "#", 14, "•• •••• •••• 1667"),
            (AMEX, 15, "••• •••• •••• 0005"),
        ],
    )
    def test_hash_mode_allows_long_numbers(self, typed: str, length: int, masked: str) -> None:
        caller = Caller(pan_ends_with_hash=True)
        caller.start()
        effects = caller.keys(typed)
        accepted = _of(effects, ProgressChanged)[-2]
        assert (accepted.field, accepted.digits_entered, accepted.valid, accepted.masked_pan) == (
            Field.PAN,
            length,
            True,
            masked,
        )
        assert caller.machine.field is Field.EXPIRY

    def test_hash_mode_expected_length_is_the_longest(self) -> None:
        caller = Caller(pan_ends_with_hash=True)
        caller.start()
        assert caller.keys("4")[-1].expected_length == 19  # type: ignore[union-attr]


class TestOtherFields:
    @pytest.mark.parametrize(
        ("expiry", "reason"),
        [("1325", Reason.MONTH), ("0025", Reason.MONTH), ("0525", Reason.EXPIRED), ("12#", Reason.LENGTH)],
    )
    def test_bad_expiry(self, expiry: str, reason: Reason) -> None:
        caller = Caller()
        caller.start()
        caller.keys(VISA)
        effects = caller.keys(expiry)
        assert effects[-2] == FieldRejected(Field.EXPIRY, reason, 3)
        assert effects[-1] == ProgressChanged(Field.EXPIRY, 0, 4, Brand.VISA, None, "•••• •••• •••• 1111")

    def test_the_current_month_is_still_valid(self) -> None:
        caller = Caller()
        caller.start()
        caller.keys(VISA)
        assert caller.keys("0625")[-1].field is Field.CVV  # type: ignore[union-attr]

    @pytest.mark.parametrize(("pan", "short_code"), [(AMEX, "123#"), (VISA, "12#")])
    def test_short_security_code(self, pan: str, short_code: str) -> None:
        caller = Caller()
        caller.start()
        caller.keys(pan + EXPIRY)
        assert FieldRejected(Field.CVV, Reason.LENGTH, 3) in caller.keys(short_code)


class TestStarAndClear:
    def test_star_clears_only_the_current_field(self) -> None:
        caller = Caller()
        caller.start()
        caller.keys(VISA + "12")
        assert caller.keys("*") == (ProgressChanged(Field.EXPIRY, 0, 4, Brand.VISA, None, "•••• •••• •••• 1111"),)
        caller.keys(EXPIRY + CVV)
        assert caller.machine.state is State.COMPLETE

    def test_star_costs_no_retry(self) -> None:
        caller = Caller(max_retries=0)
        caller.start()
        for _ in range(5):
            assert not _of(caller.keys("4111*"), FieldRejected)
        caller.keys(VISA)
        assert caller.machine.field is Field.EXPIRY

    def test_star_on_an_empty_field(self) -> None:
        caller = Caller()
        caller.start()
        assert caller.keys("*") == (ProgressChanged(Field.PAN, 0, None, None, None, None),)

    def test_clear_restarts_at_the_card_number_and_resets_retries(self) -> None:
        caller = Caller()
        caller.start()
        caller.keys(VISA + "1325")
        caller.keys("1325")
        assert caller.keys("1325")[-2] == FieldRejected(Field.EXPIRY, Reason.MONTH, 1)
        assert caller.machine.clear(caller.now_ms) == (ProgressChanged(Field.PAN, 0, None, None, None, None),)
        caller.keys(VISA)
        assert caller.keys("1325")[-2] == FieldRejected(Field.EXPIRY, Reason.MONTH, 3)

    @pytest.mark.parametrize("end", ["cancel", "clear", "reject"])
    def test_digits_are_wiped_when_dropped(self, end: str) -> None:
        caller = Caller()
        caller.start()
        caller.keys(VISA + EXPIRY + "1")
        # White-box: keep the machine's own buffers to prove they were overwritten.
        buffers = list(caller.machine._buffers.values())
        if end == "cancel":
            caller.machine.cancel()
        elif end == "clear":
            caller.machine.clear(caller.now_ms)
        else:
            assert FieldRejected(Field.CVV, Reason.LENGTH, 3) in caller.keys("#")
            buffers = [caller.machine._buffers[Field.CVV]]
        for buffer in buffers:
            assert len(buffer) == 0
            assert bytes(buffer._buf) == bytes(buffer.capacity)


class TestRetries:
    def test_retries_count_down_then_cancel(self) -> None:
        caller = Caller(max_retries=3)
        caller.start()
        bad = "9" + VISA[1:]
        left = [_of(caller.keys(bad), FieldRejected)[0].retries_left for _ in range(3)]
        assert left == [3, 2, 1]
        effects = caller.keys(bad)
        assert effects[-2:] == (
            FieldRejected(Field.PAN, Reason.BRAND, 0),
            CaptureCancelled(CancelReason.TOO_MANY_RETRIES),
        )
        assert caller.machine.state is State.CANCELLED

    def test_zero_retries_cancels_on_the_first_failure(self) -> None:
        caller = Caller(max_retries=0)
        caller.start()
        effects = caller.keys("5#")
        assert effects[-2:] == (
            FieldRejected(Field.PAN, Reason.BRAND, 0),
            CaptureCancelled(CancelReason.TOO_MANY_RETRIES),
        )

    def test_retries_are_counted_per_field(self) -> None:
        caller = Caller(max_retries=1)
        caller.start()
        assert _of(caller.keys("5#"), FieldRejected)[0].retries_left == 1
        caller.keys(VISA)
        assert _of(caller.keys("1325"), FieldRejected)[0].retries_left == 1

    def test_digits_after_cancellation_are_dropped(self) -> None:
        caller = Caller(max_retries=0)
        caller.start()
        caller.keys("5#")
        assert caller.keys(VISA) == ()


class TestTimeouts:
    def test_field_timeout_restarts_at_every_key(self) -> None:
        caller = Caller(field_timeout_ms=20_000)
        caller.start()
        assert caller.wait(19_999) == ()
        caller.keys("4", gap_ms=0)
        assert caller.wait(19_999) == ()
        assert caller.wait(1) == (
            FieldRejected(Field.PAN, Reason.TIMEOUT, 3),
            ProgressChanged(Field.PAN, 0, None, None, None, None),
        )

    def test_field_timeout_wipes_the_field(self) -> None:
        caller = Caller()
        caller.start()
        caller.keys(VISA + "12")
        buffer = caller.machine._buffers[Field.EXPIRY]
        caller.wait(20_000)
        assert len(buffer) == 0
        assert bytes(buffer._buf) == bytes(buffer.capacity)

    def test_a_late_key_first_applies_the_timeout(self) -> None:
        caller = Caller()
        caller.start()
        caller.keys("4")
        effects = caller.keys("3", gap_ms=25_000)
        assert effects == (
            FieldRejected(Field.PAN, Reason.TIMEOUT, 3),
            ProgressChanged(Field.PAN, 0, None, None, None, None),
            ProgressChanged(Field.PAN, 1, None, None, None, None),
        )

    def test_a_late_tick_fires_each_timeout_at_its_own_stream_time(self) -> None:
        caller = Caller(field_timeout_ms=20_000, max_retries=2)
        caller.start()
        effects = caller.wait(65_000)
        assert [type(effect) for effect in effects] == [
            FieldRejected,
            ProgressChanged,
            FieldRejected,
            ProgressChanged,
            FieldRejected,
            CaptureCancelled,
        ]
        assert effects[-1] == CaptureCancelled(CancelReason.TOO_MANY_RETRIES)

    def test_late_tick_stops_at_the_timeouts_actually_due(self) -> None:
        caller = Caller(field_timeout_ms=20_000)
        caller.start()
        assert len(_of(caller.wait(45_000), FieldRejected)) == 2
        assert caller.wait(14_999) == ()
        assert len(_of(caller.wait(1), FieldRejected)) == 1

    def test_capture_timeout_while_collecting(self) -> None:
        caller = Caller(field_timeout_ms=20_000, capture_timeout_ms=60_000)
        caller.start()
        caller.keys("4*4*4", gap_ms=10_000)
        assert caller.machine.state is State.COLLECTING
        assert caller.keys("4", gap_ms=10_000) == (CaptureCancelled(CancelReason.TIMEOUT),)
        assert _state(caller) is State.CANCELLED

    def test_capture_timeout_wins_a_tie_with_the_field_timeout(self) -> None:
        caller = Caller(field_timeout_ms=30_000, capture_timeout_ms=30_000)
        caller.start()
        assert caller.wait(30_000) == (CaptureCancelled(CancelReason.TIMEOUT),)

    def test_capture_timeout_when_complete_wipes_the_card(self) -> None:
        caller = _caller_in("complete", capture_timeout_ms=60_000)
        buffers = list(caller.machine._buffers.values())
        assert caller.wait(60_000) == (CaptureCancelled(CancelReason.TIMEOUT),)
        assert all(len(buffer) == 0 for buffer in buffers)

    def test_submit_with_a_time_applies_the_timeout_first(self) -> None:
        caller = _caller_in("complete", capture_timeout_ms=60_000)
        assert caller.machine.submit(caller.now_ms + 60_000) == (
            CaptureCancelled(CancelReason.TIMEOUT),
            CommandRefused("submit", State.CANCELLED),
        )

    def test_start_after_an_unnoticed_timeout(self) -> None:
        caller = _caller_in("complete", capture_timeout_ms=60_000)
        effects = caller.machine.start(caller.now_ms + 60_000)
        assert [type(effect) for effect in effects] == [CaptureCancelled, ProgressChanged]
        assert caller.machine.state is State.COLLECTING

    def test_stream_time_never_goes_backwards(self) -> None:
        caller = Caller()
        caller.start()
        caller.machine.digit("4", 10_000)
        assert caller.machine.digit("1", 2_000) == (ProgressChanged(Field.PAN, 2, 16, Brand.VISA, None, None),)
        assert caller.machine.tick(29_999) == ()
        assert _of(caller.machine.tick(30_000), FieldRejected)


class TestOddInput:
    @pytest.mark.parametrize("key", ["A", "B", "C", "D", "", "44", " ", "x", "\u0664"])
    def test_other_keys_are_ignored(self, key: str) -> None:
        caller = _caller_in("collecting")
        assert caller.machine.digit(key, caller.now_ms) == ()


class TestSettings:
    @pytest.mark.parametrize(
        "overrides",
        [
            {"fields": ("expiry", "cvv")},
            {"fields": ("pan", "cvv", "expiry")},
            {"fields": ("pan", "pan")},
            {"fields": ("pan", "zip")},
            {"postcode_min_digits": 6, "postcode_max_digits": 5},
            {"postcode_min_digits": 0},
            {"postcode_max_digits": 17},
            {"field_timeout_ms": 0},
            {"capture_timeout_ms": -1},
            {"max_retries": -1},
            {"today": (2025, 13)},
            {"today": (2025, 0)},
        ],
    )
    def test_invalid(self, overrides: dict[str, Any]) -> None:
        with pytest.raises(ConfigError):
            _settings(**overrides)

    def test_defaults(self) -> None:
        settings = _settings()
        assert settings.fields == (Field.PAN, Field.EXPIRY, Field.CVV)
        assert (settings.field_timeout_ms, settings.capture_timeout_ms, settings.max_retries) == (20_000, 180_000, 3)
        assert settings.show_bin is False
        assert settings.pan_ends_with_hash is False
        assert settings.auto_submit is False

    def test_field_names_as_strings(self) -> None:
        assert _settings(fields=("pan", "cvv")).fields == (Field.PAN, Field.CVV)


class TestMasking:
    @pytest.mark.parametrize(
        ("pan", "show_bin", "masked"),
        [
            (VISA, False, "•••• •••• •••• 1111"),
            (VISA, True, "4111 11•• •••• 1111"),
            (AMEX, False, "••• •••• •••• 0005"),
            (AMEX, True, "378 282• •••• 0005"),
            (DINERS_14, True, "•• •••• •••• 1667"),
            (VISA_13, True, "• •••• •••• 2222"),
            (UNIONPAY_19, True, "620 550• •••• •••• 0004"),
        ],
    )
    def test_mask_pan(self, pan: str, show_bin: bool, masked: str) -> None:
        assert mask_pan(SensitiveDigits(pan), show_bin=show_bin) == masked

    def test_show_bin_in_progress(self) -> None:
        caller = Caller(show_bin=True)
        caller.start()
        assert caller.keys(VISA)[-1].masked_pan == "4111 11•• •••• 1111"  # type: ignore[union-attr]

    def test_masked_pan_appears_only_once_the_number_is_accepted(self) -> None:
        caller = Caller()
        caller.start()
        effects = caller.keys(VISA)
        assert [effect.masked_pan for effect in _of(effects, ProgressChanged)][:15] == [None] * 15


class TestCardData:
    def _card(self) -> CardData:
        return CardData(Brand.VISA, SensitiveDigits(VISA), SensitiveDigits(EXPIRY), SensitiveDigits(CVV))

    def test_repr_shows_only_brand_and_lengths(self) -> None:
        assert repr(self._card()) == (
            "CardData(brand='visa', pan=SensitiveDigits(len=16), expiry=SensitiveDigits(len=4), "
            "cvv=SensitiveDigits(len=3), postcode=None)"
        )
        assert str(CaptureCompleted(self._card())).count("SensitiveDigits") == 3

    def test_wipe_and_context_manager(self) -> None:
        card = self._card()
        with card:
            pass
        assert card.pan.reveal() == ""
        assert card.cvv is not None
        assert card.cvv.reveal() == ""

    @pytest.mark.parametrize("clone", [copy.copy, copy.deepcopy, pickle.dumps])
    def test_not_copied(self, clone: Callable[[CardData], object]) -> None:
        with pytest.raises(CaptureError):
            clone(self._card())


def test_machine_repr_has_no_digits() -> None:
    caller = _caller_in("collecting")
    assert repr(caller.machine) == "CaptureMachine(state='collecting', field='pan')"
    caller.keys(VISA[4:] + "12")
    assert not any(char.isdigit() for char in repr(caller.machine))
