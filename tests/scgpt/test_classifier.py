"""ScGPTClassifier on small synthetic cell types (fixtures in conftest: ``clf_*``)."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from omicformer.scgpt import tl
from omicformer.scgpt.model import ScGPTClassifier

N_GENES = 60
TYPES = ["T", "B", "Mono"]
FIT = {"accelerator": "cpu", "enable_progress_bar": False}

pytestmark = pytest.mark.usefixtures("one_thread")


def test_classifier_learns_and_calibrates(clf_trained, clf_ref_query):
    _, query = clf_ref_query
    pred = clf_trained.predict(query, progress=False)
    truth = query.obs["cell_type"].to_numpy()
    assert (pred.astype(str).to_numpy() == truth).mean() > 0.9  # chance 1/3
    proba = clf_trained.predict_proba(query, progress=False)
    assert list(proba.columns) == sorted(TYPES) == clf_trained.classes_
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)
    assert clf_trained.temperature_ > 0 and clf_trained.validation_scores_["n_cells"] == 9
    assert {"train_loss", "validation_loss", "validation_accuracy"} <= set(clf_trained.history)
    assert clf_trained.module.cls_decoder.out_layer.out_features == 3
    assert repr(clf_trained).startswith("ScGPTClassifier model with")


def test_classifier_save_load_round_trip(clf_trained, clf_ref_query, tmp_path):
    _, query = clf_ref_query
    clf_trained.save(tmp_path / "clf")
    loaded = ScGPTClassifier.load(tmp_path / "clf")
    assert loaded.classes_ == clf_trained.classes_
    assert loaded.temperature_ == clf_trained.temperature_
    pd.testing.assert_frame_equal(
        loaded.predict_proba(query, progress=False),
        clf_trained.predict_proba(query, progress=False),
    )
    # the saved folder also embeds through tl.embed like any scGPT folder
    out = tl.embed(query, model=tmp_path / "clf", progress=False, copy=True)
    assert out.obsm["X_scgpt"].shape == (45, 32)


def test_a_query_naming_its_genes_another_way_is_read_as_the_tl_functions_read_it(
    clf_trained, clf_ref_query, clf_pretrained
):
    # set up on symbols in var_names; a query with Ensembl ids and a symbol column (CELLxGENE)
    _, query = clf_ref_query
    expected = clf_trained.predict_proba(query, progress=False)
    ids = query.copy()
    ids.var["feature_name"] = ids.var_names.to_numpy()
    ids.var_names = [f"ENSG{i:011d}" for i in range(ids.n_vars)]
    with pytest.warns(UserWarning, match=r"var\['feature_name'\] are used"):
        got = clf_trained.predict_proba(ids, progress=False)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected.reset_index(drop=True))
    # set up on a symbol column; a query with symbols in var_names and no such column
    ref = ids.copy()
    ScGPTClassifier.setup_anndata(ref, labels_key="cell_type", gene_key="feature_name")
    by_column = ScGPTClassifier.load_pretrained(clf_pretrained, ref)
    np.testing.assert_array_equal(
        by_column.get_latent_representation(query, progress=False),
        by_column.get_latent_representation(ref, progress=False),
    )


def test_classifier_keeps_the_most_expressed_genes_of_long_cells(
    clf_trained, clf_pretrained, tmp_path, annotate_cells
):
    import json

    assert clf_trained.gene_selection == "highest" and clf_pretrained.gene_selection == "random"
    # a cell longer than max_len embeds as the same cell holding only its top max_len - 1 genes
    rng = np.random.default_rng(0)
    X = np.stack([rng.permutation(np.arange(1, N_GENES + 1)) for _ in range(6)]).astype(np.float32)
    top = X * (X > N_GENES - 5)  # the 5 highest values of every row (distinct values)
    genes = pd.DataFrame(index=[f"G{i}" for i in range(N_GENES)])
    long, short = ad.AnnData(sp.csr_matrix(X), var=genes), ad.AnnData(sp.csr_matrix(top), var=genes)
    z_long = clf_trained.get_latent_representation(long, max_len=6, progress=False)
    z_short = clf_trained.get_latent_representation(short, progress=False)
    np.testing.assert_allclose(z_long, z_short, atol=1e-5)
    # saved and restored; folders saved before the setting existed load as "random"
    clf_trained.save(tmp_path / "clf")
    assert ScGPTClassifier.load(tmp_path / "clf").gene_selection == "highest"
    # tl.embed of the model or its folder tokenises as the model was trained
    for model in (clf_trained, tmp_path / "clf"):
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
    ref = annotate_cells(4, seed=2)
    ScGPTClassifier.setup_anndata(ref, labels_key="cell_type")
    official = ScGPTClassifier.load_pretrained(clf_pretrained, ref, gene_selection="random")
    assert official.gene_selection == "random"
    with pytest.raises(ValueError, match="gene_selection='top'"):
        ScGPTClassifier.load_pretrained(clf_pretrained, ref, gene_selection="top")


def test_classifier_head_reads_the_chosen_cell_embedding(
    clf_trained, clf_pretrained, clf_ref_query
):
    assert clf_pretrained.module.config.cell_emb_style == "cls"
    assert clf_trained.module.config.cell_emb_style == "gene-mean"  # the default, kept when saved
    ref = clf_ref_query[0].copy()
    ScGPTClassifier.setup_anndata(ref, labels_key="cell_type")
    clf = ScGPTClassifier.load_pretrained(clf_pretrained, ref)
    head = {k: v.clone() for k, v in clf.module.state_dict().items()}
    with pytest.raises(ValueError, match="cell_emb_style='max'"):
        clf.train(max_epochs=1, cell_emb_style="max", **FIT)
    assert clf.module.config.cell_emb_style == "cls" and not clf.is_trained_
    for k, v in clf.module.state_dict().items():
        torch.testing.assert_close(v, head[k])
    with torch.random.fork_rng():
        clf.train(max_epochs=1, batch_size=16, cell_emb_style="cls", **FIT)
    assert clf.module.config.cell_emb_style == "cls"  # the official recipe's <cls> output


def test_classifier_needs_labels(clf_ref_query, clf_pretrained):
    ref = clf_ref_query[0].copy()
    ScGPTClassifier.setup_anndata(ref)
    with pytest.raises(ValueError, match="labels_key"):
        ScGPTClassifier.load_pretrained(clf_pretrained, ref)


def test_default_epochs_scale_with_reference_size():
    from omicformer.scgpt.model._classifier import default_epochs

    # ceil(8000 / n) clipped to [3, 100]: 8000/441 = 18.1 -> 19; 8000/700 = 11.4 -> 12
    assert [default_epochs(n) for n in (50, 100, 441, 700, 5000)] == [100, 80, 19, 12, 3]


def test_default_patience_counts_cell_passes():
    from omicformer.scgpt.model._classifier import default_patience

    # ceil(2000 / n), at least 5: 2000/121 = 16.5 -> 17; 2000/441 = 4.5 -> 5 (the minimum)
    assert [default_patience(n) for n in (27, 121, 400, 441, 5000)] == [75, 17, 5, 5, 5]


def test_default_run_stops_after_12000_cell_passes(clf_ref_query, clf_pretrained, runner_call):
    """A large reference trains for less than the 3-epoch minimum instead of for hours."""
    seen = runner_call
    ref = clf_ref_query[0].copy()
    ScGPTClassifier.setup_anndata(ref, labels_key="cell_type")
    clf = ScGPTClassifier.load_pretrained(clf_pretrained, ref)
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


def test_head_standardisation_folds_into_an_official_head(clf_pretrained):
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

    module = copy.deepcopy(clf_pretrained.module)
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


def test_a_later_setup_of_the_same_adata_does_not_change_what_the_model_reads(
    clf_pretrained, clf_ref_query
):
    from scvi import REGISTRY_KEYS

    ref, _ = clf_ref_query
    ref = ref.copy()
    ref.obs["donor"] = np.where(np.arange(ref.n_obs) % 2, "d1", "d2")
    ScGPTClassifier.setup_anndata(ref, labels_key="cell_type")
    clf = ScGPTClassifier.load_pretrained(clf_pretrained, ref)
    ScGPTClassifier.setup_anndata(ref, labels_key="donor")  # e.g. for another model
    codes = clf._registered(REGISTRY_KEYS.LABELS_KEY)
    # the classifier's own labels, coded by its classes (sorted), not the donors
    expected = pd.Categorical(ref.obs["cell_type"], categories=sorted(TYPES)).codes
    np.testing.assert_array_equal(codes, expected)
    assert clf.classes_ == sorted(TYPES)


def test_one_class_is_refused_before_training(clf_pretrained, clf_ref_query):
    ref, _ = clf_ref_query
    one = ref[ref.obs["cell_type"] == "T"].copy()
    ScGPTClassifier.setup_anndata(one, labels_key="cell_type")
    clf = ScGPTClassifier.load_pretrained(clf_pretrained, one)
    with pytest.raises(ValueError, match=r"one class \(\['T'\]\); a classifier needs at least 2"):
        clf.train(max_epochs=1, **FIT)
    assert not clf.is_trained_


def test_rejected_train_leaves_the_model_unchanged(clf_trained, clf_ref_query):
    _, query = clf_ref_query
    before = clf_trained.predict_proba(query, progress=False)
    config, probe = clf_trained.module.config, clf_trained.probe_
    bad = [({"batch_size": 0}, "batch_size=0"), ({"max_epochs": 1.5}, "max_epochs=1.5"),
           ({"validation_size": 1.0}, "validation_size=1.0"),
           ({"dropout": 1.5}, "dropout=1.5"), ({"lr": -1e-3}, r"lr=-0.001 must be a number > 0"),
           ({"weight_decay": -1}, "weight_decay=-1 must be"),
           ({"num_workers": None}, "num_workers=None must be")]  # fmt: skip
    for kwargs, match in bad:
        with pytest.raises(ValueError, match=match):
            clf_trained.train(cell_emb_style="cls", **{"dropout": 0.5, **kwargs}, **FIT)
        assert clf_trained.module.config == config and clf_trained.probe_ is probe
    pd.testing.assert_frame_equal(clf_trained.predict_proba(query, progress=False), before)


def test_a_folder_loads_only_into_the_class_that_saved_it(clf_trained, tmp_path):
    from omicformer.scgpt.model import ScGPT, ScGPTIntegration

    clf_trained.save(tmp_path / "clf")
    for cls in (ScGPT, ScGPTIntegration):
        with pytest.raises(ValueError, match=r"holds a saved ScGPTClassifier, not a"):
            cls.load(tmp_path / "clf")
    a = clf_trained.adata.copy()
    ScGPT.setup_anndata(a)
    plain = ScGPT(a, d_model=16, n_layers=1, n_heads=2)
    plain.save(tmp_path / "plain")
    with pytest.raises(ValueError, match=r"ScGPTClassifier.load_pretrained"):
        ScGPTClassifier.load(tmp_path / "plain")


def test_no_cells_predict_an_empty_result_as_embeddings_do(clf_trained, clf_ref_query):
    _, query = clf_ref_query
    assert clf_trained.probe_ is not None  # the probe's neighbour search got 0 cells
    empty = query[:0]
    assert clf_trained.get_latent_representation(empty, progress=False).shape == (0, 32)
    proba = clf_trained.predict_proba(empty, progress=False)
    assert proba.shape == (0, 3) and list(proba.columns) == sorted(TYPES)
    pred = clf_trained.predict(empty, progress=False)
    assert len(pred) == 0 and list(pred.cat.categories) == sorted(TYPES)


def test_an_untrained_classifier_refuses_to_predict(clf_pretrained, clf_ref_query, tmp_path):
    ref, query = clf_ref_query
    ref = ref.copy()
    ScGPTClassifier.setup_anndata(ref, labels_key="cell_type")
    fresh = ScGPTClassifier.load_pretrained(clf_pretrained, ref)  # a random head
    fresh.save(tmp_path / "untrained")
    for clf in (fresh, ScGPTClassifier.load(tmp_path / "untrained")):
        assert not clf.is_trained
        for predict in (clf.predict_proba, clf.predict):
            with pytest.raises(RuntimeError, match=r"not trained.*ScGPTClassifier\.train\(\)"):
                predict(query, progress=False)


def test_the_warning_about_cells_without_genes_points_at_the_users_line(clf_trained, clf_ref_query):
    # predict_proba runs through torch.no_grad-decorated code; its wrapper is not the caller
    _, query = clf_ref_query
    query = query.copy()
    X = query.X.toarray()
    X[:2] = 0
    query.X = sp.csr_matrix(X)
    with pytest.warns(UserWarning, match="express none of the genes") as record:
        clf_trained.predict_proba(query, progress=False)
    assert {w.filename for w in record if "express none" in str(w.message)} == {__file__}


def test_refused_training_arguments_leave_a_trained_model_as_it_was(clf_trained, clf_ref_query):
    # a Trainer keyword typo failed when the trainer was built: by then the probe was dropped
    # and the head's input switched; negative decays trained with negative learning rates
    _, query = clf_ref_query
    before = clf_trained.predict_proba(query, progress=False)
    style, probe = clf_trained.module.config.cell_emb_style, clf_trained.probe_ is not None
    for kwargs, error, match in (
        (
            {"cell_emb_style": "cls", "max_epoch": 3},
            TypeError,
            r"\['max_epoch'\] are not arguments",
        ),
        ({"lr_decay": -1}, ValueError, r"lr_decay=-1 must be a number > 0"),
        ({"early_stopping_patience": -1}, ValueError, r"early_stopping_patience=-1 must be"),
    ):
        with pytest.raises(error, match=match):
            clf_trained.train(max_epochs=1, accelerator="cpu", enable_progress_bar=False, **kwargs)
    assert clf_trained.module.config.cell_emb_style == style
    assert (clf_trained.probe_ is not None) == probe
    np.testing.assert_array_equal(clf_trained.predict_proba(query, progress=False), before)
    # the runner's own keywords and patience 0 (Lightning's "stop at the first check without
    # improvement") pass the check
    from omicformer._core._fit_checks import check_fit_args

    check_fit_args(batch_size=8, early_stopping_patience=0,
                   trainer_kwargs={"checkpoint_every_n_steps": 1, "gradient_clip_val": 1.0})  # fmt: skip


def test_a_classifier_loaded_without_adata_asks_for_one(clf_trained, clf_ref_query, tmp_path):
    from omicformer.scgpt.model import ScGPTClassifier

    clf_trained.save(tmp_path / "clf")
    bare = ScGPTClassifier.load(tmp_path / "clf")
    for predict in (bare.predict, bare.predict_proba):  # AttributeError: 'NoneType' ... n_obs
        with pytest.raises(ValueError, match="no AnnData attached; pass adata="):
            predict(progress=False)
    with pytest.raises(ValueError, match=r"This ScGPTClassifier has no AnnData; load it with "
                       r"ScGPTClassifier.load\(path, adata=...\) to train"):  # fmt: skip
        bare.train(max_epochs=1, **FIT)  # AttributeError: 'NoneType' ... 'isbacked'
    _, query = clf_ref_query
    assert len(bare.predict(query, progress=False)) == query.n_obs


def test_annotate_starts_from_a_model_with_batch_layers_without_them(
    clf_ref_query, annotate_cells, tmp_path
):
    # e.g. a model fine-tuned for integration: tl.annotate has no batch_key, and the official
    # annotation recipe builds its model without batch tokens and DSBN (matching weights load)
    from omicformer.scgpt.model import ScGPT

    ref, query = clf_ref_query
    a = annotate_cells(4, seed=9)
    a.obs["batch"] = ["x", "y"] * (a.n_obs // 2)
    ScGPT.setup_anndata(a, batch_key="batch")
    source = ScGPT(a, d_model=32, n_layers=1, n_heads=2, dropout=0.0, use_batch_labels=True,
                   dsbn=True)  # fmt: skip
    source.save(tmp_path / "batchy")
    r = ref.copy()
    ScGPTClassifier.setup_anndata(r, labels_key="cell_type")
    with pytest.raises(ValueError, match="batch-dependent layers"):
        ScGPTClassifier.load_pretrained(source, r)
    for start in (source, tmp_path / "batchy"):
        clf = ScGPTClassifier.load_pretrained(start, r, drop_batch_layers=True)
        c = clf.module.config
        assert not (c.use_batch_labels or c.domain_spec_batchnorm)
        assert not hasattr(clf.module, "dsbn") and not hasattr(clf.module, "batch_encoder")
        skipped = clf.pretrained_report_["skipped"]
        assert "batch_encoder.embedding.weight" in skipped and "dsbn.bns.1.running_var" in skipped
        theirs = source.module.state_dict()
        for key, value in clf.module.state_dict().items():
            if key.startswith(("encoder.", "value_encoder.", "transformer_encoder.")):
                torch.testing.assert_close(value, theirs[key], rtol=0, atol=0)
    q = query.copy()
    tl.annotate(q, ref, label_key="cell_type", model=tmp_path / "batchy", max_epochs=1,
                n_models=1, progress=False, device="cpu")  # fmt: skip
    assert q.obs["scgpt_cell_type"].notna().all()


@pytest.mark.parametrize("where", ["training", "calibration"])
def test_a_train_that_does_not_finish_leaves_the_classifier_untrained(
    clf_trained, clf_ref_query, monkeypatch, where
):
    # stopped in the Lightning loop (Ctrl-C) of a second train, or while the probe
    # was fitted after the head: is_trained stayed True, and predict_proba answered with a
    # half-trained head, no probe and the previous run's temperature
    import copy

    import lightning.pytorch as pl

    from omicformer.scgpt.model import _classifier_probe

    class CtrlC(pl.Callback):  # after the first step (before it, see the test below)
        def on_train_batch_end(self, *args):
            raise KeyboardInterrupt

    clf = copy.deepcopy(clf_trained)
    assert clf.is_trained
    fit = {"max_epochs": 1, "batch_size": 16, "accelerator": "cpu", "enable_progress_bar": False}
    if where == "calibration":

        def stop(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(_classifier_probe, "choose_c", stop)
    else:
        fit["callbacks"] = [CtrlC()]
    with pytest.raises(KeyboardInterrupt):
        clf.train(**fit)
    assert not clf.is_trained
    with pytest.raises(RuntimeError, match=r"not trained.*a train\(\) that did not finish"):
        clf.predict_proba(clf_ref_query[1], progress=False)


def test_a_train_stopped_or_refused_before_its_first_step_leaves_the_classifier_as_it_was(
    clf_trained, clf_ref_query
):
    # the new head, the dropped probe and the dropout came before the runner's own checks
    # (ckpt_path="last" without checkpoint_dir): the model was left untrained, its head new
    import copy

    import lightning.pytorch as pl

    class CtrlC(pl.Callback):
        def on_train_batch_start(self, *args):
            raise KeyboardInterrupt

    clf = copy.deepcopy(clf_trained)
    query = clf_ref_query[1]
    before = clf.predict_proba(query, progress=False)
    head = {k: v.clone() for k, v in clf.module.cls_decoder.state_dict().items()}
    fit = {"max_epochs": 1, "batch_size": 16, "dropout": 0.5, **FIT}
    with pytest.raises(ValueError, match="ckpt_path='last' needs checkpoint_dir"):
        clf.train(ckpt_path="last", **fit)
    with pytest.raises(KeyboardInterrupt):
        clf.train(callbacks=[CtrlC()], **fit)
    assert clf.is_trained and clf.probe_ is not None
    assert clf.module.config.dropout == clf_trained.module.config.dropout
    for key, value in clf.module.cls_decoder.state_dict().items():
        torch.testing.assert_close(value, head[key], rtol=0, atol=0)
    np.testing.assert_array_equal(clf.predict_proba(query, progress=False), before)


def test_a_large_reference_trains_shorter_epochs_each_validated(
    clf_ref_query, clf_pretrained, monkeypatch
):
    # past 12,000 cell passes in the first epoch (a reference of more than ~13,300 cells) the
    # default run ended before any validation, and early stopping failed after the training:
    # "Early stopping conditioned on metric 'validation_loss' which is not available"
    from omicformer.scgpt.model import _classifier

    monkeypatch.setattr(_classifier, "MAX_DEFAULT_CELL_PASSES", 64)  # 81 cells: 3 minibatches
    ref = clf_ref_query[0].copy()
    ScGPTClassifier.setup_anndata(ref, labels_key="cell_type")
    clf = ScGPTClassifier.load_pretrained(clf_pretrained, ref)
    clf.train(batch_size=32, probe=False, **FIT)  # 64 / 32 = 2 steps: 2 epochs of 1 minibatch
    assert len(clf.history["validation_loss"]) == 2 and clf.is_trained
