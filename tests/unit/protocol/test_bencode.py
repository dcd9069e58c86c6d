"""Bencode (BEP 3, as used by the rtpengine NG protocol): bytes in, values or errors out."""

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dtmfguard.errors import ProtocolError
from dtmfguard.protocol.bencode import MAX_DEPTH, decode, encode, to_text


def error_of(data: bytes, **kwargs: int) -> str:
    with pytest.raises(ProtocolError) as excinfo:
        decode(data, **kwargs)
    return str(excinfo.value)


class TestIntegers:
    def test_positive(self) -> None:
        assert decode(b"i42e") == 42

    def test_zero(self) -> None:
        assert decode(b"i0e") == 0

    def test_negative(self) -> None:
        assert decode(b"i-17e") == -17

    def test_int64_extremes(self) -> None:
        assert decode(b"i9223372036854775807e") == 2**63 - 1
        assert decode(b"i-9223372036854775808e") == -(2**63)

    def test_leading_zero_is_rejected(self) -> None:
        assert error_of(b"i03e") == "bencode: integer b'03' at offset 0 has a leading zero"

    def test_negative_leading_zero_is_rejected(self) -> None:
        assert error_of(b"i-03e") == "bencode: integer b'-03' at offset 0 has a leading zero"

    def test_negative_zero_is_rejected(self) -> None:
        assert error_of(b"i-0e") == "bencode: negative zero at offset 0"

    def test_empty_is_rejected(self) -> None:
        assert error_of(b"ie") == "bencode: invalid integer b'' at offset 0"

    def test_lone_minus_is_rejected(self) -> None:
        assert error_of(b"i-e") == "bencode: invalid integer b'-' at offset 0"

    def test_non_digit_is_rejected(self) -> None:
        assert error_of(b"i4x2e") == "bencode: invalid integer b'4x2' at offset 0"

    def test_too_many_digits(self) -> None:
        assert error_of(b"i12345678901234567890e") == "bencode: integer at offset 0 has more than 19 digits"

    def test_unterminated(self) -> None:
        assert error_of(b"i42") == "bencode: unexpected end of input at offset 3 while reading an integer"


class TestByteStrings:
    def test_string(self) -> None:
        assert decode(b"4:spam") == b"spam"

    def test_empty_string(self) -> None:
        assert decode(b"0:") == b""

    def test_binary_string(self) -> None:
        assert decode(b"3:\x00\xff:") == b"\x00\xff:"

    def test_truncated(self) -> None:
        assert error_of(b"d3:sdp10:v=0e") == (
            "bencode: unexpected end of input at offset 13 while reading a string "
            "(declared 10 bytes at offset 6, 4 available)"
        )

    def test_length_leading_zero(self) -> None:
        assert error_of(b"04:spam") == ("bencode: string length b'04' at offset 0 has a leading zero")

    def test_missing_colon(self) -> None:
        assert error_of(b"4spam") == ("bencode: unexpected byte 0x73 at offset 1 (expected ':' after a string length)")

    def test_length_only(self) -> None:
        assert error_of(b"12") == ("bencode: unexpected end of input at offset 2 while reading a string length")

    def test_absurd_length(self) -> None:
        assert error_of(b"99999999999999999999:x") == ("bencode: string length at offset 0 has more than 19 digits")


class TestLists:
    def test_list(self) -> None:
        assert decode(b"l4:spami42ee") == [b"spam", 42]

    def test_empty_list(self) -> None:
        assert decode(b"le") == []

    def test_unterminated(self) -> None:
        assert error_of(b"l4:spam") == ("bencode: unexpected end of input at offset 7 while reading a list")


class TestDictionaries:
    def test_dictionary(self) -> None:
        assert decode(b"d7:command4:pinge") == {b"command": b"ping"}

    def test_unsorted_keys_are_accepted(self) -> None:
        # rtpengine does not honour key order, and neither do its clients.
        assert decode(b"d1:bi1e1:ai2ee") == {b"b": 1, b"a": 2}

    def test_duplicate_key(self) -> None:
        assert error_of(b"d1:ai1e1:ai2ee") == ("bencode: duplicate dictionary key b'a' at offset 7")

    def test_non_string_key(self) -> None:
        assert error_of(b"di1ei2ee") == ("bencode: dictionary key at offset 1 is not a byte string")

    def test_missing_value(self) -> None:
        assert error_of(b"d3:key") == (
            "bencode: unexpected end of input at offset 6 while reading the value of key b'key'"
        )

    def test_unterminated(self) -> None:
        assert error_of(b"d1:ai1e") == ("bencode: unexpected end of input at offset 7 while reading a dictionary")


class TestLimits:
    def test_trailing_data(self) -> None:
        assert error_of(b"i1ei2e") == ("bencode: trailing data at offset 3 (3 bytes after the value)")

    def test_empty_input(self) -> None:
        assert error_of(b"") == ("bencode: unexpected end of input at offset 0 while reading a value")

    def test_unexpected_byte(self) -> None:
        assert error_of(b"x") == ("bencode: unexpected byte 0x78 at offset 0 (expected 'i', 'l', 'd' or a digit)")

    def test_depth_at_limit_is_accepted(self) -> None:
        data = b"l" * MAX_DEPTH + b"e" * MAX_DEPTH
        value = decode(data)
        for _ in range(MAX_DEPTH - 1):
            assert isinstance(value, list)
            value = value[0]
        assert value == []

    def test_depth_over_limit(self) -> None:
        data = b"l" * (MAX_DEPTH + 1) + b"e" * (MAX_DEPTH + 1)
        assert error_of(data) == "bencode: nesting deeper than 32 levels at offset 32"

    def test_custom_depth(self) -> None:
        assert error_of(b"d1:ad1:bleee", max_depth=2) == ("bencode: nesting deeper than 2 levels at offset 8")

    def test_oversized_input(self) -> None:
        assert error_of(b"4:spam", max_length=5) == ("bencode: input of 6 bytes exceeds the limit of 5 bytes")


class TestEncode:
    def test_ng_ping(self) -> None:
        assert encode({"command": "ping"}) == b"d7:command4:pinge"

    def test_keys_are_sorted(self) -> None:
        assert encode({"sdp": "v=0", "result": "ok"}) == b"d6:result2:ok3:sdp3:v=0e"

    def test_nested(self) -> None:
        assert encode({"flags": ["trust-address", b"x"], "n": -3}) == (b"d5:flagsl13:trust-address1:xe1:ni-3ee")

    def test_utf8(self) -> None:
        assert encode("é") == b"2:\xc3\xa9"

    def test_bool_is_refused(self) -> None:
        with pytest.raises(TypeError, match="bool"):
            encode(True)

    def test_float_is_refused(self) -> None:
        with pytest.raises(TypeError, match="float"):
            encode(1.5)  # type: ignore[arg-type]

    def test_duplicate_key_after_encoding(self) -> None:
        with pytest.raises(ValueError, match="given twice"):
            encode({"a": 1, b"a": 2})  # type: ignore[arg-type]


class TestToText:
    def test_ng_message(self) -> None:
        value = decode(b"d7:command5:offer5:flagsl13:trust-addressee")
        assert to_text(value) == {"command": "offer", "flags": ["trust-address"]}

    def test_non_utf8_value_stays_bytes(self) -> None:
        assert to_text(decode(b"d1:a2:\xff\xfee")) == {"a": b"\xff\xfe"}

    def test_non_utf8_key(self) -> None:
        with pytest.raises(ProtocolError) as excinfo:
            to_text(decode(b"d1:\xffi1ee"))
        assert str(excinfo.value) == "bencode: dictionary key b'\\xff' is not UTF-8"


values = st.recursive(
    st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.binary(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.binary(max_size=10), children, max_size=5),
    max_leaves=30,
)


class TestRoundTrip:
    @given(values)
    def test_decode_inverts_encode(self, value: object) -> None:
        assert decode(encode(value)) == value  # type: ignore[arg-type]

    @given(st.binary(max_size=64))
    def test_arbitrary_bytes_never_crash(self, data: bytes) -> None:
        with contextlib.suppress(ProtocolError):
            decode(data)
