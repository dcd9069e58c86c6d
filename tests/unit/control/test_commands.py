"""The NG command table, driven with request bodies and a fake media backend (no sockets)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from dtmfguard.control.commands import (
    BIND_ATTEMPTS,
    CALL_NOT_FOUND,
    CAPTURE_NOT_AVAILABLE,
    CommandHandler,
    CommandSettings,
)
from dtmfguard.control.registry import Side
from dtmfguard.errors import CaptureError
from dtmfguard.protocol.sdp import MediaEndpoint, SessionDescription
from dtmfguard.transport.ports import PortPool

PROXY = "203.0.113.5"

CALLER_SDP = (
    "v=0\r\n"
    "o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n"
    "s=-\r\n"
    "c=IN IP4 192.0.2.10\r\n"
    "t=0 0\r\n"
    "m=audio 49170 RTP/AVP 0 8 101\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-16\r\n"
    "a=ptime:20\r\n"
    "a=ice-ufrag:F7gI\r\n"
    "a=candidate:1 1 UDP 2130706431 192.0.2.10 49170 typ host\r\n"
    "a=sendrecv\r\n"
)

AGENT_SDP = (
    "v=0\r\n"
    "o=bob 2808844564 2808844564 IN IP4 198.51.100.20\r\n"
    "s=-\r\n"
    "c=IN IP4 198.51.100.20\r\n"
    "t=0 0\r\n"
    "m=audio 3456 RTP/AVP 8 101\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\n"
    "a=sendrecv\r\n"
)


class FakeMedia:
    """Records what the control plane asks of a call's media."""

    def __init__(self, call_id: str, caller: Side) -> None:
        self.call_id = call_id
        self.caller = caller
        self.endpoints: dict[Side, MediaEndpoint] = {}
        self.masking_enabled = True
        self.last_packet_s = 0.0
        self.closed = False

    def set_endpoint(self, leg: Side, endpoint: Any) -> None:
        self.endpoints[leg] = endpoint

    def set_masking(self, enabled: bool) -> None:
        self.masking_enabled = enabled

    def idle_s(self, now_s: float) -> float:
        return now_s - self.last_packet_s

    def stats(self) -> dict[str, Any]:
        return {
            "offer": {"packets": 50, "bytes": 8600, "errors": 1, "dropped": 2, "rtcp": {"packets": 1, "bytes": 60}},
            "answer": {"packets": 49, "bytes": 8428, "errors": 0, "dropped": 0, "rtcp_packets": 2},
            "masked_tones": 16,
            "digits": 16,
        }

    def close(self) -> dict[str, Any]:
        self.closed = True
        # A careless summary: the string must not reach the log line.
        return {"masked_tones": 16, "digits": 16, "offer": {"packets": 50}, "last_digits": "4111111111111111"}


class FakeRelay:
    def __init__(self, media: FakeMedia, ports: dict[Side, tuple[int, int]]) -> None:
        self.media = media
        self.ports = ports
        self.closed = False

    async def close(self) -> None:
        self.closed = True


class FakeBackend:
    def __init__(self, pool: PortPool | None = None, *, bind_failures: int = 0) -> None:
        self.pool = pool if pool is not None else PortPool("127.0.0.1", 30000, 30099)
        self.media: list[FakeMedia] = []
        self.relays: list[FakeRelay] = []
        self.bind_failures = bind_failures
        self.bind_attempts: list[dict[Side, tuple[int, int]]] = []

    def allocate_pair(self) -> tuple[int, int]:
        return self.pool.allocate_pair()

    def release_pair(self, rtp_port: int) -> None:
        self.pool.release_pair(rtp_port)

    def new_media(self, call_id: str, caller: Side) -> FakeMedia:
        media = FakeMedia(call_id, caller)
        self.media.append(media)
        return media

    def endpoint(self, remote: MediaEndpoint) -> MediaEndpoint:
        return remote

    async def open_relay(self, media: Any, ports: dict[Side, tuple[int, int]]) -> FakeRelay:
        self.bind_attempts.append(dict(ports))
        if self.bind_failures:
            self.bind_failures -= 1
            raise OSError(98, "Address already in use")
        relay = FakeRelay(media, ports)
        self.relays.append(relay)
        return relay


class Harness:
    def __init__(self, backend: FakeBackend | None = None, **settings: Any) -> None:
        self.backend = backend if backend is not None else FakeBackend()
        self.handler = CommandHandler(
            self.backend, CommandSettings(address=PROXY, **settings), wall_clock=lambda: 1_700_000_000.25
        )
        self.now_s = 1000.0

    async def __call__(self, command: str, **body: Any) -> dict[str, Any]:
        request = {"command": command, **{key.replace("_", "-"): value for key, value in body.items()}}
        return await self.handler.handle(request, now_s=self.now_s, source=("127.0.0.1", 5060))

    async def offer(self, call_id: str = "call-1", from_tag: str = "alice", sdp: str = CALLER_SDP, **body: Any) -> Any:
        return await self("offer", call_id=call_id, from_tag=from_tag, sdp=sdp, **body)

    async def answer(
        self, call_id: str = "call-1", from_tag: str = "alice", to_tag: str = "bob", sdp: str = AGENT_SDP, **body: Any
    ) -> Any:
        return await self("answer", call_id=call_id, from_tag=from_tag, to_tag=to_tag, sdp=sdp, **body)

    def media(self, call_id: str = "call-1") -> FakeMedia:
        call = self.handler.registry.get(call_id)
        assert call is not None
        assert isinstance(call.media, FakeMedia)
        return call.media

    def ports(self, side: Side, call_id: str = "call-1") -> tuple[int, int]:
        call = self.handler.registry.get(call_id)
        assert call is not None
        ports = call.legs[side].ports
        assert ports is not None
        return ports


@pytest.fixture
def ng() -> Harness:
    return Harness()


def audio(sdp: str) -> tuple[str, str, list[str]]:
    """``(c= address, m= port, a= lines of the first section)`` of a reply's SDP."""
    description = SessionDescription.parse(sdp)
    section = description.media[0]
    connection = section.connection or description.connection
    assert connection is not None
    return connection.address, str(section.media.port), [line.value for line in section.lines if line.kind == "a"]


def keys_of(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from keys_of(item)
    elif isinstance(value, list):
        for item in value:
            yield from keys_of(item)


# --------------------------------------------------------------------------- ping, errors


class TestPing:
    async def test_pong(self, ng: Harness) -> None:
        assert await ng("ping") == {"result": "pong"}

    async def test_pong_ignores_other_keys(self, ng: Harness) -> None:
        assert await ng("ping", flags=["whatever"]) == {"result": "pong"}


class TestRequestErrors:
    async def test_unknown_command(self, ng: Harness) -> None:
        assert await ng("frobnicate") == {"result": "error", "error-reason": "Unrecognized command 'frobnicate'"}

    async def test_no_command(self, ng: Harness) -> None:
        reply = await ng.handler.handle({"call-id": "x"}, now_s=0.0)
        assert reply == {"result": "error", "error-reason": "No command in message"}

    @pytest.mark.parametrize(
        ("missing", "reason"),
        [
            ("sdp", "No SDP body in message"),
            ("call-id", "No call-id in message"),
            ("from-tag", "No from-tag in message"),
        ],
    )
    async def test_offer_missing_key(self, ng: Harness, missing: str, reason: str) -> None:
        body = {"call-id": "c", "from-tag": "alice", "sdp": CALLER_SDP}
        del body[missing]
        assert await ng("offer", **body) == {"result": "error", "error-reason": reason}

    async def test_answer_without_to_tag(self, ng: Harness) -> None:
        await ng.offer()
        reply = await ng("answer", call_id="call-1", from_tag="alice", sdp=AGENT_SDP)
        assert reply == {"result": "error", "error-reason": "No to-tag in message"}

    async def test_command_spelling_is_folded(self, ng: Harness) -> None:
        await ng.offer()
        assert (await ng("Block_DTMF", call_id="call-1"))["result"] == "ok"


# --------------------------------------------------------------------------- offer / answer


class TestOffer:
    async def test_offer_sdp_carries_the_answer_legs_ports(self, ng: Harness) -> None:
        reply = await ng.offer()
        assert reply["result"] == "ok"
        address, port, attributes = audio(reply["sdp"])
        assert address == PROXY
        rtp, rtcp = ng.ports("answer")
        assert port == str(rtp)
        assert f"rtcp:{rtcp}" in attributes

    async def test_offer_keeps_codecs_and_telephone_event_and_drops_ice(self, ng: Harness) -> None:
        reply = await ng.offer()
        _, _, attributes = audio(reply["sdp"])
        assert "rtpmap:101 telephone-event/8000" in attributes
        assert "fmtp:101 0-16" in attributes
        assert "m=audio" in reply["sdp"]
        assert " RTP/AVP 0 8 101\r\n" in reply["sdp"]
        assert "candidate" not in reply["sdp"]
        assert "ice-ufrag" not in reply["sdp"]
        assert "192.0.2.10" in reply["sdp"]  # o= is kept without replace-origin

    async def test_replace_origin(self, ng: Harness) -> None:
        reply = await ng.offer(replace=["origin", "session-connection"])
        assert f"o=alice 2890844526 2890844526 IN IP4 {PROXY}\r\n" in reply["sdp"]
        assert "192.0.2.10" not in reply["sdp"]
        assert "warning" not in reply

    async def test_offer_sets_the_offer_legs_endpoint(self, ng: Harness) -> None:
        await ng.offer()
        endpoint = ng.media().endpoints["offer"]
        assert (endpoint.address, endpoint.port, endpoint.rtcp_port) == ("192.0.2.10", 49170, 49171)
        assert endpoint.telephone_event is not None
        assert endpoint.telephone_event.payload_type == 101
        assert "answer" not in ng.media().endpoints

    async def test_offer_takes_one_pair_per_leg_and_binds_once(self, ng: Harness) -> None:
        await ng.offer()
        assert ng.backend.pool.in_use == 2
        assert len(ng.backend.relays) == 1
        relay = ng.backend.relays[0]
        assert relay.ports == {"offer": ng.ports("offer"), "answer": ng.ports("answer")}
        assert ng.ports("offer") != ng.ports("answer")

    async def test_caller_is_the_offer_side_by_default(self, ng: Harness) -> None:
        await ng.offer()
        assert ng.media().caller == "offer"

    async def test_caller_side_from_settings(self) -> None:
        ng = Harness(caller_side="answer")
        await ng.offer()
        assert ng.media().caller == "answer"

    async def test_late_offer_makes_the_answering_party_the_caller(self, ng: Harness) -> None:
        # INVITE without SDP: the offer travels in the callee's 200 OK, tags swapped.
        reply = await ng.offer(from_tag="bob", to_tag="alice", sdp=AGENT_SDP, sip_message_type="sip_reply")
        assert reply["result"] == "ok"
        assert ng.media().caller == "answer"
        call = ng.handler.registry.get("call-1")
        assert call is not None
        assert (call.legs["offer"].tag, call.legs["answer"].tag) == ("bob", "alice")

    async def test_late_offer_from_kamailio_without_a_message_type(self, ng: Harness) -> None:
        # Kamailio 5.6 sends no sip-message-type; the caller's tag comes as to-tag.
        await ng.offer(from_tag="bob", to_tag="alice", sdp=AGENT_SDP)
        assert ng.media().caller == "answer"

    async def test_offer_in_a_request_with_a_to_tag_keeps_the_caller(self, ng: Harness) -> None:
        await ng.offer(from_tag="alice", to_tag="bob", sip_message_type="sip_request")
        assert ng.media().caller == "offer"

    async def test_ignored_flags_are_named_in_a_warning(self, ng: Harness) -> None:
        reply = await ng.offer(flags=["trust-address", "record-call", "loop-protect"], ICE="force")
        assert reply["result"] == "ok"
        assert reply["warning"] == "Ignored options: record-call, loop-protect, ICE=force"

    async def test_implemented_flags_give_no_warning(self, ng: Harness) -> None:
        reply = await ng.offer(flags=["trust-address", "symmetric"], ICE="remove", transport_protocol="RTP/AVP")
        assert "warning" not in reply

    async def test_other_media_sections_are_rejected(self, ng: Harness) -> None:
        sdp = CALLER_SDP + "m=video 49172 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
        reply = await ng.offer(sdp=sdp)
        description = SessionDescription.parse(reply["sdp"])
        assert [section.media.port for section in description.media] == [ng.ports("answer")[0], 0]
        assert reply["warning"] == "1 media section(s) besides the first audio one rejected (port 0)"

    async def test_malformed_sdp(self, ng: Harness) -> None:
        reply = await ng.offer(sdp="v=0\r\nc=IN IP4 nowhere\r\n")
        assert reply["result"] == "error"
        assert reply["error-reason"].startswith("Failed to parse SDP: sdp: line 2:")
        assert len(ng.handler.registry) == 0
        assert ng.backend.pool.in_use == 0

    async def test_sdp_without_audio(self, ng: Harness) -> None:
        sdp = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=video 5000 RTP/AVP 96\r\n"
        reply = await ng.offer(sdp=sdp)
        assert reply == {"result": "error", "error-reason": "Failed to parse SDP: no audio media section in SDP"}

    async def test_srtp_is_refused(self, ng: Harness) -> None:
        reply = await ng.offer(sdp=CALLER_SDP.replace("RTP/AVP", "RTP/SAVP"))
        assert reply["result"] == "error"
        assert "RTP/SAVP is not supported" in reply["error-reason"]
        assert ng.backend.pool.in_use == 0


class TestReoffer:
    async def test_reoffer_reuses_the_ports(self, ng: Harness) -> None:
        first = await ng.offer()
        second = await ng.offer(sdp=CALLER_SDP.replace("192.0.2.10", "192.0.2.11"))
        assert audio(first["sdp"])[1] == audio(second["sdp"])[1]
        assert ng.backend.pool.in_use == 2
        assert len(ng.backend.relays) == 1
        assert len(ng.backend.media) == 1
        assert ng.media().endpoints["offer"].address == "192.0.2.11"

    async def test_reinvite_from_the_callee_carries_the_offer_legs_ports(self, ng: Harness) -> None:
        await ng.offer()
        await ng.answer()
        held = AGENT_SDP.replace("a=sendrecv", "a=sendonly")
        reply = await ng.offer(from_tag="bob", to_tag="alice", sdp=held)
        assert reply["result"] == "ok"
        assert audio(reply["sdp"])[1] == str(ng.ports("offer")[0])
        assert "sendonly" in audio(reply["sdp"])[2]
        answer = await ng.answer(from_tag="bob", to_tag="alice", sdp=CALLER_SDP.replace("49170", "49180"))
        assert audio(answer["sdp"])[1] == str(ng.ports("answer")[0])
        assert ng.media().endpoints["offer"].port == 49180

    async def test_foreign_tags_on_an_answered_call(self, ng: Harness) -> None:
        await ng.offer()
        await ng.answer()
        reply = await ng.offer(from_tag="mallory", to_tag="eve")
        assert reply == {"result": "error", "error-reason": "Invalid dialogue association"}


class TestAnswer:
    async def test_answer_sdp_carries_the_offer_legs_ports(self, ng: Harness) -> None:
        await ng.offer()
        reply = await ng.answer()
        assert reply["result"] == "ok"
        address, port, attributes = audio(reply["sdp"])
        rtp, rtcp = ng.ports("offer")
        assert (address, port) == (PROXY, str(rtp))
        assert f"rtcp:{rtcp}" in attributes
        assert "rtpmap:101 telephone-event/8000" in attributes

    async def test_answer_sets_the_answer_legs_endpoint(self, ng: Harness) -> None:
        await ng.offer()
        await ng.answer()
        endpoint = ng.media().endpoints["answer"]
        assert (endpoint.address, endpoint.port) == ("198.51.100.20", 3456)
        call = ng.handler.registry.get("call-1")
        assert call is not None
        assert call.answered
        assert call.legs["answer"].tag == "bob"

    async def test_answer_for_an_unknown_call(self, ng: Harness) -> None:
        assert await ng.answer() == {"result": "error", "error-reason": "Unknown call-id"}

    async def test_answer_with_an_unknown_from_tag(self, ng: Harness) -> None:
        await ng.offer()
        assert await ng.answer(from_tag="mallory") == {
            "result": "error",
            "error-reason": "Invalid dialogue association",
        }

    async def test_answer_with_malformed_sdp_changes_nothing(self, ng: Harness) -> None:
        await ng.offer()
        reply = await ng.answer(sdp="v=1\r\n")
        assert reply["result"] == "error"
        call = ng.handler.registry.get("call-1")
        assert call is not None
        assert call.legs["answer"].tag is None


# --------------------------------------------------------------------------- ports


class TestPorts:
    async def test_ran_out_of_ports(self) -> None:
        ng = Harness(FakeBackend(PortPool("127.0.0.1", 30000, 30003)))  # two pairs: one call
        assert (await ng.offer("call-1"))["result"] == "ok"
        assert await ng.offer("call-2") == {"result": "error", "error-reason": "Ran out of ports"}
        assert ng.handler.registry.get("call-2") is None
        assert ng.backend.pool.in_use == 2

    async def test_ran_out_of_ports_halfway_gives_the_first_pair_back(self) -> None:
        ng = Harness(FakeBackend(PortPool("127.0.0.1", 30000, 30001)))  # one pair
        assert await ng.offer() == {"result": "error", "error-reason": "Ran out of ports"}
        assert ng.backend.pool.in_use == 0
        assert ng.backend.media[0].closed

    async def test_a_pair_held_by_another_program_is_skipped(self) -> None:
        ng = Harness(FakeBackend(bind_failures=1))
        reply = await ng.offer()
        assert reply["result"] == "ok"
        first, second = ng.backend.bind_attempts
        assert set(first.values()).isdisjoint(second.values())
        assert ng.backend.pool.in_use == 2

    async def test_binding_keeps_failing(self) -> None:
        ng = Harness(FakeBackend(bind_failures=BIND_ATTEMPTS))
        reply = await ng.offer()
        assert reply["result"] == "error"
        assert reply["error-reason"].startswith("Failed to open media ports:")
        assert ng.backend.pool.in_use == 0
        assert len(ng.handler.registry) == 0


# --------------------------------------------------------------------------- delete


class TestDelete:
    async def test_delete_closes_everything(self, ng: Harness) -> None:
        await ng.offer()
        await ng.answer()
        media, relay = ng.media(), ng.backend.relays[0]
        reply = await ng("delete", call_id="call-1", from_tag="alice", to_tag="bob")
        assert reply["result"] == "ok"
        assert "warning" not in reply
        assert relay.closed
        assert media.closed
        assert ng.backend.pool.in_use == 0
        assert len(ng.handler.registry) == 0

    async def test_delete_reply_has_the_call_totals(self, ng: Harness) -> None:
        await ng.offer()
        reply = await ng("delete", call_id="call-1")
        assert reply["totals"]["RTP"] == {"packets": 99, "bytes": 17028, "errors": 1, "dropped": 2}

    async def test_delete_unknown_call_is_a_warning(self, ng: Harness) -> None:
        assert await ng("delete", call_id="nope") == {"result": "ok", "warning": CALL_NOT_FOUND}

    async def test_delete_unknown_call_with_fatal_is_an_error(self, ng: Harness) -> None:
        reply = await ng("delete", call_id="nope", flags=["fatal"])
        assert reply == {"result": "error", "error-reason": CALL_NOT_FOUND}

    async def test_delete_with_foreign_tags_keeps_the_call(self, ng: Harness) -> None:
        await ng.offer()
        await ng.answer()
        reply = await ng("delete", call_id="call-1", from_tag="alice", to_tag="carol")
        assert reply == {"result": "ok", "warning": CALL_NOT_FOUND}
        assert ng.handler.registry.get("call-1") is not None

    async def test_delete_of_a_failed_branch_before_the_answer(self, ng: Harness) -> None:
        # Kamailio's failure route deletes with the to-tag of the branch that said 486.
        await ng.offer()
        reply = await ng("delete", call_id="call-1", from_tag="alice", to_tag="busy")
        assert reply["result"] == "ok"
        assert ng.handler.registry.get("call-1") is None

    async def test_offer_after_delete_is_a_new_call(self, ng: Harness) -> None:
        await ng.offer()
        await ng("delete", call_id="call-1")
        assert (await ng.offer())["result"] == "ok"
        assert len(ng.backend.media) == 2

    async def test_one_log_line_per_call_without_digits(self, ng: Harness) -> None:
        with capture_logs() as logs:
            await ng.offer()
            await ng.answer()
            await ng("query", call_id="call-1")
            await ng("delete", call_id="call-1")
        ended = [entry for entry in logs if entry["event"] == "call ended"]
        assert len(ended) == 1
        (line,) = ended
        assert line["call_id"] == "call-1"
        assert line["reason"] == "deleted"
        assert line["media"] == {"masked_tones": 16, "digits": 16, "offer": {"packets": 50}}
        assert "4111" not in repr(logs)


# --------------------------------------------------------------------------- query, list


class TestQuery:
    async def test_query_totals_per_leg(self, ng: Harness) -> None:
        await ng.offer()
        await ng.answer()
        reply = await ng("query", call_id="call-1")
        assert reply["result"] == "ok"
        assert reply["legs"]["offer"] == {
            "side": "offer",
            "role": "caller",
            "tag": "alice",
            "local port": ng.ports("offer")[0],
            "packets": 50,
            "bytes": 8600,
            "errors": 1,
            "dropped": 2,
        }
        assert reply["legs"]["answer"]["role"] == "agent"
        assert reply["legs"]["answer"]["packets"] == 49
        assert reply["masked tones"] == 16
        assert reply["masking"] == "on"

    async def test_query_has_rtpengines_shape(self, ng: Harness) -> None:
        await ng.offer()
        await ng.answer()
        ng.now_s += 30.0
        reply = await ng("query", call_id="call-1")
        assert reply["created"] == 1_700_000_000
        assert reply["created_us"] == 250_000
        assert reply["last signal"] == 1_700_000_000 - 30
        assert reply["totals"]["RTP"]["packets"] == 99
        assert reply["totals"]["RTCP"] == {"packets": 3, "bytes": 60, "errors": 0, "dropped": 0}
        assert reply["tags"]["alice"]["in dialogue with"] == "bob"
        assert reply["tags"]["bob"]["totals"]["RTP"]["bytes"] == 8428

    async def test_query_never_reports_digits(self, ng: Harness) -> None:
        await ng.offer()
        reply = await ng("query", call_id="call-1")
        assert not [key for key in keys_of(reply) if "digit" in key]

    async def test_query_unknown_call(self, ng: Harness) -> None:
        assert await ng("query", call_id="nope") == {"result": "error", "error-reason": "Unknown call-id"}


class TestList:
    async def test_list_call_ids(self, ng: Harness) -> None:
        for n in range(3):
            await ng.offer(f"call-{n}")
        assert await ng("list") == {"result": "ok", "calls": ["call-0", "call-1", "call-2"]}

    async def test_list_limit(self, ng: Harness) -> None:
        for n in range(3):
            await ng.offer(f"call-{n}")
        assert await ng("list", limit=2) == {"result": "ok", "calls": ["call-0", "call-1"]}

    async def test_list_bad_limit(self, ng: Harness) -> None:
        reply = await ng("list", limit=0)
        assert reply == {"result": "error", "error-reason": "Invalid 'limit' (expected a positive integer)"}


# --------------------------------------------------------------------------- block / unblock DTMF


class TestBlockDtmf:
    async def test_unblock_then_block(self, ng: Harness) -> None:
        await ng.offer()
        assert await ng("unblock DTMF", call_id="call-1") == {"result": "ok"}
        assert not ng.media().masking_enabled
        assert (await ng("query", call_id="call-1"))["masking"] == "off"
        assert await ng("block DTMF", call_id="call-1") == {"result": "ok"}
        assert ng.media().masking_enabled

    async def test_unknown_call(self, ng: Harness) -> None:
        assert await ng("block DTMF", call_id="nope") == {"result": "error", "error-reason": "Unknown call-id"}

    async def test_capture_is_accepted_with_a_warning(self, ng: Harness) -> None:
        await ng.offer()
        reply = await ng("block DTMF", call_id="call-1", capture={"kind": "card"})
        assert reply == {"result": "ok", "warning": CAPTURE_NOT_AVAILABLE}
        assert ng.media().masking_enabled

    async def test_other_options_are_still_named(self, ng: Harness) -> None:
        await ng.offer()
        reply = await ng("block DTMF", call_id="call-1", capture={}, trigger="#")
        assert reply["warning"] == f"Ignored options: trigger=#; {CAPTURE_NOT_AVAILABLE}"


class FakeCapture:
    """The capture side of the NG contract: records what the commands asked for."""

    def __init__(self, refuse: str | None = None) -> None:
        self.started: list[dict[str, Any]] = []
        self.cancelled: list[str] = []
        self.ended: list[str] = []
        self.refuse = refuse

    def start_capture(self, call_id: str, amount_minor: int, currency: str | None, reference: str, who: str,
                      **options: Any) -> str:
        if self.refuse is not None:
            raise CaptureError(self.refuse)
        self.started.append({"call_id": call_id, "amount": amount_minor, "currency": currency,
                             "reference": reference, "who": who, **options})
        return "cap-1"

    def cancel_capture(self, call_id: str, who: str, *, source: str = "api") -> None:
        self.cancelled.append(call_id)

    def status(self, call_id: str) -> dict[str, Any] | None:
        return {"state": "collecting", "digits_entered": 3} if self.started else None

    def call_ended(self, call_id: str) -> None:
        self.ended.append(call_id)


def capture_harness(capture: FakeCapture) -> Harness:
    harness = Harness()
    harness.handler.capture = capture
    return harness


class TestBlockDtmfCapture:
    """``block DTMF`` / ``unblock DTMF`` with a ``capture`` dictionary, and ``query``."""

    async def test_block_with_capture_starts_one_and_masks(self) -> None:
        capture = FakeCapture()
        ng = capture_harness(capture)
        await ng.offer()
        ng.media().set_masking(False)
        reply = await ng("block DTMF", call_id="call-1",
                         capture={"amount": "1999", "currency": "GBP", "reference": "order-1"})
        assert reply == {"result": "ok"}
        assert ng.media().masking_enabled
        (started,) = capture.started
        assert (started["amount"], started["currency"], started["reference"]) == (1999, "GBP", "order-1")
        assert started["source"] == "ng"
        assert started["auto_submit"] is True
        assert (await ng("query", call_id="call-1"))["capture"] == {"state": "collecting", "digits_entered": 3}

    @pytest.mark.parametrize(
        ("request_", "reason"),
        [
            ("card", "capture: must be a dictionary with amount, currency and reference"),
            ({"amount": "12.50", "reference": "r"}, "capture: amount must be a whole number of minor units"),
            ({"amount": 100}, "capture: reference is required"),
            ({"amount": 100, "reference": "r", "submit": "later"}, "capture: submit must be auto or agent"),
        ],
    )
    async def test_bad_capture_requests_are_errors(self, request_: Any, reason: str) -> None:
        capture = FakeCapture()
        ng = capture_harness(capture)
        await ng.offer()
        reply = await ng("block DTMF", call_id="call-1", capture=request_)
        assert (reply["result"], reply["error-reason"]) == ("error", reason)
        assert capture.started == []

    async def test_a_refused_capture_is_an_error_without_digits(self) -> None:
        ng = capture_harness(FakeCapture(refuse="no payment gateway is configured"))
        await ng.offer()
        reply = await ng("block DTMF", call_id="call-1", capture={"amount": 5, "reference": "r"})
        assert reply == {"result": "error", "error-reason": "capture: no payment gateway is configured"}

    async def test_unblock_with_capture_cancels_it(self) -> None:
        capture = FakeCapture()
        ng = capture_harness(capture)
        await ng.offer()
        assert await ng("unblock DTMF", call_id="call-1", capture={}) == {"result": "ok"}
        assert capture.cancelled == ["call-1"]
        assert not ng.media().masking_enabled

    async def test_delete_ends_the_capture(self) -> None:
        capture = FakeCapture()
        ng = capture_harness(capture)
        await ng.offer()
        await ng("delete", call_id="call-1", from_tag="alice")
        assert capture.ended == ["call-1"]


# --------------------------------------------------------------------------- timeouts, shutdown


class TestMediaTimeout:
    async def test_idle_answered_call_is_ended(self) -> None:
        ng = Harness(timeout_s=60.0)
        await ng.offer()
        await ng.answer()
        ng.media().last_packet_s = ng.now_s
        media = ng.media()
        assert await ng.handler.expire_idle(ng.now_s + 59.0) == []
        with capture_logs() as logs:
            assert await ng.handler.expire_idle(ng.now_s + 61.0) == ["call-1"]
        assert media.closed
        assert ng.backend.pool.in_use == 0
        assert [entry["reason"] for entry in logs if entry["event"] == "call ended"] == ["media timeout"]

    async def test_ringing_call_waits_for_the_setup_timeout(self) -> None:
        ng = Harness(timeout_s=60.0, setup_timeout_s=600.0)
        await ng.offer()
        assert await ng.handler.expire_idle(ng.now_s + 120.0) == []
        assert await ng.handler.expire_idle(ng.now_s + 601.0) == ["call-1"]

    async def test_signalling_keeps_a_call_alive(self) -> None:
        ng = Harness(timeout_s=60.0)
        await ng.offer()
        await ng.answer()
        ng.now_s += 50.0
        await ng.offer()  # re-INVITE (session refresh)
        assert await ng.handler.expire_idle(ng.now_s + 50.0) == []


class TestCloseAll:
    async def test_close_all(self, ng: Harness) -> None:
        for n in range(3):
            await ng.offer(f"call-{n}")
        with capture_logs() as logs:
            assert await ng.handler.close_all(ng.now_s) == 3
        assert len(ng.handler.registry) == 0
        assert ng.backend.pool.in_use == 0
        assert all(relay.closed for relay in ng.backend.relays)
        assert [entry["reason"] for entry in logs if entry["event"] == "call ended"] == ["shutdown"] * 3


class TestRobustness:
    async def test_a_failing_media_session_is_an_internal_error(self, ng: Harness) -> None:
        await ng.offer()

        def broken(enabled: bool) -> None:
            raise RuntimeError("boom")

        ng.media().set_masking = broken  # type: ignore[method-assign]  # inject a fault
        with capture_logs():
            assert await ng("block DTMF", call_id="call-1") == {"result": "error", "error-reason": "Internal error"}
        assert (await ng("query", call_id="call-1"))["result"] == "ok"

    async def test_counts_by_command(self, ng: Harness) -> None:
        await ng("ping")
        await ng("ping")
        await ng("bogus")
        assert ng.handler.counts == {"ping": 2, "error": 1}
