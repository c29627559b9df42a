"""Lightning trainer construction shared by every model (CPU, one GPU, DDP)."""

from __future__ import annotations

from typing import Any


def make_trainer(
    *,
    max_epochs: int,
    accelerator: str = "auto",
    devices: int | str | list[int] = "auto",
    strategy: str = "auto",
    precision: str | int | None = None,
    gradient_clip_val: float | None = 1.0,
    enable_progress_bar: bool = True,
    default_root_dir: str | None = None,
    **kwargs: Any,
):
    """Build a :class:`lightning.pytorch.Trainer` with omicformer defaults.

    On several devices Lightning uses DDP (``strategy="auto"``), so the same call trains on
    CPU, one GPU or many. Checkpointing and loggers are off by default: models are saved
    with their own ``save``.
    """
    import lightning.pytorch as pl

    kwargs.setdefault("logger", False)
    kwargs.setdefault("enable_checkpointing", False)
    kwargs.setdefault("enable_model_summary", False)
    return pl.Trainer(
        max_epochs=max_epochs,
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        precision=precision,
        gradient_clip_val=gradient_clip_val,
        enable_progress_bar=enable_progress_bar,
        default_root_dir=default_root_dir,
        **kwargs,
    )


def seed_everything(random_state: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    import lightning.pytorch as pl

    pl.seed_everything(random_state, workers=True, verbose=False)
