"""SDP (RFC 8866, RFC 3605 a=rtcp): text in, model, rewritten text or errors out."""

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dtmfguard.errors import ProtocolError
from dtmfguard.protocol.sdp import (
    Connection,
    Media,
    MediaEndpoint,
    PayloadType,
    RtcpAttribute,
    RtpMap,
    SessionDescription,
    remote_endpoints,
    rewrite_for_proxy,
)


def crlf(*lines: str) -> str:
    return "\r\n".join(lines) + "\r\n"


# A carrier's INVITE offer: G.711 both laws, telephone-event, and a video stream.
CARRIER_OFFER = crlf(
    "v=0",
    "o=- 3917283741 3917283741 IN IP4 203.0.113.10",
    "s=SBC",
    "c=IN IP4 203.0.113.10",
    "t=0 0",
    "m=audio 31000 RTP/AVP 0 8 101",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=ptime:20",
    "a=maxptime:40",
    "a=sendrecv",
    "m=video 31002 RTP/AVP 96",
    "b=AS:512",
    "a=rtpmap:96 H264/90000",
    "a=fmtp:96 profile-level-id=42e01f;packetization-mode=1",
    "a=sendrecv",
)

# An agent softphone's answer over IPv6, with ICE and a=rtcp, and an LF-only body.
AGENT_ANSWER_LF = (
    "v=0\n"
    "o=agent 42 43 IN IP6 2001:db8::20\n"
    "s=-\n"
    "c=IN IP6 2001:db8::20\n"
    "t=0 0\n"
    "a=ice-lite\n"
    "m=audio 40000 RTP/AVP 8 101\n"
    "a=rtpmap:8 PCMA/8000\n"
    "a=rtpmap:101 telephone-event/8000\n"
    "a=fmtp:101 0-15\n"
    "a=rtcp:40005 IN IP6 2001:db8::21\n"
    "a=ice-ufrag:F7gI\n"
    "a=ice-pwd:x9cml/YzichV2+XlhiMu8g\n"
    "a=candidate:1 1 UDP 2130706431 2001:db8::20 40000 typ host\n"
    "a=recvonly\n"
    "m=video 0 RTP/AVP 96\n"
)


class TestParse:
    """RFC 8866 section 5: the lines, their order, and the accessors."""

    def test_round_trip_is_exact(self) -> None:
        assert str(SessionDescription.parse(CARRIER_OFFER)) == CARRIER_OFFER

    def test_lf_in_crlf_out(self) -> None:
        assert str(SessionDescription.parse(AGENT_ANSWER_LF)) == AGENT_ANSWER_LF.replace("\n", "\r\n")

    def test_bytes_input(self) -> None:
        assert str(SessionDescription.parse(CARRIER_OFFER.encode())) == CARRIER_OFFER

    def test_sections(self) -> None:
        description = SessionDescription.parse(CARRIER_OFFER)
        assert [str(line) for line in description.lines] == [
            "v=0",
            "o=- 3917283741 3917283741 IN IP4 203.0.113.10",
            "s=SBC",
            "c=IN IP4 203.0.113.10",
            "t=0 0",
        ]
        assert len(description.media) == 2
        assert description.media[1].lines[1].number == 15
        assert str(description.media[1].lines[1]) == "b=AS:512"

    def test_session_connection(self) -> None:
        assert SessionDescription.parse(CARRIER_OFFER).connection == Connection("IP4", "203.0.113.10")

    def test_media(self) -> None:
        audio, video = SessionDescription.parse(CARRIER_OFFER).media
        assert audio.media == Media("audio", 31000, 1, "RTP/AVP", ("0", "8", "101"))
        assert video.media == Media("video", 31002, 1, "RTP/AVP", ("96",))
        assert audio.connection is None

    def test_rtpmap_fmtp_ptime_direction(self) -> None:
        audio = SessionDescription.parse(CARRIER_OFFER).media[0]
        assert audio.rtpmaps == {
            0: RtpMap(0, "PCMU", 8000, 1),
            8: RtpMap(8, "PCMA", 8000, 1),
            101: RtpMap(101, "telephone-event", 8000, 1),
        }
        assert audio.fmtps == {"101": "0-16"}
        assert audio.ptime_ms == 20.0
        assert audio.direction == "sendrecv"
        assert audio.rtcp is None

    def test_rtcp_with_address(self) -> None:
        audio = SessionDescription.parse(AGENT_ANSWER_LF).media[0]
        assert audio.rtcp == RtcpAttribute(40005, Connection("IP6", "2001:db8::21"))

    def test_flag_attribute(self) -> None:
        audio = SessionDescription.parse(AGENT_ANSWER_LF).media[0]
        assert [line.attribute for line in audio.lines if line.kind == "a"][-1] == ("recvonly", None)

    def test_multicast_ttl_is_dropped(self) -> None:
        description = SessionDescription.parse(crlf("v=0", "c=IN IP4 224.2.1.1/127"))
        assert description.connection == Connection("IP4", "224.2.1.1")


def parse_error(text: str) -> str:
    with pytest.raises(ProtocolError) as excinfo:
        SessionDescription.parse(text)
    return str(excinfo.value)


class TestMalformed:
    """Malformed lines fail with the line number."""

    def test_not_a_type_value_line(self) -> None:
        assert parse_error(crlf("v=0", "s=x", "hello")) == "sdp: line 3: expected '<letter>=<value>', got 'hello'"

    def test_upper_case_type(self) -> None:
        assert parse_error(crlf("v=0", "S=x")) == "sdp: line 2: expected '<letter>=<value>', got 'S=x'"

    def test_version_first(self) -> None:
        assert parse_error(crlf("s=x", "v=0")) == "sdp: line 1: expected 'v=0' as the first line, got 's=x'"

    def test_empty(self) -> None:
        assert parse_error("\r\n") == "sdp: empty session description"

    def test_bad_utf8(self) -> None:
        with pytest.raises(ProtocolError, match=r"^sdp: not UTF-8 at byte 6$"):
            SessionDescription.parse(b"v=0\ns=\xff\n")

    def test_m_line_port(self) -> None:
        assert parse_error(crlf("v=0", "m=audio x RTP/AVP 0")) == (
            "sdp: line 2: malformed m= line 'audio x RTP/AVP 0' (port 'x' is not a number)"
        )

    def test_m_line_port_range(self) -> None:
        assert parse_error(crlf("v=0", "m=audio 70000 RTP/AVP 0")) == (
            "sdp: line 2: malformed m= line 'audio 70000 RTP/AVP 0' (port 70000 out of range)"
        )

    def test_m_line_too_short(self) -> None:
        assert parse_error(crlf("v=0", "m=audio 4000 RTP/AVP")) == (
            "sdp: line 2: malformed m= line 'audio 4000 RTP/AVP' (expected '<media> <port> <proto> <fmt> ...')"
        )

    def test_c_line_fields(self) -> None:
        assert parse_error(crlf("v=0", "c=IN IP4")) == (
            "sdp: line 2: malformed connection 'IN IP4' (expected 'IN <IP4|IP6> <address>')"
        )

    def test_c_line_address_type(self) -> None:
        assert parse_error(crlf("v=0", "c=IN IP5 1.2.3.4")) == (
            "sdp: line 2: unknown address type 'IP5' in 'IN IP5 1.2.3.4' (expected IP4 or IP6)"
        )

    def test_c_line_family_mismatch(self) -> None:
        assert parse_error(crlf("v=0", "c=IN IP4 2001:db8::1")) == "sdp: line 2: '2001:db8::1' is not an IP4 address"

    def test_c_line_bad_address(self) -> None:
        assert parse_error(crlf("v=0", "c=IN IP4 999.1.1.1")) == "sdp: line 2: '999.1.1.1' is not an IP4 address"

    def test_rtpmap(self) -> None:
        assert parse_error(crlf("v=0", "m=audio 4000 RTP/AVP 101", "a=rtpmap:101 telephone-event")) == (
            "sdp: line 3: malformed a=rtpmap:101 telephone-event (expected '<pt> <encoding>/<clock rate>[/<channels>]')"
        )

    def test_rtpmap_payload_type(self) -> None:
        assert parse_error(crlf("v=0", "a=rtpmap:200 PCMU/8000")) == (
            "sdp: line 2: malformed a=rtpmap:200 PCMU/8000 (payload type '200' is not 0-127)"
        )

    def test_rtcp(self) -> None:
        assert parse_error(crlf("v=0", "m=audio 4000 RTP/AVP 0", "a=rtcp:abc")) == (
            "sdp: line 3: malformed a=rtcp:abc (port 'abc' is not a number)"
        )

    def test_ptime(self) -> None:
        assert parse_error(crlf("v=0", "m=audio 4000 RTP/AVP 0", "a=ptime:twenty")) == (
            "sdp: line 3: malformed a=ptime:twenty (not a number of milliseconds)"
        )

    def test_origin(self) -> None:
        assert parse_error(crlf("v=0", "o=- 1 1 IN IP4")) == (
            "sdp: line 2: malformed o= line '- 1 1 IN IP4' "
            "(expected '<username> <sess-id> <sess-version> IN <IP4|IP6> <address>')"
        )

    def test_unknown_lines_are_kept_not_judged(self) -> None:
        text = crlf("v=0", "z=whatever", "a=x-vendor:anything at all", "k=prompt")
        assert str(SessionDescription.parse(text)) == text


class TestRewriteForProxy:
    """What dtmfguard sends on: our address and ports, everything else kept."""

    def test_carrier_offer(self) -> None:
        assert rewrite_for_proxy(CARRIER_OFFER, address="192.0.2.1", ports=[20000, 20002]) == crlf(
            "v=0",
            "o=- 3917283741 3917283741 IN IP4 203.0.113.10",
            "s=SBC",
            "c=IN IP4 192.0.2.1",
            "t=0 0",
            "m=audio 20000 RTP/AVP 0 8 101",
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-16",
            "a=ptime:20",
            "a=maxptime:40",
            "a=sendrecv",
            "a=rtcp:20001",
            "m=video 20002 RTP/AVP 96",
            "b=AS:512",
            "a=rtpmap:96 H264/90000",
            "a=fmtp:96 profile-level-id=42e01f;packetization-mode=1",
            "a=sendrecv",
            "a=rtcp:20003",
        )

    def test_agent_answer_ipv6_ice_and_rejected_video(self) -> None:
        assert rewrite_for_proxy(AGENT_ANSWER_LF, address="2001:db8::1", ports=[20004, 20006]) == crlf(
            "v=0",
            "o=agent 42 43 IN IP6 2001:db8::20",
            "s=-",
            "c=IN IP6 2001:db8::1",
            "t=0 0",
            "m=audio 20004 RTP/AVP 8 101",
            "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-15",
            "a=rtcp:20005",
            "a=recvonly",
            "m=video 0 RTP/AVP 96",
        )

    def test_ipv4_proxy_for_ipv6_peer(self) -> None:
        out = rewrite_for_proxy(AGENT_ANSWER_LF, address="192.0.2.1", ports=[20004, 0])
        assert "c=IN IP4 192.0.2.1\r\n" in out

    def test_media_level_connections(self) -> None:
        offer = crlf(
            "v=0",
            "o=- 1 1 IN IP4 10.0.0.1",
            "s=-",
            "t=0 0",
            "m=audio 5004 RTP/AVP 0",
            "i=voice",
            "a=rtcp:6000",
            "m=audio 5006 RTP/AVP 0",
            "c=IN IP4 10.0.0.2",
        )
        assert rewrite_for_proxy(offer, address="192.0.2.1", ports=[30000, 30002]) == crlf(
            "v=0",
            "o=- 1 1 IN IP4 10.0.0.1",
            "s=-",
            "t=0 0",
            "m=audio 30000 RTP/AVP 0",
            "i=voice",
            "c=IN IP4 192.0.2.1",
            "a=rtcp:30001",
            "m=audio 30002 RTP/AVP 0",
            "c=IN IP4 192.0.2.1",
            "a=rtcp:30003",
        )

    def test_caller_rejects_a_section(self) -> None:
        out = rewrite_for_proxy(CARRIER_OFFER, address="192.0.2.1", ports=[20000, 0])
        assert "m=video 0 RTP/AVP 96\r\nb=AS:512\r\n" in out
        assert "a=rtcp:1\r\n" not in out
        assert out.count("a=rtcp:") == 1

    def test_replace_origin(self) -> None:
        out = rewrite_for_proxy(CARRIER_OFFER, address="192.0.2.1", ports=[1, 3], origin_address="192.0.2.1")
        assert "o=- 3917283741 3917283741 IN IP4 192.0.2.1\r\n" in out

    def test_keep_ice(self) -> None:
        out = rewrite_for_proxy(AGENT_ANSWER_LF, address="192.0.2.1", ports=[2, 0], strip_ice=False)
        assert "a=ice-lite\r\n" in out
        assert "a=ice-ufrag:F7gI\r\n" in out

    def test_port_count_mismatch(self) -> None:
        with pytest.raises(ValueError, match=r"^1 ports given for 2 media sections$"):
            rewrite_for_proxy(CARRIER_OFFER, address="192.0.2.1", ports=[20000])

    def test_bad_address(self) -> None:
        with pytest.raises(ValueError, match=r"^'proxy\.example' is not an IP address$"):
            rewrite_for_proxy(CARRIER_OFFER, address="proxy.example", ports=[1, 3])

    def test_malformed_input(self) -> None:
        with pytest.raises(ProtocolError, match=r"^sdp: line 2: "):
            rewrite_for_proxy("v=0\r\nc=IN\r\n", address="192.0.2.1", ports=[])


class TestRemoteEndpoints:
    """Where a peer wants its media, per m= section."""

    def test_carrier_offer(self) -> None:
        audio, video = remote_endpoints(CARRIER_OFFER)
        assert audio == MediaEndpoint(
            index=0,
            media="audio",
            proto="RTP/AVP",
            addr_type="IP4",
            address="203.0.113.10",
            port=31000,
            rtcp_address="203.0.113.10",
            rtcp_port=31001,
            payload_types=(
                PayloadType(0, "PCMU", 8000, 1),
                PayloadType(8, "PCMA", 8000, 1),
                PayloadType(101, "telephone-event", 8000, 1, "0-16"),
            ),
            telephone_event=PayloadType(101, "telephone-event", 8000, 1, "0-16"),
            ptime_ms=20.0,
            direction="sendrecv",
        )
        assert video.media == "video"
        assert video.payload_types == (
            PayloadType(96, "H264", 90000, 1, "profile-level-id=42e01f;packetization-mode=1"),
        )
        assert video.telephone_event is None

    def test_ipv6_rtcp_address_and_direction(self) -> None:
        audio, video = remote_endpoints(AGENT_ANSWER_LF)
        assert (audio.addr_type, audio.address, audio.port) == ("IP6", "2001:db8::20", 40000)
        assert (audio.rtcp_address, audio.rtcp_port) == ("2001:db8::21", 40005)
        assert audio.direction == "recvonly"
        assert audio.ptime_ms is None
        assert video.port == 0

    def test_static_payload_types_without_rtpmap(self) -> None:
        offer = crlf("v=0", "c=IN IP4 10.0.0.1", "m=audio 4000 RTP/AVP 0 8 18 13 96")
        (audio,) = remote_endpoints(offer)
        assert audio.payload_types == (
            PayloadType(0, "PCMU", 8000, 1),
            PayloadType(8, "PCMA", 8000, 1),
            PayloadType(18, "G729", 8000, 1),
            PayloadType(13, "CN", 8000, 1),
            PayloadType(96, "", 0, 1),
        )
        assert audio.telephone_event is None

    def test_media_connection_wins(self) -> None:
        offer = crlf("v=0", "c=IN IP4 10.0.0.1", "m=audio 4000 RTP/AVP 0", "c=IN IP4 10.0.0.9")
        assert remote_endpoints(offer)[0].address == "10.0.0.9"

    def test_session_direction_is_inherited(self) -> None:
        offer = crlf("v=0", "c=IN IP4 10.0.0.1", "a=sendonly", "m=audio 4000 RTP/AVP 0")
        assert remote_endpoints(offer)[0].direction == "sendonly"

    def test_telephone_event_matches_codec_rate(self) -> None:
        offer = crlf(
            "v=0",
            "c=IN IP4 10.0.0.1",
            "m=audio 4000 RTP/AVP 9 0 100 101",
            "a=rtpmap:100 telephone-event/16000",
            "a=rtpmap:101 telephone-event/8000",
        )
        telephone_event = remote_endpoints(offer)[0].telephone_event
        assert telephone_event == PayloadType(101, "telephone-event", 8000, 1)

    def test_non_rtp_section(self) -> None:
        offer = crlf("v=0", "c=IN IP4 10.0.0.1", "m=image 4000 udptl t38")
        assert remote_endpoints(offer)[0].payload_types == ()

    def test_no_connection_anywhere(self) -> None:
        offer = crlf("v=0", "s=-", "m=audio 4000 RTP/AVP 0")
        with pytest.raises(ProtocolError) as excinfo:
            remote_endpoints(offer)
        assert str(excinfo.value) == (
            "sdp: line 3: media section 1 has no c= line and there is no session-level c= line"
        )

    def test_bad_format_in_rtp_section(self) -> None:
        offer = crlf("v=0", "c=IN IP4 10.0.0.1", "m=audio 4000 RTP/AVP 0 x")
        with pytest.raises(ProtocolError) as excinfo:
            remote_endpoints(offer)
        assert (
            str(excinfo.value)
            == "sdp: line 3: malformed m= line 'audio 4000 RTP/AVP 0 x' (payload type 'x' is not 0-127)"
        )


class TestHostileInput:
    """Malformed bodies fail with ProtocolError and nothing else."""

    @given(
        st.lists(
            st.sampled_from(
                [
                    "v=0",
                    "c=IN IP4 10.0.0.1",
                    "m=audio 4000 RTP/AVP 0 101",
                    "a=rtcp:9",
                    "a=rtpmap:101 telephone-event/8000",
                    "a=ptime:20",
                    "c=IN IP6 ::1",
                    "m=video 0 RTP/AVP 96",
                    "a=candidate:1",
                    "o=- 1 1 IN IP4 1.1.1.1",
                ]
            )
            | st.text(max_size=12),
            max_size=12,
        )
    )
    def test_arbitrary_lines(self, lines: list[str]) -> None:
        text = "\r\n".join(lines)
        with contextlib.suppress(ProtocolError):
            description = SessionDescription.parse(text)
            remote_endpoints(description)
            rewrite_for_proxy(text, address="192.0.2.1", ports=[2000] * len(description.media))
