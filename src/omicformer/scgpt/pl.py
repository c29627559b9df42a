"""scGPT plots."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from .._core._plotting import finish, new_axes

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["loss_curve"]

_LOSSES = ("train_loss", "validation_loss", "train_loss_gen", "train_loss_mvc", "train_loss_ecs")


def loss_curve(
    model_or_history: Any,
    *,
    keys: tuple[str, ...] | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | os.PathLike[str] | None = None,
) -> Axes | None:
    """Per-epoch training and validation losses of an :class:`~omicformer.scgpt.model.ScGPT`.

    Parameters
    ----------
    model_or_history
        A trained model (its ``history``: dict of one-column DataFrames, as scvi-tools) or such
        a dict, or a dict of lists.
    keys
        Which losses to draw; default: every one of ``train_loss``, ``validation_loss`` and the
        objective parts (``train_loss_gen``, ``train_loss_mvc``, ``train_loss_ecs``) present.
    ax
        Axes to draw on (a new figure otherwise).
    show
        Show the figure (default ``sc.settings.autoshow``, as scanpy).
    save
        Write the figure as scanpy does (``True``: ``figdir/scgpt_loss_curve.png``; a suffix
        such as ``"_run1.pdf"``; or a path).

    Returns
    -------
    The axes, or ``None`` when the figure was shown (as scanpy).

    Examples
    --------
    >>> from omicformer import scgpt
    >>> model.train(max_epochs=20)  # doctest: +SKIP
    >>> scgpt.pl.loss_curve(model)  # doctest: +SKIP
    """
    history = getattr(model_or_history, "history", model_or_history)
    history = history or {}
    keys = keys or tuple(k for k in _LOSSES if k in history)
    if not keys:
        msg = f"No loss history to plot (keys: {sorted(history)}); train the model first."
        raise ValueError(msg)
    ax = new_axes(ax, figsize=(5, 3.2))
    for key in keys:
        if key not in history:
            msg = f"{key!r} is not in the history (available: {sorted(history)})."
            raise KeyError(msg)
        values = history[key]
        y = np.asarray(values.iloc[:, 0] if hasattr(values, "iloc") else values, dtype=float)
        ax.plot(np.arange(1, y.size + 1), y, marker="o" if y.size < 30 else None, ms=3, label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("scGPT pretraining")
    ax.legend(frameon=False, fontsize=8)
    return finish(ax, show, save, name="scgpt_loss_curve")
