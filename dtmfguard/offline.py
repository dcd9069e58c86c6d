"""The offline tools behind ``dtmfguard detect``, ``mask`` and ``audit``, without any argument parsing.

Recordings come in as WAV files of any common rate and format (:func:`dtmfguard.wavio.read_wav`
turns them into float32 mono at 8 kHz) or as raw signed 16-bit little-endian mono 8 kHz
streams, which are read in chunks so that a long pipe is processed as it arrives. Detection
and masking run the same per-channel stages as a live call (:mod:`dtmfguard.pipeline`), with
the ``[detector]`` and ``[masking]`` configuration sections mapped onto them here. All times
are stream times: sample counts from the first sample at 8 kHz, shown in milliseconds or
seconds.

Auditing follows PCI DSS v4.0.1 requirement 3.3 and 3.4 in what it shows: a recording may
hold card digits, so an :class:`AuditReport` says *where* digits were found (how many, and
when) and gives the keys themselves only when a caller asks for them explicitly. A file that
cannot be read is an error, never "clean": it proves nothing.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, TextIO

import numpy as np
import numpy.typing as npt

from dtmfguard.config import Config, DetectorConfig
from dtmfguard.errors import AudioFormatError
from dtmfguard.kernels.features import Thresholds
from dtmfguard.levels import SAMPLE_RATE_HZ
from dtmfguard.pipeline.chain import mask_recording
from dtmfguard.pipeline.detect import ChannelDetector, DigitEnded, ToneEnded, samples_to_ms
from dtmfguard.pipeline.mask import MaskMode, MaskSettings
from dtmfguard.wavio import WavInfo, read_raw_s16le, read_wav, write_wav

__all__ = [
    "EXIT_CLEAN",
    "EXIT_ERROR",
    "EXIT_LEAK",
    "RAW_CHUNK_BYTES",
    "AuditReport",
    "DetectorOptions",
    "DigitReport",
    "FileAudit",
    "MaskSummary",
    "ProgressBar",
    "audit_file",
    "audit_paths",
    "collect_wav_paths",
    "detect_file",
    "format_audit_table",
    "looks_like_wav",
    "mask_file",
    "raw_chunks",
    "replace_mode",
    "stream_digits",
]

FloatArray = npt.NDArray[np.float32]

EXIT_CLEAN = 0
"""Exit status of ``audit`` when every file was read and none holds a digit."""
EXIT_LEAK = 1
"""Exit status of ``audit`` when any file holds a decodable digit (whatever else happened)."""
EXIT_ERROR = 2
"""Exit status of a usage or input error; of ``audit`` when a file could not be checked."""

RAW_CHUNK_BYTES = 8000
"""Most bytes taken from a raw stream per read: half a second of 8 kHz s16le audio."""

_RIFF_MAGIC = b"RIFF"
_WAVE_MAGIC = b"WAVE"


# --------------------------------------------------------------------------- detection


@dataclass(frozen=True)
class DetectorOptions:
    """The detector's settings from the ``[detector]`` config section."""

    thresholds: Thresholds
    min_digit_ms: float

    @classmethod
    def from_config(cls, detector: DetectorConfig) -> DetectorOptions:
        """Map ``[detector]`` onto the kernel's strict (digit) limits; the loose masking limits keep defaults."""
        thresholds = Thresholds(
            digit_min_level_dbm0=detector.min_level_dbm0,
            digit_max_reverse_twist_db=detector.max_reverse_twist_db,
            digit_max_normal_twist_db=detector.max_normal_twist_db,
        )
        return cls(thresholds, detector.min_digit_ms)

    @classmethod
    def defaults(cls) -> DetectorOptions:
        return cls.from_config(Config.defaults().detector)

    def channel_detector(self) -> ChannelDetector:
        """A fresh detector for one channel with these settings."""
        return ChannelDetector(self.thresholds, self.min_digit_ms)


@dataclass(frozen=True)
class DigitReport:
    """One detected digit on stream time, in milliseconds from the first sample.

    ``onset_ms`` is the estimated start of the tone, ``confirmed_ms`` the stream time at
    which the detector committed to the digit, ``duration_ms`` the estimated tone length.
    Every value is a whole number of 8 kHz samples, so exact to 0.125 ms.
    """

    key: str
    onset_ms: float
    confirmed_ms: float
    duration_ms: float

    @classmethod
    def from_event(cls, event: DigitEnded) -> DigitReport:
        return cls(
            event.key,
            samples_to_ms(event.onset_sample),
            samples_to_ms(event.confirmed_sample),
            samples_to_ms(event.duration_samples),
        )

    def text_line(self) -> str:
        """``DIGIT ONSET_MS CONFIRMED_MS DURATION_MS``, milliseconds with one decimal."""
        return f"{self.key} {self.onset_ms:.1f} {self.confirmed_ms:.1f} {self.duration_ms:.1f}"

    def json_object(self) -> dict[str, str | float]:
        """The JSON line's fields: ``digit``, ``onset_ms``, ``confirmed_ms``, ``duration_ms`` (exact)."""
        return {
            "digit": self.key,
            "onset_ms": self.onset_ms,
            "confirmed_ms": self.confirmed_ms,
            "duration_ms": self.duration_ms,
        }


def stream_digits(chunks: Iterable[FloatArray], options: DetectorOptions | None = None) -> Iterator[DigitReport]:
    """Run one detector over consecutive chunks of 8 kHz audio; yield each digit as soon as it ends.

    Chunks may have any length (also zero). The stream is flushed after the last chunk, so a
    tone still sounding at the end is reported too.
    """
    detector = (options or DetectorOptions.defaults()).channel_detector()
    for chunk in chunks:
        for event in detector.process(chunk):
            if isinstance(event, DigitEnded):
                yield DigitReport.from_event(event)
    for event in detector.flush():
        if isinstance(event, DigitEnded):
            yield DigitReport.from_event(event)


def looks_like_wav(head: bytes) -> bool:
    """True if ``head`` (the first 12 bytes of a stream) is a RIFF/WAVE header."""
    return len(head) >= 12 and head[:4] == _RIFF_MAGIC and head[8:12] == _WAVE_MAGIC


def raw_chunks(stream: BinaryIO, chunk_bytes: int = RAW_CHUNK_BYTES) -> Iterator[FloatArray]:
    """Read raw s16le mono 8 kHz audio from ``stream`` incrementally, as float32 chunks.

    Uses ``read1`` where the stream has it, so whatever a pipe holds is processed at once
    instead of waiting for a full chunk. A sample split across two reads is joined. Raises
    AudioFormatError if the stream starts with a WAV header (a WAV file is not raw audio:
    name the file instead) or ends with half a sample.
    """
    read = getattr(stream, "read1", None) or stream.read
    pending = b""
    checked_header = False
    total = 0
    while True:
        data = read(chunk_bytes)
        if not data:
            break
        data = pending + bytes(data)
        total += len(data) - len(pending)
        if not checked_header:
            if len(data) < 12:
                pending = data
                continue
            checked_header = True
            if looks_like_wav(data[:12]):
                raise AudioFormatError(
                    "standard input holds a WAV file, but '-' and --raw read raw s16le mono 8 kHz samples: "
                    "pass the WAV file's name instead"
                )
        whole = len(data) - len(data) % 2
        pending = data[whole:]
        if whole:
            yield read_raw_s16le(data[:whole])
    if pending:
        if len(pending) % 2:
            raise AudioFormatError(
                f"raw s16le input has an odd number of bytes ({total}): not 16-bit samples"
            )
        yield read_raw_s16le(pending)


def detect_file(
    path: str | os.PathLike[str], options: DetectorOptions | None = None
) -> tuple[list[DigitReport], WavInfo]:
    """Every digit in a WAV file, in order, with what :func:`read_wav` found.

    Raises AudioFormatError (naming the file) for a file that is empty, not a WAV or holds
    NaNs, and OSError if it cannot be opened. A truncated file is read up to its last whole
    frame (``info.truncated``).
    """
    samples, info = read_wav(path)
    return list(stream_digits([samples], options)), info


# --------------------------------------------------------------------------- masking


@dataclass(frozen=True)
class MaskSummary:
    """What :func:`mask_file` did: counts and durations, never the digits."""

    tones: int
    digits: int
    masked_samples: int
    total_samples: int
    mode: str
    info: WavInfo

    @property
    def masked_ms(self) -> float:
        return samples_to_ms(self.masked_samples)

    @property
    def duration_ms(self) -> float:
        return samples_to_ms(self.total_samples)

    def describe(self, out_path: str | os.PathLike[str]) -> str:
        """A one-line summary, e.g. ``wrote out.wav: 16 tones masked (flat-tone), 1660.0 ms of 16000.0 ms``."""
        plural = "" if self.tones == 1 else "s"
        text = (
            f"wrote {out_path}: {self.tones} tone{plural} masked ({self.mode}), "
            f"{self.masked_ms:.1f} ms of {self.duration_ms:.1f} ms replaced"
        )
        notes = []
        if self.info.resampled:
            notes.append(f"input was {self.info.source_rate_hz} Hz, output is {SAMPLE_RATE_HZ} Hz")
        if self.info.mixed_down:
            notes.append(f"{self.info.channels} channels mixed down to mono")
        if self.info.truncated:
            notes.append("input was truncated, masked what it holds")
        if notes:
            text += "; " + "; ".join(notes)
        return text


def mask_file(
    in_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    settings: MaskSettings | None = None,
    options: DetectorOptions | None = None,
) -> MaskSummary:
    """Write ``in_path`` with every keypad tone masked to ``out_path`` (16-bit PCM, mono, 8 kHz).

    The output has the same number of 8 kHz samples as the input and is time-aligned with it
    (the delay line's latency is taken out). Input of another rate or channel count is first
    converted to 8 kHz mono. Raises AudioFormatError for unusable input and OSError when a
    file cannot be read or written. ``settings.enabled`` is honoured: with masking off the
    output is the converted input, unchanged.
    """
    settings = settings or MaskSettings()
    options = options or DetectorOptions.defaults()
    samples, info = read_wav(in_path)
    result = mask_recording(samples, settings, thresholds=options.thresholds, min_digit_ms=options.min_digit_ms)
    write_wav(out_path, result.samples, SAMPLE_RATE_HZ)
    masked = 0 if not settings.enabled else int(np.count_nonzero(result.gain > 0))
    return MaskSummary(
        tones=sum(isinstance(e, ToneEnded) for e in result.events) if settings.enabled else 0,
        digits=sum(isinstance(e, DigitEnded) for e in result.events),
        masked_samples=masked,
        total_samples=len(result.samples),
        mode=settings.mode.value,
        info=info,
    )


# --------------------------------------------------------------------------- auditing


@dataclass(frozen=True)
class FileAudit:
    """The audit of one file: the digits found (``(onset_s, key)``), or why it could not be checked."""

    path: str
    hits: tuple[tuple[float, str], ...] = ()
    error: str | None = None
    truncated: bool = False

    @property
    def leaked(self) -> bool:
        return bool(self.hits)

    @property
    def first_at_s(self) -> float | None:
        return self.hits[0][0] if self.hits else None

    def __repr__(self) -> str:
        # Keys stay out of reprs (tracebacks, logs, test failure output).
        return f"FileAudit(path={self.path!r}, digits={len(self.hits)}, error={self.error!r})"


@dataclass(frozen=True)
class AuditReport:
    """The audit of a set of files, in the order they were found."""

    files: tuple[FileAudit, ...]
    warnings: tuple[str, ...] = ()

    @property
    def leaks(self) -> list[FileAudit]:
        return [f for f in self.files if f.leaked]

    @property
    def errors(self) -> list[FileAudit]:
        return [f for f in self.files if f.error is not None]

    @property
    def exit_code(self) -> int:
        """1 if any file holds a digit; else 2 if any file could not be checked; else 0."""
        if self.leaks:
            return EXIT_LEAK
        if self.errors:
            return EXIT_ERROR
        return EXIT_CLEAN

    def summary(self) -> str:
        """One line, e.g. ``3 files: 1 clean, 1 with DTMF digits, 1 could not be checked``."""
        n = len(self.files)
        if n == 0:
            return "no WAV file to check"
        leaks, errors = len(self.leaks), len(self.errors)
        parts = [f"{n - leaks - errors} clean"]
        if leaks:
            parts.append(f"{leaks} with DTMF digits")
        if errors:
            parts.append(f"{errors} could not be checked")
        return f"{n} file{'' if n == 1 else 's'}: " + ", ".join(parts)


def _strip_path(message: str, path: str) -> str:
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def audit_file(path: str | os.PathLike[str], options: DetectorOptions | None = None) -> FileAudit:
    """Audit one WAV file; a file that cannot be read gives a FileAudit with ``error`` set (never raises OSError)."""
    name = str(path)
    try:
        digits, info = detect_file(path, options)
    except AudioFormatError as exc:
        return FileAudit(name, error=_strip_path(str(exc), name))
    except OSError as exc:
        return FileAudit(name, error=f"cannot read: {exc.strerror or exc}")
    hits = tuple((d.onset_ms / 1000.0, d.key) for d in digits)
    return FileAudit(name, hits, truncated=info.truncated)


def collect_wav_paths(paths: Sequence[str | os.PathLike[str]]) -> tuple[list[str], list[FileAudit], list[str]]:
    """Expand files and folders into the files to audit.

    A folder contributes every ``*.wav`` file below it (any case, recursively, sorted, not
    following symbolic links to folders); a file named explicitly is audited whatever its
    name. Each file is listed once. Returns ``(files, problems, warnings)``: ``problems``
    are paths that do not exist (as FileAudit errors), ``warnings`` name folders without
    any WAV file.
    """
    files: list[str] = []
    problems: list[FileAudit] = []
    warnings: list[str] = []
    seen: set[str] = set()

    def add(path: str) -> None:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            files.append(path)

    for raw in paths:
        path = os.fspath(raw)
        if os.path.isdir(path):
            found: list[str] = []
            for folder, subfolders, names in os.walk(path):
                subfolders.sort()
                found.extend(os.path.join(folder, n) for n in names if n.lower().endswith(".wav"))
            found = sorted(f for f in found if os.path.isfile(f))
            if not found:
                warnings.append(f"{path}: no .wav file in this folder")
            for f in found:
                add(f)
        elif os.path.exists(path):
            add(path)
        else:
            problems.append(FileAudit(path, error="no such file or folder"))
    return files, problems, warnings


def audit_paths(
    paths: Sequence[str | os.PathLike[str]],
    options: DetectorOptions | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> AuditReport:
    """Audit every WAV file in ``paths`` (files and folders, see :func:`collect_wav_paths`).

    ``progress(done, total, path)`` is called before each file and once at the end
    (``done == total``, ``path`` empty).
    """
    files, problems, warnings = collect_wav_paths(paths)
    results: list[FileAudit] = list(problems)
    for index, path in enumerate(files):
        if progress is not None:
            progress(index, len(files), path)
        results.append(audit_file(path, options))
    if progress is not None:
        progress(len(files), len(files), "")
    warnings.extend(f"{f.path}: truncated file, checked the audio it holds" for f in results if f.truncated)
    return AuditReport(tuple(results), tuple(warnings))


def format_audit_table(report: AuditReport, *, show_digits: bool = False) -> list[str]:
    """The table of files with digits or errors (clean files are left out); empty if there are none.

    Columns: ``path``, ``digits`` (how many, or ``error``), ``first_at_s`` (onset of the first
    digit, seconds), then ``at_s`` (onset of every digit) or the error message. With
    ``show_digits`` a ``keys`` column shows the digits themselves: for tests, not for audits
    of real recordings.
    """
    rows: list[list[str]] = []
    for f in report.files:
        if f.error is not None:
            row = [f.path, "error", "-"]
            if show_digits:
                row.append("-")
            rows.append([*row, f.error])
        elif f.leaked:
            row = [f.path, str(len(f.hits)), f"{f.first_at_s:.3f}"]
            if show_digits:
                row.append("".join(key for _, key in f.hits))
            rows.append([*row, " ".join(f"{at:.3f}" for at, _ in f.hits)])
    if not rows:
        return []
    header = ["path", "digits", "first_at_s", *(["keys"] if show_digits else []), "at_s"]
    table = [header, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header) - 1)]
    numeric = {1, 2}
    lines = []
    for r in table:
        cells = [
            r[i].rjust(widths[i]) if i in numeric else r[i].ljust(widths[i]) for i in range(len(header) - 1)
        ]
        lines.append("  ".join([*cells, r[-1]]).rstrip())
    return lines


class ProgressBar:
    """A one-line progress bar for a terminal, redrawn in place with carriage returns.

    Draws nothing unless ``stream`` is a terminal (or ``force`` is set), so redirected output
    stays clean. Call it as ``bar(done, total, label)``; :meth:`close` erases the line.
    """

    def __init__(self, stream: TextIO, *, prefix: str = "audit", force: bool = False, width: int = 24) -> None:
        self.stream = stream
        self.prefix = prefix
        self.width = width
        isatty = getattr(stream, "isatty", None)
        self.enabled = force or bool(isatty and isatty())
        self._drawn = 0

    def __call__(self, done: int, total: int, label: str) -> None:
        if not self.enabled:
            return
        filled = self.width if total == 0 else math.floor(self.width * done / total)
        bar = "#" * filled + "-" * (self.width - filled)
        text = f"{self.prefix} [{bar}] {done}/{total}"
        columns = shutil.get_terminal_size((80, 24)).columns
        if label:
            room = columns - len(text) - 3
            if room > 8:
                text += "  " + (label if len(label) <= room else "..." + label[-(room - 3) :])
        text = text[: columns - 1]
        self.stream.write("\r" + text.ljust(self._drawn))
        self.stream.flush()
        self._drawn = len(text)

    def close(self) -> None:
        if self.enabled and self._drawn:
            self.stream.write("\r" + " " * self._drawn + "\r")
            self.stream.flush()
            self._drawn = 0


def replace_mode(settings: MaskSettings, mode: str | None) -> MaskSettings:
    """``settings`` with ``mode`` (a MaskMode value such as ``"silence"``) if given."""
    if mode is None:
        return settings
    return dataclasses.replace(settings, mode=MaskMode(mode))
