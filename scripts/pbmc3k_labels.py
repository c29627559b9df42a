"""Cell-type labels for 10x PBMC 3k from the scanpy PBMC 3k tutorial clustering.

Used by ``build_more_scrna_datasets.py`` for ``obs["cell_type_scanpy_pbmc3k"]`` and
``obs["leiden_scanpy_pbmc3k"]`` of the bundled ``scrna_pbmc3k.h5ad``; :func:`label_pbmc3k`
documents the steps, ``PBMC3K_PARAMS`` and ``PBMC3K_MARKERS`` their settings.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

# PBMC 3k: the scanpy "Preprocessing and clustering 3k PBMCs" tutorial, step by step
PBMC3K_KEY = "cell_type_scanpy_pbmc3k"
PBMC3K_CLUSTER_KEY = "leiden_scanpy_pbmc3k"
# The tutorial uses resolution 0.9; with scanpy 1.11 / igraph 1.0 that merges CD8 T and NK cells
# into one cluster, so scanpy's default resolution 1.0 is used (8 clusters, 8 cell types).
PBMC3K_RESOLUTION = 1.0
PBMC3K_PARAMS = {
    "filter_cells_min_genes": 200,
    "filter_genes_min_cells": 3,
    "max_genes_by_counts": 2500,  # keep cells with n_genes_by_counts < 2500
    "max_pct_counts_mt": 5.0,  # keep cells with pct_counts_mt < 5 (genes starting "MT-")
    "normalize_total_target_sum": 1e4,
    "hvg": "seurat flavour, min_mean=0.0125, max_mean=3, min_disp=0.5",
    "regress_out": "total_counts, pct_counts_mt",
    "scale_max_value": 10,
    "pca": "50 components, svd_solver='arpack'",
    "neighbors": "n_neighbors=10, n_pcs=40",
    "leiden": (
        f"resolution={PBMC3K_RESOLUTION}, flavor='igraph', n_iterations=2, directed=False, "
        "random_state=0"
    ),
}
# Marker table of the tutorial (from Seurat's PBMC 3k guide): one list per cell type.
PBMC3K_MARKERS = {
    "CD4 T": ["IL7R"],
    "CD14+ Monocytes": ["CD14", "LYZ"],
    "B": ["MS4A1"],
    "CD8 T": ["CD8A"],
    "NK": ["GNLY", "NKG7"],
    "FCGR3A+ Monocytes": ["FCGR3A", "MS4A7"],
    "Dendritic": ["FCER1A", "CST3"],
    "Megakaryocytes": ["PPBP"],
}


def label_pbmc3k(counts: ad.AnnData) -> tuple[pd.DataFrame, dict]:
    """Cell types from the scanpy PBMC 3k tutorial clustering, named from its marker table.

    Steps (parameters in ``PBMC3K_PARAMS``): ``filter_cells(min_genes=200)``,
    ``filter_genes(min_cells=3)``, keep cells with < 2,500 genes and < 5% mitochondrial counts,
    ``normalize_total(1e4)``, ``log1p``, highly variable genes (seurat flavour), ``regress_out``
    total counts and mitochondrial percentage, ``scale(max_value=10)``, PCA (arpack),
    ``neighbors(10, 40 PCs)``, ``leiden(resolution=1.0, igraph, 2 iterations, seed 0)`` (the
    tutorial's 0.9 merges CD8 T and NK cells with scanpy 1.11 and igraph 1.0).

    Naming: for every Leiden cluster and marker gene, the cluster's mean log-normalised
    expression is z-scored across clusters; a cluster's score for a cell type is the mean z of
    that type's markers (``PBMC3K_MARKERS``, the tutorial's table) and it takes the type with the
    highest score. Clusters with the same type are merged. Cells failing QC get no label.
    """
    from importlib.metadata import version

    import scanpy as sc

    p = PBMC3K_PARAMS
    a = counts.copy()
    a.X = a.X.astype(np.float32)
    sc.pp.filter_cells(a, min_genes=p["filter_cells_min_genes"])
    sc.pp.filter_genes(a, min_cells=p["filter_genes_min_cells"])
    a.var["mt"] = a.var_names.str.startswith("MT-")
    sc.pp.calculate_qc_metrics(a, qc_vars=["mt"], percent_top=None, log1p=False, inplace=True)
    keep = (a.obs["n_genes_by_counts"] < p["max_genes_by_counts"]) & (
        a.obs["pct_counts_mt"] < p["max_pct_counts_mt"]
    )
    a = a[keep.to_numpy()].copy()
    sc.pp.normalize_total(a, target_sum=p["normalize_total_target_sum"])
    sc.pp.log1p(a)
    lognorm = a.copy()
    sc.pp.highly_variable_genes(a, min_mean=0.0125, max_mean=3, min_disp=0.5)
    a = a[:, a.var["highly_variable"].to_numpy()].copy()
    sc.pp.regress_out(a, ["total_counts", "pct_counts_mt"])
    sc.pp.scale(a, max_value=p["scale_max_value"])
    sc.tl.pca(a, svd_solver="arpack")
    sc.pp.neighbors(a, n_neighbors=10, n_pcs=40)
    sc.tl.leiden(
        a,
        resolution=PBMC3K_RESOLUTION,
        random_state=0,
        flavor="igraph",
        n_iterations=2,
        directed=False,
    )
    clusters = a.obs["leiden"].astype(str)

    markers = [g for genes in PBMC3K_MARKERS.values() for g in genes]
    expr = pd.DataFrame(
        lognorm[:, markers].X.toarray(), index=lognorm.obs_names, columns=markers
    ).groupby(clusters.to_numpy())
    means = expr.mean()
    z = (means - means.mean()) / means.std(ddof=0)
    scores = pd.DataFrame({t: z[genes].mean(axis=1) for t, genes in PBMC3K_MARKERS.items()})
    cluster_type = scores.idxmax(axis=1)
    missing = set(PBMC3K_MARKERS) - set(cluster_type)
    assert not missing, f"no cluster named {missing}; scores:\n{scores.round(2)}"

    obs = pd.DataFrame(index=counts.obs_names)
    order = sorted(set(clusters), key=int)
    obs[PBMC3K_CLUSTER_KEY] = pd.Categorical(clusters.reindex(obs.index), categories=order)
    obs[PBMC3K_KEY] = pd.Categorical(
        clusters.map(cluster_type).reindex(obs.index), categories=list(PBMC3K_MARKERS)
    )
    print("PBMC 3k marker scores (mean z over each type's markers):")
    print(scores.round(2).assign(type=cluster_type).to_string())
    record = {
        "procedure": (
            "scanpy PBMC 3k tutorial clustering on the raw counts, then marker-based names: "
            "each Leiden cluster takes the cell type whose markers have the highest mean "
            "z-score (cluster means of log-normalised expression, z-scored across clusters); "
            "cells failing QC are unlabelled (NaN)"
        ),
        "params": {k: str(v) for k, v in PBMC3K_PARAMS.items()},
        "markers": {t: list(g) for t, g in PBMC3K_MARKERS.items()},
        "cluster_to_cell_type": {str(k): str(v) for k, v in cluster_type.items()},
        "versions": {pkg: version(pkg) for pkg in ("scanpy", "igraph", "anndata", "numpy")},
        "n_labelled": int(obs[PBMC3K_KEY].notna().sum()),
    }
    return obs, record
