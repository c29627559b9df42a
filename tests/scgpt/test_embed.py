import warnings

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from omicformer.scgpt import tl
from omicformer.scgpt._tokenize import tokenize_rows


@pytest.fixture
def ckpt(official_ckpt):
    return str(official_ckpt[0])


def _embed(adata, ckpt, **kw):
    kw = {"device": "cpu", "progress": False, **kw}
    return tl.embed(adata, model=ckpt, **kw)


def test_batch_size_and_buckets_do_not_change_result(ckpt, continuous_adata_factory):
    a = continuous_adata_factory(33)
    r1 = _embed(a, ckpt, batch_size=1, copy=True).obsm["X_scgpt"]
    r2 = _embed(a, ckpt, batch_size=64, copy=True).obsm["X_scgpt"]
    np.testing.assert_allclose(r1, r2, atol=2e-5)


def test_copy_semantics_and_seed(ckpt, continuous_adata_factory):
    a = continuous_adata_factory(10)
    out = _embed(a, ckpt, copy=True, max_len=8)
    assert "X_scgpt" not in a.obsm and out.obsm["X_scgpt"].shape == (10, 32)
    assert _embed(a, ckpt, key_added="emb", max_len=8) is None
    np.testing.assert_array_equal(a.obsm["emb"], out.obsm["X_scgpt"])  # same seed, same genes
    other = _embed(a, ckpt, copy=True, max_len=8, random_state=1).obsm["X_scgpt"]
    assert not np.allclose(other, out.obsm["X_scgpt"])  # subsampling really depends on the seed
    assert a.uns["scgpt"]["emb"]["params"]["max_len"] == 8


def test_default_max_len_is_the_models(ckpt, continuous_adata_factory, tmp_path):
    from omicformer.scgpt._resolve import max_len_of
    from omicformer.scgpt.model import ScGPT

    a = continuous_adata_factory(6)
    # official checkpoints and the shipped default model: 1200, the official embed_data's
    assert _embed(a, ckpt, copy=True).uns["scgpt"]["X_scgpt"]["params"]["max_len"] == 1200
    assert max_len_of("default") == 1200
    # a model object or its saved folder: the length the model was trained and embeds with
    work = a.copy()
    ScGPT.setup_anndata(work)
    model = ScGPT.load_pretrained(ckpt, work, max_len=8)
    model.save(tmp_path / "m")
    z = model.get_latent_representation(work, device="cpu", progress=False)  # as _embed
    for m in (model, tmp_path / "m"):
        out = _embed(a, m, copy=True)
        assert out.uns["scgpt"]["X_scgpt"]["params"]["max_len"] == 8
        np.testing.assert_allclose(out.obsm["X_scgpt"], z, atol=1e-5)
    # the cells are longer than 8 tokens, so the length matters
    assert not np.allclose(_embed(a, model, copy=True, max_len=1200).obsm["X_scgpt"], z, atol=1e-3)


def test_subsampling_keeps_cls_and_max_len():
    X = sp.csr_matrix(np.arange(1, 21, dtype=np.float32)[None])
    cells = tokenize_rows(
        X, np.arange(20), cls_id=99, pad_value=-2, max_len=5, rng=np.random.default_rng(0)
    )
    c = cells[0]
    assert len(c.genes) == 5 and c.genes[0] == 99 and c.values[0] == -2
    assert len(set(c.genes[1:])) == 4
    # binning used all 20 genes before subsampling: value of gene j is its bin among all 20
    full = tokenize_rows(
        X, np.arange(20), cls_id=99, pad_value=-2, max_len=None, rng=np.random.default_rng(0)
    )
    lookup = dict(zip(full[0].genes, full[0].values, strict=True))
    assert all(lookup[g] == v for g, v in zip(c.genes, c.values, strict=True))


def test_highest_keeps_the_most_expressed_genes_binned_among_themselves():
    rng = np.random.default_rng(3)
    values = rng.permutation(np.arange(1, 21, dtype=np.float32))  # distinct: no ties
    X = sp.csr_matrix(values[None])
    ids = np.arange(100, 120)
    cells = tokenize_rows(X, ids, cls_id=99, pad_value=-2, max_len=5, n_bins=5,
                          rng=rng, gene_selection="highest")  # fmt: skip
    c = cells[0]
    top4 = np.sort(np.argsort(values)[-4:])  # columns of the values 17..20, in column order
    assert c.genes.tolist() == [99, *ids[top4].tolist()] and c.values[0] == -2
    # binned as if the cell held only those 4 genes. Official binning with 5 bins: edges at the
    # 0, 1/3, 2/3 and 1 quantiles; of 17..20 those are 17, 18, 19, 20, so 17..20 fall in bins
    # 1, 2, 3, 4. (Binned among all 20 values the edges would be 1, 7.3, 13.7, 20: 3, 3, 3, 4.)
    order = np.argsort(values[top4])
    assert c.values[1:][order].tolist() == [1, 2, 3, 4]
    # cells that fit are unchanged, and ties at the cut are broken at random, not by position
    short = [tokenize_rows(X, ids, cls_id=99, pad_value=-2, max_len=21, n_bins=3,
                           rng=np.random.default_rng(0), gene_selection=g)[0]
             for g in ("highest", "random")]  # fmt: skip
    assert len(short[0].genes) == 21
    np.testing.assert_array_equal(short[0].genes, short[1].genes)
    np.testing.assert_array_equal(short[0].values, short[1].values)
    tied = sp.csr_matrix(np.array([[5, 5, 5, 5, 1, 1]], dtype=np.float32))
    kept = {
        tuple(tokenize_rows(tied, np.arange(6), cls_id=99, pad_value=-2, max_len=3,
                            rng=np.random.default_rng(s), gene_selection="highest")[0].genes)
        for s in range(20)
    }  # fmt: skip
    assert len(kept) > 1 and all(set(k[1:]) <= {0, 1, 2, 3} for k in kept)
    with pytest.raises(ValueError, match="gene_selection='top'"):
        tokenize_rows(X, ids, cls_id=99, pad_value=-2, rng=rng, gene_selection="top")


def test_embedding_leaves_the_users_torch_draws_alone(ckpt, continuous_adata_factory):
    # building the network before its weights are loaded must not draw from torch's generator
    import torch

    a = continuous_adata_factory(6)
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    _embed(a, ckpt)
    torch.testing.assert_close(torch.rand(3), expected, rtol=0, atol=0)


def test_backed_mode_equals_in_memory(ckpt, continuous_adata_factory, tmp_path):
    a = continuous_adata_factory(25)
    a.write_h5ad(tmp_path / "a.h5ad")
    backed = ad.read_h5ad(tmp_path / "a.h5ad", backed="r")
    _embed(backed, ckpt, batch_size=4)
    _embed(a, ckpt, batch_size=4)
    np.testing.assert_allclose(backed.obsm["X_scgpt"], a.obsm["X_scgpt"], atol=1e-6)
    assert backed.isbacked
    backed.file.close()


def test_layer_and_gene_key(ckpt, continuous_adata_factory):
    a = continuous_adata_factory(6)
    a.layers["counts"] = a.X.copy()
    a.var["symbol"] = a.var_names
    a.var_names = [f"ENSG{i:05d}" for i in range(a.n_vars)]
    a.X = sp.csr_matrix(a.shape, dtype=np.float32)
    _embed(a, ckpt, layer="counts", gene_key="symbol")
    assert a.obsm["X_scgpt"].shape == (6, 32)


def _assert_untouched(a, before):
    assert set(a.obsm) == set(before.obsm) and set(a.uns) == set(before.uns)
    np.testing.assert_array_equal(a.X.toarray(), before.X.toarray())  # NaN == NaN here


@pytest.mark.parametrize(
    ("mutate", "err", "match"),
    [
        (lambda a: a.X.data.__setitem__(0, np.nan), ValueError, "NaN"),
        (lambda a: a.X.data.__setitem__(0, np.inf), ValueError, "infinite"),
        (lambda a: a.X.data.__setitem__(0, -3.0), ValueError, "negative"),
    ],
)
def test_bad_values(ckpt, continuous_adata_factory, mutate, err, match):
    a = continuous_adata_factory(6)
    mutate(a)
    before = a.copy()
    with pytest.raises(err, match=match):
        _embed(a, ckpt)
    _assert_untouched(a, before)


def _scanpy_scaled(a):
    """scanpy's workflow: log-normalised ``raw`` kept, then a subset of genes, scaled in ``X``."""
    import scanpy as sc

    sc.pp.log1p(a)
    a.raw = a
    a = a[:, 10:].copy()
    a.X = a.X.toarray()
    sc.pp.scale(a)
    assert a.X.min() < 0 and a.raw.n_vars == a.n_vars + 10
    return a


def test_scaled_x_reads_raw_as_scanpy_does(ckpt, continuous_adata_factory):
    a = _scanpy_scaled(continuous_adata_factory(12))
    expected = _embed(a.raw.to_adata(), ckpt, copy=True).obsm["X_scgpt"]  # every raw gene
    with pytest.warns(UserWarning, match=r"adata.X holds negative values.*adata.raw \(52 genes\)"):
        _embed(a, ckpt)
    np.testing.assert_allclose(a.obsm["X_scgpt"], expected, atol=1e-6)
    # a layer asked for is read as it is; a raw that is scaled too is no way out
    a.layers["scaled"] = a.X.copy()
    with pytest.raises(ValueError, match="negative"):
        _embed(a, ckpt, layer="scaled")
    b = _scanpy_scaled(continuous_adata_factory(6))
    b.raw = b.copy()
    with pytest.raises(ValueError, match="negative"):
        _embed(b, ckpt)


def _stored_twice(X):
    """``X`` with every entry stored twice, as two halves: scipy sums them, the same matrix."""
    c = sp.coo_matrix(X)
    row, col = np.r_[c.row, c.row], np.r_[c.col, c.col]
    data = np.r_[c.data / 2, c.data - c.data / 2].astype(np.float32)
    order = np.lexsort((col, row))
    indptr = np.r_[0, np.cumsum(np.bincount(row, minlength=X.shape[0]))]
    return sp.csr_matrix((data[order], col[order], indptr), shape=X.shape)


def test_duplicate_entries_are_summed_as_scipy_does(ckpt, continuous_adata_factory):
    a = continuous_adata_factory(12)
    expected = _embed(a, ckpt, copy=True).obsm["X_scgpt"]
    twice = a.copy()
    twice.X = _stored_twice(a.X)
    assert not twice.X.has_canonical_format and abs(twice.X - a.X).max() == 0
    _embed(twice, ckpt)  # each stored half was a token of its own (and binned on its own)
    np.testing.assert_allclose(twice.obsm["X_scgpt"], expected, atol=1e-6)
    assert twice.X.nnz == 2 * a.X.nnz  # the caller's matrix is not rewritten
    # halves of opposite sign that sum to counts are counts, not negative values
    shifted = a.copy()
    shifted.X = _stored_twice(a.X)  # entries of a cell and gene are next to each other
    shifted.X.data[::2] += 1
    shifted.X.data[1::2] -= 1
    assert shifted.X.data.min() < 0 and abs(shifted.X - a.X).max() < 1e-5
    _embed(shifted, ckpt)
    np.testing.assert_allclose(shifted.obsm["X_scgpt"], expected, atol=1e-5)


def test_nan_in_x_is_named_even_with_a_raw(ckpt, continuous_adata_factory):
    # NaN is no sign of scaled data: raw is not read in X's place, the NaN is named
    a = continuous_adata_factory(6)
    a.raw = a.copy()
    a.X = a.X.toarray()
    a.X[2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        _embed(a, ckpt)
    assert "X_scgpt" not in a.obsm


def test_a_dask_x_of_sparse_chunks_is_read_chunk_by_chunk(ckpt, continuous_adata_factory):
    da = pytest.importorskip("dask.array")  # anndata's lazy X (read_lazy); dask is optional
    a = continuous_adata_factory(12)
    expected = _embed(a, ckpt, copy=True).obsm["X_scgpt"]
    lazy = ad.AnnData(X=da.from_array(a.X, chunks=(5, -1), asarray=False), var=a.var.copy())
    _embed(lazy, ckpt)
    np.testing.assert_allclose(lazy.obsm["X_scgpt"], expected, atol=1e-6)


def test_a_backed_files_scaled_x_is_refused_not_swapped_for_raw(
    ckpt, continuous_adata_factory, tmp_path
):
    # documented: raw stands in for scaled X in memory only; a backed X is read as it is
    _scanpy_scaled(continuous_adata_factory(6)).write_h5ad(tmp_path / "scaled.h5ad")
    backed = ad.read_h5ad(tmp_path / "scaled.h5ad", backed="r")
    assert backed.raw is not None
    with pytest.raises(ValueError, match=r"negative values.*raw.to_adata\(\)"):
        _embed(backed, ckpt)
    assert "X_scgpt" not in backed.obsm
    backed.file.close()


def test_symbols_in_a_var_column_are_found(ckpt, continuous_adata_factory):
    a = continuous_adata_factory(8)
    expected = _embed(a, ckpt, copy=True).obsm["X_scgpt"]
    a.var["feature_name"] = a.var_names.to_numpy()  # CELLxGENE: Ensembl ids, symbols in var
    a.var["n_cells"] = np.arange(a.n_vars)
    a.var_names = [f"ENSG{i:011d}" for i in range(a.n_vars)]
    with pytest.warns(UserWarning, match=r"var\['feature_name'\] are used \(50 of 52") as record:
        tl.embed(a, model=ckpt, device="cpu", progress=False)
    assert record[0].filename == __file__
    np.testing.assert_allclose(a.obsm["X_scgpt"], expected, atol=1e-6)
    assert a.uns["scgpt"]["X_scgpt"]["params"]["gene_key"] == "feature_name"


def test_symbols_of_another_case_are_matched(ckpt, continuous_adata_factory):
    a = continuous_adata_factory(8)
    expected = _embed(a, ckpt, copy=True).obsm["X_scgpt"]
    a.var_names = [g.lower() for g in a.var_names]  # "g0" for the vocabulary's "G0"
    with pytest.warns(
        UserWarning, match=r"mostly when case is ignored \(0 as written, 50 of 52"
    ) as record:
        tl.embed(a, model=ckpt, device="cpu", progress=False)
    assert record[0].filename == __file__
    np.testing.assert_allclose(a.obsm["X_scgpt"], expected, atol=1e-6)
    assert a.uns["scgpt"]["X_scgpt"]["case_ignored"] is True
    a.var_names = [g.upper() for g in a.var_names]  # as written again
    _embed(a, ckpt, key_added="upper")
    assert a.uns["scgpt"]["upper"]["case_ignored"] is False


def test_bad_arguments(ckpt, continuous_adata_factory):
    a = continuous_adata_factory(6)
    before = a.copy()
    with pytest.raises(KeyError, match="layer='counts'"):
        _embed(a, ckpt, layer="counts")
    with pytest.raises(KeyError, match="gene_key='symbol'"):
        _embed(a, ckpt, gene_key="symbol")
    with pytest.raises(ValueError, match="max_len=1 must be an integer >= 2"):
        _embed(a, ckpt, max_len=1)
    with pytest.raises(ValueError, match=r"max_len=10\.5 must be an integer >= 2"):
        _embed(a, ckpt, max_len=10.5)  # was numpy's TypeError from deep in tokenising
    with pytest.raises(FileNotFoundError, match="no such folder"):
        _embed(a, "/nonexistent/model")
    with pytest.raises(ValueError, match=r"random_state=None must be an integer >= 0"):
        _embed(a, ckpt, random_state=None)  # was a bare TypeError
    _assert_untouched(a, before)
    empty = ad.AnnData(obs=a.obs.copy(), var=a.var.copy(), layers={"counts": a.X.copy()})
    with pytest.raises(ValueError, match=r"adata\.X is empty.*layer=.*\['counts'\]"):
        _embed(empty, ckpt)
    assert "X_scgpt" not in empty.obsm


def test_cells_without_vocabulary_genes_are_cls_alone(official_ckpt, official,
                                                      continuous_adata_factory):  # fmt: skip
    # official tokenize_batch: a cell with no non-zero vocabulary gene becomes [<cls>] alone
    path, ref, vocab = official_ckpt
    a = continuous_adata_factory(6)
    X = a.X.toarray()
    X[[1, 3], :50] = 0
    X[1, 50:] = 5.0  # genes outside the vocabulary do not count
    a.X = sp.csr_matrix(X)
    with pytest.warns(
        UserWarning, match=r"2 of 6 cells read together \(e\.g\. row 1\).*<cls> alone"
    ) as rec:
        got = tl.embed(a, model=str(path), device="cpu", progress=False, copy=True).obsm["X_scgpt"]
    assert [r.filename for r in rec] == [__file__]  # once, at the user's line
    np.random.seed(0)
    expected = official.embed(ref, X[:, :50], np.arange(50), vocab, max_len=60, pad_to_max=False)
    np.testing.assert_allclose(got, expected, atol=2e-5)
    np.testing.assert_array_equal(got[1], got[3])


def test_vocab_mismatch(ckpt, continuous_adata_factory):
    b = continuous_adata_factory(6)
    b.var_names = [f"ENSG{i:011d}" for i in range(b.n_vars)]
    with pytest.raises(ValueError, match=r"Only 0 of 52 genes.*gene_key"):
        _embed(b, ckpt)
    assert "X_scgpt" not in b.obsm


def test_cell_embedding_independent_of_companions(ckpt, counts_adata):
    # counts have many ties and max_len=8 forces subsampling: both draws are seeded per cell
    full = _embed(counts_adata, ckpt, max_len=8, copy=True).obsm["X_scgpt"]
    rev = counts_adata[::-1][:10].copy()
    rev.obs_names = [f"other{i}" for i in range(10)]
    part = _embed(rev, ckpt, max_len=8, batch_size=3, copy=True).obsm["X_scgpt"]
    np.testing.assert_allclose(part, full[::-1][:10], atol=1e-6)


def test_backed_view_reads_only_the_rows_of_each_chunk(
    ckpt, continuous_adata_factory, tmp_path, monkeypatch
):
    from anndata._core.sparse_dataset import BaseCompressedSparseDataset

    a = continuous_adata_factory(90)
    a.write_h5ad(tmp_path / "a.h5ad")
    backed = ad.read_h5ad(tmp_path / "a.h5ad", backed="r")
    mask = np.random.default_rng(3).random(90) < 0.6
    view = backed[mask, 2:]  # rows and columns subset (two vocabulary genes dropped)
    reads = []
    getitem = BaseCompressedSparseDataset.__getitem__

    def counted(self, index):
        block = getitem(self, index)
        reads.append(block.shape[0])
        return block

    monkeypatch.setattr(BaseCompressedSparseDataset, "__getitem__", counted)
    out = tmp_path / "view.npy"
    _embed(view, ckpt, batch_size=4, chunk_size=8, out_file=out)  # 7 chunks of <= 8 cells
    monkeypatch.undo()
    assert reads and max(reads) < 20 < view.n_obs  # never the whole view (anndata's view.X)
    assert sum(reads) <= backed.n_obs  # every file row read at most once
    ref = _embed(a[mask, 2:].copy(), ckpt, batch_size=4, chunk_size=8, copy=True)
    np.testing.assert_array_equal(np.load(out), ref.obsm["X_scgpt"])
    # without out_file a backed view cannot hold the result: refused before any work
    with pytest.raises(ValueError, match=r"view of a backed AnnData.*out_file"):
        _embed(view, ckpt, batch_size=4)
    backed.file.close()


def test_an_hvg_subset_of_x_with_every_gene_in_raw_is_said():
    # scanpy's workflow: adata.raw = adata, then X subset to highly variable genes (unscaled:
    # X is read, as given); raw holds many more of the vocabulary's genes
    import warnings

    from omicformer import datasets

    a = datasets.pbmc_celltypist()[:40].copy()
    a.raw = a
    hvg = a[:, a.X.getnnz(axis=0).argsort()[-300:]].copy()  # 300 genes, raw keeps all
    with pytest.warns(UserWarning, match=r"adata\.X holds \d+ of the model's genes and adata\.raw"):
        tl.embed(hvg, progress=False)
    assert hvg.uns["scgpt"]["X_scgpt"]["n_genes_total"] == 300  # X was read, as given
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every gene in X: no warning
        tl.embed(a, progress=False)


def test_annotate_and_integrate_say_so_too(one_thread):
    from omicformer import datasets

    a = datasets.pbmc_celltypist()[:40].copy()
    a.obs["cell_type"] = np.where(np.arange(40) % 2, "x", "y")
    a.obs["batch"] = np.where(np.arange(40) < 20, "b1", "b2")
    a.raw = a
    hvg = a[:, a.X.getnnz(axis=0).argsort()[-300:]].copy()
    query = hvg.copy()
    del query.obs["cell_type"]
    with pytest.warns(UserWarning, match=r"^adata\.X holds \d+ of the model's genes"):
        tl.annotate(query, a, label_key="cell_type", method="knn", progress=False)
    with pytest.warns(UserWarning, match=r"^reference\.X holds \d+ of the model's genes"):
        tl.annotate(a.copy(), hvg, label_key="cell_type", method="knn", progress=False)
    with pytest.warns(UserWarning, match=r"^adata\.X holds \d+ of the model's genes"):
        tl.integrate(hvg, batch_key="batch", max_epochs=1, progress=False)


def test_cells_without_vocabulary_genes_make_one_warning_before_any_result(
    ckpt, continuous_adata_factory
):
    a = continuous_adata_factory(30)
    X = a.X.toarray()
    X[[3, 12, 25], :50] = 0  # three cells express only the two genes the model does not know
    a.X = sp.csr_matrix(X)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _embed(a, ckpt, chunk_size=10, batch_size=5)  # three chunks, one such cell in each
    messages = [str(w.message) for w in record if "express none" in str(w.message)]
    assert len(messages) == 1 and messages[0].startswith("1 of 10 cells read together (e.g. row 3)")
    assert {w.filename for w in record if "express none" in str(w.message)} == {__file__}
    b = continuous_adata_factory(30)
    b.X = sp.csr_matrix(X)
    with warnings.catch_warnings():  # as errors: raised before anything is written
        warnings.simplefilter("error")
        with pytest.raises(UserWarning, match="express none"):
            _embed(b, ckpt, chunk_size=10, batch_size=5)
    assert "X_scgpt" not in b.obsm and "scgpt" not in b.uns
