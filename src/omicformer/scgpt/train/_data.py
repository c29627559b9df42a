"""Data pipeline for scGPT generative pretraining: datasets, collate and a batch-grouping sampler.

The datasets hand out the non-zero entries of one cell, from an in-memory CSR
(:class:`CellDataset`) or read from a (backed) matrix one chunk at a time
(:class:`ChunkedCellDataset`, out of core); all randomness (binning ties, gene
subsampling to ``max_len``, the generate ratio of a batch and which genes to generate) lives in
:class:`GenerativeCollator`, which takes its generator from the shared runner's
:func:`~omicformer._core._random.collate_rng` (fresh per batch, worker, rank and epoch in
training; fixed per batch in validation). The collate stays a small picklable object for worker
processes and DDP.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch.utils.data import Dataset

from ..._core._chunk_sampler import ChunkBatchSampler
from ..._core._deprecation import warn_renamed
from ..._core._ondisk import ChunkedRows
from ..._core._random import collate_rng
from ..._core._samplers import EpochBatchSampler
from .._tokenize import (
    TokenizedCell,
    check_gene_selection,
    pad_batch,
    split_generative,
    tokenize_rows,
)


def per_cell_codes(codes: np.ndarray | None, n_cells: int, what: str) -> np.ndarray:
    """``codes`` as int64, one per cell (``None``: all 0, as int8); ``ValueError`` for a wrong length."""
    out = np.zeros(n_cells, dtype=np.int8) if codes is None else np.asarray(codes, np.int64)
    if len(out) != n_cells:
        msg = f"{len(out)} {what} for {n_cells} cells."
        raise ValueError(msg)
    return out


class CellDataset(Dataset):
    """Cells of a CSR matrix whose columns are vocabulary genes.

    Map-style, so Lightning can wrap it in a :class:`~torch.utils.data.DistributedSampler` for
    DDP. Item ``i`` is ``(i, column indices, values, batch code)`` of cell ``i``'s non-zero
    entries.

    Parameters
    ----------
    X
        Cells x vocabulary-matched genes, non-negative, no empty rows.
    batch_codes
        Integer batch code per cell (``None``: all 0).
    """

    def __init__(self, X: sp.csr_matrix, batch_codes: np.ndarray | None = None):
        X = sp.csr_matrix(X, dtype=np.float32)
        X.eliminate_zeros()
        X.sort_indices()
        self.X = X
        self.batch_codes = per_cell_codes(batch_codes, X.shape[0], "batch codes")

    def __len__(self) -> int:
        return self.X.shape[0]

    def __getitem__(self, i: int) -> tuple[int, np.ndarray, np.ndarray, int]:
        s, e = self.X.indptr[i], self.X.indptr[i + 1]
        return int(i), self.X.indices[s:e], self.X.data[s:e], int(self.batch_codes[i])


class ChunkedCellDataset(Dataset):
    """Cells read out of core, one contiguous chunk of rows at a time; items as :class:`CellDataset`.

    Memory holds ``window`` chunks, not the matrix; batch codes and labels are small per-cell
    arrays kept in memory. Batches come from the dataset's own
    :class:`~omicformer._core._chunk_sampler.ChunkBatchSampler` (chunk order shuffled per
    epoch, cells shuffled within windows of ``window`` chunks), which the shared runner picks
    up through :meth:`make_batch_sampler`; one epoch reads every chunk about once.

    Parameters
    ----------
    rows
        The cells' vocabulary columns (a :class:`~omicformer._core._ondisk.ChunkedRows` with
        the :func:`vocab_columns` transform); it should cache at least ``window`` chunks.
    batch_codes
        Integer batch code per cell (``None``: all 0).
    labels
        Integer class code per cell (``-1``: no label); items then end with it,
        ``(i, cols, values, batch code, label)``, as
        :class:`~omicformer.scgpt.train.LabelledCellDataset` (fine-tuning collators).
        ``None``: items as :class:`CellDataset`.
    window
        Chunks whose cells are shuffled together.
    """

    def __init__(
        self,
        rows: ChunkedRows,
        batch_codes: np.ndarray | None = None,
        *,
        labels: np.ndarray | None = None,
        window: int = 4,
    ):
        self.rows, self.window = rows, int(window)
        self.batch_codes = per_cell_codes(batch_codes, len(rows), "batch codes")
        self.labels = None if labels is None else per_cell_codes(labels, len(rows), "labels")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(
        self, i: int
    ) -> tuple[int, np.ndarray, np.ndarray, int] | tuple[int, np.ndarray, np.ndarray, int, int]:
        cols, vals = self.rows[i]
        if self.labels is None:
            return int(i), cols, vals, int(self.batch_codes[i])
        return int(i), cols, vals, int(self.batch_codes[i]), int(self.labels[i])

    def make_batch_sampler(
        self,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        groups: np.ndarray | None = None,
        balance: bool = False,
        groups_per_batch: int | None = None,
    ) -> ChunkBatchSampler:
        """Chunk-shuffling minibatches of this dataset (used by the shared runner).

        ``groups`` (e.g. :attr:`batch_codes` for domain-specific batch norm): every minibatch
        holds cells of one group (and one chunk); with ``balance=True`` every minibatch holds
        cells of every group (or ``groups_per_batch`` of them) in equal numbers instead, and the
        dataset's chunk cache grows to what that sampler reads at once
        (:attr:`~omicformer._core._chunk_sampler.ChunkBatchSampler.cache_chunks`: a window of
        ``max(1, window // m)`` chunks per group, ``m`` groups per minibatch).
        """
        sampler = ChunkBatchSampler(self.rows.chunk_ids, batch_size, window=self.window,
                                    shuffle=shuffle, seed=seed, groups=groups, balance=balance,
                                    groups_per_batch=groups_per_batch)  # fmt: skip
        self.rows.cache_chunks = max(self.rows.cache_chunks, sampler.cache_chunks)
        return sampler


def items_matrix(
    cols: Sequence[np.ndarray], vals: Sequence[np.ndarray], n_genes: int
) -> sp.csr_matrix:
    """The cells of a batch of :class:`CellDataset` items as one CSR matrix (cells x genes)."""
    indptr = np.concatenate([[0], np.cumsum([len(c) for c in cols])])
    return sp.csr_matrix(
        (np.concatenate(vals), np.concatenate(cols), indptr), shape=(len(cols), n_genes)
    )


class CellCollator:
    """Token layout shared by scGPT collators: ``<cls>`` + binned non-zero genes, ``max_len``.

    Parameters
    ----------
    gene_ids
        Vocabulary id of every column of the dataset's matrix.
    cls_id, pad_id
        Token ids of ``<cls>`` and ``<pad>``.
    pad_value
        Value paired with ``<cls>`` and with padding (official ``-2``).
    n_bins
        Bins of the per-cell quantile binning (``None``: raw values).
    max_len
        Maximum tokens per cell including ``<cls>``.
    gene_selection
        Which genes a longer cell keeps: ``"random"`` (official) or ``"highest"`` (see
        ``tokenize_rows``).
    seed
        ``None`` (training): randomness from :func:`~omicformer._core._random.collate_rng`, new
        for every batch, worker, rank and epoch. An integer makes each batch a fixed function
        of ``(seed, its first cell)`` (validation: the loss is then comparable across epochs).
    """

    def __init__(
        self,
        gene_ids: np.ndarray,
        *,
        cls_id: int,
        pad_id: int,
        pad_value: float = -2.0,
        n_bins: int | None = 51,
        max_len: int | None = 1200,
        seed: int | None = None,
        gene_selection: str = "random",
    ):
        check_gene_selection(gene_selection)
        self.gene_ids = np.asarray(gene_ids, dtype=np.int64)
        self.cls_id, self.pad_id, self.pad_value = cls_id, pad_id, float(pad_value)
        self.n_bins, self.max_len, self.seed = n_bins, max_len, seed
        self.gene_selection = gene_selection

    def tokenize(
        self, index: Sequence[int], cols: Sequence[np.ndarray], vals: Sequence[np.ndarray]
    ) -> tuple[list[TokenizedCell], np.random.Generator]:
        """Tokenised cells of a batch and the batch's generator (for further draws)."""
        rng = collate_rng(self.seed, index[0])
        cells = tokenize_rows(
            items_matrix(cols, vals, len(self.gene_ids)), self.gene_ids, cls_id=self.cls_id,
            pad_value=self.pad_value, n_bins=self.n_bins, max_len=self.max_len, rng=rng,
            gene_selection=self.gene_selection,
        )  # fmt: skip
        return cells, rng


class GenerativeCollator(CellCollator):
    """Turn a list of :class:`CellDataset` items into one generative-pretraining batch.

    Per batch (official dev-branch ``DataCollator(data_style="gen")``): cells are tokenised
    (``<cls>`` + binned non-zero genes, subsampled to ``max_len``), one ratio is drawn from
    ``gen_ratios``, and in every cell that fraction of its non-``<cls>`` genes becomes "to
    generate" (gene id known, value hidden and used as the target).

    Parameters
    ----------
    gene_ids, cls_id, pad_id, pad_value, n_bins, max_len, seed, gene_selection
        Token layout and randomness, as :class:`CellCollator`.
    gen_ratios
        Candidate fractions of genes to generate; one is drawn per batch.

    Returns
    -------
    A dict of tensors: ``pcpt_genes``, ``pcpt_values``, ``pcpt_padding_mask`` (B, Lp);
    ``gen_genes``, ``gen_values`` (targets), ``gen_padding_mask`` (B, Lg); ``batch_labels`` (B,);
    ``cell_index`` (B,). Padding masks are True at pads.
    """

    def __init__(
        self,
        gene_ids: np.ndarray,
        *,
        cls_id: int,
        pad_id: int,
        pad_value: float = -2.0,
        n_bins: int | None = 51,
        max_len: int | None = 1200,
        gen_ratios: Sequence[float] = (0.25, 0.5, 0.75),
        seed: int | None = None,
        gene_selection: str = "random",
    ):
        super().__init__(gene_ids, cls_id=cls_id, pad_id=pad_id, pad_value=pad_value,
                         n_bins=n_bins, max_len=max_len, seed=seed,
                         gene_selection=gene_selection)  # fmt: skip
        self.gen_ratios = tuple(float(r) for r in gen_ratios)

    def __call__(
        self, items: list[tuple[int, np.ndarray, np.ndarray, int]]
    ) -> dict[str, torch.Tensor]:
        index, cols, vals, codes = zip(*items, strict=True)
        cells, rng = self.tokenize(index, cols, vals)
        ratio = self.gen_ratios[int(rng.integers(len(self.gen_ratios)))]
        known, gen = [], []
        for cell in cells:
            k, g_genes, g_values = split_generative(cell, ratio, rng)
            known.append(k)
            gen.append(TokenizedCell(g_genes, g_values))
        pcpt = pad_batch(known, pad_id=self.pad_id, pad_value=self.pad_value)
        target = pad_batch(gen, pad_id=self.pad_id, pad_value=self.pad_value)
        return {
            "pcpt_genes": pcpt["genes"],
            "pcpt_values": pcpt["values"],
            "pcpt_padding_mask": pcpt["padding_mask"],
            "gen_genes": target["genes"],
            "gen_values": target["values"],
            "gen_padding_mask": target["padding_mask"],
            "batch_labels": torch.as_tensor(codes, dtype=torch.long),
            "cell_index": torch.as_tensor(index, dtype=torch.long),
        }


class GroupedBatchSampler(EpochBatchSampler):
    """Deprecated: use :class:`omicformer._core._samplers.EpochBatchSampler` with ``groups=``."""

    def __init__(self, groups: np.ndarray, batch_size: int, shuffle: bool = True, seed: int = 0):
        warn_renamed(
            "omicformer.scgpt.train",
            "GroupedBatchSampler",
            "omicformer._core._samplers.EpochBatchSampler(len(groups), batch_size, groups=groups)",
        )
        super().__init__(len(groups), batch_size, groups=groups, shuffle=shuffle, seed=seed)
