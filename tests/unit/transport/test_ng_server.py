"""The NG control socket's request path, with datagrams handed in and replies collected (no socket)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dtmfguard.protocol import bencode
from dtmfguard.protocol.ng import ReplyCache
from dtmfguard.transport.ng_server import NgServer, salvage_cookie

CLIENT = ("127.0.0.1", 40000)


class FakeTransport(asyncio.DatagramTransport):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[bytes, Any]] = []

    def sendto(self, data: Any, addr: Any = None) -> None:
        self.sent.append((bytes(data), addr))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 22222) if name == "sockname" else default

    def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


class CountingHandler:
    """Answers ok and counts calls; ``gate`` holds replies back until set."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, body: dict[str, Any], *, now_s: float, source: Any) -> dict[str, Any]:
        self.calls.append(body)
        await self.gate.wait()
        if body.get("command") == "explode":
            raise RuntimeError("handler bug")
        if body.get("command") == "float":
            return {"result": "ok", "value": 1.5}  # bencode cannot carry it
        return {"result": "ok", "n": len(self.calls)}


class Rig:
    def __init__(self, **options: Any) -> None:
        self.handler = CountingHandler()
        self.clock = Clock()
        self.server = NgServer(self.handler, clock=self.clock, **options)
        self.transport = FakeTransport()
        self.server.connection_made(self.transport)

    def send(self, datagram: bytes, addr: Any = CLIENT) -> None:
        self.server.datagram_received(datagram, addr)

    async def settle(self) -> None:
        await self.server.drain()

    @property
    def replies(self) -> list[bytes]:
        return [data for data, _addr in self.transport.sent]


@pytest.fixture
def rig() -> Rig:
    return Rig()


class TestReplies:
    async def test_bencode_request_gets_a_bencode_reply_with_its_cookie(self, rig: Rig) -> None:
        rig.send(b"abc_1 d7:command4:pinge")
        await rig.settle()
        assert rig.transport.sent == [(b"abc_1 d1:ni1e6:result2:oke", CLIENT)]

    async def test_json_request_gets_a_json_reply(self, rig: Rig) -> None:
        rig.send(b'abc_2 {"command":"ping"}')
        await rig.settle()
        assert rig.replies == [b'abc_2 {"result":"ok","n":1}']

    async def test_handler_failure_is_an_internal_error(self, rig: Rig) -> None:
        rig.send(b"c1 d7:command7:explodee")
        rig.send(b"c2 d7:command5:floate")
        await rig.settle()
        assert rig.replies == [
            b"c1 d12:error-reason14:Internal error6:result5:errore",
            b"c2 d12:error-reason14:Internal error6:result5:errore",
        ]
        assert rig.server.stats.handler_errors == 2


class TestRetransmissions:
    async def test_retransmission_is_answered_from_the_cache(self, rig: Rig) -> None:
        rig.send(b"k1 d7:command5:offere")
        await rig.settle()
        rig.clock.now_s += 2.0
        rig.send(b"k1 d7:command5:offere")
        await rig.settle()
        assert len(rig.handler.calls) == 1
        assert rig.replies == [b"k1 d1:ni1e6:result2:oke"] * 2
        assert rig.server.stats.from_cache == 1

    async def test_retransmission_while_in_flight_is_not_acted_on(self, rig: Rig) -> None:
        rig.handler.gate.clear()
        rig.send(b"k2 d7:command5:offere")
        await asyncio.sleep(0)
        rig.send(b"k2 d7:command5:offere")
        rig.handler.gate.set()
        await rig.settle()
        assert len(rig.handler.calls) == 1
        assert rig.replies == [b"k2 d1:ni1e6:result2:oke"]
        assert rig.server.stats.duplicates_in_flight == 1

    async def test_same_cookie_from_another_source_is_another_request(self, rig: Rig) -> None:
        rig.send(b"k3 d7:command4:pinge", ("127.0.0.1", 1))
        rig.send(b"k3 d7:command4:pinge", ("127.0.0.1", 2))
        await rig.settle()
        assert len(rig.handler.calls) == 2

    async def test_cache_entries_expire(self) -> None:
        rig = Rig(cache=ReplyCache(ttl_s=30.0))
        rig.send(b"k4 d7:command4:pinge")
        await rig.settle()
        rig.clock.now_s += 31.0
        rig.send(b"k4 d7:command4:pinge")
        await rig.settle()
        assert len(rig.handler.calls) == 2


class TestBadDatagrams:
    async def test_malformed_bencode_with_a_cookie_is_answered(self, rig: Rig) -> None:
        rig.send(b"bad_1 d7:command4:ping")
        await rig.settle()
        (reply,) = rig.replies
        cookie, _, payload = reply.partition(b" ")
        assert cookie == b"bad_1"
        decoded = bencode.decode(payload)
        assert isinstance(decoded, dict)
        assert decoded[b"result"] == b"error"
        reason = decoded[b"error-reason"]
        assert isinstance(reason, bytes)
        assert reason.startswith(b"ng: payload after the cookie:")
        assert rig.server.stats.malformed == 1
        assert rig.handler.calls == []

    async def test_malformed_json_is_answered_in_json(self, rig: Rig) -> None:
        rig.send(b'bad_2 {"command": ')
        await rig.settle()
        (reply,) = rig.replies
        assert reply.startswith(b'bad_2 {"result":"error","error-reason":"ng: invalid JSON payload')

    async def test_no_cookie_is_dropped_and_counted(self, rig: Rig) -> None:
        rig.send(b"\x00\x01garbage without a space")
        rig.send(b" d7:command4:pinge")
        await rig.settle()
        assert rig.replies == []
        assert rig.server.stats.dropped == 2
        assert rig.server.stats.malformed == 2

    async def test_oversized_datagram_is_refused(self) -> None:
        rig = Rig(max_datagram_bytes=1000)
        rig.send(b"big_1 d3:sdp2000:" + b"x" * 2000 + b"e")
        await rig.settle()
        (reply,) = rig.replies
        assert b"exceeds the limit of 1000 bytes" in reply
        assert rig.server.stats.oversized == 1

    async def test_flood_beyond_the_in_flight_limit_is_dropped(self) -> None:
        rig = Rig(max_in_flight=2)
        rig.handler.gate.clear()
        for n in range(4):
            rig.send(b"f%d d7:command4:pinge" % n)
        await asyncio.sleep(0)
        rig.handler.gate.set()
        await rig.settle()
        assert len(rig.replies) == 2
        assert rig.server.stats.overloaded == 2

    async def test_send_failure_is_counted(self, rig: Rig) -> None:
        def refuse(data: Any, addr: Any = None) -> None:
            raise OSError(90, "Message too long")

        rig.transport.sendto = refuse  # type: ignore[method-assign]  # inject a fault
        rig.send(b"s1 d7:command4:pinge")
        await rig.settle()
        assert rig.server.stats.send_errors == 1


class TestSalvageCookie:
    def test_cookie_and_bencode(self) -> None:
        assert salvage_cookie(b"abc d") == (b"abc", False)

    def test_cookie_and_json(self) -> None:
        assert salvage_cookie(b"abc {") == (b"abc", True)

    def test_no_space(self) -> None:
        assert salvage_cookie(b"abc") is None

    def test_non_printable_cookie(self) -> None:
        assert salvage_cookie(b"a\tb d") is None

    def test_cookie_too_long(self) -> None:
        assert salvage_cookie(b"x" * 200 + b" d") is None
