"""Generative pretraining: collate, sampler, Lightning plan and ScGPT.train (tiny, CPU)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from omicformer.scgpt.model import ScGPT
from omicformer.scgpt.train import CellDataset, GenerativeCollator

TINY = {"d_model": 32, "n_layers": 2, "n_heads": 4}
FIT = {"max_epochs": 2, "enable_progress_bar": False, "accelerator": "cpu", "devices": 1}


@pytest.fixture(scope="module")
def counts() -> sp.csr_matrix:
    rng = np.random.default_rng(0)
    lam = rng.gamma(1.0, 1.0, size=(1, 50))
    return sp.csr_matrix(rng.poisson(lam, size=(100, 50)).astype(np.float32) + np.eye(100, 50))


@pytest.fixture
def adata(counts) -> ad.AnnData:
    obs = pd.DataFrame(
        {"batch": np.repeat(["a", "b"], 50), "cell_type": np.tile(["T", "B", "NK", "T"], 25)},
        index=[f"c{i}" for i in range(100)],
    )
    return ad.AnnData(counts.copy(), obs=obs, var=pd.DataFrame(index=[f"G{i}" for i in range(50)]))


def _collate(seed=None, **kw) -> GenerativeCollator:
    return GenerativeCollator(np.arange(50), cls_id=51, pad_id=50, seed=seed, **kw)


def test_collator_splits_every_cell(counts):
    ds = CellDataset(counts)
    items = [ds[i] for i in range(8)]
    batch = _collate(seed=3)(items)
    ratio_ok = set()
    for i, (_, cols, _, _) in enumerate(items):
        known = batch["pcpt_genes"][i][~batch["pcpt_padding_mask"][i]].numpy()
        gen = batch["gen_genes"][i][~batch["gen_padding_mask"][i]].numpy()
        assert known[0] == 51  # <cls> first, value pad_value
        assert batch["pcpt_values"][i, 0] == -2.0
        assert not set(known[1:]) & set(gen)
        assert sorted([*known[1:], *gen]) == sorted(cols.tolist())
        ratio_ok.add(len(gen) == int(len(cols) * 0.25) or len(gen) == int(len(cols) * 0.5)
                     or len(gen) == int(len(cols) * 0.75))  # fmt: skip
        targets = batch["gen_values"][i][~batch["gen_padding_mask"][i]]
        assert targets.min() >= 1
        assert targets.max() <= 50
    assert ratio_ok == {True}
    again = _collate(seed=3)(items)  # a fixed seed gives the same batch
    assert all(torch.equal(batch[k], again[k]) for k in batch)


def test_collator_max_len_and_global_seed(counts):
    ds = CellDataset(counts)
    items = [ds[i] for i in range(4)]
    torch.manual_seed(0)
    a = _collate(max_len=10)(items)
    torch.manual_seed(0)
    b = _collate(max_len=10)(items)
    assert all(torch.equal(a[k], b[k]) for k in a)
    n_tok = (~a["pcpt_padding_mask"]).sum(1) + (~a["gen_padding_mask"]).sum(1)
    assert int(n_tok.max()) <= 10


def test_train_records_history_and_is_reproducible(adata):
    ScGPT.setup_anndata(adata)
    runs = []
    for _ in range(2):
        model = ScGPT(adata, **TINY, random_state=1)
        model.train(**FIT, random_state=5, batch_size=16)
        runs.append(model)
    m1, m2 = runs
    assert m1.is_trained
    assert {"train_loss", "train_loss_gen", "train_loss_mvc", "validation_loss"} <= set(m1.history)
    assert len(m1.history["train_loss"]) == 2
    assert len(m1.train_indices) == 90
    assert len(m1.validation_indices) == 10
    for (k, a), b in zip(
        m1.module.state_dict().items(), m2.module.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k
    np.testing.assert_array_equal(
        m1.history["validation_loss"].to_numpy(), m2.history["validation_loss"].to_numpy()
    )
    m3 = ScGPT(adata, **TINY, random_state=1)
    m3.train(**FIT, random_state=6, batch_size=16)
    assert not torch.equal(m1.module.encoder.embedding.weight, m3.module.encoder.embedding.weight)


def test_a_second_train_call_continues_the_history(adata):
    # as scvi-tools' models and DNABERT's pretrain: the curves go on, epochs counted on
    ScGPT.setup_anndata(adata)
    model = ScGPT(adata, **TINY, random_state=1)
    model.train(**FIT, random_state=5, batch_size=16)
    first = {k: v.copy() for k, v in model.history.items()}
    model.train(**{**FIT, "max_epochs": 1}, random_state=5, batch_size=16)
    loss = model.history["train_loss"]
    assert list(loss.index) == [0, 1, 2] and loss.index.name == "epoch"
    pd.testing.assert_frame_equal(loss.iloc[:2], first["train_loss"])
    steps = model.history["train_loss_step"]
    n_first = len(first["train_loss_step"])  # 2 epochs of 90 cells in minibatches of 16: 12
    assert n_first == 12 and list(steps.index) == list(range(1, 19))  # steps count from 1


def test_train_loss_goes_down(adata):
    ScGPT.setup_anndata(adata)
    model = ScGPT(adata, **TINY)
    mvc_before = model.module.mvc_decoder.W.weight.clone()
    model.train(**{**FIT, "max_epochs": 4}, lr=3e-3, train_size=1.0, ecs_weight=10.0, mvc=False)
    # heads outside the objective were frozen during training (DDP needs it), then unfrozen
    assert torch.equal(model.module.mvc_decoder.W.weight, mvc_before)
    assert all(p.requires_grad for p in model.module.parameters())
    hist = model.history
    assert "validation_loss" not in hist
    assert "train_loss_mvc" not in hist
    assert "train_loss_ecs" in hist
    loss = hist["train_loss_gen"].to_numpy().ravel()
    assert loss[-1] < loss[0]


def test_train_with_batch_labels_and_dsbn(adata, tmp_path):
    ScGPT.setup_anndata(adata, batch_key="batch")
    model = ScGPT(adata, **TINY, use_batch_labels=True, dsbn=True)
    assert model.module.config.num_batch_labels == 2
    model.train(**{**FIT, "max_epochs": 1}, batch_size=16)
    z = model.get_latent_representation(progress=False)
    assert z.shape == (100, 32)
    assert np.isfinite(z).all()
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-5)
    # one batch alone gives the same embedding: DSBN used that batch's statistics
    sub = adata[adata.obs["batch"] == "b"].copy()
    np.testing.assert_allclose(
        model.get_latent_representation(sub, progress=False), z[50:], atol=1e-5
    )

    # tl.embed takes the same path through batch_key, for the model object and its saved folder
    from omicformer.scgpt import tl

    with pytest.raises(ValueError, match=r"batch-dependent layers.*batch_key="):
        tl.embed(adata, model=model, progress=False, copy=True)
    before = set(adata.obsm)
    out = tl.embed(adata, model=model, batch_key="batch", progress=False, copy=True)
    np.testing.assert_allclose(out.obsm["X_scgpt"], z, atol=1e-5)
    model.save(tmp_path / "dsbn")
    # a folder: batches matched by name (here the second batch only, code 1)
    out = tl.embed(sub, model=tmp_path / "dsbn", batch_key="batch", progress=False, copy=True)
    np.testing.assert_allclose(out.obsm["X_scgpt"], z[50:], atol=1e-5)
    renamed = adata.copy()
    renamed.obs["batch"] = renamed.obs["batch"].map({"a": "a", "b": "zzz"})
    with pytest.raises(ValueError, match=r"batches \['zzz'\] unseen"):
        tl.embed(renamed, model=model, batch_key="batch", progress=False)
    assert set(adata.obsm) == before and "X_scgpt" not in renamed.obsm


def test_dsbn_needs_batch_key(adata):
    ScGPT.setup_anndata(adata)
    with pytest.raises(ValueError, match="batch_key"):
        ScGPT(adata, **TINY, dsbn=True)


def test_train_size_is_deprecated_for_validation_size(adata):
    ScGPT.setup_anndata(adata)
    model = ScGPT(adata, **TINY)
    with pytest.warns(FutureWarning, match="'train_size' is deprecated.*'validation_size'"):
        model.train(**{**FIT, "max_epochs": 1}, train_size=0.75)
    n = adata.n_obs
    assert len(model.validation_indices) == int(np.floor(0.25 * n))
    assert len(model.train_indices) + len(model.validation_indices) == n
    with pytest.raises(TypeError, match="both 'train_size'"):
        model.train(**FIT, train_size=0.75, validation_size=0.25)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"gen_ratios": (0.0, 0.5)}, "gen_ratios"),
        ({"validation_size": 1.0}, "validation_size"),
        ({"max_epochs": 0}, "max_epochs"),
        ({"ecs_weight": -1.0}, "ecs_weight"),
        # these failed after the first step (ZeroDivisionError) or trained with lr < 0
        ({"scheduler_interval": 0}, r"scheduler_interval=0 must be an integer >= 1"),
        ({"scheduler_factor": -1.0}, r"scheduler_factor=-1.0 must be a number > 0"),
        ({"early_stopping_patience": -3}, r"early_stopping_patience=-3 must be"),
        ({"random_state": -1}, r"random_state=-1 must be an integer >= 0"),  # numpy's before
        ({"num_workers": 1.5}, r"num_workers=1.5 must be an integer >= 0"),  # inside the fit
    ],
)
def test_train_rejects_bad_arguments(adata, kwargs, match):
    ScGPT.setup_anndata(adata)
    model = ScGPT(adata, **TINY)
    with pytest.raises(ValueError, match=match):
        model.train(**{**FIT, **kwargs})


@pytest.mark.parametrize(("value", "match"), [(np.nan, "NaN"), (-1.0, "negative")])
def test_train_rejects_bad_matrix_before_training(adata, value, match):
    X = adata.X.toarray()
    X[3, 4] = value
    adata.X = sp.csr_matrix(X)
    ScGPT.setup_anndata(adata)
    model = ScGPT(adata, **TINY)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        model.train(**FIT)
    assert not model.is_trained
    assert all(torch.equal(before[k], v) for k, v in model.module.state_dict().items())


def test_train_keeps_cells_without_vocabulary_genes(adata):
    # as the official code: such a cell is <cls> alone; training and embedding stay finite
    X = adata.X.toarray()
    X[[3, 5]] = 0
    adata.X = sp.csr_matrix(X)
    ScGPT.setup_anndata(adata)
    model = ScGPT(adata, **TINY)
    with pytest.warns(UserWarning, match="express none of the genes"):
        model.train(**FIT)
    assert np.isfinite(model.history["train_loss"].to_numpy()).all()
    with pytest.warns(UserWarning, match="express none of the genes"):
        emb = model.get_latent_representation()
    assert np.isfinite(emb).all()
    np.testing.assert_array_equal(emb[3], emb[5])


DDP_SCRIPT = """
import sys, warnings
import anndata as ad, numpy as np, pandas as pd, scipy.sparse as sp, torch
warnings.filterwarnings("ignore")
from omicformer.scgpt.model import ScGPT

rng = np.random.default_rng(0)
X = sp.csr_matrix(rng.poisson(1.0, (64, 30)).astype(np.float32) + np.eye(64, 30, dtype=np.float32))
obs = pd.DataFrame({"batch": np.repeat(["a", "b"], 32)}, index=[f"c{i}" for i in range(64)])
a = ad.AnnData(X, obs=obs, var=pd.DataFrame(index=[f"G{i}" for i in range(30)]))
ScGPT.setup_anndata(a, batch_key="batch")
m = ScGPT(a, d_model=16, n_layers=1, n_heads=2, dsbn=sys.argv[1] == "dsbn")
m.train(max_epochs=1, batch_size=8, accelerator="cpu", devices=2, strategy="ddp",
        enable_progress_bar=False)
rank = torch.distributed.get_rank()
print(f"RESULT {rank} {float(m.module.encoder.embedding.weight.sum()):.6f}", flush=True)
torch.distributed.destroy_process_group()  # no live gloo threads at exit
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["plain", "dsbn"])
def test_ddp_two_cpu_processes(run_script, mode):
    out, results = run_script(DDP_SCRIPT, mode)
    assert set(results) == {"0", "1"}, out[-3000:]
    assert results["0"] == results["1"]  # DDP kept the replicas identical


VALIDATION_SCRIPT = """
import sys, warnings
import anndata as ad, numpy as np, pandas as pd, scipy.sparse as sp, torch
warnings.filterwarnings("ignore")
from omicformer.scgpt.model import ScGPT

rng = np.random.default_rng(0)
X = sp.csr_matrix(rng.poisson(1.0, (100, 30)).astype(np.float32) + np.eye(100, 30, dtype=np.float32))
a = ad.AnnData(X, var=pd.DataFrame(index=[f"G{i}" for i in range(30)]))
a.obs_names = [f"c{i}" for i in range(100)]
ScGPT.setup_anndata(a)
m = ScGPT(a, d_model=16, n_layers=1, n_heads=2, dropout=0.0)
devices = int(sys.argv[1])
kw = {"strategy": "ddp"} if devices > 1 else {}
m.train(max_epochs=1, batch_size=8, lr=1e-30, validation_size=0.2, accelerator="cpu",
        devices=devices, enable_progress_bar=False, **kw)
rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
print(f"RESULT {rank} {float(m.history['validation_loss'].iloc[0]):.6f}", flush=True)
if torch.distributed.is_initialized():
    torch.distributed.destroy_process_group()
"""


@pytest.mark.slow
def test_validation_loss_under_ddp_counts_every_held_out_cell_once(run_script):
    # 20 held-out cells in minibatches of 8, 8 and 4: the second of two processes repeats one
    # to run as many steps; with the weights frozen (lr 1e-30) the loss is one process's
    one = run_script(VALIDATION_SCRIPT, "1")[1]["0"]
    two = run_script(VALIDATION_SCRIPT, "2")[1]
    assert two["0"] == two["1"] == one  # was 1762.32 on two processes, 1784.82 on one


def test_a_failed_load_into_adata_leaves_it_as_it_was(adata, tmp_path):
    # the genes were matched after scvi-tools' setup had written its columns and uns keys
    fitted = adata.copy()
    ScGPT.setup_anndata(fitted)
    ScGPT(fitted, **TINY).save(tmp_path / "m")
    unknown = adata.copy()
    unknown.var_names = [f"NOTAGENE{i}" for i in range(48)] + ["G48", "G49"]
    obs, uns = list(unknown.obs.columns), sorted(unknown.uns.keys())
    with pytest.raises(ValueError, match="Only 2 of 50 genes"):
        ScGPT.load(tmp_path / "m", adata=unknown)
    assert list(unknown.obs.columns) == obs and sorted(unknown.uns.keys()) == uns
    view = adata[:40]  # refused by the setup: the view is left a view
    with pytest.raises(ValueError, match="view"):
        ScGPT.load(tmp_path / "m", adata=view)
    assert view.is_view


def test_a_query_without_the_setup_layer_is_told_to_add_it(adata):
    # said "pass layer=None", an argument get_latent_representation does not take
    counted = adata.copy()
    counted.layers["counts"] = counted.X.copy()
    ScGPT.setup_anndata(counted, layer="counts")
    model = ScGPT(counted, **TINY)
    with pytest.raises(KeyError, match=r"set up with layer='counts'.*adata\.layers\['counts'\] ="):
        model.get_latent_representation(adata.copy(), progress=False)
