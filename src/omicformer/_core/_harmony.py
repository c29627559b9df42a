"""Harmony (Korsunsky et al., *Nature Methods* 16, 1289-1296, 2019) correction of an embedding.

Harmony clusters the cells softly, favouring clusters that hold every batch in its overall
share, and removes each batch's offset within each cluster, iterating until the clusters
settle; all batches are corrected together, not merged one at a time. It runs on principal
components: the embedding is centred and reduced to its top :data:`HARMONY_PCS` components
(scikit-learn's ``PCA``), then corrected by ``harmonypy`` (the authors' Python port) with the
published diversity penalty ``theta=2`` and a ridge penalty of the correction ``lamb=0.5``, half
the published ``1``. The ridge shrinks each batch's offset within a cluster towards zero, most
where the batch holds few of the cluster's cells; on fine-tuned scGPT embeddings the published
penalty left more of the batches' offsets in place (both measured with scib-metrics on thirteen
sets of 2 to 14 batches: the benchmarks page of the docs, "Harmony's ridge penalty"). The
corrected components are returned as they are: scaling each cell to unit norm afterwards lowered
the scib batch correction score on three PBMC experiments from 0.555 to 0.506 (3 seeds).

Harmony starts from a k-means clustering of the cells, and where it settles depends on that
start: on one fine-tuned embedding of three PBMC experiments, six starts (``random_state``, or
the same start with the cells in another order) gave scib biology conservation from 0.608 to
0.649. :func:`harmony_correct` therefore runs it :data:`HARMONY_RUNS` times from different
starts on the same components and returns the mean of the corrected components: on that set
(two embeddings, three cell orders each) biology 0.640-0.647 (one start: 0.607-0.649).

Harmony stops with part of the batches' offsets in place: on the fine-tuned embeddings of
seven benchmark sets (seed 0) it ran its 20 iterations (:data:`MAX_ITER`) without meeting the
convergence criterion, and 40 or 100 iterations changed the scib batch correction score by at
most 0.010 (four sets, seed 0). A new start removes more: :func:`harmony_correct` runs
:data:`HARMONY_ROUNDS` rounds, the second on the first round's mean (its principal components,
new k-means starts on cells whose batches already share clusters). On the thirteen benchmark
sets of the docs ("Harmony in two rounds"), 3 seeds, the second round raised the mean batch
correction score of every set (by 0.001 to 0.062) and moved biology conservation by -0.023 to
+0.029 (one seed of three PBMC experiments lost 0.063).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._checks import check_int

#: Principal components of the embedding that Harmony corrects (fewer if the data have fewer).
HARMONY_PCS = 50
#: Harmony's diversity penalty (published default) and ridge penalty (half the published 1).
THETA, LAMB = 2.0, 0.5
#: Outer iterations at most, and the relative change of the objective that ends them.
MAX_ITER, EPSILON = 20, 1e-4
#: Harmony runs from different k-means starts whose corrected components are averaged.
HARMONY_RUNS = 5
#: Rounds: each round's averaged output is the next round's input (its PCA, its starts).
HARMONY_ROUNDS = 2


def run_seeds(random_state: int, n_runs: int) -> list[int]:
    """Seeds of ``n_runs`` Harmony runs: ``random_state`` first, then draws seeded by it."""
    extra = np.random.SeedSequence(int(random_state)).generate_state(max(n_runs - 1, 0))
    return [int(random_state)] + [int(s % 2**31) for s in extra]


def harmony_correct(
    x: np.ndarray,
    batches: np.ndarray,
    *,
    n_pcs: int = HARMONY_PCS,
    theta: float = THETA,
    lamb: float = LAMB,
    n_runs: int = HARMONY_RUNS,
    n_rounds: int = HARMONY_ROUNDS,
    random_state: int = 0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Correct the embedding ``x`` (cells x dims) for ``batches`` with Harmony.

    Parameters
    ----------
    x
        Embedding, one row per cell.
    batches
        Batch of every cell (at least two distinct values).
    n_pcs
        Principal components corrected (at most the dimensions of ``x`` and the cells minus 1).
    theta, lamb
        Harmony's diversity and ridge penalties.
    n_runs
        Harmony runs from different k-means starts (seeds :func:`run_seeds`); the mean of their
        corrected components is returned. ``1``: one run, seeded with ``random_state``.
    n_rounds
        Rounds of the above: round ``r`` (from 0) takes the previous round's output (``x`` for
        the first), centres it, takes its principal components and averages ``n_runs`` runs
        on them, seeded with ``random_state + r``. ``1``: Harmony once.
    random_state
        Seed of the PCA and of Harmony's k-means initialisations: equal seeds, equal output.

    Returns
    -------
    The corrected ``(n_cells, n_components)`` float32 components, and a report: ``method``
    (``"harmony"``), ``n_pcs``, ``theta``, ``lamb``, ``n_runs``, ``n_clusters`` and
    ``iterations`` (outer iterations of the longest run; at most :data:`MAX_ITER`).
    """
    import harmonypy
    import pandas as pd
    from sklearn.decomposition import PCA

    x = np.asarray(x, dtype=np.float64)
    batches = np.asarray(batches).astype(str)
    if len(batches) != len(x):
        msg = f"batches has {len(batches)} entries for {len(x)} cells."
        raise ValueError(msg)
    if len(np.unique(batches)) < 2:
        msg = "Harmony needs at least two batches."
        raise ValueError(msg)
    n_runs = check_int("n_runs", n_runs)
    n_rounds = check_int("n_rounds", n_rounds)
    n = min(int(n_pcs), x.shape[1], len(x) - 1)
    meta = pd.DataFrame({"batch": batches})
    n_clusters = max(1, min(round(len(x) / 30), 100))  # harmonypy's default, at least one
    iterations = 0
    for r in range(n_rounds):
        seed0 = int(random_state) + r
        x = np.asarray(x, dtype=np.float64)  # the previous round's float32 output too
        pcs = PCA(n_components=n, random_state=seed0).fit_transform(x - x.mean(0))
        total = np.zeros(pcs.shape, np.float64)
        for seed in run_seeds(seed0, n_runs):
            ho = harmonypy.run_harmony(
                pcs, meta, ["batch"], theta=theta, lamb=lamb, max_iter_harmony=MAX_ITER,
                epsilon_harmony=EPSILON, nclust=n_clusters, random_state=seed, verbose=False,
            )  # fmt: skip
            total += np.asarray(ho.Z_corr, dtype=np.float64)  # cells x components (harmonypy 2)
            iterations = max(iterations, len(ho.kmeans_rounds))
        x = (total / n_runs).astype(np.float32)  # n components, the next round's input
    report = {
        "method": "harmony", "n_pcs": n, "theta": float(theta), "lamb": float(lamb),
        "n_runs": n_runs, "n_rounds": n_rounds, "n_clusters": int(ho.K),
        "iterations": iterations,
    }  # fmt: skip
    return np.ascontiguousarray(x), report
