"""Per-cell quantile binning of expression values, as the official scGPT ``Preprocessor``.

For one cell, the non-zero values ``nz`` define ``n_bins - 1`` edges
``np.quantile(nz, np.linspace(0, 1, n_bins - 1))``; each non-zero value gets
``np.digitize`` into ``1..n_bins-1`` and zeros stay ``0``. A value tied with one or more
(repeated) edges lies anywhere between ``np.digitize(x, edges, right=True) + 1`` and
``np.digitize(x, edges)``; like the official ``_digitize`` we draw uniformly in that range,
from a seeded generator instead of the global NumPy state.
"""

from __future__ import annotations

import numpy as np


def quantile_edges(nonzero: np.ndarray, n_bins: int) -> np.ndarray:
    """The ``n_bins - 1`` quantile edges of a cell's non-zero values."""
    return np.quantile(nonzero, np.linspace(0, 1, n_bins - 1))


def digitize(x: np.ndarray, edges: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Official ``_digitize(x, bins, side="both")`` with a seeded generator for ties."""
    left = np.digitize(x, edges)
    right = np.digitize(x, edges, right=True)
    tie = left != right
    if not tie.any():
        return left.astype(np.int64)
    r = rng.random(len(x))
    return np.ceil(r * (right - left) + left).astype(np.int64)


def expected_digits(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The mean of :func:`digitize`'s draw: a tied value's range ``right + 1 .. left`` averaged."""
    left = np.digitize(x, edges)
    right = np.digitize(x, edges, right=True)
    return np.where(left == right, left, (right + 1 + left) / 2)


def bin_nonzero(
    values: np.ndarray, n_bins: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Bin a cell's non-zero values; returns ``(digits in 1..n_bins-1, edges)``."""
    if values.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(n_bins - 1)
    edges = quantile_edges(values, n_bins)
    return digitize(values, edges, rng), edges


def bin_csr_rows(
    data: np.ndarray, indptr: np.ndarray, n_bins: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Bin every row of a CSR matrix whose ``data`` holds only non-zero values.

    Returns the binned ``data`` (int64, same layout) and the ``(n_rows, n_bins)`` edges with a
    leading 0, as the official ``obsm["bin_edges"]``.
    """
    out = np.zeros(len(data), dtype=np.int64)
    all_edges = np.zeros((len(indptr) - 1, n_bins))
    for i in range(len(indptr) - 1):
        s, e = indptr[i], indptr[i + 1]
        if e > s:
            out[s:e], edges = bin_nonzero(np.asarray(data[s:e], dtype=np.float64), n_bins, rng)
            all_edges[i, 1:] = edges
    return out, all_edges
