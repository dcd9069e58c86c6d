"""The ``dtmfguard`` command run as a program: a live raw pipe into ``detect -``, and ``demo``.

Each test starts ``python -m dtmfguard`` (the same entry point as the console script) in a
subprocess with this checkout on its import path, feeds it real pipes and checks its output,
exit status and files. The demo's recordings are also checked with the independent reference
decoders (multimon-ng and spandsp), so the demo's claims do not rest on dtmfguard alone.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

import numpy.typing as npt
import pytest

from dtmfguard import synth, wavio
from tests.support import decoders

REPO = Path(__file__).resolve().parents[2]
TEST_PAN = "4111111111111111"  # the public Visa test number
START_TIMEOUT_S = 60.0  # interpreter start, numba import and kernel cache load on a slow machine


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _dtmfguard(*args: str) -> list[str]:
    return [sys.executable, "-m", "dtmfguard", *args]


def _s16le(samples: npt.ArrayLike) -> bytes:
    return synth.to_int16(samples).astype("<i2").tobytes()


def _pump(stream: IO[bytes], into: queue.Queue[bytes]) -> None:
    for line in stream:
        into.put(line)


@pytest.mark.integration
def test_detect_reads_a_piped_raw_stream() -> None:
    x, truth = synth.dtmf_sequence("0123456789*#ABCD", on_ms=50.0, off_ms=50.0, rng=11)
    done = subprocess.run(
        _dtmfguard("detect", "-"), input=_s16le(x), capture_output=True, env=_env(), timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    lines = done.stdout.decode().splitlines()
    assert [line.split()[0] for line in lines] == [t.key for t in truth]
    for line, t in zip(lines, truth, strict=True):
        assert abs(float(line.split()[1]) - t.start_sample / 8.0) <= 2.0


@pytest.mark.integration
def test_detect_prints_each_digit_while_the_pipe_is_still_open() -> None:
    # A live stream: the first digit must come out before the writer has closed the pipe.
    first, _ = synth.dtmf_sequence("7", on_ms=60.0, tail_ms=300.0, rng=1)
    second, _ = synth.dtmf_sequence("8", on_ms=60.0, rng=2)
    proc = subprocess.Popen(
        _dtmfguard("detect", "--json", "-"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    lines: queue.Queue[bytes] = queue.Queue()
    reader = threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True)
    reader.start()
    try:
        proc.stdin.write(_s16le(first))
        proc.stdin.flush()
        assert b'"digit": "7"' in lines.get(timeout=START_TIMEOUT_S)
        assert proc.poll() is None  # still running, still reading
        proc.stdin.write(_s16le(second))
        proc.stdin.close()
        assert proc.wait(timeout=START_TIMEOUT_S) == 0
        reader.join(timeout=10)
        assert b'"digit": "8"' in lines.get(timeout=1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.integration
def test_demo_masks_the_card_number(tmp_path: Path) -> None:
    out_dir = tmp_path / "demo"
    done = subprocess.run(
        _dtmfguard("demo", "--out", str(out_dir)),
        capture_output=True,
        env=_env(),
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    stdout = done.stdout.decode()
    assert done.returncode == 0, stdout + done.stderr.decode()
    assert "[ok] audit finds 16 digits in call.wav" in stdout
    assert "[ok] audit finds 0 digits in call-masked.wav" in stdout
    assert "captured 16 of 16 digits" in stdout
    assert "1111" in stdout
    assert TEST_PAN not in stdout
    assert str(out_dir) in stdout

    call, _ = wavio.read_wav(out_dir / "call.wav")
    masked, _ = wavio.read_wav(out_dir / "call-masked.wav")
    assert len(masked) == len(call)
    assert 15.0 <= len(call) / 8000 <= 20.0
    # The independent decoders agree: the whole number before masking, nothing after.
    assert decoders.multimon_digits(call) == TEST_PAN
    assert decoders.spandsp_digits(call) == TEST_PAN
    assert decoders.multimon_digits(masked) == ""
    assert decoders.spandsp_digits(masked) == ""
