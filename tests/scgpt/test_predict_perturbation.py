"""tl.predict_perturbation: end to end, reuse of a fitted model, inputs, errors, DDP."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from omicformer.scgpt import tl
from omicformer.scgpt.model import ScGPTPerturbation

pytestmark = pytest.mark.usefixtures("one_thread")


def _dense(X) -> np.ndarray:
    return X.toarray() if sp.issparse(X) else np.asarray(X)


# =============================================================================================
# tl.predict_perturbation
# =============================================================================================
QUICK = {"max_epochs": 1, "batch_size": 32, "device": "cpu", "progress": False}


@pytest.fixture(scope="module")
def tl_run(sim, sim_names, snapshot):
    adata = sim.copy()
    snap = snapshot(adata)
    pred, model = tl.predict_perturbation(adata, sim_names["unseen"], return_model=True, **QUICK)
    return adata, snap, pred, model


def test_tl_predict_perturbation_end_to_end(tl_run, sim_names, default_vocab):
    adata, snap, pred, model = tl_run
    snap.assert_unchanged(adata)
    req = sim_names["unseen"]
    assert isinstance(model, ScGPTPerturbation) and model.is_trained_
    assert list(pred.obs_names) == req and pred.obs["condition"].tolist() == req
    assert list(pred.var_names) == list(adata.var_names)
    pd.testing.assert_frame_equal(pred.var, adata.var)
    X = _dense(adata.X).astype(np.float64)
    ctrl_mean = X[adata.obs["condition"].to_numpy() == "ctrl"].mean(0)
    np.testing.assert_allclose(pred.layers["delta"], pred.X - ctrl_mean, atol=1e-5)
    info = pred.uns["perturbation_prediction"]
    assert info["params"]["retrained"] is True and info["epochs"] == 1
    assert np.isfinite(info["losses"]["train_loss"])
    assert info["new_genes"] == [g for g in adata.var_names if g not in default_vocab]
    assert info["n_control_cells"] == 50 and info["seen_in_training"] == []
    assert info["schedule"] == {"max_epochs": 1, "max_steps": None}  # as asked (QUICK)
    assert info["max_len"] == model.max_len == 1536


def test_tl_reuses_a_fitted_model_without_retraining(tl_run, sim_names):
    adata, snap, pred, model = tl_run
    key = "transformer_encoder.layers.0.linear1.weight"
    weight = model.module.state_dict()[key].clone()
    history = {k: np.asarray(v).copy() for k, v in model.history.items()}
    again = tl.predict_perturbation(adata, sim_names["unseen"], model=model, **QUICK)
    snap.assert_unchanged(adata)
    assert again.uns["perturbation_prediction"]["params"]["retrained"] is False
    np.testing.assert_array_equal(again.X, pred.X)
    np.testing.assert_array_equal(again.layers["delta"], pred.layers["delta"])
    torch.testing.assert_close(model.module.state_dict()[key], weight, rtol=0, atol=0)
    assert set(model.history) == set(history)
    for k, v in history.items():
        np.testing.assert_array_equal(np.asarray(model.history[k]), v)
    # a request that was training data is reported
    with pytest.warns(UserWarning, match="training data") as record:
        seen = tl.predict_perturbation(adata, [sim_names["singles"][0]], model=model, **QUICK)
    assert [w.filename for w in record if "training data" in str(w.message)] == [__file__]
    assert seen.uns["perturbation_prediction"]["seen_in_training"] == [sim_names["singles"][0]]
    # fine-tuning arguments do not apply to a fitted model: named, and uns records its prior
    with pytest.warns(
        UserWarning, match=r"prior=None, de_weight=1.0 only apply to fine-tuning"
    ) as record:
        other = tl.predict_perturbation(adata, sim_names["unseen"], model=model, prior=None,
                                        de_weight=1.0, device="cpu", progress=False)  # fmt: skip
    assert [w.filename for w in record if "ignored" in str(w.message)] == [__file__]
    assert other.uns["perturbation_prediction"]["params"]["prior"] == "covariance"


def test_tl_reads_layer_and_gene_key(sim, sim_names, snapshot):
    adata = sim.copy()
    adata.var["symbol"] = sim.var_names.to_numpy()
    adata.var_names = [f"ENSG{i:05d}" for i in range(adata.n_vars)]
    adata.layers["logn"] = adata.X.copy()
    adata.X = adata.layers["counts"].copy()  # must not be read
    adata.obs = adata.obs.rename(columns={"condition": "perturbation"})
    snap = snapshot(adata)
    pred = tl.predict_perturbation(adata, sim_names["unseen"], condition_key="perturbation",
                                   layer="logn", gene_key="symbol", **QUICK)  # fmt: skip
    snap.assert_unchanged(adata)
    assert list(pred.var_names) == list(adata.var_names)
    assert list(pred.var["symbol"]) == list(sim.var_names)
    logn = _dense(adata.layers["logn"]).astype(np.float64)
    ctrl_mean = logn[adata.obs["perturbation"].to_numpy() == "ctrl"].mean(0)
    # delta is against the control mean of the layer: the layer (not X) was read
    np.testing.assert_allclose(pred.layers["delta"], pred.X - ctrl_mean, atol=1e-5)


def _tl_error_cases(sim_names, sim):
    gene = sim_names["single_genes"][0]
    no_ctrl = sim[sim.obs["condition"] != "ctrl"].copy()
    only_ctrl = sim[sim.obs["condition"] == "ctrl"].copy()
    dup = sim.copy()
    dup.var_names = [*dup.var_names[:-1], dup.var_names[0]]  # the last gene renamed as the first
    return [
        (dup, sim_names["unseen"], {}, ValueError, rf"unique \(duplicated: \['{dup.var_names[0]}'"),
        (only_ctrl, sim_names["unseen"], {}, ValueError, "only control cells.*trained"),
        (
            sim,
            sim_names["unseen"],
            {"n_control_cells": 2.5},
            ValueError,
            "n_control_cells=2.5 must be an integer",
        ),
        (sim, [f"{gene}++ctrl"], {}, ValueError, "Cannot parse"),
        (sim, ["ctrl"], {}, ValueError, "control"),
        (sim, [], {}, ValueError, "empty"),
        (sim, f"{gene}+ctrl", {}, TypeError, "list of condition strings"),
        (sim, [f"{gene}Q+ctrl"], {}, KeyError, f"'{gene}Q' \\(did you mean .*'{gene}'"),
        (sim, sim_names["unseen"], {"condition_key": "perturbation"}, KeyError, "perturbation"),
        (no_ctrl, sim_names["unseen"], {}, ValueError, "No control cells"),
        (sim, sim_names["unseen"], {"random_state": None}, ValueError, "random_state=None"),
    ]


def test_tl_errors_come_before_any_work(sim, sim_names, snapshot):
    # the model path does not exist: each error must be raised before loading or training
    for adata, req, kw, error, match in _tl_error_cases(sim_names, sim):
        adata = adata.copy()
        snap = snapshot(adata)
        with pytest.raises(error, match=match):
            tl.predict_perturbation(adata, req, model="/nonexistent/scgpt", **kw, **QUICK)
        snap.assert_unchanged(adata)


def test_tl_fitted_model_with_another_control_label_says_so(tl_run, sim_names, sim, snapshot):
    _, _, _, model = tl_run
    adata = sim.copy()
    adata.obs["condition"] = adata.obs["condition"].astype(str).replace({"ctrl": "control"})
    snap = snapshot(adata)
    request = [c.replace("ctrl", "control") for c in sim_names["unseen"]]
    with pytest.raises(ValueError, match="control label is 'ctrl', not 'control'"):
        tl.predict_perturbation(adata, request, model=model, control="control", **QUICK)
    snap.assert_unchanged(adata)


def test_tl_fitted_model_with_other_genes_raises(tl_run, sim_names, sim, snapshot):
    _, _, _, model = tl_run
    drop = [g for g in sim.var_names if g != sim_names["others"][-1]]
    adata = sim[:, drop].copy()
    snap = snapshot(adata)
    with pytest.raises(ValueError, match="do not match"):
        tl.predict_perturbation(adata, sim_names["unseen"], model=model, **QUICK)
    snap.assert_unchanged(adata)


DDP_SCRIPT = """
import warnings
import torch
warnings.filterwarnings("ignore")
from omicformer import datasets
from omicformer.scgpt.model import ScGPTPerturbation

a = datasets.perturbseq_simulation(n_cells=240, n_genes=30, n_singles=6, n_doubles=3)
ScGPTPerturbation.setup_anndata(a)
m = ScGPTPerturbation(a, d_model=16, n_layers=1, n_heads=2)
m.train(max_epochs=1, batch_size=16, accelerator="cpu", devices=2, strategy="ddp",
        enable_progress_bar=False)
rank = torch.distributed.get_rank()
w = sum(float(p.sum()) for p in m.module.parameters())
print(f"RESULT {rank} {w:.6f}", flush=True)
torch.distributed.destroy_process_group()  # no live gloo threads at exit
"""


@pytest.mark.slow
def test_ddp_two_cpu_processes_keep_replicas_identical(run_script):
    out, results = run_script(DDP_SCRIPT)
    assert set(results) == {"0", "1"}, out[-3000:]
    assert results["0"] == results["1"]


def test_raw_counts_are_warned_of_once(sim, sim_names):
    # the input's check warned, then ScGPTPerturbation.setup_anndata read the cells again
    adata = sim.copy()
    adata.X = np.round(np.expm1(_dense(adata.X)) * 40)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        tl.predict_perturbation(adata, sim_names["unseen"][:1], **QUICK)
    found = [w for w in record if "raw counts, it seems" in str(w.message)]
    assert len(found) == 1 and found[0].filename == __file__
