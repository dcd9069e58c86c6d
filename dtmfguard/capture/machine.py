"""The card-capture state machine: keypad digits in, effects out, on stream time.

A :class:`CaptureMachine` collects the card number, expiry, security code and optional postcode
that a caller types during a capture, validates each field as it completes, and returns effects
(:class:`ProgressChanged`, :class:`FieldRejected`, :class:`CaptureCompleted`,
:class:`CaptureCancelled`, :class:`CommandRefused`) for the session runner to turn into agent
messages and gateway calls. It does no I/O and reads no clock: every method that depends on time
takes the stream time in milliseconds. It serves PCI DSS v4.0.1 requirement 3.4.1 (the agent's
progress shows at most the last four digits, or BIN and last four when configured), 3.3.1 (a
rejected, cleared, cancelled or timed-out field is wiped at once; the security code lives only
in a wipeable buffer handed to the runner on submit) and 3.5 (digits stay in
:class:`~dtmfguard.capture.sensitive.SensitiveDigits`; no effect or ``repr`` carries them).

States and transitions (``collecting`` always has a current field)::

    state       event                       next                 effects
    idle        start                       collecting(first)    Progress
    collecting  digit, field not done       collecting           Progress
    collecting  digit/#, field valid        collecting(next)     Progress(valid), Progress(next)
    collecting  digit/#, last field valid   complete             Progress(valid)   (+ submit if auto_submit)
    collecting  digit/#, field invalid      collecting(same)     FieldRejected, Progress   (digits wiped)
    collecting  ... no retries left         cancelled            FieldRejected, CaptureCancelled(too_many_retries)
    collecting  * / # on an empty field     collecting(same)     Progress / nothing
    collecting  field timeout               as "field invalid" with reason timeout
    collecting  capture timeout             cancelled            CaptureCancelled(timeout)
    collecting  clear                       collecting(first)    Progress   (everything wiped, timers restart)
    complete    submit                      submitted            CaptureCompleted
    complete    clear                       collecting(first)    Progress
    complete    capture timeout             cancelled            CaptureCancelled(timeout)
    collecting, complete   cancel(reason)   cancelled            CaptureCancelled(reason)
    cancelled, submitted   start            collecting(first)    Progress   (a new capture)
    complete    digit (any key)             complete             nothing (the digit is dropped)
    idle, cancelled, submitted   digit/tick  unchanged           nothing (digits are dropped)
    any         a command not listed above  unchanged            CommandRefused

Card-number completion rule. Once the brand is known from the leading digits, the card number
completes by itself when it reaches the brand's primary length (16; American Express 15; Diners
14); ``#`` ends it earlier at any other valid length (Visa 13, Maestro 12-15). With
``pan_ends_with_hash`` the caller is expected to press ``#``: the number then completes by itself
only at the brand's longest length (19 for most brands), so 17-19 digit numbers and 16-digit
Diners numbers can be entered. A number whose leading digits match no brand completes at 16
digits (19 with ``pan_ends_with_hash``) or ``#`` and is rejected with reason ``brand``. The other
fields complete at their length (expiry 4, security code 3 or 4 for the brand, postcode its
maximum), and ``#`` ends them early, which is valid only for a postcode of at least its minimum.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Any, Literal, NoReturn, SupportsIndex, TypeAlias

from dtmfguard.capture.cards import (
    EXPIRY_LENGTH,
    MAX_PAN_LENGTH,
    Brand,
    Reason,
    check_expiry,
    detect_brand,
    max_length,
    pan_reason,
    possible_brands,
    primary_length,
    security_code_length,
)
from dtmfguard.capture.sensitive import SensitiveDigits
from dtmfguard.errors import CaptureError, ConfigError

MASK_CHAR = "\u2022"  # bullet; never a digit, and not the keypad's "*"
BIN_LENGTH = 6
LAST_LENGTH = 4
# The BIN is shown only on numbers long enough to keep at least five digits hidden.
BIN_MIN_PAN_LENGTH = 15
_UNKNOWN_BRAND_PAN_LENGTH = 16
_MAX_CODE_LENGTH = 4
_MAX_POSTCODE_DIGITS = 16
_DIGIT_KEYS = frozenset("0123456789")


class Field(StrEnum):
    """The fields of a capture, in the only order they may be configured."""

    PAN = "pan"
    EXPIRY = "expiry"
    CVV = "cvv"
    POSTCODE = "postcode"


class State(StrEnum):
    """Where a capture is: see the transition table in the module docstring."""

    IDLE = "idle"
    COLLECTING = "collecting"
    COMPLETE = "complete"
    CANCELLED = "cancelled"
    SUBMITTED = "submitted"


class CancelReason(StrEnum):
    """Why a capture ended without being submitted."""

    AGENT = "agent"
    API = "api"
    NG = "ng"
    HANGUP = "hangup"
    ERROR = "error"
    TIMEOUT = "timeout"
    TOO_MANY_RETRIES = "too_many_retries"


Command: TypeAlias = Literal["start", "clear", "cancel", "submit"]

_FIELD_ORDER = (Field.PAN, Field.EXPIRY, Field.CVV, Field.POSTCODE)


@dataclass(frozen=True, slots=True, kw_only=True)
class CaptureSettings:
    """How one capture runs. Times are stream time in milliseconds.

    ``today`` is (year, month) for the expiry check, injected by the caller. ``fields`` must
    contain ``pan`` and keep the order pan, expiry, cvv, postcode. ``field_timeout_ms`` is the
    longest pause allowed within a field (it restarts when the field opens and at every key);
    ``capture_timeout_ms`` bounds the whole capture from start (or clear) to submit. A field is
    re-opened after each failure at most ``max_retries`` times. ``show_bin`` lets progress show
    the BIN with the last four digits. ``pan_ends_with_hash`` and the completion rule are
    described in the module docstring; ``auto_submit`` emits :class:`CaptureCompleted` as soon as
    the last field is valid, for captures with no agent to press submit.

    Raises ConfigError naming the setting when a value is out of range.
    """

    today: tuple[int, int]
    fields: tuple[Field, ...] = (Field.PAN, Field.EXPIRY, Field.CVV)
    postcode_min_digits: int = 5
    postcode_max_digits: int = 5
    field_timeout_ms: int = 20_000
    capture_timeout_ms: int = 180_000
    max_retries: int = 3
    show_bin: bool = False
    pan_ends_with_hash: bool = False
    auto_submit: bool = False

    def __post_init__(self) -> None:
        if len(self.today) != 2 or not 1 <= self.today[1] <= 12:
            raise ConfigError("today: (year, month) with month 1-12")
        try:
            fields = tuple(Field(field) for field in self.fields)
        except ValueError:
            raise ConfigError("fields: known fields are pan, expiry, cvv, postcode") from None
        # Frozen: normalise plain strings to Field members the one sanctioned way.
        object.__setattr__(self, "fields", fields)
        if Field.PAN not in fields:
            raise ConfigError("fields: the card number (pan) is required")
        positions = [_FIELD_ORDER.index(field) for field in fields]
        if positions != sorted(set(positions)):
            raise ConfigError("fields: each at most once, in the order pan, expiry, cvv, postcode")
        if not 1 <= self.postcode_min_digits <= self.postcode_max_digits <= _MAX_POSTCODE_DIGITS:
            raise ConfigError(f"postcode digits: need 1 <= min <= max <= {_MAX_POSTCODE_DIGITS}")
        if self.field_timeout_ms <= 0 or self.capture_timeout_ms <= 0:
            raise ConfigError("timeouts: must be positive")
        if self.max_retries < 0:
            raise ConfigError("max_retries: must not be negative")


class CardData:
    """The digits of one completed capture, handed to the runner for the gateway request.

    The owner wipes it (``wipe()`` or ``with card:``) once the gateway has answered; the
    security code must never be written anywhere but that request. Fields not configured for
    the capture are None. Cannot be pickled or copied; ``repr`` shows only the brand and lengths.
    """

    __slots__ = ("brand", "pan", "expiry", "cvv", "postcode")

    def __init__(
        self,
        brand: Brand,
        pan: SensitiveDigits,
        expiry: SensitiveDigits | None = None,
        cvv: SensitiveDigits | None = None,
        postcode: SensitiveDigits | None = None,
    ) -> None:
        self.brand = brand
        self.pan = pan
        self.expiry = expiry
        self.cvv = cvv
        self.postcode = postcode

    def _parts(self) -> Iterable[SensitiveDigits | None]:
        return (self.pan, self.expiry, self.cvv, self.postcode)

    def wipe(self) -> None:
        """Overwrite every field's digits with zeros."""
        for part in self._parts():
            if part is not None:
                part.wipe()

    def __enter__(self) -> CardData:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.wipe()

    def __repr__(self) -> str:
        return (
            f"CardData(brand={self.brand.value!r}, pan={self.pan!r}, expiry={self.expiry!r}, "
            f"cvv={self.cvv!r}, postcode={self.postcode!r})"
        )

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        raise CaptureError("card data cannot be pickled")

    def __copy__(self) -> NoReturn:
        raise CaptureError("card data cannot be copied")

    def __deepcopy__(self, memo: dict[int, Any]) -> NoReturn:
        raise CaptureError("card data cannot be copied")


@dataclass(frozen=True, slots=True)
class ProgressChanged:
    """What the agent may see of the field being typed: counts, brand, validity, masked PAN.

    ``expected_length`` is the length at which the field completes by itself (None while the
    card brand is unknown; the length typed once the field is accepted); ``valid`` is True when
    the field has just been accepted, False while the typed prefix already matches no brand,
    else None; ``masked_pan`` is set once the card number is accepted.
    """

    field: Field
    digits_entered: int
    expected_length: int | None
    brand: Brand | None
    valid: bool | None
    masked_pan: str | None


@dataclass(frozen=True, slots=True)
class FieldRejected:
    """A field failed a check (or timed out), was wiped and re-opened.

    ``retries_left`` counts the re-entries still allowed, including the one now opening; 0
    means the capture is cancelled with ``too_many_retries`` right after this effect.
    """

    field: Field
    reason: Reason
    retries_left: int


@dataclass(frozen=True, slots=True)
class CaptureCompleted:
    """The capture was submitted: the runner now owns ``card`` and must wipe it."""

    card: CardData


@dataclass(frozen=True, slots=True)
class CaptureCancelled:
    """The capture ended without a submit; every digit has been wiped."""

    reason: CancelReason


@dataclass(frozen=True, slots=True)
class CommandRefused:
    """An agent or API command is not allowed in the machine's current state."""

    command: Command
    state: State


Effect: TypeAlias = ProgressChanged | FieldRejected | CaptureCompleted | CaptureCancelled | CommandRefused
Effects: TypeAlias = tuple[Effect, ...]


def mask_pan(pan: SensitiveDigits, *, show_bin: bool = False) -> str:
    """Mask a complete card number for display, grouped in fours from the right.

    Shows the last four digits, and with ``show_bin`` also the first six when the number has
    at least ``BIN_MIN_PAN_LENGTH`` digits: ``•••• •••• •••• 1111`` or ``4111 11•• •••• 1111``.
    Raises CaptureError for fewer than four digits.
    """
    length = len(pan)
    head = pan.bin6() if show_bin and length >= BIN_MIN_PAN_LENGTH else ""
    shown = head + MASK_CHAR * (length - len(head) - LAST_LENGTH) + pan.last4()
    groups = [shown[max(end - 4, 0) : end] for end in range(length, 0, -4)]
    return " ".join(reversed(groups))


class CaptureMachine:
    """One capture at a time for one call; every method returns the effects it caused.

    Stream times passed in may repeat but never move the machine backwards (a smaller time is
    treated as the latest one seen). Methods never raise on keypad input; ``cancel`` raises
    CaptureError for an unknown reason.
    """

    def __init__(self, settings: CaptureSettings) -> None:
        self._settings = settings
        self._state = State.IDLE
        self._index = 0
        self._buffers: dict[Field, SensitiveDigits] = {}
        self._failures: dict[Field, int] = {}
        self._brand: Brand | None = None
        self._masked_pan: str | None = None
        self._now_ms: int | None = None
        self._capture_deadline_ms = 0
        self._field_deadline_ms = 0

    @property
    def state(self) -> State:
        return self._state

    @property
    def field(self) -> Field | None:
        """The field being collected, or None outside ``collecting``."""
        return self._settings.fields[self._index] if self._state is State.COLLECTING else None

    def __repr__(self) -> str:
        field = self.field
        return f"CaptureMachine(state={self._state.value!r}, field={field.value if field else None!r})"

    # -- commands ---------------------------------------------------------------------------------

    def start(self, now_ms: int) -> Effects:
        """Begin a capture at the first field (from idle, cancelled or submitted)."""
        effects = self._advance(now_ms)
        if self._state in (State.COLLECTING, State.COMPLETE):
            return (*effects, CommandRefused("start", self._state))
        return (*effects, *self._open(self._time()))

    def clear(self, now_ms: int) -> Effects:
        """Agent clear: wipe everything and restart the capture at the first field."""
        effects = self._advance(now_ms)
        if self._state not in (State.COLLECTING, State.COMPLETE):
            return (*effects, CommandRefused("clear", self._state))
        return (*effects, *self._open(self._time()))

    def cancel(self, reason: CancelReason | str = CancelReason.AGENT) -> Effects:
        """End the capture without submitting; every digit is wiped."""
        try:
            why = CancelReason(reason)
        except ValueError:
            raise CaptureError("unknown cancel reason") from None
        if self._state not in (State.COLLECTING, State.COMPLETE):
            return (CommandRefused("cancel", self._state),)
        return self._cancel(why)

    def submit(self, now_ms: int | None = None) -> Effects:
        """Hand the completed card to the runner as :class:`CaptureCompleted`.

        With ``now_ms``, timeouts up to that time apply first. Refused unless complete.
        """
        effects = self._advance(now_ms) if now_ms is not None else ()
        if self._state is not State.COMPLETE:
            return (*effects, CommandRefused("submit", self._state))
        return (*effects, self._submit())

    # -- stream events ------------------------------------------------------------------------------

    def digit(self, key: str, now_ms: int) -> Effects:
        """A keypad key at stream time ``now_ms``: ``0``-``9``, ``*`` (clear field), ``#`` (end field).

        Other keys (``A``-``D``) and any key outside ``collecting`` are dropped with no effect.
        """
        effects = self._advance(now_ms)
        if self._state is not State.COLLECTING:
            return effects
        now = self._time()
        field, buffer = self._current()
        if key in _DIGIT_KEYS:
            buffer.append(key)
            self._field_deadline_ms = now + self._settings.field_timeout_ms
            if len(buffer) >= self._completion_length(field, buffer):
                return (*effects, *self._finish_field(now))
            return (*effects, self._progress())
        if key == "*":
            buffer.wipe()
            self._field_deadline_ms = now + self._settings.field_timeout_ms
            return (*effects, self._progress())
        if key == "#" and len(buffer) > 0:
            return (*effects, *self._finish_field(now))
        return effects

    def tick(self, now_ms: int) -> Effects:
        """Apply the field and capture timeouts due by stream time ``now_ms``."""
        return self._advance(now_ms)

    # -- internals ------------------------------------------------------------------------------

    def _time(self) -> int:
        return 0 if self._now_ms is None else self._now_ms

    def _current(self) -> tuple[Field, SensitiveDigits]:
        field = self._settings.fields[self._index]
        return field, self._buffers[field]

    def _capacity(self, field: Field) -> int:
        if field is Field.PAN:
            return MAX_PAN_LENGTH
        if field is Field.EXPIRY:
            return EXPIRY_LENGTH
        if field is Field.CVV:
            return _MAX_CODE_LENGTH
        return self._settings.postcode_max_digits

    def _open(self, now: int) -> Effects:
        self._drop_buffers()
        self._buffers = {field: SensitiveDigits(capacity=self._capacity(field)) for field in self._settings.fields}
        self._failures = dict.fromkeys(self._settings.fields, 0)
        self._index = 0
        self._state = State.COLLECTING
        self._capture_deadline_ms = now + self._settings.capture_timeout_ms
        self._field_deadline_ms = now + self._settings.field_timeout_ms
        return (self._progress(),)

    def _drop_buffers(self) -> None:
        for buffer in self._buffers.values():
            buffer.wipe()
        self._buffers = {}
        self._brand = None
        self._masked_pan = None

    def _advance(self, now_ms: int) -> Effects:
        """Move stream time forward to ``now_ms`` and fire every timeout due by then, in order."""
        if self._now_ms is None or now_ms > self._now_ms:
            self._now_ms = now_ms
        now = self._now_ms
        effects: list[Effect] = []
        while self._state in (State.COLLECTING, State.COMPLETE):
            field_due = self._field_deadline_ms if self._state is State.COLLECTING else None
            if now >= self._capture_deadline_ms and (field_due is None or self._capture_deadline_ms <= field_due):
                effects.extend(self._cancel(CancelReason.TIMEOUT))
            elif field_due is not None and now >= field_due:
                # The field timed out at its deadline, not at the (possibly later) time of this call.
                effects.extend(self._reject(Reason.TIMEOUT, field_due))
            else:
                break
        return tuple(effects)

    def _completion_length(self, field: Field, buffer: SensitiveDigits) -> int:
        """Digits at which ``field`` ends by itself (see the completion rule above)."""
        if field is not Field.PAN:
            length = self._expected_length(field, buffer)
            assert length is not None  # only the card number can have an unknown length
            return length
        brand = detect_brand(buffer.bin6())
        if brand is None:
            return MAX_PAN_LENGTH if self._settings.pan_ends_with_hash else _UNKNOWN_BRAND_PAN_LENGTH
        return max_length(brand) if self._settings.pan_ends_with_hash else primary_length(brand)

    def _expected_length(self, field: Field, buffer: SensitiveDigits) -> int | None:
        if field is Field.PAN:
            brand = detect_brand(buffer.bin6())
            if brand is None:
                return None
            return self._completion_length(field, buffer)
        if field is Field.EXPIRY:
            return EXPIRY_LENGTH
        if field is Field.CVV:
            return security_code_length(self._brand) if self._brand is not None else None
        return self._settings.postcode_max_digits

    def _progress(self, *, valid: bool | None = None) -> ProgressChanged:
        field, buffer = self._current()
        brand = self._brand
        if field is Field.PAN:
            prefix = buffer.bin6()
            brand = detect_brand(prefix)
            if valid is None and buffer and not possible_brands(prefix):
                valid = False
        # An accepted field's length is the one that counted, even if `#` ended it early.
        expected = len(buffer) if valid else self._expected_length(field, buffer)
        return ProgressChanged(
            field=field,
            digits_entered=len(buffer),
            expected_length=expected,
            brand=brand,
            valid=valid,
            masked_pan=self._masked_pan,
        )

    def _check(self, field: Field, buffer: SensitiveDigits) -> Reason | None:
        """Validate a field that has just ended; a reason code, or None when it is valid."""
        if field is Field.PAN:
            return pan_reason(buffer.bin6(), len(buffer), buffer.luhn_ok())
        if field is Field.EXPIRY:
            # The expiry date is cardholder data but not sensitive authentication data; its four
            # digits are revealed only for this check and the string goes out of scope at once.
            return check_expiry(buffer.reveal(), self._settings.today)
        if field is Field.CVV:
            if self._brand is None or len(buffer) != security_code_length(self._brand):
                return Reason.LENGTH
            return None
        if not self._settings.postcode_min_digits <= len(buffer) <= self._settings.postcode_max_digits:
            return Reason.LENGTH
        return None

    def _finish_field(self, now: int) -> Effects:
        field, buffer = self._current()
        reason = self._check(field, buffer)
        if reason is not None:
            return self._reject(reason, now)
        if field is Field.PAN:
            self._brand = detect_brand(buffer.bin6())
            self._masked_pan = mask_pan(buffer, show_bin=self._settings.show_bin)
        effects: list[Effect] = [self._progress(valid=True)]
        if self._index + 1 < len(self._settings.fields):
            self._index += 1
            self._field_deadline_ms = now + self._settings.field_timeout_ms
            effects.append(self._progress())
        else:
            self._state = State.COMPLETE
            if self._settings.auto_submit:
                effects.append(self._submit())
        return tuple(effects)

    def _reject(self, reason: Reason, at_ms: int) -> Effects:
        field, buffer = self._current()
        buffer.wipe()
        self._failures[field] += 1
        retries_left = max(self._settings.max_retries - self._failures[field] + 1, 0)
        rejected = FieldRejected(field, reason, retries_left)
        if retries_left == 0:
            return (rejected, *self._cancel(CancelReason.TOO_MANY_RETRIES))
        self._field_deadline_ms = at_ms + self._settings.field_timeout_ms
        return (rejected, self._progress())

    def _cancel(self, reason: CancelReason) -> Effects:
        self._drop_buffers()
        self._state = State.CANCELLED
        return (CaptureCancelled(reason),)

    def _submit(self) -> CaptureCompleted:
        assert self._brand is not None  # complete implies an accepted card number
        parts = self._buffers
        card = CardData(
            self._brand,
            parts[Field.PAN],
            expiry=parts.get(Field.EXPIRY),
            cvv=parts.get(Field.CVV),
            postcode=parts.get(Field.POSTCODE),
        )
        # Ownership passes to the runner: drop the references without wiping.
        self._buffers = {}
        self._brand = None
        self._masked_pan = None
        self._state = State.SUBMITTED
        return CaptureCompleted(card)
