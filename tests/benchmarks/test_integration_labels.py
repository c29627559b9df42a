"""benchmarks/integration.py: the protein-derived cell types of the ``pbmc_cite`` set."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc

from omicformer import datasets

PROTEINS = ["CD3_TotalSeqB", "CD19_TotalSeqB", "CD56_TotalSeqB", "CD14_TotalSeqB", "CD4_TotalSeqB"]


@pytest.fixture(scope="module")
def integration(load_benchmark):
    return load_benchmark("integration")


def test_protein_labels_hand_example(integration):
    # run "a": cell i (0-3) carries a lot of the i-th marker; cell 4 has more CD4 (not a
    # marker) than CD3 and no other marker, so it is T too. Run "b" is run "a" with 10x the
    # counts: the per-cell CLR makes the labels depend on proportions only.
    a = np.array([[90, 5, 5, 5, 40], [5, 90, 5, 5, 5], [5, 5, 90, 5, 5], [5, 5, 5, 90, 5],
                  [60, 5, 5, 5, 90]], dtype=float)  # fmt: skip
    counts = pd.DataFrame(np.vstack([a, 10 * a]), columns=PROTEINS)
    adata = ad.AnnData(np.zeros((10, 1), dtype=np.float32),
                       obs=pd.DataFrame({"batch": ["a"] * 5 + ["b"] * 5}))  # fmt: skip
    adata.obsm["protein_expression"] = counts.set_axis(adata.obs_names)
    labels = integration.protein_labels(adata, "batch")
    expected = ["T", "B", "NK", "myeloid", "T"]
    assert list(labels) == expected * 2


def test_protein_labels_agree_with_rna_markers(integration):
    # independent of the proteins: each type's own RNA marker is highest in that type
    adata = datasets.pbmc_cite_two_batch()
    labels = integration.protein_labels(adata, "batch")
    lognorm = adata.copy()
    sc.pp.normalize_total(lognorm, target_sum=1e4)
    sc.pp.log1p(lognorm)
    markers = {"T": "CD3E", "B": "MS4A1", "NK": "GNLY", "myeloid": "LYZ"}
    x = pd.DataFrame(lognorm[:, list(markers.values())].X.toarray(), columns=list(markers))
    means = x.groupby(labels).mean()
    for cell_type in markers:
        assert means[cell_type].idxmax() == cell_type
    assert set(labels) == set(markers)
