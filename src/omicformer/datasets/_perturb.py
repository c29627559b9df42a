"""Perturb-seq data in the GEARS layout: a seeded simulation (readers: ``_perturb_readers``).

No real Perturb-seq data set installs offline, so :func:`perturbseq_simulation` generates a
CRISPRi screen from a known gene regulatory network (the ground truth is stored with the data).
:func:`read_gears` and :func:`read_scperturb` read real screens downloaded by the user (GEARS'
``perturb_processed.h5ad`` folders and scPerturb ``.h5ad`` files) into the same layout:
``obs["condition"]`` holds ``"ctrl"``, ``"GENE+ctrl"`` or ``"GENE1+GENE2"``, ``var_names``
are gene symbols and ``X`` is log-normalised expression.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ._grn import build_grn, design, propagate

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["perturbseq_simulation"]

_SCGPT_DATA = Path(__file__).resolve().parent.parent / "scgpt" / "_data"
# The 4,000 genes drawn from: the vocabulary of the default scGPT v2 (frozen here so the data
# set does not change when the default model is retrained).
_SIM_GENES = Path(__file__).resolve().parent / "data" / "perturbseq_simulation_genes.txt.gz"
_CENSUS_VOCAB = _SCGPT_DATA / "default_census_vocab.json.gz"
_INFO_KEY = "omicformer_dataset"
_GEARS_FILE = "perturb_processed.h5ad"
_CELL_TYPE = "simulated"
_N_DE = 20
_TARGET_SUM = 1e4

# Simulation constants (documented in perturbseq_simulation's docstring).
_OUT_OF_VOCAB_FRACTION = 0.05
_ROOT_SIGMA = 0.6  # log-sd of the cell-specific activity of root regulators
_REGULATOR_NOISE_SIGMA = 0.2  # log-sd of intrinsic noise of every regulator (propagates)
_EFFICIENCY_CELL_SIGMA = 0.25  # log-sd of the cell-to-cell spread of the residual
_BASAL_SIGMA = 2.0  # log-sd of the basal expression of the genes
_DISPERSION_MEDIAN = 8.0  # negative binomial theta (smaller: more overdispersed)
_DISPERSION_SIGMA = 0.5
_LIBRARY_MEDIAN = 2500.0
_LIBRARY_SIGMA = 0.35


# --------------------------------------------------------------------------------------------
# Simulation
# --------------------------------------------------------------------------------------------


def _n_outside(n_genes: int) -> int:
    """Number of the ``n_genes`` simulated genes drawn from outside the fixed gene list."""
    return max(1, round(_OUT_OF_VOCAB_FRACTION * n_genes))


def _pick_symbols(n_genes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Gene symbols (about 5% outside the fixed gene list) and an in-list mask."""
    with gzip.open(_SIM_GENES, "rt", encoding="utf-8") as fh:
        default = sorted(line.strip() for line in fh if line.strip())
    with gzip.open(_CENSUS_VOCAB, "rt", encoding="utf-8") as fh:
        census = json.load(fh)
    n_out = _n_outside(n_genes)
    if n_genes - n_out > len(default):
        largest = len(default)
        while largest + 1 - _n_outside(largest + 1) <= len(default):
            largest += 1
        msg = (
            f"n_genes={n_genes} is too large: the simulation draws 95% of its genes from a fixed "
            f"list of {len(default):,} (the rest outside it), so n_genes can be at most "
            f"{largest:,}."
        )
        raise ValueError(msg)
    known = set(default)
    outside = sorted(
        k for k in census if k not in known and not k.startswith("ENSG") and "." not in k
    )
    symbols = np.concatenate(
        [
            rng.choice(np.asarray(default), n_genes - n_out, replace=False),
            rng.choice(np.asarray(outside), n_out, replace=False),
        ]
    )
    in_vocab = np.arange(n_genes) < n_genes - n_out
    order = rng.permutation(n_genes)
    return symbols[order].astype(str), in_vocab[order]


def _group_means(values: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Mean of the rows of ``values`` per group code."""
    sums = np.zeros((n_groups, values.shape[1]))
    np.add.at(sums, codes, values)
    return sums / np.bincount(codes, minlength=n_groups)[:, None]


def _lognorm(counts: np.ndarray) -> np.ndarray:
    """``log1p(counts / total * 1e4)`` per cell (empty cells stay zero), float64."""
    total = counts.sum(axis=1, keepdims=True)
    scale = np.divide(_TARGET_SUM, total, out=np.zeros_like(total, dtype=float), where=total > 0)
    return np.log1p(counts * scale)


def perturbseq_simulation(
    n_cells: int = 6000,
    n_genes: int = 200,
    n_singles: int = 50,
    n_doubles: int = 50,
    random_state: int = 0,
) -> AnnData:
    """**Simulated** CRISPRi Perturb-seq screen with a known nonlinear gene regulatory network.

    This is not real data: it is a documented, seeded simulation in the layout of GEARS'
    ``perturb_processed.h5ad`` (see :func:`read_gears`), for benchmarks and tests of
    perturbation prediction without network access. The true network is stored with the data.

    Generative model (all draws from ``numpy.random.default_rng(random_state)``):

    * **Genes**: real human symbols, 95% drawn from a fixed list of 4,000 genes (the vocabulary
      of the default scGPT v2, shipped as ``perturbseq_simulation_genes.txt.gz`` so the data
      does not change when the default model is retrained) and 5% from the official census
      vocabulary but *not* in that list (never perturbed), so models meet genes they have no
      token for (more of them with the default v3, whose vocabulary is smaller). Basal expression is log-normal (log-sd 2), so lowly
      expressed genes are mostly zeros.
    * **Network**: a DAG. 20% of the genes are regulators in 3 layers; the first layer
      (roots, 40%) has a cell-specific log-normal activity (log-sd 0.6), so control cells carry
      gene-gene covariance; regulators also get intrinsic noise (log-sd 0.2) that propagates.
      Each other gene has 1-3 regulators from earlier layers, each acting through an
      activating (65%) or repressing Hill function of the regulator's relative level
      (``K`` in 0.35-0.9, ``n`` in {2, 3, 4}). Genes with two regulators combine them with AND
      (product), OR (``1 - (1 - h1)(1 - h2)``) or mean logic, three regulators by the mean; a
      leak of 2-20% keeps every gene expressed. AND / OR gates and Hill saturation make double
      knockdowns non-additive (genetic interactions).
    * **Response program**: 2.5% of the genes (at least 2, never perturbed) respond to any
      knockdown, by a factor ``exp(sign * scale * (0.25 + 2 * impact))`` where ``impact`` is
      the knockdown's mean absolute log-fold change over the network in the noise-free cell
      (70% go up, like stress genes). The mean of other perturbations is thus a useful but
      imperfect predictor.
    * **Perturbations**: ``n_singles`` genes, 80% of them regulators (all regulators when there
      are fewer), the rest non-regulators. CRISPRi multiplies the targeted gene's rate by a
      per-gene residual in 0.05-0.3 (cell-to-cell log-sd 0.25) and the reduced level propagates
      through the network. ``n_doubles`` pairs of single genes: half are pairs expected to
      interact (they feed the same AND / OR gates, or one regulates the other; most links
      first), the rest random pairs.
    * **Cells**: 1/6 controls, the rest spread evenly over the conditions, in random order.
      Counts are negative binomial (gamma-Poisson, gene dispersions ``theta`` log-normal around
      8) around ``size factor x basal x relative level``, with log-normal library sizes (median
      2,500 UMIs for the reference cell, log-sd 0.35); about 35% of the counts are zero, and
      over 70% in a fifth of the genes.

    Parameters
    ----------
    n_cells
        Number of cells (about 1/6 of them controls).
    n_genes
        Number of genes (at least 20, at most 4,211: 95% come from the fixed list of 4,000).
    n_singles
        Number of single-gene perturbations.
    n_doubles
        Number of two-gene perturbations, drawn among pairs of the single genes.
    random_state
        Seed, an integer >= 0: equal arguments give identical data.

    Returns
    -------
    AnnData of ``n_cells`` x ``n_genes`` in the GEARS layout:

    * ``X``: ``log1p(counts / total * 1e4)`` per cell (CSR, float32);
      ``layers["counts"]``: the UMI counts (CSR, float32, integer-valued).
    * ``obs`` (``obs_names`` ``cell0``, ``cell1``, ...): ``condition`` (categorical:
      ``"ctrl"``, ``"GENE+ctrl"``, ``"GENE1+GENE2"``), ``cell_type`` (``"simulated"``),
      ``dose_val`` (``"1"`` for controls, ``"1+1"`` otherwise), ``control`` (1 for controls,
      else 0) and ``condition_name`` (``f"{cell_type}_{condition}_{dose_val}"``).
    * ``var``: index and ``gene_name`` column are the gene symbols.
    * ``uns["rank_genes_groups_cov_all"]``: ``{condition_name: top-20 genes}`` of each
      perturbation, ranked by the absolute change of mean ``X`` against the controls (perturbed
      genes included, as in GEARS).
    * ``uns["omicformer_dataset"]``: the parameters, ``"simulated": True`` and the ground truth:
      ``grn`` (edges as ``regulator`` / ``target`` gene indices with ``sign`` (+1 activating,
      -1 repressing), ``hill_k``, ``hill_n``; per gene ``layer`` (0 roots, 3 non-regulators),
      ``logic``, ``leak``, ``basal``, ``dispersion``, ``in_default_vocab`` (in the fixed
      4,000-gene list above)),
      ``perturbed_genes`` with their ``knockdown_efficiency`` (residual fraction), and
      ``program_genes`` with ``program_sign``.

    Raises
    ------
    ValueError
        For sizes that do not fit: fewer than 20 or more than 4,211 genes, more singles than
        perturbable genes, more doubles than pairs of singles, or fewer perturbed cells than
        conditions; for a ``random_state`` that is not an integer >= 0.

    Notes
    -----
    Simulated data; no licence restrictions and nothing to cite. The layout follows GEARS:
    Y. Roohani, K. Huang, J. Leskovec, "Predicting transcriptional outcomes of novel
    multigene perturbations with GEARS", *Nat. Biotechnol.* 42, 927-935 (2024).

    Examples
    --------
    >>> from omicformer import datasets
    >>> adata = datasets.perturbseq_simulation()
    >>> adata.shape
    (6000, 200)
    >>> adata.obs["condition"].nunique()
    101
    """
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    from .._core._checks import check_int
    from ..scgpt._conditions import CONTROL, condition_name

    for name, value in (("n_cells", n_cells), ("n_genes", n_genes), ("n_singles", n_singles)):
        check_int(name, value)
    check_int("n_doubles", n_doubles, minimum=0)
    check_int("random_state", random_state, minimum=0, hint="the seed of the simulation")
    n_ctrl = round(n_cells / 6)
    n_cond = n_singles + n_doubles
    if n_genes < 20:
        msg = f"n_genes={n_genes} must be >= 20."
        raise ValueError(msg)
    if n_singles < 1 or n_doubles < 0:
        msg = f"n_singles={n_singles} must be >= 1 and n_doubles={n_doubles} >= 0."
        raise ValueError(msg)
    if n_doubles > n_singles * (n_singles - 1) // 2:
        msg = (
            f"n_doubles={n_doubles} exceeds the {n_singles * (n_singles - 1) // 2} pairs of "
            f"n_singles={n_singles} genes."
        )
        raise ValueError(msg)
    if n_cells - n_ctrl < n_cond or n_ctrl < 1:
        msg = (
            f"n_cells={n_cells} is too small: {n_cells - n_ctrl} perturbed cells for {n_cond} "
            "conditions (each needs at least one cell)."
        )
        raise ValueError(msg)

    rng = np.random.default_rng(random_state)
    symbols, in_vocab = _pick_symbols(n_genes, rng)
    grn = build_grn(n_genes, in_vocab, n_singles, rng)
    perts = design(grn, n_singles, n_doubles, rng)
    efficiency = dict(zip(grn["perturbed"].tolist(), grn["efficiency"], strict=True))
    basal = np.exp(_BASAL_SIGMA * rng.standard_normal(n_genes))
    theta = _DISPERSION_MEDIAN * np.exp(_DISPERSION_SIGMA * rng.standard_normal(n_genes))

    # response program strength per condition from the noise-free knockdown impact
    kd_ref = np.ones((n_cond + 1, n_genes))
    for i, genes in enumerate(perts, start=1):
        for g in genes:
            kd_ref[i, g] = efficiency[g]
    ones = np.ones_like(kd_ref)
    ref = propagate(grn, kd_ref, ones, ones)
    network = np.ones(n_genes, dtype=bool)
    network[grn["program"]] = False
    impact = np.zeros(n_cond + 1)
    for i, genes in enumerate(perts, start=1):
        keep = network.copy()
        keep[list(genes)] = False
        impact[i] = np.abs(np.log(ref[i, keep])).mean()
    strength = np.where(np.arange(n_cond + 1) > 0, 0.25 + 2.0 * impact, 0.0)

    # cells: code 0 = control, i = perts[i - 1]
    n_pert = n_cells - n_ctrl
    per_cond = np.full(n_cond, n_pert // n_cond)
    per_cond[rng.permutation(n_cond)[: n_pert % n_cond]] += 1
    codes = rng.permutation(np.repeat(np.arange(n_cond + 1), [n_ctrl, *per_cond]))

    kd = np.ones((n_cells, n_genes))
    for i, genes in enumerate(perts, start=1):
        rows = np.flatnonzero(codes == i)
        for g in genes:
            spread = np.exp(_EFFICIENCY_CELL_SIGMA * rng.standard_normal(rows.size))
            kd[rows, g] = np.clip(efficiency[g] * spread, 0.005, 1.0)
    roots = grn["layer"] == 0
    root = np.ones((n_cells, n_genes))
    root[:, roots] = np.exp(_ROOT_SIGMA * rng.standard_normal((n_cells, int(roots.sum()))))
    noise = np.ones((n_cells, n_genes))
    regs = grn["is_regulator"]
    noise[:, regs] = np.exp(
        _REGULATOR_NOISE_SIGMA * rng.standard_normal((n_cells, int(regs.sum())))
    )
    level = propagate(grn, kd, root, noise)
    prog = grn["program"]
    level[:, prog] *= np.exp(
        strength[codes][:, None] * (grn["program_sign"] * grn["program_scale"])[None, :]
    )

    library = _LIBRARY_MEDIAN * np.exp(_LIBRARY_SIGMA * rng.standard_normal(n_cells))
    mean = (library / basal.sum())[:, None] * basal[None, :] * level
    counts = rng.poisson(rng.gamma(theta[None, :], mean / theta[None, :])).astype(np.float64)
    lognorm = _lognorm(counts)

    # GEARS obs / var / uns
    names = [CONTROL] + [condition_name(tuple(symbols[list(genes)])) for genes in perts]
    condition = np.asarray(names, dtype=object)[codes]
    dose = np.where(codes == 0, "1", "1+1")
    obs = pd.DataFrame(
        {
            "condition": pd.Categorical(condition),
            "cell_type": pd.Categorical(np.full(n_cells, _CELL_TYPE)),
            "dose_val": pd.Categorical(dose),
            "control": (codes == 0).astype(np.int64),
            "condition_name": pd.Categorical(
                [f"{_CELL_TYPE}_{c}_{d}" for c, d in zip(condition, dose, strict=True)]
            ),
        },
        index=pd.Index([f"cell{i}" for i in range(n_cells)]),
    )
    var = pd.DataFrame({"gene_name": symbols}, index=pd.Index(symbols))
    means = _group_means(lognorm, codes, n_cond + 1)
    rank = {}
    for i in range(1, n_cond + 1):
        order = np.argsort(-np.abs(means[i] - means[0]), kind="stable")[:_N_DE]
        rank[f"{_CELL_TYPE}_{names[i]}_1+1"] = symbols[order]

    edges = {
        "regulator": grn["edge_regulator"],
        "target": grn["edge_target"],
        "sign": grn["edge_sign"],
        "hill_k": grn["edge_hill_k"],
        "hill_n": grn["edge_hill_n"],
    }
    info = {
        "name": "perturbseq_simulation",
        "simulated": True,
        "description": (
            "Simulated CRISPRi Perturb-seq screen (not real data): layered nonlinear gene "
            "regulatory network (Hill functions, AND/OR logic), knockdowns propagated through "
            "it, shared response program, negative binomial counts; see the docstring of "
            "omicformer.datasets.perturbseq_simulation."
        ),
        "params": {
            "n_cells": int(n_cells),
            "n_genes": int(n_genes),
            "n_singles": int(n_singles),
            "n_doubles": int(n_doubles),
            "random_state": int(random_state),
        },
        "seed": int(random_state),
        "grn": {
            **edges,
            "layer": grn["layer"],
            "logic": grn["logic"],
            "leak": grn["leak"],
            "basal": basal,
            "dispersion": theta,
            "in_default_vocab": in_vocab,
        },
        "perturbed_genes": symbols[grn["perturbed"]],
        "knockdown_efficiency": grn["efficiency"],
        "program_genes": symbols[prog],
        "program_sign": grn["program_sign"],
    }
    return ad.AnnData(
        X=sp.csr_matrix(lognorm.astype(np.float32)),
        obs=obs,
        var=var,
        layers={"counts": sp.csr_matrix(counts.astype(np.float32))},
        uns={"rank_genes_groups_cov_all": rank, _INFO_KEY: info},
    )
