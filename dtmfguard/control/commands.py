"""The NG command table: one decoded request body in, one reply body out.

This is what an rtpengine NG request *does* (rtpengine's ``docs/ng_control_protocol.md``
for the subset dtmfguard serves), with no socket in sight: the transport
(:mod:`dtmfguard.transport.ng_server`) decodes datagrams and answers retransmissions;
this module validates the keys, resolves the call and leg in the
:class:`~dtmfguard.control.registry.CallRegistry`, rewrites the SDP, and asks a
:class:`MediaBackend` for the few things that touch the operating system (a port pair,
the media session, the relay's sockets). Tests drive it with a fake backend.

Ports follow rtpengine: each leg owns the pair where we receive *from* that leg's party,
so the SDP of an offer (which goes on to the answering party) carries the answer leg's
ports, and the SDP of an answer (back to the offering party) the offer leg's. Both pairs
are taken at the first offer, so running out of ports is reported where Kamailio can
still fail over to another media proxy (``Ran out of ports``). Error wording is
rtpengine's where it has one, because Kamailio logs it and operators search for it.

Commands run one at a time (an :class:`asyncio.Lock`): each is a few dictionary
operations and at most one socket bind, and the media timeout sweep runs under the same
lock, so no command ever sees a call half set up or half torn down.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from structlog.typing import FilteringBoundLogger

from dtmfguard.control.registry import Call, CallRegistry, MediaSession, Relay, Side, other_side
from dtmfguard.errors import CaptureError, DtmfguardError, ProtocolError
from dtmfguard.log import get_logger
from dtmfguard.protocol.ng import (
    Command,
    error_reply,
    ignored_options_warning,
    list_limit,
    missing_key_reason,
    ok_reply,
    parse_command,
    pong_reply,
    unsupported_options,
)
from dtmfguard.protocol.sdp import MediaEndpoint, SessionDescription, remote_endpoints, rewrite_for_proxy

__all__ = [
    "CALL_NOT_FOUND",
    "DEFAULT_SETUP_TIMEOUT_S",
    "CaptureControl",
    "CommandHandler",
    "CommandSettings",
    "MediaBackend",
]

#: rtpengine's warning (or, with the ``fatal`` flag, error) for a delete that finds nothing.
CALL_NOT_FOUND = "Call-ID not found or tags didn't match"
UNKNOWN_CALL = "Unknown call-id"
BAD_TAGS = "Invalid dialogue association"
INTERNAL_ERROR = "Internal error"
CAPTURE_NOT_AVAILABLE = "capture is not available (no capture service)"
#: A call not yet answered (ringing, queued) has no media to time out on; rtpengine
#: gives such calls an hour (its ``offer-timeout``) before it forgets them.
DEFAULT_SETUP_TIMEOUT_S = 3600.0
#: How many times a new call tries fresh port pairs when binding fails.
BIND_ATTEMPTS = 4

_PLAIN_RTP = ("RTP/AVP", "RTP/AVPF")
_REPLY_MESSAGE_TYPES = ("reply", "sip-reply", "response", "sip-response")


def _log() -> FilteringBoundLogger:
    return get_logger(component="control")


class MediaBackend(Protocol):
    """The operating-system side of a call, as the command table needs it."""

    def allocate_pair(self) -> tuple[int, int]:
        """An even RTP port and the RTCP port above it; raises DtmfguardError("Ran out of ports")."""
        ...

    def release_pair(self, rtp_port: int) -> None: ...

    def new_media(self, call_id: str, caller: Side) -> MediaSession:
        """A fresh media session for a call; ``caller`` is the leg whose tones are masked."""
        ...

    def endpoint(self, remote: MediaEndpoint) -> Any:
        """What :meth:`MediaSession.set_endpoint` takes, for one party's audio section."""
        ...

    async def open_relay(self, media: MediaSession, ports: dict[Side, tuple[int, int]]) -> Relay:
        """Bind the call's sockets; raises OSError or DtmfguardError when that fails."""
        ...


class CaptureControl(Protocol):
    """The card-capture side of a call (:class:`~dtmfguard.capture.service.CaptureService`)."""

    def start_capture(
        self,
        call_id: str,
        amount_minor: int,
        currency: str | None,
        reference: str,
        who: str,
        *,
        source: str = ...,
        auto_submit: bool = ...,
        media: Any = ...,
        now_ms: int | None = ...,
    ) -> str:
        """Start a capture; raises CaptureError (a message without digits) when refused."""
        ...

    def cancel_capture(self, call_id: str, who: str, *, source: str = ...) -> None: ...

    def status(self, call_id: str) -> dict[str, Any] | None: ...

    def call_ended(self, call_id: str) -> None: ...


@dataclass(frozen=True)
class CommandSettings:
    """How calls are set up: ``address`` goes into every SDP we hand out (``[media] interface``)."""

    address: str
    caller_side: Side = "offer"
    timeout_s: float = 60.0
    setup_timeout_s: float = DEFAULT_SETUP_TIMEOUT_S


@dataclass(frozen=True)
class _AudioPlan:
    """Which ``m=`` section we relay, and which we reject."""

    index: int
    sections: int
    rejected: int  # sections other than ours that were not already rejected

    def ports(self, rtp_port: int) -> list[int]:
        return [rtp_port if i == self.index else 0 for i in range(self.sections)]


def _audio_plan(description: SessionDescription) -> _AudioPlan:
    """Pick the first audio section; every other section gets port 0 (not relayed).

    A section left with its own address would carry media around the proxy, and audio
    that bypasses the masker is exactly what must not happen; rejecting it is the
    fail-closed choice. Raises ProtocolError when there is no plain-RTP audio to relay.
    """
    index = -1
    rejected = 0
    for i, section in enumerate(description.media):
        media = section.media
        if index < 0 and media.media.casefold() == "audio":
            if media.proto.upper() not in _PLAIN_RTP:
                raise ProtocolError(
                    f"media transport {media.proto} is not supported (only {' and '.join(_PLAIN_RTP)}): "
                    "encrypted audio cannot be masked"
                )
            index = i
        elif media.port != 0:
            rejected += 1
    if index < 0:
        raise ProtocolError("no audio media section in SDP")
    return _AudioPlan(index, len(description.media), rejected)


def _canonical(key: str) -> str:
    return key.replace("_", "-").replace(" ", "-").casefold()


def _option(body: Mapping[str, Any], name: str) -> Any:
    """A top-level option by canonical name (clients spell keys with spaces or underscores)."""
    for key, value in body.items():
        if _canonical(key) == name:
            return value
    return None


def _has_flag(body: Mapping[str, Any], name: str) -> bool:
    flags = _option(body, "flags")
    if isinstance(flags, str):
        flags = [flags]
    return isinstance(flags, list) and any(isinstance(f, str) and _canonical(f) == name for f in flags)


def _is_late_offer(body: Mapping[str, Any]) -> bool:
    """Whether the first offer of a call comes from the party that was called.

    That is a late offer: the INVITE had no SDP and the offer travels in the callee's
    reply. Kamailio says so in ``sip-message-type`` (recent versions); older ones (5.6)
    do not, but their offer from a reply carries the caller's tag as ``to-tag``, which
    an offer opening a call never has otherwise. (A re-INVITE for a call this process
    does not know, after a restart, looks the same; it is treated alike.)
    """
    value = _option(body, "sip-message-type")
    if isinstance(value, str) and value:
        return _canonical(value) in _REPLY_MESSAGE_TYPES
    return _optional_tag(body, "to-tag") is not None


def _optional_tag(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    return value if isinstance(value, str) and value else None


def _with_warnings(reply: dict[str, Any], notes: list[str | None]) -> dict[str, Any]:
    text = "; ".join(note for note in notes if note)
    if text:
        reply["warning"] = text
    return reply


def _ignored(body: Mapping[str, Any], *, handled: tuple[str, ...] = ()) -> str | None:
    names = [name for name in unsupported_options(body) if name not in handled]
    return ignored_options_warning(names)


# --------------------------------------------------------------------------- statistics


_COUNTERS = ("packets", "bytes", "errors", "dropped")


def _count(value: Any) -> int:
    """A counter as a bencode integer (bools and floats from the media side included)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    return 0


def _counters(stats: Any) -> dict[str, int]:
    source = stats if isinstance(stats, Mapping) else {}
    return {name: _count(source.get(name)) for name in _COUNTERS}


def _rtcp_counters(leg_stats: Any) -> dict[str, int]:
    """RTCP counters of a leg: a nested ``rtcp`` mapping, or a flat ``rtcp_packets`` count."""
    if not isinstance(leg_stats, Mapping):
        return dict.fromkeys(_COUNTERS, 0)
    nested = leg_stats.get("rtcp")
    if isinstance(nested, Mapping):
        return _counters(nested)
    return {**dict.fromkeys(_COUNTERS, 0), "packets": _count(leg_stats.get("rtcp_packets"))}


def _call_report(call: Call, now_s: float, wall_s: float) -> dict[str, Any]:
    """rtpengine's query shape (``created``, ``last signal``, ``tags``, ``totals``) plus ours.

    ``totals`` keeps rtpengine's ``RTP``/``RTCP`` split, which Kamailio's ``$rtpstat``
    reads; ``legs`` has the same counters by leg, and ``masked tones`` how many keypad
    tones the agent did not hear. Never the digits: the media side reports counts only,
    and only the counters named here are copied.
    """
    stats = call.media.stats()
    rtp = dict.fromkeys(_COUNTERS, 0)
    rtcp = dict.fromkeys(_COUNTERS, 0)
    legs: dict[str, Any] = {}
    tags: dict[str, Any] = {}
    for side, leg in call.legs.items():
        leg_stats = stats.get(side)
        counters = _counters(leg_stats)
        rtcp_counters = _rtcp_counters(leg_stats)
        for name in _COUNTERS:
            rtp[name] += counters[name]
            rtcp[name] += rtcp_counters[name]
        entry: dict[str, Any] = {
            "side": side,
            "role": "caller" if side == call.caller else "agent",
            **counters,
        }
        if leg.tag is not None:
            entry["tag"] = leg.tag
        if leg.label is not None:
            entry["label"] = leg.label
        if leg.ports is not None:
            entry["local port"] = leg.ports[0]
        legs[side] = entry
        if leg.tag is not None:
            peer = call.legs[other_side(side)].tag
            tags[leg.tag] = {
                "tag": leg.tag,
                "created": int(call.created_wall_s),
                **({"label": leg.label} if leg.label is not None else {}),
                **({"in dialogue with": peer} if peer is not None else {}),
                "totals": {"RTP": counters, "RTCP": rtcp_counters},
            }
    last_signal_wall_s = wall_s - max(0.0, now_s - call.last_signal_s)
    return {
        "created": int(call.created_wall_s),
        "created_us": round((call.created_wall_s % 1.0) * 1e6) % 1_000_000,
        "last signal": int(last_signal_wall_s),
        "masking": "on" if call.media.masking_enabled else "off",
        "masked tones": _count(stats.get("masked_tones")),
        "legs": legs,
        "tags": tags,
        "totals": {"RTP": rtp, "RTCP": rtcp},
    }


def _summary_fields(summary: Mapping[str, Any], depth: int = 0) -> dict[str, Any]:
    """The numeric part of a media summary, for the end-of-call log line.

    Strings and lists are left out on purpose: only counts and durations are logged, so
    nothing the media side might describe in words (such as a digit) reaches the log.
    """
    result: dict[str, Any] = {}
    for key, value in summary.items():
        if not isinstance(key, str):
            continue
        if isinstance(value, bool | int | float):
            result[key] = value
        elif isinstance(value, Mapping) and depth < 2:
            nested = _summary_fields(value, depth + 1)
            if nested:
                result[key] = nested
    return result


# --------------------------------------------------------------------------- handler


class CommandHandler:
    """Runs NG commands against a call registry; see the module docstring.

    ``now_s`` (passed to every method) is the control clock, monotonic seconds, also
    what media idleness is measured on; ``wall_clock`` gives Unix time for ``created``.
    """

    def __init__(
        self,
        backend: MediaBackend,
        settings: CommandSettings,
        *,
        registry: CallRegistry | None = None,
        wall_clock: Callable[[], float] = time.time,
        capture: CaptureControl | None = None,
    ) -> None:
        self.backend = backend
        self.settings = settings
        self.capture = capture
        self.registry = registry if registry is not None else CallRegistry()
        self._wall_clock = wall_clock
        self._lock = asyncio.Lock()
        #: Commands answered, by command name (``"error"`` for replies refused before dispatch).
        self.counts: dict[str, int] = {}

    async def handle(self, body: Mapping[str, Any], *, now_s: float, source: object = None) -> dict[str, Any]:
        """Act on one request body and return the reply body; never raises.

        ``source`` (the requester's address) is only used in log lines.
        """
        try:
            command = parse_command(body)
        except ProtocolError as exc:
            self._count("error")
            return error_reply(str(exc))
        self._count(command.value)
        reason = missing_key_reason(command, body)
        if reason is not None:
            return error_reply(reason)
        if command is Command.PING:
            return pong_reply()
        async with self._lock:
            try:
                return await self._dispatch(command, body, now_s)
            except Exception:
                # A bug must not take the control socket down with it; Kamailio sees an error.
                _log().exception("ng command failed", command=command.value, source=str(source))
                return error_reply(INTERNAL_ERROR)

    def _count(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    async def _dispatch(self, command: Command, body: Mapping[str, Any], now_s: float) -> dict[str, Any]:
        if command is Command.OFFER:
            return await self._offer(body, now_s)
        if command is Command.ANSWER:
            return self._answer(body, now_s)
        if command is Command.DELETE:
            return await self._delete(body, now_s)
        if command is Command.QUERY:
            return self._query(body, now_s)
        if command is Command.LIST:
            return _with_warnings(ok_reply(calls=self.registry.call_ids(list_limit(body))), [_ignored(body)])
        if command in (Command.BLOCK_DTMF, Command.UNBLOCK_DTMF):
            return self._block_dtmf(body, enabled=command is Command.BLOCK_DTMF, now_s=now_s)
        raise AssertionError(f"no handler for {command!r}")  # every Command has a branch above

    # ----------------------------------------------------------------------- offer / answer

    async def _offer(self, body: Mapping[str, Any], now_s: float) -> dict[str, Any]:
        call_id: str = body["call-id"]
        from_tag: str = body["from-tag"]
        to_tag = _optional_tag(body, "to-tag")
        try:
            description = SessionDescription.parse(body["sdp"])
            plan = _audio_plan(description)
            remote = remote_endpoints(description)[plan.index]
        except ProtocolError as exc:
            return error_reply(f"Failed to parse SDP: {exc}")
        call = self.registry.get(call_id)
        if call is None:
            created = await self._new_call(call_id, body, now_s)
            if isinstance(created, str):
                return error_reply(created)
            call = created
        side = call.offer_side(from_tag, to_tag)
        if side is None:
            return error_reply(BAD_TAGS)
        self._label(call, side, body, "from-label")
        self._label(call, other_side(side), body, "to-label")
        return self._accept_sdp(call, side, body, plan, remote, now_s)

    def _answer(self, body: Mapping[str, Any], now_s: float) -> dict[str, Any]:
        call = self.registry.get(body["call-id"])
        if call is None:
            return error_reply(UNKNOWN_CALL)
        try:
            description = SessionDescription.parse(body["sdp"])
            plan = _audio_plan(description)
            remote = remote_endpoints(description)[plan.index]
        except ProtocolError as exc:
            return error_reply(f"Failed to parse SDP: {exc}")
        side = call.answer_side(body["from-tag"], body["to-tag"])
        if side is None:
            return error_reply(BAD_TAGS)
        self._label(call, side, body, "to-label")
        return self._accept_sdp(call, side, body, plan, remote, now_s)

    def _accept_sdp(
        self,
        call: Call,
        side: Side,
        body: Mapping[str, Any],
        plan: _AudioPlan,
        remote: MediaEndpoint,
        now_s: float,
    ) -> dict[str, Any]:
        """Take one party's SDP: note where it wants media, hand out the other leg's ports."""
        ports = call.legs[other_side(side)].ports
        assert ports is not None  # both pairs are taken when the call is created
        replace = _option(body, "replace")
        replace_origin = isinstance(replace, list) and any(
            isinstance(item, str) and _canonical(item) == "origin" for item in replace
        )
        sdp = rewrite_for_proxy(
            body["sdp"],
            address=self.settings.address,
            ports=plan.ports(ports[0]),
            origin_address=self.settings.address if replace_origin else None,
        )
        call.media.set_endpoint(side, self.backend.endpoint(remote))
        call.legs[side].has_endpoint = True
        call.last_signal_s = now_s
        notes: list[str | None] = [_ignored(body)]
        if plan.rejected:
            notes.append(f"{plan.rejected} media section(s) besides the first audio one rejected (port 0)")
        return _with_warnings(ok_reply(sdp=sdp), notes)

    def _label(self, call: Call, side: Side, body: Mapping[str, Any], key: str) -> None:
        value = body.get(key)
        if key == "from-label" and not isinstance(value, str):
            value = body.get("label")
        if isinstance(value, str) and value:
            call.legs[side].label = value

    async def _new_call(self, call_id: str, body: Mapping[str, Any], now_s: float) -> Call | str:
        """Take both port pairs, create the media session and bind its sockets.

        Returns the call (registered) or the error reason; nothing is left allocated on
        error. A pair another program holds fails to bind; the call then tries fresh pairs
        (released pairs go to the back of the pool's line) up to :data:`BIND_ATTEMPTS` times.
        """
        caller = self.settings.caller_side
        if _is_late_offer(body):
            # The party that sent this offer is the one that was called.
            caller = other_side(caller)
        media = self.backend.new_media(call_id, caller)
        call = Call(call_id, created_s=now_s, created_wall_s=self._wall_clock(), caller=caller, media=media)
        reason = ""
        for _attempt in range(BIND_ATTEMPTS):
            pairs: list[tuple[int, int]] = []
            try:
                for _ in range(2):
                    pairs.append(self.backend.allocate_pair())
                call.legs["offer"].ports, call.legs["answer"].ports = pairs
                call.relay = await self.backend.open_relay(media, call.port_pairs())
            except DtmfguardError as exc:
                reason = str(exc)  # "Ran out of ports": final, Kamailio fails over
            except OSError as exc:
                reason = f"Failed to open media ports: {exc}"
                self._release(pairs)
                continue
            else:
                self.registry.add(call)
                _log().info("call created", call_id=call_id, caller=caller, calls=len(self.registry))
                return call
            self._release(pairs)
            break
        for leg in call.legs.values():
            leg.ports = None
        media.close()
        _log().warning("call refused", call_id=call_id, reason=reason)
        return reason

    def _release(self, pairs: list[tuple[int, int]]) -> None:
        for rtp_port, _rtcp_port in pairs:
            self.backend.release_pair(rtp_port)

    # ----------------------------------------------------------------------- delete / query / list

    async def _delete(self, body: Mapping[str, Any], now_s: float) -> dict[str, Any]:
        call = self.registry.get(body["call-id"])
        if call is None or not call.matches_tags(_optional_tag(body, "from-tag"), _optional_tag(body, "to-tag")):
            if _has_flag(body, "fatal"):
                return error_reply(CALL_NOT_FOUND)
            return _with_warnings(ok_reply(), [CALL_NOT_FOUND, _ignored(body)])
        report = _call_report(call, now_s, self._wall_clock())
        await self.end_call(call, "deleted", now_s)
        return _with_warnings(ok_reply(**report), [_ignored(body)])

    def _query(self, body: Mapping[str, Any], now_s: float) -> dict[str, Any]:
        call = self.registry.get(body["call-id"])
        if call is None:
            return error_reply(UNKNOWN_CALL)
        report = _call_report(call, now_s, self._wall_clock())
        capture = self.capture.status(call.call_id) if self.capture is not None else None
        if capture is not None:
            report["capture"] = capture
        return _with_warnings(ok_reply(**report), [_ignored(body)])

    def _block_dtmf(self, body: Mapping[str, Any], *, enabled: bool, now_s: float) -> dict[str, Any]:
        call = self.registry.get(body["call-id"])
        if call is None:
            return error_reply(UNKNOWN_CALL)
        call.media.set_masking(enabled)
        _log().info("masking switched", call_id=call.call_id, masking="on" if enabled else "off")
        notes: list[str | None] = [_ignored(body, handled=("capture",))]
        request = _option(body, "capture")
        if request is not None:
            if self.capture is None:
                notes.append(CAPTURE_NOT_AVAILABLE)
            elif enabled:
                reason = self._start_capture(call, request, now_s)
                if reason is not None:
                    return _with_warnings(error_reply(reason), notes)
            else:
                try:
                    self.capture.cancel_capture(call.call_id, "ng", source="ng")
                except CaptureError as exc:
                    notes.append(str(exc))
        return _with_warnings(ok_reply(), notes)

    def _start_capture(self, call: Call, request: Any, now_s: float) -> str | None:
        """``block DTMF`` with ``capture``: start one; the error reason, or None when started.

        ``capture`` is a dictionary: ``amount`` (minor units, an integer or a string of digits),
        ``currency`` (default ``[capture] currency``), ``reference``, and ``submit``: ``auto``
        (default: the card goes to the gateway once every field is valid) or ``agent``.
        """
        assert self.capture is not None
        if not isinstance(request, Mapping):
            return "capture: must be a dictionary with amount, currency and reference"
        options = {_canonical(key): value for key, value in request.items() if isinstance(key, str)}
        amount = options.get("amount")
        if isinstance(amount, str) and amount.isascii() and amount.isdigit():
            amount = int(amount)
        currency = options.get("currency")
        reference = options.get("reference")
        submit = options.get("submit", "auto")
        if not isinstance(amount, int) or isinstance(amount, bool):
            return "capture: amount must be a whole number of minor units"
        if currency is not None and not isinstance(currency, str):
            return "capture: currency must be a string"
        if not isinstance(reference, str):
            return "capture: reference is required"
        if submit not in ("auto", "agent"):
            return "capture: submit must be auto or agent"
        try:
            self.capture.start_capture(
                call.call_id, amount, currency, reference, "ng", source="ng", auto_submit=submit == "auto",
                media=call.media, now_ms=round(max(0.0, now_s - call.created_s) * 1000),
            )
        except CaptureError as exc:
            return f"capture: {exc}"
        return None

    # ----------------------------------------------------------------------- ending calls

    async def end_call(self, call: Call, reason: str, now_s: float) -> None:
        """Close the call's sockets and media, give back its ports, log its one summary line.

        The caller holds the lock (commands) or takes it (:meth:`expire_idle`, :meth:`close_all`).
        """
        self.registry.remove(call.call_id)
        if self.capture is not None:
            try:
                self.capture.call_ended(call.call_id)
            except Exception:
                _log().exception("ending the capture failed", call_id=call.call_id)
        try:
            if call.relay is not None:
                await call.relay.close()
        except Exception:
            _log().exception("closing media sockets failed", call_id=call.call_id)
        try:
            summary = call.media.close()
        except Exception:
            _log().exception("closing media session failed", call_id=call.call_id)
            summary = {}
        for leg in call.legs.values():
            if leg.ports is not None:
                self.backend.release_pair(leg.ports[0])
                leg.ports = None
        _log().info(
            "call ended",
            call_id=call.call_id,
            reason=reason,
            duration_s=round(max(0.0, now_s - call.created_s), 3),
            answered=call.answered,
            caller=call.caller,
            masking="on" if call.media.masking_enabled else "off",
            media=_summary_fields(summary),
            calls=len(self.registry),
        )

    async def expire_idle(self, now_s: float, among: Iterable[Call] | None = None) -> list[str]:
        """End every call idle past its timeout at ``now_s``; return their call-ids.
        ``among``: look only at these calls (:meth:`CallRegistry.expired`)."""
        async with self._lock:
            expired = self.registry.expired(
                now_s, timeout_s=self.settings.timeout_s, setup_timeout_s=self.settings.setup_timeout_s, among=among,
            )
            for call in expired:
                await self.end_call(call, "media timeout", now_s)
            return [call.call_id for call in expired]

    async def close_all(self, now_s: float, reason: str = "shutdown") -> int:
        """End every call (shutdown); return how many there were."""
        async with self._lock:
            calls = list(self.registry)
            for call in calls:
                await self.end_call(call, reason, now_s)
            return len(calls)
