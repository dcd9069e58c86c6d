"""Kamailio's unmodified ``rtpengine`` module driving dtmfguard's NG server, with SIPp as both phones.

A whole call goes through a real SIP proxy: SIPp's built-in UAC sends an INVITE with SDP
to Kamailio, whose script calls ``rtpengine_offer()``, relays to SIPp's built-in UAS,
calls ``rtpengine_answer()`` on the 200 OK and ``rtpengine_delete()`` on the BYE. The NG
server here is the real one (real command table, port pool, media sessions and relay);
the test records every request body and reply, then checks that Kamailio found the
proxy (its start-up ``ping``), that offer/answer/delete carried the keys we rely on with
consistent tags, that the SDP the phones saw points at our ports, and that the call was
deleted with its ports given back. Needs Debian's ``kamailio`` and ``sip-tester``.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dtmfguard.app import LiveMedia
from dtmfguard.config import Config, ControlConfig, MediaConfig
from dtmfguard.control.commands import CommandHandler, CommandSettings
from dtmfguard.protocol.sdp import SessionDescription
from dtmfguard.transport.ng_server import NgServer, start_ng_server

KAMAILIO = shutil.which("kamailio")
SIPP = shutil.which("sipp")
MODULES = next(
    (path for path in Path("/usr/lib").glob("*/kamailio/modules") if (path / "rtpengine.so").exists()),
    None,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _real_peers_installed() -> None:
    # `make test` installs them (tools/install-debian-deps.sh): a missing peer is a
    # broken set-up, not a reason to pass quietly.
    if KAMAILIO is None or SIPP is None or MODULES is None:
        pytest.fail("needs Debian packages kamailio (with its rtpengine module) and sip-tester (sipp)")

PORT_MIN, PORT_MAX = 48000, 48999
START_TIMEOUT_S = 15.0
CALL_TIMEOUT_S = 30.0
OFFER_FLAGS = "replace-origin replace-session-connection ICE=remove"


def _free_udp_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            probe.bind(("127.0.0.1", 0))
            sockets.append(probe)
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


def _kamailio_cfg(modules: Path, sip_port: int, ng_port: int, uas_port: int) -> str:
    return textwrap.dedent(
        f"""\
        #!KAMAILIO
        debug=2
        log_stderror=yes
        children=1
        disable_tcp=yes
        auto_aliases=no
        listen=udp:127.0.0.1:{sip_port}
        mpath="{modules}/"
        loadmodule "tm.so"
        loadmodule "sl.so"
        loadmodule "rr.so"
        loadmodule "pv.so"
        loadmodule "textops.so"
        loadmodule "siputils.so"
        loadmodule "rtpengine.so"
        modparam("rtpengine", "rtpengine_sock", "udp:127.0.0.1:{ng_port}")

        request_route {{
            if (has_totag()) {{
                # SIPp's built-in scenarios send no Route header: relay in-dialog requests to the UAS.
                loose_route();
                if (is_method("BYE")) {{
                    rtpengine_delete();
                }}
                $du = "sip:127.0.0.1:{uas_port}";
                t_relay();
                exit;
            }}
            if (is_method("INVITE")) {{
                record_route();
                if (!rtpengine_offer("{OFFER_FLAGS}")) {{
                    sl_send_reply("503", "Media proxy failed");
                    exit;
                }}
                t_on_reply("MEDIA_ANSWER");
            }}
            $du = "sip:127.0.0.1:{uas_port}";
            t_relay();
        }}

        onreply_route[MEDIA_ANSWER] {{
            if (has_body("application/sdp")) {{
                rtpengine_answer("{OFFER_FLAGS}");
            }}
        }}
        """
    )


@dataclass
class Exchange:
    body: dict[str, Any]
    reply: dict[str, Any]


class RecordingNg:
    """The real command table, with every request and reply kept for the test."""

    def __init__(self, handler: CommandHandler) -> None:
        self.handler = handler
        self.exchanges: list[Exchange] = []
        self.changed = asyncio.Event()

    async def __call__(self, body: dict[str, Any], *, now_s: float, source: object) -> dict[str, Any]:
        reply = await self.handler.handle(body, now_s=now_s, source=source)
        self.exchanges.append(Exchange(dict(body), reply))
        self.changed.set()
        return reply

    def of(self, command: str) -> list[Exchange]:
        return [exchange for exchange in self.exchanges if exchange.body.get("command") == command]

    async def wait_for(self, command: str, timeout_s: float) -> Exchange:
        async def first() -> Exchange:
            while not self.of(command):
                self.changed.clear()
                await self.changed.wait()
            return self.of(command)[0]

        return await asyncio.wait_for(first(), timeout_s)


@dataclass
class Rig:
    ng: RecordingNg
    server: NgServer
    live: LiveMedia
    sip_port: int
    uas_port: int
    uac_port: int
    workdir: Path


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    assert KAMAILIO is not None
    assert MODULES is not None
    ng_port, sip_port, uas_port, uac_port = _free_udp_ports(4)
    config = Config(
        control=ControlConfig(ng_listen=f"127.0.0.1:{ng_port}"),
        media=MediaConfig(interface="127.0.0.1", port_min=PORT_MIN, port_max=PORT_MAX),
    )
    live = LiveMedia(config)
    handler = CommandHandler(live, CommandSettings(address="127.0.0.1"))
    ng = RecordingNg(handler)
    server = await start_ng_server(ng, "127.0.0.1", ng_port)
    cfg = tmp_path / "kamailio.cfg"
    cfg.write_text(_kamailio_cfg(MODULES, sip_port, ng_port, uas_port))
    runtime = tmp_path / "run"
    runtime.mkdir()
    kamailio = await asyncio.create_subprocess_exec(
        KAMAILIO, "-DD", "-E", "-f", str(cfg), "-Y", str(runtime), "-w", str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        # The rtpengine module pings each media proxy as it starts and disables one that does not answer.
        await ng.wait_for("ping", START_TIMEOUT_S)
        yield Rig(ng, server, live, sip_port, uas_port, uac_port, tmp_path)
    finally:
        with contextlib.suppress(ProcessLookupError):
            kamailio.terminate()
        try:
            await asyncio.wait_for(kamailio.communicate(), 10.0)
        except TimeoutError:
            kamailio.kill()
            await kamailio.wait()
        await server.close()
        await handler.close_all(0.0, "test over")


async def _sipp(*args: str) -> asyncio.subprocess.Process:
    assert SIPP is not None
    return await asyncio.create_subprocess_exec(
        SIPP, *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )


def _audio(sdp: str) -> tuple[str, int]:
    description = SessionDescription.parse(sdp)
    section = description.media[0]
    connection = section.connection or description.connection
    assert connection is not None
    return connection.address, section.media.port


async def test_a_call_through_kamailio(rig: Rig) -> None:
    uas = await _sipp("-sn", "uas", "-i", "127.0.0.1", "-p", str(rig.uas_port), "-m", "1", "-timeout", "30s")
    uac = None
    try:
        await asyncio.sleep(0.3)  # the UAS binds its port
        uac = await _sipp(
            "-sn", "uac", f"127.0.0.1:{rig.sip_port}", "-i", "127.0.0.1", "-p", str(rig.uac_port),
            "-m", "1", "-d", "200", "-timeout", "20s",
        )  # fmt: skip
        uac_output, _ = await asyncio.wait_for(uac.communicate(), CALL_TIMEOUT_S)
        assert uac.returncode == 0, uac_output.decode(errors="replace")[-2000:]
        await rig.ng.wait_for("delete", 5.0)
    finally:
        for process in (uac, uas):
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()

    ng = rig.ng
    (offer,) = ng.of("offer")
    answers = ng.of("answer")  # a retransmitted 200 OK is answered again, identically
    deletes = ng.of("delete")
    assert answers
    assert deletes

    # What Kamailio sends and what the command table relies on.
    call_id = offer.body["call-id"]
    from_tag = offer.body["from-tag"]
    assert offer.body["ICE"] == "remove"
    assert offer.body["replace"] == ["origin", "session-connection"]
    assert "v=0" in offer.body["sdp"]
    assert "to-tag" not in offer.body
    for answer in answers:
        assert answer.body["call-id"] == call_id
        assert answer.body["from-tag"] == from_tag
        assert answer.body["to-tag"]
    assert {delete.body["call-id"] for delete in deletes} == {call_id}

    # What we replied: rewritten SDP toward each phone, ports from our range, no warnings.
    assert offer.reply["result"] == "ok", offer.reply
    assert "warning" not in offer.reply
    address, callee_side_port = _audio(offer.reply["sdp"])
    assert address == "127.0.0.1"
    assert PORT_MIN <= callee_side_port <= PORT_MAX
    for answer in answers:
        assert answer.reply["result"] == "ok", answer.reply
        _, caller_side_port = _audio(answer.reply["sdp"])
        assert PORT_MIN <= caller_side_port <= PORT_MAX
        assert caller_side_port != callee_side_port
    assert deletes[0].reply["result"] == "ok"
    assert "warning" not in deletes[0].reply

    # The call is gone and its ports are back in the pool.
    assert len(ng.handler.registry) == 0
    assert rig.live.pool.in_use == 0
