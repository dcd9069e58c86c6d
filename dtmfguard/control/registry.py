"""The call registry: calls by call-id, each with two legs named by the side of the offer.

rtpengine's vocabulary, cut down to what a two-party masking proxy needs: a *call* (one
SIP Call-ID) has two *legs*, ``"offer"`` (the party whose SDP came in the first offer)
and ``"answer"`` (the party that answered it). A leg is known on the wire by its SIP tag
and owns one port pair on our interface: the ports where *we receive from that leg's
party*. The SDP we hand to one party therefore carries the other leg's ports.

Kamailio's ``rtpengine`` module always sends the offering party's tag as ``from-tag`` in
an offer and the answering party's tag as ``to-tag`` in an answer, swapping the SIP
From/To tags when the offer travels in a reply (late offer) or the answer in a request;
so a re-INVITE from the callee arrives as an offer whose ``from-tag`` is the answer
leg's tag. :meth:`Call.offer_side` and :meth:`Call.answer_side` resolve those tags to a
leg. This module does no I/O and never awaits: the media session and relay of a call
are held as opaque objects (see :class:`MediaSession` and :class:`Relay`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

__all__ = [
    "SIDES",
    "Call",
    "CallRegistry",
    "Leg",
    "MediaSession",
    "Relay",
    "Side",
    "other_side",
]

Side = Literal["offer", "answer"]
SIDES: tuple[Side, Side] = ("offer", "answer")


def other_side(side: Side) -> Side:
    """The leg across the call from ``side``."""
    return "answer" if side == "offer" else "offer"


class MediaSession(Protocol):
    """What the control plane needs of a call's media (``dtmfguard.control.media.CallMedia``)."""

    @property
    def masking_enabled(self) -> bool: ...

    def set_endpoint(self, leg: Side, endpoint: Any) -> None: ...

    def set_masking(self, enabled: bool) -> None: ...

    def idle_s(self, now_s: float) -> float: ...

    def stats(self) -> dict[str, Any]: ...

    def close(self) -> dict[str, Any]: ...


class Relay(Protocol):
    """The sockets of a call (``dtmfguard.transport.media.MediaRelay``)."""

    async def close(self) -> None: ...


@dataclass(slots=True)
class Leg:
    """One party of a call: its SIP tag, label and the port pair we receive it on."""

    side: Side
    tag: str | None = None
    label: str | None = None
    #: ``(rtp, rtcp)`` on our interface where this party's media arrives; None until allocated.
    ports: tuple[int, int] | None = None
    #: True once this party's SDP has been seen (its media address is known).
    has_endpoint: bool = False


@dataclass(slots=True)
class Call:
    """One SIP call through the proxy.

    Times: ``created_s`` and ``last_signal_s`` are on the control clock (monotonic
    seconds, the ``now_s`` the NG server passes); ``created_wall_s`` is Unix time for
    replies. ``caller`` names the leg whose keypad tones are masked.
    """

    call_id: str
    created_s: float
    created_wall_s: float
    caller: Side
    media: MediaSession
    relay: Relay | None = None
    last_signal_s: float = 0.0
    legs: dict[Side, Leg] = field(default_factory=lambda: {side: Leg(side) for side in SIDES})

    def __post_init__(self) -> None:
        if self.last_signal_s == 0.0:
            self.last_signal_s = self.created_s

    @property
    def answered(self) -> bool:
        """True once both parties' SDP has been seen."""
        return all(leg.has_endpoint for leg in self.legs.values())

    @property
    def tags(self) -> list[str]:
        """The known tags, offer leg first."""
        return [leg.tag for leg in self.legs.values() if leg.tag is not None]

    def side_of(self, tag: str | None) -> Side | None:
        """The leg known by ``tag``, or None."""
        if tag is None:
            return None
        for side, leg in self.legs.items():
            if leg.tag == tag:
                return side
        return None

    def offer_side(self, from_tag: str, to_tag: str | None) -> Side | None:
        """The leg whose SDP an offer carries (``from-tag`` is the offering party).

        Tags are assigned as a side effect where the request tells something new: the
        ``from-tag`` of an offer toward a known ``to-tag`` names the other leg (a late
        offer, or a re-INVITE after the first answer was never seen); a changed
        ``from-tag`` before any answer re-tags the offer leg. Returns None when the tags
        cannot belong to this call (both legs tagged, neither tag matching).
        """
        side = self.side_of(from_tag)
        if side is not None:
            if to_tag is not None and self.legs[other_side(side)].tag is None:
                self.legs[other_side(side)].tag = to_tag
            return side
        known = self.side_of(to_tag)
        if known is not None:
            side = other_side(known)
            self.legs[side].tag = from_tag
            return side
        if self.legs["answer"].tag is None:
            self.legs["offer"].tag = from_tag
            if to_tag is not None:
                self.legs["answer"].tag = to_tag
            return "offer"
        return None

    def answer_side(self, from_tag: str, to_tag: str) -> Side | None:
        """The leg whose SDP an answer carries (``to-tag`` is the answering party).

        ``from-tag`` must name the offering leg. An answer from a new ``to-tag`` toward
        the offer leg re-tags the answer leg (the branch of a forked call that answered
        last wins, as its 200 OK is what the caller sees). Returns None when
        ``from-tag`` names no leg.
        """
        offerer = self.side_of(from_tag)
        if offerer is None:
            return None
        side = other_side(offerer)
        self.legs[side].tag = to_tag
        return side

    def matches_tags(self, from_tag: str | None, to_tag: str | None) -> bool:
        """Whether a ``delete`` naming these tags is about this call.

        An absent tag matches; a given one must be a leg's tag, except a ``to-tag`` while
        the answer leg has none yet (a failed branch of a call still being set up).
        """
        if from_tag is not None and self.side_of(from_tag) is None:
            return False
        if to_tag is None or self.side_of(to_tag) is not None:
            return True
        return any(leg.tag is None for leg in self.legs.values())

    def port_pairs(self) -> dict[Side, tuple[int, int]]:
        """The allocated port pairs by leg."""
        return {side: leg.ports for side, leg in self.legs.items() if leg.ports is not None}

    def idle_s(self, now_s: float) -> float:
        """Seconds since the last sign of life: a media packet or an offer/answer."""
        return min(self.media.idle_s(now_s), max(0.0, now_s - self.last_signal_s))


class CallRegistry:
    """Calls by call-id, in the order they were created. No I/O, no locking."""

    def __init__(self) -> None:
        self._calls: dict[str, Call] = {}

    def __len__(self) -> int:
        return len(self._calls)

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._calls

    def __iter__(self) -> Iterator[Call]:
        return iter(list(self._calls.values()))

    def get(self, call_id: str) -> Call | None:
        return self._calls.get(call_id)

    def add(self, call: Call) -> None:
        """Register ``call``; raises ValueError if its call-id is already registered."""
        if call.call_id in self._calls:
            raise ValueError(f"call {call.call_id!r} is already registered")
        self._calls[call.call_id] = call

    def remove(self, call_id: str) -> Call | None:
        """Forget the call and return it (None if unknown)."""
        return self._calls.pop(call_id, None)

    def call_ids(self, limit: int) -> list[str]:
        """Up to ``limit`` call-ids, oldest first."""
        result: list[str] = []
        for call_id in self._calls:
            if len(result) >= limit:
                break
            result.append(call_id)
        return result

    def expired(
        self, now_s: float, *, timeout_s: float, setup_timeout_s: float, among: Iterable[Call] | None = None,
    ) -> list[Call]:
        """Calls idle for longer than their limit at ``now_s``.

        An answered call may be idle ``timeout_s`` (``[media] timeout_s``); a call still
        being set up (no answer yet: ringing, queued) gets ``setup_timeout_s``, as no
        media is expected before the answer. ``among``: look only at these calls (those
        no longer registered are skipped), so a sweep can be spread over several turns.
        """
        if among is None:
            calls: Iterable[Call] = self._calls.values()
        else:
            calls = [c for c in among if self._calls.get(c.call_id) is c]
        result = []
        for call in calls:
            limit_s = timeout_s if call.answered else max(timeout_s, setup_timeout_s)
            if call.idle_s(now_s) > limit_s:
                result.append(call)
        return result
