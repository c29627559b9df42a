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


def _split_key(key: str, cell_types: Sequence[str]) -> tuple[str, str, str] | None:
    """``(cell type, condition, dose)`` of a GEARS key ``"<cell type>_<condition>_<dose>"``.

    A cell type of ``obs["cell_type"]`` that starts the key is read whole (``"T_cell"``); else
    the cell type is the text before the first ``"_"``. The dose follows the last ``"_"``.
    """
    for cell_type in cell_types:  # longest first
        if key.startswith(cell_type + "_"):
            condition, sep, dose = key[len(cell_type) + 1 :].rpartition("_")
            return (cell_type, condition, dose) if sep and condition else None
    parts = key.split("_")
    return (parts[0], "_".join(parts[1:-1]), parts[-1]) if len(parts) >= 3 else None


def _text(gene: object) -> str:
    return gene.decode() if isinstance(gene, bytes) else str(gene)


def _listed_by_condition(adata_truth: AnnData, control: str) -> dict[frozenset, list[str]]:
    """``{perturbation: listed genes}`` of the keys with the first key's cell type and dose.

    As scGPT's ``find_DE_genes``: the key of a condition is ``"_".join([cell type, condition,
    dose])`` with the cell type and dose of the first key. ``KeyError`` when the keys do not
    read so.
    """
    ranked = adata_truth.uns[GEARS_DE_KEY]
    keys = [_text(k) for k in ranked]
    cell_types: list[str] = []
    if "cell_type" in adata_truth.obs.columns:
        cell_types = sorted(
            map(str, adata_truth.obs["cell_type"].dropna().unique()), key=len, reverse=True
        )
    first = _split_key(keys[0], cell_types) if keys else None
    if first is None:
        msg = (
            f"adata_truth.uns[{GEARS_DE_KEY!r}] keys do not read '<cell type>_<condition>_<dose>' "
            f"(GEARS): {keys[:3]}; pass de_genes='largest_change'."
        )
        raise KeyError(msg)
    out: dict[frozenset, list[str]] = {}
    for key, genes in zip(keys, ranked.values(), strict=True):
        split = _split_key(key, cell_types)
        if split is None or (split[0], split[2]) != (first[0], first[2]):
            continue
        try:
            perturbed = parse_condition(split[1], control)
        except ValueError:
            continue
        out.setdefault(condition_id(perturbed), [_text(g) for g in np.asarray(genes).ravel()])
    return out


def _gene_columns(adata_truth: AnnData, names: list[str]) -> np.ndarray:
    """Columns of listed genes: ``var_names``, else ``var["gene_id"]`` (-1 where neither).

    GEARS lists name the file's index, gene ids; :func:`~omicformer.datasets.read_gears` moves
    them to ``var["gene_id"]`` and names the genes by symbol.
    """
    idx = pd.Index(adata_truth.var_names.astype(str)).get_indexer(names)
    if (idx < 0).any() and "gene_id" in adata_truth.var.columns:
        ids = pd.Series(np.arange(adata_truth.n_vars), index=adata_truth.var["gene_id"].astype(str))
        ids = ids[~ids.index.duplicated()]
        missing = idx < 0
        found = ids.reindex([n for n, m in zip(names, missing, strict=True) if m]).fillna(-1)
        idx[missing] = found.to_numpy(dtype=np.int64)
    return idx.astype(np.int64)


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
    in ``var_names`` as scGPT does (else in ``var["gene_id"]``); else
    :func:`~._perturb_data.top_de_genes`. Under "auto", lists whose keys do not read as GEARS',
    that miss a condition or name genes found in neither (a gene subset) are set aside with a
    warning; under "rank_genes_groups" that is a ``KeyError``.
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
    """The first ``n_de`` genes of GEARS' list of each condition, as column indices."""
    ranked = adata_truth.uns[GEARS_DE_KEY]
    listed = _listed_by_condition(adata_truth, control)
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
        idx = _gene_columns(adata_truth, names[:n_de])
        if (idx < 0).any():
            missing = [n for n, i in zip(names, idx, strict=False) if i < 0]
            msg = (
                f"adata_truth.uns[{GEARS_DE_KEY!r}] lists DE genes of {cond!r} that are neither "
                f"in adata_truth.var_names nor in var['gene_id']: {missing[:5]} (a subset of the "
                "genes?); pass de_genes='largest_change'."
            )
            raise KeyError(msg)
        out.append(idx)
    return out
