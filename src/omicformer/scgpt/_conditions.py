"""Perturbation condition strings in the GEARS convention: ``"ctrl"``, ``"GENE+ctrl"``, ``"GENE1+GENE2"``.

A condition names the genes perturbed in a cell, joined by ``"+"``; the control label fills
the second slot of single perturbations (``"KLF1+ctrl"``, equivalently ``"ctrl+KLF1"``).
Unordered: ``"A+B"`` and ``"B+A"`` are the same perturbation (:func:`condition_id`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

import numpy as np

CONTROL = "ctrl"
SEP = "+"


def parse_condition(condition: object, control: str = CONTROL) -> tuple[str, ...]:
    """Genes perturbed in ``condition`` (``()`` for the control).

    Parameters
    ----------
    condition
        A GEARS condition string: ``control``, ``"GENE+<control>"``, ``"<control>+GENE"`` or
        ``"GENE1+GENE2"`` (more genes joined by ``"+"`` are allowed).
    control
        The control label.

    Returns
    -------
    The perturbed genes in the order written.

    Raises
    ------
    ValueError
        For a non-string, an empty part (``"A++B"``, ``"A+"``), surrounding spaces, a gene named
        twice or a string of control labels only other than ``control`` itself.

    Examples
    --------
    >>> parse_condition("KLF1+ctrl")
    ('KLF1',)
    >>> parse_condition("KLF1+CEBPA")
    ('KLF1', 'CEBPA')
    >>> parse_condition("ctrl")
    ()
    """
    if not isinstance(condition, str):
        msg = f"Condition {condition!r} is not a string; conditions look like 'GENE+{control}'."
        raise ValueError(msg)
    if condition == control:
        return ()
    parts = condition.split(SEP)
    bad = [p for p in parts if not p or p != p.strip()]
    genes = tuple(p for p in parts if p != control)
    if bad or not genes or len(set(genes)) != len(genes):
        msg = (
            f"Cannot parse condition {condition!r}: expected {control!r}, 'GENE+{control}' or "
            "'GENE1+GENE2' (gene symbols joined by '+', no spaces, each gene once)."
        )
        raise ValueError(msg)
    return genes


def condition_name(genes: Sequence[str], control: str = CONTROL) -> str:
    """The GEARS string of a perturbation: ``()`` -> ``"ctrl"``, ``("A",)`` -> ``"A+ctrl"``.

    Examples
    --------
    >>> condition_name(("KLF1", "CEBPA"))
    'KLF1+CEBPA'
    """
    genes = tuple(genes)
    if not genes:
        return control
    if len(genes) == 1:
        return f"{genes[0]}{SEP}{control}"
    return SEP.join(genes)


def condition_id(genes: Iterable[str]) -> frozenset[str]:
    """Order-free identity of a perturbation (``"A+B"`` equals ``"B+A"``)."""
    return frozenset(genes)


def parse_conditions(
    values: Iterable[object], control: str = CONTROL
) -> dict[str, tuple[str, ...]]:
    """Parse every distinct condition; one ``ValueError`` lists all strings that do not parse."""
    parsed: dict[str, tuple[str, ...]] = {}
    bad: list[str] = []
    for value in dict.fromkeys(values):
        try:
            parsed[value] = parse_condition(value, control)
        except ValueError:
            bad.append(repr(value))
    if bad:
        msg = (
            f"{len(bad)} condition(s) do not parse: {', '.join(bad[:8])}"
            f"{' ...' if len(bad) > 8 else ''}. Expected {control!r}, 'GENE+{control}' or "
            f"'GENE1+GENE2'; pass control= if the control label is not {control!r}."
        )
        raise ValueError(msg)
    return parsed


def parse_requests(perturbations: Sequence[str], control: str = CONTROL) -> list[tuple[str, ...]]:
    """Parse perturbations requested for prediction (one check for every predictor).

    ``ValueError`` for an empty list, a string that does not parse, the control itself, or a
    perturbation asked for twice.
    """
    perturbations = list(perturbations)
    if not perturbations:
        msg = "perturbations is empty; pass condition strings such as ['KLF1+ctrl']."
        raise ValueError(msg)
    parsed = [parse_condition(p, control) for p in perturbations]
    if any(not g for g in parsed):
        msg = f"{control!r} is the control, not a perturbation to predict."
        raise ValueError(msg)
    check_distinct(perturbations, parsed)
    return parsed


def check_distinct(perturbations: Sequence[str], parsed: Sequence[tuple[str, ...]]) -> None:
    """``ValueError`` for a perturbation requested twice, in any spelling (``"A+B"``, ``"B+A"``).

    ``parsed``: the genes of each of ``perturbations``.
    """
    first: dict[frozenset[str], str] = {}
    for p, genes in zip(perturbations, parsed, strict=True):
        key = condition_id(genes)
        if key in first:  # also "A+B" after "B+A", "ctrl+A" after "A+ctrl"
            same = "" if first[key] == p else f" (the same perturbation as {first[key]!r})"
            msg = f"perturbations asks for {p!r} twice{same}; keep one."
            raise ValueError(msg)
        first[key] = p


def close_symbols(gene: str, known: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` symbols of ``known`` that look like ``gene`` (case-insensitive)."""
    known = list(known)
    upper = {k.upper(): k for k in known}
    hits = difflib.get_close_matches(gene.upper(), list(upper), n=n, cutoff=0.6)
    return [upper[h] for h in hits]


def check_genes_known(genes: Iterable[str], known: Iterable[str], what: str) -> None:
    """``KeyError`` naming the genes absent from ``known``, with close symbols as suggestions.

    ``what`` says where they were looked up, e.g. ``"the genes of adata"``.
    """
    known = list(dict.fromkeys(str(k) for k in known))
    known_set = set(known)
    missing = [g for g in dict.fromkeys(genes) if g not in known_set]
    if not missing:
        return
    hints = []
    for g in missing[:8]:
        close = close_symbols(g, known)
        hints.append(
            f"{g!r}" + (f" (did you mean {', '.join(map(repr, close))}?)" if close else "")
        )
    msg = (
        f"Perturbed gene(s) not in {what}: {'; '.join(hints)}"
        f"{' ...' if len(missing) > 8 else ''}. Every perturbed gene must be a measured gene "
        "(its flag is set on that gene's token)."
    )
    raise KeyError(msg)


def perturbed_mask(genes: Sequence[str], var_genes: np.ndarray) -> np.ndarray:
    """Boolean mask over ``var_genes`` of the genes in ``genes``."""
    return np.isin(var_genes, np.asarray(list(genes), dtype=str))
