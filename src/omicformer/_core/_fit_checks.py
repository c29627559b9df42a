"""Checks of the arguments of a training run, shared by every model's ``train``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

#: scvi-tools' ``train`` arguments that the omicformer models do not take, and what does it.
_SCVI_TRAIN_ARGS = {
    "plan_kwargs": "pass the training plan's settings (lr=, weight_decay=, ...) to train() itself",
    "datasplitter_kwargs": "the held-out share is validation_size=, drawn with random_state=",
    "shuffle_set_split": "the held-out cells are drawn at random with random_state=",
    "train_size": "pass validation_size=1 - train_size",
    "load_sparse_tensor": "sparse rows are read as they are, in minibatches",
}


#: Trainer arguments the shared runner sets itself, and why.
_SET_HERE = {
    "use_distributed_sampler": "its own batch samplers share the minibatches among DDP "
    "processes and keep groups and resumed epochs exact",
}


def check_first_epoch_validated(
    loader: Any,
    max_steps: int | None,
    accumulate: int,
    trainer_kwargs: Mapping[str, Any],
    *,
    world: int = 1,
    max_epochs: int | None = None,
) -> None:
    """``ValueError`` when early stopping would have no validation loss to read.

    It reads the validation loss of each epoch's end; Lightning failed only after training had
    changed the weights ("conditioned on metric 'validation_loss' which is not available")
    where ``max_steps`` ends the run before the first epoch's validation, or
    ``limit_val_batches=0`` turns validation off, and stopped silently without it where
    ``check_val_every_n_epoch`` exceeds ``max_epochs``.
    ``world``: the DDP processes about to train, which share each epoch's minibatches (the
    loader's length is one process's share only once the process group is up).
    """
    from . import _ranks

    hint = "or pass early_stopping=False"
    limit_val = trainer_kwargs.get("limit_val_batches")
    if is_real(limit_val) and not isinstance(limit_val, bool) and limit_val == 0:
        msg = (
            f"limit_val_batches={limit_val!r} turns validation off, so early stopping, which "
            f"reads the validation loss, would have none: drop limit_val_batches= {hint}."
        )
        raise ValueError(msg)
    every = trainer_kwargs.get("check_val_every_n_epoch")
    every = int(every) if isinstance(every, int | np.integer) and every > 0 else None

    def refuse_interval(epochs: int, what: str) -> None:
        if every is not None and every > epochs > 0:
            msg = (
                f"check_val_every_n_epoch={every} validates after more epochs than the run has "
                f"({what}), so early stopping would read no validation loss: lower it {hint}."
            )
            raise ValueError(msg)

    if max_steps is None or max_steps < 0:
        if max_epochs is not None:
            refuse_interval(int(max_epochs), f"max_epochs={max_epochs}")
        return
    try:
        batches = len(loader)
    except TypeError:  # a stream of unknown length: Lightning's own check stands
        return
    if _ranks.world_size() == 1:  # before the processes start: every rank's minibatches
        batches = -(-batches // max(int(world), 1))
    limit = trainer_kwargs.get("limit_train_batches")
    if isinstance(limit, float) and not isinstance(limit, bool):
        batches = int(batches * limit)
    elif isinstance(limit, int | np.integer) and not isinstance(limit, bool):
        batches = min(batches, int(limit))
    steps = -(-batches // max(int(accumulate), 1))
    run = -(-max_steps // max(steps, 1))  # epochs begun within max_steps
    if max_epochs is not None and max_epochs > 0:
        run = min(run, int(max_epochs))
    refuse_interval(run, f"{run} epochs of {steps} steps in max_steps={max_steps}")
    if max_steps < steps:
        msg = (
            f"max_steps={max_steps} ends the run inside the first epoch ({steps} steps), so "
            "early stopping, which reads the validation loss at the end of each epoch, would "
            "have none: raise max_steps, shorten the epochs (limit_train_batches=), or pass "
            "early_stopping=False."
        )
        raise ValueError(msg)


def check_fit_args(
    *,
    batch_size: Any,
    max_epochs: Any = None,
    max_steps: Any = None,
    validation_size: Any = 0.0,
    dropout: Any = None,
    lr: Any = None,
    weight_decay: Any = None,
    counts: Mapping[str, Any] | None = None,
    factors: Mapping[str, Any] | None = None,
    early_stopping_patience: Any = None,
    random_state: Any = 0,
    num_workers: Any = 0,
    trainer_kwargs: Mapping[str, Any] | None = None,
) -> None:
    """``ValueError`` naming the first bad training argument; call before changing the model.

    ``batch_size`` and, when given, ``max_epochs`` and ``max_steps`` must be integers >= 1,
    ``validation_size`` a number in [0, 1) and ``dropout``, when given, a number in [0, 1);
    ``lr``, when given, a number > 0 and ``weight_decay`` one >= 0 (the optimiser would refuse
    them only once training starts). ``counts`` (``{name: value}``, e.g. a scheduler's
    interval) must be integers >= 1 and ``factors`` (a learning-rate decay) numbers > 0,
    where not ``None``; ``early_stopping_patience`` an integer >= 0, ``random_state`` a seed
    (an integer >= 0: numpy's own error did not name it), ``num_workers`` an integer >= 0 (a
    float failed inside Lightning's fit, a backed file already read). ``trainer_kwargs``:
    ``TypeError`` for a key neither
    :class:`lightning.pytorch.Trainer` nor :func:`run_training` takes (a typo failed only when
    the trainer was built, after the model had changed).
    """
    from ._checks import check_int, check_seed

    check_int("batch_size", batch_size)
    check_seed(random_state)
    check_int("num_workers", num_workers, minimum=0, hint="DataLoader worker processes")
    for name, why in _SET_HERE.items():
        if name in (trainer_kwargs or {}):
            msg = f"{name}= is set by omicformer's training ({why}); drop it."
            raise TypeError(msg)
    for name, value in (("max_epochs", max_epochs), ("max_steps", max_steps),
                        *(counts or {}).items()):  # fmt: skip
        if value is not None:
            check_int(name, value)
    if early_stopping_patience is not None:  # 0: stop at the first check without improvement
        check_int("early_stopping_patience", early_stopping_patience, minimum=0)
    for name, value in (factors or {}).items():
        if not is_real(value) or not (np.isfinite(value) and value > 0):
            msg = f"{name}={value!r} must be a number > 0 (the learning rate's factor)."
            raise ValueError(msg)
    if trainer_kwargs:
        import inspect

        from lightning.pytorch import Trainer

        from ._train import run_training

        known = set(inspect.signature(Trainer.__init__).parameters)
        known |= set(inspect.signature(run_training).parameters)  # checkpoint_every_n_steps
        unknown = sorted(set(trainer_kwargs) - known)
        for name in unknown:
            if name in _SCVI_TRAIN_ARGS:
                msg = f"scvi-tools' {name}= is not an argument here: {_SCVI_TRAIN_ARGS[name]}."
                raise TypeError(msg)
        if unknown:
            msg = (
                f"{unknown} are not arguments of this train method nor of "
                "lightning.pytorch.Trainer; check the spelling."
            )
            raise TypeError(msg)
    for name, value in (("validation_size", validation_size), ("dropout", dropout)):
        if value is None:
            continue
        if not is_real(value) or not 0 <= value < 1:
            msg = f"{name}={value!r} must be a number in [0, 1)."
            raise ValueError(msg)
    if lr is not None and (not is_real(lr) or not lr > 0):
        msg = f"lr={lr!r} must be a number > 0 (the optimiser's learning rate)."
        raise ValueError(msg)
    if weight_decay is not None and (not is_real(weight_decay) or not weight_decay >= 0):
        msg = f"weight_decay={weight_decay!r} must be a number >= 0."
        raise ValueError(msg)


def is_real(value: Any) -> bool:
    """Whether ``value`` is a Python or NumPy number (not a bool)."""
    real = isinstance(value, int | float | np.integer | np.floating)
    return real and not isinstance(value, bool)
