"""Out-of-core scGPT: streaming training from backed AnnData, multi-file input, file faults."""

from __future__ import annotations

import re
import warnings

import anndata as ad
import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from omicformer._core._ondisk import RowSource
from omicformer.scgpt import pp, tl
from omicformer.scgpt.model import ScGPT

TINY = {"d_model": 16, "n_layers": 1, "n_heads": 2}
FIT = {"enable_progress_bar": False, "accelerator": "cpu", "devices": 1, "batch_size": 8}


@pytest.fixture
def adata() -> ad.AnnData:
    rng = np.random.default_rng(0)
    X = rng.poisson(1.0, size=(90, 30)).astype(np.float32)
    X[:, 0] += 1  # every cell expresses a vocabulary gene
    obs = pd.DataFrame(
        {"batch": np.repeat(["a", "b", "c"], 30)}, index=[f"c{i}" for i in range(90)]
    )
    return ad.AnnData(
        sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=[f"G{i}" for i in range(30)])
    )


class CellIndex(pl.Callback):
    """Records the training cells of every batch, per epoch."""

    def __init__(self):
        self.cells: dict[int, list[int]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.cells.setdefault(trainer.current_epoch, []).extend(batch["cell_index"].tolist())


def _model(data, **kw) -> ScGPT:
    ScGPT.setup_anndata(data, **kw)
    return ScGPT(data, **TINY, random_state=0)


# ---------------------------------------------------------------- streaming training
def test_backed_streaming_equals_in_memory_with_the_chunk_sampler(adata, backed):
    fit = {**FIT, "max_epochs": 2, "max_steps": 14, "chunk_size": 16, "shuffle_window": 2,
           "random_state": 3}  # fmt: skip
    memory = _model(adata)
    memory.train(streaming=True, **fit)
    stream = _model(backed)
    stream.train(**fit)  # backed: streams by default
    np.testing.assert_array_equal(memory.train_indices, stream.train_indices)
    np.testing.assert_array_equal(memory.validation_indices, stream.validation_indices)
    for (name, a), b in zip(memory.module.state_dict().items(),
                            stream.module.state_dict().values(), strict=True):  # fmt: skip
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    pd.testing.assert_frame_equal(
        memory.history["validation_loss"], stream.history["validation_loss"]
    )
    assert backed.isbacked and "X_scgpt" not in backed.obsm


def test_streaming_epoch_visits_every_training_cell_once_in_chunk_reads(backed, monkeypatch):
    reads = []
    original = RowSource.read
    monkeypatch.setattr(
        RowSource, "read", lambda self, a, b: reads.append(a) or original(self, a, b)
    )
    rec = CellIndex()
    model = _model(backed)
    model.train(max_epochs=2, chunk_size=10, shuffle_window=3, validation_size=0.2,
                callbacks=[rec], **FIT)  # fmt: skip
    n_train = len(model.train_indices)
    assert n_train == 72
    for epoch in (0, 1):
        assert sorted(rec.cells[epoch]) == list(range(n_train))  # each cell exactly once
    assert rec.cells[0] != rec.cells[1]
    # 9 chunks: one validation pass, then per epoch about one read per chunk for training and
    # one for validation (a chunk is cached across the end of an epoch) -- not one per cell
    assert 9 + 2 * 9 <= len(reads) <= 9 + 2 * 2 * 9


@pytest.mark.slow
def test_streaming_with_worker_processes_equals_one_process(backed):
    """Workers reopen the file by path (not a handle inherited across fork): same weights."""
    fit = {**FIT, "max_epochs": 2, "chunk_size": 16, "shuffle_window": 2, "random_state": 1}
    one, two = _model(backed), _model(backed)
    one.train(**fit)
    two.train(num_workers=2, **fit)
    for (name, a), b in zip(one.module.state_dict().items(),
                            two.module.state_dict().values(), strict=True):  # fmt: skip
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_streaming_in_memory_keeps_streaming_off_by_default(adata):
    rec = CellIndex()
    model = _model(adata)
    model.train(max_epochs=1, validation_size=0.0, callbacks=[rec], **FIT)
    assert sorted(rec.cells[0]) == list(range(90))


def test_dsbn_streams_one_batch_label_per_minibatch(adata, backed):
    ScGPT.setup_anndata(backed, batch_key="batch")
    dsbn = ScGPT(backed, **TINY, dsbn=True)
    dsbn.train(max_epochs=1, **FIT)  # backed: streamed, minibatches grouped by batch label
    assert dsbn.is_trained and backed.isbacked
    assert np.isfinite(dsbn.history["train_loss"].to_numpy()).all()


def test_streaming_refuses_bad_settings_before_reading(adata, backed):
    model = _model(adata)
    for bad in ({"chunk_size": 0}, {"shuffle_window": 1.5}):
        with pytest.raises(ValueError, match="must be an integer"):
            model.train(max_epochs=1, streaming=True, **bad, **FIT)
    assert not model.is_trained
    bad = adata.copy()
    bad.X[5, 3] = -1.0
    bad.write_h5ad(backed.filename.parent / "bad.h5ad")
    bad_backed = ad.read_h5ad(backed.filename.parent / "bad.h5ad", backed="r")
    with pytest.raises(ValueError, match="negative"):
        _model(bad_backed).train(max_epochs=1, **FIT)
    bad_backed.file.close()


def test_streaming_false_loads_backed_data(backed):
    model = _model(backed)
    model.train(max_epochs=1, streaming=False, **FIT)
    assert model.is_trained and backed.isbacked


def test_backed_file_missing_or_opened_for_writing(adata, tmp_path, h5_writer):
    path = tmp_path / "a.h5ad"
    adata.write_h5ad(path)
    b = ad.read_h5ad(path, backed="r")
    model = _model(b)
    path.rename(tmp_path / "elsewhere.h5ad")
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        model.train(max_epochs=1, **FIT)
    b.file.close()
    (tmp_path / "elsewhere.h5ad").rename(path)

    writable = ad.read_h5ad(path, backed="r+")
    with pytest.raises(ValueError, match="backed='r'"):
        _model(writable).train(max_epochs=1, **FIT)
    writable.file.close()

    b = ad.read_h5ad(path, backed="r")
    model = _model(b)
    b.file.close()  # releases the read lock; another process then opens the file to write
    with h5_writer(path), pytest.raises(OSError, match="Close the writer"):
        model.train(max_epochs=1, **FIT)
    assert not model.is_trained


# ---------------------------------------------------------------- several files
@pytest.fixture
def two_files(continuous_adata_factory, tmp_path):
    a = continuous_adata_factory(12, seed=0)
    b = continuous_adata_factory(9, seed=1)[:, 5:].copy()  # lacks G0..G4 ...
    b.var_names = [*b.var_names[:-1], "ONLYB"]  # ... and NOTAGENE2, has ONLYB
    X = b.X.toarray()
    X[:, 0] = 3.0  # every cell expresses G5
    b.X = sp.csr_matrix(X)
    b.obs_names = [f"b{i}" for i in range(9)]
    a.write_h5ad(tmp_path / "a.h5ad")
    b.write_h5ad(tmp_path / "b.h5ad")
    return a, b, [tmp_path / "a.h5ad", tmp_path / "b.h5ad"]


def _embed(adata, ckpt):
    tl.embed(adata, model=ckpt, device="cpu", progress=False, batch_size=4)
    return adata.obsm["X_scgpt"]


def test_concat_h5ad_embeds_as_the_in_memory_concatenation(two_files, official_ckpt, tmp_path):
    a, b, paths = two_files
    ckpt = str(official_ckpt[0])
    with pytest.warns(UserWarning, match="different genes: 46 shared, 53 in all"):
        pp.concat_h5ad({"a": paths[0], "b": paths[1]}, tmp_path / "inner.h5ad", label="file")
    inner = ad.read_h5ad(tmp_path / "inner.h5ad", backed="r")
    expected = ad.concat({"a": a, "b": b}, join="inner", label="file")
    assert list(inner.var_names) == list(expected.var_names)
    assert list(inner.obs["file"]) == ["a"] * 12 + ["b"] * 9
    report = inner.uns["concat_h5ad"]
    assert (report["n_genes_union"], report["n_genes_intersection"], report["n_genes_out"]) == (
        53,
        46,
        46,
    )
    assert list(report["n_cells"]) == [12, 9] and list(report["n_genes"]) == [52, 47]
    np.testing.assert_allclose(_embed(inner, ckpt), _embed(expected, ckpt), atol=1e-6)
    inner.file.close()

    # outer join: zeros for missing genes add no tokens, so every cell embeds as in its own file
    with pytest.warns(UserWarning, match="join='outer' keeps all 53"):
        pp.concat_h5ad(paths, tmp_path / "outer.h5ad", join="outer")
    outer = ad.read_h5ad(tmp_path / "outer.h5ad", backed="r")
    assert outer.shape == (21, 53) and outer.uns["concat_h5ad"]["n_genes_out"] == 53
    own = np.vstack([_embed(a.copy(), ckpt), _embed(b.copy(), ckpt)])
    np.testing.assert_allclose(_embed(outer, ckpt), own, atol=1e-5)
    outer.file.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.h5ad",
        "b.h5ad",
        "inner.h5ad",
        "outer.h5ad",
    ]


def test_concat_h5ad_aligns_by_symbol_with_gene_key(two_files, tmp_path):
    a, b, paths = two_files
    for x, path, prefix in ((a, paths[0], "ENSA"), (b, paths[1], "ENSB")):  # IDs differ per file
        x.var["symbol"] = x.var_names
        x.var_names = [f"{prefix}{i}" for i in range(x.n_vars)]
        x.write_h5ad(path)
    with pytest.warns(UserWarning, match="46 shared"):
        pp.concat_h5ad(paths, tmp_path / "sym.h5ad", gene_key="symbol")
    out = ad.read_h5ad(tmp_path / "sym.h5ad")
    assert list(out.var_names) == list(out.var["symbol"]) == list(a.var["symbol"][5:51])
    expected = np.vstack([a[:, 5:51].X.toarray(), b[:, :46].X.toarray()])
    np.testing.assert_array_equal(out.X.toarray(), expected)
    assert out.uns["concat_h5ad"]["gene_key"] == "symbol"


def test_concat_h5ad_of_one_file_writes_as_of_several_and_leaves_the_input(two_files, tmp_path):
    a, _, paths = two_files
    a.var["symbol"] = a.var_names
    a.var_names = [f"ENSA{i}" for i in range(a.n_vars)]
    a.write_h5ad(paths[0])
    before = paths[0].read_bytes()
    pp.concat_h5ad({"lung": paths[0]}, tmp_path / "one.h5ad", gene_key="symbol", label="file",
                   index_unique="-")  # fmt: skip
    assert paths[0].read_bytes() == before  # nothing written into the input
    out = ad.read_h5ad(tmp_path / "one.h5ad")
    assert list(out.var_names) == list(a.var["symbol"])
    assert list(out.obs_names) == [f"{n}-lung" for n in a.obs_names]
    assert list(out.obs["file"]) == ["lung"] * a.n_obs
    np.testing.assert_array_equal(out.X.toarray(), a.X.toarray())
    assert out.uns["concat_h5ad"]["gene_key"] == "symbol"
    assert "concat_h5ad" not in ad.read_h5ad(paths[0]).uns


def test_concat_h5ad_keeps_the_var_columns_the_files_agree_on(two_files, tmp_path):
    a, b, paths = two_files
    for x, path in ((a, paths[0]), (b, paths[1])):
        x.var["kind"] = "gene"  # the same on the shared genes: kept
        x.var["rank"] = np.arange(x.n_vars)  # differs: dropped
        x.write_h5ad(path)
    with pytest.warns(UserWarning, match="46 shared"):
        pp.concat_h5ad(paths, tmp_path / "two.h5ad")
    two = ad.read_h5ad(tmp_path / "two.h5ad")
    assert list(two.var.columns) == ["kind"] and set(two.var["kind"]) == {"gene"}
    # files with the same var: every column agrees (anndata < 0.12 failed to write them)
    pp.concat_h5ad({"x": paths[0], "y": paths[0]}, tmp_path / "same.h5ad", index_unique="-")
    same = ad.read_h5ad(tmp_path / "same.h5ad")
    pd.testing.assert_frame_equal(same.var, a.var, check_categorical=False)
    assert same.n_obs == 2 * a.n_obs


@pytest.mark.parametrize("join", ["inner", "outer"])
def test_concat_h5ad_path_for_anndata_before_0_12_equals_in_memory_concat(
    two_files, tmp_path, monkeypatch, join
):
    # the path taken where concat_on_disk drops `var` (anndata < 0.12), on the installed anndata
    import omicformer.scgpt._collection as collection

    a, b, paths = two_files
    for x, path in ((a, paths[0]), (b, paths[1])):
        x.var["kind"] = "gene"
        x.var["rank"] = np.arange(x.n_vars)
        x.write_h5ad(path)
    monkeypatch.setattr(collection, "_concat_on_disk_keeps_var", lambda: False)
    with pytest.warns(UserWarning, match="46 shared"):
        pp.concat_h5ad(paths, tmp_path / "old.h5ad", join=join)
    out = ad.read_h5ad(tmp_path / "old.h5ad")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = ad.concat([a, b], join=join, merge="same")
    assert out.n_vars == (46 if join == "inner" else 53)
    assert list(out.var_names) == list(expected.var_names)
    pd.testing.assert_frame_equal(out.var, expected.var, check_dtype=False,
                                  check_categorical=False)  # fmt: skip
    np.testing.assert_array_equal(out.X.toarray(), expected.X.toarray())


def test_concat_h5ad_refuses_bad_input_and_leaves_no_partial_file(two_files, tmp_path, monkeypatch):
    _, _, paths = two_files
    other = ad.AnnData(sp.csr_matrix(np.ones((3, 2), np.float32)))
    other.var_names = ["ENSG01", "ENSG02"]
    other.write_h5ad(tmp_path / "ids.h5ad")
    with pytest.raises(ValueError, match=r"share no gene.*ENSG01.*gene_key"):
        pp.concat_h5ad([paths[0], tmp_path / "ids.h5ad"], tmp_path / "out.h5ad")
    with pytest.raises(FileNotFoundError, match=r"nothere\.h5ad"):
        pp.concat_h5ad([paths[0], tmp_path / "nothere.h5ad"], tmp_path / "out.h5ad")
    with pytest.raises(KeyError, match="symbol"):
        pp.concat_h5ad(paths, tmp_path / "out.h5ad", gene_key="symbol")
    with pytest.raises(ValueError, match="join"):
        pp.concat_h5ad(paths, tmp_path / "out.h5ad", join="left")
    with pytest.raises(ValueError, match="also an input"):
        pp.concat_h5ad(paths, paths[0], overwrite=True)
    (tmp_path / "out.h5ad").write_text("keep me")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        pp.concat_h5ad(paths, tmp_path / "out.h5ad")

    import anndata.experimental

    def fail(in_files, out_file, **kw):  # a crash (disk full, kill) in the middle of the copy
        with open(out_file, "wb") as f:
            f.write(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(anndata.experimental, "concat_on_disk", fail)
    with (
        pytest.raises(OSError, match="No space"),
        pytest.warns(UserWarning, match="different genes"),
    ):
        pp.concat_h5ad(paths, tmp_path / "out.h5ad", overwrite=True)
    assert (tmp_path / "out.h5ad").read_text() == "keep me"  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.h5ad",
        "b.h5ad",
        "ids.h5ad",
        "out.h5ad",
    ]


def test_concat_h5ad_names_the_files_whose_matrices_differ_in_kind(two_files, tmp_path):
    a, b, paths = two_files
    dense, csc = a.copy(), b.copy()
    dense.X = a.X.toarray()
    dense.write_h5ad(tmp_path / "dense.h5ad")
    csc.X = sp.csc_matrix(b.X)
    csc.write_h5ad(tmp_path / "csc.h5ad")
    for other, kinds in (("dense.h5ad", r"'1' \(dense\.h5ad\): dense"),
                         ("csc.h5ad", r"'1' \(csc\.h5ad\): csc")):  # fmt: skip
        with pytest.raises(ValueError, match=rf"X must be CSR.*'0' \(b\.h5ad\): csr; {kinds}"):
            pp.concat_h5ad([paths[1], tmp_path / other], tmp_path / "out.h5ad")
    with pytest.raises(ValueError, match=r"scipy\.sparse\.csr_matrix\(adata\.X\)"):
        pp.concat_h5ad([tmp_path / "csc.h5ad", tmp_path / "csc.h5ad"], tmp_path / "out.h5ad")
    # a layer the files share, too
    a.layers["counts"], b.layers["counts"] = a.X.toarray(), b.X
    a.write_h5ad(paths[0])
    b.write_h5ad(paths[1])
    with pytest.raises(ValueError, match=r"layers\['counts'\] must be CSR.*b\.h5ad\): csr"):
        pp.concat_h5ad(paths, tmp_path / "out.h5ad")
    assert not (tmp_path / "out.h5ad").exists()


def test_concat_h5ad_refuses_floats_after_integer_counts(two_files, tmp_path):
    # concat_on_disk casts every file's values to the first file's type: 1.0986 became 1
    a, b, _ = two_files
    counts = a.copy()
    counts.X = sp.csr_matrix(np.rint(a.X.toarray() * 3).astype(np.int32))
    counts.write_h5ad(tmp_path / "counts.h5ad")
    logs = b.copy()
    logs.X = sp.csr_matrix(np.log1p(b.X.toarray()).astype(np.float32))
    logs.write_h5ad(tmp_path / "logs.h5ad")
    inputs = [tmp_path / "counts.h5ad", tmp_path / "logs.h5ad"]
    with pytest.raises(ValueError, match=r"X holds int32 values in the first file.*'1' "
                       r"\(logs\.h5ad\): float32\).*truncated"):  # fmt: skip
        pp.concat_h5ad(inputs, tmp_path / "out.h5ad")
    assert not (tmp_path / "out.h5ad").exists()
    # floats first: the counts become floats, every value kept
    with pytest.warns(UserWarning, match="different genes"):
        pp.concat_h5ad(inputs[::-1], tmp_path / "out.h5ad", join="outer")
    out = ad.read_h5ad(tmp_path / "out.h5ad")
    assert out.X.dtype == np.float32
    expected = ad.concat([logs, counts], join="outer", fill_value=0)
    np.testing.assert_allclose(out[expected.obs_names, expected.var_names].X.toarray(),
                               expected.X.toarray(), rtol=1e-6)  # fmt: skip


def _as_before_anndata_0_7(path, fmt: str) -> None:
    """Rewrite a sparse X's attributes as anndata < 0.7 stored them (h5sparse_*)."""
    import h5py

    with h5py.File(path, "r+") as f:
        shape = tuple(f["X"].attrs["shape"])
        for key in list(f["X"].attrs):
            del f["X"].attrs[key]
        f["X"].attrs["h5sparse_format"], f["X"].attrs["h5sparse_shape"] = fmt, shape


def test_files_written_before_anndata_0_7_are_named(two_files, official_ckpt, tmp_path):
    a, _, paths = two_files
    _as_before_anndata_0_7(paths[0], "csr")
    with pytest.raises(ValueError, match=r"a\.h5ad' was written by anndata before 0\.7"):
        pp.concat_h5ad(paths, tmp_path / "out.h5ad")  # was "'Group' object has no 'shape'"
    assert not (tmp_path / "out.h5ad").exists()
    csc = a.copy()
    csc.X = sp.csc_matrix(a.X)
    csc.write_h5ad(tmp_path / "csc.h5ad")
    _as_before_anndata_0_7(tmp_path / "csc.h5ad", "csc")
    backed = ad.read_h5ad(tmp_path / "csc.h5ad", backed="r")
    with pytest.raises(ValueError, match=r"stored column-major \(CSC\)"):  # was read whole
        tl.embed(backed, model=official_ckpt[0], device="cpu", progress=False)
    backed.file.close()


def test_concat_h5ad_names_an_input_that_is_no_h5ad(two_files, tmp_path):
    a, _, paths = two_files
    (tmp_path / "text.h5ad").write_text("cell,G0\nc0,1\n")
    with pytest.raises(ValueError, match=r"text\.h5ad' is not an HDF5"):
        pp.concat_h5ad([paths[0], tmp_path / "text.h5ad"], tmp_path / "out.h5ad")
    no_x = a.copy()
    no_x.X = None
    no_x.write_h5ad(tmp_path / "nox.h5ad")
    with pytest.raises(KeyError, match=r"nox\.h5ad' has no X.*adata\.X ="):
        pp.concat_h5ad([paths[0], tmp_path / "nox.h5ad"], tmp_path / "out.h5ad")
    assert not (tmp_path / "out.h5ad").exists()


@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_concat_h5ad_max_loaded_elems_is_an_integer_of_at_least_one(two_files, tmp_path, value):
    with pytest.raises(ValueError, match=r"max_loaded_elems=.* must be an integer >= 1"):
        pp.concat_h5ad(two_files[2], tmp_path / "out.h5ad", max_loaded_elems=value)
    assert not (tmp_path / "out.h5ad").exists()


def test_concat_h5ad_label_does_not_replace_an_obs_column(two_files, tmp_path):
    _, b, paths = two_files
    b.obs["batch"] = "donor1"
    b.write_h5ad(paths[1])
    with pytest.raises(
        ValueError, match=r"label='batch' is already an obs column of \[.*b\.h5ad'\]"
    ):
        pp.concat_h5ad(paths, tmp_path / "out.h5ad", label="batch")
    assert not (tmp_path / "out.h5ad").exists()


def test_concat_h5ad_warns_nothing_about_the_anndata_version(two_files, tmp_path):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        pp.concat_h5ad(two_files[2], tmp_path / "out.h5ad")
    assert [str(w.message) for w in record if "__version__" in str(w.message)] == []


@pytest.mark.parametrize("join", ["inner", "outer"])
def test_concat_h5ad_of_dense_files_needs_no_dask(two_files, tmp_path, join):
    # concat_on_disk copies dense matrices with dask, not a dependency: ModuleNotFoundError
    a, b, paths = two_files
    for x, path in ((a, paths[0]), (b, paths[1])):
        x.X = x.X.toarray()
        x.layers["counts"] = np.rint(x.X).astype(np.int32)
        x.obsm["X_pca"] = np.arange(x.n_obs * 3, dtype=np.float64).reshape(x.n_obs, 3)
        x.write_h5ad(path)
    with pytest.warns(UserWarning, match="different genes"):
        pp.concat_h5ad(paths, tmp_path / "out.h5ad", join=join, max_loaded_elems=20)
    out = ad.read_h5ad(tmp_path / "out.h5ad")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = ad.concat([a, b], join=join)
    assert list(out.var_names) == list(expected.var_names)
    assert isinstance(out.X, np.ndarray) and out.X.dtype == np.float32
    # missing genes: zeros, as the docstring says and as CSR files get (anndata fills NaN)
    np.testing.assert_array_equal(out.X, np.nan_to_num(expected.X, nan=0.0))
    np.testing.assert_array_equal(out.layers["counts"], np.nan_to_num(expected.layers["counts"]))
    np.testing.assert_array_equal(out.obsm["X_pca"], np.vstack([a.obsm["X_pca"], b.obsm["X_pca"]]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5ad", "b.h5ad", "out.h5ad"]


def test_concat_h5ad_of_csr_files_with_dense_obsm_needs_no_dask(two_files, tmp_path):
    a, b, paths = two_files
    for x, path, width in ((a, paths[0], 2), (b, paths[1], 2)):
        x.obsm["X_pca"] = np.full((x.n_obs, width), float(x.n_obs))
        x.obsm["X_umap"] = np.ones((x.n_obs, 2 if x is a else 3))  # other shapes: left out
        x.write_h5ad(path)
    with warnings.catch_warnings(record=True) as caught:  # two warnings: nested pytest.warns
        warnings.simplefilter("always")  # lets only the inner one see them before pytest 8
        pp.concat_h5ad(paths, tmp_path / "out.h5ad")
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert any("different genes" in m for m in messages), messages
    assert any(re.search(r"obsm\['X_umap'\] has other shapes", m) for m in messages), messages
    out = ad.read_h5ad(tmp_path / "out.h5ad")
    assert list(out.obsm) == ["X_pca"]
    np.testing.assert_array_equal(out.obsm["X_pca"][:, 0], [12.0] * 12 + [9.0] * 9)
    np.testing.assert_array_equal(out.X.toarray()[:12], a[:, out.var_names].X.toarray())
