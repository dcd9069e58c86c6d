"""Column gather/scatter kernels against NumPy's fancy indexing along the last axis."""

from __future__ import annotations

import numpy as np
import pytest

from dtmfguard.kernels.columns import gather_columns, scatter_columns

pytestmark = pytest.mark.kernels


@pytest.mark.parametrize("shape", [(5, 8, 64), (5, 64), (64,)])
@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_gather_and_scatter_match_fancy_indexing(shape: tuple[int, ...], dtype: type) -> None:
    rng = np.random.default_rng(3)
    src = (rng.random(shape) * 200).astype(dtype)
    columns = rng.permutation(shape[-1])[:40].astype(np.intp)
    dst = np.zeros((*shape[:-1], 48), dtype)
    gather_columns(src, columns, dst)
    np.testing.assert_array_equal(dst[..., :40], src[..., columns])
    assert not dst[..., 40:].any(), "columns past the gathered ones are untouched"

    picked = np.array([0, 3, 39], np.intp)
    mask = np.zeros(40, np.uint8)
    mask[picked] = 1
    back = src.copy()
    changed = (dst + 1).astype(dtype)
    scatter_columns(changed, columns, mask, back)
    expected = src.copy()
    expected[..., columns[picked]] = changed[..., picked]
    np.testing.assert_array_equal(back, expected)
