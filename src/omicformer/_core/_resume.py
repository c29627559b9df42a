"""Exact resume after a crash: sampler position and random state in Lightning checkpoints.

A run killed mid-epoch and resumed with ``ckpt_path="last"`` reaches the same weights as an
uninterrupted run on CPU. Lightning (2.x) restores weights, optimiser, schedulers and loop
counters; three things are added here:

* **Sampler position.** :func:`resumable_loader` gives the training DataLoader a
  ``state_dict``/``load_state_dict`` pair (Lightning stores it in the checkpoint's loop state
  and reloads it before the first batch is drawn): the epoch and the number of batches already
  trained in it. On resume those batches are skipped (only their indices are drawn, no data is
  read). :class:`ResumeCallback` also hands the epoch to the batch sampler at every epoch start
  (Lightning calls ``set_epoch`` only on ``sampler`` and ``batch_sampler.sampler``, not on a
  batch sampler itself).
* **Collate randomness keyed by batch.** Every training batch is collated with torch's global
  generator seeded from ``(seed, epoch, batch number)`` (in a :func:`torch.random.fork_rng`
  block, so the run's own stream is untouched). Masks and subsampling then do not depend on
  Lightning's prefetching, on DataLoader workers or on where a run was interrupted, and batch
  ``b`` of epoch ``e`` draws the same masks whatever the number of devices.
* **Random state.** :class:`ResumeCallback` stores the state of torch's CPU (and CUDA)
  generators, NumPy's and Python's global generators, per DDP rank, and restores it when a run
  resumes; dropout then continues the stream the interrupted run was drawing.

:func:`check_checkpoint` turns a checkpoint of another configuration into a ``ValueError``
naming the mismatched keys, before Lightning touches the model; the digest of
:func:`omicformer._core._data_digest.data_digest` tells it whether the data is the run's own.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = [
    "KeyedBatch",
    "ResumableBatchSampler",
    "ResumableDataLoader",
    "ResumeCallback",
    "StepCheckpoint",
    "batch_seed",
    "check_checkpoint",
    "resumable_loader",
    "step_checkpoint",
]


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return int(torch.distributed.get_rank()), int(torch.distributed.get_world_size())
    return 0, 1


def batch_seed(seed: int, epoch: int, batch: int) -> int:
    """The seed of the collate randomness of training batch ``batch`` of ``epoch``."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(batch)])
    return int(state.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


# ---------------------------------------------------------------------------- sampler
class KeyedBatch(list):
    """A list of item indices that carries the seed of its collate randomness (``key``)."""

    key: int | None = None


class ResumableBatchSampler(Sampler[list[int]]):
    """Wrap a batch sampler: epoch and position state, skip on resume, batches keyed by seed.

    Parameters
    ----------
    batch_sampler
        Yields lists of indices (this rank's batches); ``set_epoch`` is forwarded to it.
    seed
        Base seed of the batches' collate randomness (see :func:`batch_seed`).
    """

    def __init__(self, batch_sampler: Any, seed: int = 0) -> None:
        self.batch_sampler = batch_sampler
        self.seed = int(seed)
        self.epoch = int(getattr(batch_sampler, "epoch", 0))
        #: batches of the current epoch already trained (kept up to date by ResumeCallback)
        self.position = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch, here and in the wrapped batch sampler."""
        self.epoch = int(epoch)
        if callable(getattr(self.batch_sampler, "set_epoch", None)):
            self.batch_sampler.set_epoch(self.epoch)

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[list[int]]:
        skip, self._skip = self._skip, 0
        epoch = self.epoch
        self.set_epoch(epoch)
        rank, world = _rank_world()
        for i, indices in enumerate(self.batch_sampler):
            if i < skip:
                continue
            batch = KeyedBatch(indices)
            # number of the batch among all ranks' batches (rank r takes batches r::world, as
            # EpochBatchSampler deals them): batch b's key does not depend on the world size
            batch.key = batch_seed(self.seed, epoch, i * world + rank)
            yield batch

    def state_dict(self) -> dict[str, int]:
        """Epoch and number of batches trained in it."""
        return {"epoch": self.epoch, "position": int(self.position), "n_batches": len(self)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume: the next iteration starts after the batches already trained."""
        epoch, position = int(state["epoch"]), int(state["position"])
        if position >= int(state.get("n_batches", len(self))):  # saved at the end of an epoch
            epoch, position = epoch + 1, 0
        self.set_epoch(epoch)
        self.position = self._skip = position


class _KeyedItems(list):
    key: int | None = None


class _KeyedDataset(Dataset):
    """Dataset whose batched fetch (``__getitems__``) passes the batch's key to the collate."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Any:
        return self.dataset[i]

    def __getitems__(self, indices: list[int]) -> list[Any]:
        getitems = getattr(self.dataset, "__getitems__", None)
        items = _KeyedItems(
            getitems(list(indices)) if callable(getitems) else [self.dataset[i] for i in indices]
        )
        items.key = getattr(indices, "key", None)
        return items

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet (unpickling in a worker)
            raise AttributeError(name)
        return getattr(self.dataset, name)


class _KeyedCollate:
    """Collate a batch with torch's global generator seeded from the batch's key."""

    def __init__(self, collate_fn: Callable) -> None:
        self.collate_fn = collate_fn

    def __call__(self, items: list[Any]) -> Any:
        key = getattr(items, "key", None)
        if key is None:
            return self.collate_fn(items)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(key)
            return self.collate_fn(list(items))


class ResumableDataLoader(DataLoader):
    """A DataLoader whose sampler state Lightning saves in (and restores from) checkpoints."""

    def state_dict(self) -> dict[str, Any]:
        """State of the batch sampler (epoch, batches trained)."""
        return self.batch_sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the batch sampler's state before the first batch is drawn."""
        self.batch_sampler.load_state_dict(state)


def resumable_loader(loader: DataLoader, seed: int) -> DataLoader:
    """``loader`` with a resumable, keyed batch sampler (unchanged without a batch sampler).

    Parameters
    ----------
    loader
        A map-style DataLoader built with ``batch_sampler=``.
    seed
        The run's seed (:func:`batch_seed`).
    """
    if loader.batch_sampler is None or isinstance(loader, ResumableDataLoader):
        return loader
    kwargs: dict[str, Any] = {
        "num_workers": loader.num_workers,
        "pin_memory": loader.pin_memory,
        "timeout": loader.timeout,
        "worker_init_fn": loader.worker_init_fn,
        "generator": loader.generator,
        "persistent_workers": loader.persistent_workers,
    }
    if loader.num_workers > 0:
        kwargs["prefetch_factor"] = loader.prefetch_factor
        kwargs["multiprocessing_context"] = loader.multiprocessing_context
    return ResumableDataLoader(
        _KeyedDataset(loader.dataset),
        batch_sampler=ResumableBatchSampler(loader.batch_sampler, seed),
        collate_fn=_KeyedCollate(loader.collate_fn),
        **kwargs,
    )


# ---------------------------------------------------------------------------- callback
def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()  # noqa: NPY002 (the legacy global generator is what we save)
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))  # noqa: NPY002
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class ResumeCallback(pl.Callback):
    """Keep the sampler position and the random state in checkpoints; restore them on resume.

    Parameters
    ----------
    samplers
        Batch samplers of the training loaders (:class:`ResumableBatchSampler`); their
        position is updated after every batch and their epoch at every epoch start.
    run
        What identifies the run (seed, batch size, numbers of training and validation items),
        kept in checkpoints so that :func:`check_checkpoint` refuses to resume another run.
    """

    def __init__(
        self,
        samplers: list[ResumableBatchSampler] | None = None,
        run: dict[str, int] | None = None,
    ) -> None:
        self.samplers = list(samplers or [])
        self.run = dict(run or {})
        self._world = 1
        self._rank = 0
        self._to_restore: list[dict[str, Any]] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._rank, self._world = int(trainer.global_rank), int(trainer.world_size)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for sampler in self.samplers:
            sampler.set_epoch(trainer.current_epoch)
            sampler.position = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        done = int(batch_idx) + 1
        last = trainer.num_training_batches  # this epoch's, limit_train_batches counted
        for sampler in self.samplers:  # an epoch cut by limit_train_batches is whole too
            sampler.position = len(sampler) if done >= last else done

    def state_dict(self) -> dict[str, Any]:
        samplers = [s.state_dict() for s in self.samplers]
        state = _rng_state()
        if self._world > 1 and torch.distributed.is_initialized():  # called on every rank
            states: list[Any] = [None] * self._world
            torch.distributed.all_gather_object(states, state)
            return {"rng": states, "samplers": samplers, "run": self.run}
        return {"rng": [state], "samplers": samplers, "run": self.run}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Callbacks are restored before the training loader draws its first batch (Lightning
        # restores the loader's own state only mid-epoch): the epoch is right at boundaries too.
        for sampler, state in zip(self.samplers, state_dict.get("samplers", []), strict=False):
            sampler.load_state_dict(state)
        self._to_restore = state_dict.get("rng")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After the checkpoint is loaded, before the first batch. At an epoch boundary,
        # SeedCallback reseeds right after this; mid-epoch, this is the stream to continue.
        if self._to_restore:
            _set_rng_state(self._to_restore[int(trainer.global_rank) % len(self._to_restore)])
        self._to_restore = None


# ---------------------------------------------------------------------------- step checkpoints
class StepCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint``; a step checkpoint due at an epoch's last batch waits.

    It is written at the end of that epoch instead (after validation): Lightning resumes from a
    checkpoint written at the last batch without running that epoch's end (validation, epoch
    hooks, per-epoch reseeding), so the resumed run would differ from an uninterrupted one.
    Without steps, ``last.ckpt`` is written at every epoch end: Lightning (2.6) writes it only
    where a top-k checkpoint was written at that step, and the runner keeps none
    (``save_top_k=0``).
    """

    _deferred = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        last = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        n = self._every_n_train_steps
        if last and n >= 1 and trainer.global_step % n == 0:
            self._deferred = True
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        every = self._every_n_epochs
        by_epoch = self._every_n_train_steps < 1 and every >= 1
        due = self._deferred or (by_epoch and (trainer.current_epoch + 1) % every == 0)
        written = self._last_global_step_saved == trainer.global_step
        if due and not written and not self._should_skip_saving_checkpoint(trainer):
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)
        self._deferred = False


def step_checkpoint(
    dirpath: str | os.PathLike[str], every_n_train_steps: int | None = None
) -> StepCheckpoint:
    """The runner's checkpoint callback: ``dirpath/last.ckpt`` every N steps, else every epoch."""
    return StepCheckpoint(
        dirpath=os.fspath(dirpath),
        save_last=True,
        save_top_k=0,
        every_n_train_steps=every_n_train_steps,
    )


# ---------------------------------------------------------------------------- checkpoint check
def check_checkpoint(
    plan: torch.nn.Module, ckpt_path: str | os.PathLike[str], run: dict[str, int] | None = None
) -> None:
    """Raise a clear error when ``ckpt_path`` does not fit ``plan`` (before Lightning loads it).

    Parameters
    ----------
    plan
        The Lightning plan about to be trained.
    ckpt_path
        A Lightning checkpoint (``.ckpt``) to resume from.
    run
        The run about to resume (:class:`ResumeCallback`'s ``run``); a checkpoint that
        recorded other values (another seed, batch size, number of training or validation
        items, or other data: ``data_digest``) is refused. Checkpoints that recorded none
        are not checked.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Not a Lightning checkpoint, or its weights have other names or shapes than the plan's
        (the message lists missing, unexpected and mismatched keys), or it was written by
        another run (the message lists the differing settings).
    """
    path = os.fspath(ckpt_path)
    if not os.path.isfile(path):
        msg = (
            f"ckpt_path={path!r} does not exist; pass a .ckpt written by train(checkpoint_dir=...)."
        )
        raise FileNotFoundError(msg)
    # Lightning unpickles the file right after (weights_only=False, its default for resuming);
    # mmap: tensors are not read into memory for this check.
    try:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        except RuntimeError:  # not in the zip format that mmap needs
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        msg = f"ckpt_path={path!r} could not be read as a Lightning checkpoint ({err})."
        raise ValueError(msg) from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        msg = (
            f"ckpt_path={path!r} is not a Lightning training checkpoint (no 'state_dict'); to "
            "start from saved weights use load() or load_pretrained() instead of ckpt_path."
        )
        raise ValueError(msg)
    saved = ckpt["state_dict"]
    own = plan.state_dict()
    missing = sorted(set(own) - set(saved))
    unexpected = sorted(set(saved) - set(own))
    shapes = sorted(
        f"{k}: checkpoint {tuple(saved[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(saved)
        if tuple(saved[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or shapes:

        def head(names: list[str]) -> str:
            return ", ".join(names[:6]) + (f" (+{len(names) - 6} more)" if len(names) > 6 else "")

        parts = [f"{label} {len(names)}: {head(names)}" for label, names in
                 (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes))
                 if names]  # fmt: skip
        msg = (
            f"ckpt_path={path!r} was written by a model of another configuration; its weights do "
            f"not fit this model ({'; '.join(parts)}). Resume with the model settings the "
            "checkpoint was trained with, or start a new run in another checkpoint_dir."
        )
        raise ValueError(msg)
    saved_run = (ckpt.get("callbacks") or {}).get(ResumeCallback.__qualname__, {}).get("run")
    if run and saved_run:
        differ = [
            "other data (the cells or sequences, their values, labels or conditions, or the "
            "settings that make the minibatches)"
            if key == "data"
            else f"{key} {saved_run[key]!r} (checkpoint) vs {value!r} (now)"
            for key, value in run.items()
            if key in saved_run and saved_run[key] != value
        ]
        if differ:
            msg = (
                f"ckpt_path={path!r} was written by another training run ({'; '.join(differ)}): "
                "resuming would continue its sampler position, random state and validation "
                "split on other data or settings. Resume with the data and arguments of that "
                "run (only max_epochs and max_steps may change), or start a new run in "
                "another checkpoint_dir."
            )
            raise ValueError(msg)
