"""The gene regulatory network behind :func:`omicformer.datasets.perturbseq_simulation`.

A layered DAG of regulators (Hill functions combined with AND/OR logic), the perturbations of a
CRISPRi screen drawn on it, and the propagation of knock-downs through it; the docstring of
``perturbseq_simulation`` describes the model and these constants.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_REGULATOR_FRACTION = 0.2
_LAYER_FRACTIONS = (0.4, 0.35, 0.25)  # roots, layer 1, layer 2 of the regulators
_PERTURBED_REGULATOR_FRACTION = 0.8
_PROGRAM_FRACTION = 0.025
_EFFICIENCY_RANGE = (0.05, 0.3)  # CRISPRi residual expression (fraction of normal)


def build_grn(
    n_genes: int, in_vocab: np.ndarray, n_singles: int, rng: np.random.Generator
) -> dict[str, Any]:
    """Layered DAG of regulators, parents / Hill parameters / logic of each gene, and roles."""
    vocab_idx = np.flatnonzero(in_vocab)
    n_reg = max(3, round(_REGULATOR_FRACTION * n_genes))
    regulators = rng.choice(vocab_idx, n_reg, replace=False)
    bounds = np.cumsum([round(f * n_reg) for f in _LAYER_FRACTIONS[:-1]])
    bounds = np.clip(bounds, 1, n_reg - 1)
    layers = np.split(regulators, bounds)
    layer = np.full(n_genes, len(layers), dtype=np.int64)  # non-regulators: last layer
    for k, members in enumerate(layers):
        layer[members] = k

    parents: list[list[int]] = [[] for _ in range(n_genes)]
    for k in range(1, len(layers)):
        upstream = np.concatenate(layers[:k])
        for g in layers[k]:
            n_par = min(int(rng.integers(1, 3)), upstream.size)
            parents[g] = rng.choice(upstream, n_par, replace=False).tolist()
    targets = np.setdiff1d(np.arange(n_genes), regulators)
    for g in targets:
        n_par = int(rng.choice([1, 2, 3], p=[0.35, 0.45, 0.2]))
        parents[g] = rng.choice(regulators, n_par, replace=False).tolist()
    # every regulator gets at least one target outside the regulators
    has_child = {p for g in targets for p in parents[g]}
    for r in regulators:
        if r in has_child:
            continue
        free = [g for g in targets if len(parents[g]) < 3] or list(targets)
        parents[int(rng.choice(free))].append(int(r))

    logic = np.full(n_genes, "root", dtype=object)
    for g in range(n_genes):
        n_par = len(parents[g])
        if n_par == 1:
            logic[g] = "single"
        elif n_par == 2:
            logic[g] = rng.choice(["and", "or", "sum"], p=[0.35, 0.35, 0.3])
        elif n_par >= 3:
            logic[g] = "sum"

    edges = [(p, g) for g in range(n_genes) for p in parents[g]]
    n_edges = len(edges)
    grn: dict[str, Any] = {
        "parents": parents,
        "layer": layer,
        "logic": logic.astype(str),
        "is_regulator": np.isin(np.arange(n_genes), regulators),
        "edge_regulator": np.array([e[0] for e in edges], dtype=np.int64),
        "edge_target": np.array([e[1] for e in edges], dtype=np.int64),
        "edge_sign": np.where(rng.random(n_edges) < 0.65, 1, -1).astype(np.int64),
        "edge_hill_k": rng.uniform(0.35, 0.9, n_edges),
        "edge_hill_n": rng.choice([2.0, 3.0, 4.0], n_edges),
        "leak": rng.uniform(0.02, 0.2, n_genes),
        # topological order: regulators layer by layer, then the other genes
        "order": np.concatenate([*layers, targets]),
    }
    grn["edge_of"] = {(p, g): i for i, (p, g) in enumerate(edges)}

    # roles: perturbed genes (mostly regulators), shared response program (never perturbed)
    n_pert_reg = min(n_reg, max(1, round(_PERTURBED_REGULATOR_FRACTION * n_singles)))
    pert_reg = rng.choice(regulators, n_pert_reg, replace=False)
    other = np.setdiff1d(vocab_idx, regulators)
    n_prog = max(2, round(_PROGRAM_FRACTION * n_genes))
    program = rng.choice(other, n_prog, replace=False)
    pool = np.setdiff1d(other, program)
    n_pert_other = n_singles - n_pert_reg
    if n_pert_other > pool.size:
        msg = (
            f"n_singles={n_singles} is too large for n_genes={n_genes}: at most "
            f"{n_pert_reg + pool.size} genes can be perturbed."
        )
        raise ValueError(msg)
    pert_other = rng.choice(pool, n_pert_other, replace=False)
    grn["perturbed"] = np.concatenate([pert_reg, pert_other]).astype(np.int64)
    grn["efficiency"] = rng.uniform(*_EFFICIENCY_RANGE, grn["perturbed"].size)
    grn["program"] = np.sort(program).astype(np.int64)
    grn["program_sign"] = np.where(rng.random(n_prog) < 0.7, 1, -1).astype(np.int64)
    grn["program_scale"] = rng.uniform(0.6, 1.2, n_prog)
    return grn


def _hill(x: np.ndarray, k: float, n: float, sign: int) -> np.ndarray:
    """Activating (``sign=1``) or repressing (``-1``) Hill function of a relative level."""
    xn = np.power(x, n)
    kn = k**n
    return xn / (kn + xn) if sign > 0 else kn / (kn + xn)


def _combine(logic: str, h: list[np.ndarray]) -> np.ndarray:
    """Input function of a gene: one Hill term, AND (product), OR (noisy-or) or mean."""
    if logic == "single":
        return h[0]
    if logic == "and":
        return h[0] * h[1]
    if logic == "or":
        return 1.0 - (1.0 - h[0]) * (1.0 - h[1])
    return np.mean(h, axis=0)


def propagate(
    grn: dict[str, Any], kd: np.ndarray, root: np.ndarray, noise: np.ndarray
) -> np.ndarray:
    """Relative levels (1 in the unperturbed reference cell) of every gene, cells x genes.

    ``kd`` multiplies each gene's rate (CRISPRi residual, 1 when not targeted); ``root`` is the
    cell-specific activity of root regulators and ``noise`` the intrinsic noise of regulators
    (both 1 elsewhere). Genes are visited in topological order, so a knockdown reaches all
    descendants.
    """
    x = np.ones_like(kd)
    one = np.ones(1)
    for g in grn["order"]:
        pars = grn["parents"][g]
        if not pars:
            level = root[:, g]
        else:
            h, h_ref = [], []
            for p in pars:
                e = grn["edge_of"][(p, g)]
                k, n, s = grn["edge_hill_k"][e], grn["edge_hill_n"][e], grn["edge_sign"][e]
                h.append(_hill(x[:, p], k, n, s))
                h_ref.append(_hill(one, k, n, s))
            leak = grn["leak"][g]
            raw = leak + (1.0 - leak) * _combine(grn["logic"][g], h)
            ref = leak + (1.0 - leak) * _combine(grn["logic"][g], h_ref)
            level = raw / ref
        x[:, g] = level * noise[:, g] * kd[:, g]
    return x


def design(
    grn: dict[str, Any], n_singles: int, n_doubles: int, rng: np.random.Generator
) -> list[tuple[int, ...]]:
    """Perturbations as tuples of gene indices: the singles, then the doubles.

    About half the doubles are pairs expected to interact, those with most links first (each
    AND / OR gate both genes feed, and one gene regulating the other, count one link); the rest
    are random pairs of single genes.
    """
    pert = [int(g) for g in grn["perturbed"]]
    pert_set = set(pert)
    score: dict[tuple[int, int], int] = {}
    for g, pars in enumerate(grn["parents"]):
        hit = sorted(p for p in pars if p in pert_set)
        if grn["logic"][g] in ("and", "or") and len(hit) == 2:
            score[(hit[0], hit[1])] = score.get((hit[0], hit[1]), 0) + 1
        if g in pert_set:
            for p in hit:
                pair = (min(p, g), max(p, g))
                score[pair] = score.get(pair, 0) + 1
    candidates = sorted(score)
    tiebreak = rng.permutation(len(candidates))
    ranked = sorted(range(len(candidates)), key=lambda i: (-score[candidates[i]], tiebreak[i]))
    n_inter = min(len(candidates), n_doubles // 2)
    picked = [candidates[i] for i in ranked[:n_inter]]
    chosen = set(picked)
    ordered = sorted(pert)
    rest = [(a, b) for i, a in enumerate(ordered) for b in ordered[i + 1 :] if (a, b) not in chosen]
    picked += [rest[i] for i in rng.permutation(len(rest))[: n_doubles - n_inter]]
    return [(g,) for g in pert] + [tuple(int(v) for v in p) for p in picked]
