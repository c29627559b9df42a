"""ScGPTPerturbation and tl.predict_perturbation.

Predictions are re-derived here from the module's forward pass and a covariance prior written
out with numpy; request checks and error cases against hand-picked conditions.
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from omicformer.scgpt._resolve import DEFAULT_MODEL_DIR
from omicformer.scgpt.model import ScGPTPerturbation

pytestmark = pytest.mark.usefixtures("one_thread")


def _genes_of(condition: str, control: str = "ctrl") -> list[str]:
    """Perturbed genes of a condition string, parsed here by hand."""
    return [g for g in condition.split("+") if g != control]


def _dense(X) -> np.ndarray:
    return X.toarray() if sp.issparse(X) else np.asarray(X)


# =============================================================================================
# ScGPTPerturbation
# =============================================================================================
@pytest.fixture(scope="module")
def fitted(sim):
    adata = sim.copy()
    ScGPTPerturbation.setup_anndata(adata, condition_key="condition", control="ctrl")
    model = ScGPTPerturbation.load_pretrained("default", adata)
    model.train(max_epochs=1, batch_size=32, accelerator="cpu", devices=1,
                enable_progress_bar=False, random_state=0)  # fmt: skip
    return adata, model


def _default_state() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(DEFAULT_MODEL_DIR / "model.safetensors")


def test_load_pretrained_gives_new_genes_new_embeddings(sim, default_vocab):
    adata = sim.copy()
    ScGPTPerturbation.setup_anndata(adata)
    model = ScGPTPerturbation.load_pretrained("default", adata)
    new = [g for g in adata.var_names if g not in default_vocab]
    assert new  # the simulation has genes outside the default vocabulary
    report = model.pretrained_report_
    assert report["new_genes"] == new
    assert "pert_encoder.weight" in report["missing"]
    assert "decoder.coeff_decoder.fc.0.weight" in report["missing"]
    assert model.module.config.perturbation
    assert model.genes_ == list(adata.var_names)

    state = _default_state()
    old = state["encoder.embedding.weight"]
    n_old = len(default_vocab)
    assert old.shape[0] == n_old
    emb = model.module.encoder.embedding.weight.detach()
    assert emb.shape[0] == n_old + len(new)
    torch.testing.assert_close(emb[:n_old], old, rtol=0, atol=0)
    for i, g in enumerate(new):
        assert model.vocab[g] == n_old + i
    for g in adata.var_names:
        if g in default_vocab:
            assert model.vocab[g] == default_vocab[g]
    fresh = emb[n_old:]
    assert (fresh.abs() <= 0.1).all() and (fresh.abs().sum(1) > 0).all()
    # the pretrained encoder and transformer are kept
    module_state = model.module.state_dict()
    kept = [k for k in state if k.startswith(("transformer_encoder.", "value_encoder.",
                                               "encoder.enc_norm."))]  # fmt: skip
    assert len(kept) > 10
    for k in kept:
        torch.testing.assert_close(module_state[k], state[k], rtol=0, atol=0)
    # Tutorial_Perturbation's pert_pad_id=0: "not perturbed" adds the zero vector, "perturbed"
    # a learned one
    assert model.module.config.pert_pad_id == 0
    assert torch.count_nonzero(model.module.pert_encoder.weight[0]) == 0
    assert torch.count_nonzero(model.module.pert_encoder.weight[1]) > 0


def test_train_records_history_and_keeps_pad_row_and_frozen_heads(fitted, sim_names):
    adata, model = fitted
    assert model.is_trained_
    losses = np.asarray(model.history["train_loss"]).ravel()
    assert len(losses) == 1 and np.isfinite(losses).all()
    assert {"train_loss_mse", "train_loss_de"} <= set(model.history)
    assert model.train_conditions_ == sim_names["conditions"]
    np.testing.assert_allclose(model.prior_shared_, _mean_change(adata), atol=1e-5)
    assert len(model.train_indices) == adata.n_obs and len(model.validation_indices) == 0
    assert torch.count_nonzero(model.module.pert_encoder.weight[0]) == 0  # not trained
    state, module_state = _default_state(), model.module.state_dict()
    key = "transformer_encoder.layers.0.linear1.weight"
    assert not torch.equal(module_state[key], state[key])  # fine-tuned
    frozen = [k for k in state if k.startswith(("mvc_decoder.", "flag_encoder."))]
    assert frozen
    for k in frozen:  # heads the objective does not use stay as pretrained
        torch.testing.assert_close(module_state[k], state[k], rtol=0, atol=0)


def _controls(adata) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Gene names, the control cells (float32, as the model reads them) and their mean."""
    labels = adata.obs["condition"].astype(str).to_numpy()
    ctrl = _dense(adata.X)[labels == "ctrl"].astype(np.float32)
    return list(adata.var_names), ctrl, ctrl.astype(np.float64).mean(0)


def _mean_change(adata) -> np.ndarray:
    """Mean over the perturbations of their cells' mean minus the control mean, by hand."""
    X = _dense(adata.X).astype(np.float64)
    labels = adata.obs["condition"].astype(str).to_numpy()
    ctrl = X[labels == "ctrl"].mean(0)
    return np.mean([X[labels == c].mean(0) - ctrl for c in sorted(set(labels) - {"ctrl"})], 0)


def _covariance_prior(model, ctrl, var, genes, shared):
    """The documented prior, written out: the perturbations' mean change ``shared`` plus a
    Gaussian propagation through the control covariance."""
    centred = ctrl.astype(np.float64) - ctrl.astype(np.float64).mean(0)
    cov = centred.T @ centred / (len(ctrl) - 1)
    var_g = np.diag(cov)
    ridge = 0.05 * np.median(var_g[var_g > 0])
    total = np.zeros(len(var))
    for g in genes:
        j = var.index(g)
        e = model.prior_effects_.get(g, model.prior_default_)
        one = shared + (e - shared[j]) * cov[:, j] / (cov[j, j] + ridge)
        one[j] = e
        if len(genes) > 1 and g in model.prior_observed_:
            one = np.asarray(model.prior_observed_[g], dtype=np.float64)
        total += one
    return total


def _expected_prediction(model, adata, conditions, clip=True):
    """Mean over all control cells of the module's output with flags on the perturbed genes.

    Inputs are the control cells minus the control mean (the model trains on deviations), plus
    the covariance prior when the model has one; the control mean is added back, and values
    below 0 are raised to 0 (``clip``: expression is never negative).
    """
    var, ctrl, mean = _controls(adata)
    ids = torch.as_tensor([model.vocab[g] for g in var]).expand(len(ctrl), -1)
    x = torch.as_tensor(ctrl - mean.astype(np.float32))
    out = []
    with torch.no_grad():
        for c in conditions:
            flags = torch.as_tensor(np.isin(var, _genes_of(c)).astype(np.int64))
            extra = {}
            if model.module.config.perturbation_prior:
                prior = _covariance_prior(model, ctrl, var, list(_genes_of(c)), _mean_change(adata))
                extra["pert_prior"] = torch.as_tensor(prior, dtype=torch.float32).expand(
                    len(ctrl), -1
                )
            pred = model.module.eval()(ids, x, None, pert_flags=flags.expand(len(ctrl), -1),
                                       **extra)  # fmt: skip
            out.append(pred["mlm_output"].double().mean(0).numpy() + mean)
    return (np.maximum(np.stack(out), 0.0) if clip else np.stack(out)), mean


def test_predict_layout_and_values(fitted, sim_names):
    adata, model = fitted
    req = sim_names["unseen"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pred = model.predict(req, n_control_cells=1000, progress=False)
    assert not [w for w in caught if "training data" in str(w.message)]
    assert list(pred.obs_names) == req and pred.obs["condition"].tolist() == req
    assert list(pred.var_names) == list(adata.var_names)
    assert pred.shape == (len(req), adata.n_vars) and pred.X.dtype == np.float32
    expected, ctrl_mean = _expected_prediction(model, adata, req)
    np.testing.assert_allclose(pred.X, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pred.layers["delta"], expected - ctrl_mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pred.layers["delta"], pred.X - ctrl_mean, atol=1e-5)
    info = pred.uns["perturbation_prediction"]
    raw, _ = _expected_prediction(model, adata, req, clip=False)
    assert info["n_clipped"] == int((raw < 0).sum()) and (pred.X >= 0).all()
    assert info["n_control_cells"] == 50 and info["seen_in_training"] == []
    assert info["control"] == "ctrl" and info["method"] == "ScGPTPerturbation"


def test_predict_follows_the_gene_order_of_adata(fitted, sim_names):
    adata, model = fitted
    perm = np.random.default_rng(1).permutation(adata.n_vars)
    shuffled = adata[:, perm].copy()
    a = model.predict(sim_names["unseen"], n_control_cells=1000, progress=False)
    b = model.predict(sim_names["unseen"], shuffled, n_control_cells=1000, progress=False)
    assert list(b.var_names) == list(shuffled.var_names)
    np.testing.assert_allclose(b.X, a.X[:, perm], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(b.layers["delta"], a.layers["delta"][:, perm], atol=1e-6)


def test_prediction_windows_hand_example():
    from omicformer.scgpt.train._perturb_predict import prediction_windows

    order = np.array([5, 3, 0, 1, 4, 2, 6])
    # gene 2 perturbed, 3 genes per pass: the other six, in this order, in windows of two
    got = prediction_windows(order, np.array([2]), 3)
    assert [w.tolist() for w in got] == [[2, 3, 5], [0, 1, 2], [2, 4, 6]]
    # two perturbed (1, 5), 5 a pass: room for 3 others; the five others, in order, 3 0 4 | 2 6
    got = prediction_windows(order, np.array([1, 5]), 5)
    assert [w.tolist() for w in got] == [[0, 1, 3, 4, 5], [1, 2, 5, 6]]
    for max_len in (None, 7, 100, 1):  # all genes fit, or no room beside the perturbed one
        assert [w.tolist() for w in prediction_windows(order, np.array([2]), max_len)] == [
            list(range(7))
        ]


def test_predict_in_windows_of_max_len_genes(fitted, sim_names):
    """Each gene's prediction comes from its window's pass; the perturbed genes' from all."""
    adata, model = fitted
    var, ctrl, mean = _controls(adata)
    x_all = torch.as_tensor(ctrl - mean.astype(np.float32))
    ids_all = torch.as_tensor([model.vocab[g] for g in var])
    req = sim_names["unseen"][:2]
    pred = model.predict(req, n_control_cells=1000, max_len=16, random_state=7, progress=False)
    assert pred.uns["perturbation_prediction"]["max_len"] == 16
    order = np.random.default_rng(7).permutation(len(var))
    for row, c in enumerate(req):
        pert = [var.index(g) for g in _genes_of(c)]
        rest = [j for j in order if j not in pert]
        n_win = math.ceil(len(rest) / (16 - len(pert)))
        prior = _covariance_prior(model, ctrl, var, _genes_of(c), _mean_change(adata))
        total, seen = np.zeros(len(var)), np.zeros(len(var))
        for part in np.array_split(np.array(rest), n_win):
            cols = np.sort(np.concatenate([pert, part]))
            assert len(cols) <= 16
            n = len(ctrl)
            flags = torch.as_tensor(np.isin(cols, pert).astype(np.int64)).expand(n, -1)
            with torch.no_grad():
                out = model.module.eval()(
                    ids_all[cols].expand(n, -1), x_all[:, cols], None, pert_flags=flags,
                    pert_prior=torch.as_tensor(prior[cols], dtype=torch.float32).expand(n, -1),
                )["mlm_output"]  # fmt: skip
            total[cols] += out.double().mean(0).numpy()
            seen[cols] += 1
        assert seen.min() == 1 and (seen[pert] == n_win).all()
        expected_row = np.maximum(total / seen + mean, 0.0)
        np.testing.assert_allclose(pred.X[row], expected_row, rtol=1e-5, atol=1e-5)
    whole = model.predict(req, n_control_cells=1000, max_len=len(var), progress=False)
    expected, _ = _expected_prediction(model, adata, req)  # one pass over every gene
    np.testing.assert_allclose(whole.X, expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(pred.X, whole.X, atol=1e-4)
    for bad in (1, 0, 2.5, "16", True):
        with pytest.raises(ValueError, match="must be an integer >= 2"):
            model.predict(req, max_len=bad, progress=False)


def test_predict_adjusts_the_mean_of_sampled_control_cells(fitted, sim_names):
    """Fewer control cells than there are: each gene's mean is regression-adjusted."""
    adata, model = fitted
    var, ctrl, mean = _controls(adata)
    pick = np.sort(np.random.default_rng(3).choice(len(ctrl), 10, replace=False))
    x = torch.as_tensor(ctrl[pick] - mean.astype(np.float32))  # the model reads deviations
    ids = torch.as_tensor([model.vocab[g] for g in var]).expand(len(pick), -1)
    req = sim_names["unseen"][:2]
    kw = {"n_control_cells": 10, "random_state": 3, "progress": False}
    pred = model.predict(req, **kw)
    plain = model.predict(req, adjust=False, **kw)
    for row, c in enumerate(req):
        prior = _covariance_prior(model, ctrl, var, _genes_of(c), _mean_change(adata))
        flags = torch.as_tensor(np.isin(var, _genes_of(c)).astype(np.int64))
        with torch.no_grad():
            out = model.module.eval()(
                ids, x, None, pert_flags=flags.expand(len(pick), -1),
                pert_prior=torch.as_tensor(prior, dtype=torch.float32).expand(len(pick), -1),
            )["mlm_output"]  # fmt: skip
        p, xd = out.double().numpy(), x.double().numpy()
        slope = np.array([np.polyfit(xd[:, j], p[:, j], 1)[0] if xd[:, j].std() > 0 else 0.0
                          for j in range(len(var))])  # fmt: skip
        # every control cell's mean deviation is 0; the sample's is xd.mean(0)
        np.testing.assert_allclose(pred.X[row], np.maximum(p.mean(0) - slope * xd.mean(0) + mean, 0),
                                   rtol=1e-5, atol=1e-5)  # fmt: skip
        np.testing.assert_allclose(plain.X[row], np.maximum(p.mean(0) + mean, 0), rtol=1e-5,
                                   atol=1e-5)  # fmt: skip
    assert np.abs(pred.X - plain.X).max() > 1e-3
    assert pred.uns["perturbation_prediction"]["adjust"] is True
    assert plain.uns["perturbation_prediction"]["adjust"] is False
    with pytest.raises(ValueError, match="adjust='no' must be True or False"):
        model.predict(req, adjust="no", progress=False)


def test_predict_is_seeded(fitted, sim_names):
    _, model = fitted
    kw = {"n_control_cells": 10, "progress": False}
    a = model.predict(sim_names["unseen"], random_state=3, **kw)
    b = model.predict(sim_names["unseen"], random_state=3, **kw)
    c = model.predict(sim_names["unseen"], random_state=4, **kw)
    np.testing.assert_array_equal(a.X, b.X)
    assert not np.array_equal(a.X, c.X)
    assert a.uns["perturbation_prediction"]["n_control_cells"] == 10


def test_save_load_round_trip_gives_identical_predictions(fitted, sim_names, sim, tmp_path):
    _, model = fitted
    model.save(tmp_path / "pert")
    loaded = ScGPTPerturbation.load(tmp_path / "pert", adata=sim.copy())
    assert loaded.genes_ == model.genes_ and loaded.train_conditions_ == model.train_conditions_
    assert loaded.schedule_ == model.schedule_ == {"max_epochs": 1, "max_steps": None}
    assert loaded.is_trained_ and loaded.module.config.perturbation
    assert len(loaded.vocab) == len(model.vocab)
    kw = {"n_control_cells": 20, "random_state": 0, "progress": False}
    np.testing.assert_array_equal(
        loaded.predict(sim_names["unseen"], **kw).X, model.predict(sim_names["unseen"], **kw).X
    )
    bare = ScGPTPerturbation.load(tmp_path / "pert")  # no AnnData: pass one to predict
    np.testing.assert_array_equal(
        bare.predict(sim_names["unseen"], sim, **kw).X, model.predict(sim_names["unseen"], **kw).X
    )


def test_load_with_a_screen_of_new_conditions_is_refused_before_any_change(
    fitted, sim_names, sim, tmp_path
):
    # the conditions are the model's labels field: setup began, then scvi-tools failed with
    # "Category ... not found in source registry", leaving obs["_scvi_batch"] behind
    _, model = fitted
    model.save(tmp_path / "pert")
    screen = sim.copy()
    new = f"ctrl+{sim_names['unseen'][1].split('+')[0]}"
    screen.obs["condition"] = screen.obs["condition"].astype(str)
    screen.obs.loc[screen.obs_names[:3], "condition"] = new
    before = list(screen.obs.columns)
    with pytest.raises(
        ValueError,
        match=rf"condition_key\) has 1 condition .*\['{re.escape(new)}'\].*pass adata= to predict",
    ):
        ScGPTPerturbation.load(tmp_path / "pert", adata=screen)
    assert list(screen.obs.columns) == before


def test_requesting_training_perturbations_warns_and_lists_them(fitted, sim_names):
    _, model = fitted
    single = sim_names["singles"][0]
    g = _genes_of(sim_names["singles"][1])[0]
    a, b = _genes_of(sim_names["combos"][0])
    seen = [single, f"ctrl+{g}", f"{b}+{a}"]  # the last two written the other way round
    req = [sim_names["unseen"][0], *seen]
    with pytest.warns(UserWarning, match="3 requested perturbation.*training data"):
        pred = model.predict(req, n_control_cells=5, progress=False)
    assert pred.uns["perturbation_prediction"]["seen_in_training"] == seen


def test_predict_rejects_unknown_genes_and_bad_requests(fitted, sim_names):
    _, model = fitted
    gene = sim_names["single_genes"][0]
    with pytest.raises(KeyError) as err:
        model.predict([f"{gene}Q+ctrl"], progress=False)
    msg = err.value.args[0]
    assert f"'{gene}Q'" in msg and "did you mean" in msg and f"'{gene}'" in msg
    assert "the model's genes" in msg
    pair = sim_names["unseen"][0]  # "A+B"; "B+A" asked for as well was predicted twice
    a, b = pair.split("+")
    for bad, match in [([], "empty"), (["ctrl"], "control"), (["A++B"], "Cannot parse"),
                       ([pair] * 2, f"asks for {re.escape(repr(pair))} twice; keep one"),
                       ([pair, f"{b}+{a}"], re.escape(f"'{b}+{a}' twice (the same perturbation as '{pair}')"))]:  # fmt: skip
        with pytest.raises(ValueError, match=match):
            model.predict(bad, progress=False)
    with pytest.raises(ValueError, match="n_control_cells"):
        model.predict(sim_names["unseen"], n_control_cells=0, progress=False)
    renamed = model.adata.copy()
    renamed.obs = renamed.obs.rename(columns={"condition": "perturbation"})
    with pytest.raises(KeyError, match=r"condition_key='condition' not found.*'perturbation'"):
        model.predict(sim_names["unseen"], renamed, progress=False)


def test_predict_with_a_single_string(fitted, sim_names):
    _, model = fitted
    req = sim_names["unseen"][1]
    try:
        pred = model.predict(req, n_control_cells=5, progress=False)
    except TypeError:  # refusing a plain string up front is fine too
        return
    assert list(pred.obs_names) == [req]


def test_predict_on_adata_with_other_genes_raises(fitted, sim_names, sim):
    _, model = fitted
    fewer = sim[:, 1:].copy()
    with pytest.raises(ValueError, match="do not match"):
        model.predict(sim_names["unseen"][2:], fewer, progress=False)
    renamed = sim.copy()
    renamed.var_names = ["RENAMED", *sim.var_names[1:]]
    with pytest.raises(ValueError, match="do not match"):
        model.predict(sim_names["unseen"][2:], renamed, progress=False)
    no_ctrl = sim[sim.obs["condition"] != "ctrl"].copy()
    with pytest.raises(ValueError, match="no control cells"):
        model.predict(sim_names["unseen"][2:], no_ctrl, progress=False)


def test_an_untrained_model_predicts_the_control_mean_with_a_warning(sim, sim_names, fitted,
                                                                     tmp_path):  # fmt: skip
    adata = sim.copy()
    ScGPTPerturbation.setup_anndata(adata)
    fresh = ScGPTPerturbation.load_pretrained("default", adata)
    with pytest.warns(UserWarning, match=r"not trained.*ScGPTPerturbation\.train\(\)"):
        pred = fresh.predict(sim_names["unseen"][:1], n_control_cells=5, progress=False)
    ctrl = _dense(adata.X[(adata.obs["condition"] == "ctrl").to_numpy()]).mean(0)
    np.testing.assert_allclose(pred.X[0], ctrl, rtol=1e-5, atol=1e-5)  # what the warning says
    _, model = fitted  # trained, and loaded from a folder saved trained: no warning
    model.save(tmp_path / "pert")
    for m in (model, ScGPTPerturbation.load(tmp_path / "pert", adata=adata)):
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            m.check_perturbations(sim_names["unseen"])
            m.predict(sim_names["unseen"][:1], n_control_cells=5, progress=False)


def test_predict_refuses_a_batch_size_below_1(fitted, sim_names):
    _, model = fitted
    with pytest.raises(ValueError, match=r"batch_size=0 must be an integer >= 1"):  # was ignored
        model.predict(sim_names["unseen"], batch_size=0, progress=False)


def test_load_pretrained_from_an_official_perturbation_checkpoint(sim, official, tmp_path):
    # a TransformerGenerator's best_model.pt: pert_encoder and an affine decoder, no decoder.fc;
    # Tutorial_Perturbation loads encoder, value_encoder and transformer_encoder only
    import json

    path = tmp_path / "scGPT_generator"
    ref, _ = official.write_checkpoint(path, extra=False)
    state = torch.load(path / "best_model.pt", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("decoder.")}
    for part in ("coeff_decoder", "bias_decoder"):
        for i, shape in ((0, (32, 32)), (2, (32, 32)), (4, (1, 32))):
            state[f"decoder.{part}.fc.{i}.weight"] = torch.randn(shape)
            state[f"decoder.{part}.fc.{i}.bias"] = torch.randn(shape[0])
    state["pert_encoder.weight"] = torch.randn(3, 32)
    torch.save(state, path / "best_model.pt")
    genes = list(sim.var_names) + [f"FILLER{i}" for i in range(52 - sim.n_vars)]
    (path / "vocab.json").write_text(json.dumps({g: i for i, g in enumerate(genes)}))
    adata = sim.copy()
    ScGPTPerturbation.setup_anndata(adata)
    model = ScGPTPerturbation.load_pretrained(path, adata)
    assert "pert_encoder.weight" in model.pretrained_report_["skipped"]
    ours = model.module.state_dict()
    for key, value in ref.state_dict().items():
        if key.startswith("transformer_encoder.") and "self_attn" not in key:
            torch.testing.assert_close(ours[key], value, rtol=0, atol=0)
    torch.testing.assert_close(
        ours["encoder.embedding.weight"][: len(genes)],
        ref.state_dict()["encoder.embedding.weight"][: len(genes)], rtol=0, atol=0,
    )  # fmt: skip


def test_a_train_that_does_not_finish_leaves_the_model_untrained(fitted, sim_names):
    # a second train stopped after a step kept is_trained with half-trained weights and this
    # run's prior, schedule and conditions: other predictions, no warning. Stopped (or refused)
    # before any step, the model is as it was: the first run's weights with its settings
    import copy

    import lightning.pytorch as pl

    class CtrlC(pl.Callback):
        def __init__(self, hook):
            setattr(self, hook, self.stop)

        def stop(self, *args):
            raise KeyboardInterrupt

    fit = {"max_epochs": 2, "batch_size": 32, "validation_size": 0.5, "random_state": 1,
           "accelerator": "cpu", "enable_progress_bar": False, "dropout": 0.3}  # fmt: skip
    model = copy.deepcopy(fitted[1])
    kept = {n: copy.deepcopy(getattr(model, n)) for n in ("train_conditions_", "schedule_",
                                                          "prior_effects_", "centered_")}  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        model.train(callbacks=[CtrlC("on_train_batch_start")], **fit)
    assert model.is_trained and model.module.config.dropout == fitted[1].module.config.dropout
    assert {n: getattr(model, n) for n in kept} == kept
    with pytest.raises(ValueError, match="needs validation data"):  # one condition: none held out
        model.train(early_stopping=True, **{**fit, "validation_size": 0.01})
    assert model.is_trained and {n: getattr(model, n) for n in kept} == kept
    with pytest.raises(KeyboardInterrupt):
        model.train(callbacks=[CtrlC("on_train_batch_end")], **fit)
    assert not model.is_trained
    with pytest.warns(UserWarning, match=r"not trained, or its last train\(\) did not finish"):
        model.predict(sim_names["unseen"][:1], n_control_cells=5, progress=False)
