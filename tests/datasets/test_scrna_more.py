"""Tests of the datasets added for issue 9 (built by scripts/build_more_scrna_datasets.py)."""

from __future__ import annotations

import socket
import subprocess

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from omicformer import datasets

LOADERS = {
    "pbmc3k_desc": datasets.pbmc3k_desc,
    "hlca_query": datasets.hlca_query,
    "wu2020_tcells": datasets.wu2020_tcells,
    "oligodendroglioma": datasets.oligodendroglioma,
    "pbmc_cite_two_batch": datasets.pbmc_cite_two_batch,
}
SHAPES = {
    "pbmc3k_desc": (2700, 16634),
    "hlca_query": (1786, 19255),
    "wu2020_tcells": (200, 12047),
    "oligodendroglioma": (184, 9450),
    "pbmc_cite_two_batch": (400, 14520),
}
MAIN_LAYER = {name: "counts" for name in LOADERS} | {"oligodendroglioma": "norm"}
COUNT_DATASETS = ["pbmc3k_desc", "hlca_query", "wu2020_tcells", "pbmc_cite_two_batch"]
LICENCES = {
    "pbmc3k_desc": "MIT",
    "hlca_query": "BSD-3-Clause",
    "wu2020_tcells": "BSD-3-Clause",
    "oligodendroglioma": "BSD-3-Clause",
    "pbmc_cite_two_batch": "BSD-3-Clause",
}
LABEL = "cell_type_scanpy_pbmc3k"


@pytest.fixture(scope="module")
def loaded():
    return {name: loader() for name, loader in LOADERS.items()}


def _lognorm(x: sp.csr_matrix) -> sp.csr_matrix:
    out = sp.csr_matrix(x.multiply(1e4 / np.asarray(x.sum(axis=1))), dtype=np.float64)
    out.data = np.log1p(out.data)
    return out


def test_exported():
    for name in [*LOADERS, "pbmc_cite_two_batch_mudata"]:
        assert name in datasets.__all__
        assert callable(getattr(datasets, name))


def test_loaders_need_no_network_or_subprocess(loaded, monkeypatch):
    # `loaded` imports anndata & co. first: only the loaders' own work runs under the block
    def refuse(*args, **kwargs):
        msg = "a bundled dataset loader tried to reach the network or run a program"
        raise AssertionError(msg)

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    for loader in LOADERS.values():
        assert loader().n_obs > 0


@pytest.mark.parametrize("name", list(LOADERS))
def test_docstring_licence_and_citation(name):
    doc = LOADERS[name].__doc__
    assert f"Licence: {LICENCES[name]}" in doc
    assert "Citation" in doc
    assert "Examples" in doc


@pytest.mark.parametrize("name", list(LOADERS))
def test_shape_dtype_layers(loaded, name):
    adata = loaded[name]
    assert adata.shape == SHAPES[name]
    assert adata.obs_names.is_unique
    assert adata.var_names.is_unique
    assert sp.issparse(adata.X)
    assert adata.X.format == "csr"
    assert adata.X.dtype == np.float32
    layer = adata.layers[MAIN_LAYER[name]]
    assert layer.dtype == np.float32
    assert layer is not adata.X
    assert (layer != adata.X).nnz == 0
    assert adata.X.data.min() > 0
    # the build script drops genes that are zero in every cell
    assert np.asarray((adata.X > 0).sum(axis=0)).min() >= 1
    assert np.asarray((adata.X > 0).sum(axis=1)).min() >= 1
    info = adata.uns["omicformer_dataset"]
    assert info["source"].startswith("PyPI ")
    assert LICENCES[name] in info["license"]


@pytest.mark.parametrize("name", COUNT_DATASETS)
def test_counts_are_integers(loaded, name):
    counts = loaded[name].layers["counts"]
    np.testing.assert_array_equal(counts.data, np.rint(counts.data))
    assert counts.data.min() >= 1


@pytest.mark.parametrize("name", list(LOADERS))
def test_fresh_copy_each_call(loaded, name):
    first = LOADERS[name]()
    first.X.data[:] = -1.0
    first.obs["extra"] = 1
    second = LOADERS[name]()
    assert second.X.min() >= 0
    assert "extra" not in second.obs
    assert (second.X != loaded[name].X).nnz == 0


# ------------------------------------------------------------------------------------------
# PBMC 3k
# ------------------------------------------------------------------------------------------
def test_pbmc3k_labels(loaded):
    adata = loaded["pbmc3k_desc"]
    labels = adata.obs[LABEL]
    assert labels.dtype == "category"
    assert labels.value_counts().to_dict() == {
        "CD4 T": 1138,
        "CD14+ Monocytes": 486,
        "B": 341,
        "CD8 T": 310,
        "NK": 164,
        "FCGR3A+ Monocytes": 150,
        "Dendritic": 36,
        "Megakaryocytes": 13,
    }
    assert labels.isna().sum() == 62
    clusters = adata.obs["leiden_scanpy_pbmc3k"]
    assert clusters.isna().equals(labels.isna())
    # one type per cluster
    pairs = adata.obs.dropna().groupby("leiden_scanpy_pbmc3k", observed=True)[LABEL].nunique()
    assert (pairs == 1).all()
    record = adata.uns[LABEL]
    assert "scanpy PBMC 3k tutorial" in record["procedure"]
    assert set(record["markers"]) == set(labels.cat.categories)
    assert "resolution=1.0" in record["params"]["leiden"]


def test_pbmc3k_unlabelled_cells_are_the_tutorial_qc_failures(loaded):
    # QC of the scanpy tutorial recomputed with numpy from the counts
    counts = loaded["pbmc3k_desc"].layers["counts"]
    var_names = loaded["pbmc3k_desc"].var_names
    genes_per_cell = np.asarray((counts > 0).sum(axis=1)).ravel()
    kept_genes = np.asarray((counts > 0).sum(axis=0)).ravel() >= 3
    sub = counts[:, kept_genes]
    n_genes = np.asarray((sub > 0).sum(axis=1)).ravel()
    mito = var_names[kept_genes].str.startswith("MT-")
    pct_mt = (
        100 * np.asarray(sub[:, mito].sum(axis=1)).ravel() / np.asarray(sub.sum(axis=1)).ravel()
    )
    passed = (genes_per_cell >= 200) & (n_genes < 2500) & (pct_mt < 5)
    assert passed.sum() == 2638
    np.testing.assert_array_equal(passed, loaded["pbmc3k_desc"].obs[LABEL].notna().to_numpy())


@pytest.mark.parametrize(
    ("gene", "cell_type"),
    [  # canonical markers that are NOT in the naming table
        ("CD79A", "B"),
        ("LDHB", "CD4 T"),
        ("CD8B", "CD8 T"),
        ("KLRD1", "NK"),
        ("S100A8", "CD14+ Monocytes"),
        ("CDKN1C", "FCGR3A+ Monocytes"),
        ("CLEC10A", "Dendritic"),
        ("PF4", "Megakaryocytes"),
    ],
)
def test_pbmc3k_labels_agree_with_other_markers(loaded, gene, cell_type):
    adata = loaded["pbmc3k_desc"]
    labelled = adata.obs[LABEL].notna().to_numpy()
    values = _lognorm(adata.X[labelled])[:, adata.var_names.get_loc(gene)].toarray().ravel()
    means = pd.Series(values).groupby(adata.obs[LABEL][labelled].to_numpy(), observed=True).mean()
    assert means.idxmax() == cell_type


def test_pbmc3k_contains_seurat_small(loaded):
    adata = loaded["pbmc3k_desc"]
    small = datasets.pbmc_seurat_small()
    barcodes = small.obs_names + "-1"
    assert barcodes.isin(adata.obs_names).all()
    same = adata[barcodes, small.var_names].X
    assert (same != small.X).nnz == 0
    # Seurat's 80 cells were picked across its annotated types: ours has all 8, ~10 each
    counts = adata.obs.loc[barcodes, LABEL].value_counts()
    assert len(counts) == 8
    assert counts.min() >= 5


# ------------------------------------------------------------------------------------------
# HLCA query
# ------------------------------------------------------------------------------------------
def test_hlca_symbols_mapped_from_ensembl(loaded):
    adata = loaded["hlca_query"]
    ids = adata.var["gene_ids"]
    assert ids.str.match(r"^ENSG\d{11}$").all()
    assert ids.is_unique
    # Ensembl ids of well-known genes (from Ensembl, independent of the build)
    expected = {
        "GAPDH": "ENSG00000111640",
        "ACTB": "ENSG00000075624",
        "PTPRC": "ENSG00000081237",
        "EPCAM": "ENSG00000119888",
        "SFTPC": "ENSG00000168484",
        "CLIC3": "ENSG00000169583",
        "RCCD1": "ENSG00000166965",
    }
    for symbol, gene_id in expected.items():
        assert adata.var.loc[symbol, "gene_ids"] == gene_id
    # the damaged names of the source file are gone
    assert not {"LIC3", "D1", "APDH"} & set(adata.var_names)
    sources = adata.var["symbol_source"].value_counts().to_dict()
    assert sources == {"GENCODE v44": 19104, "Ensembl id": 118, "10x hg19 (desc pbmc3k)": 33}
    by_id = adata.var["symbol_source"] == "Ensembl id"
    assert (adata.var_names[by_id] == ids[by_id]).all()
    # lung tissue: alveolar type 2 marker detected in many cells
    assert (adata[:, "SFTPC"].X > 0).sum() > 50


# ------------------------------------------------------------------------------------------
# Wu et al. 2020 T cells
# ------------------------------------------------------------------------------------------
def test_wu2020_metadata(loaded):
    adata = loaded["wu2020_tcells"]
    obs = adata.obs
    assert list(obs.columns) == ["cluster_orig", "patient", "sample", "source", "clonotype_orig"]
    assert obs["cluster_orig"].nunique() == 16
    assert obs["cluster_orig"].value_counts()["4.4-FOS"] == 25
    assert obs["patient"].nunique() == 14
    assert obs["source"].value_counts().to_dict() == {"Tumor": 95, "NAT": 85, "Blood": 20}
    assert obs.notna().all().all()
    assert adata.obsm["X_umap_orig"].shape == (200, 2)
    assert adata.var["gene_ids"].str.startswith("GeneID:").all()
    # T cells: CD3E detected in most cells; CD8A where the subtype says CD8
    cd3e = np.asarray(adata[:, "CD3E"].X.toarray()).ravel()
    assert (cd3e > 0).mean() > 0.8
    cd8a = np.asarray(adata[:, "CD8A"].X.toarray()).ravel() > 0
    is_cd8 = obs["cluster_orig"].str.startswith("8.").to_numpy()
    assert cd8a[is_cd8].mean() > 0.5 > cd8a[~is_cd8].mean()


# ------------------------------------------------------------------------------------------
# Oligodendroglioma
# ------------------------------------------------------------------------------------------
def test_oligodendroglioma(loaded):
    adata = loaded["oligodendroglioma"]
    assert adata.obs["cell_type"].value_counts().to_dict() == {
        "malignant_93": 40,
        "malignant_97": 35,
        "malignant_MGH53": 34,
        "malignant_MGH36": 33,
        "Oligodendrocytes (non-malignant)": 23,
        "Microglia/Macrophage": 19,
    }
    x = adata.X.data
    assert (x != np.rint(x)).mean() > 0.9  # normalised values, not counts
    totals = np.asarray(adata.X.sum(axis=1)).ravel()
    assert 75_000 < totals.min() < totals.max() < 129_000
    # rounded to 11 significant bits: the 13 low mantissa bits are zero
    assert not (x.view(np.uint32) & np.uint32((1 << 13) - 1)).any()
    var = adata.var
    assert set(var.columns) == {"chromosome", "start", "end"}
    assert (var["end"] > var["start"]).all()
    assert set(var["chromosome"]) <= {f"chr{c}" for c in [*range(1, 23), "X", "Y"]}


# ------------------------------------------------------------------------------------------
# CITE-seq, two batches
# ------------------------------------------------------------------------------------------
def test_cite_two_batches_and_proteins(loaded):
    adata = loaded["pbmc_cite_two_batch"]
    batch = adata.obs["batch"]
    assert batch.dtype == "category"
    assert batch.value_counts().to_dict() == {"pbmc_10k_protein_v3": 200, "pbmc_5k_protein_v3": 200}
    prot = adata.obsm["protein_expression"]
    assert isinstance(prot, pd.DataFrame)
    assert prot.shape == (400, 14)
    assert prot.index.equals(adata.obs_names)
    assert {"CD3_TotalSeqB", "CD4_TotalSeqB", "CD19_TotalSeqB", "CD14_TotalSeqB"} <= set(prot)
    values = prot.to_numpy()
    np.testing.assert_array_equal(values, np.rint(values))
    assert values.min() >= 0
    for name in batch.cat.categories:
        assert (prot[(batch == name).to_numpy()].sum(axis=0) > 0).all()
    measured = adata.uns["protein_measured"]
    assert len(measured["pbmc_10k_protein_v3"]) == 14
    assert len(measured["pbmc_5k_protein_v3"]) == 29


def test_cite_all_proteins():
    adata = datasets.pbmc_cite_two_batch(proteins="all")
    prot = adata.obsm["protein_expression"]
    assert prot.shape == (400, 29)
    in_10k = (adata.obs["batch"] == "pbmc_10k_protein_v3").to_numpy()
    only_5k = [p for p in prot if p not in adata.uns["protein_measured"]["pbmc_10k_protein_v3"]]
    assert len(only_5k) == 15
    assert (prot.loc[in_10k, only_5k] == 0).all().all()
    assert (prot.loc[~in_10k, only_5k].sum(axis=0) > 0).all()


def test_cite_rejects_unknown_proteins_option():
    with pytest.raises(ValueError, match="'shared' or 'all'"):
        datasets.pbmc_cite_two_batch(proteins="some")


def test_cite_mudata():
    md = pytest.importorskip("mudata")
    mdata = datasets.pbmc_cite_two_batch_mudata()
    assert isinstance(mdata, md.MuData)
    assert set(mdata.mod) == {"rna", "prot"}
    assert mdata.mod["rna"].shape == (400, 14520)
    assert mdata.mod["prot"].shape == (400, 14)
    assert "protein_expression" not in mdata.mod["rna"].obsm
    assert mdata.obs["batch"].value_counts().to_dict() == {
        "pbmc_10k_protein_v3": 200,
        "pbmc_5k_protein_v3": 200,
    }
    table = datasets.pbmc_cite_two_batch().obsm["protein_expression"]
    np.testing.assert_array_equal(mdata.mod["prot"].layers["counts"], table.to_numpy())
    assert datasets.pbmc_cite_two_batch_mudata(proteins="all").mod["prot"].n_vars == 29


# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("pbmc3k_desc", 0.879),
        ("hlca_query", 0.859),
        ("wu2020_tcells", 0.883),
        ("oligodendroglioma", 0.939),
        ("pbmc_cite_two_batch", 0.875),
    ],
)
def test_vocab_match(loaded, name, expected):
    vocab = datasets.official_census_vocab()
    frac = loaded[name].var_names.isin(list(vocab)).mean()
    assert frac == pytest.approx(expected, abs=0.001)
