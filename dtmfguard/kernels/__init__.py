"""Numba DSP kernels: the Goertzel bank and the per-sub-block DTMF decisions.

Every kernel is a private ``@njit(cache=True)`` function behind a typed public wrapper
that validates and allocates, with a plain-NumPy twin that tests compare against.
:func:`warmup` compiles every signature the media path uses, so nothing compiles
while a call is running.
"""

from __future__ import annotations

import numpy as np


def warmup() -> None:
    """Compile (or load from cache) every kernel signature; call once at start-up."""
    from dtmfguard.kernels.features import FeatureBank
    from dtmfguard.kernels.goertzel import goertzel_blocks

    x = np.zeros((160, 2), np.float32)
    x[:, 0] = np.sin(np.arange(160) * 0.55).astype(np.float32)
    spectra = goertzel_blocks(x)
    FeatureBank(2, spectra.n_blocks).process(spectra)
