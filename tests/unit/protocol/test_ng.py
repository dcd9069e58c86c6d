"""rtpengine NG protocol (docs/ng_control_protocol.md): datagrams in, requests and replies out."""

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dtmfguard.errors import ProtocolError
from dtmfguard.protocol.ng import (
    Command,
    NgRequest,
    ReplyCache,
    error_reply,
    expand_rtpp_flags,
    ignored_options_warning,
    list_limit,
    missing_key_reason,
    ok_reply,
    parse_command,
    parse_request,
    pong_reply,
    serialize_reply,
    unsupported_options,
)


def error_of(datagram: bytes) -> str:
    with pytest.raises(ProtocolError) as excinfo:
        parse_request(datagram)
    return str(excinfo.value)


# What Kamailio's rtpengine_offer("trust-address replace-origin replace-session-connection
# ICE=remove RTP/AVP") puts on the wire for an INVITE (keys in the order it adds them).
KAMAILIO_OFFER = (
    b"1_2915376102_1104917613 d"
    b"8:supportsl10:load limite"
    b"3:sdp29:v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n"
    b"3:ICE6:remove"
    b"5:flagsl13:trust-addresse"
    b"7:replacel6:origin18:session-connectione"
    b"18:transport-protocol7:RTP/AVP"
    b"13:received-froml3:IP49:10.0.0.10e"
    b"7:call-id12:a84b4c76e667"
    b"10:via-branch14:z9hG4bK776asdh"
    b"8:from-tag10:1928301774"
    b"7:command5:offer"
    b"16:sip-message-type11:sip_request"
    b"e"
)


class TestFraming:
    """Section "The ng Control Protocol": cookie, one space, a dictionary."""

    def test_ping(self) -> None:
        assert parse_request(b"5323_1 d7:command4:pinge") == NgRequest(
            cookie=b"5323_1", body={"command": "ping"}, json=False
        )

    def test_kamailio_offer(self) -> None:
        request = parse_request(KAMAILIO_OFFER)
        assert request.cookie == b"1_2915376102_1104917613"
        assert request.command is Command.OFFER
        assert request.body["sdp"] == "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n"
        assert request.body["received-from"] == ["IP4", "10.0.0.10"]
        assert request.body["flags"] == ["trust-address"]
        assert request.json is False

    def test_json_payload(self) -> None:
        request = parse_request(b'abc {"command":"ping","n":1,"t":true}')
        assert request == NgRequest(cookie=b"abc", body={"command": "ping", "n": 1, "t": 1}, json=True)

    def test_no_space(self) -> None:
        assert error_of(b"5323_1") == "ng: no space between cookie and payload"

    def test_no_space_in_a_long_datagram(self) -> None:
        assert error_of(b"x" * 200) == "ng: no space after the cookie within the first 129 bytes"

    def test_empty_cookie(self) -> None:
        assert error_of(b" d7:command4:pinge") == "ng: empty cookie (datagram starts with a space)"

    def test_non_printable_cookie(self) -> None:
        assert error_of(b"ab\x00c d7:command4:pinge") == "ng: cookie has non-printable byte 0x00 at offset 2"

    def test_empty_payload(self) -> None:
        assert error_of(b"5323_1 ") == "ng: empty payload after the cookie"

    def test_oversized(self) -> None:
        assert error_of(b"c " + b"x" * 65_534) == "ng: datagram of 65536 bytes exceeds the limit of 65535 bytes"

    def test_bencode_error_is_wrapped(self) -> None:
        assert error_of(b"c d7:command4:ping") == (
            "ng: payload after the cookie: bencode: unexpected end of input at offset 16 while reading a dictionary"
        )

    def test_payload_not_a_dictionary(self) -> None:
        assert error_of(b"c l4:pinge") == "ng: payload is a bencode list, expected a dictionary"
        assert error_of(b"c i1e") == "ng: payload is a bencode integer, expected a dictionary"
        assert error_of(b"c 4:ping") == "ng: payload is a bencode string, expected a dictionary"

    def test_invalid_json(self) -> None:
        assert error_of(b'c {"command":}') == ("ng: invalid JSON payload: Expecting value: line 1 column 12 (char 11)")

    def test_json_null(self) -> None:
        assert error_of(b'c {"command":"ping","x":[1,null]}') == (
            "ng: JSON value at x[1] is null, which the NG protocol cannot carry"
        )

    def test_json_float(self) -> None:
        assert error_of(b'c {"a":{"b":1.5}}') == "ng: JSON value at a.b is float, which the NG protocol cannot carry"

    def test_json_too_deep(self) -> None:
        assert error_of(b'c {"a":' + b"[" * 40 + b"]" * 40 + b"}") == (
            "ng: JSON payload nests deeper than 32 levels at a[0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0]"
            "[0][0][0][0][0][0][0][0][0][0][0][0][0][0][0]"
        )


class TestReplies:
    """Every reply has "result": "ok", "pong" or "error" (with "error-reason")."""

    def test_pong(self) -> None:
        assert serialize_reply(b"5323_1", pong_reply(), json=False) == b"5323_1 d6:result4:ponge"

    def test_ok_with_sdp(self) -> None:
        assert serialize_reply(b"c", ok_reply(sdp="v=0\r\n"), json=False) == b"c d6:result2:ok3:sdp5:v=0\r\ne"

    def test_ok_with_spaced_key(self) -> None:
        assert ok_reply(**{"last signal": 5}) == {"result": "ok", "last signal": 5}

    def test_error(self) -> None:
        assert serialize_reply(b"c", error_reply("No call-id in message"), json=False) == (
            b"c d12:error-reason21:No call-id in message6:result5:errore"
        )

    def test_json_reply(self) -> None:
        body = ok_reply(sdp=b"v=0", totals={"RTP": {"packets": 3}})
        assert serialize_reply(b"c", body, json=True) == (
            b'c {"result":"ok","sdp":"v=0","totals":{"RTP":{"packets":3}}}'
        )


class TestCommands:
    """Command names, with the spellings clients use."""

    @pytest.mark.parametrize(
        ("name", "command"),
        [
            ("ping", Command.PING),
            ("offer", Command.OFFER),
            ("answer", Command.ANSWER),
            ("delete", Command.DELETE),
            ("query", Command.QUERY),
            ("list", Command.LIST),
            ("block DTMF", Command.BLOCK_DTMF),
            ("unblock DTMF", Command.UNBLOCK_DTMF),
            ("block dtmf", Command.BLOCK_DTMF),
            ("block-DTMF", Command.BLOCK_DTMF),
            ("unblock_dtmf", Command.UNBLOCK_DTMF),
            ("OFFER", Command.OFFER),
        ],
    )
    def test_names(self, name: str, command: Command) -> None:
        assert parse_command({"command": name}) is command

    def test_wire_spelling(self) -> None:
        assert str(Command.BLOCK_DTMF) == "block DTMF"

    def test_missing(self) -> None:
        with pytest.raises(ProtocolError, match=r"^No command in message$"):
            parse_command({})

    def test_unknown(self) -> None:
        with pytest.raises(ProtocolError, match=r"^Unrecognized command 'start recording'$"):
            parse_command({"command": "start recording"})

    def test_not_a_string(self) -> None:
        with pytest.raises(ProtocolError, match=r"^Invalid type for 'command' \(expected a string\)$"):
            parse_command({"command": 3})


OFFER = {"command": "offer", "call-id": "c1", "from-tag": "f1", "sdp": "v=0\r\n"}


class TestRequiredKeys:
    """Sections "offer", "answer", "delete", "query", "list", "block DTMF"."""

    def test_offer_complete(self) -> None:
        assert missing_key_reason(Command.OFFER, OFFER) is None

    @pytest.mark.parametrize(
        ("key", "reason"),
        [
            ("sdp", "No SDP body in message"),
            ("call-id", "No call-id in message"),
            ("from-tag", "No from-tag in message"),
        ],
    )
    def test_offer_missing(self, key: str, reason: str) -> None:
        body = {k: v for k, v in OFFER.items() if k != key}
        assert missing_key_reason(Command.OFFER, body) == reason

    def test_empty_counts_as_missing(self) -> None:
        assert missing_key_reason(Command.OFFER, {**OFFER, "call-id": ""}) == "No call-id in message"

    def test_answer_needs_to_tag(self) -> None:
        assert missing_key_reason(Command.ANSWER, OFFER) == "No to-tag in message"
        assert missing_key_reason(Command.ANSWER, {**OFFER, "to-tag": "t1"}) is None

    def test_wrong_type(self) -> None:
        assert missing_key_reason(Command.OFFER, {**OFFER, "sdp": b"\xff"}) == (
            "Invalid type for 'sdp' (expected a string)"
        )

    def test_wrong_type_of_optional_key(self) -> None:
        assert missing_key_reason(Command.DELETE, {"call-id": "c", "to-tag": 5}) == (
            "Invalid type for 'to-tag' (expected a string)"
        )

    def test_delete_needs_only_call_id(self) -> None:
        assert missing_key_reason(Command.DELETE, {"call-id": "c"}) is None
        assert missing_key_reason(Command.DELETE, {}) == "No call-id in message"

    def test_query_and_block(self) -> None:
        for command in (Command.QUERY, Command.BLOCK_DTMF, Command.UNBLOCK_DTMF):
            assert missing_key_reason(command, {}) == "No call-id in message"
            assert missing_key_reason(command, {"call-id": "c"}) is None

    def test_ping_and_list(self) -> None:
        assert missing_key_reason(Command.PING, {}) is None
        assert missing_key_reason(Command.LIST, {}) is None

    def test_list_limit(self) -> None:
        assert list_limit({}) == 32
        assert list_limit({"limit": 5}) == 5
        assert list_limit({"limit": "7"}) == 7
        assert missing_key_reason(Command.LIST, {"limit": 0}) == "Invalid 'limit' (expected a positive integer)"
        assert missing_key_reason(Command.LIST, {"limit": "x"}) == "Invalid 'limit' (expected a positive integer)"


class TestOptions:
    """Flags and keys Kamailio and OpenSIPS send: implemented, or named in a warning."""

    def test_kamailio_offer_is_fully_implemented(self) -> None:
        assert unsupported_options(parse_request(KAMAILIO_OFFER).body) == []

    def test_ignored_flags_and_keys(self) -> None:
        body = {
            **OFFER,
            "flags": ["trust-address", "record-call", "loop-protect", "no-such-flag"],
            "replace": ["origin", "zero-address"],
            "ICE": "force",
            "transport-protocol": "RTP/SAVPF",
            "rtcp-mux": ["demux"],
            "direction": ["priv", "pub"],
            "TOS": 184,
            "codec": {"strip": ["PCMA"]},
            "DTLS": "passive",
            "SDES": ["off"],
            "record call": "yes",
            "x-custom": "1",
        }
        assert unsupported_options(body) == [
            "record-call",
            "loop-protect",
            "no-such-flag",
            "replace-zero-address",
            "ICE=force",
            "transport-protocol=RTP/SAVPF",
            "rtcp-mux-demux",
            "direction-priv",
            "direction-pub",
            "TOS=184",
            "codec",
            "DTLS=passive",
            "record call=yes",
            "x-custom=1",
        ]

    def test_spaced_spellings(self) -> None:
        # OpenSIPS and older clients write flags and keys with spaces.
        body = {"flags": ["trust address", "strict source"], "replace": ["session connection"], "received from": []}
        assert unsupported_options(body) == []

    def test_implemented_values(self) -> None:
        body = {"ICE": "remove", "transport protocol": "RTP/AVP", "DTLS": "off", "SDES": ["no"], "record-call": "no"}
        assert unsupported_options(body) == []

    def test_warning_text(self) -> None:
        assert ignored_options_warning(["ICE=force", "record-call"]) == "Ignored options: ICE=force, record-call"
        assert ignored_options_warning([]) is None


class TestRtppFlags:
    """Kamailio can leave flag parsing to the media proxy ("rtpp-flags")."""

    def test_expansion(self) -> None:
        body = {
            "command": "offer",
            "call-id": "c",
            "rtpp-flags": "trust-address replace-origin replace=session-connection ICE=remove RTP/AVP "
            "rtcp-mux-demux SDES-off direction=priv direction=pub call-id=ignored",
        }
        assert expand_rtpp_flags(body) == {
            "command": "offer",
            "call-id": "c",
            "rtpp-flags": body["rtpp-flags"],
            "ICE": "remove",
            "transport-protocol": "RTP/AVP",
            "flags": ["trust-address"],
            "replace": ["origin", "session-connection"],
            "rtcp-mux": ["demux"],
            "SDES": ["off"],
            "direction": ["priv", "pub"],
        }

    def test_parse_request_expands(self) -> None:
        request = parse_request(b"c d7:command5:offer10:rtpp-flags18:SIP-source-addresse")
        assert request.body["flags"] == ["SIP-source-address"]
        assert unsupported_options(request.body) == ["SIP-source-address"]


class TestReplyCache:
    """Retransmitted cookies are answered from the cache without acting twice."""

    def test_hit(self) -> None:
        cache = ReplyCache()
        cache.put(("10.0.0.1", 5060), b"c1", b"c1 d6:result4:ponge", now_s=100.0)
        assert cache.get(("10.0.0.1", 5060), b"c1", now_s=110.0) == b"c1 d6:result4:ponge"

    def test_keyed_by_source(self) -> None:
        cache = ReplyCache()
        cache.put(("10.0.0.1", 5060), b"c1", b"reply", now_s=0.0)
        assert cache.get(("10.0.0.2", 5060), b"c1", now_s=0.0) is None

    def test_expiry(self) -> None:
        cache = ReplyCache(ttl_s=60.0)
        cache.put("a", b"c1", b"reply", now_s=0.0)
        assert cache.get("a", b"c1", now_s=59.9) == b"reply"
        assert cache.get("a", b"c1", now_s=60.0) is None
        assert len(cache) == 0

    def test_bounded_oldest_evicted(self) -> None:
        cache = ReplyCache(max_entries=2)
        cache.put("a", b"1", b"r1", now_s=0.0)
        cache.put("a", b"2", b"r2", now_s=1.0)
        cache.put("a", b"3", b"r3", now_s=2.0)
        assert len(cache) == 2
        assert cache.get("a", b"1", now_s=2.0) is None
        assert cache.get("a", b"2", now_s=2.0) == b"r2"
        assert cache.get("a", b"3", now_s=2.0) == b"r3"

    def test_put_again_refreshes(self) -> None:
        cache = ReplyCache(ttl_s=10.0)
        cache.put("a", b"1", b"old", now_s=0.0)
        cache.put("a", b"2", b"r2", now_s=5.0)
        cache.put("a", b"1", b"new", now_s=8.0)
        assert cache.get("a", b"2", now_s=15.0) is None
        assert cache.get("a", b"1", now_s=15.0) == b"new"

    def test_invalid_settings(self) -> None:
        with pytest.raises(ValueError, match="ttl_s"):
            ReplyCache(ttl_s=0)
        with pytest.raises(ValueError, match="max_entries"):
            ReplyCache(max_entries=0)


class TestHostileInput:
    """Whatever arrives on the control port, the only failure is a ProtocolError."""

    @given(st.binary(max_size=120))
    def test_arbitrary_datagrams(self, data: bytes) -> None:
        with contextlib.suppress(ProtocolError):
            parse_request(data)

    @given(st.text(max_size=80))
    def test_arbitrary_json_and_flags(self, text: str) -> None:
        with contextlib.suppress(ProtocolError):
            request = parse_request(b"c {" + text.encode())
            unsupported_options(request.body)
        unsupported_options(expand_rtpp_flags({"rtpp-flags": text}))
