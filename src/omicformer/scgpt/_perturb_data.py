"""Perturb-seq data in the GEARS convention: validation, control mean, DE genes, GEARS splits."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._core._anndata import (
    check_backed_writable,
    check_layer,
    check_obs_key,
    check_values,
    iter_row_chunks,
)
from .._core._checks import check_int, check_key
from ._conditions import CONTROL, close_symbols, condition_id, parse_conditions
from ._genes import gene_names

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from anndata import AnnData

#: ``uns`` key written by :func:`prepare_perturbation`.
UNS_KEY = "perturbation"
SPLITS = ("simulation", "single", None)
#: Subgroups of the GEARS simulation split (``conditions["subgroup"]``).
SUBGROUPS = ("control", "train", "unseen_single", "combo_seen0", "combo_seen1", "combo_seen2")


#: The advice for negative expression: perturbation models read log-normalised values.
#: Whole-number expression above this reads as raw counts (log1p of 1e4-normalised data: < 10).
COUNTS_ABOVE = 30.0
LOGNORM_HINT = (
    "perturbation prediction expects log-normalised expression (sc.pp.normalize_total, then "
    "sc.pp.log1p), not scaled data. Pass layer= naming the log-normalised layer or use "
    "adata.raw.to_adata()."
)


def check_perturbation_data(
    adata: AnnData, condition_key: str, control: str, layer: str | None
) -> dict[str, tuple[str, ...]]:
    """Validate a Perturb-seq AnnData and return ``{condition: perturbed genes}``.

    Raises ``KeyError`` for a missing ``condition_key``/``layer`` and ``ValueError`` for
    condition strings that do not parse, no control cells, or NaN/negative expression.
    """
    check_obs_key(adata, condition_key, "condition_key")
    check_layer(adata, layer)
    values = adata.obs[condition_key]
    if values.isna().any():
        msg = f"obs[{condition_key!r}] has {int(values.isna().sum())} missing values; every cell needs a condition."
        raise ValueError(msg)
    parsed = parse_conditions(values.astype(str).unique(), control)
    if control not in parsed:
        examples = list(parsed)[:5]
        msg = (
            f"No control cells: no cell has obs[{condition_key!r}] == {control!r} (conditions "
            f"look like {examples}). Pass control= with the label of unperturbed cells."
        )
        raise ValueError(msg)
    where = "the expression" if layer is None else f"layer {layer!r}"
    whole, top = True, 0.0  # raw counts: whole numbers, and far above log1p's range
    for rows, chunk in iter_row_chunks(adata, layer):
        check_values(chunk, where, rows[0], hint=LOGNORM_HINT)
        if chunk.data.size:
            whole = whole and bool(np.all(chunk.data == np.round(chunk.data)))
            top = max(top, float(chunk.data.max()))
    if whole and top > COUNTS_ABOVE:
        from .._core._warnings import warn_caller

        warn_caller(
            f"{where} holds whole numbers up to {top:g}: raw counts, it seems. Perturbation "
            "prediction and its metrics read log-normalised expression (sc.pp.normalize_total, "
            "then sc.pp.log1p; or layer= naming such a layer)."
        )
    return parsed


def check_unique_genes(names: Sequence[str], gene_key: str | None) -> None:
    """Refuse duplicated gene symbols: a perturbed gene and its DE genes must name one column."""
    index = pd.Index(names)
    if index.has_duplicates:
        dup = index[index.duplicated()].unique()[:5].tolist()
        where = "var_names" if gene_key is None else f"var[{gene_key!r}]"
        msg = (
            f"Gene symbols in {where} must be unique (duplicated: {dup}); make them unique "
            "first, e.g. adata.var_names_make_unique()."
        )
        raise ValueError(msg)


def check_measured(
    parsed: dict[str, tuple[str, ...]], var_genes: Any, gene_key: str | None
) -> None:
    """``ValueError`` listing the conditions that perturb a gene not among ``var_genes``."""
    measured = set(var_genes)
    unmeasured = sorted(c for c, gs in parsed.items() if gs and not set(gs) <= measured)
    if unmeasured:
        joined = [c for c in unmeasured
                  if "_" in c and all(set(g.split("_")) <= measured for g in parsed[c])]  # fmt: skip
        hint = (
            f" Conditions such as {joined[:3]} join genes with '_' (scPerturb); here genes are "
            "joined with '+' ('A+B', a single 'A+ctrl'): rename them, or read the file with "
            "omicformer.datasets.read_scperturb, which does."
            if joined
            else ""
        )
        genes = sorted({g for c in unmeasured for g in parsed[c] if g not in measured})
        named = []
        for g in genes[:8]:
            close = close_symbols(g, measured, n=1)
            named.append(f"{g!r}" + (f" (did you mean {str(close[0])!r}?)" if close else ""))
        if CONTROL in genes:  # "GENE+ctrl" read with another control label: 'ctrl' is a gene
            hint += (
                f" {CONTROL!r} is read as a gene here: the control label given (control=) is "
                f"not {CONTROL!r}, while these conditions write their unperturbed half as "
                f"{CONTROL!r}; pass control={CONTROL!r} or relabel them."
            )
        msg = (
            f"{len(unmeasured)} condition(s) perturb genes that are not measured (not in "
            f"{'var_names' if gene_key is None else f'var[{gene_key!r}]'}): {unmeasured[:8]}; "
            f"the genes: {', '.join(named)}{' ...' if len(genes) > 8 else ''}. Subset them out "
            f"(or pass gene_key= naming the symbol column).{hint}"
        )
        raise ValueError(msg)


def condition_means(
    adata: AnnData, condition_key: str, layer: str | None, conditions: list[str] | None = None
) -> pd.DataFrame:
    """Mean expression per condition (rows) and gene (columns ``var_names``), chunked reads."""
    labels = adata.obs[condition_key].astype(str).to_numpy()
    names = sorted(set(labels)) if conditions is None else list(conditions)
    index = {c: i for i, c in enumerate(names)}
    sums = np.zeros((len(names), adata.n_vars))
    counts = np.zeros(len(names))
    for rows, chunk in iter_row_chunks(adata, layer):
        codes = np.array([index.get(c, -1) for c in labels[rows]])
        keep = codes >= 0
        if not keep.any():
            continue
        onehot = sp.csr_matrix(
            (np.ones(int(keep.sum())), (codes[keep], np.flatnonzero(keep))),
            shape=(len(names), len(rows)),
        )
        sums += np.asarray((onehot @ chunk).todense())
        counts += np.bincount(codes[keep], minlength=len(names))
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts[:, None]
    return pd.DataFrame(means, index=names, columns=adata.var_names)


def ids_to_labels(
    parsed: Mapping[str, tuple[str, ...]],
) -> dict[frozenset[str], list[str]]:
    """Order-free perturbations -> the condition strings naming them (control excluded)."""
    by_id: dict[frozenset[str], list[str]] = {}
    for label in sorted(parsed):
        genes = parsed[label]
        if genes:
            by_id.setdefault(condition_id(genes), []).append(label)
    return by_id


def merged_means(
    means: pd.DataFrame, counts: pd.Series, labels: Sequence[str]
) -> tuple[np.ndarray, int]:
    """Cell-weighted mean of the rows ``labels`` of ``means`` (one perturbation, several names)."""
    n = np.array([int(counts[c]) for c in labels], dtype=float)
    rows = means.loc[list(labels)].to_numpy()
    return (n[:, None] * rows).sum(0) / n.sum(), int(n.sum())


def top_de_genes(
    delta: np.ndarray, var_genes: np.ndarray, perturbed: tuple[str, ...], n_de: int
) -> np.ndarray:
    """Indices of the ``n_de`` genes with the largest ``|delta|``, perturbed genes excluded.

    Ties are broken by gene order (stable sort), so the choice is deterministic.
    """
    score = np.abs(np.asarray(delta, dtype=float))
    score = np.where(np.isin(var_genes, list(perturbed)), -np.inf, score)
    order = np.argsort(-score, kind="stable")
    order = order[np.isfinite(score[order])]
    return order[:n_de]


def simulation_split(
    perts: dict[str, tuple[str, ...]],
    train_gene_fraction: float,
    combo_seen2_train_fraction: float,
    rng: np.random.Generator,
) -> tuple[list[str], list[str], dict[str, str]]:
    """GEARS ``simulation`` split of perturbation conditions (no control).

    A ``train_gene_fraction`` of the perturbed genes is drawn as training genes. Singles of
    training genes train, the others test (``unseen_single``); combinations whose genes are
    all training genes (``combo_seen2``) train with probability ``combo_seen2_train_fraction``,
    the others test, as do combinations with 0 or 1 training genes (``combo_seen0``,
    ``combo_seen1``). One perturbation written two ways (``"A+B"``, ``"B+A"``) is split as
    one. Returns ``(train, test, subgroup)``.
    """
    groups: dict[frozenset[str], list[str]] = {}  # "A+B" and "B+A" split together
    for cond in sorted(perts):
        groups.setdefault(condition_id(perts[cond]), []).append(cond)
    genes = sorted({g for gs in perts.values() for g in gs})
    n_train = int(len(genes) * train_gene_fraction)
    train_genes = set(rng.choice(genes, n_train, replace=False).tolist()) if genes else set()
    train_ids, test_ids, subgroup_of = [], [], {}
    seen2 = []
    for key in sorted(groups, key=lambda k: groups[k][0]):
        n_seen = sum(g in train_genes for g in key)
        if len(key) == 1:
            (train_ids if n_seen else test_ids).append(key)
            subgroup_of[key] = "train" if n_seen else "unseen_single"
        elif n_seen == len(key):
            seen2.append(key)
        else:
            test_ids.append(key)
            subgroup_of[key] = f"combo_seen{min(n_seen, 1)}"
    n_seen2_train = int(len(seen2) * combo_seen2_train_fraction)
    picked = {seen2[i] for i in rng.permutation(len(seen2))[:n_seen2_train]}
    for key in seen2:
        (train_ids if key in picked else test_ids).append(key)
        subgroup_of[key] = "train" if key in picked else "combo_seen2"
    train = [c for key in train_ids for c in groups[key]]
    test = [c for key in test_ids for c in groups[key]]
    subgroup = {c: subgroup_of[key] for key in groups for c in groups[key]}
    return train, test, subgroup


def prepare_perturbation(
    adata: AnnData,
    *,
    condition_key: str = "condition",
    control: str = CONTROL,
    layer: str | None = None,
    gene_key: str | None = None,
    n_de: int = 20,
    split: str | None = "simulation",
    train_gene_fraction: float = 0.75,
    combo_seen2_train_fraction: float = 0.75,
    random_state: int = 0,
    key_added: str = UNS_KEY,
    copy: bool = False,
) -> AnnData | None:
    """Validate Perturb-seq data, store the control mean and DE genes, and split by perturbation.

    Data follow the GEARS convention: ``obs[condition_key]`` holds ``control``
    (``"ctrl"``), ``"GENE+ctrl"`` (or ``"GENE"``) or ``"GENE1+GENE2"`` (scPerturb's
    ``"GENE1_GENE2"`` is not split: :func:`omicformer.datasets.read_scperturb` converts it); expression is log-normalised (``X`` or
    ``layer``); gene symbols are ``var_names`` or ``var[gene_key]``.

    Splits follow GEARS' ``prepare_split``: ``"simulation"`` draws ``train_gene_fraction`` of
    the perturbed genes as training genes; singles of the other genes are test perturbations
    never seen in training (``unseen_single``), combinations are test unless both genes are
    training genes (``combo_seen0``/``combo_seen1``), and of those (``combo_seen2``) a
    ``combo_seen2_train_fraction`` trains. The same rule, with fractions 0.9, then moves part
    of the training perturbations to validation. ``"single"`` does the same on single
    perturbations only (combinations are dropped from all sets); ``None`` trains on everything.

    Parameters
    ----------
    adata
        Cells x genes, control and perturbed cells.
    condition_key
        ``obs`` column with condition strings.
    control
        Label of unperturbed cells.
    layer
        Layer with log-normalised expression; ``None`` uses ``X``.
    gene_key
        ``var`` column with gene symbols; ``None`` uses ``var_names``.
    n_de
        Differentially expressed genes stored per condition: the ``n_de`` genes with the largest
        absolute change of mean expression against the control mean, the perturbed genes
        themselves excluded: the rule of the ``*_de`` metrics of
        :func:`~omicformer.scgpt.tl.evaluate_perturbation` with
        ``de_genes="largest_change"``, and with its default ``"auto"`` when the data hold no
        GEARS lists (``uns["rank_genes_groups_cov_all"]``, which ``"auto"`` reads first).
    split
        ``"simulation"``, ``"single"`` or ``None``.
    train_gene_fraction, combo_seen2_train_fraction
        GEARS' ``train_gene_set_size`` and ``combo_seen2_train_frac``.
    random_state
        Seed of the split: equal seeds give equal splits.
    key_added
        ``uns`` key of the results.
    copy
        Return a copy instead of writing to ``adata``. Not for a ``backed`` AnnData (read in
        chunks; ``copy=False`` writes ``obs`` and ``uns`` in memory; a view of one is refused).

    Returns
    -------
    ``None`` (or the copy with ``copy=True``). Writes

    * ``uns[key_added]["params"]``: the arguments above;
    * ``uns[key_added]["control_mean"]``: mean expression of the control cells, per gene;
    * ``uns[key_added]["de_genes"]``: ``{condition: var_names of its top-n_de genes}``, from
      the cells of every spelling of the perturbation (``"A+ctrl"`` and ``"ctrl+A"`` pooled,
      as ``evaluate_perturbation`` pools them);
    * ``uns[key_added]["conditions"]``: DataFrame with one row per condition: ``n_cells``,
      ``genes`` (perturbed genes joined by ``"+"``), ``n_genes``, ``split``
      (``"train"``/``"val"``/``"test"``; controls ``"train"``; ``"excluded"`` for what
      ``split="single"`` drops) and ``subgroup`` (``"control"``, ``"train"``, ``"val"``,
      ``"unseen_single"``, ``"combo_seen0"``, ``"combo_seen1"``, ``"combo_seen2"``);
    * ``obs[key_added + "_split"]``: each cell's split.

    Examples
    --------
    >>> from omicformer import scgpt
    >>> scgpt.pp.prepare_perturbation(adata, condition_key="condition", control="ctrl")
    >>> adata.uns["perturbation"]["conditions"].query("split == 'test'")
    """
    check_key(key_added)
    if split not in SPLITS:
        msg = f"split={split!r} is not one of {SPLITS}."
        raise ValueError(msg)
    n_de = check_int("n_de", n_de, hint="the top genes per condition scored as DE")
    random_state = check_int("random_state", random_state, minimum=0, hint="the split's seed")
    for name, v in (("train_gene_fraction", train_gene_fraction),
                    ("combo_seen2_train_fraction", combo_seen2_train_fraction)):  # fmt: skip
        if not 0 < v <= 1:
            msg = f"{name}={v} must lie in (0, 1]."
            raise ValueError(msg)
    check_backed_writable(adata, copy, "the split")
    var_genes = gene_names(adata, gene_key)
    parsed = check_perturbation_data(adata, condition_key, control, layer)
    check_unique_genes(var_genes, gene_key)
    check_measured(parsed, var_genes, gene_key)
    perts = {c: g for c, g in parsed.items() if g}

    means = condition_means(adata, condition_key, layer)
    control_mean = means.loc[control].to_numpy()
    rng = np.random.default_rng(random_state)
    split_of = {c: "train" for c in perts}
    subgroup = {c: "train" for c in perts}
    if split is not None:
        pool = perts if split == "simulation" else {c: g for c, g in perts.items() if len(g) == 1}
        train, test, subgroup_ = simulation_split(
            pool, train_gene_fraction, combo_seen2_train_fraction, rng
        )
        subgroup.update(subgroup_)
        for c in test:
            split_of[c] = "test"
        _, val, _ = simulation_split({c: pool[c] for c in train}, 0.9, 0.9, rng)
        for c in val:
            split_of[c], subgroup[c] = "val", "val"
        for c in set(perts) - set(pool):
            split_of[c], subgroup[c] = "excluded", "excluded"

    counts = adata.obs[condition_key].astype(str).value_counts()
    rows = [{"condition": control, "n_cells": int(counts[control]), "genes": "", "n_genes": 0,
             "split": "train", "subgroup": "control"}]  # fmt: skip
    de_genes: dict[str, np.ndarray] = {}
    by_id = ids_to_labels(perts)  # spellings of one perturbation pool their cells, as evaluated
    for c in sorted(perts):
        gs = perts[c]
        rows.append({"condition": c, "n_cells": int(counts[c]), "genes": "+".join(gs),
                     "n_genes": len(gs), "split": split_of[c], "subgroup": subgroup[c]})  # fmt: skip
        pooled, _ = merged_means(means, counts, by_id[condition_id(gs)])
        idx = top_de_genes(pooled - control_mean, var_genes, gs, n_de)
        de_genes[c] = np.asarray(adata.var_names[idx], dtype=str)
    table = pd.DataFrame(rows).set_index("condition")

    adata = adata.copy() if copy else adata
    labels = adata.obs[condition_key].astype(str)
    adata.obs[f"{key_added}_split"] = pd.Categorical(
        labels.map(table["split"]).to_numpy(), categories=["train", "val", "test", "excluded"]
    )
    params: dict[str, Any] = {
        "condition_key": condition_key, "control": control, "layer": layer,
        "gene_key": gene_key, "n_de": int(n_de), "split": "none" if split is None else split,
        "train_gene_fraction": float(train_gene_fraction),
        "combo_seen2_train_fraction": float(combo_seen2_train_fraction),
        "random_state": int(random_state),
    }  # fmt: skip
    adata.uns[key_added] = {
        "params": {k: ("none" if v is None else v) for k, v in params.items()},
        "control_mean": control_mean.astype(np.float32),
        "de_genes": de_genes,
        "conditions": table,
    }
    return adata if copy else None
