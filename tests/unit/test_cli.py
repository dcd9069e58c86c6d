"""Tests of the ``dtmfguard`` command (dtmfguard.cli) and the offline tools behind it (dtmfguard.offline).

``main([...])`` runs in-process; every recording is generated here with :mod:`dtmfguard.synth`
and written with :mod:`dtmfguard.wavio`. Card-like digit strings are the public test number only.
"""

from __future__ import annotations

import io
import json
import struct
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from scipy import signal as sps

from dtmfguard import __version__, synth, wavio
from dtmfguard.cli import main
from dtmfguard.errors import AudioFormatError
from dtmfguard.offline import (
    EXIT_CLEAN,
    EXIT_ERROR,
    EXIT_LEAK,
    AuditReport,
    DetectorOptions,
    FileAudit,
    ProgressBar,
    audit_paths,
    format_audit_table,
    raw_chunks,
    stream_digits,
)
from dtmfguard.synth import ToneTruth

TEST_PAN = "4111111111111111"  # the public Visa test number
KEYS = "159D#*0A"
ONSET_TOLERANCE_MS = 2.0
DURATION_TOLERANCE_MS = 3.0

FloatArray = npt.NDArray[np.float32]


def sequence(keys: str = KEYS, **kwargs: float) -> tuple[FloatArray, list[ToneTruth]]:
    params: dict[str, float] = {"on_ms": 60.0, "off_ms": 60.0, "level_low_dbm0": -10.0}
    params.update(kwargs)
    on_ms, off_ms = params.pop("on_ms"), params.pop("off_ms")
    return synth.dtmf_sequence(keys, on_ms, off_ms, rng=7, **params)


def wav(tmp_path: Path, name: str, samples: npt.ArrayLike, rate: int = 8000) -> Path:
    path = tmp_path / name
    wavio.write_wav(path, samples, rate)
    return path


def ms(samples: int, rate: int = 8000) -> float:
    return 1000.0 * samples / rate


def parse_text(out: str) -> list[tuple[str, float, float, float]]:
    rows = []
    for line in out.splitlines():
        key, onset, confirmed, duration = line.split(" ")
        rows.append((key, float(onset), float(confirmed), float(duration)))
    return rows


def check_timing(rows: list[tuple[str, float, float, float]], truth: list[ToneTruth]) -> None:
    assert "".join(r[0] for r in rows) == "".join(t.key for t in truth)
    for (_key, onset_ms, confirmed_ms, duration_ms), t in zip(rows, truth, strict=True):
        assert abs(onset_ms - ms(t.start_sample)) <= ONSET_TOLERANCE_MS
        assert abs(duration_ms - ms(t.duration_samples)) <= DURATION_TOLERANCE_MS
        assert onset_ms < confirmed_ms <= onset_ms + 45.0


def fake_stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr("sys.stdin", types.SimpleNamespace(buffer=io.BytesIO(data)))


def s16le(samples: npt.ArrayLike) -> bytes:
    return synth.to_int16(samples).astype("<i2").tobytes()


# --------------------------------------------------------------------------- detect


def test_detect_prints_each_digit_with_its_times(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x, truth = sequence()
    path = wav(tmp_path, "keys.wav", x)
    assert main(["detect", str(path)]) == EXIT_CLEAN
    out, err = capsys.readouterr()
    assert err == ""
    for line in out.splitlines():  # one decimal per time
        assert all(len(field.split(".")[1]) == 1 for field in line.split(" ")[1:])
    check_timing(parse_text(out), truth)


def test_detect_json_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x, truth = sequence()
    path = wav(tmp_path, "keys.wav", x)
    assert main(["detect", "--json", str(path)]) == EXIT_CLEAN
    objects = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert all(set(o) == {"digit", "onset_ms", "confirmed_ms", "duration_ms"} for o in objects)
    check_timing([(o["digit"], o["onset_ms"], o["confirmed_ms"], o["duration_ms"]) for o in objects], truth)


def test_detect_16k_wav(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x, truth = sequence()
    path = wav(tmp_path, "keys16k.wav", sps.resample_poly(x, 2, 1), rate=16000)
    assert main(["detect", str(path)]) == EXIT_CLEAN
    check_timing(parse_text(capsys.readouterr().out), truth)


def test_detect_44k1_stereo_wav(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x, truth = sequence()
    hi = sps.resample_poly(x, 441, 80)
    path = tmp_path / "keys44k.wav"
    wavio.write_wav_stereo(path, hi, 0.5 * hi, rate=44100)
    assert main(["detect", str(path)]) == EXIT_CLEAN
    check_timing(parse_text(capsys.readouterr().out), truth)


@pytest.mark.parametrize("args", [["detect", "-"], ["detect", "--raw"], ["detect", "--raw", "-"]])
def test_detect_raw_stdin(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    x, truth = sequence()
    fake_stdin(monkeypatch, s16le(x))
    assert main(args) == EXIT_CLEAN
    check_timing(parse_text(capsys.readouterr().out), truth)


def test_detect_raw_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x, truth = sequence()
    path = tmp_path / "keys.raw"
    path.write_bytes(s16le(x))
    assert main(["detect", "--raw", str(path)]) == EXIT_CLEAN
    check_timing(parse_text(capsys.readouterr().out), truth)


def test_detect_empty_stdin_is_no_digit(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    fake_stdin(monkeypatch, b"")
    assert main(["detect", "-"]) == EXIT_CLEAN
    assert capsys.readouterr() == ("", "")


def test_detect_stdin_odd_byte_count(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    fake_stdin(monkeypatch, b"\x00" * 321)
    assert main(["detect", "-"]) == EXIT_ERROR
    assert capsys.readouterr().err == (
        "dtmfguard: error: raw s16le input has an odd number of bytes (321): not 16-bit samples\n"
    )


def test_detect_stdin_refuses_a_wav_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    x, _ = sequence("1")
    fake_stdin(monkeypatch, wav(tmp_path, "one.wav", x).read_bytes())
    assert main(["detect", "-"]) == EXIT_ERROR
    assert "standard input holds a WAV file" in capsys.readouterr().err


def test_detect_needs_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["detect"]) == EXIT_ERROR
    assert capsys.readouterr().err.startswith("dtmfguard: error: detect: give a WAV FILE")


class _Trickle:
    """A binary stream that hands out a few bytes per read1 call, like a slow pipe."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.step, self.pos = data, step, 0

    def read1(self, n: int) -> bytes:
        piece = self.data[self.pos : self.pos + min(n, self.step)]
        self.pos += len(piece)
        return piece

    def read(self, n: int = -1) -> bytes:  # pragma: no cover - read1 is preferred
        raise AssertionError("raw_chunks must use read1 when the stream has it")


def test_raw_stream_is_processed_incrementally() -> None:
    # An odd step splits samples across reads; each digit comes out long before the stream ends.
    x, truth = sequence("42", lead_ms=50.0, tail_ms=2000.0)
    stream = _Trickle(s16le(x), step=321)
    positions = [(digit.key, stream.pos) for digit in stream_digits(raw_chunks(stream))]  # type: ignore[arg-type]
    assert [key for key, _ in positions] == ["4", "2"]
    for (_key, pos_bytes), t in zip(positions, truth, strict=True):
        assert pos_bytes // 2 < t.end_sample + 800  # reported within 100 ms of the tone's end


def test_raw_chunks_rejects_half_a_sample_at_the_end() -> None:
    with pytest.raises(AudioFormatError, match=r"odd number of bytes \(5\)"):
        list(raw_chunks(_Trickle(b"\x01\x02\x03\x04\x05", step=2)))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- bad input


def nan_float_wav() -> bytes:
    data = np.array([0.1, np.nan, 0.2, 0.0], dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, 8000, 32000, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"this is a text file, not audio\n", "not a WAV file (no RIFF/WAVE header)"),
        (nan_float_wav(), "float data holds 1 NaN or infinite sample(s)"),
    ],
    ids=["empty", "not-wav", "nan"],
)
def test_detect_bad_wav_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, message: str
) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    assert main(["detect", str(path)]) == EXIT_ERROR
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"dtmfguard: error: {path}: {message}\n"


def test_detect_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["detect", str(tmp_path / "nope.wav")]) == EXIT_ERROR
    assert capsys.readouterr().err == f"dtmfguard: error: {tmp_path / 'nope.wav'}: No such file or directory\n"


def test_detect_truncated_file_reads_what_is_there(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A recording cut short while being written: the digits before the cut are found, with a
    # warning, and the exit status is 0 (the audio that exists was checked).
    x, truth = sequence("123", on_ms=60.0, off_ms=60.0, lead_ms=100.0, tail_ms=100.0)
    full = wav(tmp_path, "full.wav", x).read_bytes()
    cut_sample = truth[2].start_sample + 80  # 10 ms into the third tone: too short to be a digit
    path = tmp_path / "cut.wav"
    path.write_bytes(full[: 44 + 2 * cut_sample + 1])  # and half a sample
    assert main(["detect", str(path)]) == EXIT_CLEAN
    out, err = capsys.readouterr()
    assert [row[0] for row in parse_text(out)] == ["1", "2"]
    assert err == (
        f"dtmfguard: warning: {path}: truncated file (data chunk shorter than its header says); "
        "read the audio it holds\n"
    )


# --------------------------------------------------------------------------- mask


def test_mask_same_length_and_clean_afterwards(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x, _ = sequence(TEST_PAN, on_ms=70.0, off_ms=80.0)
    src = wav(tmp_path, "call.wav", x)
    dst = tmp_path / "masked.wav"
    assert main(["mask", str(src), str(dst)]) == EXIT_CLEAN
    err = capsys.readouterr().err
    assert err.startswith(f"dtmfguard: mask: wrote {dst}: 16 tones masked (flat-tone), ")
    y, info = wavio.read_wav(dst)
    assert (info.source_rate_hz, info.channels, info.encoding) == (8000, 1, "pcm_s16")
    assert len(y) == len(x)
    assert main(["audit", str(dst)]) == EXIT_CLEAN
    assert main(["audit", str(src)]) == EXIT_LEAK


def test_mask_is_time_aligned_and_silence_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x, truth = sequence("5", on_ms=80.0, lead_ms=200.0, tail_ms=200.0)
    background = x + 0.01 * np.sin(2 * np.pi * 300 * np.arange(len(x)) / 8000).astype(np.float32)
    src = wav(tmp_path, "in.wav", background)
    dst = tmp_path / "out.wav"
    assert main(["mask", "--mode", "silence", str(src), str(dst)]) == EXIT_CLEAN
    y, _ = wavio.read_wav(dst)
    t = truth[0]
    # Inside the tone: silence. Well before and after it: the input, sample for sample.
    assert np.max(np.abs(y[t.start_sample : t.end_sample])) < 1e-3
    np.testing.assert_allclose(y[: t.start_sample - 80], background[: t.start_sample - 80], atol=1 / 32768)
    np.testing.assert_allclose(y[t.end_sample + 240 :], background[t.end_sample + 240 :], atol=1 / 32768)
    assert "(silence)" in capsys.readouterr().err


def test_mask_resamples_to_8k_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x, _ = sequence("78")
    src = wav(tmp_path, "in16k.wav", sps.resample_poly(x, 2, 1), rate=16000)
    dst = tmp_path / "out.wav"
    assert main(["mask", str(src), str(dst)]) == EXIT_CLEAN
    assert "input was 16000 Hz, output is 8000 Hz" in capsys.readouterr().err
    y, info = wavio.read_wav(dst)
    assert info.source_rate_hz == 8000
    assert len(y) == len(x)
    assert main(["audit", str(dst)]) == EXIT_CLEAN


def test_mask_refuses_when_masking_is_off(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "off.toml"
    config.write_text("[masking]\nenabled = false\n")
    src = wav(tmp_path, "in.wav", sequence("1")[0])
    assert main(["--config", str(config), "mask", str(src), str(tmp_path / "out.wav")]) == EXIT_ERROR
    assert "masking is turned off" in capsys.readouterr().err
    assert not (tmp_path / "out.wav").exists()


def test_mask_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "empty.wav"
    src.write_bytes(b"")
    assert main(["mask", str(src), str(tmp_path / "out.wav")]) == EXIT_ERROR
    assert capsys.readouterr().err == f"dtmfguard: error: {src}: empty file\n"


# --------------------------------------------------------------------------- audit


@pytest.fixture
def recordings(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "recordings"
    (folder / "2024" / "june").mkdir(parents=True)
    leak, _ = sequence(TEST_PAN, on_ms=70.0, off_ms=80.0, lead_ms=1000.0)
    clean = synth.speech_like(1500.0, rng=3)
    paths = {
        "leak": wav(folder / "2024" / "june", "call-0001.WAV", leak),
        "clean": wav(folder, "call-0002.wav", clean),
    }
    (folder / "notes.txt").write_text("not a recording")
    bad = folder / "2024" / "broken.wav"
    bad.write_bytes(b"RIFF\x04\x00\x00\x00WAVE")
    paths["bad"] = bad
    paths["folder"] = folder
    return paths


def test_audit_clean_file_exits_0(recordings: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", str(recordings["clean"])]) == EXIT_CLEAN
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "dtmfguard: audit: 1 file: 1 clean\n"


def test_audit_leak_shows_where_not_what(recordings: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", str(recordings["leak"]), str(recordings["clean"])]) == EXIT_LEAK
    out, err = capsys.readouterr()
    header, row = out.splitlines()
    assert header.split() == ["path", "digits", "first_at_s", "at_s"]
    fields = row.split()
    assert fields[:3] == [str(recordings["leak"]), "16", "1.000"]
    assert len(fields[3:]) == 16
    assert [float(f) for f in fields[3:]] == pytest.approx([1.0 + 0.15 * i for i in range(16)], abs=0.002)
    assert TEST_PAN not in out
    assert TEST_PAN not in err
    assert "\r" not in err  # no progress bar when standard error is not a terminal
    assert err == "dtmfguard: audit: 2 files: 1 clean, 1 with DTMF digits\n"


def test_audit_show_digits(recordings: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "--show-digits", str(recordings["leak"])]) == EXIT_LEAK
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["path", "digits", "first_at_s", "keys", "at_s"]
    assert row.split()[3] == TEST_PAN


def test_audit_invalid_file_exits_2(recordings: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", str(recordings["bad"]), str(recordings["clean"])]) == EXIT_ERROR
    out, err = capsys.readouterr()
    assert out.splitlines()[1].split(None, 3) == [str(recordings["bad"]), "error", "-", "no fmt chunk"]
    assert err == "dtmfguard: audit: 2 files: 1 clean, 1 could not be checked\n"


def test_audit_missing_path_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", str(tmp_path / "gone")]) == EXIT_ERROR
    assert "no such file or folder" in capsys.readouterr().out


def test_audit_folder_recursive_leak_wins_over_error(
    recordings: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # A leak is the finding that matters most: exit 1 even though one file could not be checked.
    assert main(["audit", str(recordings["folder"])]) == EXIT_LEAK
    out, err = capsys.readouterr()
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[1:]}
    assert rows == {str(recordings["leak"]): "16", str(recordings["bad"]): "error"}
    assert err == "dtmfguard: audit: 3 files: 1 clean, 1 with DTMF digits, 1 could not be checked\n"


def test_audit_lists_each_file_once(recordings: dict[str, Path]) -> None:
    report = audit_paths([recordings["leak"], recordings["folder"], recordings["leak"]])
    assert len(report.files) == 3


def test_audit_empty_folder_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", str(tmp_path)]) == EXIT_CLEAN
    err = capsys.readouterr().err
    assert f"dtmfguard: warning: {tmp_path}: no .wav file in this folder\n" in err


def test_audit_truncated_file_is_checked_with_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x, _ = sequence("12", lead_ms=100.0, tail_ms=300.0)
    full = wav(tmp_path, "full.wav", x).read_bytes()
    path = tmp_path / "cut.wav"
    path.write_bytes(full[: len(full) - 1000])
    (tmp_path / "full.wav").unlink()
    assert main(["audit", str(path)]) == EXIT_LEAK
    assert "truncated file, checked the audio it holds" in capsys.readouterr().err


def test_audit_file_repr_hides_digits(recordings: dict[str, Path]) -> None:
    report = audit_paths([recordings["leak"]])
    assert TEST_PAN not in repr(report)
    assert "digits=16" in repr(report.files[0])


def test_audit_table_and_exit_code_rules() -> None:
    leak = FileAudit("a.wav", ((0.5, "1"), (0.75, "2")))
    bad = FileAudit("b.wav", error="no data chunk")
    clean = FileAudit("c.wav")
    assert AuditReport((clean,)).exit_code == EXIT_CLEAN
    assert AuditReport((clean, bad)).exit_code == EXIT_ERROR
    assert AuditReport((bad, leak)).exit_code == EXIT_LEAK
    assert format_audit_table(AuditReport((clean,))) == []
    assert format_audit_table(AuditReport((leak, clean, bad))) == [
        "path   digits  first_at_s  at_s",
        "a.wav       2       0.500  0.500 0.750",
        "b.wav   error           -  no data chunk",
    ]


def test_progress_bar_draws_only_on_a_terminal() -> None:
    quiet = io.StringIO()
    bar = ProgressBar(quiet)
    bar(0, 2, "x.wav")
    bar.close()
    assert quiet.getvalue() == ""
    shown = io.StringIO()
    bar = ProgressBar(shown, force=True, width=4)
    bar(1, 2, "x.wav")
    assert shown.getvalue().startswith("\raudit [##--] 1/2  x.wav")
    bar(2, 2, "")
    bar.close()
    assert shown.getvalue().endswith("\r")


# --------------------------------------------------------------------------- config, serve, help


def test_detector_config_reaches_the_detector(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A -30 dBm0 tone pair is a digit with the default floor (-36 dBm0), not with a -20 dBm0 floor.
    x, _ = sequence("3", level_low_dbm0=-30.0)
    path = wav(tmp_path, "quiet.wav", x)
    config = tmp_path / "strict.toml"
    config.write_text("[detector]\nmin_level_dbm0 = -20.0\n")
    assert main(["detect", str(path)]) == EXIT_CLEAN
    assert capsys.readouterr().out.startswith("3 ")
    assert main(["detect", "--config", str(config), str(path)]) == EXIT_CLEAN
    assert capsys.readouterr().out == ""
    assert main(["--config", str(config), "detect", str(path)]) == EXIT_CLEAN
    assert capsys.readouterr().out == ""


def test_detector_options_from_config() -> None:
    from dtmfguard.config import DetectorConfig

    options = DetectorOptions.from_config(
        DetectorConfig(min_level_dbm0=-30.0, max_reverse_twist_db=4.0, max_normal_twist_db=8.0, min_digit_ms=30.0)
    )
    t = options.thresholds
    assert (t.digit_min_level_dbm0, t.digit_max_reverse_twist_db, t.digit_max_normal_twist_db) == (-30.0, 4.0, 8.0)
    assert options.min_digit_ms == 30.0


def test_bad_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[detector]\nmin_level_dbm0 = 'loud'\nfoo = 1\n")
    assert main(["--config", str(config), "audit", str(tmp_path)]) == EXIT_ERROR
    assert capsys.readouterr().err == f"dtmfguard: error: {config}: unknown key 'detector.foo'\n"


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--config", str(tmp_path / "none.toml")]) == EXIT_ERROR
    assert capsys.readouterr().err.startswith(f"dtmfguard: error: {tmp_path / 'none.toml'}: cannot read")


def test_serve_runs_the_proxy_with_the_loaded_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The proxy itself is tested over real sockets in tests/integration/test_ng_server.py.
    import dtmfguard.app
    from dtmfguard.config import Config

    seen: list[object] = []

    def run(config: object) -> int:
        seen.append(config)
        return 0

    monkeypatch.setattr(dtmfguard.app, "run", run)
    config = tmp_path / "serve.toml"
    config.write_text('[control]\nng_listen = "127.0.0.1:0"\n')
    assert main(["serve", "--config", str(config)]) == 0
    (loaded,) = seen
    assert isinstance(loaded, Config)
    assert loaded.control.ng_listen == "127.0.0.1:0"


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"dtmfguard {__version__}\n"
    assert main(["--help"]) == 0
    help_text = capsys.readouterr().out
    for command in ("detect", "mask", "audit", "demo", "serve"):
        assert command in help_text


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == EXIT_ERROR
    assert main(["audit"]) == EXIT_ERROR
    assert main(["mask", "a.wav", "b.wav", "--mode", "loud"]) == EXIT_ERROR
    assert "invalid choice" in capsys.readouterr().err


def _chunks(x: FloatArray, n: int) -> Iterator[FloatArray]:
    for i in range(0, len(x), n):
        yield x[i : i + n]


def test_stream_digits_does_not_depend_on_chunking() -> None:
    x, _ = sequence()
    whole = list(stream_digits([x]))
    assert whole == list(stream_digits(_chunks(x, 37)))
    assert whole == list(stream_digits(_chunks(x, 160)))
