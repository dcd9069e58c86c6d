"""``serve`` keeps what survives out of the garbage collector's full passes."""

from __future__ import annotations

import asyncio
import gc

from dtmfguard.app import _freeze_survivors


async def test_survivors_are_frozen_and_young_cycles_collected_first() -> None:
    class Node:
        def __init__(self) -> None:
            self.other: Node | None = None

    gc.collect()
    gc.disable()  # only the freezer collects here
    kept = [Node() for _ in range(100)]
    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle that is garbage once the names go
    del a, b
    before = gc.get_freeze_count()
    task = asyncio.get_running_loop().create_task(_freeze_survivors(0.01))
    try:
        await asyncio.sleep(0.05)
        frozen = gc.get_freeze_count() - before
        assert frozen >= len(kept)
        gc.unfreeze()  # frozen objects are invisible to get_objects: bring them back to look
        assert not any(type(o) is Node and o not in kept for o in gc.get_objects())  # the cycle was freed
    finally:
        task.cancel()
        gc.unfreeze()
        gc.enable()
