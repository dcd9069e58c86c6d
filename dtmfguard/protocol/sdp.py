"""SDP bodies (RFC 8866, formerly RFC 4566): a line-preserving model and the proxy rewrite.

The model keeps every line of a session description, known or not, in its order: the
session-level lines, then one :class:`MediaSection` per ``m=`` line. Accessors parse
the fields dtmfguard needs on demand (``c=`` per RFC 8866 section 5.7, ``m=`` per 5.14,
``a=rtpmap``/``a=fmtp``/``a=ptime`` and direction attributes per section 6, ``a=rtcp``
per RFC 3605); those lines are also validated at parse time, so a malformed body fails
up front with a :class:`ProtocolError` naming the line number. :func:`rewrite_for_proxy`
produces what a media proxy sends on (our address in ``c=``, our ports in ``m=`` and
``a=rtcp``, everything else kept, ICE candidates removed because they would route media
around us), and :func:`remote_endpoints` extracts where a peer wants its media sent.
Input may use LF or CRLF line endings; output always uses CRLF.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from dtmfguard.errors import ProtocolError

__all__ = [
    "DIRECTIONS",
    "Connection",
    "Media",
    "MediaEndpoint",
    "MediaSection",
    "PayloadType",
    "RtcpAttribute",
    "RtpMap",
    "SdpLine",
    "SessionDescription",
    "remote_endpoints",
    "rewrite_for_proxy",
]

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")

# RFC 3551 table 4: static audio payload types and their clock rates.
_STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1),
    7: ("LPC", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    12: ("QCELP", 8000, 1),
    13: ("CN", 8000, 1),
    14: ("MPA", 90000, 1),
    15: ("G728", 8000, 1),
    16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1),
    18: ("G729", 8000, 1),
}

# ICE (RFC 8839) attributes: they advertise routes to the peer that bypass the proxy.
_ICE_ATTRIBUTES = frozenset(
    {
        "candidate",
        "remote-candidates",
        "ice-ufrag",
        "ice-pwd",
        "ice-options",
        "ice-lite",
        "ice-mismatch",
        "ice-pacing",
        "end-of-candidates",
    }
)


@dataclass(slots=True)
class SdpLine:
    """One ``<type>=<value>`` line; ``number`` is its 1-based line in the input (0: added)."""

    kind: str
    value: str
    number: int = 0

    def __str__(self) -> str:
        return f"{self.kind}={self.value}"

    @property
    def attribute(self) -> tuple[str, str | None]:
        """For ``a=`` lines: ``(name, value)``; ``value`` is ``None`` for flag attributes."""
        name, sep, value = self.value.partition(":")
        return name, (value if sep else None)


@dataclass(frozen=True, slots=True)
class Connection:
    """``c=IN <addr_type> <address>`` (a multicast ``/ttl`` suffix is dropped)."""

    addr_type: str
    address: str


@dataclass(frozen=True, slots=True)
class Media:
    """``m=<media> <port>[/<count>] <proto> <fmt> ...``."""

    media: str
    port: int
    port_count: int
    proto: str
    formats: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RtpMap:
    """``a=rtpmap:<pt> <encoding>/<clock rate>[/<channels>]``."""

    payload_type: int
    encoding: str
    clock_rate_hz: int
    channels: int


@dataclass(frozen=True, slots=True)
class RtcpAttribute:
    """``a=rtcp:<port> [IN <addr_type> <address>]`` (RFC 3605)."""

    port: int
    connection: Connection | None


@dataclass(frozen=True, slots=True)
class PayloadType:
    """One payload type of an ``m=`` line, resolved through ``a=rtpmap`` or RFC 3551."""

    payload_type: int
    encoding: str
    clock_rate_hz: int
    channels: int
    fmtp: str | None = None


@dataclass(frozen=True, slots=True)
class MediaEndpoint:
    """Where one media section wants its media sent, and what it carries."""

    index: int
    media: str
    proto: str
    addr_type: str
    address: str
    port: int
    rtcp_address: str
    rtcp_port: int
    payload_types: tuple[PayloadType, ...]
    telephone_event: PayloadType | None
    ptime_ms: float | None
    direction: str


def _error(line: SdpLine, message: str) -> ProtocolError:
    return ProtocolError(f"sdp: line {line.number}: {message}")


def _parse_connection(line: SdpLine, text: str) -> Connection:
    parts = text.split()
    if len(parts) != 3 or parts[0] != "IN":
        raise _error(line, f"malformed connection {text!r} (expected 'IN <IP4|IP6> <address>')")
    addr_type, address = parts[1], parts[2].split("/", 1)[0]
    if addr_type not in ("IP4", "IP6"):
        raise _error(line, f"unknown address type {addr_type!r} in {text!r} (expected IP4 or IP6)")
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        raise _error(line, f"{address!r} is not an {addr_type} address") from None
    if (parsed.version == 6) != (addr_type == "IP6"):
        raise _error(line, f"{address!r} is not an {addr_type} address")
    return Connection(addr_type, address)


def _parse_port(line: SdpLine, text: str, what: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise _error(line, f"malformed {what} (port {text!r} is not a number)")
    port = int(text)
    if port > 65535:
        raise _error(line, f"malformed {what} (port {port} out of range)")
    return port


def _parse_media(line: SdpLine) -> Media:
    parts = line.value.split()
    if len(parts) < 4:
        raise _error(line, f"malformed m= line {line.value!r} (expected '<media> <port> <proto> <fmt> ...')")
    port_text, _, count_text = parts[1].partition("/")
    port = _parse_port(line, port_text, f"m= line {line.value!r}")
    count = 1
    if count_text:
        if not count_text.isascii() or not count_text.isdigit() or int(count_text) == 0:
            raise _error(line, f"malformed m= line {line.value!r} (port count {count_text!r} is not a positive number)")
        count = int(count_text)
    return Media(parts[0], port, count, parts[2], tuple(parts[3:]))


def _parse_payload_type(line: SdpLine, text: str, what: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) > 127:
        raise _error(line, f"malformed {what} (payload type {text!r} is not 0-127)")
    return int(text)


def _parse_rtpmap(line: SdpLine, value: str) -> RtpMap:
    what = f"a=rtpmap:{value}"
    pt_text, _, rest = value.partition(" ")
    pt = _parse_payload_type(line, pt_text, what)
    fields = rest.strip().split("/")
    if len(fields) not in (2, 3) or not fields[0]:
        raise _error(line, f"malformed {what} (expected '<pt> <encoding>/<clock rate>[/<channels>]')")
    if not fields[1].isascii() or not fields[1].isdigit() or int(fields[1]) == 0:
        raise _error(line, f"malformed {what} (clock rate {fields[1]!r} is not a positive number)")
    channels = 1
    if len(fields) == 3:
        if not fields[2].isascii() or not fields[2].isdigit() or int(fields[2]) == 0:
            raise _error(line, f"malformed {what} (channels {fields[2]!r} is not a positive number)")
        channels = int(fields[2])
    return RtpMap(pt, fields[0], int(fields[1]), channels)


def _parse_fmtp(line: SdpLine, value: str) -> tuple[str, str]:
    fmt, _, params = value.partition(" ")
    if not fmt:
        raise _error(line, f"malformed a=fmtp:{value} (expected '<format> <parameters>')")
    return fmt, params.strip()


def _parse_rtcp(line: SdpLine, value: str) -> RtcpAttribute:
    port_text, _, rest = value.strip().partition(" ")
    port = _parse_port(line, port_text, f"a=rtcp:{value}")
    connection = _parse_connection(line, rest) if rest.strip() else None
    return RtcpAttribute(port, connection)


def _parse_ptime(line: SdpLine, value: str) -> float:
    try:
        ptime_ms = float(value)
    except ValueError:
        raise _error(line, f"malformed a=ptime:{value} (not a number of milliseconds)") from None
    if not 0 < ptime_ms < 10_000:
        raise _error(line, f"malformed a=ptime:{value} (not a positive number of milliseconds)")
    return ptime_ms


def _validate(line: SdpLine) -> None:
    """Check the syntax of the lines dtmfguard reads, so errors carry a line number."""
    if line.kind == "c":
        _parse_connection(line, line.value)
    elif line.kind == "m":
        _parse_media(line)
    elif line.kind == "o":
        parts = line.value.split()
        if len(parts) != 6:
            raise _error(
                line,
                f"malformed o= line {line.value!r} "
                "(expected '<username> <sess-id> <sess-version> IN <IP4|IP6> <address>')",
            )
    elif line.kind == "a":
        name, value = line.attribute
        if value is None:
            return
        if name == "rtpmap":
            _parse_rtpmap(line, value)
        elif name == "fmtp":
            _parse_fmtp(line, value)
        elif name == "rtcp":
            _parse_rtcp(line, value)
        elif name == "ptime":
            _parse_ptime(line, value)


class _Attributes:
    """Accessors shared by the session level and media sections."""

    lines: list[SdpLine]

    def attributes(self, name: str) -> list[SdpLine]:
        """The ``a=<name>[:value]`` lines, in order."""
        return [line for line in self.lines if line.kind == "a" and line.attribute[0] == name]

    @property
    def connection(self) -> Connection | None:
        """The first ``c=`` line at this level, or ``None``."""
        for line in self.lines:
            if line.kind == "c":
                return _parse_connection(line, line.value)
        return None

    @property
    def direction(self) -> str | None:
        """``sendrecv``/``sendonly``/``recvonly``/``inactive`` at this level, or ``None``."""
        for line in self.lines:
            if line.kind == "a" and line.value in DIRECTIONS:
                return line.value
        return None


@dataclass(slots=True)
class MediaSection(_Attributes):
    """An ``m=`` line and the lines up to the next one; ``lines[0]`` is the ``m=`` line."""

    lines: list[SdpLine]

    @property
    def media(self) -> Media:
        return _parse_media(self.lines[0])

    @property
    def rtpmaps(self) -> dict[int, RtpMap]:
        """``a=rtpmap`` by payload type (the first one wins for a repeated payload type)."""
        result: dict[int, RtpMap] = {}
        for line in self.attributes("rtpmap"):
            rtpmap = _parse_rtpmap(line, line.attribute[1] or "")
            result.setdefault(rtpmap.payload_type, rtpmap)
        return result

    @property
    def fmtps(self) -> dict[str, str]:
        """``a=fmtp`` parameters by format (``"101"`` -> ``"0-16"``)."""
        result: dict[str, str] = {}
        for line in self.attributes("fmtp"):
            fmt, params = _parse_fmtp(line, line.attribute[1] or "")
            result.setdefault(fmt, params)
        return result

    @property
    def rtcp(self) -> RtcpAttribute | None:
        for line in self.attributes("rtcp"):
            return _parse_rtcp(line, line.attribute[1] or "")
        return None

    @property
    def ptime_ms(self) -> float | None:
        for line in self.attributes("ptime"):
            return _parse_ptime(line, line.attribute[1] or "")
        return None

    def payload_types(self) -> tuple[PayloadType, ...]:
        """The ``m=`` formats resolved to codecs; empty for non-RTP transports.

        A dynamic payload type without ``a=rtpmap`` is kept with an empty encoding and a
        zero clock rate, so callers can still relay it untouched.
        """
        media = self.media
        if "RTP" not in media.proto.upper():
            return ()
        rtpmaps = self.rtpmaps
        fmtps = self.fmtps
        result = []
        for fmt in media.formats:
            pt = _parse_payload_type(self.lines[0], fmt, f"m= line {self.lines[0].value!r}")
            mapped = rtpmaps.get(pt)
            if mapped is not None:
                encoding, rate, channels = mapped.encoding, mapped.clock_rate_hz, mapped.channels
            else:
                encoding, rate, channels = _STATIC_PAYLOAD_TYPES.get(pt, ("", 0, 1))
            result.append(PayloadType(pt, encoding, rate, channels, fmtps.get(fmt)))
        return tuple(result)


@dataclass(slots=True)
class SessionDescription(_Attributes):
    """A whole SDP body: session-level ``lines`` then ``media`` sections."""

    lines: list[SdpLine]
    media: list[MediaSection] = field(default_factory=list)

    @classmethod
    def parse(cls, sdp: str | bytes) -> SessionDescription:
        """Parse ``sdp`` (LF or CRLF); raises :class:`ProtocolError` naming the bad line."""
        if isinstance(sdp, bytes):
            try:
                text = sdp.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ProtocolError(f"sdp: not UTF-8 at byte {exc.start}") from None
        else:
            text = sdp
        session: list[SdpLine] = []
        sections: list[MediaSection] = []
        current = session
        seen_version = False
        for number, raw in enumerate(text.split("\n"), start=1):
            raw = raw.removesuffix("\r")
            if not raw.strip():
                continue  # blank lines carry nothing; a trailing one is common
            if len(raw) < 2 or raw[1] != "=" or not ("a" <= raw[0] <= "z"):
                shown = raw if len(raw) <= 60 else raw[:57] + "..."
                raise ProtocolError(f"sdp: line {number}: expected '<letter>=<value>', got {shown!r}")
            line = SdpLine(raw[0], raw[2:], number)
            if not seen_version:
                if str(line) != "v=0":
                    raise _error(line, f"expected 'v=0' as the first line, got {str(line)!r}")
                seen_version = True
            _validate(line)
            if line.kind == "m":
                current = [line]
                sections.append(MediaSection(current))
            else:
                current.append(line)
        if not seen_version:
            raise ProtocolError("sdp: empty session description")
        return cls(session, sections)

    def __str__(self) -> str:
        lines = [str(line) for line in self.lines]
        for section in self.media:
            lines.extend(str(line) for line in section.lines)
        return "\r\n".join(lines) + "\r\n"

    @property
    def origin(self) -> SdpLine | None:
        for line in self.lines:
            if line.kind == "o":
                return line
        return None


def _connection_value(address: str) -> str:
    try:
        version = ipaddress.ip_address(address).version
    except ValueError:
        raise ValueError(f"{address!r} is not an IP address") from None
    return f"IN {'IP6' if version == 6 else 'IP4'} {address}"


def rewrite_for_proxy(
    sdp: str | bytes,
    *,
    address: str,
    ports: list[int],
    origin_address: str | None = None,
    strip_ice: bool = True,
) -> str:
    """Return ``sdp`` as dtmfguard forwards it: media to ``address``, one port per ``m=``.

    - every ``c=`` line (session and media level) becomes ``IN IP4|IP6 address``; a
      media section without one gets one when there is no session-level ``c=``;
    - the ``i``-th ``m=`` line gets ``ports[i]`` and ``a=rtcp:ports[i]+1`` (an existing
      ``a=rtcp`` is replaced); a port of 0, given or already offered, rejects the
      section (port 0, no ``a=rtcp``);
    - codecs, ``telephone-event``, direction and unknown lines are kept in order;
    - ICE attributes are removed unless ``strip_ice`` is false;
    - ``o=`` is kept, or gets ``origin_address`` (NG ``replace: origin``) when given.

    Raises :class:`ProtocolError` for malformed SDP and :class:`ValueError` when
    ``ports`` does not match the number of ``m=`` lines or an address is not an IP.
    """
    description = SessionDescription.parse(sdp)
    if len(ports) != len(description.media):
        raise ValueError(f"{len(ports)} ports given for {len(description.media)} media sections")
    connection = _connection_value(address)
    session_has_connection = False
    session_lines: list[SdpLine] = []
    for line in description.lines:
        if line.kind == "c":
            line = SdpLine("c", connection, line.number)
            session_has_connection = True
        elif line.kind == "o" and origin_address is not None:
            parts = line.value.split()
            line = SdpLine("o", " ".join(parts[:3]) + " " + _connection_value(origin_address), line.number)
        elif strip_ice and line.kind == "a" and line.attribute[0] in _ICE_ATTRIBUTES:
            continue
        session_lines.append(line)
    description.lines = session_lines
    for section, port in zip(description.media, ports, strict=True):
        _rewrite_section(section, port, connection, session_has_connection, strip_ice)
    return str(description)


def _rewrite_section(
    section: MediaSection, port: int, connection: str, session_has_connection: bool, strip_ice: bool
) -> None:
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range")
    m_line = section.lines[0]
    media = _parse_media(m_line)
    if media.port == 0:
        port = 0  # a section the peer rejected stays rejected
    parts = m_line.value.split()
    parts[1] = str(port)
    lines = [SdpLine("m", " ".join(parts), m_line.number)]
    has_connection = False
    rtcp_at = -1
    for line in section.lines[1:]:
        if line.kind == "c":
            if has_connection:
                continue  # several c= lines are for layered multicast; one address now
            line = SdpLine("c", connection, line.number)
            has_connection = True
        elif line.kind == "a":
            name = line.attribute[0]
            if name == "rtcp":
                if rtcp_at < 0:
                    rtcp_at = len(lines)
                    lines.append(line)  # placeholder, set below
                continue
            if strip_ice and name in _ICE_ATTRIBUTES:
                continue
        lines.append(line)
    if not has_connection and not session_has_connection:
        # RFC 8866 5.7: "c=" goes after "m=" and an optional "i=".
        at = 2 if len(lines) > 1 and lines[1].kind == "i" else 1
        lines.insert(at, SdpLine("c", connection))
        if rtcp_at >= at:
            rtcp_at += 1
    if port == 0:
        if rtcp_at >= 0:
            del lines[rtcp_at]
    elif rtcp_at >= 0:
        lines[rtcp_at] = SdpLine("a", f"rtcp:{port + 1}", lines[rtcp_at].number)
    else:
        lines.append(SdpLine("a", f"rtcp:{port + 1}"))
    section.lines = lines


def remote_endpoints(sdp: str | bytes | SessionDescription) -> list[MediaEndpoint]:
    """Where each ``m=`` section of a peer's SDP wants media sent, in ``m=`` order.

    The media-level ``c=`` wins over the session-level one; the RTCP port is ``a=rtcp``
    or the RTP port + 1; the direction is media-level, else session-level, else
    ``sendrecv``. The telephone-event payload type is the one whose clock rate matches
    the first audio codec, else the first one offered. Raises :class:`ProtocolError`
    when a section has no connection address at any level.
    """
    description = sdp if isinstance(sdp, SessionDescription) else SessionDescription.parse(sdp)
    session_connection = description.connection
    session_direction = description.direction
    endpoints = []
    for index, section in enumerate(description.media):
        media = section.media
        connection = section.connection or session_connection
        if connection is None:
            raise ProtocolError(
                f"sdp: line {section.lines[0].number}: media section {index + 1} has no c= line "
                "and there is no session-level c= line"
            )
        rtcp = section.rtcp
        rtcp_connection = rtcp.connection if rtcp is not None and rtcp.connection is not None else connection
        payload_types = section.payload_types()
        endpoints.append(
            MediaEndpoint(
                index=index,
                media=media.media,
                proto=media.proto,
                addr_type=connection.addr_type,
                address=connection.address,
                port=media.port,
                rtcp_address=rtcp_connection.address,
                rtcp_port=rtcp.port if rtcp is not None else media.port + 1,
                payload_types=payload_types,
                telephone_event=_telephone_event(payload_types),
                ptime_ms=section.ptime_ms,
                direction=section.direction or session_direction or "sendrecv",
            )
        )
    return endpoints


def _telephone_event(payload_types: tuple[PayloadType, ...]) -> PayloadType | None:
    events = [pt for pt in payload_types if pt.encoding.casefold() == "telephone-event"]
    if not events:
        return None
    codecs = [pt for pt in payload_types if pt.encoding.casefold() not in ("telephone-event", "cn", "")]
    if codecs:
        for event in events:
            if event.clock_rate_hz == codecs[0].clock_rate_hz:
                return event
    return events[0]
