"""Plots for DNABERT: training curves and prediction probabilities by class or along regions.

All functions return the :class:`matplotlib.axes.Axes` they drew on, or ``None`` when the
figure was shown (``show=True``), as scanpy's plots do.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._core._checks import check_int
from .._core._plotting import finish, new_axes
from ._regions import parse_regions
from ._tools._common import is_anndata, modality, predicted_labels, prob_column, var_regions

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["loss_curve", "prediction_histogram", "region_track"]


def loss_curve(
    model_or_history: Any,
    *,
    stage: str = "mlm",
    smooth: int = 50,
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | os.PathLike[str] | None = None,
) -> Axes | None:
    """Training loss per optimizer step (raw and moving average) with validation loss per epoch.

    A validation loss is drawn at the step where its epoch ended, taking every epoch of the
    stage to be equally long (runs continued with another ``batch_size`` are not).

    Parameters
    ----------
    model_or_history
        A :class:`~omicformer.dnabert.model.DNABert` (its ``history``) or such a dict of
        one-column DataFrames (scvi-tools format) or lists.
    stage
        ``"mlm"`` (pretraining) or ``"finetune"``.
    smooth
        Window (steps) of the moving average.
    ax, show
        Axes to draw on; show the figure (default ``sc.settings.autoshow``).
    save
        Write the figure as scanpy does (``True``: ``figdir/dnabert_loss_curve.pdf``, from
        ``sc.settings``' ``figdir``, ``plot_suffix`` and ``file_format_figs``; a suffix
        such as ``"_run1.pdf"``; or a path; ``None``: ``sc.settings.autosave``).

    Returns
    -------
    The axes, or ``None`` when the figure was shown (as scanpy).

    Examples
    --------
    >>> from omicformer import dnabert
    >>> dnabert.pl.loss_curve(model)  # doctest: +SKIP
    """
    if stage not in ("mlm", "finetune"):
        msg = f"stage={stage!r} must be 'mlm' (pretraining) or 'finetune'."
        raise ValueError(msg)
    history = getattr(model_or_history, "history", model_or_history) or {}
    if not isinstance(history, Mapping):
        msg = (
            f"model_or_history is a {type(model_or_history).__name__}; pass a DNABert or its "
            "history (a dict of losses)."
        )
        raise TypeError(msg)
    step_curve = history.get(f"{stage}_train_loss_step")
    steps = _values(step_curve)
    if steps.size == 0:
        msg = (
            f"No {stage!r} training history to plot (keys: {sorted(history)}); train with "
            f"{'pretrain' if stage == 'mlm' else 'finetune'}(...) first."
        )
        raise ValueError(msg)
    ax = new_axes(ax)
    x = _index(step_curve, start=1)
    ax.plot(x, steps, color="0.75", lw=0.8, label="train (step)")
    w = max(1, min(smooth, steps.size))
    if w > 1:
        avg = np.convolve(steps, np.ones(w) / w, mode="valid")
        ax.plot(x[w - 1 :], avg, color="C0", lw=1.8, label=f"train ({w}-step mean)")
    val_curve = history.get(f"{stage}_validation_loss")
    val = _values(val_curve)
    if val.size:  # at the end of its epoch, every epoch of the stage taken as equally long
        epochs = _index(history.get(f"{stage}_train_loss", val_curve), start=0)
        per_epoch = x[-1] / (epochs[-1] + 1 if epochs.size else val.size)
        at = (_index(val_curve, start=0) + 1) * per_epoch
        ax.plot(at, val, "o-", color="C1", label="validation")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("masked-LM loss" if stage == "mlm" else "cross-entropy loss")
    ax.set_title("DNABERT pretraining" if stage == "mlm" else "DNABERT fine-tuning")
    ax.legend(frameon=False)
    return finish(ax, show, save, name="dnabert_loss_curve")


def _values(curve: Any) -> np.ndarray:
    """Values of one history entry (a one-column DataFrame, or a list)."""
    if curve is None:
        return np.zeros(0)
    return np.asarray(curve.iloc[:, 0] if hasattr(curve, "iloc") else curve, dtype=float)


def _index(curve: Any, start: int) -> np.ndarray:
    """Epochs or steps of one history entry: its index, or ``start, start + 1, ...`` (a list)."""
    if hasattr(curve, "iloc"):
        return np.asarray(curve.index, dtype=float)
    return np.arange(start, start + len(curve), dtype=float)


def _prediction_frame(data: Any, mod: str) -> tuple[pd.DataFrame, Any]:
    """The table of predictions, and the AnnData it belongs to (``None`` for a DataFrame)."""
    if is_anndata(data):
        target = modality(data, mod)
        return target.var, target
    if isinstance(data, pd.DataFrame):
        return data, None
    msg = f"Expected an AnnData/MuData or the DataFrame from tl.predict, not {type(data).__name__}."
    raise TypeError(msg)


def _prob_column(
    frame: pd.DataFrame, key: str, label: str | None, adata: Any = None
) -> tuple[str, str]:
    """Column of the probability of ``label`` (default: the model's last class).

    For AnnData input the classes are those the last ``tl.predict`` call with ``key``
    recorded in ``adata.uns`` (in the model's order); without such a record, or for a
    DataFrame, every ``{key}_prob_*`` column counts.
    """
    prefix = f"{key}_prob_"
    labels = None if adata is None else predicted_labels(adata, key)
    if labels and all(prob_column(key, lab) in frame.columns for lab in labels):
        columns = {lab: prob_column(key, lab) for lab in labels}
    else:  # the names as the columns hold them ('_' for a '/'; '/' in files of before)
        columns = {c[len(prefix) :]: c for c in frame.columns if c.startswith(prefix)}
    available = list(columns)
    if not available:
        msg = f"No '{prefix}*' columns found; run dnabert.tl.predict(..., key_added={key!r}) first."
        raise KeyError(msg)
    label = available[-1] if label is None else str(label)
    if label not in columns:  # the class as named, or as its column writes it
        label = next((lab for lab in available if columns[lab] == prob_column(key, label)), label)
    if label not in columns:
        msg = f"label={label!r} not among the predicted classes {available}."
        raise KeyError(msg)
    return columns[label], label


def prediction_histogram(
    data: Any,
    *,
    key: str = "dnabert",
    label: str | None = None,
    groupby: str | None = None,
    bins: int = 30,
    mod: str = "atac",
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | os.PathLike[str] | None = None,
) -> Axes | None:
    """Histogram of a predicted class probability, optionally split by a (true) class column.

    Parameters
    ----------
    data
        AnnData/MuData after :func:`~omicformer.dnabert.tl.predict`, or its DataFrame output.
    key
        ``key_added`` used in ``tl.predict``.
    label
        Class whose probability is shown (default: the last class, the positive one of a
        binary model).
    groupby
        Column (of ``var`` or the DataFrame) to split the histogram by, e.g. the true class.
    bins, mod, ax
        Histogram bins; MuData modality; axes.
    show, save
        As in :func:`loss_curve` (file name ``dnabert_prediction_histogram``).

    Returns
    -------
    The axes, or ``None`` when the figure was shown.

    Examples
    --------
    >>> dnabert.pl.prediction_histogram(
    ...     atac, label="promoter", groupby="is_promoter"
    ... )  # doctest: +SKIP
    """
    bins = check_int("bins", bins)
    frame, target = _prediction_frame(data, mod)
    column, label = _prob_column(frame, key, label, target)
    if groupby is not None and groupby not in frame.columns:  # before any figure is made
        msg = f"groupby={groupby!r} is not a column (columns: {list(frame.columns)[:20]})."
        raise KeyError(msg)
    ax = new_axes(ax)
    edges = np.linspace(0, 1, bins + 1)
    if groupby is None:
        ax.hist(frame[column].to_numpy(), bins=edges, color="C0")
    else:
        for name, values in frame.groupby(groupby, observed=True)[column]:
            ax.hist(values.to_numpy(), bins=edges, alpha=0.6, label=str(name))
        ax.legend(title=groupby, frameon=False)
    ax.set_xlabel(f"P({label})")
    ax.set_ylabel("count")
    return finish(ax, show, save, name="dnabert_prediction_histogram")


def region_track(
    adata: Any,
    *,
    key: str = "dnabert",
    label: str | None = None,
    chrom: str | None = None,
    region_key: str | None = None,
    mod: str = "atac",
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | os.PathLike[str] | None = None,
) -> Axes | None:
    """Predicted probability of each region drawn along its chromosome (one bar per region).

    Parameters
    ----------
    adata
        AnnData/MuData after :func:`~omicformer.dnabert.tl.predict`.
    key, label
        ``key_added`` of ``tl.predict`` and the class shown (default: last class).
    chrom
        Chromosome to draw (default: the first one among the regions).
    region_key, mod
        Where the regions are (``var`` column; MuData modality).
    ax
        Axes.
    show, save
        As in :func:`loss_curve` (file name ``dnabert_region_track``).

    Returns
    -------
    The axes, or ``None`` when the figure was shown.

    Examples
    --------
    >>> dnabert.pl.region_track(atac, label="promoter", chrom="chr2L")  # doctest: +SKIP
    """
    target = modality(adata, mod)
    column, label = _prob_column(target.var, key, label, target)
    regions = parse_regions(var_regions(target, region_key))
    chroms = [r.chrom for r in regions]
    if not chroms:
        msg = "adata has no regions (0 var) to draw."
        raise ValueError(msg)
    chrom = chroms[0] if chrom is None else chrom
    if chrom not in chroms:
        msg = f"chrom={chrom!r} has no regions (chromosomes: {sorted(set(chroms))[:10]})."
        raise KeyError(msg)
    keep = [i for i, r in enumerate(regions) if r.chrom == chrom]
    probs = target.var[column].to_numpy()[keep]
    starts = np.array([regions[i].start for i in keep])
    ends = np.array([regions[i].end for i in keep])
    ax = new_axes(ax, figsize=(8, 2.5))
    ax.bar(starts, probs, width=ends - starts, align="edge", color="C0", alpha=0.8)
    ax.set_xlim(starts.min(), ends.max())
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"{chrom} position (bp, 0-based)")
    ax.set_ylabel(f"P({label})")
    return finish(ax, show, save, name="dnabert_region_track")
