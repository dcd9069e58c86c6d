"""dtmfguard: a DTMF-masking media proxy for card payments over the phone.

The package is laid out along the data path: ``protocol`` and ``codecs`` parse and
convert bytes, ``kernels`` hold the Numba DSP kernels, ``pipeline`` composes the
synchronous per-channel stages (detect, delay, mask), ``capture`` holds the pure
card-entry logic, and the CLI (``cli.py``) drives the offline tools.
"""

__version__ = "0.1.0"
