"""``scgpt.pl.perturbation``: predicted against measured changes per condition."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

from .._core._checks import check_int
from .._core._plotting import finish
from .._core._warnings import warn_caller

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.figure import Figure


#: Panels drawn by :func:`perturbation` when ``conditions`` is not given.
MAX_PERTURBATION_PANELS = 8


def perturbation(
    pred: AnnData | Mapping[str, AnnData],
    adata_truth: AnnData,
    conditions: str | Sequence[str] | None = None,
    *,
    condition_key: str = "condition",
    control: str = "ctrl",
    n_de: int = 20,
    de_genes: Literal["auto", "rank_genes_groups", "largest_change"] = "auto",
    layer: str | None = None,
    gene_key: str | None = None,
    ncols: int = 2,
    show: bool | None = None,
    save: bool | str | os.PathLike[str] | None = None,
) -> Figure | None:
    """Predicted against observed change of the DE genes of each perturbation (GEARS style).

    One panel per condition. Along x, the condition's DE genes (the genes of the ``*_de``
    metrics of :func:`~omicformer.scgpt.tl.evaluate_perturbation`: GEARS' list in
    ``adata_truth.uns["rank_genes_groups_cov_all"]`` where the data has it, else the ``n_de``
    genes with the largest absolute change of the truth mean against the truth's control
    mean, perturbed genes excluded); for each, a boxplot of the observed
    change of every truth cell of the condition (cell minus control mean, outliers not drawn)
    and one marker per prediction at its predicted change (predicted mean minus the truth's
    control mean), a dashed line at 0. The title gives the condition and the
    ``pearson_de_delta`` of the first prediction.

    Parameters
    ----------
    pred
        A prediction (one observation per perturbation, ``obs["condition"]``, predicted mean
        expression in ``X``, as returned by
        :func:`~omicformer.scgpt.tl.perturbation_baseline`), or a dict ``{label: prediction}``
        to compare several methods (one marker colour each, in the dict's order).
    adata_truth
        Measured cells with ``obs[condition_key]``, control cells included, and the genes of
        the predictions.
    conditions
        Conditions to draw, matched order-free (``"B+A"`` is ``"A+B"``) to the predictions and
        the truth. Default: the first 8 conditions of the (first) prediction, in its order (a
        warning says when more were left out).
    condition_key
        ``adata_truth.obs`` column with GEARS condition strings.
    control
        Label of the control cells.
    n_de
        DE genes per panel.
    de_genes
        How they are chosen, as in :func:`~omicformer.scgpt.tl.evaluate_perturbation`.
    layer
        Layer of ``adata_truth`` with the expression; ``None`` uses ``X``.
    gene_key
        ``adata_truth.var`` column with gene symbols (tick labels, and to recognise the
        perturbed genes); ``None`` uses ``var_names``.
    ncols
        Panels per row.
    show
        Show the figure (default ``sc.settings.autoshow``, as scanpy).
    save
        Write the figure as scanpy does (``True``: ``figdir/perturbation.pdf``, from
        ``sc.settings``' ``figdir``, ``plot_suffix`` and ``file_format_figs``; a suffix
        such as ``"_norman.pdf"``; or a path; ``None``: ``sc.settings.autosave``).

    Returns
    -------
    The figure, or ``None`` when it was shown (as scanpy).

    Raises
    ------
    KeyError
        If a condition is missing from a prediction or from the truth, a prediction's genes
        differ from the truth's, or ``condition_key``/``layer``/``gene_key`` is missing.
    ValueError
        If ``pred`` is an empty dict, ``conditions`` is empty or names the control, conditions
        do not parse, the truth has no control cells, ``n_de``/``ncols`` is below 1, or
        ``de_genes`` is not one of its three rules.

    Examples
    --------
    >>> from omicformer import scgpt
    >>> preds = {
    ...     m: scgpt.tl.perturbation_baseline(train, ["KLF1+CEBPA"], method=m)
    ...     for m in ("additive", "linear")
    ... }  # doctest: +SKIP
    >>> scgpt.pl.perturbation(preds, test)  # doctest: +SKIP
    """
    import anndata as ad
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from .._core._anndata import get_matrix, to_csr
    from ._conditions import condition_id, parse_conditions
    from ._genes import gene_names
    from ._perturb_de import check_de_rule, de_indices
    from ._perturb_eval import (
        check_n_de,
        condition_metrics,
        pred_conditions,
        pred_matrix,
        truth_for,
    )

    preds = {"prediction": pred} if isinstance(pred, ad.AnnData) else dict(pred)
    if not preds:
        msg = "pred is an empty dict; pass a prediction or {label: prediction}."
        raise ValueError(msg)
    check_n_de(n_de)
    check_de_rule(de_genes, adata_truth)
    check_int("ncols", ncols)
    labels = list(preds)
    pred_conds = {label: pred_conditions(p) for label, p in preds.items()}
    if conditions is None:
        conditions = pred_conds[labels[0]][:MAX_PERTURBATION_PANELS]
        n_all = len(pred_conds[labels[0]])
        if n_all > MAX_PERTURBATION_PANELS:
            warn_caller(
                f"Drawing the first {MAX_PERTURBATION_PANELS} of {n_all} conditions; pass "
                "conditions= to choose."
            )
    else:
        conditions = [conditions] if isinstance(conditions, str) else list(conditions)
    if not conditions:
        msg = "No condition to draw (conditions is empty)."
        raise ValueError(msg)
    wanted = parse_conditions(conditions, control)
    named = [c for c in conditions if not wanted[c]]
    if named:
        msg = (
            f"conditions names the control {named[:3]}: each panel compares a perturbation's "
            "predicted change with the truth's, and the control is what both are measured from."
        )
        raise ValueError(msg)
    rows_of: dict[str, list[int]] = {}
    for label, conds in pred_conds.items():
        parsed = parse_conditions(conds, control)
        index: dict[frozenset[str], int] = {}
        for row, c in enumerate(conds):
            index.setdefault(condition_id(parsed[c]), row)
        absent = [c for c in conditions if condition_id(wanted[c]) not in index]
        if absent:
            msg = f"Condition(s) {absent[:8]} not in the prediction {label!r} (matched order-free)."
            raise KeyError(msg)
        rows_of[label] = [index[condition_id(wanted[c])] for c in conditions]

    var_genes = gene_names(adata_truth, gene_key)
    matrices = {}
    for label, p in preds.items():
        what = "pred" if len(preds) == 1 else f"pred[{label!r}]"
        matrices[label] = pred_matrix(p, adata_truth.var_names, what=what)[rows_of[label]]
    truth = truth_for(conditions, adata_truth, condition_key, control, layer)
    ctrl = truth["ctrl_mean"]
    des = de_indices(adata_truth, conditions, truth["genes"], truth["means"] - ctrl, var_genes,
                     control=control, n_de=n_de, de_genes=de_genes)  # fmt: skip
    cell_labels = adata_truth.obs[condition_key].astype(str).to_numpy()

    n = len(conditions)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    width = max(3.5, 0.32 * n_de + 1.2)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(width * ncols, 3.6 * nrows), squeeze=False, layout="constrained"
    )
    markers = ("o", "D", "s", "^", "v", "P", "X", "*")
    for i, cond in enumerate(conditions):
        ax = axes[i // ncols, i % ncols]
        t = truth["means"][i]
        de = des[i]
        cells = np.flatnonzero(np.isin(cell_labels, truth["labels"][i]))
        observed = to_csr(get_matrix(adata_truth[cells], layer))[:, de].toarray() - ctrl[de]
        x = np.arange(de.size)
        if de.size:
            ax.boxplot(
                [observed[:, j] for j in range(de.size)],
                positions=x,
                widths=0.6,
                showfliers=False,
                manage_ticks=False,
                patch_artist=True,
                boxprops={"facecolor": "0.85", "edgecolor": "0.4"},
                medianprops={"color": "0.2"},
                whiskerprops={"color": "0.4"},
                capprops={"color": "0.4"},
            )
        for j, label in enumerate(labels):
            ax.scatter(
                x,
                matrices[label][i, de] - ctrl[de],
                color=f"C{j}",
                marker=markers[j % len(markers)],
                s=28,
                zorder=3,
                label=label,
            )
        ax.axhline(0.0, color="0.3", linestyle="--", linewidth=0.8, zorder=0)
        ax.set_xticks(x)
        ax.set_xticklabels(var_genes[de], rotation=90, fontsize=8)
        ax.set_xlim(-0.7, max(de.size, 1) - 0.3)
        r = condition_metrics(t, matrices[labels[0]][i], ctrl, de)["pearson_de_delta"]
        which = f" ({labels[0]})" if len(labels) > 1 else ""
        ax.set_title(f"{cond}\npearson_de_delta{which} = {r:.3f}", fontsize=10)
        if i % ncols == 0:
            ax.set_ylabel("change vs control")
        if i == 0:
            handles = [Patch(facecolor="0.85", edgecolor="0.4", label="observed (cells)")]
            handles += ax.get_legend_handles_labels()[0]
            ax.legend(handles=handles, frameon=False, fontsize=8)
    for k in range(n, nrows * ncols):
        axes[k // ncols, k % ncols].remove()
    return finish(fig, show, save, name="perturbation")
