"""Cells -> scGPT token sequences (pure NumPy/torch; AnnData stays out).

A cell becomes ``<cls>`` followed by its non-zero genes in column order, with values
``[pad_value] + binned values`` (binning per cell over its non-zero values). Cells longer than
``max_len`` keep ``<cls>`` and ``max_len - 1`` of their genes: a random subset of the binned
genes (``gene_selection="random"``, official), or the most highly expressed ones, binned among
themselves (``"highest"``, our addition); batches are padded with ``<pad>`` / ``pad_value`` to
their longest cell, as the official ``embed_data`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from .._core._checks import check_int
from ._binning import bin_nonzero

#: How a cell with more expressed genes than ``max_len - 1`` is cut down (see the module doc).
GENE_SELECTIONS = ("random", "highest")


def check_gene_selection(gene_selection: str) -> None:
    """``ValueError`` unless ``gene_selection`` is one of :data:`GENE_SELECTIONS`."""
    if gene_selection not in GENE_SELECTIONS:
        msg = f"gene_selection={gene_selection!r} must be one of {GENE_SELECTIONS}."
        raise ValueError(msg)


def check_max_len(max_len: int | None) -> int | None:
    """``max_len`` (``None``, or an integer >= 2), else a ``ValueError`` saying what it must be."""
    if max_len is None:
        return None
    return check_int("max_len", max_len, minimum=2, hint="the <cls> token plus at least one gene")


@dataclass
class TokenizedCell:
    """One cell: gene token ids and input values (``<cls>`` first)."""

    genes: np.ndarray  # (L,) int64
    values: np.ndarray  # (L,) float32


def tokenize_rows(
    X: sp.csr_matrix,
    gene_ids: np.ndarray,
    *,
    cls_id: int,
    pad_value: float,
    n_bins: int | None = 51,
    max_len: int | None = 1200,
    rng: np.random.Generator | None = None,
    row_seeds: np.ndarray | None = None,
    gene_selection: str = "random",
) -> list[TokenizedCell]:
    """Tokenise the rows of ``X`` (cells x vocabulary-matched genes).

    Parameters
    ----------
    X
        CSR matrix of non-negative expression; column ``j`` is gene ``gene_ids[j]``.
    gene_ids
        Vocabulary id of every column of ``X``.
    cls_id, pad_value
        ``<cls>`` token id and the value paired with it (official: ``pad_value``).
    n_bins
        Number of bins for per-cell quantile binning; ``None`` keeps raw values.
    max_len
        Maximum tokens per cell including ``<cls>``; ``None`` keeps all genes.
    rng
        Generator for binning ties and gene subsampling (needed unless ``row_seeds`` is given).
    row_seeds
        Optional ``(n_rows, m)`` integer seeds; row ``i`` then draws from
        ``np.random.default_rng(row_seeds[i])`` instead of ``rng``, so a cell's tokens do not
        depend on which other cells are tokenised with it.
    gene_selection
        Which genes a cell with more than ``max_len - 1`` expressed genes keeps: ``"random"``
        (official) bins all of them, then keeps a random subset; ``"highest"`` keeps the
        ``max_len - 1`` with the highest values (ties broken at random), then bins those, so the
        bins spread over the kept genes as they do in a shorter cell.
    """
    if rng is None and row_seeds is None:
        msg = "tokenize_rows needs rng= or row_seeds=."
        raise ValueError(msg)
    check_gene_selection(gene_selection)
    highest = gene_selection == "highest" and max_len is not None
    X = sp.csr_matrix(X)
    X.eliminate_zeros()
    X.sort_indices()
    cells = []
    for i in range(X.shape[0]):
        s, e = X.indptr[i], X.indptr[i + 1]
        cols = X.indices[s:e]
        vals = np.asarray(X.data[s:e], dtype=np.float64)
        r = rng if row_seeds is None else np.random.default_rng(row_seeds[i])
        if highest and len(vals) > max_len - 1:
            # primary key -value, secondary a random draw (lexsort sorts by the last key first)
            top = np.sort(np.lexsort((r.random(len(vals)), -vals))[: max_len - 1])
            cols, vals = cols[top], vals[top]
        if n_bins is not None:
            vals, _ = bin_nonzero(vals, n_bins, r)
        genes = np.concatenate([[cls_id], gene_ids[cols]]).astype(np.int64)
        values = np.concatenate([[pad_value], vals]).astype(np.float32)
        if max_len is not None and len(genes) > max_len:
            keep = np.sort(r.choice(len(genes) - 1, max_len - 1, replace=False)) + 1
            keep = np.concatenate([[0], keep])
            genes, values = genes[keep], values[keep]
        cells.append(TokenizedCell(genes, values))
    return cells


def pad_batch(
    cells: list[TokenizedCell], *, pad_id: int, pad_value: float
) -> dict[str, torch.Tensor]:
    """Pad to the longest cell: ``genes`` (B, L) long, ``values`` (B, L) float, ``padding_mask``."""
    L = max(len(c.genes) for c in cells)
    genes = np.full((len(cells), L), pad_id, dtype=np.int64)
    values = np.full((len(cells), L), pad_value, dtype=np.float32)
    for i, c in enumerate(cells):
        genes[i, : len(c.genes)] = c.genes
        values[i, : len(c.values)] = c.values
    genes_t = torch.from_numpy(genes)
    return {
        "genes": genes_t,
        "values": torch.from_numpy(values),
        "padding_mask": genes_t.eq(pad_id),
    }


def length_buckets(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Batches of cell indices with similar token counts (sorted by length, stable).

    Padding then costs almost nothing, and batches without padding use SDPA's unmasked kernel.
    """
    order = np.argsort(lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def split_generative(
    cell: TokenizedCell, gen_ratio: float, rng: np.random.Generator
) -> tuple[TokenizedCell, np.ndarray, np.ndarray]:
    """Split a cell for generative pretraining.

    ``int((L - 1) * gen_ratio)`` randomly chosen non-``<cls>`` genes become "to generate";
    returns the known part (``<cls>`` first, with values), and the genes to generate and their
    target values.
    """
    n = len(cell.genes) - 1
    n_gen = int(n * gen_ratio)
    perm = rng.permutation(n) + 1
    gen_idx, known_idx = np.sort(perm[:n_gen]), np.sort(perm[n_gen:])
    known = np.concatenate([[0], known_idx])
    return (
        TokenizedCell(cell.genes[known], cell.values[known]),
        cell.genes[gen_idx],
        cell.values[gen_idx],
    )
