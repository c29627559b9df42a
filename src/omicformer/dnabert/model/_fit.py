"""Run a :class:`DNABertTrainingPlan` with Lightning (CPU, one GPU or DDP unchanged)."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..._core._lightning import make_trainer, seed_everything


@contextlib.contextmanager
def _quiet_lightning(verbose: bool) -> Iterator[None]:
    """Silence Lightning's INFO banners (devices, tips) unless ``verbose``."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    if not verbose:
        for lg in loggers:
            lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def auto_precision(accelerator: str, precision: str | int | None) -> str | int:
    """Lightning precision; ``"auto"`` is bf16-mixed on bf16 GPUs, 16-mixed on others, else 32."""
    if precision != "auto":
        return "32-true" if precision is None else precision
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def split_indices(
    n: int, validation_size: float, random_state: int
) -> tuple[np.ndarray, np.ndarray]:
    """Random train/validation split of ``range(n)``; empty validation for size 0."""
    if not 0 <= validation_size < 1:
        msg = f"validation_size={validation_size} must be in [0, 1)."
        raise ValueError(msg)
    perm = np.random.default_rng(random_state).permutation(n)
    n_val = round(validation_size * n)
    if validation_size > 0 and (n_val == 0 or n_val == n):
        msg = f"validation_size={validation_size} leaves an empty split of {n} items."
        raise ValueError(msg)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def fit_plan(
    plan: Any,
    train: Dataset,
    collate_train: Callable,
    *,
    val: Dataset | None = None,
    collate_val: Callable | None = None,
    batch_size: int = 32,
    max_epochs: int | None = 1,
    max_steps: int | None = None,
    accelerator: str = "auto",
    devices: int | str | list[int] = "auto",
    strategy: str = "auto",
    precision: str | int | None = "auto",
    num_workers: int = 0,
    random_state: int = 0,
    enable_progress_bar: bool = True,
    trainer_kwargs: dict[str, Any] | None = None,
) -> dict[str, list[float]]:
    """Train ``plan`` on ``train`` (and validate on ``val`` each epoch); return its history."""
    if max_epochs is None and max_steps is None:
        msg = "Give max_epochs or max_steps."
        raise ValueError(msg)
    if batch_size < 1:
        msg = f"batch_size={batch_size} must be positive."
        raise ValueError(msg)
    seed_everything(random_state)
    loader = DataLoader(
        train,
        batch_size=batch_size,
        shuffle=True,
        collate_fn=collate_train,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(random_state),
        drop_last=False,
    )
    val_loader = None
    if val is not None and len(val):
        val_loader = DataLoader(
            val, batch_size=batch_size, collate_fn=collate_val, num_workers=num_workers
        )
    kwargs = dict(trainer_kwargs or {})
    kwargs.setdefault("log_every_n_steps", max(1, min(50, len(loader))))
    kwargs.setdefault("num_sanity_val_steps", 0)
    if max_steps is not None:
        kwargs["max_steps"] = int(max_steps)
    with warnings.catch_warnings(), _quiet_lightning(enable_progress_bar):
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*treespec.*")
        warnings.filterwarnings("ignore", ".*no `val_dataloader`.*")
        trainer = make_trainer(
            max_epochs=-1 if max_epochs is None else int(max_epochs),
            accelerator=accelerator,
            devices=devices,
            strategy=strategy,
            precision=auto_precision(accelerator, precision),
            enable_progress_bar=enable_progress_bar,
            **kwargs,
        )
        trainer.fit(plan, train_dataloaders=loader, val_dataloaders=val_loader)
    plan.module.cpu()
    return {key: list(values) for key, values in plan.history.items()}
