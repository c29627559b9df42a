"""Query cells far from the reference share their neighbours' predictions.

The last step of :class:`~omicformer.scgpt.model.ScGPTClassifier`'s prediction with the
reference probe (``omicformer.scgpt.model._classifier_probe``): a cell far from the reference
cells (probe weight ``w < 1``, where the fine-tuned head decides) takes, for the head's share
``1 - w`` of its prediction, a kernel mean of the mixed predictions of its
:data:`SMOOTH_NEIGHBORS` nearest cells of the same query in the probe's bag of gene embeddings
(:func:`smooth_far_cells`). The head's errors on another experiment's cells are partly each
cell's own (which 255 genes it reads), and the bag, which reads all of a cell's expressed genes,
places the cells of one experiment by type. Cells among the reference (``w = 1``) keep their
own probabilities. :class:`ProbeParts` holds what the step reads, so that an
:class:`~omicformer.scgpt.model.ScGPTClassifierEnsemble` can average its members' before
smoothing once (:func:`mean_parts`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..._core._checks import check_int

#: Query cells (itself included) whose predictions a cell far from the reference takes the mean
#: of (``1``: its own only).
SMOOTH_NEIGHBORS = 15
#: The neighbour whose distance is a cell's scale in :func:`smooth_far_cells`' kernel.
SMOOTH_SCALE_NEIGHBOR = 3
#: Cells up to which :func:`smooth_far_cells` finds neighbours exactly (approximately above).
SMOOTH_EXACT_CELLS = 50_000
#: Cells whose kernel mean is computed at a time (``p[idx]`` of all cells can be large).
SMOOTH_CHUNK = 4096


def smooth_far_cells(
    p: np.ndarray,
    p_probe: np.ndarray,
    w: np.ndarray,
    z: np.ndarray,
    k: int,
    random_state: int = 0,
) -> np.ndarray:
    """``w * p_probe + (1 - w) * m`` per cell, ``m`` a kernel mean of its ``k`` nearest ``p``.

    ``p``: the cells' mixed probabilities (``w * p_probe + (1 - w) * p_finetuned``), ``w``
    their probe weights (a column), ``z`` their bags. Neighbours by Euclidean distance in ``z``,
    among these cells only, the cell itself included (``k`` capped at the number of cells;
    ``k = 1`` returns ``p``): exact up to :data:`SMOOTH_EXACT_CELLS` cells, approximate above
    (``pynndescent``, which scanpy's neighbours use too, seeded by ``random_state``).
    Neighbour ``j`` of cell ``i`` weighs ``exp(-d_ij^2 / (s_i * s_j))``, where ``s`` is a
    cell's distance to its :data:`SMOOTH_SCALE_NEIGHBOR`-th nearest other cell (the
    self-tuning kernel of Zelnik-Manor and Perona, NIPS 2004): a small group of cells apart
    from the rest (a rare type) then mostly averages over itself.
    """
    k = min(int(k), len(z))
    if k <= 1 or not (w < 1).any():  # every cell among the reference keeps its own
        return p
    if len(z) <= SMOOTH_EXACT_CELLS:
        from sklearn.neighbors import NearestNeighbors

        dist, idx = NearestNeighbors(n_neighbors=k).fit(z).kneighbors(z)
    else:
        from pynndescent import NNDescent  # installed with scanpy (umap-learn needs it)

        idx, dist = NNDescent(z, n_neighbors=k, random_state=random_state).neighbor_graph
    scale = dist[:, min(SMOOTH_SCALE_NEIGHBOR, k - 1)]
    m = np.empty_like(p)
    for start in range(0, len(z), SMOOTH_CHUNK):
        rows = slice(start, start + SMOOTH_CHUNK)
        d, j = dist[rows], idx[rows]
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.where(d > 0, np.exp(-(d**2) / (scale[rows, None] * scale[j])), 1.0)
        a = np.where(np.isfinite(a), a, 0.0)  # another cell at distance > 0, a zero scale
        m[rows] = np.einsum("nk,nkc->nc", a, p[j]) / a.sum(axis=1, keepdims=True)
    return w * p_probe + (1.0 - w) * m


class ProbeParts(NamedTuple):
    """A classifier's unsmoothed prediction of some cells, what :func:`smooth_far_cells` reads.

    ``p``: the mixed probabilities ``w * p_probe + (1 - w) * p_finetuned`` (without a probe,
    the fine-tuned head's alone, and the other fields ``None``); ``p_probe``: the probe's;
    ``w``: the probe weights (a column); ``z``: the standardised bags.
    """

    p: np.ndarray
    p_probe: np.ndarray | None = None
    w: np.ndarray | None = None
    z: np.ndarray | None = None


def smooth_parts(parts: ProbeParts, k: int, random_state: int = 0) -> np.ndarray:
    """:func:`smooth_far_cells` of ``parts`` (their ``p`` as it is without a probe)."""
    if parts.w is None:
        return parts.p
    p, p_probe, w, z = parts
    return smooth_far_cells(p, p_probe, w, z, k, random_state=random_state)


def mean_parts(parts: list[ProbeParts]) -> ProbeParts:
    """The mean of several classifiers' :class:`ProbeParts` of the same cells, field by field.

    When one of them has no probe, the mean of their ``p`` alone (nothing to smooth with).
    """
    p = np.mean([x.p for x in parts], axis=0)
    if any(x.w is None for x in parts):
        return ProbeParts(p)
    fields = (np.mean([getattr(x, f) for x in parts], axis=0) for f in ("p_probe", "w", "z"))
    return ProbeParts(p, *fields)


def check_smooth_neighbors(k: Any) -> int:
    """``k`` as an int, or a ValueError saying what it must be."""
    return check_int("smooth_neighbors", k, hint="1: each cell keeps its own prediction")
