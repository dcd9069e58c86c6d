"""Gather and scatter of per-channel state columns (the channel is the last axis).

A bank keeps each channel's kernel history in one column of arrays shaped
``(..., n_channels)``. A run over some channels gathers their columns into a compact
batch and scatters them back afterwards; NumPy's fancy indexing along the last axis
does that one element at a time through a generic loop, these kernels row by row.
The arrays are seen as 2-D ``(rows, n_channels)`` views (any leading shape, C order).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

__all__ = ["ColumnGroup", "gather_columns", "gather_group", "scatter_columns", "scatter_group"]


@njit(cache=True, boundscheck=False)
def _gather(src, columns, dst):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    for r in range(src.shape[0]):
        for j in range(len(columns)):
            dst[r, j] = src[r, columns[j]]


@njit(cache=True, boundscheck=False)
def _scatter(src, columns, mask, dst):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    for r in range(src.shape[0]):
        for j in range(len(columns)):
            if mask[j]:
                dst[r, columns[j]] = src[r, j]


def _rows(a: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
    return a.reshape(-1, a.shape[-1])


def gather_columns(src: npt.NDArray[np.generic], columns: npt.NDArray[np.intp], dst: npt.NDArray[np.generic]) -> None:
    """``dst[..., j] = src[..., columns[j]]`` for each ``j`` (``dst`` may be wider)."""
    _gather(_rows(src), columns, _rows(dst))


def scatter_columns(
    src: npt.NDArray[np.generic], columns: npt.NDArray[np.intp], mask: npt.NDArray[np.uint8],
    dst: npt.NDArray[np.generic],
) -> None:
    """``dst[..., columns[j]] = src[..., j]`` for each ``j`` with ``mask[j]`` (uint8)."""
    _scatter(_rows(src), columns, mask, _rows(dst))


@njit(cache=True, boundscheck=False)
def _gather_all(srcs, columns, dsts):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    for a in range(len(srcs)):
        src = srcs[a]
        dst = dsts[a]
        for r in range(src.shape[0]):
            for j in range(len(columns)):
                dst[r, j] = src[r, columns[j]]


@njit(cache=True, boundscheck=False)
def _scatter_all(srcs, columns, mask, dsts):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    for a in range(len(srcs)):
        src = srcs[a]
        dst = dsts[a]
        for r in range(src.shape[0]):
            for j in range(len(columns)):
                if mask[j]:
                    dst[r, columns[j]] = src[r, j]


class ColumnGroup:
    """Arrays with the channel on the last axis, moved together: one kernel call per
    dtype for :func:`gather_group` / :func:`scatter_group` instead of one per array, and
    their 2-D views made once (a bank moves its history columns on every run)."""

    __slots__ = ("groups",)

    def __init__(self, arrays: list[npt.NDArray[np.generic]]) -> None:
        by_dtype: dict[np.dtype[np.generic], list[npt.NDArray[np.generic]]] = {}
        for a in arrays:
            if not a.flags.c_contiguous:
                raise ValueError("column arrays must be C-contiguous")
            by_dtype.setdefault(a.dtype, []).append(_rows(a))
        self.groups = tuple(tuple(views) for _, views in sorted(by_dtype.items(), key=lambda kv: kv[0].str))


def gather_group(src: ColumnGroup, columns: npt.NDArray[np.intp], dst: ColumnGroup) -> None:
    """:func:`gather_columns` for each array of ``src`` into the same array of ``dst``."""
    for s, d in zip(src.groups, dst.groups, strict=True):
        _gather_all(s, columns, d)


def scatter_group(
    src: ColumnGroup, columns: npt.NDArray[np.intp], mask: npt.NDArray[np.uint8], dst: ColumnGroup,
) -> None:
    """:func:`scatter_columns` for each array of ``src`` into the same array of ``dst``."""
    for s, d in zip(src.groups, dst.groups, strict=True):
        _scatter_all(s, columns, mask, d)
