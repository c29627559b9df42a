"""scgpt.tl.annotate: backed inputs read as in memory, and arguments a method ignores."""

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

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
