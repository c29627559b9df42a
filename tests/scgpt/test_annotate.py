"""scgpt.tl.annotate and ScGPTClassifier on small synthetic cell types."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from omicformer.scgpt import tl
from omicformer.scgpt.model import ScGPT, ScGPTClassifier

N_GENES = 60
TYPES = ["T", "B", "Mono"]
FIT = {"accelerator": "cpu", "enable_progress_bar": False}


def _cells(n_per_type: int, seed: int) -> ad.AnnData:
    """Three cell types, each with its own 20 marker genes 8x more expressed (Poisson counts)."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for t, name in enumerate(TYPES):
        lam = np.full(N_GENES, 0.6)
        lam[20 * t : 20 * (t + 1)] = 5.0
        rows.append(rng.poisson(lam, size=(n_per_type, N_GENES)))
        labels += [name] * n_per_type
    X = np.vstack(rows).astype(np.float32)
    X[X.sum(1) == 0, 0] = 1
    obs = pd.DataFrame({"cell_type": labels}, index=[f"s{seed}c{i}" for i in range(len(labels))])
    return ad.AnnData(
        sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=[f"G{i}" for i in range(N_GENES)])
    )


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pretrained() -> ScGPT:
    """A tiny (untrained) scGPT over the 60 genes, standing in for a pretrained model."""
    a = _cells(4, seed=9)
    ScGPT.setup_anndata(a)
    return ScGPT(a, d_model=32, n_layers=1, n_heads=2, dropout=0.0, random_state=0)


@pytest.fixture(scope="module")
def ref_query():
    return _cells(30, seed=0), _cells(15, seed=1)


@pytest.fixture(scope="module")
def trained(ref_query, pretrained):
    ref, _ = ref_query
    ref = ref.copy()
    ScGPTClassifier.setup_anndata(ref, labels_key="cell_type")
    clf = ScGPTClassifier.load_pretrained(pretrained, ref)
    with torch.random.fork_rng():
        clf.train(max_epochs=8, lr=3e-3, batch_size=16, **FIT)
    return clf


def test_classifier_learns_and_calibrates(trained, ref_query):
    _, query = ref_query
    pred = trained.predict(query, progress=False)
    truth = query.obs["cell_type"].to_numpy()
    assert (pred.astype(str).to_numpy() == truth).mean() > 0.9  # chance 1/3
    proba = trained.predict_proba(query, progress=False)
    assert list(proba.columns) == sorted(TYPES) == trained.classes_
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)
    assert trained.temperature_ > 0 and trained.validation_scores_["n_cells"] == 9
    assert {"train_loss", "validation_loss", "validation_accuracy"} <= set(trained.history)
    assert trained.module.cls_decoder.out_layer.out_features == 3


def test_classifier_save_load_round_trip(trained, ref_query, tmp_path):
    _, query = ref_query
    trained.save(tmp_path / "clf")
    loaded = ScGPTClassifier.load(tmp_path / "clf")
    assert loaded.classes_ == trained.classes_
    assert loaded.temperature_ == trained.temperature_
    pd.testing.assert_frame_equal(
        loaded.predict_proba(query, progress=False), trained.predict_proba(query, progress=False)
    )
    # the saved folder also embeds through tl.embed like any scGPT folder
    out = tl.embed(query, model=tmp_path / "clf", progress=False, copy=True)
    assert out.obsm["X_scgpt"].shape == (45, 32)


def test_classifier_keeps_the_most_expressed_genes_of_long_cells(trained, pretrained, tmp_path):
    import json

    assert trained.gene_selection == "highest" and pretrained.gene_selection == "random"
    # a cell longer than max_len embeds as the same cell holding only its top max_len - 1 genes
    rng = np.random.default_rng(0)
    X = np.stack([rng.permutation(np.arange(1, N_GENES + 1)) for _ in range(6)]).astype(np.float32)
    top = X * (X > N_GENES - 5)  # the 5 highest values of every row (distinct values)
    genes = pd.DataFrame(index=[f"G{i}" for i in range(N_GENES)])
    long, short = ad.AnnData(sp.csr_matrix(X), var=genes), ad.AnnData(sp.csr_matrix(top), var=genes)
    z_long = trained.get_latent_representation(long, max_len=6, progress=False)
    z_short = trained.get_latent_representation(short, progress=False)
    np.testing.assert_allclose(z_long, z_short, atol=1e-5)
    # saved and restored; folders saved before the setting existed load as "random"
    trained.save(tmp_path / "clf")
    assert ScGPTClassifier.load(tmp_path / "clf").gene_selection == "highest"
    # tl.embed of the model or its folder tokenises as the model was trained
    for model in (trained, tmp_path / "clf"):
        out = tl.embed(long, model=model, max_len=6, progress=False, copy=True)
        np.testing.assert_allclose(out.obsm["X_scgpt"], z_long, atol=1e-5)
        assert out.uns["scgpt"]["X_scgpt"]["params"]["gene_selection"] == "highest"
    cfg = json.loads((tmp_path / "clf" / "omicformer_config.json").read_text())
    del cfg["model_settings"]["gene_selection"]
    (tmp_path / "clf" / "omicformer_config.json").write_text(json.dumps(cfg))
    assert ScGPTClassifier.load(tmp_path / "clf").gene_selection == "random"
    out = tl.embed(long, model=tmp_path / "clf", max_len=6, progress=False, copy=True)
    assert out.uns["scgpt"]["X_scgpt"]["params"]["gene_selection"] == "random"
    assert not np.allclose(out.obsm["X_scgpt"], z_long, atol=1e-3)
    ref = _cells(4, seed=2)
    ScGPTClassifier.setup_anndata(ref, labels_key="cell_type")
    official = ScGPTClassifier.load_pretrained(pretrained, ref, gene_selection="random")
    assert official.gene_selection == "random"
    with pytest.raises(ValueError, match="gene_selection='top'"):
        ScGPTClassifier.load_pretrained(pretrained, ref, gene_selection="top")


def test_classifier_head_reads_the_chosen_cell_embedding(trained, pretrained, ref_query):
    assert pretrained.module.config.cell_emb_style == "cls"
    assert trained.module.config.cell_emb_style == "gene-mean"  # the default, kept when saved
    ref = ref_query[0].copy()
    ScGPTClassifier.setup_anndata(ref, labels_key="cell_type")
    clf = ScGPTClassifier.load_pretrained(pretrained, ref)
    head = {k: v.clone() for k, v in clf.module.state_dict().items()}
    with pytest.raises(ValueError, match="cell_emb_style='max'"):
        clf.train(max_epochs=1, cell_emb_style="max", **FIT)
    assert clf.module.config.cell_emb_style == "cls" and not clf.is_trained_
    for k, v in clf.module.state_dict().items():
        torch.testing.assert_close(v, head[k])
    with torch.random.fork_rng():
        clf.train(max_epochs=1, batch_size=16, cell_emb_style="cls", **FIT)
    assert clf.module.config.cell_emb_style == "cls"  # the official recipe's <cls> output


def test_annotate_finetune_writes_fields_and_reuses_a_trained_classifier(trained, ref_query):
    ref, query = ref_query
    q = query.copy()
    clf = tl.annotate(q, ref, label_key="cell_type", model=trained, progress=False,
                      return_model=True)  # fmt: skip
    assert clf is trained  # trained on these classes: used as it is
    pred = q.obs["scgpt_cell_type"]
    assert isinstance(pred.dtype, pd.CategoricalDtype)
    assert (pred.astype(str) == q.obs["cell_type"]).mean() > 0.9
    conf = q.obs["scgpt_cell_type_confidence"]
    assert conf.between(1 / 3, 1).all()
    uns = q.uns["scgpt"]["scgpt_cell_type"]
    assert uns["classes"] == sorted(TYPES) and uns["params"]["method"] == "finetune"
    assert uns["n_genes_matched"] == uns["n_genes_shared"] == N_GENES


def test_annotate_finetune_from_pretrained_and_reference_none(pretrained, ref_query):
    ref, query = ref_query
    both = ad.concat([ref, query])
    both.obs["partial"] = both.obs["cell_type"].astype(object)
    both.obs.loc[query.obs_names, "partial"] = np.nan
    before = both.obs.copy()
    tl.annotate(both, label_key="partial", model=pretrained, max_epochs=8, progress=False,
                random_state=1)  # fmt: skip
    pd.testing.assert_frame_equal(both.obs[before.columns], before)  # input columns untouched
    got = both.obs["scgpt_partial"].astype(str)
    assert (got[ref.obs_names] == ref.obs["cell_type"]).all()  # known labels kept
    assert both.obs.loc[ref.obs_names, "scgpt_partial_confidence"].isna().all()
    assert set(got[query.obs_names]) <= set(TYPES)
    # same seed, same labels and confidences (CPU)
    again = both.copy()
    tl.annotate(again, label_key="partial", model=pretrained, max_epochs=8, progress=False,
                random_state=1, key_added="again")  # fmt: skip
    pd.testing.assert_series_equal(
        again.obs["again_confidence"], both.obs["scgpt_partial_confidence"], check_names=False
    )


def test_annotate_knn(pretrained, ref_query):
    ref, query = ref_query
    out = tl.annotate(query, ref, label_key="cell_type", model=pretrained, method="knn",
                      progress=False, copy=True, n_neighbors=5)  # fmt: skip
    conf = out.obs["scgpt_cell_type_confidence"]
    np.testing.assert_allclose(conf * 5, np.round(conf * 5))  # vote shares of 5 neighbours
    assert out.uns["scgpt"]["scgpt_cell_type"]["validation"]["n_cells"] == 9
    assert "scgpt_cell_type" not in query.obs
    # min_confidence: cells below it become "Unknown" (and only those)
    sure = tl.annotate(query, ref, label_key="cell_type", model=pretrained, method="knn",
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
    both = tl.annotate(query, named, label_key="cell_type", model=pretrained, method="knn",
                       progress=False, copy=True, n_neighbors=5, min_confidence=0.9)  # fmt: skip
    cats = list(both.obs["scgpt_cell_type"].cat.categories)
    assert (
        cats.count("Unknown") == 1
        and (both.obs["scgpt_cell_type"] == "Unknown").sum() >= unknown.sum()
    )


def test_annotate_orders_and_colours_labels_as_the_reference(pretrained, ref_query):
    ref, query = ref_query
    coloured = ref.copy()
    order = ["Mono", "T", "B"]  # not alphabetical: the reference's own order
    coloured.obs["cell_type"] = pd.Categorical(coloured.obs["cell_type"], categories=order)
    coloured.uns["cell_type_colors"] = np.array(["#ff0000", "#00ff00", "#0000ff"])
    out = tl.annotate(query, coloured, label_key="cell_type", model=pretrained, method="knn",
                      progress=False, copy=True, n_neighbors=5, min_confidence=0.9)  # fmt: skip
    pred = out.obs["scgpt_cell_type"]
    assert (pred == "Unknown").any()  # so that its colour is checked too
    assert list(pred.cat.categories) == [*order, "Unknown"]
    assert list(out.uns["scgpt_cell_type_colors"]) == ["#ff0000", "#00ff00", "#0000ff",
                                                         "lightgray"]  # fmt: skip
    # numbered labels (clusters) in numeric order, not as strings sort; no colours to copy
    numbered = ref.copy()
    numbered.obs["cluster"] = numbered.obs["cell_type"].map({"T": 10, "B": 2, "Mono": 1})
    out = tl.annotate(query, numbered, label_key="cluster", model=pretrained, method="knn",
                      progress=False, copy=True, n_neighbors=5)  # fmt: skip
    assert list(out.obs["scgpt_cluster"].cat.categories) == ["1", "2", "10"]
    assert "scgpt_cluster_colors" not in out.uns
    # colours that do not match the categories are not copied
    coloured.uns["cell_type_colors"] = np.array(["#ff0000", "#00ff00"])
    out = tl.annotate(query, coloured, label_key="cell_type", model=pretrained, method="knn",
                      progress=False, copy=True, n_neighbors=5)  # fmt: skip
    assert "scgpt_cell_type_colors" not in out.uns


def _scaled(a: ad.AnnData) -> ad.AnnData:
    """scanpy's workflow: log-normalised expression kept in ``raw``, ``X`` scaled."""
    import scanpy as sc

    a = a.copy()
    sc.pp.log1p(a)
    a.raw = a
    a.X = a.X.toarray()
    sc.pp.scale(a)
    return a


def test_annotate_reads_raw_when_x_is_scaled(pretrained, ref_query):
    ref, query = ref_query
    kw = {"label_key": "cell_type", "model": pretrained, "method": "knn", "progress": False,
          "n_neighbors": 5}  # fmt: skip
    expected = tl.annotate(_scaled(query).raw.to_adata(), _scaled(ref).raw.to_adata(), copy=True,
                           **kw).obs  # fmt: skip
    q = _scaled(query)
    with pytest.warns(UserWarning, match="reference.X holds negative values"):
        tl.annotate(q, _scaled(ref), **kw)
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
def test_annotate_finds_query_symbols_kept_otherwise(pretrained, ref_query, rename, warning):
    ref, query = ref_query
    kw = {"label_key": "cell_type", "model": pretrained, "method": "knn", "progress": False,
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
        ("all_missing", {}, ValueError, "has no labels"),
        ("singleton", {}, ValueError, r"fewer than 2 cells: \['Rare'\]"),
        ("unknown_genes", {}, ValueError, "Only 0 of 60 genes"),
        ("half_genes", {}, ValueError, "share only 30 genes known to the model"),
    ],
)
def test_annotate_bad_input_leaves_adata_untouched(
    pretrained, ref_query, change, kwargs, error, match
):
    ref, query = ref_query
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
    before_obs, before_uns = query.obs.copy(), dict(query.uns)
    args = {"label_key": "cell_type", "model": pretrained, "progress": False, **kwargs}
    with pytest.raises(error, match=match):
        tl.annotate(query, ref, **args)
    pd.testing.assert_frame_equal(query.obs, before_obs)
    assert dict(query.uns) == before_uns


def _top_genes(a: ad.AnnData, k: int) -> ad.AnnData:
    """``a`` with every value of a cell below its ``k`` largest set to 0 (values distinct)."""
    X = a.X.toarray()
    kth = -np.sort(-X, axis=1)[:, k - 1 : k]
    return ad.AnnData(sp.csr_matrix(X * (X >= kth)), obs=a.obs.copy(), var=a.var.copy())


def test_annotate_gene_selection_reaches_training_and_knn(pretrained, trained, ref_query):
    ref, query = ref_query
    # knn with None embeds as tl.embed does: with the model's own selection
    out = tl.annotate(query, ref, label_key="cell_type", model=trained, method="knn",
                      progress=False, copy=True)  # fmt: skip
    assert out.uns["scgpt"]["scgpt_cell_type"]["params"]["gene_selection"] == "highest"
    _, clf = tl.annotate(query, ref, label_key="cell_type", model=pretrained, max_epochs=1,
                         gene_selection="random", progress=False, copy=True,
                         return_model=True)  # fmt: skip
    assert clf.gene_selection == "random"  # the official subset, instead of the default
    # knn, "highest": a cell longer than max_len reads as the cell holding only its top
    # max_len - 1 genes (distinct values, so the top genes are unambiguous)
    jitter = 1e-3 * np.arange(1, N_GENES + 1, dtype=np.float32)

    def distinct(a: ad.AnnData) -> ad.AnnData:
        X = a.X.toarray()
        return ad.AnnData(sp.csr_matrix((X + jitter) * (X > 0)), obs=a.obs.copy(), var=a.var.copy())

    ref, query = distinct(ref), distinct(query)
    assert (np.diff(ref.X.indptr) > 5).all() and (np.diff(query.X.indptr) > 5).all()
    args = {"label_key": "cell_type", "model": pretrained, "method": "knn", "max_len": 6,
            "n_neighbors": 5, "progress": False, "copy": True}  # fmt: skip
    long = tl.annotate(query, ref, gene_selection="highest", **args)
    short = tl.annotate(_top_genes(query, 5), _top_genes(ref, 5), **args)
    pd.testing.assert_frame_equal(long.obs, short.obs)
    assert long.uns["scgpt"]["scgpt_cell_type"]["params"]["gene_selection"] == "highest"
    assert short.uns["scgpt"]["scgpt_cell_type"]["params"]["gene_selection"] == "random"
    rand = tl.annotate(query, ref, **args)  # default for knn: random subsets, as tl.embed
    assert not np.allclose(rand.obs["scgpt_cell_type_confidence"],
                           long.obs["scgpt_cell_type_confidence"])  # fmt: skip


def test_annotate_nothing_to_predict(pretrained, ref_query):
    ref, _ = ref_query
    with pytest.raises(ValueError, match="nothing to predict"):
        tl.annotate(ref, label_key="cell_type", model=pretrained, progress=False)


def test_classifier_needs_labels(ref_query, pretrained):
    ref = ref_query[0].copy()
    ScGPTClassifier.setup_anndata(ref)
    with pytest.raises(ValueError, match="labels_key"):
        ScGPTClassifier.load_pretrained(pretrained, ref)


def test_default_epochs_scale_with_reference_size():
    from omicformer.scgpt.model._classifier import default_epochs

    # ceil(8000 / n) clipped to [3, 100]: 8000/441 = 18.1 -> 19; 8000/700 = 11.4 -> 12
    assert [default_epochs(n) for n in (50, 100, 441, 700, 5000)] == [100, 80, 19, 12, 3]


def test_default_patience_counts_cell_passes():
    from omicformer.scgpt.model._classifier import default_patience

    # ceil(2000 / n), at least 5: 2000/121 = 16.5 -> 17; 2000/441 = 4.5 -> 5 (the minimum)
    assert [default_patience(n) for n in (27, 121, 400, 441, 5000)] == [75, 17, 5, 5, 5]


def test_default_run_stops_after_12000_cell_passes(ref_query, pretrained, runner_call):
    """A large reference trains for less than the 3-epoch minimum instead of for hours."""
    seen = runner_call
    ref = ref_query[0].copy()
    ScGPTClassifier.setup_anndata(ref, labels_key="cell_type")
    clf = ScGPTClassifier.load_pretrained(pretrained, ref)
    with pytest.raises(RuntimeError, match="stop"):
        clf.train(batch_size=32)
    # 81 training cells (3 of each type's 30 held out): ceil(8000 / 81) = 99 epochs;
    # 12000 / 32 = 375 steps; patience ceil(2000 / 81) = 25 epochs
    assert seen["max_epochs"] == 99 and seen["max_steps"] == 375
    assert seen["early_stopping_patience"] == 25
    with pytest.raises(RuntimeError, match="stop"):
        clf.train(max_epochs=3, early_stopping_patience=2)
    assert seen["max_epochs"] == 3 and seen["max_steps"] is None
    assert seen["early_stopping_patience"] == 2


def test_annotate_reads_only_the_genes_both_sides_share(pretrained, ref_query, caplog):
    """Extra query genes (known to the model, absent from the reference) change nothing."""
    ref, query = ref_query
    extra = ad.AnnData(
        sp.csr_matrix(np.random.default_rng(3).poisson(4.0, (query.n_obs, 10)).astype(np.float32)),
        obs=query.obs[[]], var=pd.DataFrame(index=[f"G{i}" for i in range(10)]),
    )  # fmt: skip
    wide = ad.concat([query[:, 10:], extra], axis=1, merge="same")  # G10..G59 + new G0..G9
    narrow_ref = ref[:, 10:].copy()
    kw = {"label_key": "cell_type", "model": pretrained, "method": "knn", "progress": False}
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


def test_head_standardisation_folds_into_an_official_head(pretrained):
    """Training standardises the <cls> embedding before the head; folding that into the head's
    first Linear must give the same logits with the head alone.

    Expected values use the formula written out, ``head((e - mean) / sqrt(mean(var) + eps))``
    (centred per dimension, one scale) on a copy of the unfolded head, with the statistics
    after the training-mode updates
    (``mean <- (1 - m) mean + m batch_mean``, same for the unbiased batch variance).
    """
    import copy

    from omicformer.scgpt.module import ClsDecoder
    from omicformer.scgpt.train import ClassifierTrainingPlan

    module = copy.deepcopy(pretrained.module)
    module.cls_decoder = ClsDecoder(32, 3, nlayers=3)
    torch.manual_seed(0)
    emb = 5.0 + 0.03 * torch.randn(64, 32)  # collapsed: a large shared part, small differences
    start = (torch.full((32,), 4.0), torch.full((32,), 2.0))
    plan = ClassifierTrainingPlan(module, input_stats=start, stats_momentum=0.25)
    mean, var = start[0].clone(), start[1].clone()
    plan.train()
    for chunk in emb.split(16):  # training mode: statistics move towards each minibatch's
        plan.input_norm(chunk)
        mean, var = 0.75 * mean + 0.25 * chunk.mean(0), 0.75 * var + 0.25 * chunk.var(0)
    norm = plan.input_norm
    torch.testing.assert_close(norm.mean, mean)
    torch.testing.assert_close(norm.var, var)
    plan.eval()
    before = norm.mean.clone()
    plan.input_norm(emb)  # evaluation mode leaves the statistics alone
    torch.testing.assert_close(norm.mean, before)
    unfolded = copy.deepcopy(module.cls_decoder).eval()
    with torch.no_grad():
        expected = unfolded((emb - mean) / torch.sqrt(var.mean() + 1e-5))
    plan.fold_standardisation()
    assert plan.input_norm is None
    assert isinstance(module.cls_decoder, ClsDecoder)  # still the official head's layout
    with torch.no_grad():
        got = module.cls_decoder.eval()(emb)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    # without statistics the plan is the official recipe and there is nothing to fold
    official = ClassifierTrainingPlan(copy.deepcopy(module))
    assert official.input_norm is None
    weights = copy.deepcopy(official.module.cls_decoder.state_dict())
    official.fold_standardisation()
    for k, v in official.module.cls_decoder.state_dict().items():
        torch.testing.assert_close(v, weights[k])


DDP_CLASSIFIER = """
import warnings
import numpy as np, pandas as pd, scipy.sparse as sp, anndata as ad, torch
warnings.filterwarnings("ignore")
from omicformer.scgpt.model import ScGPT, ScGPTClassifier

rng = np.random.default_rng(0)
X = rng.poisson(1.0, (70, 30)).astype(np.float32) + np.eye(70, 30, dtype=np.float32)
X[:35, :10] += 4  # two cell types
obs = pd.DataFrame({"t": np.repeat(["x", "y"], 35)}, index=[f"c{i}" for i in range(70)])
a = ad.AnnData(sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=[f"G{i}" for i in range(30)]))
ScGPT.setup_anndata(a)
pre = ScGPT(a, d_model=16, n_layers=1, n_heads=2, dropout=0.0, random_state=0)
ScGPTClassifier.setup_anndata(a, labels_key="t")
clf = ScGPTClassifier.load_pretrained(pre, a)
clf.train(max_epochs=2, batch_size=8, accelerator="cpu", devices=2, strategy="ddp",
          enable_progress_bar=False)
rank = torch.distributed.get_rank()
w = clf.module.cls_decoder._decoder[0]
print(f"RESULT {rank} {float(w.weight.sum()):.6f} {float(w.bias.sum()):.6f}", flush=True)
torch.distributed.destroy_process_group()  # no live gloo threads at exit
"""


@pytest.mark.slow
def test_classifier_ddp_two_cpu_processes_fold_the_same_head(run_script):
    """The head-input statistics are pooled over ranks: both replicas fold the same head."""
    out, results = run_script(DDP_CLASSIFIER)
    assert set(results) == {"0", "1"}, out[-3000:]
    assert all(len(nums) == 2 for nums in results.values()), out[-3000:]
    assert results["0"] == results["1"]
