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


def test_a_group_moves_every_array_as_the_single_kernels_do() -> None:
    from dtmfguard.kernels.columns import ColumnGroup, gather_group, scatter_group

    rng = np.random.default_rng(4)
    shapes = [((5, 8, 64), np.float32), ((5, 64), np.float32), ((64,), np.uint8), ((3, 64), np.float32)]
    src = [(rng.random(s) * 200).astype(d) for s, d in shapes]
    small = [np.zeros((*s[:-1], 16), d) for s, d in shapes]
    columns = rng.permutation(64)[:12].astype(np.intp)
    gather_group(ColumnGroup(src), columns, ColumnGroup(small))
    for a, b in zip(src, small, strict=True):
        np.testing.assert_array_equal(b[..., :12], a[..., columns])
        assert not b[..., 12:].any()
    mask = (rng.random(12) < 0.5).astype(np.uint8)
    back = [a.copy() for a in src]
    changed = [(b + 1).astype(b.dtype) for b in small]
    scatter_group(ColumnGroup(changed), columns, mask, ColumnGroup(back))
    for a, b, c in zip(src, back, changed, strict=True):
        expected = a.copy()
        expected[..., columns[mask == 1]] = c[..., :12][..., mask == 1]
        np.testing.assert_array_equal(b, expected)


def test_a_group_refuses_views_it_cannot_write_through() -> None:
    from dtmfguard.kernels.columns import ColumnGroup

    with pytest.raises(ValueError, match="C-contiguous"):
        ColumnGroup([np.zeros((4, 8), np.float32)[:, ::2]])
