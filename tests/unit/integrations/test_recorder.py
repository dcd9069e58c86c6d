"""Recorder: stereo WAV of what the agent heard and said, sidecar without digits, bounded queue."""

from __future__ import annotations

import json
import threading
import time
import wave
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from dtmfguard import synth
from dtmfguard.codecs.g711 import ulaw_encode
from dtmfguard.control.media import CallMedia, LegEndpoint
from dtmfguard.integrations.recorder import CallRecording, Recorder
from dtmfguard.pipeline.chain import CallerChain
from dtmfguard.pipeline.frames import AudioFrame, MaskedFrame
from dtmfguard.pipeline.mask import MaskSettings
from dtmfguard.protocol.rtp import RtpPacket
from tests.support.decoders import multimon_digits, spandsp_digits

TEST_PAN = "4111111111111111"
CALLER = ("192.0.2.10", 40000)
AGENT = ("198.51.100.20", 50000)
NAMES = {0: "PCMU", 101: "telephone-event"}
FRAME = 160
START = datetime(2026, 3, 1, 12, 30, 5, tzinfo=UTC)


def read_stereo(path: Path) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    with wave.open(str(path), "rb") as wav:
        assert wav.getnchannels() == 2
        assert wav.getsampwidth() == 2
        assert wav.getframerate() == 8000
        data = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").reshape(-1, 2)
    x = data.astype(np.float32) / 32768.0
    return x[:, 0], x[:, 1]


def masked_frames(x: npt.NDArray[np.float32]) -> list[MaskedFrame]:
    chain = CallerChain(MaskSettings())
    return [chain.process(x[i : i + FRAME])[0] for i in range(0, len(x) - FRAME + 1, FRAME)]


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[Recorder]:
    rec = Recorder(tmp_path / "rec")
    yield rec
    rec.close()


def test_a_masked_call_is_recorded_in_stereo_with_a_sidecar(recorder: Recorder) -> None:
    tones, _ = synth.dtmf_sequence(TEST_PAN, on_ms=70, off_ms=70, lead_ms=107, rng=7)
    tones = np.concatenate([tones, np.zeros((-len(tones)) % FRAME, np.float32)])
    voice = synth.speech_like(len(tones) / 8.0, rng=1)
    media = CallMedia("rec-call@example", masking=MaskSettings())
    media.set_endpoint("offer", LegEndpoint(*CALLER, CALLER[1] + 1, NAMES, 101))
    media.set_endpoint("answer", LegEndpoint(*AGENT, AGENT[1] + 1, NAMES, 101))
    recording = recorder.open_call("rec-call@example", started_at=START)
    media.attach_recorder(recording)
    sent_to_agent = []
    for i in range(len(tones) // FRAME):
        part = slice(i * FRAME, (i + 1) * FRAME)
        now = 10.0 + 0.02 * i
        out = media.on_rtp("offer", RtpPacket(0, i, FRAME * i, 1, ulaw_encode(tones[part]).tobytes()).serialize(),
                           CALLER, now)
        sent_to_agent += [RtpPacket.parse(d).payload for _, d, _ in out]
        media.on_rtp("answer", RtpPacket(0, 500 + i, FRAME * i, 2, ulaw_encode(voice[part]).tobytes())
                     .serialize(), AGENT, now)
    media.close()
    recorder.close()

    assert recording.wav_path.name == "20260301T123005Z_rec-call_example.wav"
    left, right = read_stereo(recording.wav_path)
    assert multimon_digits(left) == ""
    assert spandsp_digits(left) == ""
    # Left is exactly what the agent was sent (G.711 aside), right what the agent said.
    heard = np.concatenate([np.frombuffer(p, np.uint8) for p in sent_to_agent])
    np.testing.assert_array_equal(ulaw_encode(left[: len(heard)]), heard)
    np.testing.assert_allclose(right[: len(voice)], voice, atol=0.02)

    sidecar = json.loads(recording.json_path.read_text())
    assert sidecar["call_id"] == "rec-call@example"
    assert sidecar["start"] == "2026-03-01T12:30:05Z"
    assert sidecar["digits"] == 16
    assert sidecar["masked_tones"] == 16
    assert len(sidecar["masked_intervals_ms"]) == 16
    assert sidecar["dropped_frames"] == 0
    assert sidecar["complete"] is True
    first_start, first_end = sidecar["masked_intervals_ms"][0]
    assert 100 <= first_start <= 107 + 20 < first_end  # the first tone, as the agent got it (one packet late)
    assert "1111" not in recording.json_path.read_text()


def test_positions_place_frames_on_the_call_timeline(recorder: Recorder) -> None:
    recording = recorder.open_call("timeline", started_at=START)
    x = (0.1 * np.ones(4 * FRAME)).astype(np.float32)
    frames = masked_frames(x)
    recording.write_caller(frames[1], 800)  # the delay line's second frame: real audio
    recording.write_agent(ulaw_encode(np.full(FRAME, 0.2, np.float32)).tobytes(), "PCMU", 400)
    recording.close({"digits": 0})
    recorder.close()
    left, right = read_stereo(recording.wav_path)
    assert len(left) == 800 + FRAME
    assert not left[:800].any()
    np.testing.assert_allclose(left[800:], 0.1, atol=1e-3)
    assert not right[:400].any()
    np.testing.assert_allclose(right[400:560], 0.2, atol=0.01)
    assert not right[560:].any()


def test_the_caller_channel_takes_masked_frames_only(recorder: Recorder) -> None:
    recording = recorder.open_call("types")
    raw = np.zeros(FRAME, np.float32)
    with pytest.raises(TypeError, match="MaskedFrame only"):
        recording.write_caller(AudioFrame(raw, 0), 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="MaskedFrame only"):
        recording.write_caller(raw, 0)  # type: ignore[arg-type]
    recording.close({})


def test_a_slow_disk_drops_batches_instead_of_blocking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder(tmp_path, max_pending_batches=2, batch_frames=4)
    gate = threading.Event()
    original = CallRecording._write

    def slow_write(self: CallRecording, items: list) -> None:
        gate.wait(5.0)
        original(self, items)

    monkeypatch.setattr(CallRecording, "_write", slow_write)
    recording = recorder.open_call("slow", started_at=START)
    frames = masked_frames(np.zeros(60 * FRAME, np.float32))
    t0 = time.perf_counter()
    for i, frame in enumerate(frames):
        recording.write_caller(frame, i * FRAME)
    elapsed = time.perf_counter() - t0
    assert elapsed < 0.5, "writes never wait for the disk"
    assert recording.dropped_frames > 0
    assert recorder.dropped_batches > 0
    recording.close({"digits": 0})
    gate.set()
    recorder.close()
    sidecar = json.loads(recording.json_path.read_text())
    assert sidecar["dropped_frames"] == recording.dropped_frames
    left, _ = read_stereo(recording.wav_path)
    assert len(left) == len(frames) * FRAME, "dropped frames are silence; the timeline holds"


def test_close_of_the_recorder_finishes_open_recordings(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path)
    recording = recorder.open_call("left-open", started_at=START)
    recording.write_agent(b"\xff" * FRAME, "PCMU", 0)
    recording._flush()
    recorder.close()
    sidecar = json.loads(recording.json_path.read_text())
    assert sidecar["complete"] is False
    assert read_stereo(recording.wav_path)[1].shape == (FRAME,)


def test_file_names_are_safe_and_unique(recorder: Recorder) -> None:
    first = recorder.open_call("../../etc/passwd", started_at=START)
    second = recorder.open_call("../../etc/passwd", started_at=START)
    first.close({})
    second.close({})
    recorder.close()
    assert first.wav_path.parent == recorder.directory
    assert first.wav_path.name == "20260301T123005Z_etc_passwd.wav"
    assert second.wav_path.name == "20260301T123005Z_etc_passwd-1.wav"
    assert second.json_path.name == "20260301T123005Z_etc_passwd-1.json"
