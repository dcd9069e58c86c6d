"""The rtpengine NG control protocol: datagram framing, command model and reply building.

This module implements the message layer of rtpengine's ``docs/ng_control_protocol.md``
as driven by Kamailio's and OpenSIPS's ``rtpengine`` modules, without any I/O: a request
datagram is ``COOKIE SP PAYLOAD`` where the payload is a bencode dictionary (or a JSON
object when its first byte is ``{``); the reply carries the same cookie and the same
encoding. On top of the framing it names the commands dtmfguard serves, validates the
keys each one requires (with rtpengine's own error wording, which Kamailio logs), sorts
every option a SIP proxy may send into "implemented" and "accepted and ignored" (ignored
ones are named in the reply's ``warning``, never an error), and keeps a retransmission
cache keyed by source and cookie so a retransmitted request is answered without acting
twice. Time enters only as the ``now_s`` argument the caller passes.
"""

from __future__ import annotations

import enum
import json as jsonlib
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from dtmfguard.errors import ProtocolError
from dtmfguard.protocol import bencode

__all__ = [
    "DEFAULT_LIST_LIMIT",
    "FLAG_SUPPORT",
    "KEY_SUPPORT",
    "MAX_COOKIE_BYTES",
    "MAX_DATAGRAM_BYTES",
    "REPLACE_SUPPORT",
    "VALUE_SUPPORT",
    "Command",
    "NgRequest",
    "ReplyCache",
    "Support",
    "error_reply",
    "expand_rtpp_flags",
    "ignored_options_warning",
    "list_limit",
    "missing_key_reason",
    "ok_reply",
    "parse_command",
    "parse_request",
    "pong_reply",
    "serialize_reply",
    "unsupported_options",
]

#: Largest request accepted: one UDP datagram.
MAX_DATAGRAM_BYTES = 65_535
#: Kamailio's cookies are ``SERVERID_RANDOM_SEQ`` (at most 34 bytes); leave headroom.
MAX_COOKIE_BYTES = 128
#: Default and cap of the ``list`` command's ``limit`` (rtpengine's default is 32).
DEFAULT_LIST_LIMIT = 32


class Command(enum.StrEnum):
    """The NG commands dtmfguard serves, with their canonical wire spelling."""

    PING = "ping"
    OFFER = "offer"
    ANSWER = "answer"
    DELETE = "delete"
    QUERY = "query"
    LIST = "list"
    BLOCK_DTMF = "block DTMF"
    UNBLOCK_DTMF = "unblock DTMF"


def _canonical(name: str) -> str:
    """Fold the spellings clients use: case, and space/hyphen/underscore as one separator."""
    return name.replace("_", "-").replace(" ", "-").casefold()


_COMMANDS = {_canonical(command.value): command for command in Command}


@dataclass(frozen=True, slots=True)
class NgRequest:
    """One decoded request.

    ``body`` has ``str`` keys, and ``str`` values wherever the bytes were UTF-8 (see
    :func:`dtmfguard.protocol.bencode.to_text`). ``json`` tells the reply encoding.
    """

    cookie: bytes
    body: dict[str, Any]
    json: bool

    @property
    def command(self) -> Command:
        """The normalised command; raises :class:`ProtocolError` when missing or unknown."""
        return parse_command(self.body)


def parse_request(datagram: bytes) -> NgRequest:
    """Split ``COOKIE SP PAYLOAD`` and decode the payload dictionary.

    A Kamailio ``rtpp-flags`` string (flags left for the media proxy to parse) is
    expanded into the body with :func:`expand_rtpp_flags`. Raises :class:`ProtocolError`
    for an oversized datagram, a bad cookie, or a payload that is not a dictionary.
    """
    if len(datagram) > MAX_DATAGRAM_BYTES:
        raise ProtocolError(f"ng: datagram of {len(datagram)} bytes exceeds the limit of {MAX_DATAGRAM_BYTES} bytes")
    space = datagram.find(b" ", 0, MAX_COOKIE_BYTES + 1)
    if space < 0:
        if len(datagram) > MAX_COOKIE_BYTES:
            raise ProtocolError(f"ng: no space after the cookie within the first {MAX_COOKIE_BYTES + 1} bytes")
        raise ProtocolError("ng: no space between cookie and payload")
    if space == 0:
        raise ProtocolError("ng: empty cookie (datagram starts with a space)")
    cookie = bytes(datagram[:space])
    for offset, byte in enumerate(cookie):
        if not 0x21 <= byte <= 0x7E:
            raise ProtocolError(f"ng: cookie has non-printable byte 0x{byte:02x} at offset {offset}")
    payload = bytes(datagram[space + 1 :])
    if not payload:
        raise ProtocolError("ng: empty payload after the cookie")
    if payload[:1] == b"{":
        body = _decode_json(payload)
        is_json = True
    else:
        try:
            value = bencode.decode(payload, max_length=MAX_DATAGRAM_BYTES)
        except ProtocolError as exc:
            raise ProtocolError(f"ng: payload after the cookie: {exc}") from None
        if not isinstance(value, dict):
            raise ProtocolError(f"ng: payload is a bencode {_kind(value)}, expected a dictionary")
        text = bencode.to_text(value)
        assert isinstance(text, dict)  # to_text maps a dict to a dict
        body = text
        is_json = False
    raw_flags = body.get("rtpp-flags")
    if isinstance(raw_flags, str):
        body = expand_rtpp_flags(body)
    return NgRequest(cookie=cookie, body=body, json=is_json)


def _kind(value: object) -> str:
    if isinstance(value, bytes):
        return "string"
    if isinstance(value, int):
        return "integer"
    return "list"


def _decode_json(payload: bytes) -> dict[str, Any]:
    try:
        value = jsonlib.loads(payload)
    except RecursionError:
        raise ProtocolError("ng: JSON payload nests too deeply") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ProtocolError(f"ng: invalid JSON payload: {exc}") from None
    if not isinstance(value, dict):
        raise ProtocolError("ng: JSON payload is not an object")
    checked = _check_json(value, "", 1)
    assert isinstance(checked, dict)
    return checked


def _check_json(value: Any, where: str, depth: int) -> Any:
    """Keep the JSON values bencode can carry; booleans become 0/1 integers."""
    if depth > bencode.MAX_DEPTH:
        raise ProtocolError(f"ng: JSON payload nests deeper than {bencode.MAX_DEPTH} levels at {where or 'top'}")
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (str, int)):
        return value
    if isinstance(value, list):
        return [_check_json(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value)]
    if isinstance(value, dict):
        return {key: _check_json(item, f"{where}.{key}" if where else key, depth + 1) for key, item in value.items()}
    kind = "null" if value is None else type(value).__name__
    raise ProtocolError(f"ng: JSON value at {where or 'top'} is {kind}, which the NG protocol cannot carry")


def serialize_reply(cookie: bytes, body: Mapping[str, Any], json: bool) -> bytes:
    """Encode ``COOKIE SP REPLY`` in the request's encoding (bencode, or JSON if ``json``)."""
    if json:
        payload = jsonlib.dumps(_jsonable(body), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    else:
        payload = bencode.encode(body)
    return cookie + b" " + payload


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, Mapping):
        return {key.decode("utf-8") if isinstance(key, bytes) else key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return value


def ok_reply(**fields: Any) -> dict[str, Any]:
    """``{"result": "ok", **fields}``; pass keys with spaces or hyphens as ``**{"last signal": t}``."""
    return {"result": "ok", **fields}


def pong_reply() -> dict[str, Any]:
    """The only valid reply to ``ping``."""
    return {"result": "pong"}


def error_reply(reason: str) -> dict[str, Any]:
    """``{"result": "error", "error-reason": reason}``; the protocol allows no other keys."""
    return {"result": "error", "error-reason": reason}


def parse_command(body: Mapping[str, Any]) -> Command:
    """Return the request's command, folding case and ``-``/``_``/space spellings.

    Raises :class:`ProtocolError` when ``command`` is missing, not a string or unknown;
    the message is fit for an ``error-reason``.
    """
    name = body.get("command")
    if name is None:
        raise ProtocolError("No command in message")
    if not isinstance(name, str):
        raise ProtocolError("Invalid type for 'command' (expected a string)")
    command = _COMMANDS.get(_canonical(name))
    if command is None:
        raise ProtocolError(f"Unrecognized command '{name}'")
    return command


# rtpengine's own wording for its basic errors (daemon/call_interfaces.c), which
# Kamailio logs verbatim; keep it so operators can grep one string for both proxies.
_MISSING = {
    "sdp": "No SDP body in message",
    "call-id": "No call-id in message",
    "from-tag": "No from-tag in message",
    "to-tag": "No to-tag in message",
}

_REQUIRED: dict[Command, tuple[str, ...]] = {
    Command.PING: (),
    Command.LIST: (),
    Command.OFFER: ("sdp", "call-id", "from-tag"),
    Command.ANSWER: ("sdp", "call-id", "from-tag", "to-tag"),
    Command.DELETE: ("call-id",),
    Command.QUERY: ("call-id",),
    Command.BLOCK_DTMF: ("call-id",),
    Command.UNBLOCK_DTMF: ("call-id",),
}

# Optional keys that must be strings when present, per command.
_OPTIONAL_STRINGS = ("from-tag", "to-tag", "via-branch", "label")


def missing_key_reason(command: Command, body: Mapping[str, Any]) -> str | None:
    """Return why ``body`` cannot be acted on for ``command``, or ``None`` if it can.

    Checks the required keys (an empty string counts as missing), that identifying keys
    are strings, and the ``list`` command's ``limit``.
    """
    for key in _REQUIRED[command]:
        value = body.get(key)
        if value is None or value == "":
            return _MISSING[key]
        if not isinstance(value, str):
            return f"Invalid type for '{key}' (expected a string)"
    for key in _OPTIONAL_STRINGS:
        value = body.get(key)
        if value is not None and not isinstance(value, str):
            return f"Invalid type for '{key}' (expected a string)"
    if command is Command.LIST:
        try:
            list_limit(body)
        except ProtocolError as exc:
            return str(exc)
    return None


def list_limit(body: Mapping[str, Any]) -> int:
    """The ``list`` command's ``limit``: a positive integer (or digit string), default 32."""
    value = body.get("limit", DEFAULT_LIST_LIMIT)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or value <= 0:
        raise ProtocolError("Invalid 'limit' (expected a positive integer)")
    return value


class Support(enum.Enum):
    """How dtmfguard treats an option a SIP proxy sends."""

    IMPLEMENTED = "implemented"
    IGNORED = "accepted and ignored"


_I = Support.IMPLEMENTED
_X = Support.IGNORED

#: Top-level keys whose presence alone decides their support. Names are canonical
#: (lower case, hyphens); clients may spell them with spaces (``"received from"``).
KEY_SUPPORT: dict[str, Support] = {
    # identity and framing, consumed by the command model
    "command": _I,
    "call-id": _I,
    "from-tag": _I,
    "to-tag": _I,
    "via-branch": _I,
    "sdp": _I,
    "limit": _I,
    "all": _I,
    "label": _I,
    "from-label": _I,
    "to-label": _I,
    "set-label": _I,
    # sent by Kamailio on every request; informational for us
    "received-from": _I,
    "sip-message-type": _I,
    "supports": _I,
    "rtpp-flags": _I,
    # containers, judged entry by entry below
    "flags": _I,
    "replace": _I,
    # recognised, not implemented
    "direction": _X,
    "interface": _X,
    "address-family": _X,
    "media-address": _X,
    "codec": _X,
    "ptime": _X,
    "ptime-reverse": _X,
    "rtcp-mux": _X,
    "t.38": _X,
    "tos": _X,
    "ice-lite": _X,
    "dtls-reverse": _X,
    "dtls-fingerprint": _X,
    "osrtp": _X,
    "metadata": _X,
    "output-destination": _X,
    "xmlrpc-callback": _X,
    "delete-delay": _X,
    "media-echo": _X,
    "endpoint-learning": _X,
    "generate-rtcp": _X,
    "drop-traffic": _X,
    "dtmf-security": _X,
    "dtmf-security-trigger": _X,
    "dtmf-security-trigger-end": _X,
    "dtmf-delay": _X,
    "dtmf-log-dest": _X,
    "delay-buffer": _X,
    "trigger": _X,
    "trigger-end": _X,
    "trigger-end-time": _X,
    "trigger-end-digits": _X,
    "frequency": _X,
    "frequencies": _X,
    "volume": _X,
    "digit": _X,
    "code": _X,
    "repacketize": _X,
    "sdp-attr": _X,
    "audio-player": _X,
    "from-tags": _X,
}

#: Keys whose support depends on the value; values not listed are ignored.
VALUE_SUPPORT: dict[str, dict[str, Support]] = {
    # dtmfguard cannot do ICE, so it always strips ICE attributes from the SDP it relays.
    "ice": {"remove": _I},
    # plain RTP is what dtmfguard speaks; SRTP/DTLS are never offered.
    "transport-protocol": {"rtp/avp": _I},
    "dtls": {"off": _I, "no": _I, "disable": _I},
    "sdes": {"off": _I, "no": _I, "disable": _I},
    # recording is configured on dtmfguard's side, masked audio only.
    "record-call": {"no": _I, "off": _I},
}

#: Entries of the ``flags`` list; flags not listed are ignored.
FLAG_SUPPORT: dict[str, Support] = {
    "trust-address": _I,  # media goes where the SDP says (our default)
    "symmetric": _I,  # we latch and send back to the source
    "strict-source": _I,  # packets from other sources are dropped
    "original-sendrecv": _I,  # direction attributes are relayed as they are
    "detect-dtmf": _I,  # detection is always on
    "fatal": _I,  # delete of an unknown call becomes an error
    "all": _I,
    "load-limit": _I,
    "directional": _I,
    "sip-source-address": _X,
    "asymmetric": _X,
    "media-handover": _X,
    "port-latching": _X,
    "no-port-latching": _X,
    "record-call": _X,
    "loop-protect": _X,
    "reset": _X,
    "generate-mid": _X,
    "strip-extmap": _X,
    "no-rtcp-attribute": _X,
    "full-rtcp-attribute": _X,
    "pierce-nat": _X,
    "nat-wait": _X,
    "early-media": _X,
    "inject-dtmf": _X,
    "generate-rtcp": _X,
    "single-codec": _X,
    "reuse-codecs": _X,
    "no-codec-renegotiation": _X,
    "always-transcode": _X,
    "allow-transcoding": _X,
    "reject-ice": _X,
    "trickle-ice": _X,
    "unidirectional": _X,
    "debug": _X,
    "fragment": _X,
}

#: Entries of the ``replace`` list; both rewrites are done by the SDP rewriter.
REPLACE_SUPPORT: dict[str, Support] = {
    "origin": _I,
    "session-connection": _I,
}


def unsupported_options(body: Mapping[str, Any]) -> list[str]:
    """Name every option in ``body`` that dtmfguard accepts but does not act on.

    Names read like Kamailio's flag strings, in the order the client sent them:
    ``ICE=force``, ``record-call``, ``replace-zero-address``, ``rtcp-mux-demux``,
    ``codec``. Unknown keys and flags are included: an option is never an error.
    """
    names: list[str] = []
    for key, value in body.items():
        canon = _canonical(key)
        if canon == "flags":
            for flag in _strings(value):
                if FLAG_SUPPORT.get(_canonical(flag), _X) is _X:
                    names.append(flag)
        elif canon == "replace":
            for item in _strings(value):
                if REPLACE_SUPPORT.get(_canonical(item), _X) is _X:
                    names.append(f"replace-{item}")
        elif canon in VALUE_SUPPORT:
            by_value = VALUE_SUPPORT[canon]
            for item in _strings(value):
                if by_value.get(item.casefold(), _X) is _X:
                    names.append(f"{key}={item}")
        elif KEY_SUPPORT.get(canon, _X) is _X:
            if isinstance(value, (str, int)) and not isinstance(value, bool):
                names.append(f"{key}={value}")
            elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                names.extend(f"{key}-{item}" for item in value)
            else:
                names.append(key)
    return names


def _strings(value: Any) -> list[str]:
    """A list option's string entries (a lone string counts as a list of one)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def ignored_options_warning(names: list[str]) -> str | None:
    """The ``warning`` text naming ignored options, or ``None`` when there are none."""
    if not names:
        return None
    return "Ignored options: " + ", ".join(names)


# Kamailio's parse_flags() puts these prefixes into their own sub-lists.
_LIST_PREFIXES = ("replace", "SDES", "T.38", "T38", "rtcp-mux")
_TRANSPORTS = ("RTP/AVP", "RTP/AVPF", "RTP/SAVP", "RTP/SAVPF", "UDP/TLS/RTP/SAVP", "UDP/TLS/RTP/SAVPF")


def expand_rtpp_flags(body: Mapping[str, Any]) -> dict[str, Any]:
    """Merge a raw ``rtpp-flags`` string into structured keys, the way rtpengine does.

    Tokens are separated by spaces. ``replace-X``, ``SDES-X``, ``T.38-X`` and
    ``rtcp-mux-X`` (and each ``direction=X``) go to their lists; ``key=value`` becomes a key (``from-tag``,
    ``to-tag`` and ``call-id`` included); a transport name becomes
    ``transport-protocol``; any other bare word joins ``flags``. Keys already present
    in ``body`` win over the string.
    """
    result = dict(body)
    raw = body.get("rtpp-flags")
    if not isinstance(raw, str):
        return result
    flags = list(_strings(result.get("flags")))
    lists: dict[str, list[str]] = {}
    for token in raw.split():
        key, sep, value = token.partition("=")
        prefix = next((p for p in _LIST_PREFIXES if key.startswith(p + "-") or (sep and key == p)), None)
        if prefix is not None:
            item = value if sep and key == prefix else key[len(prefix) + 1 :] + (sep + value if sep else "")
            target = "T.38" if prefix == "T38" else prefix
            lists.setdefault(target, []).append(item)
        elif sep and key == "direction":
            lists.setdefault("direction", []).append(value)
        elif not sep and key in _TRANSPORTS:
            result.setdefault("transport-protocol", key)
        elif sep:
            result.setdefault(key, value)
        else:
            flags.append(key)
    for key, items in lists.items():
        result.setdefault(key, items)
    if flags:
        result["flags"] = flags
    return result


class ReplyCache:
    """Replies by (source, cookie), so a retransmitted request is answered, not re-run.

    Sans-I/O: the caller passes ``now_s`` (any monotonic clock in seconds). Entries live
    ``ttl_s`` (Kamailio retransmits within seconds; rtpengine keeps replies about 30 s);
    at most ``max_entries`` are kept and the oldest is evicted first.
    """

    def __init__(self, *, ttl_s: float = 60.0, max_entries: int = 4096) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        if max_entries <= 0:
            raise ValueError("max_entries must be positive")
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        # insertion order is expiry order: every entry lives the same ttl_s
        self._entries: OrderedDict[tuple[Hashable, bytes], tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, source: Hashable, cookie: bytes, now_s: float) -> bytes | None:
        """The reply datagram cached for this request, or ``None``."""
        self._expire(now_s)
        entry = self._entries.get((source, cookie))
        return None if entry is None else entry[1]

    def put(self, source: Hashable, cookie: bytes, reply: bytes, now_s: float) -> None:
        """Remember ``reply`` (the whole datagram) for ``ttl_s`` from ``now_s``."""
        key = (source, cookie)
        self._entries.pop(key, None)
        self._entries[key] = (now_s + self.ttl_s, reply)
        self._expire(now_s)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def _expire(self, now_s: float) -> None:
        entries = self._entries
        while entries:
            key, (expires_s, _) = next(iter(entries.items()))
            if expires_s > now_s:
                break
            del entries[key]
