"""Card digits held in memory only, in a type that never prints them.

PCI DSS v4.0.1 requirement 3.5 (render card data unreadable wherever it is kept) and 3.3.1
(no sensitive authentication data after authorization) start here: every card digit dtmfguard
collects lives in a :class:`SensitiveDigits`, a fixed-size ``bytearray`` that is overwritten with
zeros when wiped, never grows (so no stale copy is left behind by a reallocation), cannot be
pickled or copied, is not iterable, and whose ``repr``/``str``/``format`` show only a length.
Requirement 3.4.1 (PAN masked when displayed) is served by the narrow accessors
:meth:`~SensitiveDigits.last4` and :meth:`~SensitiveDigits.bin6`; the digits as a whole leave
only through :meth:`~SensitiveDigits.reveal`, whose one legitimate caller builds the payment
gateway's request body.
"""

from __future__ import annotations

import hmac
from types import TracebackType
from typing import Any, NoReturn, SupportsIndex

from dtmfguard.capture.cards import luhn_ok
from dtmfguard.errors import CaptureError

_ZERO = ord("0")
_NINE = ord("9")


class SensitiveDigits:
    """A short run of decimal digits that is never shown, copied or serialised by accident.

    The buffer is allocated once with ``capacity`` bytes; :meth:`append` fills it in place and
    :meth:`wipe` zeroes all of it. Every error raised (:class:`CaptureError`) has a fixed message
    that carries no digits. Equality with another ``SensitiveDigits`` is computed in constant time;
    instances are unhashable because they are mutable.
    """

    __slots__ = ("_buf", "_len")

    __hash__ = None  # type: ignore[assignment]  # mutable and compared by content
    # Setting __iter__ to None makes iter(), list(), "x in digits" and unpacking raise TypeError,
    # so no digit leaves through an implicit protocol.
    __iter__ = None

    def __init__(self, digits: str = "", *, capacity: int = 19) -> None:
        """Create a buffer of ``capacity`` digits, optionally filled from ``digits``.

        Raises CaptureError when ``capacity`` is not positive, ``digits`` holds a non-digit, or
        ``digits`` is longer than ``capacity``.
        """
        if capacity < 1:
            raise CaptureError("capacity must be positive")
        self._buf = bytearray(capacity)
        self._len = 0
        if len(digits) > capacity:
            raise CaptureError("more digits than the buffer holds")
        for char in digits:
            self.append(char)

    # -- filling and wiping ------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """How many digits the buffer can hold."""
        return len(self._buf)

    def append(self, digit: str) -> None:
        """Add one digit (a one-character string ``"0"`` to ``"9"``).

        Raises CaptureError if ``digit`` is not a single decimal digit or the buffer is full.
        """
        if len(digit) != 1 or not _ZERO <= ord(digit) <= _NINE:
            raise CaptureError("expected one decimal digit")
        if self._len >= len(self._buf):
            raise CaptureError("digit buffer is full")
        self._buf[self._len] = ord(digit)
        self._len += 1

    def clear(self) -> None:
        """Forget every digit (the buffer is zeroed, so this is the same as :meth:`wipe`)."""
        self.wipe()

    def wipe(self) -> None:
        """Overwrite the whole buffer with zero bytes, then mark it empty."""
        for index in range(len(self._buf)):
            self._buf[index] = 0
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __enter__(self) -> SensitiveDigits:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.wipe()

    def __del__(self) -> None:
        # Zero the buffer before its memory returns to the allocator, where it would linger.
        buf = getattr(self, "_buf", None)
        if buf is not None:
            self.wipe()

    # -- explicit accessors: each one is a deliberate disclosure --------------------------------

    def reveal(self) -> str:
        """Return every digit as a string.

        Only for building the payment gateway's request body (and validating the expiry date,
        which is not sensitive authentication data); the returned ``str`` cannot be wiped, so it
        must not outlive that request.
        """
        return self._buf[: self._len].decode("ascii")

    def last4(self) -> str:
        """Return the last four digits, the most a masked PAN shows by default.

        Raises CaptureError when fewer than four digits are held.
        """
        if self._len < 4:
            raise CaptureError("fewer than four digits held")
        return self._buf[self._len - 4 : self._len].decode("ascii")

    def bin6(self) -> str:
        """Return the first six digits (the issuer identification number).

        While fewer than six digits are held, returns all of them: brand detection runs on the
        prefix as it is typed.
        """
        return self._buf[: min(self._len, 6)].decode("ascii")

    def luhn_ok(self) -> bool:
        """Whether the digits pass the Luhn (mod 10) check; computed without copying them out."""
        with memoryview(self._buf) as view:
            return luhn_ok(view[: self._len])

    def __eq__(self, other: object) -> bool:
        """Constant-time comparison (for a given length) with another ``SensitiveDigits``."""
        if not isinstance(other, SensitiveDigits):
            return NotImplemented
        with memoryview(self._buf) as mine, memoryview(other._buf) as theirs:
            return hmac.compare_digest(mine[: self._len], theirs[: other._len])

    # -- never shown, never serialised ------------------------------------------------------------

    def __repr__(self) -> str:
        return f"SensitiveDigits(len={self._len})"

    def __str__(self) -> str:
        return repr(self)

    def __format__(self, format_spec: str) -> str:
        # Any format spec (":s", ">20", "") yields the same safe text.
        return repr(self)

    def __reduce__(self) -> NoReturn:
        raise CaptureError("card digits cannot be pickled")

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        raise CaptureError("card digits cannot be pickled")

    def __copy__(self) -> NoReturn:
        raise CaptureError("card digits cannot be copied")

    def __deepcopy__(self, memo: dict[int, Any]) -> NoReturn:
        raise CaptureError("card digits cannot be copied")
