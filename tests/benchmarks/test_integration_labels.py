"""benchmarks/integration.py: the protein-derived cell types of the ``pbmc_cite`` set."""

from __future__ import annotations

import sys

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


def test_pbmc4_holds_four_batches_on_their_shared_genes(integration):
    adata, batch_key, label_key = integration.pbmc4()
    sizes = adata.obs[batch_key].value_counts().to_dict()
    assert sizes == {"pbmc68k_reduced": 700, "pbmc_celltypist": 559,
                     "pbmc_10k_protein_v3": 200, "pbmc_5k_protein_v3": 200}  # fmt: skip
    genes = set(datasets.pbmc68k_reduced().var_names)
    for other in (datasets.pbmc_celltypist(), datasets.pbmc_cite_two_batch()):
        genes &= set(other.var_names)
    assert set(adata.var_names) == genes
    counts = adata.layers["counts"]
    assert np.array_equal(counts.data, np.round(counts.data))
    # the CITE-seq runs: scGPT reads their counts; lognorm is log1p of counts per 10,000 of
    # the run's whole library (all its genes), so it is not a function of the shared genes'
    # counts alone; check it is log1p of counts times one factor per cell
    run = (adata.obs[batch_key] == "pbmc_5k_protein_v3").to_numpy()
    x, lognorm = adata[run].X.toarray(), adata[run].layers["lognorm"].toarray()
    ratio = np.expm1(lognorm)[x > 0] / x[x > 0]
    per_cell = np.repeat(np.arange(run.sum()), (x > 0).sum(1))
    spread = pd.Series(ratio).groupby(per_cell).agg(lambda r: r.max() / r.min() - 1)
    assert spread.max() < 1e-4
    assert set(adata.obs[label_key]) <= {"T", "B", "NK", "myeloid", "megakaryocyte"}


def test_pbmc3_holds_three_experiments_with_700_cells_of_pbmc3k(integration):
    adata, batch_key, label_key = integration.pbmc3()
    sizes = adata.obs[batch_key].value_counts().to_dict()
    assert sizes == {"pbmc68k_reduced": 700, "pbmc_celltypist": 559, "pbmc3k_desc": 700}
    genes = set(datasets.pbmc68k_reduced().var_names) & set(datasets.pbmc_celltypist().var_names)
    raw = datasets.pbmc3k_desc()
    assert set(adata.var_names) == genes & set(raw.var_names)
    cells = adata[adata.obs[batch_key] == "pbmc3k_desc"]
    names = cells.obs_names.str.removesuffix("-pbmc3k_desc")
    assert names.is_unique and set(names) <= set(raw.obs_names)
    # scGPT reads PBMC 3k's raw counts of those cells, unchanged
    expected = raw[names, list(cells.var_names)].X
    np.testing.assert_array_equal(cells.X.toarray(), np.asarray(expected.todense()))
    assert set(adata.obs[label_key]) <= {"T", "B", "NK", "myeloid", "megakaryocyte"}


def test_two_batch_pairings_are_two_of_pbmc5s_batches(integration, monkeypatch):
    # a small stand-in for pbmc5 (building it labels five experiments): the pairings must be
    # its cells of the two named batches, values and labels unchanged, unused categories gone
    rng = np.random.default_rng(0)
    batches = ["pbmc68k_reduced", "pbmc3k_desc", "pbmc_celltypist", "pbmc_5k_protein_v3",
               "pbmc_10k_protein_v3"]  # fmt: skip
    obs = pd.DataFrame({"batch": pd.Categorical(rng.choice(batches, 60)),
                        "cell_type": pd.Categorical(rng.choice(["T", "B", "NK"], 60))},
                       index=[f"c{i}" for i in range(60)])  # fmt: skip
    five = ad.AnnData(rng.poisson(1.0, (60, 7)).astype(np.float32), obs=obs)
    sets = sys.modules["integration_sets"]  # where integration.py's sets live
    monkeypatch.setattr(sets, "pbmc5", lambda: (five, "batch", "cell_type"))
    pairs = {"pair_pbmc68k_pbmc3k": ["pbmc3k_desc", "pbmc68k_reduced"],
             "pair_celltypist_cite5k": ["pbmc_5k_protein_v3", "pbmc_celltypist"],
             "pair_pbmc68k_cite10k": ["pbmc68k_reduced", "pbmc_10k_protein_v3"],
             "pair_pbmc3k_cite5k": ["pbmc3k_desc", "pbmc_5k_protein_v3"]}  # fmt: skip
    for name, expected in pairs.items():
        pair, bk, lk = integration.SETS[name]()
        assert (bk, lk) == ("batch", "cell_type")
        keep = five.obs["batch"].isin(expected).to_numpy()
        assert list(pair.obs_names) == list(five.obs_names[keep])
        assert sorted(pair.obs[bk].cat.categories) == sorted(expected)
        assert (pair.obs[lk].astype(str).to_numpy() == five.obs[lk].astype(str)[keep]).all()
        np.testing.assert_array_equal(pair.X, five.X[keep])
        assert pair.var_names.equals(five.var_names)


@pytest.mark.parametrize("batch_key", ["source", "patient"])
def test_wu2020_sets_are_the_tcells_by_tissue_or_patient(integration, batch_key):
    adata, key, label_key = integration.SETS[f"wu2020_{batch_key}"]()
    raw = datasets.wu2020_tcells()
    assert (key, label_key) == (batch_key, "cluster_orig")
    assert adata.shape == raw.shape
    assert list(adata.obs[key].astype(str)) == list(raw.obs[batch_key].astype(str))
    assert list(adata.obs[label_key].astype(str)) == list(raw.obs["cluster_orig"].astype(str))
    assert (adata.layers["counts"] != raw.layers["counts"]).nnz == 0
    # log1p(normalize_total(1e4)) of one cell, by hand
    counts = raw.layers["counts"][0].toarray().ravel().astype(np.float64)
    expected = np.log1p(counts / counts.sum() * 1e4)
    np.testing.assert_allclose(adata.layers["lognorm"][0].toarray().ravel(), expected, rtol=1e-5)


def test_oligodendroglioma_set_is_five_patients_and_three_kinds(integration):
    adata, batch_key, label_key = integration.SETS["oligodendroglioma"]()
    raw = datasets.oligodendroglioma()
    assert adata.obs[batch_key].value_counts().to_dict() == {
        "MGH53": 57, "MGH36": 41, "93": 40, "97": 35, "MGH54": 11}  # fmt: skip
    assert adata.obs[label_key].value_counts().to_dict() == {
        "malignant": 142, "Oligodendrocytes (non-malignant)": 23, "Microglia/Macrophage": 19}  # fmt: skip
    # each tumour's malignant cells are that patient's
    malignant = raw.obs["cell_type"].astype(str).str.startswith("malignant_").to_numpy()
    tumour = raw.obs["cell_type"].astype(str).str.removeprefix("malignant_")[malignant]
    assert (adata.obs[batch_key].astype(str)[malignant] == tumour).all()


def test_pbmc_two_batch_set_labels_each_experiment_on_its_own_genes(integration):
    adata, batch_key, label_key = integration.SETS["pbmc_two_batch"]()
    two = datasets.pbmc_two_batch()
    assert list(adata.var_names) == list(two.var_names)
    assert adata.obs[batch_key].value_counts().to_dict() == {"celltypist": 559, "seurat": 80}
    assert (adata.layers["counts"] != two.layers["counts"]).nnz == 0
    # a celltypist cell's label comes from all 32,786 of its genes, not from the 230 shared
    sets = sys.modules["integration_sets"]  # where integration.py's sets live
    raw = datasets.pbmc_celltypist()
    lognorm = sc.pp.log1p(sc.pp.normalize_total(raw, target_sum=1e4, inplace=False)["X"])
    full = ad.AnnData(lognorm, var=pd.DataFrame(index=raw.var_names))
    cells = (adata.obs[batch_key] == "celltypist").to_numpy()
    expected = sets.coarse_marker_labels(full)
    assert list(adata.obs[label_key][cells].astype(str)) == list(expected)
