"""Out-of-core fine-tuning: ScGPTClassifier / ScGPTIntegration and tl.annotate / tl.integrate on backed AnnData.

Every expected value comes from the in-memory run: ``streaming=True`` on in-memory data gives
the batches a backed file gives, so weights, probabilities and embeddings must be equal.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from omicformer._core._ondisk import RowSource
from omicformer.scgpt import tl
from omicformer.scgpt.model import ScGPT, ScGPTClassifier, ScGPTIntegration, _classifier_infer

N_GENES = 60
TYPES = ["T", "B", "Mono"]
FIT = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False, "batch_size": 8}
STREAM = {"chunk_size": 16, "shuffle_window": 2, "random_state": 2}


def _cells(n_per_group: int = 8, seed: int = 0) -> ad.AnnData:
    """Two batches x three cell types (type t boosts genes 20t..20t+19; batch "b" genes 0-9)."""
    rng = np.random.default_rng(seed)
    rows, types, batches = [], [], []
    for batch in ("a", "b"):
        for t, name in enumerate(TYPES):
            lam = np.full(N_GENES, 0.7)
            lam[20 * t : 20 * (t + 1)] = 5.0
            if batch == "b":
                lam[:10] *= 3
            rows.append(rng.poisson(lam, size=(n_per_group, N_GENES)))
            types += [name] * n_per_group
            batches += [batch] * n_per_group
    X = np.vstack(rows).astype(np.float32)
    X[:, 1] += 1  # every cell expresses a vocabulary gene
    order = rng.permutation(len(types))  # chunks hold mixed types and batches
    obs = pd.DataFrame({"cell_type": np.array(types)[order], "batch": np.array(batches)[order]},
                       index=[f"c{i}" for i in range(len(types))])  # fmt: skip
    var = pd.DataFrame(index=[f"G{i}" for i in range(N_GENES)])
    return ad.AnnData(sp.csr_matrix(X[order]), obs=obs, var=var)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pretrained() -> ScGPT:
    """A tiny (untrained) scGPT over the 60 genes, standing in for a pretrained model."""
    a = _cells(2, seed=9)
    ScGPT.setup_anndata(a)
    return ScGPT(a, d_model=16, n_layers=1, n_heads=2, dropout=0.0, random_state=0)


@pytest.fixture
def adata() -> ad.AnnData:
    return _cells()


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)


def _count_reads(monkeypatch) -> list[int]:
    reads: list[int] = []
    original = RowSource.read
    monkeypatch.setattr(
        RowSource, "read", lambda self, a, b: reads.append(a) or original(self, a, b)
    )
    return reads


# ---------------------------------------------------------------- ScGPTClassifier
def _classifier_model(data: ad.AnnData, pretrained: ScGPT) -> ScGPTClassifier:
    ScGPTClassifier.setup_anndata(data, labels_key="cell_type")
    return ScGPTClassifier.load_pretrained(pretrained, data)


def test_classifier_backed_streaming_equals_in_memory(adata, backed, pretrained, monkeypatch):
    memory = _classifier_model(adata, pretrained)
    memory.train(max_epochs=2, streaming=True, **STREAM, **FIT)
    reads = _count_reads(monkeypatch)
    stream = _classifier_model(backed, pretrained)
    stream.train(max_epochs=2, **STREAM, **FIT)  # backed: streams by default
    assert reads  # trained from chunk reads of the file
    np.testing.assert_array_equal(memory.train_indices, stream.train_indices)
    _same_weights(memory.module, stream.module)
    assert memory.temperature_ == stream.temperature_  # calibrated on backed validation cells
    assert memory.validation_scores_ == stream.validation_scores_
    pd.testing.assert_frame_equal(memory.history["train_loss"], stream.history["train_loss"])
    pd.testing.assert_frame_equal(
        memory.predict_proba(adata, progress=False), stream.predict_proba(backed, progress=False)
    )


def test_classifier_predicts_rows_of_backed_data_in_blocks(adata, backed, pretrained, monkeypatch):
    clf = _classifier_model(adata, pretrained)
    clf.train(max_epochs=1, validation_size=0.0, **FIT)
    rows = np.array([1, 2, 5, 8, 9, 13, 30, 31, 40, 47])
    expected = clf.predict_proba(adata[rows], batch_size=4, progress=False)  # one chunk
    monkeypatch.setattr(_classifier_infer, "EMBED_CHUNK", 4)  # blocks of 4 cells, views of the file
    got = clf._proba(backed, rows=rows, batch_size=4, progress=False)
    # float32 matmuls of 10 vs 4 rows; the folded head standardisation (large first-layer
    # weights and bias that cancel) makes their rounding visible at ~1e-6
    pd.testing.assert_frame_equal(
        expected, clf._proba(adata, rows=rows, batch_size=4, progress=False), rtol=1e-5, atol=1e-5
    )
    pd.testing.assert_frame_equal(
        clf._proba(adata, rows=rows, batch_size=4, progress=False), got, rtol=0, atol=0
    )


def test_classifier_refuses_bad_streaming_settings(adata, backed, pretrained):
    clf = _classifier_model(adata, pretrained)
    for bad in ({"chunk_size": 0}, {"chunk_size": 2.5}, {"shuffle_window": 0}):
        with pytest.raises(ValueError, match="must be an integer"):
            clf.train(max_epochs=1, streaming=True, **bad, **FIT)
    assert not clf.is_trained


def test_classifier_with_dsbn_streams_one_batch_per_minibatch(adata, backed, monkeypatch):
    from omicformer._core import _chunk_sampler

    def dsbn_model(data):
        ScGPTClassifier.setup_anndata(data, labels_key="cell_type", batch_key="batch")
        return ScGPTClassifier(data, d_model=16, n_layers=1, n_heads=2, dsbn=True, random_state=0)

    memory = dsbn_model(adata)
    memory.train(max_epochs=2, streaming=True, **STREAM, **FIT)
    seen = []
    original = _chunk_sampler.ChunkBatchSampler.batches
    monkeypatch.setattr(_chunk_sampler.ChunkBatchSampler, "batches",
                        lambda self: seen.append(self.groups) or original(self))  # fmt: skip
    reads = _count_reads(monkeypatch)
    stream = dsbn_model(backed)
    stream.train(max_epochs=2, **STREAM, **FIT)  # backed: streams, grouped by batch
    assert reads and seen and all(g is not None for g in seen)
    _same_weights(memory.module, stream.module)
    assert stream.is_trained and backed.isbacked


# ---------------------------------------------------------------- ScGPTIntegration
def _integration_model(data: ad.AnnData, pretrained: ScGPT, **kw) -> ScGPTIntegration:
    ScGPTIntegration.setup_anndata(data, batch_key="batch", labels_key="cell_type")
    return ScGPTIntegration.load_pretrained(pretrained, data, **kw)


def test_integration_backed_streaming_equals_in_memory(adata, backed, pretrained):
    memory = _integration_model(adata, pretrained, dsbn=False, use_batch_labels=True)
    memory.train(max_epochs=2, streaming=True, **STREAM, **FIT)
    stream = _integration_model(backed, pretrained, dsbn=False, use_batch_labels=True)
    stream.train(max_epochs=2, **STREAM, **FIT)
    _same_weights(memory.module, stream.module)
    pd.testing.assert_frame_equal(
        memory.history["validation_loss"], stream.history["validation_loss"]
    )
    np.testing.assert_array_equal(
        memory.get_latent_representation(adata, progress=False),
        stream.get_latent_representation(backed, progress=False),  # read in chunks
    )


def test_integration_with_dsbn_streams_one_batch_per_minibatch(adata, backed, pretrained,
                                                               monkeypatch):  # fmt: skip
    from omicformer.scgpt.train import _integrate as plan_module

    memory = _integration_model(adata, pretrained)  # dsbn=True by default
    for bad in ({"chunk_size": -1}, {"shuffle_window": True}):
        with pytest.raises(ValueError, match="must be an integer"):
            memory.train(max_epochs=1, **bad, **FIT)
    memory.train(max_epochs=2, streaming=True, **STREAM, **FIT)
    batch_sets = []
    step = plan_module.IntegrationTrainingPlan.training_step

    def spy(self, batch, batch_idx):
        batch_sets.append(set(batch["batch_labels"].tolist()))
        return step(self, batch, batch_idx)

    monkeypatch.setattr(plan_module.IntegrationTrainingPlan, "training_step", spy)
    reads = _count_reads(monkeypatch)
    model = _integration_model(backed, pretrained)
    model.train(max_epochs=2, **STREAM, **FIT)  # backed: streamed
    assert reads and batch_sets and all(len(s) == 1 for s in batch_sets)  # DSBN's contract
    assert {b for s in batch_sets for b in s} == {0, 1}
    _same_weights(memory.module, model.module)
    np.testing.assert_array_equal(
        memory.get_latent_representation(adata, progress=False),
        model.get_latent_representation(backed, progress=False),
    )


def test_integration_streams_balanced_minibatches_of_batches_stored_in_runs(
    pretrained, tmp_path, monkeypatch
):
    from omicformer.scgpt.train import _integrate as plan_module

    cells = _cells()
    cells = cells[np.argsort(cells.obs["batch"].to_numpy(), kind="stable")].copy()  # a, then b
    cells.write_h5ad(tmp_path / "runs.h5ad")
    backed = ad.read_h5ad(tmp_path / "runs.h5ad", backed="r")
    kw = {"dsbn": False, "use_batch_labels": True}
    # chunks of 8 cells, windows of one chunk: a file of 6 chunks, each of one batch
    fit = {**STREAM, **FIT, "chunk_size": 8, "shuffle_window": 1, "mnn_weight": 1.0}
    seen: list[list[int]] = []
    step = plan_module.IntegrationTrainingPlan.training_step

    def spy(self, batch, batch_idx):
        seen.append(np.bincount(batch["batch_labels"].numpy(), minlength=2).tolist())
        return step(self, batch, batch_idx)

    monkeypatch.setattr(plan_module.IntegrationTrainingPlan, "training_step", spy)
    # unbalanced, most minibatches then hold one batch (no pairs for a cross-batch loss);
    # the others straddle two windows
    _integration_model(backed, pretrained, **kw).train(max_epochs=2, **fit)
    assert seen and sum(0 in counts for counts in seen) >= len(seen) / 2
    seen.clear()
    reads = _count_reads(monkeypatch)
    model = _integration_model(backed, pretrained, **kw)
    model.train(max_epochs=2, balance_batches=True, **fit)
    assert reads and seen and all(counts == [4, 4] for counts in seen)  # 8 cells: 4 + 4
    # per epoch each batch's 3 chunks once per round of its cells (2 rounds: 6 minibatches
    # take 24 of its ~21 training cells), and the 6 chunks of the validation cells
    assert len(reads) <= 2 * (2 * 2 * 3 + 6)
    memory = _integration_model(cells, pretrained, **kw)  # in memory, streamed: same batches
    memory.train(max_epochs=2, balance_batches=True, streaming=True, **fit)
    _same_weights(memory.module, model.module)
    backed.file.close()


# ---------------------------------------------------------------- tl.annotate / tl.integrate
def _annotated_fields(a: ad.AnnData, key: str) -> tuple[list[str], list[str]]:
    return sorted(a.obs.columns), sorted(a.uns["scgpt"][key])


@pytest.mark.parametrize("with_reference", [True, False])
def test_annotate_defaults_on_backed_data(pretrained, tmp_path, monkeypatch, with_reference):
    ref, query = _cells(seed=0), _cells(4, seed=1)
    if not with_reference:  # unlabelled cells of adata are the query
        query = ref.copy()
        query.obs["cell_type"] = query.obs["cell_type"].astype(object)
        query.obs.iloc[::5, 0] = np.nan
        ref = None
    memory = query.copy()
    tl.annotate(memory, ref, label_key="cell_type", model=pretrained, max_epochs=1,
                progress=False)  # fmt: skip
    query.write_h5ad(tmp_path / "query.h5ad")
    backed = ad.read_h5ad(tmp_path / "query.h5ad", backed="r")
    if ref is not None:
        ref.write_h5ad(tmp_path / "ref.h5ad")
        ref = ad.read_h5ad(tmp_path / "ref.h5ad", backed="r")
    reads = _count_reads(monkeypatch)
    tl.annotate(backed, ref, label_key="cell_type", model=pretrained, max_epochs=1,
                progress=False)  # fmt: skip
    # the reference is streamed: a labelled file, or (reference=None) adata's own file, whose
    # unlabelled cells are registered with label code -1 and only predicted
    assert reads
    if not with_reference:
        from omicformer.scgpt import _annotate_input

        monkeypatch.setattr(_annotate_input, "subset", lambda *a, **k: pytest.fail("loaded"))
        again = ad.read_h5ad(tmp_path / "query.h5ad", backed="r")
        tl.annotate(again, label_key="cell_type", model=pretrained, max_epochs=1, progress=False)
        pd.testing.assert_frame_equal(again.obs, backed.obs)  # same run, same result
        again.file.close()
    assert _annotated_fields(backed, "scgpt_cell_type") == _annotated_fields(
        memory, "scgpt_cell_type"
    )
    predicted = backed.obs["scgpt_cell_type"]
    assert predicted.notna().all() and set(predicted.astype(str)) <= set(TYPES)
    known = memory.obs["cell_type"].notna().to_numpy() if ref is None else np.zeros(0, bool)
    if ref is None:  # labelled cells keep their label, the others get a confidence
        np.testing.assert_array_equal(predicted[known].astype(str),
                                      memory.obs["cell_type"][known].astype(str))  # fmt: skip
        assert np.isfinite(backed.obs["scgpt_cell_type_confidence"][~known]).all()
    assert backed.isbacked and backed.file.is_open  # the caller's handle stays usable


def test_annotate_knn_on_backed_data_equals_in_memory(pretrained, tmp_path):
    adata = _cells()
    adata.obs["cell_type"] = adata.obs["cell_type"].astype(object)
    adata.obs.iloc[::4, 0] = np.nan
    memory = adata.copy()
    tl.annotate(memory, label_key="cell_type", model=pretrained, method="knn", progress=False)
    adata.write_h5ad(tmp_path / "a.h5ad")
    backed = ad.read_h5ad(tmp_path / "a.h5ad", backed="r")
    tl.annotate(backed, label_key="cell_type", model=pretrained, method="knn", progress=False)
    new = ["scgpt_cell_type", "scgpt_cell_type_confidence"]
    pd.testing.assert_frame_equal(backed.obs[new], memory.obs[new])
    assert backed.uns["scgpt"]["scgpt_cell_type"] == memory.uns["scgpt"]["scgpt_cell_type"]
    backed.file.close()


def test_annotate_backed_query_with_symbols_in_a_var_column(pretrained, tmp_path):
    ref, query = _cells(seed=0), _cells(seed=1)
    kw = {"label_key": "cell_type", "model": pretrained, "method": "knn", "progress": False}
    expected = tl.annotate(query, ref, copy=True, **kw).obs
    query.var["feature_name"] = query.var_names.to_numpy()  # a CELLxGENE file
    query.var_names = [f"ENSG{i:011d}" for i in range(query.n_vars)]
    query.write_h5ad(tmp_path / "q.h5ad")
    backed = ad.read_h5ad(tmp_path / "q.h5ad", backed="r")
    with pytest.warns(UserWarning, match=r"adata.var\['feature_name'\] are used"):
        tl.annotate(backed, ref, **kw)
    new = ["scgpt_cell_type", "scgpt_cell_type_confidence"]
    pd.testing.assert_frame_equal(backed.obs[new], expected[new])
    assert list(ref.var_names[:2]) == ["G0", "G1"] and "feature_name" not in ref.var
    backed.file.close()


@pytest.mark.parametrize("dsbn", [True, False])
def test_integrate_defaults_on_backed_data(pretrained, tmp_path, monkeypatch, dsbn):
    adata = _cells()
    memory = adata.copy()
    kw = {"batch_key": "batch", "model": pretrained, "max_epochs": 1, "progress": False,
          "dsbn": dsbn}  # fmt: skip
    tl.integrate(memory, **kw)
    adata.write_h5ad(tmp_path / "a.h5ad")
    backed = ad.read_h5ad(tmp_path / "a.h5ad", backed="r")
    reads = _count_reads(monkeypatch)
    tl.integrate(backed, **kw)
    assert reads  # streamed, with DSBN too
    assert sorted(backed.obsm) == sorted(memory.obsm)
    z, info = backed.obsm["X_scgpt_integrated"], backed.uns["scgpt"]["X_scgpt_integrated"]
    assert z.shape == memory.obsm["X_scgpt_integrated"].shape
    if dsbn:  # no correction: the unit-norm <cls> embedding
        np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-5)
    else:  # batches of the same random cells mix zero-shot: no cross-batch loss, Harmony
        assert info["params"]["zero_shot_mixing"] > 0.05
        assert info["params"]["correction"] == "harmony" and info["params"]["mnn_weight"] == 0
    expected = memory.uns["scgpt"]["X_scgpt_integrated"]
    assert sorted(info) == sorted(expected) and info["params"] == expected["params"]
    assert sorted(info["losses"]) == sorted(expected["losses"])
    assert list(backed.obs.columns) == list(memory.obs.columns) and backed.file.is_open
    backed.file.close()


def test_integrate_backed_file_holding_its_counts_in_a_layer_only(pretrained, tmp_path):
    # the zero-shot mixing read its cells with anndata's to_memory, which reads X: absent here
    cells = _cells()
    adata = ad.AnnData(obs=cells.obs.copy(), var=cells.var.copy(), layers={"counts": cells.X})
    adata.write_h5ad(tmp_path / "a.h5ad")
    backed = ad.read_h5ad(tmp_path / "a.h5ad", backed="r")
    tl.integrate(backed, batch_key="batch", layer="counts", model=pretrained, max_epochs=1,
                 progress=False)  # fmt: skip
    info = backed.uns["scgpt"]["X_scgpt_integrated"]["params"]
    assert info["zero_shot_mixing"] is not None and backed.obsm["X_scgpt_integrated"].shape[0] == 48
    backed.file.close()


@pytest.mark.parametrize("tool", ["annotate", "integrate"])
def test_backed_data_are_read_with_the_callers_layers(pretrained, tmp_path, tool):
    # anndata keeps a backed file's layers in memory: a layer added or replaced there since
    # the file was written is the caller's data (these tools read the file's copy before)
    cells = _cells()
    cells.obs["cell_type"] = cells.obs["cell_type"].astype(object)
    cells.obs.iloc[::4, 0] = np.nan
    cells.layers["counts"] = cells.X.copy()
    cells.write_h5ad(tmp_path / "a.h5ad")
    new = sp.csr_matrix(np.random.default_rng(5).poisson(2.0, cells.shape).astype(np.float32))
    memory = cells.copy()
    memory.layers["counts"], memory.layers["added"] = new, new
    backed = ad.read_h5ad(tmp_path / "a.h5ad", backed="r")
    backed.layers["counts"], backed.layers["added"] = new, new
    if tool == "annotate":
        kw = {"label_key": "cell_type", "model": pretrained, "max_epochs": 1, "n_models": 1,
              "progress": False}  # fmt: skip
        keys = ["scgpt_cell_type", "scgpt_cell_type_confidence"]
        for layer in ("counts", "added"):
            tl.annotate(memory, layer=layer, **kw)
            tl.annotate(backed, layer=layer, **kw)
            pd.testing.assert_frame_equal(backed.obs[keys], memory.obs[keys])
    else:
        kw = {"batch_key": "batch", "model": pretrained, "max_epochs": 1, "progress": False}
        for layer in ("counts", "added"):
            tl.integrate(memory, layer=layer, **kw)
            tl.integrate(backed, layer=layer, **kw)
            np.testing.assert_allclose(backed.obsm["X_scgpt_integrated"],
                                       memory.obsm["X_scgpt_integrated"], atol=1e-6)  # fmt: skip
    backed.file.close()


DDP_BALANCED = """
import os, warnings
import anndata as ad, numpy as np, pandas as pd, scipy.sparse as sp, torch
warnings.filterwarnings("ignore")
from omicformer.scgpt.model import ScGPT, ScGPTIntegration
from omicformer.scgpt.train import _integrate as plan_module

rng = np.random.default_rng(0)
X = sp.csr_matrix(rng.poisson(1.0, (96, 30)).astype(np.float32) + np.eye(96, 30, dtype=np.float32))
obs = pd.DataFrame({"batch": np.repeat(["a", "b", "c"], [48, 32, 16])},  # stored in runs
                   index=[f"c{i}" for i in range(96)])
a = ad.AnnData(X, obs=obs, var=pd.DataFrame(index=[f"G{i}" for i in range(30)]))
if os.environ.get("LOCAL_RANK", "0") == "0":  # Lightning runs this script again as rank 1
    a.write_h5ad("runs.h5ad")
backed = ad.read_h5ad("runs.h5ad", backed="r")
ScGPT.setup_anndata(backed)
pre = ScGPT(backed, d_model=16, n_layers=1, n_heads=2, random_state=0)
ScGPTIntegration.setup_anndata(backed, batch_key="batch")
m = ScGPTIntegration.load_pretrained(pre, backed, dsbn=False)
counts = []
step = plan_module.IntegrationTrainingPlan.training_step
def spy(self, batch, batch_idx):
    counts.append(sorted(np.bincount(batch["batch_labels"].numpy(), minlength=3).tolist()))
    return step(self, batch, batch_idx)
plan_module.IntegrationTrainingPlan.training_step = spy
m.train(max_epochs=2, batch_size=8, mnn_weight=1.0, balance_batches=True, chunk_size=8,
        shuffle_window=2, accelerator="cpu", devices=2, strategy="ddp", enable_progress_bar=False)
rank = torch.distributed.get_rank()
assert counts and all(c == [0, 4, 4] for c in counts), counts
w = sum(float(p.sum()) for p in m.module.parameters())
print(f"RESULT {rank} {w:.6f} {len(counts):.6f}", flush=True)
torch.distributed.destroy_process_group()  # no live gloo threads at exit
"""


@pytest.mark.slow
def test_streamed_balanced_integration_under_ddp_keeps_replicas_identical(run_script):
    out, results = run_script(DDP_BALANCED)
    assert set(results) == {"0", "1"}, out[-3000:]
    assert results["0"] == results["1"]  # same weights and the same number of steps per rank


def test_backed_inputs_that_cannot_hold_the_results_are_refused_before_any_work(
    pretrained, tmp_path
):
    ref, query = _cells(seed=0), _cells(seed=1)
    query.write_h5ad(tmp_path / "q.h5ad")
    backed = ad.read_h5ad(tmp_path / "q.h5ad", backed="r")
    view = backed[backed.obs["batch"] == backed.obs["batch"].iloc[0]]
    kw = {"label_key": "cell_type", "model": pretrained, "method": "knn", "progress": False}
    with pytest.raises(ValueError, match="copy=True is not supported for backed AnnData"):
        tl.annotate(backed, ref, copy=True, **kw)
    with pytest.raises(ValueError, match=r"view of a backed AnnData.*to_memory\(\)"):
        tl.annotate(view, ref, **kw)
    with pytest.raises(ValueError, match=r"view of a backed AnnData.*to_memory\(\)"):
        tl.integrate(view, batch_key="batch", model=pretrained, max_epochs=1, progress=False)
    assert "scgpt_cell_type" not in backed.obs and "X_scgpt_integrated" not in backed.obsm
    backed.file.close()
    # a column-major (CSC) file: every chunk of rows would read the whole matrix
    csc = query.copy()
    csc.X = sp.csc_matrix(csc.X)
    csc.write_h5ad(tmp_path / "csc.h5ad")
    backed = ad.read_h5ad(tmp_path / "csc.h5ad", backed="r")
    with pytest.raises(ValueError, match=r"stored column-major \(CSC\).*csr_matrix"):
        tl.embed(backed, model=pretrained, out_file=tmp_path / "z.npy", progress=False)
    assert not (tmp_path / "z.npy").exists()
    with pytest.raises(ValueError, match=r"chunk_size=2\.5 must be an integer"):
        tl.embed(query, model=pretrained, chunk_size=2.5, progress=False)
    backed.file.close()


@pytest.mark.parametrize("function", ["annotate", "integrate"])
def test_a_failed_call_leaves_no_handle_on_the_backed_file(pretrained, adata, tmp_path,
                                                           monkeypatch, function):  # fmt: skip
    # the read-only handle of the reopened file stayed open after an error (or Ctrl-C) while
    # training: the file could not be opened for writing for the rest of the session
    import h5py

    labelled = adata.copy()
    labelled.obs.loc[labelled.obs_names[:10], "cell_type"] = np.nan
    labelled.write_h5ad(tmp_path / "cells.h5ad")
    cls = ScGPTClassifier if function == "annotate" else ScGPTIntegration

    def out_of_memory(self, *args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(cls, "train", out_of_memory)
    backed = ad.read_h5ad(tmp_path / "cells.h5ad", backed="r")
    key = {"label_key": "cell_type", "n_models": 1} if function == "annotate" else {
        "batch_key": "batch"}  # fmt: skip
    with pytest.raises(RuntimeError, match="out of memory"):
        getattr(tl, function)(backed, model=pretrained, max_epochs=1, progress=False, **key)
    backed.file.close()
    with h5py.File(tmp_path / "cells.h5ad", "r+"):
        pass
