"""Marker-gene labels of unlabelled PBMCs, shared by the annotation and integration benchmarks.

Procedure (``marker_labels``):

1. The data come log-normalised (``log1p(normalize_total(counts, 1e4))``); the top 2,000 genes
   by scanpy's ``seurat`` dispersion, z-scored and clipped at 10; PCA (20 components, full SVD).
2. Ward agglomerative clustering (scikit-learn) into 12 clusters (deterministic, no seed).
3. Per cluster, the mean log-normalised expression of each marker, divided by that marker's
   largest cluster mean (0 if never detected); a type's score is the mean over its markers and
   the cluster takes the highest-scoring type.

``MARKER_TO_SCORED`` maps the types to the classes the benchmarks score (megakaryocytes: none).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scanpy as sc
from anndata import AnnData
from sklearn.cluster import AgglomerativeClustering
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

MARKERS = {
    "T": ["CD3E", "CD3D"],
    "B": ["MS4A1", "CD79A"],
    "NK": ["NKG7", "GNLY"],
    "CD14 monocyte": ["CD14", "LYZ"],
    "FCGR3A monocyte": ["FCGR3A", "MS4A7"],
    "dendritic": ["FCER1A", "CST3"],
    "megakaryocyte": ["PPBP"],
}
MARKER_TO_SCORED = {
    "T": "T",
    "B": "B",
    "NK": "NK",
    "CD14 monocyte": "myeloid",
    "FCGR3A monocyte": "myeloid",
    "dendritic": "myeloid",
}  # megakaryocyte: not scored


def lognormalised(adata: AnnData) -> AnnData:
    """A copy of ``adata`` with ``X = log1p(normalize_total(X, 1e4))``, the benchmarks' input."""
    out = adata.copy()
    sc.pp.normalize_total(out, target_sum=1e4)
    sc.pp.log1p(out)
    return out


def marker_labels(lognorm: AnnData) -> tuple[pd.Series, pd.DataFrame]:
    """Name each cell by its cluster's best marker score (procedure in the module docstring)."""
    n_top = min(2000, lognorm.n_vars)
    hvg = sc.pp.highly_variable_genes(lognorm, n_top_genes=n_top, flavor="seurat", inplace=False)
    x = lognorm[:, hvg["highly_variable"].to_numpy()].X.toarray()
    x = np.clip(StandardScaler().fit_transform(x), -10, 10)
    pcs = PCA(20, svd_solver="full").fit_transform(x)
    clusters = AgglomerativeClustering(n_clusters=12, linkage="ward").fit_predict(pcs)
    # markers the data lacks are left out of their type's mean (a type with none scores 0)
    markers = {name: [g for g in m if g in lognorm.var_names] for name, m in MARKERS.items()}
    genes = [g for m in markers.values() for g in m]
    means = pd.DataFrame(lognorm[:, genes].X.toarray(), columns=genes).groupby(clusters).mean()
    scaled = means / means.max().replace(0, np.inf)
    scores = pd.DataFrame(
        {name: scaled[m].mean(axis=1) if m else 0.0 for name, m in markers.items()}
    )
    names = scores.idxmax(axis=1)
    per_cluster = pd.DataFrame(
        {"cells": pd.Series(clusters).value_counts().sort_index(), "name": names}
    )
    per_cluster["score"] = scores.max(axis=1).astype(float).round(2)
    return pd.Series(names.loc[clusters].to_numpy(), index=lognorm.obs_names), per_cluster
