"""Proxy.poll_captures: which calls it looks at between its full scans."""

from __future__ import annotations

from typing import Any

from dtmfguard.app import CAPTURE_POLL_INTERVAL_S, CAPTURE_SCAN_INTERVAL_S, LiveMedia, Proxy
from dtmfguard.config import Config
from dtmfguard.control.media import CallMedia
from dtmfguard.control.registry import Call
from dtmfguard.pipeline.mask import MaskSettings


class Pressed(CallMedia):
    """A call's media with key presses waiting or not, as the test says."""

    waiting = False

    @property
    def events_waiting(self) -> bool:
        return self.waiting

    def drain_events(self) -> list[Any]:
        self.waiting = False
        return []


class SpyCapture:
    def __init__(self) -> None:
        self.polled: list[str] = []
        self.runs: set[str] = set()

    def running(self, call_id: str) -> bool:
        return call_id in self.runs

    def running_calls(self) -> list[str]:
        return list(self.runs)

    def poll(self, call_id: str, media: Any, now_ms: int) -> None:
        self.polled.append(call_id)
        media.drain_events()


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def _proxy(backend: Any, names: list[str]) -> tuple[Proxy, SpyCapture, Clock, dict[str, Pressed]]:
    clock = Clock()
    spy = SpyCapture()
    proxy = Proxy(Config(), backend=backend, clock=clock, capture=spy)  # type: ignore[arg-type]  # a spy
    media = {}
    for name in names:
        media[name] = Pressed(name, masking=MaskSettings())
        proxy.handler.registry.add(Call(name, created_s=0.0, created_wall_s=0.0, caller="offer", media=media[name]))
    return proxy, spy, clock, media


def _poll_for(proxy: Proxy, clock: Clock, seconds: float) -> None:
    for _ in range(round(seconds / CAPTURE_POLL_INTERVAL_S)):
        proxy.poll_captures()
        clock.now_s += CAPTURE_POLL_INTERVAL_S


def test_between_scans_only_reported_calls_and_running_captures_are_polled() -> None:
    backend = LiveMedia(Config(), batched=False)
    proxy, spy, clock, media = _proxy(backend, ["a", "b", "c"])
    media["a"].waiting = media["b"].waiting = True
    _poll_for(proxy, clock, 0.1)  # every call looked at, a share per poll
    assert sorted(spy.polled) == ["a", "b"]

    spy.polled.clear()
    media["a"].waiting = media["b"].waiting = True
    backend.events_ready.add("a")  # only a's relay reported its presses
    spy.runs.add("c")  # c has a capture whose timeouts need polling
    proxy.poll_captures()
    assert sorted(spy.polled) == ["a", "c"]
    assert backend.events_ready == set()

    spy.polled.clear()
    clock.now_s += CAPTURE_SCAN_INTERVAL_S
    _poll_for(proxy, clock, CAPTURE_SCAN_INTERVAL_S)  # the safety net: b's presses are not lost
    assert spy.polled.count("b") == 1


def test_the_safety_net_looks_at_a_share_of_the_calls_per_poll() -> None:
    backend = LiveMedia(Config(), batched=False)
    names = [f"call-{i}" for i in range(500)]
    proxy, spy, clock, media = _proxy(backend, names)
    for m in media.values():
        m.waiting = True
    proxy.poll_captures()
    assert len(spy.polled) == 500 * CAPTURE_POLL_INTERVAL_S / CAPTURE_SCAN_INTERVAL_S
    _poll_for(proxy, clock, CAPTURE_SCAN_INTERVAL_S)
    assert sorted(spy.polled) == sorted(names)


def test_a_reported_call_that_ended_is_skipped() -> None:
    backend = LiveMedia(Config(), batched=False)
    proxy, spy, clock, _ = _proxy(backend, ["a"])
    proxy.poll_captures()
    backend.events_ready.add("gone")
    clock.now_s += 0.02
    proxy.poll_captures()
    assert spy.polled == []


class Plain:
    """A backend that does not report key presses: every poll scans every call."""

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)


def test_without_reports_every_poll_scans_every_call() -> None:
    proxy, spy, clock, media = _proxy(Plain(), ["a", "b"])
    for _ in range(3):
        media["b"].waiting = True
        clock.now_s += 0.02
        proxy.poll_captures()
    assert spy.polled == ["b", "b", "b"]
