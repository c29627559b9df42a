"""Chunked reads of AnnData rows: backed or in memory, views of both, X or a layer."""

from __future__ import annotations

import inspect
import warnings

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from anndata.io import sparse_dataset

from omicformer._core._anndata import RowReader, iter_row_chunks, to_csr

INDICES = {
    "all": slice(None),
    "step": slice(10, 400, 3),
    "sparse mask": np.random.default_rng(1).random(500) < 0.05,
    "dense mask": np.random.default_rng(2).random(500) < 0.7,
    "unsorted, repeated": np.array([5, 3, 3, 499, 0, 250]),
    "negative": -np.arange(1, 50),
}
COLUMNS = {"all": slice(None), "slice": slice(2, 20), "array": np.array([4, 1, 7])}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    X = sp.random(500, 30, density=0.3, format="csr", dtype=np.float32, random_state=0)
    X.data *= 10
    d = tmp_path_factory.mktemp("reader")
    ad.AnnData(X, layers={"L": X * 2}).write_h5ad(d / "sparse.h5ad")
    ad.AnnData(X.toarray()).write_h5ad(d / "dense.h5ad")
    return X, d


@pytest.mark.parametrize("fmt", ["sparse", "dense"])
@pytest.mark.parametrize("rows", INDICES, ids=str)
@pytest.mark.parametrize("cols", COLUMNS, ids=str)
def test_reader_equals_the_view_matrix(files, fmt, rows, cols):
    X, d = files
    memory = ad.AnnData(X if fmt == "sparse" else X.toarray())
    backed = ad.read_h5ad(d / f"{fmt}.h5ad", backed="r")
    for adata in (backed, memory):
        view = adata[INDICES[rows], COLUMNS[cols]]
        if rows == "all" and cols == "all":
            view = adata
        expected = to_csr(memory[INDICES[rows], COLUMNS[cols]].X)
        reader = RowReader(view)
        for start in range(0, view.n_obs, 17):
            got = reader.read(start, min(start + 17, view.n_obs))
            assert got.dtype == np.float32 and got.shape == expected[start : start + 17].shape
            assert (got != expected[start : start + 17]).nnz == 0
    backed.file.close()


def test_reader_of_a_layer_in_a_view_and_chunks(files):
    X, d = files
    backed = ad.read_h5ad(d / "sparse.h5ad", backed="r")
    mask = INDICES["dense mask"]
    chunks = list(iter_row_chunks(backed[mask], "L", chunk_size=64))
    got = sp.vstack([c for _, c in chunks])
    assert (got != 2 * X[mask]).nnz == 0
    assert [len(i) for i, _ in chunks][:-1] == [64] * (len(chunks) - 1)
    backed.file.close()


@pytest.mark.skipif(
    "should_cache_indptr" not in inspect.signature(sparse_dataset).parameters,
    reason="anndata before 0.12 reads a sparse dataset's whole indptr (no should_cache_indptr)",
)
def test_backed_reads_never_take_the_whole_indptr(files, monkeypatch):
    """Reading rows of a backed file reads their ``indptr`` entries, not all cells' (8 B each)."""
    import h5py

    X, d = files
    backed = ad.read_h5ad(d / "sparse.h5ad", backed="r")
    reader = RowReader(backed)
    sizes = []
    getitem = h5py.Dataset.__getitem__

    def counted(self, key, *args, **kwargs):
        out = getitem(self, key, *args, **kwargs)
        if self.name.endswith("indptr"):
            sizes.append(np.size(out))
        return out

    monkeypatch.setattr(h5py.Dataset, "__getitem__", counted)
    assert (reader.read(100, 110) != X[100:110]).nnz == 0
    assert sizes and max(sizes) <= 11
    backed.file.close()


def test_a_list_as_an_obs_key_is_named_not_unhashable():
    # pandas said "unhashable type: 'list'"
    from omicformer import scgpt

    adata = ad.AnnData(np.ones((4, 2), dtype=np.float32))
    adata.obs["batch"] = ["a", "b", "a", "b"]
    with pytest.raises(ValueError, match=r"batch_key=\['batch'\] must name one column"):
        scgpt.tl.integrate(adata, batch_key=["batch"], model="/nonexistent")
    with pytest.raises(ValueError, match=r"batch_key=\['batch'\] must name one column"):
        scgpt.tl.embed(adata, batch_key=["batch"], model="/nonexistent")


def test_labelled_cells_reads_the_text_of_missing_values_as_missing():
    # obs[key].astype(str) (common before writing a file) turns NaN, pd.NA and None into text
    import pandas as pd

    from omicformer._core._anndata import labelled_cells

    values = pd.Series(["T", "B", np.nan, "T", "B"]).astype(str)  # 'nan' as text
    values = pd.concat([values, pd.Series(["<NA>", " None ", "", "NK", "NK"])], ignore_index=True)
    with pytest.warns(UserWarning, match=r"3 cells have the label '<NA>' / 'None' / 'nan'"):
        has, counts = labelled_cells(values, "obs['cell_type']")
    np.testing.assert_array_equal(has, [1, 1, 0, 1, 1, 0, 0, 0, 1, 1])
    assert dict(counts) == {"T": 2, "B": 2, "NK": 2}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # real labels and real NaN: no warning
        has, _ = labelled_cells(pd.Series(["T", "T", None, "nanog+", "nanog+"]), "obs['x']")
    np.testing.assert_array_equal(has, [1, 1, 0, 1, 1])


def test_labelled_cells_names_labels_differing_only_by_end_spaces():
    import pandas as pd

    from omicformer._core._anndata import labelled_cells

    values = pd.Series(["B cell", "B cell ", "B cell", "B cell ", "T", "T", " T", " T"])
    with pytest.warns(
        UserWarning, match=r"only by spaces at their ends: \['B cell', 'B cell ', ' T', 'T'\]"
    ):
        _, counts = labelled_cells(values, "obs['cell_type']")
    assert len(counts) == 4  # still separate classes, as scanpy keeps them


def test_a_backed_file_without_x_is_named_as_in_memory(tmp_path):
    # backed, the check was skipped and h5py failed later: "object 'X' doesn't exist"
    import pandas as pd

    from omicformer._core._anndata import check_layer

    counts = sp.csr_matrix(np.arange(12, dtype=np.float32).reshape(3, 4))
    a = ad.AnnData(obs=pd.DataFrame(index=["a", "b", "c"]),
                   var=pd.DataFrame(index=list("wxyz")), layers={"counts": counts})  # fmt: skip
    assert a.X is None
    a.write_h5ad(tmp_path / "layer_only.h5ad")
    expected = r"adata\.X is empty \(None\): pass layer= .*\['counts'\]"
    with pytest.raises(ValueError, match=expected):
        check_layer(a, None)
    backed = ad.read_h5ad(tmp_path / "layer_only.h5ad", backed="r")
    for view in (backed, backed[:2]):
        with pytest.raises(ValueError, match=expected):
            check_layer(view, None)
        check_layer(view, "counts")
    backed.file.close()  # closed: the file is opened to look
    with pytest.raises(ValueError, match=expected):
        check_layer(backed, None)
    ad.AnnData(counts).write_h5ad(tmp_path / "with_x.h5ad")
    with_x = ad.read_h5ad(tmp_path / "with_x.h5ad", backed="r")
    check_layer(with_x, None)
    with_x.file.close()
    check_layer(with_x, None)


def _stored_twice(X: sp.csr_matrix) -> sp.csr_matrix:
    """``X`` with every entry stored twice, as two halves: scipy sums them, the same matrix."""
    c = X.tocoo()
    half = c.data / 2
    row, col = np.r_[c.row, c.row], np.r_[c.col, c.col]
    data = np.r_[half, c.data - half].astype(X.dtype)
    order = np.lexsort((col, row))
    indptr = np.r_[0, np.cumsum(np.bincount(row, minlength=X.shape[0]))]
    out = sp.csr_matrix((data[order], col[order], indptr), shape=X.shape)
    assert not out.has_canonical_format and abs(out - X).max() == 0
    return out


def test_to_csr_sums_duplicate_entries_on_a_copy():
    X = sp.csr_matrix(np.array([[0, 3, 1], [2, 0, 0]], dtype=np.float32))
    twice = _stored_twice(X)
    arrays = [twice.data.copy(), twice.indices.copy(), twice.indptr.copy()]
    out = to_csr(twice)
    assert out.nnz == 3 and out.has_canonical_format
    np.testing.assert_array_equal(out.data, [3, 1, 2])  # one entry per (cell, gene), summed
    np.testing.assert_array_equal(out.indices, [1, 2, 0])
    for before, after in zip(arrays, [twice.data, twice.indices, twice.indptr], strict=True):
        np.testing.assert_array_equal(before, after)  # the caller's matrix is left as it was
