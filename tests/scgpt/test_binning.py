import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from omicformer.scgpt import pp
from omicformer.scgpt._binning import bin_nonzero


def test_bins_equal_official_without_ties(official):
    rng = np.random.default_rng(0)
    for _ in range(20):
        row = rng.gamma(2, 2, size=300)
        row[rng.random(300) < 0.6] = 0
        np.random.seed(0)
        ref = official.binning(row, 51)
        ours = np.zeros_like(ref)
        nz = row.nonzero()[0]
        ours[nz], _ = bin_nonzero(row[nz], 51, np.random.default_rng(5))
        np.testing.assert_array_equal(ours, ref)


def test_ties_within_official_range_and_seeded():
    row = np.array([1, 1, 1, 1, 2, 2, 3, 5, 8, 1, 1, 2], dtype=float)
    edges = np.quantile(row, np.linspace(0, 1, 50))
    lo = np.digitize(row, edges, right=True) + 1
    hi = np.digitize(row, edges)
    a, _ = bin_nonzero(row, 51, np.random.default_rng(3))
    b, _ = bin_nonzero(row, 51, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert np.all((a >= np.minimum(lo, hi)) & (a <= hi))
    assert a.min() >= 1 and a.max() == 50
    draws = {tuple(bin_nonzero(row, 51, np.random.default_rng(s))[0]) for s in range(20)}
    assert len(draws) > 1  # ties really are random


def test_bin_expression_layer(counts_adata):
    before = counts_adata.X.copy()
    pp.bin_expression(counts_adata, n_bins=51, random_state=0)
    binned = counts_adata.layers["X_binned"]
    assert sp.issparse(binned)
    dense_in = counts_adata.X.toarray()
    dense_b = binned.toarray()
    assert np.array_equal(dense_b == 0, dense_in == 0)
    assert dense_b.max() == 50 and dense_b[dense_in > 0].min() >= 1
    assert counts_adata.obsm["X_binned_edges"].shape == (counts_adata.n_obs, 51)
    assert (counts_adata.X != before).nnz == 0
    again = pp.bin_expression(counts_adata, random_state=0, copy=True)
    assert (again.layers["X_binned"] != binned).nnz == 0
    assert counts_adata.uns["scgpt"]["X_binned"]["params"]["n_bins"] == 51
    # a second call under another key keeps the first call's edges and parameters
    pp.bin_expression(counts_adata, n_bins=11, key_added="bins11")
    assert counts_adata.obsm["X_binned_edges"].shape == (counts_adata.n_obs, 51)
    assert counts_adata.obsm["bins11_edges"].shape == (counts_adata.n_obs, 11)
    assert counts_adata.uns["scgpt"]["X_binned"]["params"]["n_bins"] == 51
    assert counts_adata.uns["scgpt"]["bins11"]["params"]["n_bins"] == 11
    assert counts_adata.layers["bins11"].max() == 10


def test_bin_expression_errors_leave_input(counts_adata):
    with pytest.raises(KeyError, match="layer='nope'"):
        pp.bin_expression(counts_adata, layer="nope")
    bad = counts_adata.copy()
    bad.X = bad.X.toarray()
    bad.X[0, 0] = -1
    with pytest.raises(ValueError, match="negative"):
        pp.bin_expression(bad)
    assert "X_binned" not in bad.layers
    bad.X[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pp.bin_expression(bad)
    assert "X_binned" not in bad.layers and "X_binned_edges" not in bad.obsm


def test_uns_section_of_another_kind_is_refused_before_any_change(counts_adata, official_ckpt):
    from omicformer.scgpt import tl

    ckpt = official_ckpt[0]
    a = counts_adata.copy()
    a.uns["scgpt"] = "my notes"  # where every function records its parameters, as a dict
    calls = {
        "bin_expression": lambda: pp.bin_expression(a),
        "match_vocab": lambda: pp.match_vocab(a, ckpt / "vocab.json"),
        "embed": lambda: tl.embed(a, model=ckpt, progress=False),
        "integrate": lambda: tl.integrate(a, batch_key="batch", model=ckpt),
        "annotate": lambda: tl.annotate(a, a.copy(), label_key="batch", model=ckpt),
    }
    before = a.copy()
    for name, call in calls.items():
        with pytest.raises(ValueError, match=r"adata.uns\['scgpt'\] holds a str"):
            call()
        assert a.uns["scgpt"] == "my notes", name
        assert set(a.layers) == set(before.layers) and set(a.obsm) == set(before.obsm), name
        assert a.var.columns.equals(before.var.columns), name


def _tied_counts(n_obs=40, n_vars=300, seed=7):
    """Integer counts with many repeats (1s and 2s dominate), ~half zeros, one dense cell."""
    rng = np.random.default_rng(seed)
    X = rng.negative_binomial(1, 0.4, size=(n_obs, n_vars)).astype(np.float32)
    X[0] = rng.poisson(3.0, size=n_vars) + 1  # a cell without zeros
    return X


def test_ties_match_official_range_on_counts(official):
    X = _tied_counts()
    adata = ad.AnnData(sp.csr_matrix(X))
    out = pp.bin_expression(adata, n_bins=51, random_state=0, copy=True)
    ours = out.layers["X_binned"].toarray()
    n_tied = 0
    for i, row in enumerate(X):
        right, left = official.bin_range(row, 51)
        lo, hi = np.minimum(right + 1, left), left  # official draw: right+1..left, or left
        nz = row != 0
        assert np.all(ours[i][~nz] == 0)
        assert np.all((ours[i][nz] >= lo[nz]) & (ours[i][nz] <= hi[nz])), i
        fixed = nz & (lo == hi)
        np.testing.assert_array_equal(ours[i][fixed], left[fixed])
        assert ours[i][nz].min() >= 1 and ours[i][nz].max() == 50
        n_tied += int(np.sum(nz & (lo < hi)))
        # the official function itself (global-state draws) lands in the same range
        np.random.seed(i)
        ref = official.binning(row, 51)
        assert np.all((ref[nz] >= lo[nz]) & (ref[nz] <= hi[nz])) and np.all(ref[~nz] == 0)
    assert n_tied > 0.5 * np.count_nonzero(X)  # the data really is tie-heavy
    # same seed -> same bins; another seed moves at least one tied value (and only tied ones)
    again = pp.bin_expression(adata, n_bins=51, random_state=0, copy=True).layers["X_binned"]
    np.testing.assert_array_equal(again.toarray(), ours)
    other = pp.bin_expression(adata, n_bins=51, random_state=1, copy=True).layers["X_binned"]
    changed = other.toarray() != ours
    assert changed.any()
    for i in np.unique(np.nonzero(changed)[0]):
        right, left = official.bin_range(X[i], 51)
        assert np.all(np.minimum(right + 1, left)[changed[i]] < left[changed[i]])


def test_backed_copy_and_backed_view_are_refused_before_binning(counts_adata, tmp_path):
    # anndata cannot copy a backed AnnData without a file name, nor add a layer to a backed
    # view: both are refused first, with the way out, rather than failing after the binning
    counts_adata.write_h5ad(tmp_path / "a.h5ad")
    backed = ad.read_h5ad(tmp_path / "a.h5ad", backed="r")
    with pytest.raises(ValueError, match="copy=True is not supported for backed AnnData"):
        pp.bin_expression(backed, copy=True)
    with pytest.raises(ValueError, match=r"view of a backed AnnData.*to_memory\(\)"):
        pp.bin_expression(backed[:10])
    assert "X_binned" not in backed.layers and "X_binned_edges" not in backed.obsm


def test_backed_sparse_input_gets_a_sparse_layer(counts_adata, tmp_path):
    # "sparse if the input is sparse": a backed file's CSR X too (dense, an atlas would not fit)
    counts_adata.write_h5ad(tmp_path / "a.h5ad")
    backed = ad.read_h5ad(tmp_path / "a.h5ad", backed="r")
    pp.bin_expression(backed)  # in place: binned in chunks, held in memory
    assert sp.issparse(backed.layers["X_binned"])
    expected = pp.bin_expression(counts_adata, copy=True).layers["X_binned"]
    np.testing.assert_array_equal(backed.layers["X_binned"].toarray(), expected.toarray())


def test_duplicate_entries_are_binned_once(counts_adata):
    # scipy sums a CSR's duplicate entries; each half binned on its own went past n_bins - 1
    X = counts_adata.X
    c = sp.coo_matrix(X)
    row, col = np.r_[c.row, c.row], np.r_[c.col, c.col]
    data = np.r_[c.data / 2, c.data / 2].astype(np.float32)
    order = np.lexsort((col, row))
    indptr = np.r_[0, np.cumsum(np.bincount(row, minlength=X.shape[0]))]
    twice = ad.AnnData(sp.csr_matrix((data[order], col[order], indptr), shape=X.shape))
    twice.var_names = counts_adata.var_names
    expected = pp.bin_expression(counts_adata, n_bins=11, copy=True).layers["X_binned"]
    pp.bin_expression(twice, n_bins=11)
    assert twice.layers["X_binned"].max() <= 10
    np.testing.assert_array_equal(twice.layers["X_binned"].toarray(), expected.toarray())


def test_a_dask_x_of_sparse_chunks_gets_a_sparse_layer(counts_adata):
    da = pytest.importorskip("dask.array")  # anndata's lazy X; dask is optional
    expected = pp.bin_expression(counts_adata, random_state=0, copy=True).layers["X_binned"]
    lazy = ad.AnnData(X=da.from_array(counts_adata.X, chunks=(7, -1), asarray=False))
    lazy.var_names = counts_adata.var_names
    pp.bin_expression(lazy, random_state=0)
    assert sp.issparse(lazy.layers["X_binned"])  # as for any sparse input, not dense
    np.testing.assert_array_equal(lazy.layers["X_binned"].toarray(), expected.toarray())
