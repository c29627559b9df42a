"""scgpt.pp.concat_h5ad keeps every value: narrower types refused, repeated gene names kept apart."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from omicformer.scgpt import pp


@pytest.mark.parametrize(
    ("first", "later", "value", "widest"),
    [(np.float32, np.float64, 1e300, "float64"), (np.int32, np.int64, 2**40, "int64"),
     (np.int16, np.int64, 70_000, "int64"), (np.int32, np.float32, 1.5, "float32")],
)  # fmt: skip
def test_concat_h5ad_refuses_values_the_first_files_type_cannot_hold(
    tmp_path, first, later, value, widest
):
    # concat_on_disk wrote 1e300 after float32 as inf and 2**40 after int32 as 2147483647, without
    # a word (a float64 file passed the check: numpy's dtype("f8") == None is True)
    var = pd.DataFrame(index=["g0", "g1"])
    for name, dtype, v in (("a", first, 1), ("b", later, value)):
        a = ad.AnnData(sp.csr_matrix(np.array([[v, 0]], dtype=dtype)), var=var)
        a.obs_names = [name]
        a.write_h5ad(tmp_path / f"{name}.h5ad")
    inputs = [tmp_path / "a.h5ad", tmp_path / "b.h5ad"]
    with pytest.raises(ValueError, match=rf"cannot hold .*Put a file with {widest} values first"):
        pp.concat_h5ad(inputs, tmp_path / "out.h5ad")
    assert not (tmp_path / "out.h5ad").exists()
    pp.concat_h5ad(inputs[::-1], tmp_path / "out.h5ad")  # the wider type first: values kept
    out = ad.read_h5ad(tmp_path / "out.h5ad")
    assert out.X.dtype == np.dtype(later) and out.X[0, 0] == value and out.X[1, 0] == 1


@pytest.mark.parametrize("join", ["inner", "outer"])
def test_concat_h5ad_makes_repeated_var_names_unique_as_with_gene_key(tmp_path, join):
    # a 10x file whose symbols were never made unique: pandas' "cannot reindex on an axis with
    # duplicate labels", naming no file (with gene_key= the same symbols worked)
    a = ad.AnnData(sp.csr_matrix(np.array([[1, 2, 3], [4, 5, 6]], np.float32)),
                   var=pd.DataFrame(index=["A", "B", "A"]))  # fmt: skip
    b = ad.AnnData(sp.csr_matrix(np.array([[7, 8], [9, 10]], np.float32)),
                   var=pd.DataFrame(index=["A", "B"]))  # fmt: skip
    a.obs_names, b.obs_names = ["a0", "a1"], ["b0", "b1"]
    a.write_h5ad(tmp_path / "a.h5ad")
    b.write_h5ad(tmp_path / "b.h5ad")
    pp.concat_h5ad([tmp_path / "a.h5ad", tmp_path / "b.h5ad"], tmp_path / "out.h5ad", join=join)
    out = ad.read_h5ad(tmp_path / "out.h5ad")
    unique = a.copy()
    unique.var_names_make_unique()  # A, B, A-1
    expected = ad.concat([unique, b], join=join, fill_value=0)
    assert sorted(out.var_names) == sorted(expected.var_names)
    np.testing.assert_array_equal(out[:, expected.var_names].X.toarray(), expected.X.toarray())
    pp.concat_h5ad([tmp_path / "a.h5ad"], tmp_path / "one.h5ad")  # one file: the same names
    assert list(ad.read_h5ad(tmp_path / "one.h5ad").var_names) == ["A", "B", "A-1"]


def test_concat_h5ad_names_the_layers_and_obsm_keys_it_leaves_out(tmp_path):
    # concat_on_disk keeps the elements every file holds; the others went without a word
    files = []
    for i, extra in enumerate((True, False)):
        a = ad.AnnData(sp.csr_matrix(np.ones((2, 3), np.float32)),
                       var=pd.DataFrame(index=["A", "B", "C"]))  # fmt: skip
        a.obs_names = [f"c{i}{j}" for j in range(2)]
        if extra:
            a.layers["counts"] = a.X.copy()
            a.obsm["X_pca"] = np.zeros((2, 2))
        files.append(tmp_path / f"{i}.h5ad")
        a.write_h5ad(files[-1])
    match = r"layers\['counts'\] \(1 of 2 files\), obsm\['X_pca'\] \(1 of 2 files\): not in"
    with pytest.warns(UserWarning, match=match):
        pp.concat_h5ad(files, tmp_path / "out.h5ad", join="outer")
    out = ad.read_h5ad(tmp_path / "out.h5ad")
    assert not out.layers and not out.obsm  # as the warning says


def test_concat_h5ad_names_genes_without_a_symbol_by_their_var_names(tmp_path):
    # gene_key symbols missing (NaN, as h5ad reads an absent string back) or blank: the genes
    # were aligned as "nan", "nan-1", ... across files, one file's genes taken for another's
    files = []
    for name, symbols in (("a", ["A", None, ""]), ("b", ["A", None, "C"])):
        var = pd.DataFrame({"symbol": pd.Categorical(symbols)},
                           index=[f"{name}_id{i}" for i in range(3)])  # fmt: skip
        a = ad.AnnData(sp.csr_matrix(np.ones((1, 3), np.float32)), var=var)
        a.obs_names = [name]
        files.append(tmp_path / f"{name}.h5ad")
        a.write_h5ad(files[-1])
    pp.concat_h5ad(files, tmp_path / "out.h5ad", gene_key="symbol", join="outer")
    out = ad.read_h5ad(tmp_path / "out.h5ad")
    assert sorted(out.var_names) == ["A", "C", "a_id1", "a_id2", "b_id1"]
