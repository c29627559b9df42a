"""scgpt.tl.annotate on small synthetic cell types (ScGPTClassifier: test_classifier.py)."""

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from omicformer.scgpt import tl

N_GENES = 60
TYPES = ["T", "B", "Mono"]
FIT = {"accelerator": "cpu", "enable_progress_bar": False}

pytestmark = pytest.mark.usefixtures("one_thread")


def test_annotate_finetune_writes_fields_and_reuses_a_trained_classifier(
    clf_trained, clf_ref_query
):
    ref, query = clf_ref_query
    q = query.copy()
    clf = tl.annotate(q, ref, label_key="cell_type", model=clf_trained, progress=False,
                      return_model=True)  # fmt: skip
    assert clf is clf_trained  # trained on these classes: used as it is
    pred = q.obs["scgpt_cell_type"]
    assert isinstance(pred.dtype, pd.CategoricalDtype)
    assert (pred.astype(str) == q.obs["cell_type"]).mean() > 0.9
    conf = q.obs["scgpt_cell_type_confidence"]
    assert conf.between(1 / 3, 1).all()
    uns = q.uns["scgpt"]["scgpt_cell_type"]
    assert uns["classes"] == sorted(TYPES) and uns["params"]["method"] == "finetune"
    assert uns["n_genes_matched"] == uns["n_genes_shared"] == N_GENES


def test_annotate_finetune_from_pretrained_and_reference_none(clf_pretrained, clf_ref_query):
    ref, query = clf_ref_query
    both = ad.concat([ref, query])
    both.obs["partial"] = both.obs["cell_type"].astype(object)
    both.obs.loc[query.obs_names, "partial"] = np.nan
    before = both.obs.copy()
    tl.annotate(both, label_key="partial", model=clf_pretrained, max_epochs=8, progress=False,
                random_state=1)  # fmt: skip
    pd.testing.assert_frame_equal(both.obs[before.columns], before)  # input columns untouched
    got = both.obs["scgpt_partial"].astype(str)
    assert (got[ref.obs_names] == ref.obs["cell_type"]).all()  # known labels kept
    assert both.obs.loc[ref.obs_names, "scgpt_partial_confidence"].isna().all()
    assert set(got[query.obs_names]) <= set(TYPES)
    # same seed, same labels and confidences (CPU)
    again = both.copy()
    tl.annotate(again, label_key="partial", model=clf_pretrained, max_epochs=8, progress=False,
                random_state=1, key_added="again")  # fmt: skip
    pd.testing.assert_series_equal(
        again.obs["again_confidence"], both.obs["scgpt_partial_confidence"], check_names=False
    )


def test_annotate_leaves_the_users_setup_of_the_reference(clf_pretrained, clf_ref_query, tmp_path):
    from omicformer.scgpt.model import ScGPTClassifier

    ref, query = (a.copy() for a in clf_ref_query)
    ref.obs["other"] = np.where(np.arange(ref.n_obs) % 2, "x", "y")
    ScGPTClassifier.setup_anndata(ref, labels_key="cell_type")  # the user's own registration
    tl.annotate(query, ref, label_key="other", model=clf_pretrained, max_epochs=1, n_models=1,
                progress=False)  # fmt: skip
    mine = ScGPTClassifier.load_pretrained(clf_pretrained, ref)  # not "Did you make a copy?"
    assert mine.get_setup_arg("labels_key") == "cell_type"
    # a backed reference written after its setup: the file holds the setup id
    ref.write_h5ad(tmp_path / "ref.h5ad")
    backed = ad.read_h5ad(tmp_path / "ref.h5ad", backed="r")
    ScGPTClassifier.setup_anndata(backed, labels_key="cell_type")
    tl.annotate(query, backed, label_key="other", model=clf_pretrained, max_epochs=1,
                n_models=1, progress=False)  # fmt: skip
    assert ScGPTClassifier.load_pretrained(clf_pretrained, backed).get_setup_arg("labels_key") == (
        "cell_type"
    )
    backed.file.close()


def test_annotate_reference_none_keeps_numbered_labels(clf_pretrained, clf_ref_query):
    ref, query = clf_ref_query
    both = ad.concat([ref, query])
    ints = both.obs["cell_type"].map({"T": 10, "B": 2, "Mono": 1}).astype(int)
    nullable, categorical = ints.astype("Int64"), ints.astype("category")
    nullable[query.obs_names] = pd.NA  # both read as floats (10.0) in to_numpy
    categorical[query.obs_names] = np.nan
    for column in (nullable, categorical):
        both.obs["n"] = column
        tl.annotate(both, label_key="n", model=clf_pretrained, method="knn", n_neighbors=5,
                    progress=False)  # fmt: skip
        got = both.obs["scgpt_n"]
        assert list(got.cat.categories) == ["1", "2", "10"] and got.notna().all()
        want = ref.obs["cell_type"].map({"T": "10", "B": "2", "Mono": "1"})
        assert (got[ref.obs_names].astype(str) == want).all()  # known labels kept, as text


def test_annotate_knn(clf_pretrained, clf_ref_query):
    ref, query = clf_ref_query
    out = tl.annotate(query, ref, label_key="cell_type", model=clf_pretrained, method="knn",
                      progress=False, copy=True, n_neighbors=5)  # fmt: skip
    conf = out.obs["scgpt_cell_type_confidence"]
    np.testing.assert_allclose(conf * 5, np.round(conf * 5))  # vote shares of 5 neighbours
    assert out.uns["scgpt"]["scgpt_cell_type"]["validation"]["n_cells"] == 9
    assert "scgpt_cell_type" not in query.obs
    # min_confidence: cells below it become "Unknown" (and only those)
    sure = tl.annotate(query, ref, label_key="cell_type", model=clf_pretrained, method="knn",
                       progress=False, copy=True, n_neighbors=5, min_confidence=0.9)  # fmt: skip
    unknown = sure.obs["scgpt_cell_type"] == "Unknown"
    assert unknown.sum() == (conf < 0.9).sum()
    kept = ~unknown.to_numpy()
    got, before = sure.obs["scgpt_cell_type"].astype(str), out.obs["scgpt_cell_type"].astype(str)
    assert (got[kept] == before[kept]).all()
    # a reference class named "Unknown" shares the category with the unsure cells
    named = ref.copy()
    first = named.obs["cell_type"].astype(str).iloc[0]
    named.obs["cell_type"] = named.obs["cell_type"].astype(str).replace(first, "Unknown")
    both = tl.annotate(query, named, label_key="cell_type", model=clf_pretrained, method="knn",
                       progress=False, copy=True, n_neighbors=5, min_confidence=0.9)  # fmt: skip
    cats = list(both.obs["scgpt_cell_type"].cat.categories)
    assert (
        cats.count("Unknown") == 1
        and (both.obs["scgpt_cell_type"] == "Unknown").sum() >= unknown.sum()
    )


def test_annotate_orders_and_colours_labels_as_the_reference(clf_pretrained, clf_ref_query):
    ref, query = clf_ref_query
    coloured = ref.copy()
    order = ["Mono", "T", "B"]  # not alphabetical: the reference's own order
    coloured.obs["cell_type"] = pd.Categorical(coloured.obs["cell_type"], categories=order)
    coloured.uns["cell_type_colors"] = np.array(["#ff0000", "#00ff00", "#0000ff"])
    out = tl.annotate(query, coloured, label_key="cell_type", model=clf_pretrained, method="knn",
                      progress=False, copy=True, n_neighbors=5, min_confidence=0.9)  # fmt: skip
    pred = out.obs["scgpt_cell_type"]
    assert (pred == "Unknown").any()  # so that its colour is checked too
    assert list(pred.cat.categories) == [*order, "Unknown"]
    assert list(out.uns["scgpt_cell_type_colors"]) == ["#ff0000", "#00ff00", "#0000ff",
                                                         "lightgray"]  # fmt: skip
    # numbered labels (clusters) in numeric order, not as strings sort; no colours to copy
    numbered = ref.copy()
    numbered.obs["cluster"] = numbered.obs["cell_type"].map({"T": 10, "B": 2, "Mono": 1})
    out = tl.annotate(query, numbered, label_key="cluster", model=clf_pretrained, method="knn",
                      progress=False, copy=True, n_neighbors=5)  # fmt: skip
    assert list(out.obs["scgpt_cluster"].cat.categories) == ["1", "2", "10"]
    assert "scgpt_cluster_colors" not in out.uns
    # colours that do not match the categories are not copied
    coloured.uns["cell_type_colors"] = np.array(["#ff0000", "#00ff00"])
    out = tl.annotate(query, coloured, label_key="cell_type", model=clf_pretrained, method="knn",
                      progress=False, copy=True, n_neighbors=5)  # fmt: skip
    assert "scgpt_cell_type_colors" not in out.uns
    # nor are the colours of an earlier call kept for the new categories
    again = query.copy()
    again.uns["scgpt_cell_type_colors"] = np.array(["#123456", "#654321"])
    tl.annotate(again, coloured, label_key="cell_type", model=clf_pretrained, method="knn",
                progress=False, n_neighbors=5)  # fmt: skip
    assert "scgpt_cell_type_colors" not in again.uns


def _scaled(a: ad.AnnData) -> ad.AnnData:
    """scanpy's workflow: log-normalised expression kept in ``raw``, ``X`` scaled."""
    import scanpy as sc

    a = a.copy()
    sc.pp.log1p(a)
    a.raw = a
    a.X = a.X.toarray()
    sc.pp.scale(a)
    return a


def test_annotate_reads_raw_when_x_is_scaled(clf_pretrained, clf_ref_query):
    ref, query = clf_ref_query
    kw = {"label_key": "cell_type", "model": clf_pretrained, "method": "knn", "progress": False,
          "n_neighbors": 5}  # fmt: skip
    expected = tl.annotate(_scaled(query).raw.to_adata(), _scaled(ref).raw.to_adata(), copy=True,
                           **kw).obs  # fmt: skip
    q = _scaled(query)
    with pytest.warns(UserWarning, match="reference.X holds negative values") as record:
        tl.annotate(q, _scaled(ref), **kw)
    scaled = [w for w in record if "negative values" in str(w.message)]
    assert all(w.filename == __file__ for w in scaled)  # the user's line
    pd.testing.assert_frame_equal(q.obs[expected.columns], expected)
    np.testing.assert_array_equal(q.X, _scaled(query).X)  # X itself is untouched


def _ensembl_ids_with_symbols_in_var(q: ad.AnnData) -> None:
    q.var["feature_name"] = q.var_names.to_numpy()  # a CELLxGENE file
    q.var_names = [f"ENSG{i:011d}" for i in range(q.n_vars)]


def _lower_case_symbols(q: ad.AnnData) -> None:
    q.var_names = [g.lower() for g in q.var_names]  # "g0" for the vocabulary's "G0"


@pytest.mark.parametrize(
    ("rename", "warning"),
    [
        (_ensembl_ids_with_symbols_in_var, r"adata.var\['feature_name'\] are used"),
        (_lower_case_symbols, "mostly when case is ignored"),
    ],
)
def test_annotate_finds_query_symbols_kept_otherwise(
    clf_pretrained, clf_ref_query, rename, warning
):
    ref, query = clf_ref_query
    kw = {"label_key": "cell_type", "model": clf_pretrained, "method": "knn", "progress": False,
          "n_neighbors": 5}  # fmt: skip
    expected = tl.annotate(query, ref, copy=True, **kw).obs
    q = query.copy()
    rename(q)
    names = q.var_names.copy()
    with pytest.warns(UserWarning, match=warning) as record:
        tl.annotate(q, ref, **kw)
    assert record[0].filename == __file__  # the warning points at the caller's line
    pd.testing.assert_frame_equal(q.obs[expected.columns], expected)
    assert q.var_names.equals(names)  # the query's genes keep their names
    key = "scgpt_cell_type"
    assert q.uns["scgpt"][key]["case_ignored"] is (rename is _lower_case_symbols)


@pytest.mark.parametrize(
    ("change", "kwargs", "error", "match"),
    [
        (None, {"label_key": "nope"}, KeyError, r"label_key='nope' is not a column.*cell_type"),
        (None, {"method": "svm"}, ValueError, "method='svm'"),
        (None, {"min_confidence": 1.5}, ValueError, r"min_confidence=1.5 must lie in \[0, 1\]"),
        (None, {"model": 3}, TypeError, "model=3 is not understood"),
        (None, {"gene_selection": "top"}, ValueError, "gene_selection='top' must be one of"),
        (None, {"smooth_neighbors": 0}, ValueError, r"smooth_neighbors=0 must be an integer >= 1"),
        (None, {"random_state": None}, ValueError, r"random_state=None must be an integer >= 0"),
        ("all_missing", {}, ValueError, "has no labels"),
        ("singleton", {}, ValueError, r"fewer than 2 cells: \['Rare'\]"),
        ("unknown_genes", {}, ValueError, "Only 0 of 60 genes"),
        ("half_genes", {}, ValueError, "share only 30 genes known to the model"),
        (None, {"method": "knn", "n_neighbors": 0}, ValueError, "n_neighbors=0 must be"),
        (None, {"method": "knn", "max_len": 10.5}, ValueError, r"max_len=10.5 must be an integer"),
        (None, {"max_len": 1}, ValueError, "max_len=1 must be an integer >= 2"),
        ("no_query_cells", {}, ValueError, "adata has no cells to label"),
        ("one_label", {}, ValueError, r"holds one label \(\['T'\]\)"),
        ("query_layer", {"layer": "counts"}, KeyError, r"layer='counts' not found in reference"),
        (
            "query_symbols",
            {"gene_key": "symbol"},
            KeyError,
            r"gene_key='symbol' not found in reference\.var",
        ),
    ],
)
def test_annotate_bad_input_leaves_adata_untouched(
    clf_pretrained, clf_ref_query, change, kwargs, error, match
):
    ref, query = clf_ref_query
    ref, query = ref.copy(), query.copy()
    if change == "all_missing":
        ref.obs["cell_type"] = np.nan
    elif change == "singleton":
        ref.obs["cell_type"] = ref.obs["cell_type"].astype(str)
        ref.obs.iloc[0, 0] = "Rare"
    elif change == "unknown_genes":
        query.var_names = [f"X{i}" for i in range(N_GENES)]
    elif change == "half_genes":
        query.var_names = [f"X{i}" if i < 30 else f"G{i}" for i in range(N_GENES)]
    elif change == "one_label":
        ref = ref[ref.obs["cell_type"] == "T"].copy()
    elif change == "no_query_cells":
        query = query[:0].copy()
    elif change == "query_layer":  # the query has the layer, the reference does not
        query.layers["counts"] = query.X.copy()
    elif change == "query_symbols":
        query.var["symbol"] = query.var_names
    before_obs, before_uns = query.obs.copy(), dict(query.uns)
    args = {"label_key": "cell_type", "model": clf_pretrained, "progress": False, **kwargs}
    with pytest.raises(error, match=match):
        tl.annotate(query, ref, **args)
    pd.testing.assert_frame_equal(query.obs, before_obs)
    assert dict(query.uns) == before_uns


def test_a_scaled_query_is_refused_before_fine_tuning(clf_pretrained, clf_ref_query, monkeypatch):
    # the query's counts in a layer and scaled X, no raw: it failed only when predicting
    from omicformer.scgpt.model import ScGPTClassifier

    ref, query = clf_ref_query
    q = query.copy()
    q.layers["counts"] = q.X.copy()
    q.X = sp.csr_matrix(q.X.toarray() - 1.0)

    def no_training(*args, **kwargs):
        raise AssertionError("fine-tuning started")

    monkeypatch.setattr(ScGPTClassifier, "train", no_training)
    with pytest.raises(ValueError, match=r"adata\.X contains negative values.*both hold"):
        tl.annotate(q, ref, label_key="cell_type", model=clf_pretrained, progress=False)
    assert "scgpt_cell_type" not in q.obs


def _top_genes(a: ad.AnnData, k: int) -> ad.AnnData:
    """``a`` with every value of a cell below its ``k`` largest set to 0 (values distinct)."""
    X = a.X.toarray()
    kth = -np.sort(-X, axis=1)[:, k - 1 : k]
    return ad.AnnData(sp.csr_matrix(X * (X >= kth)), obs=a.obs.copy(), var=a.var.copy())


def test_annotate_gene_selection_reaches_training_and_knn(
    clf_pretrained, clf_trained, clf_ref_query
):
    ref, query = clf_ref_query
    # knn with None embeds as tl.embed does: with the model's own selection
    out = tl.annotate(query, ref, label_key="cell_type", model=clf_trained, method="knn",
                      progress=False, copy=True)  # fmt: skip
    assert out.uns["scgpt"]["scgpt_cell_type"]["params"]["gene_selection"] == "highest"
    _, clf = tl.annotate(query, ref, label_key="cell_type", model=clf_pretrained, max_epochs=1,
                         gene_selection="random", progress=False, copy=True,
                         return_model=True)  # fmt: skip
    assert clf.gene_selection == "random"  # the official subset, instead of the default
    assert type(clf).__name__ == "ScGPTClassifier"  # one classifier by default (n_models=1)
    # knn, "highest": a cell longer than max_len reads as the cell holding only its top
    # max_len - 1 genes (distinct values, so the top genes are unambiguous)
    jitter = 1e-3 * np.arange(1, N_GENES + 1, dtype=np.float32)

    def distinct(a: ad.AnnData) -> ad.AnnData:
        X = a.X.toarray()
        return ad.AnnData(sp.csr_matrix((X + jitter) * (X > 0)), obs=a.obs.copy(), var=a.var.copy())

    ref, query = distinct(ref), distinct(query)
    assert (np.diff(ref.X.indptr) > 5).all() and (np.diff(query.X.indptr) > 5).all()
    args = {"label_key": "cell_type", "model": clf_pretrained, "method": "knn", "max_len": 6,
            "n_neighbors": 5, "progress": False, "copy": True}  # fmt: skip
    long = tl.annotate(query, ref, gene_selection="highest", **args)
    short = tl.annotate(_top_genes(query, 5), _top_genes(ref, 5), **args)
    pd.testing.assert_frame_equal(long.obs, short.obs)
    assert long.uns["scgpt"]["scgpt_cell_type"]["params"]["gene_selection"] == "highest"
    assert short.uns["scgpt"]["scgpt_cell_type"]["params"]["gene_selection"] == "random"
    rand = tl.annotate(query, ref, **args)  # default for knn: random subsets, as tl.embed
    assert not np.allclose(rand.obs["scgpt_cell_type_confidence"],
                           long.obs["scgpt_cell_type_confidence"])  # fmt: skip


def test_annotate_nothing_to_predict(clf_pretrained, clf_ref_query):
    ref, _ = clf_ref_query
    with pytest.raises(ValueError, match="nothing to predict"):
        tl.annotate(ref, label_key="cell_type", model=clf_pretrained, progress=False)


@pytest.mark.parametrize("tool", ["annotate", "integrate"])
def test_cells_without_vocabulary_genes_make_one_warning_a_call(
    clf_pretrained, clf_ref_query, tool
):
    # fine-tuning reads the cells several times (validation, training, prediction, embedding):
    # each read of a chunk warned, four to six times a call
    ref, query = clf_ref_query
    query = query.copy()
    X = query.X.toarray()
    X[:2] = 0
    query.X = sp.csr_matrix(X)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        if tool == "annotate":
            tl.annotate(query, ref, label_key="cell_type", model=clf_pretrained, max_epochs=1,
                        progress=False)  # fmt: skip
        else:
            both = ad.concat({"r": ref, "q": query}, label="batch", index_unique="-")
            tl.integrate(both, batch_key="batch", model=clf_pretrained, max_epochs=1,
                         progress=False)  # fmt: skip
    found = [w for w in record if "express none of the genes" in str(w.message)]
    assert len(found) == 1 and found[0].filename == __file__


def test_annotate_reads_only_the_genes_both_sides_share(clf_pretrained, clf_ref_query, caplog):
    """Extra query genes (known to the model, absent from the reference) change nothing."""
    ref, query = clf_ref_query
    extra = ad.AnnData(
        sp.csr_matrix(np.random.default_rng(3).poisson(4.0, (query.n_obs, 10)).astype(np.float32)),
        obs=query.obs[[]], var=pd.DataFrame(index=[f"G{i}" for i in range(10)]),
    )  # fmt: skip
    wide = ad.concat([query[:, 10:], extra], axis=1, merge="same")  # G10..G59 + new G0..G9
    narrow_ref = ref[:, 10:].copy()
    kw = {"label_key": "cell_type", "model": clf_pretrained, "method": "knn", "progress": False}
    a = tl.annotate(query[:, 10:].copy(), narrow_ref, copy=True, **kw)
    unknown = ad.AnnData(sp.csr_matrix(np.ones((query.n_obs, 5), np.float32)), obs=query.obs[[]],
                         var=pd.DataFrame(index=[f"NOTAGENE{i}" for i in range(5)]))  # fmt: skip
    wide = ad.concat([wide, unknown], axis=1, merge="same")
    with caplog.at_level("INFO", logger="omicformer.scgpt._annotate"):
        b = tl.annotate(wide, narrow_ref, copy=True, **kw)
    assert (
        "5 of 65 query genes are not in the model's vocabulary and are dropped; 50 genes known "
        "to the model are shared with the reference"
    ) in caplog.text
    assert b.uns["scgpt"]["scgpt_cell_type"]["n_genes_shared"] == 50
    assert b.uns["scgpt"]["scgpt_cell_type"]["n_genes_matched"] == 60
    np.testing.assert_array_equal(
        a.obs["scgpt_cell_type_confidence"], b.obs["scgpt_cell_type_confidence"]
    )


def test_annotate_backed_refuses_a_key_with_a_slash_before_the_work(
    clf_pretrained, clf_ref_query, tmp_path
):
    # the labels of a backed AnnData go to its .h5ad, where "a/b" would be nested groups
    ref, query = clf_ref_query
    query.write_h5ad(tmp_path / "q.h5ad")
    backed = ad.read_h5ad(tmp_path / "q.h5ad", backed="r")
    for kwargs in ({"key_added": "a/b"}, {"label_key": "cell/type"}):
        reference = ref.copy()
        reference.obs["cell/type"] = reference.obs["cell_type"]
        with pytest.raises(ValueError, match=r"key_added='(a/b|scgpt_cell/type)' contains '/'"):
            tl.annotate(backed, reference=reference, model=clf_pretrained, method="knn",
                        **{"label_key": "cell_type", **kwargs})  # fmt: skip
    assert list(backed.obs.columns) == list(query.obs.columns) and "scgpt" not in backed.uns
    backed.file.close()
    # in memory the key is fine
    q = query[:6].copy()
    tl.annotate(q, reference=ref, label_key="cell_type", model=clf_pretrained, method="knn",
                key_added="a/b", device="cpu", progress=False, n_neighbors=3)  # fmt: skip
    assert "a/b" in q.obs and "a/b" in q.uns["scgpt"]


def test_annotate_knn_reads_cells_at_the_models_own_length_as_tl_embed(clf_ref_query):
    from sklearn.neighbors import KNeighborsClassifier

    from omicformer.scgpt.model import ScGPT

    ref, query = clf_ref_query
    assert (np.diff(ref.X.indptr) > 7).all()  # every cell longer than the model reads
    a = ref.copy()
    ScGPT.setup_anndata(a)
    short = ScGPT(a, d_model=32, n_layers=1, n_heads=2, dropout=0.0, max_len=8, random_state=0)
    out = tl.annotate(query, ref, label_key="cell_type", model=short, method="knn",
                      n_neighbors=5, progress=False, copy=True)  # fmt: skip
    # independent: scikit-learn's kNN on tl.embed's embeddings (the model's own length)
    emb_ref = tl.embed(ref, model=short, progress=False, copy=True).obsm["X_scgpt"]
    emb_query = tl.embed(query, model=short, progress=False, copy=True).obsm["X_scgpt"]
    knn = KNeighborsClassifier(5).fit(emb_ref, ref.obs["cell_type"].astype(str))
    np.testing.assert_allclose(
        out.obs["scgpt_cell_type_confidence"], knn.predict_proba(emb_query).max(1)
    )
    assert out.uns["scgpt"]["scgpt_cell_type"]["params"]["max_len"] == 8


def test_annotate_with_a_trained_classifier_warns_of_fine_tuning_arguments(
    clf_trained, clf_ref_query
):
    ref, query = clf_ref_query
    with pytest.warns(UserWarning, match=r"max_len=10, dropout=0.2 only apply to fine-tuning"):
        out = tl.annotate(query, ref, label_key="cell_type", model=clf_trained, max_len=10,
                          dropout=0.2, progress=False, copy=True)  # fmt: skip
    params = out.uns["scgpt"]["scgpt_cell_type"]["params"]
    assert params["max_len"] == 1200  # the classifier's own length, not the ignored argument


def test_annotate_knn_refuses_a_model_with_batch_layers_before_the_work(clf_ref_query):
    # knn failed deep in the forward ("pass batch_labels"); "finetune" starts without the
    # layers (test_classifier.py)
    from omicformer.scgpt.model import ScGPT

    ref, query = clf_ref_query
    a = ref.copy()
    a.obs["batch"] = ["a", "b"] * (a.n_obs // 2)
    ScGPT.setup_anndata(a, batch_key="batch")
    dsbn = ScGPT(a, d_model=32, n_layers=1, n_heads=2, dsbn=True, random_state=0)
    q, before = query.copy(), query.obs.copy()
    with pytest.raises(ValueError, match=r"batch-dependent layers.*Use method='finetune'"):
        tl.annotate(q, ref, label_key="cell_type", model=dsbn, method="knn", progress=False)
    pd.testing.assert_frame_equal(q.obs, before)
