"""Bencode, the dictionary encoding of the rtpengine NG control protocol.

This module turns bytes into values and values into bytes, nothing else: integers
(``i42e``), byte strings (``4:spam``), lists (``l...e``) and dictionaries (``d...e``)
as defined by BitTorrent's BEP 3 ("bencoding"), which is what rtpengine's
``docs/ng_control_protocol.md`` refers to. The decoder is hostile-input safe: it bounds
input length (one UDP datagram) and nesting depth, rejects leading zeros, negative zero,
duplicate keys and trailing data, and every failure is a :class:`ProtocolError` that
says what was expected and at which byte offset. Dictionary key order is not enforced
on input (rtpengine does not honour it either); :func:`encode` always sorts keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias

from dtmfguard.errors import ProtocolError

__all__ = [
    "MAX_DEPTH",
    "MAX_INPUT_BYTES",
    "BencodeValue",
    "Encodable",
    "TextValue",
    "decode",
    "encode",
    "to_text",
]

#: Deepest nesting of lists/dictionaries accepted (NG messages use three or four).
MAX_DEPTH = 32
#: Largest input accepted: the payload of one UDP datagram.
MAX_INPUT_BYTES = 65_535
# A signed 64-bit integer has at most 19 digits; rtpengine reads integers as long long.
_MAX_INT_DIGITS = 19

BencodeValue: TypeAlias = "int | bytes | list[BencodeValue] | dict[bytes, BencodeValue]"
"""What :func:`decode` returns."""

TextValue: TypeAlias = "int | str | bytes | list[TextValue] | dict[str, TextValue]"
"""What :func:`to_text` returns: byte strings that are UTF-8 become ``str``."""

Encodable: TypeAlias = "int | str | bytes | Sequence[Encodable] | Mapping[str, Encodable] | Mapping[bytes, Encodable]"
"""What :func:`encode` accepts: ``str`` is encoded as UTF-8."""

_DIGITS = frozenset(b"0123456789")


def decode(
    data: bytes,
    *,
    max_depth: int = MAX_DEPTH,
    max_length: int = MAX_INPUT_BYTES,
) -> BencodeValue:
    """Decode one bencoded value that must span all of ``data``.

    Byte strings come back as ``bytes`` and dictionary keys as ``bytes``. Raises
    :class:`ProtocolError` on malformed, oversized, too deeply nested or trailing input.
    """
    if len(data) > max_length:
        raise ProtocolError(f"bencode: input of {len(data)} bytes exceeds the limit of {max_length} bytes")
    if not data:
        raise ProtocolError("bencode: unexpected end of input at offset 0 while reading a value")
    decoder = _Decoder(bytes(data), max_depth)
    value = decoder.value(0)
    if decoder.pos != len(data):
        raise ProtocolError(
            f"bencode: trailing data at offset {decoder.pos} ({len(data) - decoder.pos} bytes after the value)"
        )
    return value


class _Decoder:
    """Recursive-descent decoder over one buffer; ``pos`` is the next unread byte."""

    __slots__ = ("data", "pos", "max_depth")

    def __init__(self, data: bytes, max_depth: int) -> None:
        self.data = data
        self.pos = 0
        self.max_depth = max_depth

    def _eof(self, what: str) -> ProtocolError:
        return ProtocolError(f"bencode: unexpected end of input at offset {self.pos} while reading {what}")

    def value(self, depth: int) -> BencodeValue:
        data = self.data
        if self.pos >= len(data):
            raise self._eof("a value")
        lead = data[self.pos]
        if lead == 0x69:  # i
            return self.integer()
        if lead in _DIGITS:
            return self.string()
        if lead == 0x6C:  # l
            return self.list(depth + 1)
        if lead == 0x64:  # d
            return self.dictionary(depth + 1)
        raise ProtocolError(
            f"bencode: unexpected byte 0x{lead:02x} at offset {self.pos} (expected 'i', 'l', 'd' or a digit)"
        )

    def integer(self) -> int:
        start = self.pos
        end = self.data.find(b"e", start + 1)
        if end < 0:
            self.pos = len(self.data)
            raise self._eof("an integer")
        text = self.data[start + 1 : end]
        digits = text[1:] if text[:1] == b"-" else text
        if not digits or not all(c in _DIGITS for c in digits):
            raise ProtocolError(f"bencode: invalid integer {text!r} at offset {start}")
        if len(digits) > _MAX_INT_DIGITS:
            raise ProtocolError(f"bencode: integer at offset {start} has more than {_MAX_INT_DIGITS} digits")
        if digits[0] == 0x30 and len(digits) > 1:
            raise ProtocolError(f"bencode: integer {text!r} at offset {start} has a leading zero")
        if text == b"-0":
            raise ProtocolError(f"bencode: negative zero at offset {start}")
        self.pos = end + 1
        return int(text)

    def string(self) -> bytes:
        data = self.data
        start = self.pos
        colon = start
        limit = min(len(data), start + _MAX_INT_DIGITS)
        while colon < limit and data[colon] in _DIGITS:
            colon += 1
        if colon >= len(data):
            self.pos = len(data)
            raise self._eof("a string length")
        if data[colon] in _DIGITS:
            raise ProtocolError(f"bencode: string length at offset {start} has more than {_MAX_INT_DIGITS} digits")
        if data[colon] != 0x3A:  # ':'
            raise ProtocolError(
                f"bencode: unexpected byte 0x{data[colon]:02x} at offset {colon} (expected ':' after a string length)"
            )
        length_text = data[start:colon]
        if length_text[0] == 0x30 and len(length_text) > 1:
            raise ProtocolError(f"bencode: string length {length_text!r} at offset {start} has a leading zero")
        length = int(length_text)
        begin = colon + 1
        if begin + length > len(data):
            self.pos = len(data)
            raise self._eof(f"a string (declared {length} bytes at offset {start}, {len(data) - begin} available)")
        self.pos = begin + length
        return data[begin : self.pos]

    def _check_depth(self, depth: int) -> None:
        if depth > self.max_depth:
            raise ProtocolError(f"bencode: nesting deeper than {self.max_depth} levels at offset {self.pos}")

    def list(self, depth: int) -> list[BencodeValue]:
        self._check_depth(depth)
        data = self.data
        self.pos += 1
        items: list[BencodeValue] = []
        while True:
            if self.pos >= len(data):
                raise self._eof("a list")
            if data[self.pos] == 0x65:  # e
                self.pos += 1
                return items
            items.append(self.value(depth))

    def dictionary(self, depth: int) -> dict[bytes, BencodeValue]:
        self._check_depth(depth)
        data = self.data
        self.pos += 1
        items: dict[bytes, BencodeValue] = {}
        while True:
            if self.pos >= len(data):
                raise self._eof("a dictionary")
            if data[self.pos] == 0x65:  # e
                self.pos += 1
                return items
            key_at = self.pos
            if data[key_at] not in _DIGITS:
                raise ProtocolError(f"bencode: dictionary key at offset {key_at} is not a byte string")
            key = self.string()
            if key in items:
                raise ProtocolError(f"bencode: duplicate dictionary key {key!r} at offset {key_at}")
            if self.pos >= len(data):
                raise self._eof(f"the value of key {key!r}")
            items[key] = self.value(depth)


def encode(value: Encodable) -> bytes:
    """Encode ``value``; ``str`` becomes UTF-8 bytes, dictionary keys are sorted as bytes.

    Raises :class:`TypeError` for values bencode cannot carry (floats, ``None``, ``bool``)
    and :class:`ValueError` for two keys that are equal once encoded.
    """
    out: list[bytes] = []
    _encode_into(value, out)
    return b"".join(out)


def _encode_into(value: Encodable, out: list[bytes]) -> None:
    if isinstance(value, bytes):
        out.append(b"%d:" % len(value))
        out.append(value)
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        out.append(b"%d:" % len(raw))
        out.append(raw)
    elif isinstance(value, bool):
        # bool is an int subclass; refusing it catches a caller's type slip early.
        raise TypeError("bencode cannot encode a bool; use an int or a string")
    elif isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, Mapping):
        keyed: dict[bytes, Encodable] = {}
        for key, item in value.items():
            raw_key = key.encode("utf-8") if isinstance(key, str) else key
            if not isinstance(raw_key, bytes):
                raise TypeError(f"bencode dictionary keys must be str or bytes, not {type(key).__name__}")
            if raw_key in keyed:
                raise ValueError(f"bencode dictionary key {raw_key!r} given twice")
            keyed[raw_key] = item
        out.append(b"d")
        for raw_key in sorted(keyed):
            out.append(b"%d:" % len(raw_key))
            out.append(raw_key)
            _encode_into(keyed[raw_key], out)
        out.append(b"e")
    elif isinstance(value, (list, tuple)):
        out.append(b"l")
        for item in value:
            _encode_into(item, out)
        out.append(b"e")
    else:
        raise TypeError(f"bencode cannot encode a value of type {type(value).__name__}")


def to_text(value: BencodeValue) -> TextValue:
    """Return ``value`` with str dictionary keys and str strings where they are UTF-8.

    Byte strings that are not valid UTF-8 stay ``bytes``. A dictionary key that is not
    UTF-8 raises :class:`ProtocolError` (NG keys are ASCII names).
    """
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    if isinstance(value, list):
        return [to_text(item) for item in value]
    if isinstance(value, dict):
        result: dict[str, TextValue] = {}
        for key, item in value.items():
            try:
                text_key = key.decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError(f"bencode: dictionary key {key!r} is not UTF-8") from None
            result[text_key] = to_text(item)
        return result
    return value
