"""The recorded-speech corpus used for talk-off testing (false digits in real speech).

Talk-off, a DTMF receiver reporting digits that nobody keyed, is measured on real recorded
speech. The corpus here is the set of Asterisk core prompts (Debian package asterisk-core-sounds-en-wav:
one professional female talker, about 25 minutes of 8 kHz 16-bit mono WAV in several
folders). The root is ``/usr/share/asterisk/sounds/en_US_f_Allison`` unless the environment
variable ``DTMFGUARD_SPEECH_DIR`` or an explicit argument says otherwise; any folder of WAV
files works, and Asterisk sound sets of other voices share the file names, so :data:`EXCLUDE`
applies to them too. Files that hold tones or silence rather than speech are left out.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from dtmfguard.wavio import read_wav

__all__ = [
    "DEFAULT_SPEECH_DIR",
    "EXCLUDE",
    "SPEECH_DIR_ENV",
    "load_speech_corpus",
    "speech_corpus_available",
    "speech_files",
    "speech_root",
]

DEFAULT_SPEECH_DIR = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
SPEECH_DIR_ENV = "DTMFGUARD_SPEECH_DIR"

# Files (paths relative to the root, "/"-separated) that are not speech, and why. Found by
# name and by looking at the spectrum of every file in the set: each listed file is made of
# steady sines; no file in the set decodes to a digit with multimon-ng or spandsp.
EXCLUDE: Mapping[str, str] = MappingProxyType(
    {
        "beep.wav": "a 425 ms sine at 699 Hz, on top of the 697 Hz DTMF row: a tone, not speech",
        "beeperr.wav": "an error beep: 340 Hz with its 680 Hz harmonic, 360 ms",
        "ascending-2tone.wav": "two 100 ms sines, 440 Hz then 880 Hz",
        "descending-2tone.wav": "two 100 ms sines, 880 Hz then 440 Hz",
        "confbridge-join.wav": "a synthetic chime (sines near 262 and 330 Hz), not speech",
        "confbridge-leave.wav": "a synthetic chime (sines near 523 and 440 Hz), not speech",
        **{f"silence/{seconds}.wav": "digital silence (all samples zero)" for seconds in range(1, 11)},
    }
)


def speech_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The corpus folder: ``root`` if given, else ``$DTMFGUARD_SPEECH_DIR``, else the Asterisk default."""
    if root is not None:
        return Path(root)
    from_env = os.environ.get(SPEECH_DIR_ENV)
    return Path(from_env) if from_env else DEFAULT_SPEECH_DIR


def speech_files(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Every ``.wav`` file under the corpus folder (recursively), minus :data:`EXCLUDE`, sorted.

    Sorted by path relative to the root, so the order is the same on every machine. Raises
    FileNotFoundError if the folder does not exist.
    """
    base = speech_root(root)
    if not base.is_dir():
        raise FileNotFoundError(
            f"speech corpus folder {base} not found (install asterisk-core-sounds-en-wav or set {SPEECH_DIR_ENV})"
        )
    found = []
    for path in base.rglob("*"):
        relative = path.relative_to(base).as_posix()
        if path.suffix.lower() == ".wav" and path.is_file() and relative not in EXCLUDE:
            found.append((relative, path))
    return [path for _, path in sorted(found)]


def load_speech_corpus(
    root: str | os.PathLike[str] | None = None,
) -> Iterator[tuple[Path, npt.NDArray[np.float32]]]:
    """Yield ``(path, samples)`` for each of :func:`speech_files`, lazily, in order.

    Samples are float32 mono at 8000 Hz as :func:`dtmfguard.wavio.read_wav` returns them.
    Raises FileNotFoundError as :func:`speech_files` does, and AudioFormatError for a file
    that cannot be read.
    """
    for path in speech_files(root):
        samples, _info = read_wav(path)
        yield path, samples


def speech_corpus_available(root: str | os.PathLike[str] | None = None) -> bool:
    """True if the corpus folder exists and holds at least one speech WAV file."""
    try:
        return bool(speech_files(root))
    except FileNotFoundError:
        return False
