"""Card-number rules: Luhn, brand from IIN ranges, lengths, security-code length, expiry.

These checks let the capture session refuse a mistyped field while the caller is still on the
line, so that only plausible card data ever reaches the gateway. They serve PCI DSS v4.0.1
requirement 3.3.1 (no sensitive authentication data kept after authorization: a field that fails
is wiped and re-entered, never stored for later) and 3.4.1 (only the last four digits, or the
BIN and last four, are ever displayed): every check returns a :class:`Reason` code or ``None``,
never anything derived from the digits themselves. All functions are pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

_ZERO = ord("0")
_IIN_DIGITS = 6  # every range below is decided by at most six leading digits


class Brand(StrEnum):
    """Card schemes recognised from the issuer identification number."""

    VISA = "visa"
    MASTERCARD = "mastercard"
    AMEX = "amex"
    DISCOVER = "discover"
    DINERS = "diners"
    JCB = "jcb"
    UNIONPAY = "unionpay"
    MAESTRO = "maestro"


class Reason(StrEnum):
    """Why a field was refused. Carries no digits; safe for logs, metrics and the agent."""

    LUHN = "luhn"
    LENGTH = "length"
    BRAND = "brand"
    EXPIRED = "expired"
    MONTH = "month"
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class BrandRule:
    """Lengths for one brand.

    ``primary_length`` is the length at which a card number of this brand completes without
    ``#``; ``lengths`` are all valid lengths, ascending.
    """

    lengths: tuple[int, ...]
    primary_length: int
    code_length: int


@dataclass(frozen=True, slots=True)
class IinRange:
    """Leading digits ``low`` to ``high`` inclusive (equal lengths, at most six) of one brand."""

    low: str
    high: str
    brand: Brand

    def span(self) -> tuple[int, int]:
        """The range as inclusive bounds over six-digit prefixes."""
        pad = 10 ** (_IIN_DIGITS - len(self.low))
        return int(self.low) * pad, (int(self.high) + 1) * pad - 1


BRAND_RULES: MappingProxyType[Brand, BrandRule] = MappingProxyType(
    {
        Brand.VISA: BrandRule((13, 16, 19), 16, 3),
        Brand.MASTERCARD: BrandRule((16,), 16, 3),
        Brand.AMEX: BrandRule((15,), 15, 4),
        Brand.DISCOVER: BrandRule((16, 17, 18, 19), 16, 3),
        Brand.DINERS: BrandRule((14, 15, 16, 17, 18, 19), 14, 3),
        Brand.JCB: BrandRule((16, 17, 18, 19), 16, 3),
        Brand.UNIONPAY: BrandRule((16, 17, 18, 19), 16, 3),
        Brand.MAESTRO: BrandRule((12, 13, 14, 15, 16, 17, 18, 19), 16, 3),
    }
)

# Non-overlapping. UnionPay's 62 is split around Discover's co-branded 622126-622925.
IIN_RANGES: tuple[IinRange, ...] = (
    IinRange("4", "4", Brand.VISA),
    IinRange("51", "55", Brand.MASTERCARD),
    IinRange("2221", "2720", Brand.MASTERCARD),
    IinRange("34", "34", Brand.AMEX),
    IinRange("37", "37", Brand.AMEX),
    IinRange("6011", "6011", Brand.DISCOVER),
    IinRange("644", "649", Brand.DISCOVER),
    IinRange("65", "65", Brand.DISCOVER),
    IinRange("622126", "622925", Brand.DISCOVER),
    IinRange("300", "305", Brand.DINERS),
    IinRange("36", "36", Brand.DINERS),
    IinRange("38", "39", Brand.DINERS),
    IinRange("3528", "3589", Brand.JCB),
    IinRange("620000", "622125", Brand.UNIONPAY),
    IinRange("622926", "629999", Brand.UNIONPAY),
    IinRange("50", "50", Brand.MAESTRO),
    IinRange("56", "58", Brand.MAESTRO),
    IinRange("6759", "6759", Brand.MAESTRO),
    IinRange("6761", "6763", Brand.MAESTRO),
)

MIN_PAN_LENGTH = 12
MAX_PAN_LENGTH = 19
EXPIRY_LENGTH = 4


def _is_digits(text: str) -> bool:
    """Whether ``text`` is one or more ASCII decimal digits (``isdecimal`` alone allows others)."""
    return text.isascii() and text.isdecimal()


def luhn_ok(digits: str | Sequence[int]) -> bool:
    """Whether ``digits`` pass the Luhn (mod 10) check.

    Accepts a ``str`` or ASCII bytes (``bytes``, ``bytearray``, ``memoryview``), read in place
    without building a copy. Empty input or any non-digit character gives False.
    """
    if len(digits) == 0:
        return False
    codes: Iterable[int] = (ord(char) for char in reversed(digits)) if isinstance(digits, str) else reversed(digits)
    total = 0
    for position, code in enumerate(codes):
        value = code - _ZERO
        if not 0 <= value <= 9:
            return False
        if position % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _prefix_span(prefix: str) -> tuple[int, int] | None:
    """Inclusive bounds over six-digit prefixes that start with ``prefix``; None if not digits."""
    head = prefix[:_IIN_DIGITS]
    if head and not _is_digits(head):
        return None
    pad = 10 ** (_IIN_DIGITS - len(head))
    start = int(head) * pad if head else 0
    return start, start + pad - 1


def possible_brands(prefix: str) -> frozenset[Brand]:
    """Brands that a card number starting with ``prefix`` could still belong to."""
    span = _prefix_span(prefix)
    if span is None:
        return frozenset()
    low, high = span
    found = set()
    for iin in IIN_RANGES:
        iin_low, iin_high = iin.span()
        if iin_low <= high and low <= iin_high:
            found.add(iin.brand)
    return frozenset(found)


def detect_brand(prefix: str) -> Brand | None:
    """The brand of every card number that starts with ``prefix``, or None if not yet certain.

    Six leading digits always decide; fewer decide when all their completions fall in one
    brand's ranges (``"4"`` is Visa, ``"5"`` is not yet known, ``"30"`` is not known because
    306-309 belong to no brand).
    """
    span = _prefix_span(prefix)
    if span is None:
        return None
    low, high = span
    covered = 0
    brands = set()
    for iin in IIN_RANGES:
        iin_low, iin_high = iin.span()
        overlap = min(high, iin_high) - max(low, iin_low) + 1
        if overlap > 0:
            covered += overlap
            brands.add(iin.brand)
    if len(brands) == 1 and covered == high - low + 1:
        return brands.pop()
    return None


def allowed_lengths(brand: Brand) -> tuple[int, ...]:
    """All valid card-number lengths for ``brand``, ascending."""
    return BRAND_RULES[brand].lengths


def primary_length(brand: Brand) -> int:
    """The length at which a card number of ``brand`` completes without ``#``."""
    return BRAND_RULES[brand].primary_length


def max_length(brand: Brand) -> int:
    """The longest valid card-number length for ``brand``."""
    return BRAND_RULES[brand].lengths[-1]


def expected_length(prefix: str) -> int | None:
    """The shortest valid length for the brand ``prefix`` already decides, or None."""
    brand = detect_brand(prefix)
    return None if brand is None else allowed_lengths(brand)[0]


def security_code_length(brand: Brand) -> int:
    """Digits in the card security code: 4 for American Express, 3 for every other brand."""
    return BRAND_RULES[brand].code_length


def pan_reason(bin6: str, length: int, luhn_passed: bool) -> Reason | None:
    """Check a complete card number from its first six digits, its length and its Luhn result.

    Lets the caller check a number held in a :class:`~dtmfguard.capture.sensitive.SensitiveDigits`
    without revealing it. Checks run in the order brand, length, Luhn; the first failure is
    returned, None when all pass.
    """
    brand = detect_brand(bin6)
    if brand is None:
        return Reason.BRAND
    if length not in allowed_lengths(brand):
        return Reason.LENGTH
    if not luhn_passed:
        return Reason.LUHN
    return None


def check_pan(pan: str) -> Reason | None:
    """Check a complete card number given as a string (see :func:`pan_reason`)."""
    if not _is_digits(pan):
        return Reason.LENGTH if not pan else Reason.BRAND
    return pan_reason(pan[:_IIN_DIGITS], len(pan), luhn_ok(pan))


def check_expiry(mmyy: str, today: tuple[int, int]) -> Reason | None:
    """Check an expiry date typed as MMYY against ``today`` = (year, month), e.g. (2025, 6).

    Returns ``LENGTH`` unless four digits, ``MONTH`` unless the month is 01-12, ``EXPIRED`` if
    the card's last valid month is before ``today``'s (the current month is still valid), else
    None. Two-digit years are in 2000-2099.
    """
    if len(mmyy) != EXPIRY_LENGTH or not _is_digits(mmyy):
        return Reason.LENGTH
    month = int(mmyy[:2])
    year = 2000 + int(mmyy[2:])
    if not 1 <= month <= 12:
        return Reason.MONTH
    if (year, month) < today:
        return Reason.EXPIRED
    return None


def check_security_code(code: str, brand: Brand) -> Reason | None:
    """Check a security code's length for ``brand``: ``LENGTH`` if wrong, else None."""
    if len(code) != security_code_length(brand) or not _is_digits(code):
        return Reason.LENGTH
    return None
