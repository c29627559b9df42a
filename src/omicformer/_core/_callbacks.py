"""Lightning callbacks of the shared runner (:func:`omicformer._core._train.run_training`).

Per-epoch reseeding of dropout (:class:`SeedCallback`), the training history in scvi-tools'
format (:class:`HistoryCallback`, with its JSON form for ``save``/``load``), and keeping the
best epoch's weights (:class:`BestWeights`). The last two are part of Lightning checkpoints, so
a resumed run keeps them.
"""

from __future__ import annotations

import contextvars
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch

if TYPE_CHECKING:
    from collections.abc import Sequence

History = dict[str, pd.DataFrame]


def extend_history(previous: History | None, run: History, prefix: str = "") -> History:
    """``previous`` with a new run's curves appended (a continued training extends its curves).

    Each of ``run``'s frames goes under ``prefix + key``. The run's epochs (counted from 0) are
    numbered on after the last epoch of any curve in ``previous`` under ``prefix`` (a stage of
    its own, such as DNABERT's ``"mlm_"``), and its steps (from 1) after the last step, so
    that curves recorded on some epochs only (validation every few epochs, or a curve the
    earlier runs lacked) stay aligned with the others. A run resumed from a checkpoint starts
    with the rows the checkpoint held (``frame.attrs["restored_rows"]``); when ``previous``
    holds them on every such curve, at one place (this model ran the part before the
    checkpoint), the run is numbered from where those rows begin, and what ``previous``
    recorded from there on is replaced instead of being appended a second time. Keys of
    ``previous`` that the run lacks are kept.
    """
    out = dict(previous or {})
    frames = {f"{prefix}{key}": frame.rename(columns={key: f"{prefix}{key}"})
              for key, frame in run.items()}  # fmt: skip
    for kind, first in (("epoch", 0), ("step", 1)):
        names = [
            name for name, frame in frames.items() if _kind(name, frame) == kind and len(frame)
        ]
        if not names:
            continue
        earlier = [f for n, f in out.items()
                   if n.startswith(prefix) and _kind(n, f) == kind and len(f)]  # fmt: skip
        offset = max((int(f.index.max()) + 1 - first for f in earlier), default=0)
        # resumed: where the checkpoint's rows begin in previous, if every curve holding
        # some agrees (one curve alone, e.g. an accuracy, can repeat values by chance)
        resumed = {name: _restored_start(out.get(name), frames[name]) for name in names
                   if frames[name].attrs.get("restored_rows", 0)}  # fmt: skip
        shifts = {None if start is None else start - int(frames[name].index[0])
                  for name, start in resumed.items()}  # fmt: skip
        if len(shifts) == 1 and None not in shifts:
            (offset,) = shifts
        for name in names:
            frame = frames[name].copy()
            frame.index = frame.index + offset
            before = out.get(name)
            if before is not None:  # without the rows that the run numbers anew
                before = before[before.index < first + offset]
            out[name] = pd.concat([before, frame]) if before is not None and len(before) else frame
    return out


def _kind(name: str, frame: pd.DataFrame) -> str:
    """``"step"`` or ``"epoch"``: what a history frame is indexed by."""
    return frame.index.name or ("step" if name.endswith("_step") else "epoch")


def _restored_start(before: pd.DataFrame | None, frame: pd.DataFrame) -> int | None:
    """Index in ``before`` where ``frame``'s restored rows were recorded, if it holds them.

    The last place where ``before`` holds those rows' values (a NaN loss matching a NaN), at the
    same spacing of the index; rows after them in ``before`` were recorded after the
    checkpoint and are run again.
    """
    restored = int(frame.attrs.get("restored_rows", 0))
    if before is None or not 0 < restored <= len(before):
        return None
    values, index = frame.iloc[:restored, 0].to_numpy(), frame.index[:restored].to_numpy()
    for p in range(len(before) - restored, -1, -1):
        block = before.iloc[p : p + restored]
        if np.array_equal(block.iloc[:, 0].to_numpy(), values, equal_nan=True) and np.all(
            np.diff(block.index.to_numpy()) == np.diff(index)
        ):
            return int(block.index[0])
    return None


class SeedCallback(pl.Callback):
    """Reseed torch's global generator at every training epoch from ``(seed, rank, epoch)``.

    Each DDP process then draws its own dropout (the weights stay identical: DDP broadcasts
    them), every epoch draws new ones, and a run resumed at an epoch boundary draws what the
    uninterrupted run drew (mid-epoch, ``omicformer._core._resume.ResumeCallback``
    restores the stream). Collate draws (masks) are seeded per batch instead (``_resume``).
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state = np.random.SeedSequence([self.seed, trainer.global_rank, trainer.current_epoch])
        torch.manual_seed(int(state.generate_state(1, dtype=np.uint64)[0]))


class HistoryCallback(pl.Callback):
    """Training curves in scvi-tools' format: ``{name: DataFrame}``, one column named ``name``.

    Every metric the plan logs per epoch (``train_loss``, ``validation_loss``, their parts)
    is indexed by ``epoch``; validation metrics only for the epochs that ran validation (e.g.
    every other epoch with ``check_val_every_n_epoch=2``). The loss of every optimisation step
    is ``train_loss_step``, indexed by ``step``: with ``accumulate_grad_batches`` the mean loss
    of the step's minibatches (Lightning hands callbacks the loss divided by the number of
    accumulated minibatches). Under DDP, ``train_loss_step`` is process 0's (the loss of its own
    minibatches: each process records its own, and process 0 saves the model), while the epoch
    means and validation metrics are over every process's cells. The history is part of
    Lightning checkpoints, so a resumed run
    keeps it; after a resume mid-epoch, that epoch's training means (``train_loss`` and its
    parts) average only the minibatches run after the resume (Lightning does not checkpoint
    its running epoch means), while ``train_loss_step`` and the validation metrics are whole.
    """

    def __init__(self) -> None:
        self.rows: dict[str, list[tuple[int, float]]] = defaultdict(list)
        self._step_losses: list[float] = []  # minibatch losses of the optimiser step under way
        self._last_step = 0
        self._before_validation: dict[str, Any] = {}
        self._validation: dict[str, float] = {}  # metrics of the epoch's last validation run
        self._validation_keys: set[str] = set()
        #: rows per curve loaded from a checkpoint (those of the run before it resumed)
        self.restored: dict[str, int] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._step_losses, self._last_step = [], int(trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        if not pl_module.automatic_optimization:  # no accumulation, loss as returned
            self.rows["train_loss_step"].append((trainer.global_step, float(loss.detach())))
            return
        self._step_losses.append(float(loss.detach()) * int(trainer.accumulate_grad_batches))
        if trainer.global_step > self._last_step:  # the optimiser stepped after this batch
            self._last_step = int(trainer.global_step)
            value = float(np.mean(self._step_losses))
            self.rows["train_loss_step"].append((self._last_step, value))
            self._step_losses = []

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._before_validation = dict(trainer.callback_metrics)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        # what this validation run computed: new values (the others are left from before)
        fresh = {
            key: float(value)
            for key, value in trainer.callback_metrics.items()
            if self._before_validation.get(key) is not value and not key.endswith("_step")
        }
        self._validation_keys |= set(fresh)
        self._validation = fresh

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for key, value in trainer.callback_metrics.items():
            if not key.endswith("_step") and key not in self._validation_keys:
                self.rows[key].append((trainer.current_epoch, float(value)))
        for key, value in self._validation.items():
            self.rows[key].append((trainer.current_epoch, value))
        self._validation = {}

    def state_dict(self) -> dict[str, Any]:
        return {"rows": {k: list(v) for k, v in self.rows.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = defaultdict(list, {k: list(v) for k, v in state_dict["rows"].items()})
        self.restored = {k: len(v) for k, v in self.rows.items()}

    @property
    def history(self) -> History:
        """The curves collected so far.

        After resuming from a checkpoint, a frame's first ``frame.attrs["restored_rows"]`` rows
        are those the checkpoint held (recorded before the run was interrupted).
        """
        out = history_from_rows(self.rows)
        for key, n in self.restored.items():
            if n and key in out:
                out[key].attrs["restored_rows"] = n
        return out


def history_from_rows(rows: dict[str, Sequence[tuple[int, float]]]) -> History:
    """``{name: [(epoch or step, value), ...]}`` -> ``{name: DataFrame}``."""
    out = {}
    for key, pairs in sorted(rows.items()):
        index = pd.Index(
            [int(i) for i, _ in pairs], name="step" if key.endswith("_step") else "epoch"
        )
        out[key] = pd.DataFrame({key: [float(v) for _, v in pairs]}, index=index)
    return out


def history_to_json(history: History | None) -> dict[str, dict[str, list]]:
    """``{name: DataFrame}`` -> ``{name: {"epoch" or "step": [...], "value": [...]}}``."""
    return {
        key: {df.index.name or "epoch": [int(i) for i in df.index],
              "value": [float(v) for v in df.iloc[:, 0]]}
        for key, df in (history or {}).items()
    }  # fmt: skip


def history_from_json(data: dict | None) -> History:
    """Inverse of :func:`history_to_json`."""
    return history_from_rows(
        {
            key: list(zip(v.get("epoch", v.get("step", [])), v["value"], strict=True))
            for key, v in (data or {}).items()
        }
    )


class BestWeights(pl.Callback):
    """Keep the weights of the epoch with the lowest ``monitor`` and restore them after fit."""

    def __init__(self, monitor: str = "validation_loss") -> None:
        self.monitor = monitor
        self.best = float("inf")
        self.state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None or not float(value) < self.best:
            return
        self.best = float(value)
        self.state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.state is not None:
            pl_module.load_state_dict(self.state)

    def state_dict(self) -> dict[str, Any]:
        # part of checkpoints: a resumed run still restores the best epoch of before the crash
        return {"best": self.best, "state": self.state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best, self.state = float(state_dict["best"]), state_dict["state"]


_clock = time.perf_counter  # the timer of LongRunWarning (tests replace it)
#: Trainings of the same length still to come after the current one (an ensemble's members).
RUNS_AFTER: contextvars.ContextVar[int] = contextvars.ContextVar("runs_after", default=0)
#: Training expected to run longer than this (seconds) on a CPU gets one warning.
LONG_RUN_SECONDS = 600.0
#: Optimiser steps timed for the estimate, after the first step (which allocates memory).
TIMED_STEPS = 3


def format_duration(seconds: float) -> str:
    """``"2 h 05 min"``, ``"25 min"`` or ``"40 s"``: a duration, rounded to whole minutes."""
    if seconds < 60:
        return f"{round(seconds)} s"
    minutes = round(seconds / 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def long_run_message(
    per_step: float, steps_left: int, *, early_stopping: bool, runs_after: int = 0
) -> str:
    """The warning of :class:`LongRunWarning` for ``steps_left`` steps of ``per_step`` s.

    ``runs_after``: trainings like this one that follow it (:data:`RUNS_AFTER`).
    """
    sooner = "; early stopping may end it sooner" if early_stopping else ""
    more = ""
    if runs_after > 0:
        runs = "training like it follows" if runs_after == 1 else "trainings like it follow"
        more = f" Then {runs_after} more {runs} (the members of an ensemble)."
    return (
        f"Training will take about {format_duration(per_step * steps_left)} more on the CPU "
        f"({per_step:.2f} s per optimiser step over the first steps, {steps_left} steps to go, "
        f"validation not counted{sooner}).{more} A GPU is much faster (accelerator='gpu' in "
        "train, device='cuda' in the scgpt.tl functions); fewer max_epochs or max_steps "
        "shorten it."
    )


class LongRunWarning(pl.Callback):
    """Warn once, early, when training on the CPU will take more than ``threshold`` seconds.

    The first optimiser step is not timed (it allocates memory); the next :data:`TIMED_STEPS`
    are, and their mean times the steps still to go (``trainer.estimated_stepping_batches``,
    the whole ``max_epochs``/``max_steps`` budget) is the estimate. Only the CPU is watched
    (a long GPU run is what a GPU is for), and only on global rank 0. Timing touches no random
    stream, so results are unchanged.
    """

    def __init__(self, threshold: float = LONG_RUN_SECONDS, *, early_stopping: bool = False):
        self.threshold, self.early_stopping = float(threshold), bool(early_stopping)
        self._start: tuple[int, float] | None = None
        self._done = False

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:  # fmt: skip
        if self._done:
            return
        if trainer.strategy.root_device.type != "cpu" or not trainer.is_global_zero:
            self._done = True
            return
        step, now = int(trainer.global_step), _clock()
        if self._start is None:
            if step >= 1:  # after the first optimiser step (of this run, if resumed)
                self._start = (step, now)
            return
        timed = step - self._start[0]
        if timed < TIMED_STEPS:
            return
        self._done = True
        per_step = (now - self._start[1]) / timed
        total = trainer.estimated_stepping_batches
        if not np.isfinite(total):
            return
        left = int(total) - step
        if left > 0 and per_step * left > self.threshold:
            from ._warnings import warn_user

            warn_user(long_run_message(per_step, left, early_stopping=self.early_stopping,
                                       runs_after=RUNS_AFTER.get()))  # fmt: skip
