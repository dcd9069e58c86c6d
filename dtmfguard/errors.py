"""The one small exception tree of dtmfguard.

Every error the product raises on purpose derives from :class:`DtmfguardError`, so
callers at an I/O boundary can catch one type, log it (messages never carry card
digits) and carry on with the call.
"""


class DtmfguardError(Exception):
    """Base class of every error raised on purpose by dtmfguard."""


class ConfigError(DtmfguardError):
    """A configuration file or value is invalid; the message names the key and why."""


class AudioFormatError(DtmfguardError):
    """Audio input (a WAV file, a raw stream, an array) cannot be used; says why."""


class ProtocolError(DtmfguardError):
    """A wire format (RTP, RFC 4733, SDP, bencode, NG) is malformed; says where and why."""


class CaptureError(DtmfguardError):
    """A card-capture operation was refused; the message never carries digits."""
