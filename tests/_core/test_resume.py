"""Exact resume: sampler position and random state in checkpoints, a real SIGKILL, bad checkpoints."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import anndata as ad
import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from omicformer._core import _ranks, _resume
from omicformer._core._callbacks import BestWeights
from omicformer._core._data_digest import data_digest
from omicformer._core._resume import (
    ResumableBatchSampler,
    ResumeCallback,
    batch_seed,
    check_checkpoint,
)
from omicformer._core._samplers import EpochBatchSampler
from omicformer.scgpt.model import ScGPT

FIT = {"max_epochs": 2, "batch_size": 8, "random_state": 3, "accelerator": "cpu",
       "enable_progress_bar": False}  # fmt: skip


def _adata(n: int = 40) -> ad.AnnData:
    rng = np.random.default_rng(0)
    X = rng.poisson(1.5, (n, 30)).astype(np.float32) + np.eye(n, 30, dtype=np.float32)
    a = ad.AnnData(sp.csr_matrix(X), var=pd.DataFrame(index=[f"G{i}" for i in range(30)]))
    ScGPT.setup_anndata(a)
    return a


def _fresh(adata: ad.AnnData, **kw) -> ScGPT:
    return ScGPT(adata, **{"d_model": 16, "n_layers": 1, "n_heads": 2, "dropout": 0.2, **kw})


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


class _Interrupt(pl.Callback):
    """Crash (an exception out of ``fit``) when step ``k`` is about to run."""

    def __init__(self, k: int) -> None:
        self.k = k

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.k:
            msg = "simulated crash"
            raise RuntimeError(msg)


# ---------------------------------------------------------------- sampler state (unit)
def test_sampler_state_skips_trained_batches_and_keys_batches():
    inner = EpochBatchSampler(30, 4, seed=5)
    sampler = ResumableBatchSampler(inner, seed=5)
    sampler.set_epoch(2)
    full = list(sampler)
    assert len(full) == len(sampler) == 8
    assert [list(b) for b in full] == _epoch(EpochBatchSampler(30, 4, seed=5), 2)
    assert len({b.key for b in full}) == 8  # one collate seed per batch
    assert full[3].key == batch_seed(5, 2, 3)

    sampler.position = 3  # three batches trained, then a checkpoint
    state = sampler.state_dict()
    assert state == {"epoch": 2, "position": 3, "n_batches": 8}
    resumed = ResumableBatchSampler(EpochBatchSampler(30, 4, seed=5), seed=5)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert [list(b) for b in rest] == [list(b) for b in full[3:]]
    assert [b.key for b in rest] == [b.key for b in full[3:]]
    assert len(list(resumed)) == 8  # skipping happens once

    at_end = ResumableBatchSampler(EpochBatchSampler(30, 4, seed=5), seed=5)
    at_end.load_state_dict({"epoch": 2, "position": 8, "n_batches": 8})  # saved at epoch end
    assert at_end.epoch == 3
    assert [list(b) for b in at_end] == _epoch(EpochBatchSampler(30, 4, seed=5), 3)


def _epoch(inner: EpochBatchSampler, epoch: int) -> list[list[int]]:
    inner.set_epoch(epoch)
    return [list(b) for b in inner]


def test_batch_keys_do_not_depend_on_the_number_of_devices(monkeypatch):
    single = {tuple(b): b.key for b in ResumableBatchSampler(EpochBatchSampler(40, 5, seed=1), 1)}
    monkeypatch.setattr(_ranks, "world_size", lambda: 2)
    sharded = {}
    for rank in (0, 1):
        monkeypatch.setattr(_ranks, "global_rank", lambda r=rank: r)
        monkeypatch.setattr(_resume, "_rank_world", lambda r=rank: (r, 2))
        sharded |= {tuple(b): b.key for b in ResumableBatchSampler(EpochBatchSampler(40, 5, seed=1), 1)}  # fmt: skip
    assert sharded == single  # batch b of epoch e draws the same masks on 1 or 2 devices


# ---------------------------------------------------------------- resume equals uninterrupted
@pytest.mark.parametrize(
    ("k", "extra"),
    [
        (3, {}),  # 5 batches per epoch: mid-epoch 0
        (5, {}),  # the last step of epoch 0 (written after the epoch's validation)
        (8, {"max_epochs": 3, "lr": 0.05, "early_stopping": True}),  # mid-epoch 1, best kept
    ],
)
def test_resume_mid_epoch_equals_uninterrupted_run(tmp_path, k, extra):
    adata = _adata()
    fit = {**FIT, **extra}
    full = _fresh(adata)
    full.train(**fit)
    crashed = _fresh(adata)
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.train(checkpoint_dir=tmp_path, checkpoint_every_n_steps=1, callbacks=[_Interrupt(k)],
                      **fit)  # fmt: skip
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == k
    (sampler_state,) = ckpt["callbacks"]["ResumeCallback"]["samplers"]
    assert sampler_state == {"epoch": k // 5 if k % 5 else k // 5 - 1,
                             "position": k % 5 or 5, "n_batches": 5}  # fmt: skip
    resumed = _fresh(adata)
    resumed.train(checkpoint_dir=tmp_path, checkpoint_every_n_steps=1, ckpt_path="last", **fit)
    _assert_same_weights(full.module, resumed.module)
    for key in ("train_loss_step", "validation_loss"):
        pd.testing.assert_frame_equal(resumed.history[key], full.history[key])


def test_checkpoints_every_epoch_resume_as_the_uninterrupted_run(tmp_path):
    # without checkpoint_every_n_steps, Lightning 2.6 wrote no last.ckpt before the run ended
    # (save_top_k=0): a crash in epoch 2 left nothing, and ckpt_path="last" started afresh
    adata = _adata()
    fit = {**FIT, "max_epochs": 3}
    full = _fresh(adata)
    full.train(**fit)
    crashed = _fresh(adata)
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.train(checkpoint_dir=tmp_path, callbacks=[_Interrupt(12)], **fit)  # in epoch 2
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert (ckpt["epoch"], ckpt["global_step"]) == (1, 10)  # the end of epoch 1
    resumed = _fresh(adata)
    resumed.train(checkpoint_dir=tmp_path, ckpt_path="last", **fit)
    _assert_same_weights(full.module, resumed.module)


def test_best_weights_are_part_of_checkpoints():
    cb = BestWeights()
    cb.best, cb.state = 0.5, {"w": torch.ones(2)}
    restored = BestWeights()
    restored.load_state_dict(cb.state_dict())
    assert restored.best == 0.5 and torch.equal(restored.state["w"], torch.ones(2))


KILL_SCRIPT = """
import sys, time, warnings
import anndata as ad, numpy as np, pandas as pd, scipy.sparse as sp, torch
import lightning.pytorch as pl
warnings.filterwarnings("ignore")
from omicformer.scgpt.model import ScGPT

mode, ckpt_dir, out = sys.argv[1:4]
rng = np.random.default_rng(0)
X = rng.poisson(1.5, (40, 30)).astype(np.float32) + np.eye(40, 30, dtype=np.float32)
a = ad.AnnData(sp.csr_matrix(X), var=pd.DataFrame(index=[f"G{i}" for i in range(30)]))
ScGPT.setup_anndata(a)
m = ScGPT(a, d_model=16, n_layers=1, n_heads=2, dropout=0.2)


class Hang(pl.Callback):
    # step 3's checkpoint is complete when step 4 starts: say so, then wait to be killed
    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step == 3:
            open(out, "w").close()
            time.sleep(600)


fit = dict(max_epochs=2, batch_size=8, random_state=3, accelerator="cpu", enable_progress_bar=False)
if mode == "full":
    m.train(**fit)
elif mode == "killed":
    m.train(checkpoint_dir=ckpt_dir, checkpoint_every_n_steps=3, callbacks=[Hang()], **fit)
else:
    m.train(checkpoint_dir=ckpt_dir, checkpoint_every_n_steps=3, ckpt_path="last", **fit)
torch.save(m.module.state_dict(), out)
"""


@pytest.mark.slow
def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path):
    """A real ``SIGKILL`` mid-epoch (after the step-3 checkpoint), then a new process resumes."""
    script = tmp_path / "train.py"
    script.write_text(KILL_SCRIPT)
    ckpt_dir, marker = tmp_path / "ckpt", tmp_path / "hanging"

    def start(mode: str, out) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, str(script), mode, str(ckpt_dir), str(out)],
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip

    full = start("full", tmp_path / "full.pt")
    killed = start("killed", marker)
    deadline = time.monotonic() + 240
    while not (marker.exists() and (ckpt_dir / "last.ckpt").exists()):
        assert killed.poll() is None, killed.communicate()[0].decode()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint at step 3"
        time.sleep(0.2)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(timeout=60) == -signal.SIGKILL
    ckpt = torch.load(ckpt_dir / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 3 and ckpt["epoch"] == 0  # killed mid-epoch 0 (5 batches)
    assert ckpt["callbacks"]["ResumeCallback"]["samplers"][0]["position"] == 3

    resumed = start("resume", tmp_path / "resumed.pt")
    for proc in (full, resumed):
        out = proc.communicate(timeout=240)[0].decode()
        assert proc.returncode == 0, out[-3000:]
    a = torch.load(tmp_path / "full.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert list(a) == list(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name


# ---------------------------------------------------------------- bad checkpoints
def test_checkpoint_of_another_configuration_is_refused_by_name(tmp_path):
    adata = _adata(24)
    _fresh(adata).train(checkpoint_dir=tmp_path, **{**FIT, "max_epochs": 1})
    for kwargs, expected in (
        ({"d_model": 32}, r"another configuration.*shape mismatch \d+: module\.\S+: "
                          r"checkpoint \(16,\) vs model \(32,\)"),
        ({"n_layers": 2}, r"missing \d+: .*transformer_encoder\.layers\.1\."),
    ):  # fmt: skip
        other = _fresh(adata, **kwargs)
        before = {k: v.clone() for k, v in other.module.state_dict().items()}
        with pytest.raises(ValueError, match=expected):
            other.train(checkpoint_dir=tmp_path, ckpt_path="last", **FIT)
        assert all(torch.equal(before[n], v) for n, v in other.module.state_dict().items())
        assert not other.is_trained
    fewer = _fresh(adata, n_layers=1)
    (tmp_path / "bigger").mkdir()
    _fresh(adata, n_layers=2).train(checkpoint_dir=tmp_path / "bigger", **{**FIT, "max_epochs": 1})
    with pytest.raises(ValueError, match=r"unexpected \d+: .*layers\.1\."):
        fewer.train(checkpoint_dir=tmp_path / "bigger", ckpt_path="last", **FIT)

    plan = torch.nn.Linear(2, 2)
    torch.save({"weights": plan.state_dict()}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not a Lightning training checkpoint"):
        check_checkpoint(plan, tmp_path / "plain.pt")
    (tmp_path / "junk.ckpt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="could not be read"):
        check_checkpoint(plan, tmp_path / "junk.ckpt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_checkpoint(plan, tmp_path / "missing.ckpt")


def test_checkpoint_of_another_run_is_refused_by_setting(tmp_path):
    """Same weights' shapes, other run: before, each of these resumed silently.

    A resumed run continues the checkpoint's sampler position and random state: with another
    batch size the skipped batches are not those trained, with another seed or split cells
    held out before are trained on. Only ``max_epochs``/``max_steps`` may change (extending).
    """
    adata = _adata(24)
    first = {**FIT, "max_epochs": 1}
    _fresh(adata).train(checkpoint_dir=tmp_path, **first)
    # the same numbers of cells and genes, other data: the cells in reverse order
    reordered = ad.AnnData(adata.X[::-1].copy(), var=adata.var[[]].copy())
    ScGPT.setup_anndata(reordered)
    for kwargs, data, expected in (
        ({"batch_size": 4}, adata, r"another training run \(batch_size 8 \(checkpoint\) vs 4"),
        ({"random_state": 0}, adata, r"random_state 3 \(checkpoint\) vs 0 \(now\)"),
        ({"validation_size": 0.5}, adata, r"n_train 22 \(checkpoint\) vs 12 \(now\)"),
        ({}, _adata(40), r"n_train 22 \(checkpoint\) vs 36 \(now\)"),
        ({}, reordered, r"another training run \(other data \(the cells or sequences, their values"),
    ):  # fmt: skip
        other = _fresh(data)
        before = {k: v.clone() for k, v in other.module.state_dict().items()}
        with pytest.raises(ValueError, match=expected):
            other.train(checkpoint_dir=tmp_path, ckpt_path="last", **{**FIT, **kwargs})
        assert all(torch.equal(before[n], v) for n, v in other.module.state_dict().items())
        assert not other.is_trained
    # another number of processes: a position mid-epoch counts one process's minibatches
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=False)
    run = ckpt["callbacks"][ResumeCallback.__qualname__]["run"]
    assert run["world_size"] == 1
    run["world_size"] = 2  # as a checkpoint of two DDP processes records it
    torch.save(ckpt, tmp_path / "two.ckpt")
    with pytest.raises(ValueError, match=r"world_size 2 \(checkpoint\) vs 1 \(now\)"):
        _fresh(adata).train(ckpt_path=tmp_path / "two.ckpt", **FIT)
    # extending the same run is accepted and equals the uninterrupted run
    resumed, full = _fresh(adata), _fresh(adata)  # same initial weights (seeded)
    resumed.train(checkpoint_dir=tmp_path, ckpt_path="last", **{**FIT, "max_epochs": 3})
    full.train(**{**FIT, "max_epochs": 3})
    _assert_same_weights(resumed.module, full.module)


def test_data_digest_reads_the_batches_and_leaves_the_random_streams_alone():
    """Collated minibatches decide the digest; the global random states are put back."""

    def collate(items):  # draws randomness, as the masking collators do
        return {"x": torch.tensor(items, dtype=torch.float32) + torch.rand(len(items)) * 0}

    torch.manual_seed(7)
    np.random.seed(7)
    before = (torch.get_rng_state(), np.random.get_state()[1].copy())
    same = data_digest([(list(range(20)), collate), (None, collate)])
    assert torch.equal(before[0], torch.get_rng_state())
    assert np.array_equal(before[1], np.random.get_state()[1])
    assert same == data_digest([(list(range(20)), collate), (None, collate)])
    assert same != data_digest([(list(range(1, 21)), collate), (None, collate)])
    assert same != data_digest([(list(range(20)), collate), ([1.0], collate)])
    # values equal to 4 decimals give the same digest (another CPU's last bits)
    assert same == data_digest([([i + 1e-9 for i in range(20)], collate), (None, collate)])


# ---------------------------------------------------------------- gradient accumulation
def test_accumulate_grad_batches():
    adata = _adata(64)  # 58 training cells: 8 batches of 8 per epoch
    model = _fresh(adata)
    model.train(accumulate_grad_batches=2, **FIT)
    steps = model.history["train_loss_step"].index
    assert steps.max() == 8  # 2 epochs x 4 optimiser steps
    with pytest.raises(ValueError, match="accumulate_grad_batches=0"):
        _fresh(adata).train(accumulate_grad_batches=0, **FIT)


# ---------------------------------------------------------------- provenance of saved models
def test_saved_model_records_versions_and_training_config(tmp_path):
    import json

    import anndata
    import lightning

    from omicformer.scgpt.model import ScGPTClassifier, ScGPTIntegration, ScGPTPerturbation

    adata = _adata(24)
    model = _fresh(adata)
    assert model.train_config_ is None
    model.train(lr=5e-3, gen_ratios=(0.5,), accumulate_grad_batches=2, **{**FIT, "max_epochs": 1})
    with pytest.raises(ValueError, match="gen_ratios"):
        model.train(gen_ratios=(2.0,), **FIT)  # a failed call does not replace the record
    model.save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "omicformer_config.json").read_text())
    versions = config["versions"]
    # the installed distribution's version: a CUDA wheel from PyPI records no "+cu130" local tag
    assert versions["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert versions["lightning"] == lightning.__version__
    assert versions["anndata"] == anndata.__version__
    assert versions["omicformer"] == config["omicformer_version"]
    assert versions["python"] == ".".join(map(str, sys.version_info[:3]))
    train = config["train_config"]
    assert train["method"] == "ScGPT.train"
    args = train["arguments"]
    assert args["lr"] == 5e-3 and args["max_epochs"] == 1 and args["batch_size"] == 8
    assert args["gen_ratios"] == [0.5] and args["accelerator"] == "cpu"
    assert args["validation_size"] == 0.1  # defaults are recorded too
    assert args["accumulate_grad_batches"] == 2  # a Trainer keyword, flattened
    loaded = ScGPT.load(tmp_path / "m", adata=adata)
    assert loaded.train_config_ == train and loaded.saved_versions_ == versions
    for cls in (ScGPTClassifier, ScGPTIntegration, ScGPTPerturbation):  # every train is recorded
        assert cls.train.__code__ is ScGPT.train.__code__  # the recording wrapper
        assert cls.train.__wrapped__.__qualname__ == f"{cls.__name__}.train"


DDP_RESUME_SCRIPT = """
import sys, warnings
import anndata as ad, numpy as np, pandas as pd, scipy.sparse as sp, torch
warnings.filterwarnings("ignore")
from omicformer.scgpt.model import ScGPT

mode = sys.argv[1]
rng = np.random.default_rng(0)
X = sp.csr_matrix(rng.poisson(1.0, (64, 30)).astype(np.float32) + np.eye(64, 30, dtype=np.float32))
a = ad.AnnData(X, var=pd.DataFrame(index=[f"G{i}" for i in range(30)]))
ScGPT.setup_anndata(a)
m = ScGPT(a, d_model=16, n_layers=1, n_heads=2, dropout=0.2)
fit = dict(max_epochs=2, batch_size=8, accelerator="cpu", devices=2, strategy="ddp",
           enable_progress_bar=False, random_state=1)
if mode == "full":
    m.train(**fit)
elif mode == "stop":  # stops after step 2 of 4 in epoch 0, as a crash would
    m.train(max_steps=2, checkpoint_dir="ckpt", checkpoint_every_n_steps=1, **fit)
else:
    m.train(checkpoint_dir="ckpt", checkpoint_every_n_steps=1, ckpt_path="last", **fit)
torch.save(m.module.state_dict(), f"{mode}{torch.distributed.get_rank()}.pt")
"""


@pytest.mark.slow
def test_ddp_resume_mid_epoch_equals_uninterrupted_run(tmp_path):
    """Two CPU processes (gloo): every rank's own random state is saved and restored."""
    script = tmp_path / "ddp.py"
    script.write_text(DDP_RESUME_SCRIPT)
    for mode in ("full", "stop", "resume"):
        proc = subprocess.run([sys.executable, str(script), mode], cwd=tmp_path,
                              capture_output=True, text=True, timeout=400)  # fmt: skip
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        if mode == "stop":
            ckpt = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
            state = ckpt["callbacks"]["ResumeCallback"]
            assert ckpt["global_step"] == 2 and state["samplers"][0]["position"] == 2
            assert len(state["rng"]) == 2  # one random state per rank
            assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])
    for rank in (0, 1):
        a = torch.load(tmp_path / f"full{rank}.pt", weights_only=True)
        b = torch.load(tmp_path / f"resume{rank}.pt", weights_only=True)
        for name in a:
            assert torch.equal(a[name], b[name]), (rank, name)
