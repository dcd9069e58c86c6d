"""Tests of WAV/raw reading and WAV writing (dtmfguard.wavio); every file is made here in code."""

from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from scipy.io import wavfile

from dtmfguard import wavio
from dtmfguard.codecs import g711
from dtmfguard.errors import AudioFormatError

PCM, FLOAT, ALAW, MULAW, EXTENSIBLE = 1, 3, 6, 7, 0xFFFE
GUID_SUFFIX = bytes.fromhex("000000001000800000aa00389b71")
NAN_F32 = np.array([0.1, np.nan], dtype="<f4").tobytes()
INF_F64 = np.array([np.inf, 0.0], dtype="<f8").tobytes()


def fmt_chunk(tag: int, channels: int, rate_hz: int, sample_bytes: int, *, extensible: bool = False) -> bytes:
    block_align = channels * sample_bytes
    head = struct.pack(
        "<HHIIHH",
        EXTENSIBLE if extensible else tag,
        channels,
        rate_hz,
        rate_hz * block_align,
        block_align,
        8 * sample_bytes,
    )
    if extensible:
        body = head + struct.pack("<HHI", 22, 8 * sample_bytes, 0) + struct.pack("<H", tag) + GUID_SUFFIX
    else:
        body = head
    return b"fmt " + struct.pack("<I", len(body)) + body


def chunk(chunk_id: bytes, body: bytes, declared_size: int | None = None) -> bytes:
    size = len(body) if declared_size is None else declared_size
    return chunk_id + struct.pack("<I", size) + body + (b"\0" if len(body) % 2 else b"")


def riff(*chunks: bytes) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def sine(freq_hz: float, rate_hz: int, n: int, peak: float = 0.5) -> npt.NDArray[np.float64]:
    return peak * np.sin(2 * np.pi * freq_hz * np.arange(n) / rate_hz)


def encode(x: npt.NDArray[np.float64], encoding: str) -> bytes:
    if encoding == "pcm_u8":
        return np.clip(np.rint(x * 128 + 128), 0, 255).astype(np.uint8).tobytes()
    if encoding == "pcm_s16":
        return np.clip(np.rint(x * 32768), -32768, 32767).astype("<i2").tobytes()
    if encoding == "pcm_s24":
        v = np.clip(np.rint(x * 8388608), -8388608, 8388607).astype(np.int64) & 0xFFFFFF
        return np.stack([v & 0xFF, (v >> 8) & 0xFF, v >> 16], axis=-1).astype(np.uint8).tobytes()
    if encoding == "pcm_s32":
        return np.clip(np.rint(x * 2147483648), -2147483648, 2147483647).astype("<i4").tobytes()
    if encoding == "float32":
        return x.astype("<f4").tobytes()
    if encoding == "float64":
        return x.astype("<f8").tobytes()
    if encoding == "ulaw":
        return g711.ulaw_encode(x).tobytes()
    return g711.alaw_encode(x).tobytes()


ENCODINGS = {
    # encoding: (format tag, bytes per sample, tolerance against the float original)
    "pcm_u8": (PCM, 1, 1 / 128),
    "pcm_s16": (PCM, 2, 1 / 32768),
    "pcm_s24": (PCM, 3, 1e-6),
    "pcm_s32": (PCM, 4, 1e-8),
    "float32": (FLOAT, 4, 1e-7),
    "float64": (FLOAT, 8, 0.0),
    "ulaw": (MULAW, 1, 0.02),
    "alaw": (ALAW, 1, 0.02),
}


@pytest.mark.parametrize("encoding", list(ENCODINGS))
@pytest.mark.parametrize("extensible", [False, True])
def test_every_encoding_reads_back(tmp_path: Path, encoding: str, extensible: bool) -> None:
    tag, sample_bytes, tolerance = ENCODINGS[encoding]
    x = sine(1000, 8000, 800, 0.5) - 0.25 * sine(300, 8000, 800, 1.0)
    path = write(
        tmp_path,
        "a.wav",
        riff(fmt_chunk(tag, 1, 8000, sample_bytes, extensible=extensible), chunk(b"data", encode(x, encoding))),
    )
    samples, info = wavio.read_wav(path)
    assert samples.dtype == np.float32
    assert samples.shape == (800,)
    np.testing.assert_allclose(samples, x, atol=tolerance + 1e-7)
    assert info.encoding == encoding
    assert info.bits_per_sample == 8 * sample_bytes
    assert (info.source_rate_hz, info.channels, info.source_frames) == (8000, 1, 800)
    assert info.duration_ms == 100.0
    assert not (info.mixed_down)
    assert not (info.resampled)
    assert not (info.truncated)
    assert info.path == str(path)


@pytest.mark.parametrize(("dtype", "scale"), [(np.int16, 32768), (np.int32, 2**31), (np.uint8, None), (np.float32, 1)])
def test_files_written_by_scipy(tmp_path: Path, dtype: type, scale: int | None) -> None:
    x = sine(697, 8000, 400, 0.4)
    if scale is None:
        data = np.rint(x * 128 + 128).astype(np.uint8)
    elif dtype is np.float32:
        data = x.astype(np.float32)
    else:
        data = np.rint(x * scale).astype(dtype)
    wavfile.write(tmp_path / "s.wav", 8000, data)
    samples, _ = wavio.read_wav(tmp_path / "s.wav")
    np.testing.assert_allclose(samples, x, atol=1 / 128)


@pytest.mark.parametrize("rate_hz", [8000, 11025, 16000, 22050, 32000, 44100, 48000, 96000, 12345])
def test_any_rate_is_resampled_to_8k(tmp_path: Path, rate_hz: int) -> None:
    n = rate_hz  # one second
    path = write(
        tmp_path,
        "r.wav",
        riff(fmt_chunk(PCM, 1, rate_hz, 2), chunk(b"data", encode(sine(1000, rate_hz, n), "pcm_s16"))),
    )
    samples, info = wavio.read_wav(path)
    assert samples.size == 8000
    assert info.resampled == (rate_hz != 8000)
    assert info.source_rate_hz == rate_hz
    assert info.duration_ms == pytest.approx(1000.0)
    expected = sine(1000, 8000, 8000)
    # Away from the edges (filter start-up), the 1 kHz sine comes through at the same level and phase.
    np.testing.assert_allclose(samples[400:-400], expected[400:-400], atol=0.01)


def test_content_above_4khz_is_filtered_out(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "h.wav",
        riff(fmt_chunk(PCM, 1, 48000, 2), chunk(b"data", encode(sine(6000, 48000, 48000), "pcm_s16"))),
    )
    samples, _ = wavio.read_wav(path)
    assert np.sqrt(np.mean(samples[400:-400].astype(np.float64) ** 2)) < 0.005  # no alias at 2 kHz


def test_channels_are_averaged(tmp_path: Path) -> None:
    left = sine(1000, 8000, 800, 0.5)
    right = np.zeros(800)
    interleaved = np.column_stack([left, right]).reshape(-1)
    path = write(tmp_path, "st.wav", riff(fmt_chunk(PCM, 2, 8000, 2), chunk(b"data", encode(interleaved, "pcm_s16"))))
    samples, info = wavio.read_wav(path)
    assert info.mixed_down
    assert info.channels == 2
    assert info.source_frames == 800
    np.testing.assert_allclose(samples, left / 2, atol=1e-4)

    six = np.column_stack([left] * 3 + [-left] * 2 + [left]).reshape(-1)
    path = write(
        tmp_path, "six.wav", riff(fmt_chunk(FLOAT, 6, 8000, 4, extensible=True), chunk(b"data", encode(six, "float32")))
    )
    samples, info = wavio.read_wav(path)
    assert info.channels == 6
    np.testing.assert_allclose(samples, left * 2 / 6, atol=1e-6)


def test_other_chunks_and_odd_padding_are_skipped(tmp_path: Path) -> None:
    x = sine(941, 8000, 81)  # odd byte count in u8: the data chunk gets a pad byte
    content = riff(
        chunk(b"JUNK", b"abc"),  # odd size: padded
        fmt_chunk(PCM, 1, 8000, 1),
        chunk(b"LIST", b"INFOISFT\x05\x00\x00\x00test\x00\x00"),
        chunk(b"data", encode(x, "pcm_u8")),
        chunk(b"LIST", b"INFO"),
    )
    samples, info = wavio.read_wav(write(tmp_path, "c.wav", content))
    assert samples.size == 81
    assert not info.truncated


def test_truncated_data_chunk_reads_what_is_there(tmp_path: Path) -> None:
    x = sine(1209, 8000, 1000)
    whole = riff(fmt_chunk(PCM, 1, 8000, 2), chunk(b"data", encode(x, "pcm_s16")))
    cut = whole[: len(whole) - 1001]  # 500 frames and a half are gone
    samples, info = wavio.read_wav(write(tmp_path, "cut.wav", cut))
    assert info.truncated
    assert samples.size == 499
    np.testing.assert_allclose(samples, x[:499], atol=1 / 32768)


def test_unfinished_header_sizes(tmp_path: Path) -> None:
    x = sine(770, 8000, 300)
    for declared, truncated in ((0, True), (0xFFFFFFFF, False)):
        content = riff(fmt_chunk(PCM, 1, 8000, 2), chunk(b"data", encode(x, "pcm_s16"), declared_size=declared))
        samples, info = wavio.read_wav(write(tmp_path, "u.wav", content))
        assert samples.size == 300
        assert info.truncated == truncated


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"hello, this is not audio at all", "not a WAV file"),
        (b"RIFF\x00\x00\x00\x00AVI LIST", "not a WAV file"),
        (b"RIFF", "not a WAV file"),
        (b"RIFX\x00\x00\x00\x00WAVE", "RIFX"),
        (riff(), "no fmt chunk"),
        (riff(fmt_chunk(PCM, 1, 8000, 2)), "no data chunk"),
        (riff(chunk(b"data", b"\0\0"), fmt_chunk(PCM, 1, 8000, 2)), "data chunk before fmt"),
        (riff(fmt_chunk(PCM, 1, 8000, 2), chunk(b"data", b"")), "no audio samples"),
        (riff(fmt_chunk(PCM, 2, 8000, 2), chunk(b"data", b"\0\0")), "no audio samples"),
        (riff(fmt_chunk(0x0011, 1, 8000, 1), chunk(b"data", b"\0\0")), "unsupported WAV encoding"),
        (riff(fmt_chunk(0x0055, 1, 8000, 1), chunk(b"data", b"\0\0")), "format tag 0x0055"),
        (riff(fmt_chunk(FLOAT, 1, 8000, 2), chunk(b"data", b"\0\0")), "unsupported sample size"),
        (riff(fmt_chunk(MULAW, 1, 8000, 2), chunk(b"data", b"\0\0")), "unsupported sample size"),
        (riff(fmt_chunk(PCM, 0, 8000, 2), chunk(b"data", b"\0\0")), "0 channels"),
        (riff(fmt_chunk(PCM, 1, 0, 2), chunk(b"data", b"\0\0")), "sample rate 0"),
        (riff(chunk(b"fmt ", b"\x01\x00\x01\x00")), "fmt chunk too short"),
        (riff(fmt_chunk(PCM, 1, 8000, 2))[:30], "fmt chunk too short"),  # file cut inside the header
        (riff(fmt_chunk(PCM, 1, 8000, 2, extensible=True)[:-14] + b"\x11" * 14), "sub-format"),
        (
            riff(fmt_chunk(FLOAT, 1, 8000, 4), chunk(b"data", NAN_F32)),
            "NaN or infinite",
        ),
        (
            riff(fmt_chunk(FLOAT, 1, 8000, 8), chunk(b"data", INF_F64)),
            "NaN or infinite",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else "file",
)
def test_bad_files_raise_naming_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    path = write(tmp_path, "bad-file.wav", content)
    with pytest.raises(AudioFormatError, match=message) as caught:
        wavio.read_wav(path)
    assert str(path) in str(caught.value)


def test_missing_file_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        wavio.read_wav(tmp_path / "nope.wav")


def test_raw_s16le() -> None:
    ints = np.array([0, 1, -1, 32767, -32768], dtype="<i2")
    for source in (ints.tobytes(), bytearray(ints.tobytes()), memoryview(ints.tobytes()), io.BytesIO(ints.tobytes())):
        samples = wavio.read_raw_s16le(source)
        assert samples.dtype == np.float32
        np.testing.assert_array_equal(samples, ints / 32768.0)
    assert wavio.read_raw_s16le(b"").size == 0
    with pytest.raises(AudioFormatError, match="odd number of bytes"):
        wavio.read_raw_s16le(b"\x00\x01\x02")
    with pytest.raises(AudioFormatError, match="odd number of bytes"):
        wavio.read_raw_s16le(io.BytesIO(b"\x00"))


def test_write_wav_roundtrip_and_clipping(tmp_path: Path) -> None:
    x = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 2.0, -2.0, 1 / 32768], dtype=np.float32)
    wavio.write_wav(tmp_path / "w.wav", x)
    rate, data = wavfile.read(tmp_path / "w.wav")
    assert rate == 8000
    assert data.dtype == np.int16
    np.testing.assert_array_equal(data, [0, 16384, -16384, 32767, -32768, 32767, -32768, 1])
    samples, info = wavio.read_wav(tmp_path / "w.wav")
    assert info.encoding == "pcm_s16"
    np.testing.assert_array_equal(samples, data / 32768.0)


def test_write_wav_at_another_rate(tmp_path: Path) -> None:
    wavio.write_wav(tmp_path / "w16.wav", sine(1000, 16000, 1600), rate=16000)
    rate, data = wavfile.read(tmp_path / "w16.wav")
    assert rate == 16000
    assert data.size == 1600


def test_write_wav_stereo(tmp_path: Path) -> None:
    left = sine(697, 8000, 400)
    right = sine(1633, 8000, 400, 0.25)
    wavio.write_wav_stereo(tmp_path / "st.wav", left, right)
    rate, data = wavfile.read(tmp_path / "st.wav")
    assert rate == 8000
    assert data.shape == (400, 2)
    np.testing.assert_allclose(data[:, 0] / 32768, left, atol=1 / 32768)
    np.testing.assert_allclose(data[:, 1] / 32768, right, atol=1 / 32768)
    with pytest.raises(AudioFormatError, match="differ in length"):
        wavio.write_wav_stereo(tmp_path / "bad.wav", left, right[:-1])


def test_write_rejects_non_finite(tmp_path: Path) -> None:
    with pytest.raises(AudioFormatError, match="NaN"):
        wavio.write_wav(tmp_path / "n.wav", [0.0, float("nan")])


def test_resample_to_8k_passthrough_and_errors() -> None:
    x = np.arange(10, dtype=np.float64)
    out = wavio.resample_to_8k(x, 8000)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, x)
    assert wavio.resample_to_8k(np.zeros(0), 44100).size == 0
    with pytest.raises(ValueError):
        wavio.resample_to_8k(x, 0)


def test_scipy_agrees_on_a_24_bit_file(tmp_path: Path) -> None:
    x = sine(852, 8000, 256, 0.7)
    path = write(tmp_path, "s24.wav", riff(fmt_chunk(PCM, 1, 8000, 3), chunk(b"data", encode(x, "pcm_s24"))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, reference = wavfile.read(path)
    ours, _ = wavio.read_wav(path)
    # scipy returns 24-bit samples left-justified in int32.
    np.testing.assert_allclose(ours, reference / 2**31, atol=1e-7)


# --------------------------------------------------------------------------- the speech corpus
# dtmfguard.corpus is a thin layer over read_wav (listing and loading folders of WAV files).


def make_corpus(root: Path) -> None:
    (root / "digits").mkdir(parents=True)
    (root / "silence").mkdir()
    for relative in ("zeta.wav", "alpha.WAV", "digits/1.wav", "beep.wav", "silence/1.wav"):
        wavio.write_wav(root / relative, sine(300, 8000, 160, 0.1))
    (root / "notes.txt").write_text("not audio")
    (root / "folder.wav").mkdir()  # a directory with a .wav name is not a file


def test_speech_files_lists_sorted_wavs_minus_exclusions(tmp_path: Path) -> None:
    from dtmfguard import corpus

    make_corpus(tmp_path)
    files = corpus.speech_files(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in files] == ["alpha.WAV", "digits/1.wav", "zeta.wav"]
    loaded = list(corpus.load_speech_corpus(tmp_path))
    assert [path for path, _ in loaded] == files
    assert all(samples.dtype == np.float32 and samples.size == 160 for _, samples in loaded)
    assert corpus.speech_corpus_available(tmp_path)


def test_speech_root_comes_from_argument_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dtmfguard import corpus

    make_corpus(tmp_path / "env")
    monkeypatch.setenv(corpus.SPEECH_DIR_ENV, str(tmp_path / "env"))
    assert corpus.speech_root() == tmp_path / "env"
    assert len(corpus.speech_files()) == 3
    assert corpus.speech_root(tmp_path / "other") == tmp_path / "other"
    monkeypatch.delenv(corpus.SPEECH_DIR_ENV)
    assert corpus.speech_root() == corpus.DEFAULT_SPEECH_DIR


def test_missing_or_empty_corpus(tmp_path: Path) -> None:
    from dtmfguard import corpus

    with pytest.raises(FileNotFoundError, match=corpus.SPEECH_DIR_ENV):
        corpus.speech_files(tmp_path / "absent")
    assert not corpus.speech_corpus_available(tmp_path / "absent")
    assert not corpus.speech_corpus_available(tmp_path)  # exists, no WAV


def test_installed_corpus_matches_its_exclusions() -> None:
    from dtmfguard import corpus

    if not corpus.speech_corpus_available(corpus.DEFAULT_SPEECH_DIR):
        pytest.skip("asterisk-core-sounds-en-wav is not installed")
    root = corpus.DEFAULT_SPEECH_DIR
    for relative in corpus.EXCLUDE:
        assert (root / relative).is_file(), relative  # the list names real files of this set
    files = corpus.speech_files(root)
    assert len(files) > 500
    # The beep really is a lone tone: almost all its power within a few Hz of 699 Hz.
    beep, _ = wavio.read_wav(root / "beep.wav")
    spectrum = np.abs(np.fft.rfft(beep.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(beep.size, 1 / 8000)
    assert spectrum[np.abs(freqs - 699) < 30].sum() / spectrum.sum() > 0.98
