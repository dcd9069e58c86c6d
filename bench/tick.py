"""Microbenchmark of one batched 20 ms tick of the caller -> agent path, without sockets.

``N`` :class:`~dtmfguard.control.media.CallMedia` share one
:class:`~dtmfguard.pipeline.batch.DetectorBank` and its
:class:`~dtmfguard.control.lane.QuietLane`, as in ``dtmfguard serve``. Per tick each
call gets one 20 ms PCMU packet (speech-like audio, digits typed in every fourth call,
as in :mod:`bench.load`), routed as the media pump routes it (see :func:`measure`). Reports microseconds per
packet all-in, and the share of the bank run. ``--batch K`` splits each tick into
passes of K calls, as the media pump's 1.5 ms hold does (about N / 13 packets per pass):
the fixed cost of a pass then shows. ``--profile`` prints the top of a cProfile
of the same loop; ``--gc-freeze`` moves everything allocated during set-up out of the
garbage collector's reach first (``gc.freeze()``), to show what the collector's full
passes over long-lived call state cost.

``python -m bench.tick [--calls N] [--ticks T] [--batch K] [--profile] [--gc-freeze]``
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import struct
import sys
import time

from bench.load import FRAME, _clips
from dtmfguard.control.lane import QuietLane
from dtmfguard.control.media import CallMedia, LegEndpoint
from dtmfguard.kernels import warmup
from dtmfguard.pipeline.batch import DetectorBank
from dtmfguard.pipeline.mask import MaskSettings

_HEADER = struct.Struct("!BBHII")
_CALLER = ("127.0.0.1", 40000)


def _calls(n: int) -> tuple[DetectorBank, list[CallMedia]]:
    bank = DetectorBank(capacity=max(1, n))
    calls = []
    for i in range(n):
        media = CallMedia(f"call-{i}", masking=MaskSettings(), bank=bank)
        media.set_endpoint("offer", LegEndpoint("127.0.0.1", 40000, 40001, {0: "PCMU"}, None))
        media.set_endpoint("answer", LegEndpoint("127.0.0.1", 50000 + 2 * i, 50001 + 2 * i, {0: "PCMU"}, None))
        calls.append(media)
    return bank, calls


def _packets(n: int, ticks: int) -> list[list[bytes]]:
    clips = _clips(8, 6.0)
    per_clip = len(clips[0]) // FRAME
    out = []
    for k in range(ticks):
        row = []
        for i in range(n):
            clip = clips[i % len(clips)]
            j = (k + 37 * i) % per_clip
            header = _HEADER.pack(0x80, 0, k & 0xFFFF, (k * FRAME) & 0xFFFFFFFF, 0x1000 + i)
            row.append(header + clip[j * FRAME : (j + 1) * FRAME])
        out.append(row)
    return out


def measure(
    n: int, ticks: int, profile: bool = False, gc_freeze: bool = False, batch: int | None = None,
) -> dict[str, float]:
    """Run ``ticks`` ticks of ``n`` calls; returns microseconds per packet (total and bank).

    Each tick routes the packets as the media pump does: a call in the quiet lane has
    its packet go to :meth:`QuietLane.process` with the others of the tick (falling
    back to :meth:`CallMedia.on_rtp` when it is not plainly quiet), every other packet
    goes to :meth:`CallMedia.on_rtp`; then the bank runs, each call sends what it
    masked and may enter the lane.
    """
    warmup()
    bank, calls = _calls(n)
    lane = QuietLane(bank)
    packets = _packets(n, ticks)
    stats = {"lane_s": 0.0, "bank_s": 0.0, "sent": 0}

    step = batch or n

    def tick(k: int) -> None:
        for first in range(0, n, step):
            one_pass(k, first, min(n, first + step))

    def one_pass(k: int, first: int, stop: int) -> None:
        now = k * 0.02
        to_lane: list[int] = []
        waiting: list[CallMedia] = []  # as the pump's ticker: calls with audio in the bank
        for i in range(first, stop):
            media, data = calls[i], packets[k][i]
            if media.lane_slot is not None:
                to_lane.append(i)
            else:
                media.on_rtp("offer", data, _CALLER, now)
                waiting.append(media)
        if to_lane:
            t0 = time.perf_counter()
            result = lane.process([packets[k][i] for i in to_lane], [calls[i].lane_slot or 0 for i in to_lane], now)
            stats["lane_s"] += time.perf_counter() - t0
            stats["sent"] += len(result.sends)
            for j in result.fallbacks:
                media = calls[to_lane[j]]
                media.leave_lane()
                media.on_rtp("offer", packets[k][to_lane[j]], _CALLER, now)
                waiting.append(media)
        t0 = time.perf_counter()
        bank.run()
        stats["bank_s"] += time.perf_counter() - t0
        for media in waiting:
            stats["sent"] += len(media.process_tick())
            if media.lane_slot is None:
                media.enter_lane(lane, _nothing)

    # Warm up: fill the delay lines and the kernels' caches.
    for k in range(min(5, ticks)):
        tick(k)
    stats.update(lane_s=0.0, bank_s=0.0, sent=0)
    frames0 = lane.frames
    if gc_freeze:
        gc.collect()
        gc.freeze()
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    for k in range(5, ticks):
        tick(k)
    if profiler is not None:
        profiler.disable()
    total_s = time.perf_counter() - started
    if gc_freeze:
        gc.unfreeze()
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    packets_run = n * (ticks - 5)
    return {
        "calls": n,
        "packets": packets_run,
        "sent": stats["sent"],
        "us_per_packet": 1e6 * total_s / packets_run,
        "bank_us_per_packet": 1e6 * stats["bank_s"] / packets_run,
        "lane_us_per_packet": 1e6 * stats["lane_s"] / packets_run,
        "lane_share": (lane.frames - frames0) / packets_run,
    }


def _nothing() -> None:
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tick", description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=500)
    p.add_argument("--ticks", type=int, default=105)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--gc-freeze", action="store_true")
    p.add_argument("--batch", type=int, help="calls per pass (default: all calls in one pass)")
    args = p.parse_args(argv)
    r = measure(args.calls, args.ticks, args.profile, args.gc_freeze, args.batch)
    per_pass = f" in passes of {args.batch}" if args.batch else ""
    print(
        f"{r['calls']} calls{per_pass}, {r['packets']} packets: {r['us_per_packet']:.1f} us per packet all-in "
        f"(quiet lane {r['lane_us_per_packet']:.1f} us for {100 * r['lane_share']:.0f} % of the frames, "
        f"bank run {r['bank_us_per_packet']:.1f} us), {1e6 * 0.02 / r['us_per_packet']:.0f} streams per core "
        "before socket I/O"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
