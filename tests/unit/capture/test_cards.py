"""Luhn, IIN brand ranges, lengths, security codes and expiry dates, table by table."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dtmfguard.capture.cards import (
    BRAND_RULES,
    IIN_RANGES,
    Brand,
    Reason,
    allowed_lengths,
    check_expiry,
    check_pan,
    check_security_code,
    detect_brand,
    expected_length,
    luhn_ok,
    max_length,
    pan_reason,
    possible_brands,
    primary_length,
    security_code_length,
)

# Public test card numbers published by payment processors; never real cards.
TEST_PANS: list[tuple[str, Brand]] = [
    ("4111111111111111", Brand.VISA),
    ("4242424242424242", Brand.VISA),
    ("4012888888881881", Brand.VISA),
    ("4222222222222", Brand.VISA),
    ("5555555555554444", Brand.MASTERCARD),
    ("5105105105105100", Brand.MASTERCARD),
    ("2223003122003222", Brand.MASTERCARD),
    ("378282246310005", Brand.AMEX),
    ("371449635398431", Brand.AMEX),
    ("6011111111111117", Brand.DISCOVER),
    ("6011000990139424", Brand.DISCOVER),
    ("30569309025904", Brand.DINERS),
    ("36227206271667", Brand.DINERS),
    ("3056930009020004", Brand.DINERS),
    ("3530111333300000", Brand.JCB),
    ("3566002020360505", Brand.JCB),
    ("6200000000000005", Brand.UNIONPAY),
    ("6205500000000000004", Brand.UNIONPAY),
    ("6759649826438453", Brand.MAESTRO),
]


def _change_last_digit(pan: str) -> str:
    return pan[:-1] + str((int(pan[-1]) + 1) % 10)


class TestLuhn:
    @pytest.mark.parametrize(("pan", "brand"), TEST_PANS, ids=[pan for pan, _ in TEST_PANS])
    def test_test_pans_pass(self, pan: str, brand: Brand) -> None:
        assert luhn_ok(pan)
        assert luhn_ok(pan.encode("ascii"))
        assert luhn_ok(bytearray(pan.encode("ascii")))

    @pytest.mark.parametrize(("pan", "brand"), TEST_PANS, ids=[pan for pan, _ in TEST_PANS])
    def test_one_changed_digit_fails(self, pan: str, brand: Brand) -> None:
        assert not luhn_ok(_change_last_digit(pan))

    @pytest.mark.parametrize("text", ["", "4111 1111 1111 1111", "4111-1111", "abc", "\u0660", "0x10"])
    def test_non_digits_fail(self, text: str) -> None:
        assert not luhn_ok(text)

    @pytest.mark.parametrize(
        ("text", "expected"), [("0", True), ("00", True), ("18", True), ("59", True), ("1", False)]
    )
    def test_small_cases(self, text: str, expected: bool) -> None:
        assert luhn_ok(text) is expected

    @given(st.text(alphabet="0123456789", min_size=1, max_size=18))
    def test_exactly_one_check_digit_completes_any_payload(self, payload: str) -> None:
        assert sum(luhn_ok(payload + digit) for digit in "0123456789") == 1


class TestBrand:
    @pytest.mark.parametrize(("pan", "brand"), TEST_PANS, ids=[pan for pan, _ in TEST_PANS])
    def test_test_pans(self, pan: str, brand: Brand) -> None:
        assert detect_brand(pan) is brand
        assert detect_brand(pan[:6]) is brand
        assert len(pan) in allowed_lengths(brand)
        assert check_pan(pan) is None

    @pytest.mark.parametrize(
        ("prefix", "brand"),
        [
            ("4", Brand.VISA),
            ("49", Brand.VISA),
            ("5", None),
            ("50", Brand.MAESTRO),
            ("51", Brand.MASTERCARD),
            ("55", Brand.MASTERCARD),
            ("56", Brand.MAESTRO),
            ("58", Brand.MAESTRO),
            ("59", None),
            ("2", None),
            ("22", None),
            ("2220", None),
            ("2221", Brand.MASTERCARD),
            ("2720", Brand.MASTERCARD),
            ("2721", None),
            ("23", Brand.MASTERCARD),
            ("34", Brand.AMEX),
            ("37", Brand.AMEX),
            ("3", None),
            ("35", None),
            ("3527", None),
            ("3528", Brand.JCB),
            ("3589", Brand.JCB),
            ("3590", None),
            ("30", None),
            ("300", Brand.DINERS),
            ("305", Brand.DINERS),
            ("306", None),
            ("36", Brand.DINERS),
            ("38", Brand.DINERS),
            ("39", Brand.DINERS),
            ("6", None),
            ("601", None),
            ("6011", Brand.DISCOVER),
            ("6012", None),
            ("643", None),
            ("644", Brand.DISCOVER),
            ("649", Brand.DISCOVER),
            ("65", Brand.DISCOVER),
            ("62", None),
            ("6220", Brand.UNIONPAY),
            ("6221", None),
            ("62212", None),
            ("622125", Brand.UNIONPAY),
            ("622126", Brand.DISCOVER),
            ("6225", Brand.DISCOVER),
            ("622925", Brand.DISCOVER),
            ("622926", Brand.UNIONPAY),
            ("623", Brand.UNIONPAY),
            ("629", Brand.UNIONPAY),
            ("6759", Brand.MAESTRO),
            ("6760", None),
            ("6761", Brand.MAESTRO),
            ("6763", Brand.MAESTRO),
            ("6764", None),
            ("0", None),
            ("1", None),
            ("7", None),
            ("8", None),
            ("9", None),
            ("", None),
            ("4a", None),
        ],
    )
    def test_prefix_table(self, prefix: str, brand: Brand | None) -> None:
        assert detect_brand(prefix) is brand

    @pytest.mark.parametrize(
        ("prefix", "brands"),
        [
            ("", set(Brand)),
            ("3", {Brand.AMEX, Brand.DINERS, Brand.JCB}),
            ("5", {Brand.MASTERCARD, Brand.MAESTRO}),
            ("62212", {Brand.DISCOVER, Brand.UNIONPAY}),
            ("30", {Brand.DINERS}),
            ("4", {Brand.VISA}),
            ("9", set()),
            ("306", set()),
            ("x", set()),
        ],
    )
    def test_possible_brands(self, prefix: str, brands: set[Brand]) -> None:
        assert possible_brands(prefix) == brands

    def test_ranges_do_not_overlap(self) -> None:
        spans = sorted(iin.span() for iin in IIN_RANGES)
        for (_, high), (next_low, _) in itertools.pairwise(spans):
            assert high < next_low

    def test_every_brand_has_ranges_and_rules(self) -> None:
        assert {iin.brand for iin in IIN_RANGES} == set(Brand) == set(BRAND_RULES)

    @given(st.text(alphabet="0123456789", max_size=8), st.text(alphabet="0123456789", max_size=8))
    def test_a_decided_brand_never_changes_as_digits_are_added(self, prefix: str, more: str) -> None:
        brand = detect_brand(prefix)
        if brand is not None:
            assert detect_brand(prefix + more) is brand
        assert possible_brands(prefix + more) <= possible_brands(prefix)

    @given(st.text(alphabet="0123456789", min_size=6, max_size=19))
    def test_six_digits_always_decide(self, pan: str) -> None:
        assert len(possible_brands(pan)) <= 1
        assert detect_brand(pan) in (possible_brands(pan) or {None})


class TestLengths:
    @pytest.mark.parametrize(
        ("brand", "lengths", "primary", "code"),
        [
            (Brand.VISA, (13, 16, 19), 16, 3),
            (Brand.MASTERCARD, (16,), 16, 3),
            (Brand.AMEX, (15,), 15, 4),
            (Brand.DISCOVER, (16, 17, 18, 19), 16, 3),
            (Brand.DINERS, (14, 15, 16, 17, 18, 19), 14, 3),
            (Brand.JCB, (16, 17, 18, 19), 16, 3),
            (Brand.UNIONPAY, (16, 17, 18, 19), 16, 3),
            (Brand.MAESTRO, (12, 13, 14, 15, 16, 17, 18, 19), 16, 3),
        ],
    )
    def test_brand_table(self, brand: Brand, lengths: tuple[int, ...], primary: int, code: int) -> None:
        assert allowed_lengths(brand) == lengths
        assert primary_length(brand) == primary
        assert primary in lengths
        assert max_length(brand) == lengths[-1]
        assert security_code_length(brand) == code

    @pytest.mark.parametrize(
        ("prefix", "length"),
        [
            ("", None),
            ("4", 13),
            ("5", None),
            ("51", 16),
            ("37", 15),
            ("36", 14),
            ("6011", 16),
            ("6759", 12),
            ("9", None),
        ],
    )
    def test_expected_length_is_the_shortest_for_the_known_brand(self, prefix: str, length: int | None) -> None:
        assert expected_length(prefix) == length


class TestCheckPan:
    @pytest.mark.parametrize(
        ("pan", "reason"),
        [
            ("4111111111111111", None),
            ("4222222222222", None),
            (_change_last_digit("4111111111111111"), Reason.LUHN),
            ("411111111111111", Reason.LENGTH),
            ("41111111111111111", Reason.LENGTH),
            ("378282246310005" + "0", Reason.LENGTH),
            ("9" + "4111111111111111"[1:], Reason.BRAND),
            ("", Reason.LENGTH),
            ("4111 1111 1111 1111", Reason.BRAND),
        ],
    )
    def test_reasons(self, pan: str, reason: Reason | None) -> None:
        assert check_pan(pan) == reason

    @pytest.mark.parametrize(
        ("bin6", "length", "luhn_passed", "reason"),
        [
            ("411111", 16, True, None),
            ("411111", 16, False, Reason.LUHN),
            ("411111", 15, False, Reason.LENGTH),
            ("911111", 15, False, Reason.BRAND),
            ("5", 16, True, Reason.BRAND),
        ],
    )
    def test_brand_then_length_then_luhn(
        self, bin6: str, length: int, luhn_passed: bool, reason: Reason | None
    ) -> None:
        assert pan_reason(bin6, length, luhn_passed) == reason


class TestSecurityCode:
    @pytest.mark.parametrize(
        ("code", "brand", "reason"),
        [
            ("123", Brand.VISA, None),
            ("1234", Brand.AMEX, None),
            ("123", Brand.AMEX, Reason.LENGTH),
            ("1234", Brand.VISA, Reason.LENGTH),
            ("12", Brand.MASTERCARD, Reason.LENGTH),
            ("12a", Brand.JCB, Reason.LENGTH),
            ("", Brand.DINERS, Reason.LENGTH),
        ],
    )
    def test_table(self, code: str, brand: Brand, reason: Reason | None) -> None:
        assert check_security_code(code, brand) == reason


class TestExpiry:
    @pytest.mark.parametrize(
        ("mmyy", "today", "reason"),
        [
            ("1225", (2025, 12), None),
            ("0625", (2025, 6), None),
            ("0126", (2025, 12), None),
            ("1299", (2025, 6), None),
            ("0125", (2024, 12), None),
            ("0525", (2025, 6), Reason.EXPIRED),
            ("1224", (2025, 1), Reason.EXPIRED),
            ("1299", (2100, 1), Reason.EXPIRED),
            ("0025", (2025, 6), Reason.MONTH),
            ("1326", (2025, 6), Reason.MONTH),
            ("9999", (2025, 6), Reason.MONTH),
            ("1324", (2025, 6), Reason.MONTH),
            ("125", (2025, 6), Reason.LENGTH),
            ("12255", (2025, 6), Reason.LENGTH),
            ("", (2025, 6), Reason.LENGTH),
            ("12a5", (2025, 6), Reason.LENGTH),
            ("12\u06605", (2025, 6), Reason.LENGTH),
        ],
    )
    def test_table(self, mmyy: str, today: tuple[int, int], reason: Reason | None) -> None:
        assert check_expiry(mmyy, today) == reason


class TestReasonCodes:
    def test_codes_are_plain_words(self) -> None:
        assert {reason.value for reason in Reason} == {"luhn", "length", "brand", "expired", "month", "timeout"}
        assert all(not any(char.isdigit() for char in reason) for reason in Reason)
        assert str(Reason.LUHN) == "luhn"
