"""Perturbation predictions: the scGPT / GEARS metrics (baselines: ``_perturb_baselines``).

A *prediction* is an AnnData with one observation per perturbation: ``obs["condition"]`` and
``obs_names`` hold the GEARS condition string, ``X`` the predicted mean expression after the
perturbation (dense, the scale and ``var_names`` of the measured data) and ``layers["delta"]``
the prediction minus the control mean. :func:`~omicformer.scgpt.tl.perturbation_baseline`
returns that layout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from .._core._checks import check_int
from ._conditions import (
    CONTROL,
    condition_id,
    parse_condition,
    parse_conditions,
)
from ._genes import gene_names
from ._perturb_data import (
    UNS_KEY,
    check_perturbation_data,
    condition_means,
    ids_to_labels,
    merged_means,
)
from ._perturb_de import check_de_rule, de_indices

if TYPE_CHECKING:
    from anndata import AnnData

#: Metric columns of :func:`evaluate_perturbation`, in order.
METRICS = ("pearson", "pearson_delta", "pearson_de", "pearson_de_delta", "mse_de", "direction_de")
#: Values spanning less than this times ``1 + max |expression|`` count as constant (float32 noise).
CONSTANT_RTOL = 1e-6

Genes = tuple[str, ...]
ConditionId = frozenset[str]


# ---------------------------------------------------------------- shared helpers
def pred_conditions(pred: AnnData) -> list[str]:
    """Condition strings of a prediction: ``obs["condition"]``, else ``obs_names``."""
    if "condition" in pred.obs.columns:
        values = pred.obs["condition"]
        if values.isna().any():
            msg = "pred.obs['condition'] has missing values; every prediction needs a condition."
            raise ValueError(msg)
        return [str(v) for v in values]
    return [str(v) for v in pred.obs_names]


def pred_matrix(pred: AnnData, var_names: pd.Index, what: str = "pred") -> np.ndarray:
    """``pred.X`` as float64, columns reordered to ``var_names`` (same set of genes required)."""
    import scipy.sparse as sp

    names = pd.Index(pred.var_names.astype(str))
    if not names.is_unique:
        dup = names[names.duplicated()].unique().tolist()
        msg = f"{what}.var_names are not unique (e.g. {dup[:5]}); make them unique first."
        raise ValueError(msg)
    target = pd.Index(pd.Index(var_names).astype(str))
    if not target.is_unique:
        dup = target[target.duplicated()].unique().tolist()
        msg = f"The truth's var_names are not unique (e.g. {dup[:5]}); make them unique first."
        raise ValueError(msg)
    missing = target.difference(names, sort=False).tolist()
    extra = names.difference(target, sort=False).tolist()
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} gene(s) of the truth missing from {what}: {missing[:8]}")
        if extra:
            parts.append(f"{len(extra)} gene(s) of {what} not in the truth: {extra[:8]}")
        msg = (
            f"{what} and the truth must have the same genes (var_names, any order); "
            f"{'; '.join(parts)}."
        )
        raise KeyError(msg)
    X = pred.X
    if X is None:
        msg = f"{what}.X is empty; it must hold the predicted mean expression."
        raise ValueError(msg)
    X = X.toarray() if sp.issparse(X) else np.asarray(X)
    X = np.asarray(X, dtype=np.float64)
    if not np.all(np.isfinite(X)):
        msg = f"{what}.X contains NaN or infinite values."
        raise ValueError(msg)
    return X[:, names.get_indexer(target)]


def truth_for(
    pred_conds: Sequence[str],
    adata_truth: AnnData,
    condition_key: str,
    control: str,
    layer: str | None,
) -> dict[str, Any]:
    """Match prediction conditions to the truth (order-free) and compute the truth means.

    Returns a dict with ``genes`` (per prediction condition), ``labels`` (the truth condition
    strings of each), ``means`` (n_pred x n_vars truth means), ``n_cells`` and ``ctrl_mean``.
    """
    parsed_truth = check_perturbation_data(adata_truth, condition_key, control, layer)
    parsed_pred = parse_conditions(pred_conds, control)
    if control in parsed_pred:
        msg = (
            f"The prediction has a row for the control {control!r}; only perturbations are "
            "evaluated. Drop that row."
        )
        raise ValueError(msg)
    by_id = ids_to_labels(parsed_truth)
    missing = [c for c in dict.fromkeys(pred_conds) if condition_id(parsed_pred[c]) not in by_id]
    if missing:
        msg = (
            f"{len(missing)} predicted condition(s) not in adata_truth.obs[{condition_key!r}]: "
            f"{missing[:8]}{' ...' if len(missing) > 8 else ''} (matched order-free: 'A+B' is "
            "'B+A'). Evaluate only perturbations measured in the truth."
        )
        raise KeyError(msg)
    labels = [by_id[condition_id(parsed_pred[c])] for c in pred_conds]
    needed = list(dict.fromkeys([control, *(lab for labs in labels for lab in labs)]))
    means = condition_means(adata_truth, condition_key, layer, needed)
    counts = adata_truth.obs[condition_key].astype(str).value_counts()
    merged = [merged_means(means, counts, labs) for labs in labels]
    return {
        "genes": [parsed_pred[c] for c in pred_conds],
        "labels": labels,
        "means": np.array([m for m, _ in merged]).reshape(len(pred_conds), adata_truth.n_vars),
        "n_cells": [n for _, n in merged],
        "ctrl_mean": means.loc[control].to_numpy(),
    }


def _tolerance(*arrays: np.ndarray) -> float:
    scale = max((float(np.abs(a).max()) for a in arrays if a.size), default=0.0)
    return CONSTANT_RTOL * (1.0 + scale)


def _pearson(x: np.ndarray, y: np.ndarray, tol: float) -> float:
    """Pearson correlation; 0.0 when either vector is constant (spread ``<= tol``)."""
    if x.size < 2 or np.ptp(x) <= tol or np.ptp(y) <= tol:
        return 0.0
    xc, yc = x - x.mean(), y - y.mean()
    return float(np.clip(xc @ yc / np.sqrt((xc @ xc) * (yc @ yc)), -1.0, 1.0))


def _sign(v: np.ndarray, tol: float) -> np.ndarray:
    return np.where(np.abs(v) <= tol, 0.0, np.sign(v))


def condition_metrics(
    truth: np.ndarray, pred: np.ndarray, ctrl: np.ndarray, de: np.ndarray
) -> dict[str, float]:
    """The :data:`METRICS` of one perturbation (vectors over genes; ``de``: DE gene indices)."""
    tol = _tolerance(truth, pred, ctrl)
    d_true, d_pred = truth - ctrl, pred - ctrl
    out = {
        "pearson": _pearson(truth, pred, tol),
        "pearson_delta": _pearson(d_true, d_pred, tol),
    }
    if de.size == 0:
        out.update(dict.fromkeys(METRICS[2:], float("nan")))
        return out
    out["pearson_de"] = _pearson(truth[de], pred[de], tol)
    out["pearson_de_delta"] = _pearson(d_true[de], d_pred[de], tol)
    out["mse_de"] = float(np.mean((pred[de] - truth[de]) ** 2))
    out["direction_de"] = float(np.mean(_sign(d_pred[de], tol) == _sign(d_true[de], tol)))
    return out


def _subgroups(adata: AnnData, control: str, key: str = UNS_KEY) -> dict[ConditionId, Any] | None:
    """Order-free ``{perturbation: subgroup}`` from ``uns[key]["conditions"]``."""
    info = adata.uns.get(key)
    table = info.get("conditions") if isinstance(info, Mapping) else None
    if not isinstance(table, pd.DataFrame) or "subgroup" not in table.columns:
        return None
    out: dict[ConditionId, Any] = {}
    for cond, sub in zip(table.index.astype(str), table["subgroup"], strict=True):
        try:
            out.setdefault(condition_id(parse_condition(cond, control)), sub)
        except ValueError:
            continue
    return out


def check_n_de(n_de: int) -> None:
    """``ValueError`` unless ``n_de`` is a positive integer."""
    check_int("n_de", n_de)


# ---------------------------------------------------------------- evaluation
def evaluate_perturbation(
    pred: AnnData,
    adata_truth: AnnData,
    *,
    condition_key: str = "condition",
    control: str = CONTROL,
    n_de: int = 20,
    de_genes: Literal["auto", "rank_genes_groups", "largest_change"] = "auto",
    layer: str | None = None,
    gene_key: str | None = None,
    perturbation_key: str = UNS_KEY,
) -> pd.DataFrame:
    """Score predicted perturbation effects against measured cells (scGPT / GEARS metrics).

    The metrics are those of scGPT's ``compute_perturbation_metrics`` and GEARS' evaluation.
    For each predicted condition, with ``t`` the mean expression of the truth cells of that
    condition, ``c`` the mean of the truth's control cells and ``p`` the predicted mean
    (``pred.X``), all vectors over genes:

    * ``pearson``: Pearson correlation of ``t`` and ``p`` over all genes;
    * ``pearson_delta``: Pearson correlation of ``t - c`` and ``p - c`` over all genes;
    * ``pearson_de``, ``pearson_de_delta``: the same two on the DE genes only;
    * ``mse_de``: mean over the DE genes of ``(p - t) ** 2``;
    * ``direction_de``: fraction of the DE genes where ``sign(p - c) == sign(t - c)``; a
      predicted change of 0 counts as wrong unless the true change is 0 too.

    The DE genes of a condition are, as scGPT and GEARS take them, the first ``n_de`` genes
    of its list in ``adata_truth.uns["rank_genes_groups_cov_all"]`` (GEARS datasets carry it:
    ``{"<cell type>_<condition>_<dose>": genes ranked by GEARS}``, perturbed genes included;
    the cell type and dose of its first key are used, as scGPT's ``find_DE_genes``; the genes
    are found in ``var_names``, else in ``var["gene_id"]``, where
    :func:`~omicformer.datasets.read_gears` keeps the file's gene ids). Data
    without those lists, or ``de_genes="largest_change"``: the ``n_de`` genes with the
    largest ``|t - c|``, the perturbed genes themselves excluded, ties broken by gene order
    (the rule of :func:`~omicformer.scgpt.pp.prepare_perturbation`). The deltas use the
    truth's control mean; ``pred.layers["delta"]`` is not read.

    Conventions: the Pearson correlation with a constant vector (such as the delta of a
    "no change" prediction) is 0.0, as is that of a single gene. A vector whose values span no
    more than ``1e-6 * (1 + m)``, ``m`` the largest absolute expression among ``t``, ``p`` and
    ``c``, counts as constant, and changes that small count as 0 in ``direction_de``, so that
    float32 rounding of a prediction is not mistaken for a signal. Without DE genes (every gene
    perturbed) the ``*_de`` metrics are NaN.

    Parameters
    ----------
    pred
        Prediction, one observation per perturbation: conditions in ``obs["condition"]``
        (else ``obs_names``), predicted mean expression in ``X`` (dense or sparse), on the
        scale of the truth's expression and with the same genes (``var_names``, any order:
        columns are matched by name).
    adata_truth
        Measured cells x genes with ``obs[condition_key]``, control cells included. Predicted
        conditions are matched to its conditions order-free (``"B+A"`` is ``"A+B"``); cells
        of a perturbation written both ways are pooled.
    condition_key
        ``adata_truth.obs`` column with GEARS condition strings.
    control
        Label of the control cells.
    n_de
        Number of DE genes per condition.
    de_genes
        ``"auto"`` (default): GEARS' lists where ``adata_truth.uns`` has them, else the largest
        changes; if the lists cannot be read (keys not as GEARS writes them), miss a predicted
        condition or name genes of neither ``var_names`` nor ``var["gene_id"]`` (a gene
        subset), a warning and the largest changes.
        ``"rank_genes_groups"``: GEARS' lists, an error where they cannot be read.
        ``"largest_change"``: the largest changes, perturbed genes excluded.
    layer
        Layer of ``adata_truth`` with the expression; ``None`` uses ``X``.
    gene_key
        ``adata_truth.var`` column with gene symbols (to recognise the perturbed genes);
        ``None`` uses ``var_names``.
    perturbation_key
        ``adata_truth.uns`` key written by :func:`~omicformer.scgpt.pp.prepare_perturbation`
        (its ``key_added``), read for each condition's ``subgroup``.

    Returns
    -------
    One row per predicted condition (index: the prediction's condition strings) and a last row
    ``"mean"``. Columns: the six metrics above, ``n_cells`` (truth cells of the condition),
    ``n_genes`` (number of perturbed genes) and, when
    ``adata_truth.uns[perturbation_key]["conditions"]`` has a ``subgroup`` column (as written by
    :func:`~omicformer.scgpt.pp.prepare_perturbation`), ``subgroup`` (looked up order-free).
    The ``"mean"`` row holds the mean of each metric over the conditions (NaN ignored);
    ``n_cells``, ``n_genes`` and ``subgroup`` are missing there.

    Raises
    ------
    KeyError
        If ``condition_key``, ``layer`` or ``gene_key`` is missing, if a predicted condition is
        not in the truth, if the prediction's genes differ from the truth's, or (with
        ``de_genes="rank_genes_groups"``) if GEARS' lists are missing or unreadable, miss a
        condition or name genes that are not in the data.
    ValueError
        If conditions do not parse, the truth has no control cells (or invalid values), the
        prediction has a control row, duplicate or non-finite rows, ``n_de < 1`` or
        ``de_genes`` is not one of the three rules.

    Examples
    --------
    >>> pred = perturbation_baseline(train, ["KLF1+CEBPA"], method="additive")  # doctest: +SKIP
    >>> evaluate_perturbation(pred, test)  # doctest: +SKIP
    """
    check_n_de(n_de)
    check_de_rule(de_genes, adata_truth)
    conds = pred_conditions(pred)
    dup = pd.Index(conds)[pd.Index(conds).duplicated()].unique().tolist()
    if dup:
        msg = f"The prediction names condition(s) {dup[:8]} more than once; keep one row each."
        raise ValueError(msg)
    var_genes = gene_names(adata_truth, gene_key)
    P = pred_matrix(pred, adata_truth.var_names)
    truth = truth_for(conds, adata_truth, condition_key, control, layer)
    same: dict[frozenset[str], list[str]] = {}
    for cond, genes in zip(conds, truth["genes"], strict=True):
        same.setdefault(condition_id(genes), []).append(cond)
    dup = [names for names in same.values() if len(names) > 1]
    if dup:  # "A+B" and "B+A" are one perturbation
        msg = (
            f"The prediction names one perturbation more than once: {dup[:5]} (gene order does "
            "not matter); keep one row each."
        )
        raise ValueError(msg)
    ctrl = truth["ctrl_mean"]
    subgroups = _subgroups(adata_truth, control, perturbation_key)

    des = de_indices(adata_truth, conds, truth["genes"], truth["means"] - ctrl, var_genes,
                     control=control, n_de=n_de, de_genes=de_genes)  # fmt: skip
    rows = []
    for i, genes in enumerate(truth["genes"]):
        row: dict[str, Any] = condition_metrics(truth["means"][i], P[i], ctrl, des[i])
        row["n_cells"] = truth["n_cells"][i]
        row["n_genes"] = len(genes)
        if subgroups is not None:
            row["subgroup"] = subgroups.get(condition_id(genes))
        rows.append(row)
    table = pd.DataFrame(rows, index=pd.Index(conds, name="condition"))
    for col in ("n_cells", "n_genes"):
        table[col] = table[col].astype("Int64")
    mean_row = pd.DataFrame([table[list(METRICS)].mean()], index=["mean"])
    return pd.concat([table, mean_row]).rename_axis("condition")
