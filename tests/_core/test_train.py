"""The shared training runner: seeding, splits, history, early stopping, resume."""

import warnings
from types import SimpleNamespace

import anndata as ad
import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from omicformer._core import _callbacks, _ranks
from omicformer._core._callbacks import (
    BestWeights,
    HistoryCallback,
    history_from_json,
    history_to_json,
)
from omicformer._core._train import (
    auto_precision,
    run_training,
)
from omicformer.dnabert.model import DNABert
from omicformer.scgpt.model import ScGPT

QUIET = {"accelerator": "cpu", "enable_progress_bar": False}


# ---------------------------------------------------------------- trainer settings
def test_auto_precision(monkeypatch):
    assert auto_precision("cpu", "auto") == "32-true"
    assert auto_precision("auto", None) == "32-true"
    assert auto_precision("gpu", "16-mixed") == "16-mixed"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert auto_precision("auto", "auto") == "bf16-mixed"
    assert auto_precision("cpu", "auto") == "32-true"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert auto_precision("gpu", "auto") == "16-mixed"


class _Toy(pl.LightningModule):
    """y = w x fitted by MSE; logs train/validation losses like every omicformer plan."""

    def __init__(self, lr=0.1):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.lr = lr

    def _loss(self, batch):
        return ((self.w * batch["x"] - batch["y"]) ** 2).mean()

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(batch["x"]))
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("validation_loss", self._loss(batch), batch_size=len(batch["x"]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y).float()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


def _stack(items):
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def test_history_format_and_json_round_trip():
    x = np.linspace(-1, 1, 12)
    history = run_training(_Toy(), _Pairs(x, 2 * x), _stack, val=_Pairs(x, 2 * x),
                           batch_size=4, max_epochs=3, **QUIET)  # fmt: skip
    assert set(history) == {"train_loss", "train_loss_step", "validation_loss"}
    assert history["train_loss"].index.name == "epoch"
    assert history["train_loss"].index.tolist() == [0, 1, 2]
    assert list(history["train_loss"].columns) == ["train_loss"]
    assert history["train_loss_step"].index.name == "step"
    assert history["train_loss_step"].index.tolist() == list(range(1, 10))  # 3 steps x 3
    assert history["validation_loss"].iloc[-1, 0] < history["validation_loss"].iloc[0, 0]
    back = history_from_json(history_to_json(history))
    for key, frame in history.items():
        pd.testing.assert_frame_equal(back[key], frame)
    cb = HistoryCallback()
    cb.rows["train_loss"] += [(0, 1.0), (1, 0.5)]
    restored = HistoryCallback()
    restored.load_state_dict(cb.state_dict())
    pd.testing.assert_frame_equal(restored.history["train_loss"], cb.history["train_loss"])


def test_history_records_validation_only_for_epochs_that_validated():
    """``check_val_every_n_epoch=2`` validates after epochs 1 and 3 only.

    Before, the history copied the last validation loss into the epochs without validation.
    """
    x = np.linspace(-1, 1, 12)
    fit = {"batch_size": 4, "max_epochs": 4, **QUIET}
    every = run_training(_Toy(), _Pairs(x, 2 * x), _stack, val=_Pairs(x, 2 * x), **fit)
    second = run_training(_Toy(), _Pairs(x, 2 * x), _stack, val=_Pairs(x, 2 * x),
                          check_val_every_n_epoch=2, **fit)  # fmt: skip
    assert second["validation_loss"].index.tolist() == [1, 3]
    # validation does not change training: the values of the every-epoch run at epochs 1, 3
    pd.testing.assert_frame_equal(second["validation_loss"], every["validation_loss"].loc[[1, 3]])
    pd.testing.assert_frame_equal(second["train_loss"], every["train_loss"])


def test_step_loss_with_accumulated_gradients_is_the_mean_loss_of_the_step():
    """One row per optimiser step, the mean of its minibatches' losses (not divided by 3)."""
    x = np.linspace(-1, 1, 12)
    history = run_training(_Toy(lr=0.1), _Pairs(x, 2 * x), _stack, batch_size=4, max_epochs=2,
                           accumulate_grad_batches=3, gradient_clip_val=None, **QUIET)  # fmt: skip
    steps = history["train_loss_step"]
    assert steps.index.tolist() == [1, 2]  # 3 minibatches of 4 -> 1 optimiser step per epoch
    # step 1 at w = 0: the mean over all 12 items of (0 - 2x)^2; then one SGD step on it
    w = 0.0
    expected = []
    for _ in range(2):
        expected.append(np.mean((w * x - 2 * x) ** 2))
        w -= 0.1 * np.mean(2 * (w * x - 2 * x) * x)
    np.testing.assert_allclose(steps["train_loss_step"].to_numpy(), expected, rtol=1e-5)


def test_checkpoint_dir_file_and_missing_gpu_are_clear_errors(tmp_path):
    """Before: ``FileExistsError: [Errno 17]`` from inside ``fit``, and Lightning's "No
    supported gpu backend found!"."""
    x = np.linspace(-1, 1, 8)
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(ValueError, match=r"checkpoint_dir=.*a_file.* is a file; give a folder"):
        run_training(_Toy(), _Pairs(x, x), _stack, checkpoint_dir=tmp_path / "a_file", **QUIET)
    with pytest.raises(ValueError, match=r"random_state=1\.5 must be an integer >= 0"):
        run_training(_Toy(), _Pairs(x, x), _stack, random_state=1.5, **QUIET)
    if not torch.cuda.is_available():
        for accelerator in ("gpu", "cuda"):
            with pytest.raises(ValueError, match=f"accelerator='{accelerator}', but torch sees"):
                run_training(_Toy(), _Pairs(x, x), _stack, accelerator=accelerator,
                             enable_progress_bar=False)  # fmt: skip


def test_early_stopping_restores_best_weights():
    cb = BestWeights("validation_loss")
    module = _Toy()
    for value, w in ((3.0, 1.0), (1.0, 2.0), (2.0, 5.0)):
        with torch.no_grad():
            module.w.fill_(w)
        trainer = SimpleNamespace(sanity_checking=False,
                                  callback_metrics={"validation_loss": torch.tensor(value)})  # fmt: skip
        cb.on_validation_end(trainer, module)
    cb.on_fit_end(None, module)
    assert float(module.w.detach()) == 2.0  # weights of the epoch with validation loss 1.0
    x = np.linspace(-1, 1, 8)
    with pytest.raises(ValueError, match="validation_size > 0"):
        run_training(_Toy(), _Pairs(x, x), _stack, early_stopping=True, **QUIET)
    # noisy validation target: stops early (patience 1) with the best epoch's weights
    history = run_training(_Toy(lr=0.9), _Pairs(x, 2 * x), _stack, val=_Pairs(x, -x),
                           batch_size=8, max_epochs=20, early_stopping=True,
                           early_stopping_patience=1, **QUIET)  # fmt: skip
    assert len(history["validation_loss"]) < 20


def test_checkpoint_resume_at_epoch_boundary_equals_uninterrupted_run(tmp_path):
    counts = sp.csr_matrix(np.random.default_rng(0).poisson(2.0, (24, 30)).astype(np.float32) + 1)
    adata = ad.AnnData(counts, var=pd.DataFrame(index=[f"G{i}" for i in range(30)]))
    ScGPT.setup_anndata(adata)
    fit = {"batch_size": 8, "random_state": 2, **QUIET}

    def fresh():
        return ScGPT(adata, d_model=16, n_layers=1, n_heads=2, random_state=0)

    full = fresh()
    full.train(max_epochs=2, **fit)
    first = fresh()
    first.train(max_epochs=1, checkpoint_dir=tmp_path, **fit)
    assert (tmp_path / "last.ckpt").exists()
    resumed = fresh()
    resumed.train(max_epochs=2, checkpoint_dir=tmp_path, ckpt_path="last", **fit)
    assert resumed.history["train_loss"].index.tolist() == [0, 1]  # history kept in the ckpt
    for (name, a), b in zip(full.module.state_dict().items(), resumed.module.state_dict().values(),
                            strict=True):  # fmt: skip
        torch.testing.assert_close(a, b, msg=name)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        fresh().train(max_epochs=1, ckpt_path="last", **fit)
    # epochs cut by limit_train_batches (2 of 3 minibatches): the checkpoint at such an
    # epoch's end resumed inside that epoch, skipping the next epoch's first 2 minibatches
    fit |= {"limit_train_batches": 2, "checkpoint_dir": tmp_path / "cut"}
    full = fresh()
    full.train(max_epochs=2, **{**fit, "checkpoint_dir": None})
    fresh().train(max_epochs=1, **fit)
    resumed = fresh()
    resumed.train(max_epochs=2, ckpt_path="last", **fit)
    assert len(resumed.history["train_loss"]) == 2
    for (name, a), b in zip(full.module.state_dict().items(), resumed.module.state_dict().values(),
                            strict=True):  # fmt: skip
        torch.testing.assert_close(a, b, msg=name)


# ---------------------------------------------------------------- save
def test_save_writes_on_rank_zero_only(tmp_path, monkeypatch):
    adata = ad.AnnData(sp.csr_matrix(np.ones((4, 5), np.float32)),
                       var=pd.DataFrame(index=[f"G{i}" for i in range(5)]))  # fmt: skip
    ScGPT.setup_anndata(adata)
    model = ScGPT(adata, d_model=8, n_layers=1, n_heads=2)
    monkeypatch.setattr(_ranks, "global_rank", lambda: 1)
    model.save(tmp_path / "scgpt")
    DNABert(k=3, n_layers=1, d_model=8, n_heads=2, max_len=16).save(tmp_path / "dnabert")
    assert not (tmp_path / "scgpt").exists() and not (tmp_path / "dnabert").exists()
    monkeypatch.setattr(_ranks, "global_rank", lambda: 0)
    model.save(tmp_path / "scgpt")
    assert (tmp_path / "scgpt" / "model.safetensors").exists()


def test_one_callback_is_taken_as_lightning_takes_it():
    # Lightning's Trainer(callbacks=cb) takes a single callback; run_training unpacked a list
    x = np.linspace(-1, 1, 12)
    steps = []
    rec = pl.callbacks.LambdaCallback(on_train_batch_start=lambda *a: steps.append(a[3]))
    run_training(_Toy(), _Pairs(x, 2 * x), _stack, batch_size=4, max_epochs=1, callbacks=rec,
                 **QUIET)  # fmt: skip
    assert steps == [0, 1, 2]  # 12 items in minibatches of 4


def test_training_leaves_the_callers_autograd_mode():
    # Lightning's fit loop turns autograd on and leaves it on: a notebook that had turned it
    # off for inference built graphs afterwards
    x = np.linspace(-1, 1, 12)
    with torch.no_grad():
        run_training(_Toy(), _Pairs(x, 2 * x), _stack, batch_size=4, max_epochs=1, **QUIET)
        assert not torch.is_grad_enabled()
    assert torch.is_grad_enabled()


def test_early_stopping_without_held_out_items_says_so():
    x = np.linspace(-1, 1, 12)
    with pytest.raises(ValueError, match=r"none was held out.*or early_stopping=False"):
        run_training(_Toy(), _Pairs(x, 2 * x), _stack, val=_Pairs(x[:0], x[:0]), batch_size=4,
                     max_epochs=1, early_stopping=True, **QUIET)  # fmt: skip


# ---------------------------------------------------------------- long CPU runs
def _fake_clock(monkeypatch, seconds_per_call):
    calls = iter(range(10**6))
    monkeypatch.setattr(_callbacks, "_clock", lambda: seconds_per_call * next(calls))


def test_long_cpu_run_warns_once_with_the_estimate_at_the_callers_line(monkeypatch):
    """120 items in minibatches of 4 for 10 epochs: 300 steps. The timer advances 5 s per
    step, so after step 4 there are 296 steps of 5 s to go: 1,480 s, about 25 minutes."""
    _fake_clock(monkeypatch, 5.0)
    x = np.linspace(-1, 1, 120)
    with pytest.warns(UserWarning, match="Training will take") as record:
        run_training(_Toy(), _Pairs(x, 2 * x), _stack, batch_size=4, max_epochs=10, **QUIET)
    ours = [w for w in record if "Training will take" in str(w.message)]
    assert len(ours) == 1
    text = str(ours[0].message)
    assert "about 25 min more on the CPU" in text
    assert "5.00 s per optimiser step" in text and "296 steps to go" in text
    assert "early stopping" not in text
    assert ours[0].filename == __file__


def test_long_run_warning_mentions_early_stopping_and_stays_quiet_for_short_runs(monkeypatch):
    x = np.linspace(-1, 1, 120)
    fit = {"batch_size": 4, "max_epochs": 10, "val": _Pairs(x, 2 * x), **QUIET}
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        run_training(_Toy(), _Pairs(x, 2 * x), _stack, **fit)  # the real clock: well under 600 s
        _fake_clock(monkeypatch, 1.0)  # 296 steps of 1 s: under the threshold too
        run_training(_Toy(), _Pairs(x, 2 * x), _stack, **fit)
    assert not [w for w in record if "Training will take" in str(w.message)]
    _fake_clock(monkeypatch, 3.0)
    with pytest.warns(UserWarning, match="early stopping may end it sooner"):
        run_training(_Toy(), _Pairs(x, 2 * x), _stack, early_stopping=True, **fit)


def test_long_cpu_run_warning_reads_the_trainings_that_follow(monkeypatch):
    _fake_clock(monkeypatch, 5.0)
    x = np.linspace(-1, 1, 120)
    token = _callbacks.RUNS_AFTER.set(1)
    try:
        with pytest.warns(UserWarning, match="Then 1 more training like it follows"):
            run_training(_Toy(), _Pairs(x, 2 * x), _stack, batch_size=4, max_epochs=10, **QUIET)
    finally:
        _callbacks.RUNS_AFTER.reset(token)


def test_lightning_tips_are_dropped_and_the_device_banner_kept(caplog):
    """Lightning 2.6 advertises other packages ("💡 Tip: ... litlogger") on every fit."""
    import logging

    x = np.linspace(-1, 1, 8)
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    filters = list(rank_zero.filters)

    class Scheduled(_Toy):  # as DNABERT's plan: a schedule over the whole run
        def configure_optimizers(self):
            assert self.trainer.estimated_stepping_batches == 1
            return super().configure_optimizers()

    with caplog.at_level(logging.INFO):
        run_training(Scheduled(), _Pairs(x, x), _stack, batch_size=8, accelerator="cpu",
                     enable_progress_bar=True)  # fmt: skip
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "GPU available" in said  # with a progress bar, Lightning's banners stay
    assert "Tip" not in said and "litlogger" not in said
    assert "to estimate number of stepping batches" not in said  # prompted by our own plan
    assert rank_zero.filters == filters  # only while training


def test_training_gives_the_callers_global_generators_back(monkeypatch):
    """Seeding inside training must not reseed the user's own draws afterwards."""
    import os
    import random

    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    monkeypatch.delenv("PL_SEED_WORKERS", raising=False)
    x = np.linspace(-1, 1, 8)

    def draws():
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    # CUDA not started: torch.manual_seed and torch.cuda.manual_seed queue seeds for it, which
    # training's seeding must not replace (the user's torch.cuda.manual_seed(5) was overridden)
    tracker = torch.cuda._lazy_seed_tracker

    def queued():
        return tracker.manual_seed_all_cb, tracker.manual_seed_cb, list(tracker.call_order)

    for user_seed in (111, 222):
        random.seed(user_seed), np.random.seed(user_seed), torch.manual_seed(user_seed)
        expected = draws()
        random.seed(user_seed), np.random.seed(user_seed), torch.manual_seed(user_seed)
        torch.cuda.manual_seed(5)
        before = queued()
        run_training(_Toy(), _Pairs(x, x), _stack, max_epochs=2, random_state=0, **QUIET)
        assert draws() == expected  # not the draws of seed 0
        assert queued() == before  # the user's CUDA seeds, not training's
    assert "PL_GLOBAL_SEED" not in os.environ and "PL_SEED_WORKERS" not in os.environ

    # also when training fails after seeding
    def broken(items):
        raise RuntimeError("a collator failed")

    np.random.seed(5)
    expected = np.random.rand()
    np.random.seed(5)
    with pytest.raises(RuntimeError, match="a collator failed"):
        run_training(_Toy(), _Pairs(x, x), broken, random_state=0, **QUIET)
    assert np.random.rand() == expected


@pytest.mark.parametrize("rich", [True, False])
def test_a_labelled_run_names_its_training_bar(rich, monkeypatch):
    """An ensemble's members trained one after another each drew a bare "Epoch 0/9" bar."""
    from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar
    from lightning.pytorch.trainer.connectors import callback_connector

    from omicformer._core._progress import RUN_LABEL

    # Lightning 2.6 picks Rich where installed (2.5: tqdm always, no such attribute)
    monkeypatch.setattr(callback_connector, "_RICH_AVAILABLE", rich, raising=False)
    x = np.linspace(-1, 1, 8)
    said = []

    class Read(pl.Callback):  # the bar's description when the epoch has started
        def on_train_batch_end(self, trainer, *args):
            bar = trainer.progress_bar_callback
            text = (bar.train_progress_bar.desc if isinstance(bar, TQDMProgressBar)
                    else bar._get_train_description(trainer.current_epoch))  # fmt: skip
            said.append(text.rstrip(": "))  # tqdm writes "desc: ", Rich pads

    token = RUN_LABEL.set("classifier 2/3")
    try:
        run_training(_Toy(), _Pairs(x, x), _stack, batch_size=8, max_epochs=2, callbacks=Read(),
                     accelerator="cpu")  # fmt: skip
        mine = TQDMProgressBar()  # a bar of the caller's own is kept as it is
        run_training(_Toy(), _Pairs(x, x), _stack, batch_size=8, max_epochs=1,
                     callbacks=[mine, Read()], accelerator="cpu")  # fmt: skip
    finally:
        RUN_LABEL.reset(token)
    if rich:
        assert said[:2] == ["classifier 2/3 · Epoch 0/1", "classifier 2/3 · Epoch 1/1"]
    else:
        assert said[:2] == ["classifier 2/3 · Epoch 0", "classifier 2/3 · Epoch 1"]
    assert said[2] == "Epoch 0"
    assert isinstance(mine, ProgressBar)
    import pickle  # as Lightning pickles the callbacks under ddp_spawn

    from omicformer._core._bars import labelled_training_bar

    assert pickle.loads(pickle.dumps(labelled_training_bar("classifier 1/2"))).label == (
        "classifier 1/2"
    )


def test_a_step_cap_inside_the_first_epoch_with_early_stopping_is_refused_first():
    # Lightning trained the whole run, then failed: "Early stopping conditioned on metric
    # 'validation_loss' which is not available"
    x = np.linspace(-1, 1, 120)
    fit = {"batch_size": 4, "max_epochs": 3, "val": _Pairs(x[:8], 2 * x[:8]), **QUIET,
           "early_stopping": True}  # fmt: skip
    with pytest.raises(ValueError, match=r"max_steps=5 ends the run inside the first epoch \(30"):
        run_training(_Toy(), _Pairs(x, 2 * x), _stack, max_steps=5, **fit)
    history = run_training(_Toy(), _Pairs(x, 2 * x), _stack, max_steps=5,
                           limit_train_batches=2, **fit)  # fmt: skip
    assert len(history["validation_loss"]) == 2  # epochs of 2 steps: 2 whole ones in 5 steps


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"limit_val_batches": 0}, r"limit_val_batches=0 turns validation off"),
        ({"limit_val_batches": 0.0}, r"limit_val_batches=0.0 turns validation off"),
        ({"check_val_every_n_epoch": 4}, r"check_val_every_n_epoch=4 .*\(max_epochs=3\)"),
        (
            {"check_val_every_n_epoch": 4, "max_steps": 18},  # 3 epochs of 6 steps, max_epochs=None
            r"check_val_every_n_epoch=4 .*\(3 epochs of 6 steps in max_steps=18\)",
        ),
    ],
)
def test_early_stopping_with_validation_turned_off_is_refused_first(kwargs, match):
    # limit_val_batches=0: Lightning failed after the first epoch had trained; a validation
    # interval beyond the run: no validation and no early stopping, without a word
    x = np.linspace(-1, 1, 24)
    toy = _Toy()
    epochs = None if "max_steps" in kwargs else 3
    with pytest.raises(ValueError, match=match):
        run_training(toy, _Pairs(x, 2 * x), _stack, val=_Pairs(x[:8], 2 * x[:8]), batch_size=4,
                     max_epochs=epochs, early_stopping=True, **kwargs, **QUIET)  # fmt: skip
    assert toy.w.item() == 0.0  # not trained


def test_lightning_checkpoints_as_the_user_asks(tmp_path):
    # enable_checkpointing= and a user's ModelCheckpoint clashed with the runner's own
    # enable_checkpointing (TypeError: got multiple values; MisconfigurationException)
    from lightning.pytorch.callbacks import ModelCheckpoint

    x = np.linspace(-1, 1, 12)
    fit = {"batch_size": 4, "max_epochs": 2, **QUIET}
    run_training(_Toy(), _Pairs(x, 2 * x), _stack, enable_checkpointing=False, **fit)
    with pytest.raises(ValueError, match="enable_checkpointing=False turns off"):
        run_training(_Toy(), _Pairs(x, 2 * x), _stack, enable_checkpointing=False,
                     checkpoint_dir=tmp_path / "ck", **fit)  # fmt: skip
    mine = ModelCheckpoint(dirpath=tmp_path / "mine", every_n_epochs=1, save_top_k=-1)
    run_training(_Toy(), _Pairs(x, 2 * x), _stack, callbacks=[mine], **fit)
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == [
        "epoch=0-step=3.ckpt", "epoch=1-step=6.ckpt"
    ]  # fmt: skip


def test_use_distributed_sampler_is_refused_by_name():
    from omicformer._core._fit_checks import check_fit_args

    with pytest.raises(TypeError, match=r"use_distributed_sampler= is set by omicformer"):
        check_fit_args(batch_size=4, trainer_kwargs={"use_distributed_sampler": True})
