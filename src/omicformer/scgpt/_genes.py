"""Matching ``adata`` genes to a scGPT vocabulary."""

from __future__ import annotations

import contextvars
import functools
import math
import re
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from .._core._warnings import warn_caller
from ._vocab import SPECIAL_TOKENS

if TYPE_CHECKING:
    import pandas as pd
    from anndata import AnnData

    from ._vocab import GeneVocab

MIN_MATCH_FRACTION = 0.1

F = TypeVar("F", bound=Callable[..., Any])

#: True while a ``tl`` function drives a model class on genes it has already warned about.
_CASE_WARNED = contextvars.ContextVar("case_warned", default=False)


#: An Ensembl gene id (``ENSG00000141510``, ``ENSMUSG...``, versioned ``...510.16`` too).
_ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")


def case_warning_given(func: F) -> F:
    """Decorate a ``tl`` function that warns about ignored case itself.

    Within it, :func:`match_genes` does not repeat the warning for the model classes it drives.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        token = _CASE_WARNED.set(True)
        try:
            return func(*args, **kwargs)
        finally:
            _CASE_WARNED.reset(token)

    return wrapper  # type: ignore[return-value]


def gene_names(adata: AnnData, gene_key: str | None = None, where: str = "adata") -> np.ndarray:
    """Gene symbols of ``adata``: ``var_names`` or the ``var[gene_key]`` column.

    A gene whose ``var[gene_key]`` value is missing (NaN) or blank is named by its
    ``var_names`` entry (an Ensembl ID, say): a symbol of no pretrained vocabulary, and a token
    of its own in a vocabulary built from the data, never one shared by every such gene.
    ``where`` names ``adata`` in the error for an unknown ``gene_key`` (e.g. ``"reference"``).
    """
    if gene_key is None:
        return np.asarray(adata.var_names, dtype=str)
    if gene_key not in adata.var.columns:
        msg = (
            f"gene_key={gene_key!r} not found in {where}.var (columns: "
            f"{list(adata.var.columns)[:20]}); pass gene_key=None to use {where}.var_names."
        )
        raise KeyError(msg)
    return symbols_or_names(adata.var[gene_key], adata.var_names)


def symbols_or_names(symbols: pd.Series, names: pd.Index) -> np.ndarray:
    """``symbols`` as text, with ``names`` where a symbol is missing (NaN, None) or blank."""
    out = np.asarray(symbols.astype(object).where(symbols.notna(), ""), dtype=str)
    blank = np.char.strip(out) == ""
    if blank.any():
        out = out.astype(object)
        out[blank] = np.asarray(names, dtype=str)[blank]
        out = out.astype(str)
    return out


def match_genes(
    adata: AnnData,
    vocab: GeneVocab,
    gene_key: str | None = None,
    min_fraction: float = MIN_MATCH_FRACTION,
    warn_case: str | None = None,
    hint: str = "",
) -> np.ndarray:
    """Vocabulary id of every gene of ``adata`` (``-1`` where absent).

    Symbols are matched as written, or ignoring case where most matches need that (mouse
    ``"Cd3e"`` for ``"CD3E"``; :func:`lookup_symbols`); with ``warn_case`` (the name of
    ``adata`` in messages, e.g. ``"adata"``) a warning says so, unless within a function
    decorated with :func:`case_warning_given`. Raises ``ValueError`` when the matched genes
    are fewer than ``min_fraction`` of the smaller of ``adata``'s genes and the vocabulary's
    genes, saying how many matched and how to fix it (symbols vs Ensembl IDs, ``gene_key``).
    Comparing with the smaller set keeps a small vocabulary (the default model's few thousand
    genes) usable on whole-transcriptome data. ``hint`` ends that message (what else the caller
    can do).
    """
    names = gene_names(adata, gene_key)
    ids, case_ignored = lookup_symbols(names, vocab)
    n_match = int((ids >= 0).sum())
    if not _enough(n_match, len(names), vocab, min_fraction):
        example = ", ".join(names[:3])
        n_genes = _n_vocab_genes(vocab)
        need = max(1, math.ceil(min_fraction * min(len(names), n_genes)))
        ignoring = " (matched ignoring case)" if case_ignored else ""
        first = names[:200]
        ensembl = (
            len(first) > 0 and sum(bool(_ENSEMBL.match(str(n))) for n in first) > len(first) / 2
        )
        if ensembl:
            advice = "They look like Ensembl IDs: pass gene_key= naming a var column with symbols."
        else:
            advice = (
                f"scGPT vocabularies use gene symbols (e.g. 'CD3E'), and this model knows "
                f"{n_genes:,} genes: if these are symbols, few of them are among its genes (an "
                "official checkpoint such as scGPT_human knows about 60,000); if they are "
                "other ids, pass gene_key= naming a var column with symbols."
            )
        read = "var_names" if gene_key is None else f"var[{gene_key!r}]"
        msg = (
            f"Only {n_match} of {len(names)} genes ({n_match / max(len(names), 1):.1%}) are in the "
            f"model's vocabulary of {len(vocab)} tokens{ignoring} (need at least {need}: "
            f"{min_fraction:.0%} of the smaller of the two gene sets). "
            f"Genes ({read}) look like {example!r}. {advice}"
            f"{_elsewhere(adata, vocab, gene_key, need)}{' ' + hint if hint else ''}"
        )
        raise ValueError(msg)
    if warn_case is not None and not _CASE_WARNED.get():
        what = f"{warn_case}.var_names" if gene_key is None else f"{warn_case}.var[{gene_key!r}]"
        _warn_if_case_ignored(names, vocab, min_fraction, what)
    return ids


def lookup_symbols(names: np.ndarray, vocab: GeneVocab) -> tuple[np.ndarray, bool]:
    """Vocabulary ids of the symbols ``names`` and whether case was ignored to find them.

    Symbols are matched as written, as the official scGPT code matches them, unless more
    genes match only when case is ignored (:meth:`GeneVocab.lookup` with
    ``ignore_case=True``) than match as written: mouse symbols (``"Cd3e"``) or symbols
    exported in lower case. Data with the vocabulary's own symbols, where a few old-style
    names (``"C2ORF15"``) would match only ignoring case, are thus read exactly as the
    official code reads them. The rule depends on the proportion of such genes, so a subset
    holding the same kinds of genes (those two datasets share, say) is matched the same way.
    """
    exact = vocab.lookup(names)
    folded = vocab.lookup(names, ignore_case=True)
    n_exact = int((exact >= 0).sum())
    if int((folded >= 0).sum()) - n_exact > n_exact:
        return folded, True
    return exact, False


def _best_column(adata: AnnData, vocab: GeneVocab, skip: str | None = None) -> tuple[Any, int]:
    """The text column of ``var`` (not ``skip``) matching the most vocabulary genes, and how many.

    ``(None, 0)`` where none matches any; numbers, booleans and dates are no symbols.
    """
    best, best_n = None, 0
    for column in adata.var.columns:
        values = adata.var[column]
        if column == skip or values.dtype.kind in "biufcmM":
            continue
        n = int((lookup_symbols(values.astype(str).to_numpy(), vocab)[0] >= 0).sum())
        if n > best_n:
            best, best_n = column, n
    return best, best_n


def _elsewhere(adata: AnnData, vocab: GeneVocab, gene_key: str | None, need: int) -> str:
    """Where else ``adata`` has names matching the vocabulary (for :func:`match_genes`' error).

    The place matching the most genes of ``var_names`` and the text columns of ``var``, other
    than the one read (``gene_key``): a sentence naming it and the ``gene_key`` to pass, or
    saying it matches too few as well; empty where none matches any.
    """
    best, best_n = None, 0
    if gene_key is not None:  # var_names first: a column must match more to be named
        best_n = int((lookup_symbols(np.asarray(adata.var_names, dtype=str), vocab)[0] >= 0).sum())
    column, n = _best_column(adata, vocab, skip=gene_key)
    if n > best_n:
        best, best_n = str(column), n
    if best_n == 0:
        return ""
    if best is None:
        where, verb, how = "var_names", "hold", "read them with gene_key=None"
    else:
        where, verb = f"var[{best!r}]", "holds"
        how = f"read them with gene_key={best!r}, or copy them to var_names"
    if best_n >= need:
        return f" {where} {verb} {best_n} of the model's genes ({how})."
    return f" The best other place, {where}, {verb} only {best_n} of the model's genes."


def _enough(n_match: int, n_names: int, vocab: GeneVocab, min_fraction: float) -> bool:
    """The criterion of :func:`match_genes`: enough genes matched to go on."""
    return n_match > 0 and n_match >= min_fraction * min(n_names, _n_vocab_genes(vocab))


def _n_vocab_genes(vocab: GeneVocab) -> int:
    """Genes of ``vocab`` (its tokens less the special ones)."""
    return len(vocab) - sum(tok in vocab for tok in SPECIAL_TOKENS)


def symbol_column(
    adata: AnnData,
    vocab: GeneVocab,
    gene_key: str | None,
    where: str = "adata",
    min_fraction: float = MIN_MATCH_FRACTION,
) -> str | None:
    """``gene_key``, or the ``var`` column holding gene symbols when ``var_names`` do not.

    With ``gene_key=None`` and ``var_names`` matching too few vocabulary genes for
    :func:`match_genes` (Ensembl ids, as in CELLxGENE files, whose symbols are in
    ``var["feature_name"]``), the text column of ``var`` that matches the most vocabulary genes
    is returned if it matches enough, with a warning naming it; otherwise ``None`` (and
    :func:`match_genes` raises its error). Symbols that match mostly when case is ignored
    (mouse ``"Cd3e"`` for ``"CD3E"``; :func:`lookup_symbols`) are used so, with a warning.
    """
    if adata.n_vars == 0:
        return gene_key
    if gene_key is not None:
        _warn_if_case_ignored(gene_names(adata, gene_key), vocab, min_fraction,
                              f"{where}.var[{gene_key!r}]")  # fmt: skip
        return gene_key
    names = np.asarray(adata.var_names, dtype=str)
    if _enough(int((lookup_symbols(names, vocab)[0] >= 0).sum()), adata.n_vars, vocab,
               min_fraction):  # fmt: skip
        _warn_if_case_ignored(names, vocab, min_fraction, f"{where}.var_names")
        return None
    best, best_n = _best_column(adata, vocab)
    if best is None or not _enough(best_n, adata.n_vars, vocab, min_fraction):
        return None
    warn_caller(
        f"{where}.var_names (e.g. {adata.var_names[0]!r}) match few genes of the model's "
        f"vocabulary, so the gene symbols of {where}.var[{best!r}] are used ({best_n} of "
        f"{adata.n_vars} genes matched). Pass gene_key= to choose the column."
    )
    _warn_if_case_ignored(gene_names(adata, str(best)), vocab, min_fraction,
                          f"{where}.var[{best!r}]")  # fmt: skip
    return str(best)


def _warn_if_case_ignored(
    names: np.ndarray, vocab: GeneVocab, min_fraction: float, what: str
) -> None:
    """Warn when :func:`lookup_symbols` ignores case for ``names`` and so matches enough.

    Also when it does not, but a notable share of the genes (at least 20 and 5% of those
    matched) would match only ignoring case: they are left out, as the official code leaves
    them, and the warning says how many (symbols half upper-, half lower-cased by a pipeline).
    """
    ids, ignored = lookup_symbols(names, vocab)
    folded = int((ids >= 0).sum())
    if not ignored:
        only_folded = (ids < 0) & (vocab.lookup(names, ignore_case=True) >= 0)
        extra = int(only_folded.sum())
        if extra >= max(20, 0.05 * folded):
            example = str(names[np.flatnonzero(only_folded)[0]])
            warn_caller(
                f"{extra} gene symbols of {what} (e.g. {example!r}) match the model's "
                f"vocabulary only when case is ignored; as the official scGPT, symbols are "
                f"matched as written ({folded} genes), so those are left out. Write them as "
                "the vocabulary does (e.g. upper case for human symbols) to use them."
            )
        return
    if _enough(folded, len(names), vocab, min_fraction):
        exact = int((vocab.lookup(names) >= 0).sum())
        warn_caller(
            f"the gene symbols of {what} (e.g. {str(names[0])!r}) match the model's vocabulary "
            f"mostly when case is ignored ({exact} as written, {folded} of {len(names)} "
            "ignoring case), so they are matched to its symbols ignoring case. For mouse data "
            "this reads each gene as the human gene of the same symbol (an ortholog for most); "
            "map genes to human orthologs for a closer match."
        )


def symbols_as_names(adata: AnnData, gene_key: str | None, column: str | None = None) -> AnnData:
    """An AnnData sharing ``adata``'s matrices and ``obs``, its symbols moved.

    The symbols (``var_names``, or ``var[gene_key]``) become the gene names (``column=None``)
    or the ``var[column]`` column, so that ``adata`` is read like another AnnData that keeps its
    symbols there.
    """
    import anndata as ad
    import pandas as pd

    names = pd.Index(gene_names(adata, gene_key))
    if column is None:
        var = pd.DataFrame(index=names)
    else:
        var = pd.DataFrame({column: names.to_numpy()}, index=adata.var_names.copy())
    with warnings.catch_warnings():  # symbols may repeat; they are matched, not indexed by
        warnings.filterwarnings("ignore", "Variable names are not unique")
        out = ad.AnnData(X=adata.X, obs=adata.obs.copy(), var=var)
    for key, value in adata.layers.items():
        out.layers[key] = value
    return out


def vocab_spelled(names: np.ndarray, ids: np.ndarray, vocab: GeneVocab) -> np.ndarray | None:
    """``names`` with each matched gene (``ids >= 0``) spelled as its vocabulary token.

    ``None`` where every matched name is its token already. A working AnnData restricted to
    some genes is named so: :func:`lookup_symbols` decides on case from the share of genes
    matching only ignoring case, which a subset (the genes two datasets share) can change, so
    its genes would be matched otherwise (lower-case symbols dropped) than in the first match.
    """
    tokens = np.asarray(vocab.genes(), dtype=object)
    out = np.asarray(names, dtype=object).copy()
    found = ids >= 0
    if (out[found].astype(str) == tokens[ids[found]]).all():
        return None
    out[found] = tokens[ids[found]]
    return out


def set_gene_names(adata: AnnData, gene_key: str | None, names: np.ndarray) -> None:
    """Write ``names`` where ``adata`` keeps its symbols (``var_names`` or ``var[gene_key]``)."""
    import pandas as pd

    if gene_key is None:
        with warnings.catch_warnings():  # symbols may repeat; they are matched, not indexed by
            warnings.filterwarnings("ignore", "Variable names are not unique")
            adata.var_names = pd.Index(np.asarray(names).astype(str))
    else:
        adata.var[gene_key] = np.asarray(names).astype(str)


def case_ignored(adata: AnnData, vocab: GeneVocab, gene_key: str | None = None) -> bool:
    """Whether :func:`match_genes` matches the symbols of ``adata`` ignoring case."""
    return lookup_symbols(gene_names(adata, gene_key), vocab)[1]


def match_report(ids: np.ndarray, ignored: bool = False) -> dict[str, int | bool]:
    """For ``uns``: genes matched / total, and whether symbols were matched ignoring case."""
    return {"n_genes_matched": int((ids >= 0).sum()), "n_genes_total": len(ids),
            "case_ignored": bool(ignored)}  # fmt: skip


def warn_if_raw_has_more_genes(
    adata: AnnData,
    raw_read: bool,
    layer: str | None,
    gene_key: str | None,
    vocab: GeneVocab,
    n_matched: int,
    where: str = "adata",
) -> None:
    """Warn when ``X`` is read but ``adata.raw`` holds many more of the vocabulary's genes.

    scanpy's workflow keeps every gene in ``adata.raw`` and subsets ``X`` to highly variable
    genes; unscaled, that ``X`` is read as it is (``raw_read``: ``raw`` was read instead, as
    for scaled ``X``), and a warning says how many genes ``raw`` would add (at least 200 more
    and 1.5 times as many) and how to read it.
    """
    if layer is not None or raw_read or adata.raw is None or adata.isbacked:
        return
    raw = adata.raw
    if gene_key is not None and gene_key not in raw.var.columns:
        return
    names = (np.asarray(raw.var_names, dtype=str) if gene_key is None
             else symbols_or_names(raw.var[gene_key], raw.var_names))  # fmt: skip
    in_raw = int((lookup_symbols(names, vocab)[0] >= 0).sum())
    if in_raw >= max(1.5 * n_matched, n_matched + 200):
        warn_caller(
            f"{where}.X holds {n_matched} of the model's genes and {where}.raw {in_raw}: X is "
            "read, as given. scGPT reads the genes it is given, so a subset of X (highly "
            "variable genes) leaves the others out; to read every gene, pass "
            f"{where}.raw.to_adata() (it keeps obs) and copy the result back."
        )


def gene_snapshot(adata: AnnData, gene_key: str | None) -> np.ndarray:
    """The gene names a matching of ``adata`` reads (:func:`gene_names`), to compare later."""
    return gene_names(adata, gene_key if gene_key in adata.var.columns else None)


def genes_differ(snapshot: np.ndarray | None, adata: AnnData, gene_key: str | None) -> bool:
    """Whether ``adata``'s genes changed since :func:`gene_snapshot` (renamed, filtered, ...).

    Compares the names as text, as matching reads them (a missing or blank symbol is the
    gene's ``var_names`` entry).
    """
    return snapshot is None or not np.array_equal(snapshot, gene_snapshot(adata, gene_key))
