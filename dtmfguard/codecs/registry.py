"""RTP payload types dtmfguard understands (RFC 3551 section 6, RFC 4733 section 2.3).

The media path decodes, masks and re-encodes only G.711: PCMU (static payload type 0)
and PCMA (static 8), both 8 kHz, one byte per sample. ``telephone-event`` (RFC 4733)
has a dynamic payload type that the SDP names. Everything else is "other": relayed
untouched while masking is off and muted toward the agent while it is on.
:class:`PayloadTypes` answers, per payload type of one peer's SDP, which of these it
is and which codec decodes it; static G.711 numbers are known even when the SDP
leaves out their ``a=rtpmap`` (RFC 8866 allows that).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dtmfguard.codecs.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

__all__ = [
    "CODECS",
    "PCMA",
    "PCMU",
    "STATIC_PAYLOAD_TYPES",
    "TELEPHONE_EVENT",
    "AudioCodec",
    "PayloadKind",
    "PayloadTypes",
]

TELEPHONE_EVENT = "telephone-event"


def _table_encoder(
    encode: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.uint8]],
) -> Callable[[npt.NDArray[np.float32]], npt.NDArray[np.uint8]]:
    """A per-packet fast path of a G.711 encoder, bit-exact with ``encode`` on finite audio.

    ``encode`` converts through float64 with a general NaN/inf clean-up, which costs
    more than the rest of a 160-sample packet's path; scaling by 2**15 is exact in
    float32, so clipping and rounding there gives the same int16 (NaN becomes 0).
    """
    table = encode(np.arange(-32768, 32768, dtype=np.float32) / np.float32(32768.0))
    table.flags.writeable = False

    def fast(samples: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
        x = np.multiply(samples, np.float32(32768.0), dtype=np.float32)
        x[np.isnan(x)] = 0.0
        np.minimum(x, 32767.0, out=x)  # two ufuncs cost less than np.clip on short arrays
        np.maximum(x, -32768.0, out=x)
        np.rint(x, out=x)
        index = x.astype(np.int32)
        index += 32768
        return table[index]

    return fast


@dataclass(frozen=True, eq=False)
class AudioCodec:
    """A codec the media path can decode and encode: float32 samples <-> payload bytes."""

    name: str
    clock_rate_hz: int
    _decode: Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.float32]]
    _encode: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.uint8]]
    silence_code: int

    def decode(self, payload: bytes) -> npt.NDArray[np.float32]:
        """One float32 sample (full scale +/-1.0) per payload byte."""
        return self._decode(np.frombuffer(payload, np.uint8))

    def encode(self, samples: npt.NDArray[np.float32]) -> bytes:
        """One payload byte per sample."""
        return self._encode(samples).tobytes()

    def silence(self, n_samples: int) -> bytes:
        """The payload of ``n_samples`` of silence."""
        return bytes((self.silence_code,)) * n_samples

    def __repr__(self) -> str:
        return f"AudioCodec({self.name}/{self.clock_rate_hz})"


PCMU = AudioCodec("PCMU", 8000, ulaw_decode, _table_encoder(ulaw_encode), int(ulaw_encode(np.zeros(1, np.float32))[0]))
PCMA = AudioCodec("PCMA", 8000, alaw_decode, _table_encoder(alaw_encode), int(alaw_encode(np.zeros(1, np.float32))[0]))

#: Codecs by encoding name, upper case as RFC 3551 spells them.
CODECS: dict[str, AudioCodec] = {"PCMU": PCMU, "PCMA": PCMA}

#: RFC 3551 table 4: the static payload types of the codecs above.
STATIC_PAYLOAD_TYPES: dict[int, str] = {0: "PCMU", 8: "PCMA"}


class PayloadKind(enum.Enum):
    AUDIO = "audio"  # G.711: decoded, masked, re-encoded
    EVENT = "event"  # RFC 4733 telephone-event
    OTHER = "other"  # anything else: relayed or muted, never decoded


class PayloadTypes:
    """What each payload type of one peer's SDP carries.

    ``names`` maps payload type -> encoding name as the SDP gives it (any case).
    A G.711 name counts only at 8 kHz, which is all RFC 3551 defines for it.
    """

    def __init__(self, names: Mapping[int, str], telephone_event_pt: int | None = None) -> None:
        self.names: dict[int, str] = dict(STATIC_PAYLOAD_TYPES)
        self.names.update(names)
        self._codecs: dict[int, AudioCodec] = {}
        self._events: set[int] = set()
        for pt, name in self.names.items():
            upper = name.upper()
            if upper in CODECS:
                self._codecs[pt] = CODECS[upper]
            elif name.casefold() == TELEPHONE_EVENT:
                self._events.add(pt)
        if telephone_event_pt is not None:
            self._codecs.pop(telephone_event_pt, None)
            self._events.add(telephone_event_pt)
            self.names[telephone_event_pt] = TELEPHONE_EVENT

    def kind(self, payload_type: int) -> PayloadKind:
        if payload_type in self._codecs:
            return PayloadKind.AUDIO
        if payload_type in self._events:
            return PayloadKind.EVENT
        return PayloadKind.OTHER

    def codec(self, payload_type: int) -> AudioCodec | None:
        """The G.711 codec of ``payload_type``, or None when it is not G.711."""
        return self._codecs.get(payload_type)

    def payload_type_for(self, name: str) -> int | None:
        """The lowest payload type carrying encoding ``name`` (any case), if any."""
        folded = name.casefold()
        found = [pt for pt, n in self.names.items() if n.casefold() == folded]
        return min(found) if found else None
