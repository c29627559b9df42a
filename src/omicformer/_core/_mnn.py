"""Mutual-nearest-neighbour (MNN) batch correction of an embedding.

The correction of Haghverdi et al. (2018), applied to cells' embedding vectors instead of
their genes: two cells of different batches that are each among the other's ``k`` nearest
cells of the other batch are a *pair*, and the difference of their vectors estimates the batch
effect where they lie. Batches are merged one at a time, largest first: each next batch is
paired with every cell merged so far, each of its paired cells (an *anchor*) gets the mean
difference of its pairs, and every cell of the batch moves by a Gaussian-kernel average of the
differences of its ``n_anchors`` nearest anchors (weights ``exp(-(d² - d²_min) / s²)``, ``d``
the cell's distance to an anchor, ``d_min`` to its nearest one; ``s²`` is ``sigma`` times the
median squared distance between the batch's cells and its anchors). A population that only one
batch holds finds no pairs of its own and moves with the anchors nearest to it.

How local the correction is follows how far the batches already mix (``sigma=None``,
``n_anchors=None``, our addition): the *mixing* ``m`` of a batch and the cells merged so far
is, over the cells of both, the mean share of a cell's ``MIXING_K`` nearest cells (among both)
that lie on the other side, divided by that side's share (1: mixed as if one batch; 0:
apart). Batches apart (``m <= 0.5``) get the narrow kernel (``sigma`` 0.02, 50 anchors): each
region moves by its own pairs, as a batch effect that differs between cell types needs.
Batches that already mix (``m >= 0.7``) get the wide one (0.1, 200), as in ``batchelor``'s
``mnnCorrect``: there a cell's pairs are its neighbours, and moving each cell onto its own
pairs would shrink the batch onto points of the other. In between, both are interpolated
geometrically.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

#: Cell-anchor pairs drawn to estimate the median squared distance of the kernel's width.
BANDWIDTH_SAMPLE = 10_000
#: Neighbours per cell for the mixing of a batch (see the module docstring).
MIXING_K = 30
#: ``(sigma, n_anchors)`` for batches apart and for batches that mix, and the mixing range
#: between which the two are interpolated.
NARROW, WIDE, MIXING_RANGE = (0.02, 50), (0.1, 200), (0.5, 0.7)


def _knn(query: np.ndarray, data: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Distances and indices of each query row's ``k`` nearest rows of ``data`` (exact)."""
    from sklearn.neighbors import NearestNeighbors

    return NearestNeighbors(n_neighbors=min(k, len(data))).fit(data).kneighbors(query)


def mnn_pairs(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """Mutual nearest neighbours between the rows of ``a`` and of ``b``.

    Returns
    -------
    ``(n_pairs, 2)`` int64: row of ``a``, row of ``b``; sorted by the row of ``a``, then of ``b``.
    """
    _, ab = _knn(a, b, k)
    _, ba = _knn(b, a, k)

    def adjacency(idx: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
        rows = np.repeat(np.arange(idx.shape[0]), idx.shape[1])
        return sp.csr_matrix((np.ones(idx.size, bool), (rows, idx.ravel())), shape=shape)

    mutual = adjacency(ab, (len(a), len(b))).multiply(adjacency(ba, (len(b), len(a))).T)
    rows, cols = sp.coo_matrix(mutual).nonzero()
    order = np.lexsort((cols, rows))
    return np.stack([rows[order], cols[order]], axis=1).astype(np.int64)


def mixing(a: np.ndarray, b: np.ndarray, k: int = MIXING_K) -> float:
    """How far the cells ``a`` and ``b`` mix: 1 as one population, 0 apart (module docstring).

    Over the cells of both, the mean share of a cell's ``k`` nearest cells (itself left out)
    that lie on the other side, each divided by the other side's share of all cells; so it
    does not depend on which side is which. Random neighbours give 1 on average, so a sample
    of one population can score a little above 1 (1.035 was seen on two halves of one
    dataset); cells nearer the other side's cells than their own score above 1 too. A cell
    counts at most one neighbour fewer than its own side's cells: with more, it would have to
    count cells of the other side for want of its own, and two small batches far apart scored
    as mixed (1.05 for 10 and 10 cells 100 sd apart). The cell of a one-cell side is not
    counted; the other side's cells near it still are.
    """
    both = np.concatenate([a, b])
    n = len(both)
    k = min(k, n - 1)
    if k < 1 or len(a) == 0 or len(b) == 0:
        return 0.0
    in_a = np.arange(n) < len(a)
    k_cell = np.minimum(k, np.where(in_a, len(a), len(b)) - 1)
    counted = k_cell >= 1
    if not counted.any():
        return 0.0
    _, idx = _knn(both, both, k + 1)
    keep = idx != np.arange(n)[:, None]  # not the cell itself (not always column 0)
    keep &= np.cumsum(keep, axis=1) <= k_cell[:, None]  # the cell's own k nearest
    other = (in_a[idx] != in_a[:, None]) & keep
    share = other.sum(1)[counted] / keep.sum(1)[counted]
    expected = np.where(in_a, len(b), len(a))[counted] / n
    return float(np.mean(share / expected))


def adaptive_kernel(m: float) -> tuple[float, int]:
    """``(sigma, n_anchors)`` for a batch of mixing ``m`` (module docstring)."""
    lo, hi = MIXING_RANGE
    t = min(max((m - lo) / (hi - lo), 0.0), 1.0)
    sigma = NARROW[0] * (WIDE[0] / NARROW[0]) ** t
    return sigma, round(NARROW[1] * (WIDE[1] / NARROW[1]) ** t)


def kernel_corrections(
    cells: np.ndarray, anchors: np.ndarray, vectors: np.ndarray, s2: float, n_anchors: int
) -> np.ndarray:
    """Each cell's Gaussian-kernel average of its ``n_anchors`` nearest anchors' vectors."""
    d, idx = _knn(cells, anchors, n_anchors)
    d2 = d**2
    w = np.exp(-(d2 - d2[:, :1]) / s2)
    w /= w.sum(axis=1, keepdims=True)
    # a sparse (cells x anchors) weight matrix: memory grows with cells x n_anchors, not x dims
    indptr = np.arange(0, idx.size + 1, idx.shape[1])
    weights = sp.csr_matrix((w.ravel(), idx.ravel(), indptr), shape=(len(cells), len(anchors)))
    return np.asarray(weights @ vectors)


def mnn_correct(
    x: np.ndarray,
    batches: np.ndarray,
    *,
    k: int = 20,
    sigma: float | None = None,
    n_anchors: int | None = None,
    random_state: int = 0,
) -> tuple[np.ndarray, dict]:
    """Move each batch's cells onto the batches merged before it (see the module docstring).

    Parameters
    ----------
    x
        ``(n_cells, dims)`` embedding.
    batches
        Batch of each cell.
    k
        Neighbours of the other side searched for pairs.
    sigma
        Kernel width, as a fraction of the median squared cell-anchor distance; ``None``: by
        the batch's mixing (:func:`adaptive_kernel`).
    n_anchors
        Nearest anchors averaged per cell; ``None``: by the batch's mixing.
    random_state
        Seed of the cell-anchor pairs drawn for the median.

    Returns
    -------
    The corrected float32 embedding, and a report: ``order`` (batches in merge order), and per
    batch after the first ``pairs`` (pairs found when it was merged), ``kernel`` (the
    ``sigma`` and ``n_anchors`` used) and, where either was chosen by it, ``mixing``.
    """
    x = np.asarray(x, dtype=np.float64).copy()
    batches = np.asarray(batches).astype(str)
    names, sizes = np.unique(batches, return_counts=True)
    order = [str(n) for n in names[np.argsort(-sizes, kind="stable")]]
    rng = np.random.default_rng(random_state)
    merged = np.flatnonzero(batches == order[0])
    n_pairs: dict[str, int] = {}
    mixed: dict[str, float] = {}
    kernels: dict[str, dict[str, float]] = {}
    for name in order[1:]:
        new = np.flatnonzero(batches == name)
        cells, ref = x[new], x[merged]
        pairs = mnn_pairs(cells, ref, k)
        n_pairs[name] = len(pairs)
        s_frac, n_near = sigma, n_anchors
        if sigma is None or n_anchors is None:
            mixed[name] = round(mixing(cells, ref), 4)
            auto = adaptive_kernel(mixed[name])
            s_frac = auto[0] if sigma is None else sigma
            n_near = auto[1] if n_anchors is None else n_anchors
        kernels[name] = {"sigma": round(float(s_frac), 4), "n_anchors": int(n_near)}
        if len(pairs):
            anchor, inverse = np.unique(pairs[:, 0], return_inverse=True)
            vectors = np.zeros((len(anchor), x.shape[1]))
            np.add.at(vectors, inverse, ref[pairs[:, 1]] - cells[pairs[:, 0]])
            vectors /= np.bincount(inverse)[:, None]
            m = BANDWIDTH_SAMPLE
            i, j = rng.integers(0, len(new), m), rng.integers(0, len(anchor), m)
            s2 = s_frac * float(np.median(np.sum((cells[i] - cells[anchor[j]]) ** 2, axis=1)))
            x[new] += kernel_corrections(cells, cells[anchor], vectors, max(s2, 1e-12), n_near)
        merged = np.concatenate([merged, new])
    report: dict = {"order": order, "pairs": n_pairs, "kernel": kernels}
    if mixed:
        report["mixing"] = mixed
    return x.astype(np.float32), report
