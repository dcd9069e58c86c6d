"""Benchmarks of the DTMF detection path: kernel cost, detector throughput, latency.

``python -m bench`` measures, on this machine and in one process:

* :mod:`bench.kernels` -- ns per channel-frame (20 ms of one channel) of the Goertzel
  bank, the decision kernel and both together, jitted and NumPy twin, at several batch
  sizes, on a typical channel mix and on the all-DTMF worst case; and how far the
  Goertzel bank is from the core's arithmetic limit (:mod:`bench.machine`).
* :mod:`bench.detector` -- channel-frames per second through the whole per-channel
  detector (:class:`dtmfguard.pipeline.detect.ChannelDetector`).
* :mod:`bench.latency` -- tone-onset and digit-confirmation latency, in stream time, on a
  generated set of digits spread over the ITU-T Q.24 acceptance range.

:mod:`bench.runner` runs them and gathers one JSON-ready result; :mod:`bench.report`
prints the table and writes ``bench/results/``; :mod:`bench.check` is the CI regression
check, built on ratios measured within the same run so a noisy shared machine does not
make it flaky.
"""
