"""Independent DTMF decoders for tests: proof that masked audio leaks no digit.

Two decoders that share no code with dtmfguard: multimon-ng's DTMF demodulator (run as a
subprocess, fed raw signed 16-bit samples at its native 22050 Hz on stdin) and spandsp's
``dtmf_rx`` (ITU-T Q.24 oriented, called through ctypes on libspandsp.so.2, fed 20 ms chunks
of 160 samples as a media path would). Both take float audio at 8000 Hz on the +/-1.0 scale
and return the digits they heard, in order. Either raises :class:`DecoderUnavailable` when its
tool or library is missing, so a leak test can never pass by not running.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import shutil
import subprocess
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from scipy import signal as sps

__all__ = [
    "DECODERS",
    "DecoderUnavailable",
    "all_digits",
    "multimon_digits",
    "spandsp_digits",
]

MULTIMON_RATE_HZ = 22050  # the rate multimon-ng's demodulators run at
SPANDSP_CHUNK_SAMPLES = 160  # one 20 ms packet at 8 kHz
_TAIL_SAMPLES = 320  # 40 ms of silence appended so a digit at the very end is reported


class DecoderUnavailable(RuntimeError):
    """A reference decoder's program or library is not installed (or failed to run)."""


def _to_int16(samples_8k: npt.ArrayLike) -> npt.NDArray[np.int16]:
    x = np.asarray(samples_8k, dtype=np.float64).reshape(-1)
    x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
    x = np.concatenate([x, np.zeros(_TAIL_SAMPLES)])
    return np.clip(np.rint(x * 32768.0), -32768, 32767).astype(np.int16)


# --------------------------------------------------------------------------- multimon-ng


def multimon_digits(samples_8k: npt.ArrayLike, *, timeout_s: float = 120.0) -> str:
    """Digits that multimon-ng's DTMF demodulator hears in 8 kHz float audio.

    Runs ``multimon-ng -q -c -a DTMF -t raw -`` on int16 samples resampled to 22050 Hz
    (polyphase, 160 -> 441), and collects its ``DTMF: <digit>`` lines. multimon-ng has no
    level threshold (it hears tones at -80 dBm0) but little twist tolerance (about 5 dB), and
    no harmonic check, so it can hear digits in music. Raises DecoderUnavailable if
    multimon-ng is not on PATH or exits with an error.
    """
    program = shutil.which("multimon-ng")
    if program is None:
        raise DecoderUnavailable("multimon-ng is not installed (Debian package multimon-ng)")
    pcm_8k = _to_int16(samples_8k).astype(np.float64)
    pcm_22k = sps.resample_poly(pcm_8k, 441, 160)
    payload = np.clip(np.rint(pcm_22k), -32768, 32767).astype("<i2").tobytes()
    result = subprocess.run(
        [program, "-q", "-c", "-a", "DTMF", "-t", "raw", "-"],
        input=payload,
        capture_output=True,
        timeout=timeout_s,
        check=False,
    )
    if result.returncode != 0:
        raise DecoderUnavailable(
            f"multimon-ng exited with status {result.returncode}: {result.stderr.decode(errors='replace')[:300]}"
        )
    digits = []
    for line in result.stdout.decode(errors="replace").splitlines():
        if line.startswith("DTMF:"):
            digits.append(line.split(":", 1)[1].strip())
    return "".join(digits)


# --------------------------------------------------------------------------- spandsp

_DIGITS_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(ctypes.c_char), ctypes.c_int)
_spandsp: ctypes.CDLL | None = None


def _load_spandsp() -> ctypes.CDLL:
    global _spandsp
    if _spandsp is not None:
        return _spandsp
    names = ["libspandsp.so.2"]
    found = ctypes.util.find_library("spandsp")
    if found:
        names.append(found)
    errors = []
    for name in names:
        try:
            library = ctypes.CDLL(name)
        except OSError as error:
            errors.append(str(error))
            continue
        library.dtmf_rx_init.restype = ctypes.c_void_p
        library.dtmf_rx_init.argtypes = [ctypes.c_void_p, _DIGITS_CALLBACK, ctypes.c_void_p]
        library.dtmf_rx_parms.restype = None
        library.dtmf_rx_parms.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int]
        library.dtmf_rx.restype = ctypes.c_int
        library.dtmf_rx.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int16), ctypes.c_int]
        library.dtmf_rx_free.restype = ctypes.c_int
        library.dtmf_rx_free.argtypes = [ctypes.c_void_p]
        _spandsp = library
        return library
    raise DecoderUnavailable(f"libspandsp.so.2 cannot be loaded (Debian package libspandsp2): {'; '.join(errors)}")


def spandsp_digits(
    samples_8k: npt.ArrayLike,
    *,
    filter_dialtone: bool = False,
    twist_db: int | None = None,
    reverse_twist_db: int | None = None,
    threshold_dbm0: int | None = None,
) -> str:
    """Digits that spandsp's ``dtmf_rx`` hears in 8 kHz float audio, fed in 160-sample chunks.

    ``filter_dialtone`` enables spandsp's dial-tone notch; ``twist_db`` (high group weaker
    than low), ``reverse_twist_db`` (high group stronger) and ``threshold_dbm0`` (minimum
    tone level) go to ``dtmf_rx_parms``; None keeps spandsp's default. The defaults are
    narrower than Q.24: a high group more than about 7 dB weaker or 3 dB stronger than the
    low group, or tones below about -42 dBm0, are refused, and a 10 ms break inside a tone
    may be reported as two digits. Raises DecoderUnavailable if libspandsp.so.2 cannot be
    loaded or the receiver cannot be created.
    """
    library = _load_spandsp()
    heard: list[bytes] = []

    def on_digits(_user_data: int | None, digits: ctypes._Pointer[ctypes.c_char], length: int) -> None:
        if length > 0:
            heard.append(ctypes.string_at(digits, length))

    callback = _DIGITS_CALLBACK(on_digits)  # referenced until the receiver is freed
    state = library.dtmf_rx_init(None, callback, None)
    if not state:
        raise DecoderUnavailable("spandsp dtmf_rx_init returned NULL")
    try:
        library.dtmf_rx_parms(
            state,
            1 if filter_dialtone else 0,
            -1 if twist_db is None else twist_db,
            -1 if reverse_twist_db is None else reverse_twist_db,
            -99 if threshold_dbm0 is None else threshold_dbm0,
        )
        pcm = np.ascontiguousarray(_to_int16(samples_8k))
        for start in range(0, pcm.size, SPANDSP_CHUNK_SAMPLES):
            chunk = pcm[start : start + SPANDSP_CHUNK_SAMPLES]
            library.dtmf_rx(state, chunk.ctypes.data_as(ctypes.POINTER(ctypes.c_int16)), chunk.size)
    finally:
        library.dtmf_rx_free(state)
    return b"".join(heard).decode("ascii", errors="replace")


# --------------------------------------------------------------------------- both

DECODERS: dict[str, Callable[[npt.ArrayLike], str]] = {
    "multimon-ng": multimon_digits,
    "spandsp": spandsp_digits,
}


def all_digits(samples_8k: npt.ArrayLike) -> dict[str, str]:
    """Digits each reference decoder hears: ``{"multimon-ng": ..., "spandsp": ...}``."""
    return {name: decode(samples_8k) for name, decode in DECODERS.items()}
