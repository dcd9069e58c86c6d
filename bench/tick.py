"""Microbenchmark of one batched 20 ms tick of the caller -> agent path, without sockets.

``N`` :class:`~dtmfguard.control.media.CallMedia` share one
:class:`~dtmfguard.pipeline.batch.DetectorBank`, as in ``dtmfguard serve``. Per tick
each call gets one 20 ms PCMU packet (speech-like audio, digits typed in every fourth
call, as in :mod:`bench.load`) through :meth:`CallMedia.on_rtp`, then the bank runs and
:meth:`CallMedia.process_tick` returns the masked packets. Reports microseconds per
packet all-in, and the share of the bank run. ``--profile`` prints the top of a cProfile
of the same loop; ``--gc-freeze`` moves everything allocated during set-up out of the
garbage collector's reach first (``gc.freeze()``), to show what the collector's full
passes over long-lived call state cost.

``python -m bench.tick [--calls N] [--ticks T] [--profile] [--gc-freeze]``
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


def measure(n: int, ticks: int, profile: bool = False, gc_freeze: bool = False) -> dict[str, float]:
    """Run ``ticks`` ticks of ``n`` calls; returns microseconds per packet (total and bank)."""
    warmup()
    bank, calls = _calls(n)
    packets = _packets(n, ticks)
    # Warm up: fill the delay lines and the kernels' caches.
    for k in range(min(5, ticks)):
        for media, data in zip(calls, packets[k], strict=True):
            media.on_rtp("offer", data, _CALLER, 0.0)
        bank.run()
        for media in calls:
            media.process_tick()
    if gc_freeze:
        gc.collect()
        gc.freeze()
    profiler = cProfile.Profile() if profile else None
    bank_s = 0.0
    sent = 0
    started = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    for k in range(5, ticks):
        now = k * 0.02
        for media, data in zip(calls, packets[k], strict=True):
            media.on_rtp("offer", data, _CALLER, now)
        t0 = time.perf_counter()
        bank.run()
        bank_s += time.perf_counter() - t0
        for media in calls:
            sent += len(media.process_tick())
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
        "sent": sent,
        "us_per_packet": 1e6 * total_s / packets_run,
        "bank_us_per_packet": 1e6 * bank_s / packets_run,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tick", description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=500)
    p.add_argument("--ticks", type=int, default=105)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--gc-freeze", action="store_true")
    args = p.parse_args(argv)
    r = measure(args.calls, args.ticks, args.profile, args.gc_freeze)
    print(
        f"{r['calls']} calls, {r['packets']} packets: {r['us_per_packet']:.1f} us per packet all-in "
        f"(bank run {r['bank_us_per_packet']:.1f} us), {1e6 * 0.02 / r['us_per_packet']:.0f} streams per core"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
