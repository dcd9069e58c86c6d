"""SensitiveDigits: never shown, never copied, wiped in place (PCI DSS 3.3.1, 3.4.1, 3.5)."""

from __future__ import annotations

import copy
import pickle
import re
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dtmfguard.capture.cards import luhn_ok
from dtmfguard.capture.sensitive import SensitiveDigits
from dtmfguard.errors import CaptureError

VISA = "4111111111111111"
AMEX = "378282246310005"
DIGIT_RUN = re.compile(r"\d{4,}")


def _no_card_digits(text: str) -> bool:
    return DIGIT_RUN.search(text) is None


def _raw(digits: SensitiveDigits) -> bytes:
    # White-box: the buffer itself, to prove the bytes were overwritten.
    return bytes(digits._buf)


class TestNeverShown:
    @pytest.mark.parametrize(
        "render",
        # printf-style formatting is tested on purpose: old code and log libraries still use it.
        [repr, str, format, lambda d: f"{d}", lambda d: f"{d!r}", lambda d: f"{d:>40}", lambda d: "%s" % d],  # noqa: UP031
        ids=["repr", "str", "format", "fstring", "fstring-r", "fstring-spec", "percent"],
    )
    def test_renderings_show_only_the_length(self, render: Callable[[SensitiveDigits], str]) -> None:
        digits = SensitiveDigits(VISA)
        assert render(digits) == "SensitiveDigits(len=16)"

    def test_container_repr_shows_no_digits(self) -> None:
        held = {"pan": SensitiveDigits(VISA), "list": [SensitiveDigits(AMEX)]}
        assert _no_card_digits(repr(held))

    @pytest.mark.parametrize(
        "use",
        [iter, list, tuple, lambda d: "1" in d, lambda d: [*d]],
        ids=["iter", "list", "tuple", "contains", "unpack"],
    )
    def test_not_iterable(self, use: Callable[[SensitiveDigits], object]) -> None:
        with pytest.raises(TypeError):
            use(SensitiveDigits(VISA))

    def test_not_indexable(self) -> None:
        digits = SensitiveDigits(VISA)
        with pytest.raises(TypeError):
            digits[0]  # type: ignore[index]

    def test_unhashable(self) -> None:
        with pytest.raises(TypeError):
            hash(SensitiveDigits(VISA))

    def test_no_instance_dict(self) -> None:
        assert not hasattr(SensitiveDigits(VISA), "__dict__")


class TestNeverCopied:
    @pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
    def test_pickle_refused(self, protocol: int) -> None:
        with pytest.raises(CaptureError, match="cannot be pickled"):
            pickle.dumps(SensitiveDigits(VISA), protocol=protocol)

    def test_pickle_inside_container_refused(self) -> None:
        with pytest.raises(CaptureError):
            pickle.dumps({"card": SensitiveDigits(VISA)})

    @pytest.mark.parametrize("clone", [copy.copy, copy.deepcopy])
    def test_copy_refused(self, clone: Callable[[SensitiveDigits], object]) -> None:
        with pytest.raises(CaptureError, match="cannot be copied"):
            clone(SensitiveDigits(VISA))

    def test_reduce_refused(self) -> None:
        digits = SensitiveDigits(VISA)
        with pytest.raises(CaptureError):
            digits.__reduce__()
        with pytest.raises(CaptureError):
            digits.__reduce_ex__(2)


class TestFillAndWipe:
    def test_append_and_len(self) -> None:
        digits = SensitiveDigits()
        for count, char in enumerate(VISA, start=1):
            digits.append(char)
            assert len(digits) == count
        assert digits.reveal() == VISA

    def test_empty_is_falsy(self) -> None:
        assert not SensitiveDigits()
        assert SensitiveDigits("4")

    @pytest.mark.parametrize("bad", ["", "12", "a", "*", "#", " ", "\u0663", "-"])
    def test_append_refuses_non_digits(self, bad: str) -> None:
        digits = SensitiveDigits("41")
        with pytest.raises(CaptureError) as caught:
            digits.append(bad)
        assert not any(char.isdigit() for char in str(caught.value))
        assert len(digits) == 2

    def test_full_buffer_refuses_and_message_has_no_digits(self) -> None:
        digits = SensitiveDigits(VISA, capacity=16)
        with pytest.raises(CaptureError) as caught:
            digits.append("4")
        assert not any(char.isdigit() for char in str(caught.value))

    def test_constructor_refuses_too_many_digits_without_echoing(self) -> None:
        with pytest.raises(CaptureError) as caught:
            SensitiveDigits(VISA, capacity=4)
        assert _no_card_digits(str(caught.value))
        assert VISA not in repr(caught.value)

    def test_constructor_refuses_non_digit_without_echoing(self) -> None:
        with pytest.raises(CaptureError) as caught:
            SensitiveDigits("4111 1111 1111 1111")
        assert _no_card_digits(str(caught.value))

    def test_bad_capacity(self) -> None:
        with pytest.raises(CaptureError):
            SensitiveDigits(capacity=0)

    def test_buffer_is_preallocated_and_never_reallocated(self) -> None:
        digits = SensitiveDigits(capacity=19)
        buffer = digits._buf
        for char in VISA:
            digits.append(char)
        assert digits._buf is buffer
        assert len(buffer) == 19 == digits.capacity

    @pytest.mark.parametrize("forget", [SensitiveDigits.wipe, SensitiveDigits.clear], ids=["wipe", "clear"])
    def test_wipe_overwrites_with_zeros(self, forget: Callable[[SensitiveDigits], None]) -> None:
        digits = SensitiveDigits(VISA)
        buffer = digits._buf
        forget(digits)
        assert len(digits) == 0
        assert digits._buf is buffer
        assert _raw(digits) == bytes(digits.capacity)
        assert digits.reveal() == ""

    def test_reusable_after_wipe(self) -> None:
        digits = SensitiveDigits(VISA)
        digits.wipe()
        for char in AMEX:
            digits.append(char)
        assert digits.reveal() == AMEX

    def test_context_manager_wipes_on_exit(self) -> None:
        with SensitiveDigits(VISA) as digits:
            assert len(digits) == 16
        assert len(digits) == 0
        assert _raw(digits) == bytes(digits.capacity)

    def test_context_manager_wipes_on_error(self) -> None:
        digits = SensitiveDigits(VISA)
        with pytest.raises(RuntimeError), digits:
            raise RuntimeError("boom")
        assert _raw(digits) == bytes(digits.capacity)


class TestAccessors:
    def test_reveal(self) -> None:
        assert SensitiveDigits(AMEX).reveal() == AMEX

    def test_last4(self) -> None:
        assert SensitiveDigits(VISA).last4() == "1111"
        assert SensitiveDigits(AMEX).last4() == "0005"

    def test_last4_needs_four_digits(self) -> None:
        with pytest.raises(CaptureError) as caught:
            SensitiveDigits("411").last4()
        assert not any(char.isdigit() for char in str(caught.value))

    @pytest.mark.parametrize(
        ("typed", "expected"),
        [("", ""), ("4", "4"), ("41111", "41111"), (VISA, "411111"), (AMEX, "378282")],
    )
    def test_bin6_is_the_prefix_up_to_six(self, typed: str, expected: str) -> None:
        assert SensitiveDigits(typed).bin6() == expected

    @pytest.mark.parametrize("pan", [VISA, AMEX, "4242424242424242", "6011111111111117", "30569309025904"])
    def test_luhn_ok(self, pan: str) -> None:
        assert luhn_ok(pan)
        assert SensitiveDigits(pan).luhn_ok()

    def test_luhn_fails_on_a_changed_digit(self) -> None:
        changed = VISA[:-1] + str((int(VISA[-1]) + 1) % 10)
        assert not SensitiveDigits(changed).luhn_ok()

    def test_luhn_of_nothing_is_false(self) -> None:
        assert not SensitiveDigits().luhn_ok()


class TestComparison:
    def test_equal_digits(self) -> None:
        assert SensitiveDigits(VISA) == SensitiveDigits(VISA, capacity=32)

    @pytest.mark.parametrize("other", ["4242424242424242", "411111111111111", ""])
    def test_different_digits(self, other: str) -> None:
        assert SensitiveDigits(VISA) != SensitiveDigits(other)

    def test_never_equal_to_a_plain_string(self) -> None:
        assert SensitiveDigits(VISA) != VISA
        assert SensitiveDigits(VISA).__eq__(VISA) is NotImplemented

    def test_wiped_digits_compare_as_empty(self) -> None:
        digits = SensitiveDigits(VISA)
        digits.wipe()
        assert digits == SensitiveDigits()


@given(st.text(alphabet="0123456789", max_size=19))
def test_any_digits_render_as_length_only(typed: str) -> None:
    digits = SensitiveDigits(typed)
    assert repr(digits) == str(digits) == f"SensitiveDigits(len={len(typed)})"
    assert digits.reveal() == typed
    assert digits.luhn_ok() == luhn_ok(typed)


@given(st.text(alphabet="0123456789", max_size=19), st.text(alphabet="0123456789", max_size=19))
def test_equality_matches_the_digits(left: str, right: str) -> None:
    assert (SensitiveDigits(left) == SensitiveDigits(right)) == (left == right)
