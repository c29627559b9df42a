"""Evaluation sets of ``annotation.py``: reference/query tasks built from bundled real data.

What each set holds, and why the transfer sets are scored on coarse classes, is documented in
``annotation.py``'s module docstring; ``integration.py`` reuses :func:`recover_counts`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
from anndata import AnnData
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).parent))
from pbmc_markers import MARKER_TO_SCORED, lognormalised, marker_labels

from omicformer import datasets

LABEL = "bulk_labels"
#: wu2020: T-cell clusters with fewer cells are left out (the authors' 3 smallest, 1-3 cells).
MIN_CLASS_CELLS = 5
BULK_TO_COARSE = {
    "CD4+/CD25 T Reg": "T",
    "CD4+/CD45RA+/CD25- Naive T": "T",
    "CD4+/CD45RO+ Memory": "T",
    "CD8+ Cytotoxic T": "T",
    "CD8+/CD45RA+ Naive Cytotoxic": "T",
    "CD19+ B": "B",
    "CD56+ NK": "NK",
    "CD14+ Monocyte": "myeloid",
    "Dendritic": "myeloid",
    "CD34+": "CD34+ (no query class)",
}
#: ``cell_type_scanpy_pbmc3k`` -> scored class of ``transfer_pbmc3k`` (megakaryocytes: none).
PBMC3K_TO_COARSE = {"CD4 T": "T", "CD8 T": "T", "B": "B", "NK": "NK", "CD14+ Monocytes": "myeloid",
                    "FCGR3A+ Monocytes": "myeloid", "Dendritic": "myeloid"}  # fmt: skip
#: ... and of PBMC 3k's labels as the reference of ``transfer_from_pbmc3k``.
PBMC3K_REFERENCE_TO_COARSE = {**PBMC3K_TO_COARSE, "Megakaryocytes": "megakaryocyte (not scored)"}


@dataclass
class Task:
    """One reference/query pair; ``X`` = scGPT input, ``layers["lognorm"]``, ``layers["counts"]``."""

    ref: AnnData
    query: AnnData
    truth: np.ndarray  # scored label of each query cell
    to_scored: dict[str, str] | None = None  # reference label -> scored class (None: identity)
    batch: bool = False  # scANVI batch = data set of origin
    counts_reason: str | None = None  # why there are no counts (scANVI skipped)
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------- data sets


def recover_counts(adata: AnnData) -> tuple[np.ndarray | None, str]:
    """Counts from ``log1p(counts / n_counts * 1e4)``; None and the reason if not integer."""
    lognorm = adata.layers["lognorm"].toarray()
    counts = np.expm1(lognorm.astype(np.float64)) * adata.obs["n_counts"].to_numpy()[:, None] / 1e4
    dev = float(np.abs(counts - np.round(counts)).max())
    if dev > 0.25:
        return None, f"expm1(X) * n_counts / 1e4 is not integer (max deviation {dev:.2f})"
    return np.round(counts).astype(np.float32), f"max deviation from an integer {dev:.3f}"


def pbmc68k() -> tuple[AnnData, str | None, str]:
    adata = datasets.pbmc68k_reduced()
    counts, note = recover_counts(adata)
    if counts is not None:
        adata.layers["counts"] = sp.csr_matrix(counts)
        return adata, None, note
    return adata, note, note


def _labelled(adata: AnnData, column: str, keep: np.ndarray) -> AnnData:
    """The ``keep`` cells, ``obs[column]`` under ``LABEL``, ``X`` (counts) and log-normalised."""
    adata = adata[keep].copy()
    adata.obs[LABEL] = adata.obs[column].astype(str)
    adata.layers["counts"] = adata.X.copy()
    lognorm = sc.pp.normalize_total(adata, target_sum=1e4, inplace=False)["X"]
    adata.layers["lognorm"] = sp.csr_matrix(np.log1p(lognorm))
    return adata


def pbmc3k() -> AnnData:
    """``pbmc3k_desc`` with its labels under ``LABEL`` and the layers the methods read."""
    adata = datasets.pbmc3k_desc()
    column = "cell_type_scanpy_pbmc3k"
    return _labelled(adata, column, adata.obs[column].notna().to_numpy())  # 62 unlabelled


def wu2020() -> AnnData:
    """``wu2020_tcells`` with ``cluster_orig`` (>= 5 cells) under ``LABEL`` and the layers."""
    adata = datasets.wu2020_tcells()
    sizes = adata.obs["cluster_orig"].value_counts()
    keep = adata.obs["cluster_orig"].isin(sizes.index[sizes >= MIN_CLASS_CELLS]).to_numpy()
    return _labelled(adata, "cluster_orig", keep)


def group_task(adata: AnnData, is_reference: np.ndarray) -> Task:
    """Reference the ``is_reference`` cells, query the others whose label the reference has."""
    ref, query = adata[is_reference].copy(), adata[~is_reference].copy()
    query = query[query.obs[LABEL].isin(ref.obs[LABEL].unique()).to_numpy()].copy()
    truth = query.obs.pop(LABEL).astype(str).to_numpy()
    return Task(ref, query, truth, batch=True)


def oligodendroglioma() -> tuple[AnnData, str]:
    """``oligodendroglioma`` with ``cell_type`` under ``LABEL``; no counts.

    The values are normalised (TPM-like, about 1e5 per cell), not counts: scGPT bins ``X`` per
    cell, the baselines read ``log1p`` of it (``layers["lognorm"]``), and scANVI is skipped.
    """
    adata = datasets.oligodendroglioma()
    adata.obs[LABEL] = adata.obs["cell_type"].astype(str)
    adata.layers["lognorm"] = sp.csr_matrix(np.log1p(adata.X))
    return adata, "normalised values, not counts"


def split_task(adata: AnnData, counts_reason: str | None, seed: int) -> Task:
    labels = adata.obs[LABEL].astype(str).to_numpy()
    ref_idx, q_idx = train_test_split(
        np.arange(adata.n_obs), test_size=0.3, stratify=labels, random_state=seed
    )
    ref, query = adata[np.sort(ref_idx)].copy(), adata[np.sort(q_idx)].copy()
    truth = query.obs.pop(LABEL).astype(str).to_numpy()
    return Task(ref, query, truth, counts_reason=counts_reason)


def transfer_task(
    ref_all: AnnData,
    counts_reason: str | None,
    to_scored: dict[str, str] | None = None,
    query_set: str = "pbmc_celltypist",
) -> Task:
    """Reference ``ref_all`` (``pbmc68k_reduced`` unless told); query ``datasets.<query_set>()``
    (raw counts, no labels: scored on marker labels).

    ``to_scored`` maps the reference's labels to the scored classes (``None``:
    ``BULK_TO_COARSE``, for ``pbmc68k_reduced``'s ``bulk_labels``).
    """
    raw = getattr(datasets, query_set)()
    full = lognormalised(raw)
    names, per_cluster = marker_labels(full)
    shared = ref_all.var_names[ref_all.var_names.isin(raw.var_names)]
    query = raw[:, shared].copy()  # X = counts = layers["counts"]
    query.layers["lognorm"] = sp.csr_matrix(full[:, shared].X)
    scored = names.map(MARKER_TO_SCORED)
    keep = scored.notna().to_numpy()
    query = query[keep].copy()
    ref = ref_all[:, shared].copy()
    notes = [
        f"query: {query_set}, {raw.n_obs} cells, restricted to the {len(shared)} genes it "
        "shares with the reference",
        "marker-named clusters (Ward, 12 clusters): "
        + ", ".join(f"{name} {n}" for name, n in names.value_counts().items()),
        "scored classes: "
        + ", ".join(f"{name} {n}" for name, n in scored[keep].value_counts().items())
        + f"; {int((~keep).sum())} megakaryocyte cells not scored"
        + (" (no reference class)" if to_scored is None else " (as in the other transfer)"),
        "per cluster: "
        + "; ".join(f"{i}: {r.cells} {r['name']} ({r.score})" for i, r in per_cluster.iterrows()),
    ]
    return Task(
        ref,
        query,
        scored[keep].to_numpy(),
        to_scored=BULK_TO_COARSE if to_scored is None else to_scored,
        batch=True,
        counts_reason=counts_reason,
        notes=notes,
    )


def transfer_pbmc3k_task(ref_all: AnnData, counts_reason: str | None) -> Task:
    """Reference ``ref_all``; query the curated PBMC 3k cells (see the module docstring)."""
    cells = pbmc3k()
    truth = cells.obs[LABEL].map(PBMC3K_TO_COARSE)
    keep = truth.notna().to_numpy()
    shared = ref_all.var_names[ref_all.var_names.isin(cells.var_names)]
    query = cells[keep][:, shared].copy()
    query.obs = query.obs[[]]
    counts = truth[keep].value_counts()
    notes = [f"query: pbmc3k_desc, {keep.sum()} of {cells.n_obs} labelled cells "
             f"({int((~keep).sum())} megakaryocytes not scored), {len(shared)} shared genes",
             "scored classes: " + ", ".join(f"{k} {v}" for k, v in counts.items())]  # fmt: skip
    return Task(ref_all[:, shared].copy(), query, truth[keep].to_numpy(), to_scored=BULK_TO_COARSE,
                batch=True, counts_reason=counts_reason, notes=notes)  # fmt: skip


def transfer_cite_task(
    ref_all: AnnData, counts_reason: str | None, to_scored: dict[str, str]
) -> Task:
    """Reference ``ref_all``; query the 400 CITE-seq cells, scored on their protein labels."""
    from integration_sets import pbmc_cite  # imports this module: not at the top

    cells, _, column = pbmc_cite()
    shared = ref_all.var_names[ref_all.var_names.isin(cells.var_names)]
    query = cells[:, shared].copy()  # X = counts = layers["counts"]; layers["lognorm"]
    truth = query.obs[column].astype(str).to_numpy()
    query.obs = query.obs[[]]
    counts = pd.Series(truth).value_counts()
    notes = [f"query: pbmc_cite_two_batch, {cells.n_obs} cells of two CITE-seq runs, "
             f"{len(shared)} genes shared with the reference",
             "scored classes (from the surface proteins, not the RNA): "
             + ", ".join(f"{k} {v}" for k, v in counts.items())]  # fmt: skip
    return Task(ref_all[:, shared].copy(), query, truth, to_scored=to_scored, batch=True,
                counts_reason=counts_reason, notes=notes)  # fmt: skip


def transfer_from_pbmc3k_task() -> Task:
    """Reference: the 2,638 labelled PBMC 3k cells; query: ``pbmc_celltypist`` (marker labels)."""
    return transfer_task(pbmc3k(), None, to_scored=PBMC3K_REFERENCE_TO_COARSE)
