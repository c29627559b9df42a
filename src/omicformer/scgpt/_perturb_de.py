"""Which genes of a perturbation count as differentially expressed (DE) in its evaluation.

Two rules. GEARS datasets carry each condition's DE genes in
``uns["rank_genes_groups_cov_all"]`` (``{"<cell type>_<condition>_<dose>": genes}``, genes
ranked by GEARS, perturbed genes included); scGPT's ``compute_perturbation_metrics`` and
GEARS' evaluation score the first 20 of that list. Without such a list the genes with the
largest change of the truth mean against the control mean are taken, perturbed genes excluded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ._conditions import condition_id, parse_condition
from ._perturb_data import top_de_genes

if TYPE_CHECKING:
    from anndata import AnnData

#: ``uns`` key of GEARS' per-condition DE gene lists.
GEARS_DE_KEY = "rank_genes_groups_cov_all"
#: Values of ``de_genes=``.
DE_RULES = ("auto", "rank_genes_groups", "largest_change")


def check_de_rule(de_genes: str, adata_truth: AnnData) -> bool:
    """Whether GEARS' lists are read: ``ValueError``/``KeyError`` for a bad ``de_genes``."""
    if de_genes not in DE_RULES:
        msg = f"de_genes={de_genes!r} must be one of {DE_RULES}."
        raise ValueError(msg)
    listed = isinstance(adata_truth.uns.get(GEARS_DE_KEY), Mapping)
    if de_genes == "rank_genes_groups" and not listed:
        msg = (
            f"de_genes='rank_genes_groups' reads adata_truth.uns[{GEARS_DE_KEY!r}] (GEARS' DE "
            "genes per condition), which this AnnData does not have (uns keys: "
            f"{list(adata_truth.uns)[:10]}); pass de_genes='largest_change'."
        )
        raise KeyError(msg)
    return de_genes != "largest_change" and listed


def _listed_by_condition(ranked: Mapping[str, object], control: str) -> dict[frozenset, list]:
    """``{perturbation: listed genes}`` of the keys with the first key's cell type and dose.

    As scGPT's ``find_DE_genes``: the key of a condition is ``"_".join([cell type, condition,
    dose])`` with the cell type and dose of the first key.
    """
    keys = [str(k) for k in ranked]
    first = keys[0].split("_") if keys else []
    if len(first) < 3:
        msg = (
            f"uns[{GEARS_DE_KEY!r}] keys must read '<cell type>_<condition>_<dose>' (GEARS), "
            f"not {keys[:3]}; pass de_genes='largest_change'."
        )
        raise ValueError(msg)
    out: dict[frozenset, list] = {}
    for key, genes in zip(keys, ranked.values(), strict=True):
        parts = key.split("_")
        if len(parts) < 3 or parts[0] != first[0] or parts[-1] != first[-1]:
            continue
        try:
            perturbed = parse_condition("_".join(parts[1:-1]), control)
        except ValueError:
            continue
        out.setdefault(condition_id(perturbed), [str(g) for g in np.asarray(genes).ravel()])
    return out


def de_indices(
    adata_truth: AnnData,
    conditions: Sequence[str],
    perturbed: Sequence[tuple[str, ...]],
    deltas: np.ndarray,
    var_genes: np.ndarray,
    *,
    control: str,
    n_de: int,
    de_genes: str,
) -> list[np.ndarray]:
    """Per condition, the ``adata_truth`` column indices of its DE genes.

    ``deltas`` are the truth means minus the control mean (conditions x genes); ``var_genes``
    the gene symbols that recognise perturbed genes. With GEARS' lists (``de_genes`` "auto"
    where ``uns`` has them, or "rank_genes_groups"), the first ``n_de`` listed genes, looked up
    in ``var_names`` as scGPT does; else :func:`~._perturb_data.top_de_genes`. Under "auto",
    lists that miss a condition or name genes outside ``var_names`` (a gene subset) are set
    aside with a warning; under "rank_genes_groups" that is a ``KeyError``.
    """
    if check_de_rule(de_genes, adata_truth):
        try:
            return _listed_indices(adata_truth, conditions, perturbed, control, n_de)
        except KeyError as err:
            if de_genes == "rank_genes_groups":
                raise
            from .._core._warnings import warn_user

            warn_user(
                f"{err.args[0].split(';')[0]}; the DE genes are the {n_de} that change most "
                "instead (de_genes='largest_change'), for every condition."
            )
    return [
        top_de_genes(delta, var_genes, genes, n_de)
        for delta, genes in zip(deltas, perturbed, strict=True)
    ]


def _listed_indices(
    adata_truth: AnnData,
    conditions: Sequence[str],
    perturbed: Sequence[tuple[str, ...]],
    control: str,
    n_de: int,
) -> list[np.ndarray]:
    """The first ``n_de`` genes of GEARS' list of each condition, as ``var_names`` indices."""
    ranked = adata_truth.uns[GEARS_DE_KEY]
    listed = _listed_by_condition(ranked, control)
    var_names = pd.Index(adata_truth.var_names.astype(str))
    out = []
    for cond, genes in zip(conditions, perturbed, strict=True):
        names = listed.get(condition_id(genes))
        if names is None:
            msg = (
                f"adata_truth.uns[{GEARS_DE_KEY!r}] lists no DE genes for {cond!r} (keys such as "
                f"{list(ranked)[:3]}); pass de_genes='largest_change' to take the genes that "
                "change most instead."
            )
            raise KeyError(msg)
        idx = var_names.get_indexer(names[:n_de])
        if (idx < 0).any():
            missing = [n for n, i in zip(names, idx, strict=False) if i < 0]
            msg = (
                f"adata_truth.uns[{GEARS_DE_KEY!r}] lists DE genes of {cond!r} that are not in "
                f"adata_truth.var_names: {missing[:5]}; pass de_genes='largest_change' for a "
                "subset of the genes."
            )
            raise KeyError(msg)
        out.append(idx.astype(np.int64))
    return out
