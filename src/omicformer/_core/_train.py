"""The one training runner: every omicformer model's ``train``/``pretrain``/``finetune`` runs here.

A model hands :func:`run_training` a Lightning plan (a ``LightningModule`` wrapping its pure
``torch.nn`` module), its datasets and collate functions; the runner owns everything else, the
same way for scGPT and DNABERT:

* the Lightning :class:`~lightning.pytorch.Trainer` (``accelerator``, ``devices``, ``num_nodes``,
  ``strategy``: DDP on several devices or nodes; ``precision="auto"``: bf16 mixed precision on
  GPUs that support it, 16-bit mixed on older GPUs, 32-bit on CPU);
* one validation-split rule (:func:`split_indices`);
* batches from :class:`~omicformer._core._samplers.EpochBatchSampler`: reshuffled per epoch
  from ``(random_state, epoch)``, one slice per DDP rank, optionally one group (e.g. batch
  label for DSBN) per minibatch, or every group in equal numbers
  (:class:`~omicformer._core._samplers.BalancedBatchSampler`); or, for out-of-core datasets,
  from the dataset's own sampler (``make_batch_sampler``, e.g. the chunk-shuffling
  :class:`~omicformer._core._chunk_sampler.ChunkBatchSampler`);
* randomness of collators: a collator calls :func:`collate_rng` per batch; in training it draws
  from torch's global generator seeded for that batch from ``(random_state, epoch, batch
  number)`` (``omicformer._core._resume``), so no two batches, workers, ranks or epochs
  repeat a mask, whatever the prefetching; validation batches are a fixed function of
  ``(random_state, first item)``. Dropout draws from torch's global generator, which
  :class:`~omicformer._core._callbacks.SeedCallback` reseeds at every epoch from ``(random_state, global rank, epoch)``;
* one history format (:class:`~omicformer._core._callbacks.HistoryCallback`, as scvi-tools: ``{name: DataFrame}``);
* early stopping on ``validation_loss`` (best weights restored), Lightning checkpoints for
  resuming (``checkpoint_dir``, ``checkpoint_every_n_steps``, ``ckpt_path="last"``) that hold
  the sampler position and random state, so a run killed mid-epoch resumes exactly
  (``omicformer._core._resume``);
* :func:`~omicformer._core._ranks.is_global_zero` so that ``save`` writes once under DDP;
* one warning, after the first few optimiser steps, when training on the CPU will take more
  than ten minutes (:class:`~omicformer._core._callbacks.LongRunWarning`): an official
  whole-human scGPT fine-tuned on a laptop runs for hours.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import ProgressBar
from torch.utils.data import DataLoader, Dataset

from ._bars import labelled_training_bar
from ._callbacks import BestWeights, History, HistoryCallback, LongRunWarning, SeedCallback
from ._checks import check_seed
from ._data_digest import data_digest
from ._distributed import refuse_started_processes
from ._fit_checks import check_first_epoch_validated, check_fit_args, is_real
from ._progress import RUN_LABEL
from ._quiet import quiet_lightning
from ._random import collate_generator, collate_rng, keeps_global_rng
from ._resume import (
    ResumableBatchSampler,
    ResumeCallback,
    check_checkpoint,
    resumable_loader,
    step_checkpoint,
)
from ._samplers import BalancedBatchSampler, EpochBatchSampler

__all__ = ["collate_generator", "collate_rng", "run_training", "split_indices"]

#: Default fraction of items held out for validation, for every model (scvi-tools: 0.1).
VALIDATION_SIZE = 0.1


# ---------------------------------------------------------------------------- seeds
def seed_all(random_state: int) -> None:
    """Seed Python, NumPy and torch, and make Lightning seed DataLoader workers per rank."""
    pl.seed_everything(int(random_state), workers=True, verbose=False)


# ---------------------------------------------------------------------------- data
def split_indices(
    n: int, validation_size: float, random_state: int, stratify: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Random train/validation split of ``range(n)``, the one rule of every model.

    ``floor(validation_size * n)`` items are held out (none when that is 0, as scvi-tools'
    splitter); both parts are returned sorted. With ``stratify`` (one class per item), the rule
    applies to each class on its own: ``floor(validation_size * n_c)`` items of a class of
    ``n_c`` are held out, so a class too small for that keeps all its items for training.
    """
    if not is_real(validation_size) or not 0 <= validation_size < 1:
        msg = f"validation_size={validation_size!r} must be a number in [0, 1)."
        raise ValueError(msg)
    if n < 1:
        msg = "No training items: the input is empty after filtering."
        raise ValueError(msg)
    rng = np.random.default_rng(random_state)
    if stratify is None:
        perm = rng.permutation(n)
        n_val = int(np.floor(validation_size * n))
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])
    stratify = np.asarray(stratify)
    if stratify.shape != (n,):
        msg = f"stratify has shape {stratify.shape}; expected one class per item, ({n},)."
        raise ValueError(msg)
    held = [
        rng.permutation(members)[: int(np.floor(validation_size * len(members)))]
        for members in (np.flatnonzero(stratify == c) for c in np.unique(stratify))
    ]
    val = np.sort(np.concatenate(held))
    return np.setdiff1d(np.arange(n), val), val


def make_loader(
    dataset: Dataset,
    collate_fn: Callable,
    *,
    batch_size: int,
    shuffle: bool,
    groups: np.ndarray | None = None,
    balance_groups: bool = False,
    groups_per_batch: int | None = None,
    num_workers: int = 0,
    seed: int = 0,
) -> DataLoader:
    """The runner's only loader: batches of ``dataset.make_batch_sampler`` or :class:`EpochBatchSampler`.

    A dataset that reads in chunks (out of core) supplies its own batch sampler through a
    method ``make_batch_sampler(batch_size, *, shuffle, seed, groups)`` (e.g. a
    :class:`~omicformer._core._chunk_sampler.ChunkBatchSampler`); it must shuffle per ``set_epoch``,
    keep one group per minibatch when ``groups`` is given, and split batches across DDP ranks
    as :class:`EpochBatchSampler` does. Other datasets get an :class:`EpochBatchSampler` (with
    ``groups``: one group per minibatch), or with ``groups`` and ``balance_groups=True`` a
    :class:`BalancedBatchSampler` (every group, or ``groups_per_batch`` of them, in every
    minibatch, in equal numbers); an out-of-core dataset then gets
    ``make_batch_sampler(..., balance=True, groups_per_batch=...)``, which must balance the
    same way (:class:`~omicformer._core._chunk_sampler.ChunkBatchSampler` with ``balance=True``).
    """
    make_sampler = getattr(dataset, "make_batch_sampler", None)
    if balance_groups and groups is None:
        msg = "balance_groups=True needs groups= (the group of every item)."
        raise ValueError(msg)
    if balance_groups and make_sampler is not None:
        sampler = make_sampler(batch_size, shuffle=shuffle, seed=seed, groups=groups,
                               balance=True, groups_per_batch=groups_per_batch)  # fmt: skip
    elif balance_groups:
        sampler = BalancedBatchSampler(
            len(dataset), batch_size, groups=groups, shuffle=shuffle, seed=seed,
            groups_per_batch=groups_per_batch,
        )  # fmt: skip
    elif make_sampler is None:
        sampler = EpochBatchSampler(
            len(dataset), batch_size, groups=groups, shuffle=shuffle, seed=seed
        )
    else:
        sampler = make_sampler(batch_size, shuffle=shuffle, seed=seed, groups=groups)
    # Its own generator: creating an iterator then draws the workers' base seed from it, not
    # from the global generator that SeedCallback reseeds per epoch (otherwise a run resumed
    # from a checkpoint, whose iterator is created before that reseed, would draw differently).
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate_fn,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(int(seed)),
    )


# ---------------------------------------------------------------------------- trainer
def auto_precision(accelerator: str, precision: str | int | None) -> str | int:
    """Lightning precision; ``"auto"`` is bf16-mixed on bf16 GPUs, 16-mixed on others, else 32."""
    if precision is None:
        return "32-true"
    if precision != "auto":
        return precision
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def check_accelerator(accelerator: Any) -> None:
    """``ValueError`` when ``accelerator`` asks for a GPU that torch does not see.

    Lightning's ``"gpu"`` is CUDA or Apple MPS, ``"cuda"`` and ``"mps"`` one of them; without
    it Lightning would fail later with "No supported gpu backend found!".
    """
    if not isinstance(accelerator, str):
        return
    name = accelerator.lower()
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    missing = (name == "gpu" and not (cuda or mps)) or (name == "cuda" and not cuda)
    missing = missing or (name == "mps" and not mps)
    if missing:
        msg = (
            f"accelerator={accelerator!r}, but torch sees no such GPU on this machine "
            f"(torch.cuda.is_available() is {cuda}, torch {torch.__version__}); use "
            "accelerator='cpu', or 'auto' to take a GPU only when there is one."
        )
        raise ValueError(msg)


@keeps_global_rng
def run_training(
    plan: pl.LightningModule,
    train: Dataset,
    collate_fn: Callable,
    *,
    val: Dataset | None = None,
    val_collate_fn: Callable | None = None,
    groups: tuple[np.ndarray, np.ndarray] | None = None,
    balance_groups: bool = False,
    groups_per_batch: int | None = None,
    batch_size: int = 32,
    max_epochs: int | None = 1,
    max_steps: int | None = None,
    accelerator: str = "auto",
    devices: int | str | list[int] = "auto",
    num_nodes: int = 1,
    strategy: str = "auto",
    precision: str | int | None = "auto",
    gradient_clip_val: float | None = 1.0,
    num_workers: int = 0,
    random_state: int = 0,
    early_stopping: bool = False,
    early_stopping_patience: int = 5,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    checkpoint_every_n_steps: int | None = None,
    ckpt_path: str | os.PathLike[str] | None = None,
    accumulate_grad_batches: int = 1,
    enable_progress_bar: bool = True,
    **trainer_kwargs: Any,
) -> History:
    """Fit ``plan`` with Lightning and return its history.

    Parameters
    ----------
    plan
        The model's Lightning plan; its ``validation_step`` must log ``validation_loss``.
    train, collate_fn
        Training items and the collate turning a list of them into a batch; collators draw
        their randomness with :func:`collate_rng`. A dataset with a
        ``make_batch_sampler(batch_size, *, shuffle, seed, groups)`` method (out-of-core datasets,
        :mod:`omicformer._core._ondisk`) supplies its own batch sampler; others are batched by
        :class:`EpochBatchSampler`.
    val, val_collate_fn
        Validation items (``None``/empty: none) and their collate (default ``collate_fn``).
    groups
        ``(train_groups, val_groups)``: every minibatch holds one group (DSBN).
    balance_groups
        With ``groups``: every training minibatch holds every group instead, in equal numbers
        (:class:`BalancedBatchSampler`, or the out-of-core dataset's balancing sampler);
        validation minibatches then take the validation items in order, mixed.
    groups_per_batch
        With ``balance_groups``: each training minibatch holds this many groups, going through
        every combination of them in turn (``None``: all groups).
    batch_size
        Items per minibatch and device.
    max_epochs, max_steps
        Training length; with ``max_steps`` (optimiser steps) training stops at whichever
        comes first (``max_epochs=None``: only ``max_steps``).
    accelerator, devices, num_nodes, strategy
        Lightning ``Trainer`` settings; several devices or nodes use DDP.
    precision
        ``"auto"``: ``"bf16-mixed"`` on GPUs with bf16, ``"16-mixed"`` on other GPUs, 32-bit
        on CPU; or any Lightning precision.
    gradient_clip_val
        Gradient norm clipping (``None``: off).
    num_workers
        DataLoader worker processes.
    random_state
        Seed of weights' dropout, shuffling and every collator's draws (see module docs).
        Training seeds the global generators (Python, NumPy, torch) from it; their states
        before the call (and Lightning's ``PL_GLOBAL_SEED``/``PL_SEED_WORKERS``) are restored
        afterwards, so the caller's own draws go on as if it had not run (CUDA's: see
        ``omicformer._core._random.kept_global_rng``).
    early_stopping, early_stopping_patience
        Stop when ``validation_loss`` has not improved for ``early_stopping_patience`` epochs,
        then restore the best epoch's weights (needs validation items).
    checkpoint_dir, checkpoint_every_n_steps
        Write Lightning checkpoints (``last.ckpt``: weights, optimiser, loop state, history)
        there at every epoch end, or every ``checkpoint_every_n_steps`` steps.
    ckpt_path
        Resume from this Lightning checkpoint; ``"last"``: ``checkpoint_dir/last.ckpt`` when
        it exists (a fresh start otherwise, so a restarted script can always pass it). The
        checkpoint holds the sampler position and random state: a run killed mid-epoch and
        resumed reaches the weights of an uninterrupted run (on CPU). A checkpoint of another
        configuration raises a ``ValueError`` naming the mismatched weights, one of another
        run (another ``random_state`` or ``batch_size``, another number of training or
        validation items, or other data: the digest of 8 evenly spaced items of each split as
        collated: ``_data_digest.data_digest``) one naming the differing settings;
        ``max_epochs`` and ``max_steps`` may change. The digest needs collators that draw their
        randomness with :func:`collate_rng`, as required above.
    accumulate_grad_batches
        Sum gradients over this many minibatches per optimiser step (effective batch size
        ``batch_size * accumulate_grad_batches * devices``); ``max_steps`` and
        ``checkpoint_every_n_steps`` count optimiser steps.
    enable_progress_bar
        Lightning's progress bar (and its INFO messages).
    **trainer_kwargs
        Further :class:`lightning.pytorch.Trainer` arguments (``callbacks``, ``logger``, ...).
    """
    from lightning.pytorch.callbacks import EarlyStopping

    if max_epochs is None and max_steps is None:
        msg = "Give max_epochs or max_steps."
        raise ValueError(msg)
    check_fit_args(batch_size=batch_size, max_epochs=max_epochs, max_steps=max_steps,
                   early_stopping_patience=early_stopping_patience, random_state=random_state,
                   num_workers=num_workers, trainer_kwargs=trainer_kwargs)  # fmt: skip
    has_val = val is not None and len(val) > 0
    if early_stopping and not has_val:
        msg = (
            "early_stopping=True needs validation data, and none was held out: set "
            "validation_size > 0, large enough to hold out at least one item "
            "(validation_size * number of items >= 1), or early_stopping=False."
        )
        raise ValueError(msg)
    if int(accumulate_grad_batches) < 1:
        msg = f"accumulate_grad_batches={accumulate_grad_batches} must be >= 1."
        raise ValueError(msg)
    if ckpt_path is not None and checkpoint_dir is None and str(ckpt_path) == "last":
        msg = "ckpt_path='last' needs checkpoint_dir= (the folder holding last.ckpt)."
        raise ValueError(msg)
    if checkpoint_dir is not None and os.path.exists(checkpoint_dir):
        if not os.path.isdir(checkpoint_dir):
            msg = (
                f"checkpoint_dir={os.fspath(checkpoint_dir)!r} is a file; give a folder (created "
                "if missing) for last.ckpt."
            )
            raise ValueError(msg)
    check_accelerator(accelerator)
    check_seed(random_state)

    seed_all(random_state)
    train_groups, val_groups = groups if groups is not None else (None, None)
    loader = make_loader(train, collate_fn, batch_size=batch_size, shuffle=True,
                         groups=train_groups, balance_groups=balance_groups,
                         groups_per_batch=groups_per_batch,
                         num_workers=num_workers, seed=random_state)  # fmt: skip
    if balance_groups:
        val_groups = None
    # sampler position and per-batch collate seeds, so that a run resumed mid-epoch is exact
    loader = resumable_loader(loader, random_state)
    val_loader = None
    if has_val:
        val_loader = make_loader(val, val_collate_fn or collate_fn, batch_size=batch_size,
                                 shuffle=False, groups=val_groups, num_workers=num_workers)  # fmt: skip

    history = HistoryCallback()
    extra = trainer_kwargs.pop("callbacks", None) or []
    extra = [extra] if isinstance(extra, pl.Callback) else list(extra)  # one, as Lightning takes
    callbacks = [*extra, SeedCallback(random_state), history,
                 LongRunWarning(early_stopping=early_stopping)]  # fmt: skip
    label = RUN_LABEL.get()
    if label and enable_progress_bar and not any(isinstance(c, ProgressBar) for c in extra):
        callbacks.append(labelled_training_bar(label))
    samplers = (
        [loader.batch_sampler] if isinstance(loader.batch_sampler, ResumableBatchSampler) else []
    )
    # what a checkpoint must match to be resumed (check_checkpoint): same split, seed, batches
    run = {"random_state": int(random_state), "batch_size": int(batch_size),
           "n_train": len(train), "n_validation": len(val) if has_val else 0}  # fmt: skip
    if checkpoint_dir is not None or ckpt_path is not None:  # same data too (what batches hold)
        run["data"] = data_digest(
            [(train, collate_fn), (val if has_val else None, val_collate_fn or collate_fn)]
        )
    resume = ResumeCallback(samplers, run=run)
    callbacks.append(resume)
    if early_stopping:
        callbacks += [
            EarlyStopping("validation_loss", patience=early_stopping_patience, mode="min"),
            BestWeights("validation_loss"),
        ]
    if checkpoint_dir is not None:
        callbacks.append(step_checkpoint(checkpoint_dir, checkpoint_every_n_steps))
        if ckpt_path is not None and str(ckpt_path) == "last":
            last = os.path.join(os.fspath(checkpoint_dir), "last.ckpt")
            ckpt_path = last if os.path.exists(last) else None
    # Lightning's own checkpoints where asked for: checkpoint_dir=, the user's ModelCheckpoint
    # or enable_checkpointing=True (in Lightning's default_root_dir)
    checkpointing = trainer_kwargs.pop("enable_checkpointing", None)
    if checkpointing is None:
        checkpointing = checkpoint_dir is not None or any(
            isinstance(c, pl.callbacks.ModelCheckpoint) for c in extra
        )
    elif not checkpointing and checkpoint_dir is not None:
        msg = (
            f"checkpoint_dir={os.fspath(checkpoint_dir)!r} writes Lightning checkpoints, which "
            "enable_checkpointing=False turns off: drop one of the two."
        )
        raise ValueError(msg)
    trainer_kwargs.setdefault("logger", False)
    trainer_kwargs.setdefault("enable_model_summary", False)
    trainer_kwargs.setdefault("num_sanity_val_steps", 0)
    trainer_kwargs.setdefault("log_every_n_steps", max(1, min(50, len(loader))))
    if not has_val:
        trainer_kwargs.setdefault("limit_val_batches", 0)
    with warnings.catch_warnings(), quiet_lightning(enable_progress_bar):
        for pattern in (".*does not have many workers.*", ".*no `val_dataloader`.*",
                        ".*treespec.*", ".*`ModelCheckpoint` callback.*"):  # fmt: skip
            warnings.filterwarnings("ignore", pattern)
        trainer = pl.Trainer(
            max_epochs=-1 if max_epochs is None else int(max_epochs),
            max_steps=-1 if max_steps is None else int(max_steps),
            accelerator=accelerator,
            devices=devices,
            num_nodes=num_nodes,
            strategy=strategy,
            precision=auto_precision(accelerator, precision),
            gradient_clip_val=gradient_clip_val,
            accumulate_grad_batches=int(accumulate_grad_batches),
            enable_progress_bar=enable_progress_bar,
            enable_checkpointing=checkpointing,
            use_distributed_sampler=False,
            callbacks=callbacks,
            **trainer_kwargs,
        )
        refuse_started_processes(trainer, strategy, "the training history")
        # the processes that will train, known once Lightning resolved the devices
        world = int(trainer.world_size)
        if early_stopping and has_val:
            check_first_epoch_validated(loader, max_steps, accumulate_grad_batches,
                                        trainer_kwargs, world=world,
                                        max_epochs=max_epochs)  # fmt: skip
        # a position in an epoch counts one rank's minibatches: resumed by as many ranks
        resume.run["world_size"] = world
        if ckpt_path is not None:  # clear errors for another configuration or run
            check_checkpoint(plan, ckpt_path, resume.run)
        # Pretrained modules arrive in eval mode and Lightning keeps each submodule's mode:
        # train mode here, or dropout and batch norm would train with inference behaviour.
        plan.train()
        try:
            # Lightning turns autograd on and leaves it on: the caller's mode comes back
            with torch.enable_grad():
                trainer.fit(plan, loader, val_loader, ckpt_path=ckpt_path)
        except SystemExit as err:  # Lightning ends a fit stopped by Ctrl-C with sys.exit(1)
            # raised handling the KeyboardInterrupt: the interruption it is, for the callers'
            # handlers (a callback's own sys.exit(n) keeps its code)
            if isinstance(err.__context__, KeyboardInterrupt):
                raise KeyboardInterrupt from err
            raise
    return history.history
