"""Matching ``adata`` genes to a scGPT vocabulary."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ._vocab import SPECIAL_TOKENS

if TYPE_CHECKING:
    from anndata import AnnData

    from ._vocab import GeneVocab

MIN_MATCH_FRACTION = 0.1


def gene_names(adata: AnnData, gene_key: str | None = None) -> np.ndarray:
    """Gene symbols of ``adata``: ``var_names`` or the ``var[gene_key]`` column."""
    if gene_key is None:
        return np.asarray(adata.var_names, dtype=str)
    if gene_key not in adata.var.columns:
        msg = (
            f"gene_key={gene_key!r} not found in adata.var (columns: {list(adata.var.columns)[:20]}); "
            "pass gene_key=None to use adata.var_names."
        )
        raise KeyError(msg)
    return np.asarray(adata.var[gene_key].astype(str))


def match_genes(
    adata: AnnData,
    vocab: GeneVocab,
    gene_key: str | None = None,
    min_fraction: float = MIN_MATCH_FRACTION,
) -> np.ndarray:
    """Vocabulary id of every gene of ``adata`` (``-1`` where absent).

    Raises ``ValueError`` when the matched genes are fewer than ``min_fraction`` of the smaller
    of ``adata``'s genes and the vocabulary's genes, saying how many matched and how to fix it
    (symbols vs Ensembl IDs, ``gene_key``). Comparing with the smaller set keeps a small
    vocabulary (the default model's few thousand genes) usable on whole-transcriptome data.
    """
    names = gene_names(adata, gene_key)
    ids = vocab.lookup(names)
    n_match = int((ids >= 0).sum())
    n_vocab_genes = len(vocab) - sum(tok in vocab for tok in SPECIAL_TOKENS)
    if n_match == 0 or n_match < min_fraction * min(len(names), n_vocab_genes):
        example = ", ".join(names[:3])
        msg = (
            f"Only {n_match} of {len(names)} genes ({n_match / max(len(names), 1):.1%}) are in the "
            f"model's vocabulary of {len(vocab)} tokens (need at least {min_fraction:.0%} of the "
            "smaller of the two gene sets). "
            f"Genes look like {example!r}; scGPT vocabularies use gene symbols (e.g. 'CD3E'). "
            "If var_names are Ensembl IDs, pass gene_key= naming a var column with symbols."
        )
        raise ValueError(msg)
    return ids


def match_report(ids: np.ndarray) -> dict[str, int]:
    """Counts for ``uns``: genes matched / total."""
    return {"n_genes_matched": int((ids >= 0).sum()), "n_genes_total": len(ids)}
