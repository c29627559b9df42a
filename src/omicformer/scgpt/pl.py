"""scGPT plots."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .._core._plotting import check_save, finish, new_axes
from ._pl_perturbation import perturbation

if TYPE_CHECKING:
    import pandas as pd
    from anndata import AnnData
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["integration", "loss_curve", "perturbation"]

_LOSSES = ("train_loss", "validation_loss", "train_loss_gen", "train_loss_mvc", "train_loss_ecs")


def loss_curve(
    model_or_history: Any,
    *,
    keys: tuple[str, ...] | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | os.PathLike[str] | None = None,
) -> Axes | None:
    """Training and validation losses of an :class:`~omicformer.scgpt.model.ScGPT`, per epoch or step.

    Parameters
    ----------
    model_or_history
        A trained model (its ``history``: dict of one-column DataFrames, as scvi-tools) or such
        a dict, or a dict of lists. A DataFrame's values are drawn at the epochs (or steps) of
        its index, epochs counted from 0 there (as scvi-tools and Lightning count them) and
        from 1 on the axis, so a loss recorded on some epochs only (validation every few
        epochs) lines up with the others; a list holds one value per epoch.
    keys
        Which losses to draw; default: every one of ``train_loss``, ``validation_loss`` and the
        objective parts (``train_loss_gen``, ``train_loss_mvc``, ``train_loss_ecs``) present.
        ``("train_loss_step",)`` draws the loss of every optimiser step against the step.
    ax
        Axes to draw on (a new figure otherwise).
    show
        Show the figure (default ``sc.settings.autoshow``, as scanpy).
    save
        Write the figure as scanpy does (``True``: ``figdir/scgpt_loss_curve.pdf``, from
        ``sc.settings``' ``figdir``, ``plot_suffix`` and ``file_format_figs``; a suffix
        such as ``"_run1.pdf"``; or a path; ``None``: ``sc.settings.autosave``).

    Returns
    -------
    The axes, or ``None`` when the figure was shown (as scanpy).

    Examples
    --------
    >>> from omicformer import scgpt
    >>> model.train(max_epochs=20)  # doctest: +SKIP
    >>> scgpt.pl.loss_curve(model)  # doctest: +SKIP
    """
    if hasattr(model_or_history, "members") and not hasattr(model_or_history, "history"):
        msg = (
            f"A {type(model_or_history).__name__} holds one training history per member: plot "
            "one, e.g. scgpt.pl.loss_curve(ensemble.members[0])."
        )
        raise ValueError(msg)
    history = getattr(model_or_history, "history", model_or_history)
    history = history or {}
    if not isinstance(history, Mapping):
        msg = (
            f"model_or_history is a {type(model_or_history).__name__}; pass a trained model "
            "or its history (a dict of losses)."
        )
        raise TypeError(msg)
    keys = (keys,) if isinstance(keys, str) else keys  # one curve, named alone
    keys = keys or tuple(k for k in _LOSSES if k in history)
    if not keys:
        msg = f"No loss history to plot (keys: {sorted(history)}); train the model first."
        raise ValueError(msg)
    missing = [key for key in keys if key not in history]
    if missing:  # before any figure is made, or any curve drawn into ax
        msg = f"{missing[0]!r} is not in the history (available: {sorted(history)})."
        raise KeyError(msg)
    ax = new_axes(ax, figsize=(5, 3.2))
    for key in keys:
        values = history[key]
        y = np.asarray(
            values.iloc[:, 0] if getattr(values, "ndim", 1) == 2 else values, dtype=float
        )
        x = np.arange(1, y.size + 1)  # a list: one value per epoch, counted from 1
        if hasattr(values, "iloc"):  # as recorded: optimiser steps, or epochs counted from 0
            x = np.asarray(values.index, dtype=float) + (0 if key.endswith("_step") else 1)
        ax.plot(x, y, marker="o" if y.size < 30 else None, ms=3, label=key)
    ax.set_xlabel("step" if all(k.endswith("_step") for k in keys) else "epoch")
    ax.set_ylabel("loss")
    # the model's class names what was trained (ScGPT: pretraining; a classifier: fine-tuning)
    title = type(model_or_history).__name__ if hasattr(model_or_history, "history") else "scGPT"
    ax.set_title(f"{title} training")
    ax.legend(frameon=False, fontsize=8)
    return finish(ax, show, save, name="scgpt_loss_curve")


def integration(
    adata: AnnData,
    *,
    batch_key: str,
    color: str | Sequence[str] | None = None,
    basis_before: str | None = None,
    basis_after: str = "X_scgpt_integrated",
    n_neighbors: int = 15,
    random_state: int = 0,
    size: float | None = None,
    show: bool | None = None,
    save: bool | str | os.PathLike[str] | None = None,
) -> Figure | None:
    """UMAPs of cells before and after batch integration, side by side.

    One row per colour key (``batch_key`` first, then each of ``color``), two columns: the
    UMAP of ``basis_before`` and that of ``basis_after``. Each panel is drawn by
    :func:`scanpy.pl.embedding`, so palettes and legends are scanpy's; a categorical key keeps
    the same colours in both columns (``adata.uns[f"{key}_colors"]`` when present).

    The UMAPs are computed on a lightweight copy (:func:`scanpy.pp.neighbors` with
    ``use_rep=basis``, then :func:`scanpy.tl.umap`); ``adata`` is never modified. A UMAP
    already stored as ``adata.obsm[f"X_umap_{basis}"]`` (for example
    ``"X_umap_X_scgpt_integrated"``) is used instead of being computed; this function never
    writes that key, store it yourself to reuse a layout.

    Parameters
    ----------
    adata
        Cells, with ``obsm[basis_after]`` (as written by
        :func:`omicformer.scgpt.tl.integrate`) and ``obs[batch_key]``.
    batch_key
        Column of ``adata.obs`` with the batches (the first row).
    color
        Further keys to colour by, one row each: columns of ``adata.obs`` or genes
        (``adata.var_names``, or ``adata.raw.var_names``, as scanpy). Columns of numbers are
        drawn on a colour scale, others as groups: ``bool`` columns and columns of mixed types
        (``"a"`` and ``1``: as their texts) too, in the figure only (``adata.obs`` is not
        changed).
    basis_before
        Representation before integration, a key of ``adata.obsm``. Default: ``"X_scgpt"`` if
        present, else ``"X_pca"`` if present, else a PCA of ``adata.X`` as it is (computed
        without writing into ``adata`` or copying ``X``; a backed ``X`` is read into memory;
        ``min(50, n_vars - 1, n_obs - 1)`` components).
    basis_after
        Representation after integration, a key of ``adata.obsm``.
    n_neighbors
        Neighbours of the kNN graph behind each UMAP (at most ``n_obs - 1``).
    random_state
        Seed of the neighbours graph and of UMAP.
    size
        Point size (default scanpy's, ``120000 / n_obs``).
    show
        Show the figure (default ``sc.settings.autoshow``, as scanpy).
    save
        Write the figure as scanpy does (``True``: ``figdir/scgpt_integration.pdf``, from
        ``sc.settings``' ``figdir``, ``plot_suffix`` and ``file_format_figs``; a suffix
        such as ``"_run1.pdf"``; or a path; ``None``: ``sc.settings.autosave``).

    Returns
    -------
    The figure, or ``None`` when it was shown (as scanpy).

    Raises
    ------
    KeyError
        If ``batch_key`` or a ``color`` key is neither a column of ``adata.obs`` nor (for
        ``color``) a gene, or if a basis is not in ``adata.obsm``.
    ValueError
        If ``adata`` has fewer than 4 cells (UMAP's spectral start needs them), or, for the
        PCA of ``X``, fewer than 2 genes; if a gene in ``color`` is not unique in
        ``var_names``; if a basis to compute a UMAP of holds NaN or infinite values, or a
        stored ``X_umap_<basis>`` has fewer than 2 columns.

    Examples
    --------
    >>> from omicformer import scgpt
    >>> scgpt.tl.integrate(adata, batch_key="batch")  # doctest: +SKIP
    >>> scgpt.pl.integration(adata, batch_key="batch", color="cell_type")  # doctest: +SKIP
    """
    import anndata as ad
    import matplotlib.pyplot as plt
    import pandas as pd
    import scanpy as sc

    keys = _integration_keys(adata, batch_key, color)
    check_save(save, "scgpt_integration")  # before the UMAPs are computed
    if adata.n_obs < 4:
        msg = f"At least 4 cells are needed for a UMAP; got {adata.n_obs}."
        raise ValueError(msg)
    _check_basis(adata, basis_after, "basis_after")
    if basis_before is None:
        basis_before = next((b for b in ("X_scgpt", "X_pca") if b in adata.obsm), None)
    else:
        _check_basis(adata, basis_before, "basis_before")

    for what, basis in (("basis_before", basis_before), ("basis_after", basis_after)):
        if basis is None:
            continue
        stored = adata.obsm.get(f"X_umap_{basis}")
        if stored is None:  # to be computed
            _check_finite(adata, basis, what)
        elif np.ndim(stored) != 2 or np.shape(stored)[1] < 2:
            msg = (
                f"adata.obsm['X_umap_{basis}'] (the stored layout of {what}) has shape "
                f"{np.shape(stored)}; a layout needs 2 columns. Delete it to compute the UMAP "
                "anew."
            )
            raise ValueError(msg)

    n_neighbors = max(2, min(n_neighbors, adata.n_obs - 1))
    umaps = {}
    for col, basis in (("before", basis_before), ("after", basis_after)):
        if basis is None:
            umaps[col] = _umap(_pca_of_x(adata), "X_pca", n_neighbors, random_state)
        elif f"X_umap_{basis}" in adata.obsm:
            umaps[col] = np.asarray(adata.obsm[f"X_umap_{basis}"], dtype=float)[:, :2]
        else:
            umaps[col] = _umap(adata, basis, n_neighbors, random_state)
    labels = {"before": basis_before or "PCA of X", "after": basis_after}
    # a gene is read from raw only where raw has it (scanpy's default would look there first)
    raw_genes = set() if adata.raw is None else set(adata.raw.var_names)
    use_raw = {k: None if k in adata.obs.columns else k in raw_genes for k in keys}

    # One plotting AnnData for both columns: scanpy sets a missing palette on the first
    # panel, and the second reuses it. It shares (never copies) X and raw.X, for gene keys.
    obs_keys = [k for k in dict.fromkeys(keys) if k in adata.obs.columns]
    genes = any(k not in adata.obs.columns for k in keys)
    view = ad.AnnData(
        X=adata.X if genes else None,
        obs=_categorical_columns(adata.obs[obs_keys].copy(), batch_key),
        var=pd.DataFrame(index=adata.var_names.copy()),
        uns={
            f"{k}_colors": list(adata.uns[f"{k}_colors"])
            for k in obs_keys
            if f"{k}_colors" in adata.uns
        },
        obsm={f"X_umap_{col}": xy for col, xy in umaps.items()},
        raw=(
            {"X": adata.raw.X, "var": pd.DataFrame(index=adata.raw.var_names.copy())}
            if genes and adata.raw is not None
            else None
        ),
    )

    fig, axes = plt.subplots(
        len(keys), 2, figsize=(2 * 5.0, 4.2 * len(keys)), squeeze=False, layout="constrained"
    )
    for row, key in enumerate(keys):
        for j, col in enumerate(("before", "after")):
            ax = axes[row, j]
            sc.pl.embedding(view, basis=f"X_umap_{col}", color=key, ax=ax, show=False, size=size,
                            use_raw=use_raw[key])  # fmt: skip
            head = f"{col} ({labels[col]})\n" if row == 0 else ""
            ax.set_title(f"{head}{key}")
            ax.set_xlabel("UMAP1")
            ax.set_ylabel("UMAP2")
    return finish(fig, show, save, name="scgpt_integration")


def _integration_keys(
    adata: AnnData, batch_key: str, color: str | Sequence[str] | None
) -> list[str]:
    """``[batch_key, *color]``, each checked against ``adata.obs`` (and the genes, for ``color``)."""
    color = [] if color is None else [color] if isinstance(color, str) else list(color)
    columns = list(adata.obs.columns)
    if batch_key not in adata.obs.columns:
        msg = f"batch_key {batch_key!r} is not a column of adata.obs (available: {columns})."
        raise KeyError(msg)
    genes = set(adata.var_names)
    if adata.raw is not None:
        genes |= set(adata.raw.var_names)
    for key in color:
        if key not in adata.obs.columns and key not in genes:
            msg = (
                f"color {key!r} is neither a column of adata.obs (available: {columns}) "
                "nor a gene in adata.var_names."
            )
            raise KeyError(msg)
        raw = adata.raw is not None and key in adata.raw.var_names  # scanpy reads raw first
        names, where = (
            (adata.raw.var_names, "raw.var_names") if raw else (adata.var_names, "var_names")
        )
        if key not in adata.obs.columns and (n := int((names == key).sum())) > 1:
            msg = (
                f"color {key!r} names {n} genes of adata.{where}; make the names unique "
                "(var_names_make_unique()) to draw one."
            )
            raise ValueError(msg)
    return [batch_key, *color]


def _categorical_columns(obs: pd.DataFrame, batch_key: str) -> pd.DataFrame:
    """``obs`` with the batch column categorical (batches numbered 0, 1, ... are not a scale).

    So are the other columns of ``bool`` (pandas' nullable ``boolean`` with ``pd.NA`` failed
    inside scanpy) and of mixed types (``"a"`` and ``1``), whose values become their texts; a
    missing value stays missing (grey, as scanpy draws NaN). Numbers stay numbers.
    """
    import pandas as pd

    for key in obs.columns:
        column = obs[key]
        if isinstance(column.dtype, pd.CategoricalDtype):
            continue
        kind = pd.api.types.infer_dtype(column, skipna=True)
        if kind in ("mixed", "mixed-integer"):  # "a" and 1 cannot be sorted: their texts
            present = column.notna().to_numpy()
            texts = np.full(len(column), None, dtype=object)
            texts[present] = column[present].astype(str).to_numpy()
            obs[key] = pd.Categorical(texts)
        elif key == batch_key or kind == "boolean":  # numbers of a colour column: a scale
            obs[key] = pd.Categorical(column)
    return obs


def _check_basis(adata: AnnData, basis: str, what: str) -> None:
    if basis not in adata.obsm:
        hint = " (run scgpt.tl.integrate first)" if what == "basis_after" else ""
        msg = (
            f"{what} {basis!r} is not in adata.obsm{hint}; "
            f"available keys: {sorted(adata.obsm.keys())}."
        )
        raise KeyError(msg)


def _dense_basis(adata: AnnData, basis: str) -> np.ndarray:
    """``adata.obsm[basis]`` as a dense array (a scipy sparse matrix or a data frame too)."""
    import scipy.sparse as sp

    rep = adata.obsm[basis]
    return rep.toarray() if sp.issparse(rep) else np.asarray(rep)


def _check_finite(adata: AnnData, basis: str, what: str) -> None:
    """``ValueError`` naming the cells of ``obsm[basis]`` with NaN or infinite values."""
    rep = _dense_basis(adata, basis)
    bad = ~np.isfinite(rep.reshape(rep.shape[0], -1)).all(axis=1)
    if bad.any():
        msg = (
            f"{what} {basis!r}: adata.obsm[{basis!r}] holds NaN or infinite values in "
            f"{int(bad.sum())} cells (first: {list(adata.obs_names[bad][:5])}); a UMAP needs "
            "finite values. Drop those cells or recompute the representation."
        )
        raise ValueError(msg)


def _pca_of_x(adata: AnnData) -> AnnData:
    """An AnnData holding only ``obsm["X_pca"]``: the PCA of ``adata.X`` as it is."""
    import anndata as ad
    import pandas as pd
    import scanpy as sc

    n_comps = min(50, adata.n_vars - 1, adata.n_obs - 1)
    if n_comps < 1:
        msg = f"Cannot compute a PCA of X with {adata.n_vars} genes; pass basis_before."
        raise ValueError(msg)
    if adata.isbacked:  # read in chunks: a backed X has no copy()
        import scipy.sparse as sp

        from .._core._anndata import iter_row_chunks

        X = sp.vstack([chunk for _, chunk in iter_row_chunks(adata)], format="csr")
    else:  # scanpy's PCA of a matrix leaves it as it is: no copy of X
        X = adata.X
    obs = pd.DataFrame(index=pd.RangeIndex(adata.n_obs).astype(str))
    return ad.AnnData(obs=obs, obsm={"X_pca": sc.pp.pca(X, n_comps=n_comps)})


def _umap(adata: AnnData, basis: str, n_neighbors: int, random_state: int) -> np.ndarray:
    """2-d UMAP coordinates of ``adata.obsm[basis]``, computed on a copy."""
    import anndata as ad
    import pandas as pd
    import scanpy as sc
    import torch

    tmp = ad.AnnData(
        obs=pd.DataFrame(index=adata.obs_names.copy()),
        obsm={basis: _dense_basis(adata, basis)},
    )
    # numba starting its OpenMP threads (the first neighbours / UMAP of the process) resets
    # torch's thread count to the cores': the user's torch.set_num_threads comes back
    threads = torch.get_num_threads()
    try:
        sc.pp.neighbors(tmp, use_rep=basis, n_neighbors=n_neighbors, random_state=random_state)
        sc.tl.umap(tmp, random_state=random_state)
    finally:
        torch.set_num_threads(threads)
    return np.asarray(tmp.obsm["X_umap"], dtype=float)
