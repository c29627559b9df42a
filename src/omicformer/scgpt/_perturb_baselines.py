"""Simple baselines for perturbation prediction, in the layout of scGPT predictions.

:func:`perturbation_baseline` returns a *prediction* as :mod:`._perturb_eval` describes it and
:func:`~._perturb_eval.evaluate_perturbation` scores it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._core._checks import check_int
from ._conditions import CONTROL, check_distinct, check_genes_known, parse_conditions
from ._genes import gene_names
from ._perturb_data import (
    check_perturbation_data,
    check_unique_genes,
    condition_means,
    ids_to_labels,
    merged_means,
)
from ._perturb_eval import ConditionId, Genes

if TYPE_CHECKING:
    from anndata import AnnData

#: Methods of :func:`perturbation_baseline`.
BASELINES = ("no_change", "mean", "additive", "linear")
#: ``uns`` key of a prediction made by :func:`perturbation_baseline`.
PRED_KEY = "perturbation_prediction"


def perturbation_baseline(
    adata: AnnData,
    perturbations: Sequence[str],
    *,
    method: str = "mean",
    condition_key: str = "condition",
    control: str = CONTROL,
    layer: str | None = None,
    gene_key: str | None = None,
    n_components: int = 10,
    ridge: float = 0.1,
) -> AnnData:
    r"""Predict perturbation effects with a simple baseline, in the layout of scGPT predictions.

    Every cell of ``adata`` is training data: control cells and cells of measured
    perturbations. With ``c`` the control mean and ``m_q`` the mean of the cells of training
    perturbation ``q`` (vectors over genes; a perturbation written in several orders, ``"A+B"``
    and ``"B+A"``, is one perturbation, its cells pooled), the prediction for perturbation
    ``p`` is

    * ``"no_change"``: ``c``;
    * ``"mean"``: ``c + mean_q (m_q - c)`` over all training perturbations, each weighted
      equally whatever its number of cells;
    * ``"additive"``: ``c + sum_g (m_g - c)`` over the genes ``g`` of ``p``, ``m_g`` the mean of
      the measured single perturbation ``"g+ctrl"``; a gene without a measured single adds 0
      (such genes are listed in ``uns``);
    * ``"linear"``: the linear model of Ahlmann-Eltze, Huber & Anders, "Deep-learning-based
      gene perturbation effect prediction does not yet outperform simple linear baselines",
      Nature Methods (2025). With :math:`Y` (genes x training perturbations) the matrix of
      the ``m_q``, :math:`b` its row means, :math:`G` (genes x K) the first K left singular
      vectors of :math:`Y - b` (the gene embedding: the top principal components of the
      genes), and :math:`P` (perturbations x K) the perturbation embedding, row ``q`` the sum
      of the rows of :math:`G` of the genes perturbed in ``q``, the model
      :math:`Y \approx b + G W P^\top` is fitted with the paper's closed form

      .. math:: W = (G^\top G + \lambda I)^{-1} G^\top (Y - b) P (P^\top P + \lambda I)^{-1}

      (:math:`\lambda` = ``ridge``; for :math:`\lambda \to 0` this is the least-squares fit),
      and perturbation ``p`` with embedding row :math:`p` is predicted as :math:`b + G W p`.
      ``K = min(n_components, n_train - 1, n_genes)``. Training perturbations of genes that
      are not measured cannot be embedded and are left out (listed in ``uns``).

    Parameters
    ----------
    adata
        Training cells x genes with GEARS condition strings in ``obs[condition_key]``
        (``control``, ``"GENE+ctrl"``, ``"GENE1+GENE2"``), log-normalised expression in ``X`` or
        ``layer``. May be backed (means are read in chunks).
    perturbations
        Condition strings to predict (a single string is one perturbation). They may be
        measured in ``adata`` too; every perturbed gene must be a gene of ``adata``.
    method
        ``"no_change"``, ``"mean"``, ``"additive"`` or ``"linear"``.
    condition_key
        ``obs`` column with condition strings.
    control
        Label of the control cells.
    layer
        Layer with the expression; ``None`` uses ``X``.
    gene_key
        ``var`` column with gene symbols; ``None`` uses ``var_names``.
    n_components
        K of ``"linear"`` (at most; see above).
    ridge
        :math:`\lambda` of ``"linear"``, ``>= 0``.

    Returns
    -------
    AnnData with one observation per requested perturbation: ``obs_names`` and
    ``obs["condition"]`` the strings as given; ``X`` (float32, dense) the predicted mean
    expression; ``layers["delta"]`` the prediction minus the control mean; ``var`` a copy of
    ``adata.var``; ``uns["perturbation_prediction"]`` with ``method``, ``control``,
    ``condition_key``, ``n_train_conditions`` (training perturbations used), ``params`` (the
    arguments, as :func:`predict_perturbation` records its own) and, for
    ``"additive"``, ``genes_without_single``; for ``"linear"``, ``n_components`` (the K
    used), ``ridge`` and ``unmeasured_train_conditions``. ``adata`` is not modified.

    Raises
    ------
    ValueError
        If ``method`` is unknown, conditions do not parse, ``adata`` has no control cells (or
        invalid values), ``perturbations`` is empty, repeats a string or names the control,
        ``"mean"`` has no training perturbation, ``"linear"`` fewer than 2, or
        ``n_components < 1`` / ``ridge < 0``.
    KeyError
        If ``condition_key``, ``layer`` or ``gene_key`` is missing, or a perturbed gene is not
        a gene of ``adata``.

    Examples
    --------
    >>> pred = perturbation_baseline(train, ["KLF1+CEBPA"], method="linear")  # doctest: +SKIP
    >>> pred.layers["delta"]  # doctest: +SKIP
    """
    import anndata as ad

    if method not in BASELINES:
        msg = f"method={method!r} is not one of {list(BASELINES)}."
        raise ValueError(msg)
    check_int("n_components", n_components)
    real = isinstance(ridge, int | float | np.integer | np.floating) and not isinstance(ridge, bool)
    if not real or not np.isfinite(ridge) or ridge < 0:
        msg = f"ridge={ridge!r} must be a finite number >= 0."
        raise ValueError(msg)
    requested = [perturbations] if isinstance(perturbations, str) else list(perturbations)
    if not requested:
        msg = "perturbations is empty; pass the condition strings to predict."
        raise ValueError(msg)

    var_genes = gene_names(adata, gene_key)
    parsed_train = check_perturbation_data(adata, condition_key, control, layer)
    check_unique_genes(var_genes, gene_key)  # a prediction per gene name
    parsed_req = parse_conditions(requested, control)
    if control in parsed_req:
        msg = f"perturbations contains the control {control!r}; it is not a perturbation."
        raise ValueError(msg)
    check_distinct(requested, [parsed_req[c] for c in requested])  # "A+B" and "B+A" too
    check_genes_known(
        (g for c in requested for g in parsed_req[c]), var_genes, "the genes of adata"
    )
    by_id = ids_to_labels(parsed_train)
    measured = set(var_genes)
    unmeasured = sorted(min(labs) for q, labs in by_id.items() if not q <= measured)
    if method == "mean" and not by_id:
        msg = "method='mean' needs at least 1 training perturbation; adata has control cells only."
        raise ValueError(msg)
    if method == "linear" and len(by_id) - len(unmeasured) < 2:
        msg = (
            f"method='linear' needs at least 2 training perturbations of measured genes; adata "
            f"has {len(by_id) - len(unmeasured)}."
        )
        raise ValueError(msg)

    means = condition_means(adata, condition_key, layer)
    counts = adata.obs[condition_key].astype(str).value_counts()
    ctrl = means.loc[control].to_numpy()
    train = {q: merged_means(means, counts, labs)[0] for q, labs in by_id.items()}
    params = {"method": method, "condition_key": condition_key, "control": control,
              "layer": layer, "gene_key": gene_key, "n_components": n_components,
              "ridge": float(ridge)}  # fmt: skip
    info: dict[str, Any] = {
        "method": method,
        "control": control,
        "condition_key": condition_key,
        "n_train_conditions": len(train),
        "params": params,
    }
    req_genes = [parsed_req[c] for c in requested]

    if method == "no_change":
        X = np.tile(ctrl, (len(requested), 1))
    elif method == "mean":
        shift = np.mean([m - ctrl for m in train.values()], axis=0)
        X = np.tile(ctrl + shift, (len(requested), 1))
    elif method == "additive":
        single = {next(iter(q)): m - ctrl for q, m in train.items() if len(q) == 1}
        zero = np.zeros_like(ctrl)
        X = np.array([ctrl + sum((single.get(g, zero) for g in gs), zero) for gs in req_genes])
        missing = [g for g in dict.fromkeys(g for gs in req_genes for g in gs) if g not in single]
        info["genes_without_single"] = missing
    else:
        usable = {q: m for q, m in train.items() if q <= measured}
        X, k = _linear(usable, req_genes, var_genes, n_components, ridge)
        info.update(
            n_train_conditions=len(train) - len(unmeasured),
            n_components=k,
            ridge=float(ridge),
            unmeasured_train_conditions=unmeasured,
        )

    X = np.asarray(X, dtype=np.float64).reshape(len(requested), adata.n_vars)
    obs = pd.DataFrame({"condition": requested}, index=pd.Index(requested))
    return ad.AnnData(
        X=X.astype(np.float32),
        obs=obs,
        var=adata.var.copy(),
        layers={"delta": (X - ctrl).astype(np.float32)},
        uns={PRED_KEY: info},
    )


def _linear(
    train: Mapping[ConditionId, np.ndarray],
    req_genes: Sequence[Genes],
    var_genes: np.ndarray,
    n_components: int,
    ridge: float,
) -> tuple[np.ndarray, int]:
    """Predictions (n_requested x n_genes) of the linear model, and the K used."""
    first: dict[str, int] = {}
    for i, g in enumerate(var_genes):
        first.setdefault(str(g), i)
    order = sorted(train, key=lambda q: sorted(q))
    Y = np.column_stack([train[q] for q in order])  # genes x perturbations
    b = Y.mean(axis=1, keepdims=True)
    k = int(min(n_components, Y.shape[1] - 1, Y.shape[0]))
    U = np.linalg.svd(Y - b, full_matrices=False)[0]
    G = U[:, :k]

    def embed(genes) -> np.ndarray:
        return G[[first[g] for g in genes]].sum(axis=0)

    P = np.array([embed(sorted(q)) for q in order])  # perturbations x K
    eye = np.eye(k)
    left = np.linalg.pinv(G.T @ G + ridge * eye) @ G.T
    W = left @ (Y - b) @ P @ np.linalg.pinv(P.T @ P + ridge * eye)
    Q = np.array([embed(gs) for gs in req_genes])  # requested x K
    return (b + G @ W @ Q.T).T, k
