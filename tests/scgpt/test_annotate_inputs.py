"""scgpt.tl.annotate: backed inputs read as in memory, genes as matched, ignored arguments."""

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from omicformer.scgpt import tl

N_GENES = 60

pytestmark = pytest.mark.usefixtures("one_thread")


def _ensembl_ids_with_symbols_in_var(q: ad.AnnData) -> None:
    q.var["feature_name"] = q.var_names.to_numpy()  # a CELLxGENE file
    q.var_names = [f"ENSG{i:011d}" for i in range(q.n_vars)]


def test_annotate_reads_a_view_of_a_backed_reference(clf_pretrained, clf_ref_query, tmp_path):
    # the view was indexed again: "you cannot make a view of a view" (backed)
    ref, query = clf_ref_query
    ref.write_h5ad(tmp_path / "ref.h5ad")
    backed = ad.read_h5ad(tmp_path / "ref.h5ad", backed="r")
    rows, genes = np.arange(1, ref.n_obs, 2)[::-1], np.arange(3, N_GENES)
    kw = {"label_key": "cell_type", "model": clf_pretrained, "method": "knn", "n_neighbors": 5,
          "progress": False, "copy": True}  # fmt: skip
    expected = tl.annotate(query, ref[rows, genes], **kw).obs
    got = tl.annotate(query, backed[rows, genes], **kw).obs
    pd.testing.assert_frame_equal(got, expected)
    assert backed.isbacked and backed.file.is_open


@pytest.mark.parametrize("side", ["query", "reference"])
def test_two_backed_files_keeping_their_symbols_in_different_places(
    clf_pretrained, clf_ref_query, tmp_path, side
):
    # both streamed: the symbol column was found on neither side ("Only 0 of 60 genes")
    ref, query = clf_ref_query
    kw = {"label_key": "cell_type", "model": clf_pretrained, "method": "knn", "progress": False,
          "n_neighbors": 5}  # fmt: skip
    expected = tl.annotate(query, ref, copy=True, **kw).obs
    q, r = query.copy(), ref.copy()
    _ensembl_ids_with_symbols_in_var(q if side == "query" else r)
    q.write_h5ad(tmp_path / "q.h5ad")
    r.write_h5ad(tmp_path / "r.h5ad")
    q, r = (ad.read_h5ad(tmp_path / f"{n}.h5ad", backed="r") for n in "qr")
    with pytest.warns(UserWarning, match=r"\.var\['feature_name'\] are used"):
        tl.annotate(q, r, **kw)
    cols = ["scgpt_cell_type", "scgpt_cell_type_confidence"]
    pd.testing.assert_frame_equal(q.obs[cols], expected[cols])


def test_knn_warns_of_the_fine_tuning_arguments_it_ignores(clf_pretrained, clf_ref_query):
    ref, query = clf_ref_query
    kw = {"label_key": "cell_type", "model": clf_pretrained, "method": "knn", "progress": False,
          "copy": True}  # fmt: skip
    with pytest.warns(UserWarning, match=r"method='knn' trains no model; max_epochs=5, "
                      r"n_models=3 only apply to fine-tuning and are ignored\.$") as record:  # fmt: skip
        tl.annotate(query, ref, max_epochs=5, n_models=3, **kw)
    assert record[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tl.annotate(query, ref, n_neighbors=5, max_len=64, batch_size=8, **kw)  # they apply


@pytest.mark.parametrize("backed", [False, True])
def test_annotate_reads_every_shared_gene_matched_ignoring_case(
    clf_pretrained, clf_ref_query, tmp_path, backed
):
    # most query symbols match only ignoring case, and the reference lacks some of them: on the
    # shared genes alone the case rule read them as written, so 25 of the 51 genes reported
    # shared were silently dropped
    ref, query = clf_ref_query
    kw = {"label_key": "cell_type", "model": clf_pretrained, "method": "knn", "progress": False,
          "n_neighbors": 5}  # fmt: skip
    lowered = np.arange(34)  # 34 of 60 genes lower-cased, 26 as written
    ref_part = ref[:, np.setdiff1d(np.arange(ref.n_vars), lowered[:9])].copy()
    expected = tl.annotate(query, ref_part, copy=True, **kw)
    q = query.copy()
    q.var_names = [g.lower() if i in lowered else g for i, g in enumerate(q.var_names)]
    if backed:
        q.write_h5ad(tmp_path / "q.h5ad")
        q = ad.read_h5ad(tmp_path / "q.h5ad", backed="r")
    with pytest.warns(UserWarning, match="mostly when case is ignored"):
        tl.annotate(q, ref_part, **kw)
    info = q.uns["scgpt"]["scgpt_cell_type"]
    assert (info["n_genes_shared"], info["case_ignored"]) == (51, True)
    written = [c for c in expected.obs.columns if c.startswith("scgpt_")]  # the predictions
    pd.testing.assert_frame_equal(q.obs[written], expected.obs[written])


def test_a_query_cell_expressing_only_unshared_genes_is_said_so(clf_pretrained, clf_ref_query):
    # it expresses vocabulary genes, but none the reference has: the warning said "none of the
    # genes in the model's vocabulary", and its fix (filter to them) would not remove the cell
    ref, query = clf_ref_query
    q = query.copy()
    X = q.X.toarray()
    X[0, 10:] = 0
    X[0, :10] = 1.0
    q.X = sp.csr_matrix(X)
    said = "express none of the genes the model knows that reference and query share"
    with pytest.warns(UserWarning, match=said) as record:
        tl.annotate(q, ref[:, 10:].copy(), label_key="cell_type", model=clf_pretrained,
                    method="knn", progress=False)  # fmt: skip
    assert sum("express none of" in str(w.message) for w in record) == 1
