"""Preprocessing for scGPT: per-cell expression binning and vocabulary matching."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from .._core._anndata import (
    check_backed_writable,
    check_layer,
    check_uns,
    check_values,
    iter_row_chunks,
)
from .._core._checks import check_int, check_key, check_seed
from ._binning import bin_csr_rows
from ._collection import concat_h5ad
from ._genes import (
    MIN_MATCH_FRACTION,
    case_ignored,
    match_genes,
    match_report,
    symbol_column,
)
from ._perturb_data import prepare_perturbation

if TYPE_CHECKING:
    from anndata import AnnData

    from ._vocab import GeneVocab

__all__ = ["bin_expression", "concat_h5ad", "match_vocab", "prepare_perturbation"]


def bin_expression(
    adata: AnnData,
    n_bins: int = 51,
    layer: str | None = None,
    key_added: str = "X_binned",
    random_state: int = 0,
    copy: bool = False,
) -> AnnData | None:
    """Per-cell quantile binning of expression values, as the official scGPT ``Preprocessor``.

    For each cell the non-zero values define ``n_bins - 1`` quantile edges; non-zero values
    are digitised into ``1..n_bins-1`` and zeros stay ``0``. Values tied with repeated edges get
    a uniformly random bin within the official range, drawn from ``random_state``, so results
    are reproducible (the official code uses the global NumPy state).

    Parameters
    ----------
    adata
        Cells x genes, non-negative (raw counts or normalised expression).
    n_bins
        Number of bins including the zero bin (official default 51).
    layer
        Layer to bin; ``None`` uses ``adata.X``.
    key_added
        Layer that receives the bins (sparse if the input is sparse, a ``backed`` file's too).
    random_state
        Seed for breaking ties.
    copy
        Return a modified copy instead of writing to ``adata``. Not for a ``backed`` AnnData
        (binned in chunks, into memory, with ``copy=False``; a view of one is refused).

    Returns
    -------
    ``None``, or a copy when ``copy=True``. Sets the following fields:

    ``adata.layers[key_added]``
        Integer bins, 0 for zeros and ``1..n_bins-1`` for expressed genes.
    ``adata.obsm[key_added + "_edges"]``
        ``(n_obs, n_bins)`` per-cell edges with a leading 0 (official ``bin_edges`` layout),
        so calls with different ``key_added`` keep their own edges.
    ``adata.uns["scgpt"][key_added]["params"]``
        The parameters used.

    Examples
    --------
    >>> from omicformer import datasets, scgpt
    >>> adata = datasets.pbmc_celltypist()
    >>> scgpt.pp.bin_expression(adata)
    >>> int(adata.layers["X_binned"].max())
    50

    References
    ----------
    Cui et al. (2024), scGPT: toward building a foundation model for single-cell multi-omics
    using generative AI. Nature Methods 21, 1470-1480.
    """
    check_key(key_added)
    check_seed(random_state)
    check_int("n_bins", n_bins, minimum=3)
    check_layer(adata, layer)
    check_uns(adata, "scgpt")
    check_backed_writable(adata, copy, "the binned layer")
    where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    rng = np.random.default_rng(random_state)
    matrix = adata.X if layer is None else adata.layers[layer]
    # a backed file's sparse X is anndata's sparse dataset (format "csr"/"csc"), not scipy's
    sparse_in = sp.issparse(matrix) or getattr(matrix, "format", None) in ("csr", "csc")
    sparse_in = sparse_in or sp.issparse(getattr(matrix, "_meta", None))  # dask, sparse chunks
    blocks, edges = [], []
    for idx, chunk in iter_row_chunks(adata, layer):
        check_values(chunk, where, int(idx[0]))
        chunk.eliminate_zeros()
        chunk.sort_indices()
        data, e = bin_csr_rows(chunk.data, chunk.indptr, n_bins, rng)
        blocks.append(sp.csr_matrix((data, chunk.indices, chunk.indptr), shape=chunk.shape))
        edges.append(e)
    binned = (
        sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix(adata.shape, dtype=np.int64)
    )
    adata = adata.copy() if copy else adata
    adata.layers[key_added] = binned if sparse_in else binned.toarray()
    adata.obsm[f"{key_added}_edges"] = np.vstack(edges) if edges else np.zeros((0, n_bins))
    adata.uns.setdefault("scgpt", {})[key_added] = {
        "params": {"n_bins": n_bins, "layer": layer, "random_state": random_state}
    }
    return adata if copy else None


def match_vocab(
    adata: AnnData,
    vocab: GeneVocab | str | os.PathLike[str] = "default",
    *,
    gene_key: str | None = None,
    key_added: str = "id_in_vocab",
    min_fraction: float = MIN_MATCH_FRACTION,
    copy: bool = False,
) -> AnnData | None:
    """Match genes to a scGPT vocabulary and record the token id of each gene.

    Parameters
    ----------
    adata
        Annotated data; genes are ``var_names`` or ``var[gene_key]`` (symbols).
    vocab
        A :class:`~omicformer.scgpt.GeneVocab`, a path to ``vocab.json`` or to a checkpoint
        folder, or ``"default"`` (the shipped model's vocabulary).
    gene_key
        ``var`` column with gene symbols; ``None`` uses ``var_names``, or, when they match too
        few genes (Ensembl ids), the ``var`` column that matches the most (a warning names it;
        recorded in ``uns``), as in :func:`~omicformer.scgpt.tl.embed`. Symbols are matched
        as written, or ignoring case when most of them match only so (mouse symbols; a
        warning says so).
    key_added
        ``var`` column receiving the token id (``-1`` when absent), as official ``id_in_vocab``.
    min_fraction
        Raise ``ValueError`` when fewer genes match than this fraction of the smaller of the
        two gene sets (``adata``'s genes, the vocabulary's).
    copy
        Return a modified copy instead of writing to ``adata``. Not for a ``backed`` AnnData
        (``copy=False`` writes ``var`` in memory; a view of one is refused).

    Returns
    -------
    ``None``, or a copy when ``copy=True``. Sets the following fields:

    ``adata.var[key_added]``
        Token id of each gene, ``-1`` when absent.
    ``adata.uns["scgpt"][key_added]``
        ``params`` used, ``n_genes_matched``, ``n_genes_total`` and ``case_ignored``
        (whether the symbols were matched ignoring case).

    Examples
    --------
    >>> from omicformer import datasets, scgpt
    >>> adata = datasets.pbmc68k_reduced()
    >>> scgpt.pp.match_vocab(adata)
    >>> adata.uns["scgpt"]["id_in_vocab"]["n_genes_matched"] > 0
    True
    """
    check_key(key_added)
    real = isinstance(min_fraction, int | float | np.integer | np.floating)
    if isinstance(min_fraction, bool) or not real or not 0 <= min_fraction <= 1:
        msg = f"min_fraction={min_fraction!r} must be a number in [0, 1] (a fraction of genes)."
        raise ValueError(msg)
    check_uns(adata, "scgpt")
    check_backed_writable(adata, copy, "the token ids")
    vocab_obj = _as_vocab(vocab)
    gene_key = symbol_column(adata, vocab_obj, gene_key, "adata", min_fraction)
    ids = match_genes(adata, vocab_obj, gene_key, min_fraction)
    adata = adata.copy() if copy else adata
    adata.var[key_added] = ids
    source = "GeneVocab" if vocab_obj is vocab else os.fspath(vocab)
    params = {"vocab": source, "gene_key": gene_key, "min_fraction": min_fraction}
    report = match_report(ids, case_ignored(adata, vocab_obj, gene_key))
    adata.uns.setdefault("scgpt", {})[key_added] = {"params": params, **report}
    return adata if copy else None


def _as_vocab(vocab: GeneVocab | str | os.PathLike[str]) -> GeneVocab:
    from pathlib import Path

    from ._vocab import GeneVocab

    if isinstance(vocab, GeneVocab):
        return vocab
    if not isinstance(vocab, str | os.PathLike):
        msg = f"vocab={vocab!r} must be a GeneVocab, 'default', or a path to vocab.json or a model folder."
        raise TypeError(msg)
    path = Path(vocab).expanduser()
    if path.suffix == ".json":
        if not path.is_file():
            msg = f"vocab={os.fspath(vocab)!r}: no such vocab.json file."
            raise FileNotFoundError(msg)
        return GeneVocab.from_file(path)
    if vocab != "default" and not path.is_dir():
        what = "is a file, not a .json" if path.is_file() else "no such folder"
        msg = (
            f"vocab={os.fspath(vocab)!r}: {what}. Pass 'default', a GeneVocab, the path of a "
            "vocab.json, or a model folder (an official checkpoint, or one saved by omicformer)."
        )
        raise FileNotFoundError(msg)
    from ._resolve import resolve_model

    return resolve_model(vocab)[1]
