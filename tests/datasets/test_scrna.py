from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from omicformer import datasets

LOADERS = {
    "pbmc_celltypist": datasets.pbmc_celltypist,
    "pbmc_seurat_small": datasets.pbmc_seurat_small,
    "hsmm": datasets.hsmm,
    "pbmc68k_reduced": datasets.pbmc68k_reduced,
    "pbmc_two_batch": datasets.pbmc_two_batch,
}
SHAPES = {
    "pbmc_celltypist": (559, 32786),
    "pbmc_seurat_small": (80, 230),
    "hsmm": (271, 21412),
    "pbmc68k_reduced": (700, 765),
    "pbmc_two_batch": (639, 230),
}
MAIN_LAYER = {
    "pbmc_celltypist": "counts",
    "pbmc_seurat_small": "counts",
    "hsmm": "fpkm",
    "pbmc68k_reduced": "lognorm",
    "pbmc_two_batch": "counts",
}
COUNT_DATASETS = ["pbmc_celltypist", "pbmc_seurat_small", "pbmc_two_batch"]


@pytest.fixture(scope="module")
def loaded():
    return {name: loader() for name, loader in LOADERS.items()}


@pytest.fixture(scope="module")
def vocab():
    return datasets.official_census_vocab()


def test_exported():
    for name in [*LOADERS, "official_census_vocab"]:
        assert name in datasets.__all__
        assert callable(getattr(datasets, name))


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
    assert (layer != adata.X).nnz == 0
    assert layer is not adata.X
    assert adata.X.min() >= 0
    assert adata.X.nnz > 0


@pytest.mark.parametrize("name", COUNT_DATASETS)
def test_counts_are_integers(loaded, name):
    counts = loaded[name].layers["counts"]
    np.testing.assert_array_equal(counts.data, np.rint(counts.data))
    assert counts.data.min() >= 1
    assert np.asarray(counts.sum(axis=1)).min() > 0  # no empty cell


def test_celltypist_counts(loaded):
    adata = loaded["pbmc_celltypist"]
    assert adata.X.max() == 1448
    totals = np.asarray(adata.X.sum(axis=1)).ravel()
    assert totals.min() == 945
    assert totals.max() == 39886
    assert {"MS4A1", "CD14", "LYZ", "PTPRC"} <= set(adata.var_names)


def test_seurat_small_counts(loaded):
    adata = loaded["pbmc_seurat_small"]
    assert adata.X.max() == 138
    assert set(adata.var_names) <= set(loaded["pbmc_celltypist"].var_names)


def test_hsmm(loaded):
    adata = loaded["hsmm"]
    obs = adata.obs
    assert list(obs["Library"].cat.categories) == ["SCC10013", "SCC10014", "SCC10015", "SCC10023"]
    assert obs["Hours"].value_counts().sort_index().tolist() == [69, 74, 79, 49]
    assert obs["Hours"].cat.ordered
    assert obs["Media"].value_counts().to_dict() == {"DM": 202, "GM": 69}
    assert set(obs["State"].cat.categories) == {"1", "2", "3"}
    assert obs["Pseudotime"].notna().all()
    # each plate is one time point (documented confounding)
    assert (obs.groupby("Library", observed=True)["Hours"].nunique() == 1).all()
    # FPKM filter rules from the build script
    assert adata.X.data.min() >= 1e-3
    assert (adata.var["n_cells"] >= 3).all()
    np.testing.assert_array_equal(
        adata.var["n_cells"].to_numpy(), np.asarray((adata.X > 0).sum(axis=0)).ravel()
    )
    assert adata.var["gene_ids"].str.startswith("ENS").all()
    assert adata.var["gene_ids"].is_unique
    assert {"MYOG", "DES", "CDK1"} <= set(adata.var_names)
    assert adata.var.loc["MYOG", "gene_ids"].startswith("ENSG00000122180")


def test_pbmc68k_reduced(loaded):
    adata = loaded["pbmc68k_reduced"]
    assert adata.raw is None
    assert adata.X.max() == pytest.approx(6.489, abs=1e-3)
    assert adata.obs["bulk_labels"].nunique() == 10
    for key in ("bulk_labels", "louvain", "phase", "n_counts"):
        assert key in adata.obs
        assert adata.obs[key].notna().all()
    assert adata.layers["scaled"].shape == adata.shape
    assert adata.layers["scaled"].min() < 0
    assert adata.obsm["X_umap"].shape == (700, 2)
    # log1p(x * s) is increasing per cell, so per-cell quantile binning (scGPT, 51 bins) of the
    # log-normalised values equals the binning of the pseudo-counts they come from
    scale = adata.obs["n_counts"].to_numpy() / 1e4
    for i in range(0, 700, 70):
        row = adata.X[i].toarray().ravel().astype(np.float64)
        for values in (row, np.expm1(row) * scale[i]):
            nz = values[values > 0]
            edges = np.quantile(nz, np.linspace(0, 1, 50))
            bins = np.digitize(nz, edges)
            if values is row:
                expected = bins
        np.testing.assert_array_equal(bins, expected)


def test_two_batch(loaded):
    adata = loaded["pbmc_two_batch"]
    assert adata.obs["batch"].dtype == "category"
    assert adata.obs["batch"].value_counts().to_dict() == {"celltypist": 559, "seurat": 80}
    assert list(adata.var_names) == list(loaded["pbmc_seurat_small"].var_names)
    seurat = adata[adata.obs["batch"] == "seurat"]
    assert (seurat.X != loaded["pbmc_seurat_small"].X).nnz == 0
    celltypist = adata[adata.obs["batch"] == "celltypist"]
    expected = loaded["pbmc_celltypist"][:, adata.var_names].X
    assert (celltypist.X != expected).nnz == 0


@pytest.mark.parametrize("name", list(LOADERS))
def test_fresh_copy_each_call(loaded, name):
    first = LOADERS[name]()
    first.X.data[:] = -1.0
    first.layers[MAIN_LAYER[name]].data[:] = -1.0
    first.obs["extra"] = 1
    second = LOADERS[name]()
    assert second.X.min() >= 0
    assert second.layers[MAIN_LAYER[name]].min() >= 0
    assert "extra" not in second.obs
    assert (second.X != loaded[name].X).nnz == 0


def test_official_census_vocab(vocab):
    assert len(vocab) == 60694
    assert vocab["A1BG"] == 0
    assert sorted(vocab.values()) == list(range(60694))
    assert not {"<pad>", "<cls>", "<eoc>"} & set(vocab)
    vocab["A1BG"] = 5
    assert datasets.official_census_vocab()["A1BG"] == 0


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("pbmc_celltypist", 0.835),
        ("pbmc_seurat_small", 0.943),
        ("hsmm", 0.827),
        ("pbmc68k_reduced", 0.922),
    ],
)
def test_vocab_match(loaded, vocab, name, expected):
    frac = loaded[name].var_names.isin(list(vocab)).mean()
    assert frac == pytest.approx(expected, abs=0.001)
