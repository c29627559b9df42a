"""Cell embedding engine: AnnData rows -> tokens -> transformer -> L2-normalised ``<cls>`` output.

Differences from the official ``embed_data`` that do not change the numbers: cells are grouped
into length buckets (little padding; SDPA runs unmasked on full buckets), the matrix is read in
chunks (works on ``backed="r"`` AnnData), and on GPU the forward runs under bf16/fp16 autocast.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import torch

from .._core._anndata import check_values, iter_row_chunks
from .._core._device import inference_autocast, resolve_device
from .._core._progress import progress as _progress
from ._tokenize import length_buckets, pad_batch, tokenize_rows

if TYPE_CHECKING:
    from anndata import AnnData

    from ._vocab import GeneVocab
    from .module import TransformerModel


def vocab_chunks(
    adata: AnnData, layer: str | None, cols: np.ndarray, chunk_size: int = 4096
) -> Iterator[tuple[np.ndarray, sp.csr_matrix]]:
    """Yield ``(row indices, CSR of the vocabulary columns)`` chunk by chunk, validated.

    Raises ``ValueError`` for NaN/inf or negative values and for cells that express none of
    the vocabulary genes. Entries are non-zero with sorted indices.
    """
    where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    for idx, chunk in iter_row_chunks(adata, layer, chunk_size):
        check_values(chunk, where, int(idx[0]))
        sub = chunk[:, cols]
        sub.eliminate_zeros()
        sub.sort_indices()
        empty = np.flatnonzero(np.diff(sub.indptr) == 0)
        if empty.size:
            msg = (
                f"{empty.size} cell(s) (e.g. row {int(idx[empty[0]])}) express none of the genes "
                "in the model's vocabulary; remove them first, e.g. "
                "sc.pp.filter_cells(adata, min_genes=1) after subsetting to vocabulary genes."
            )
            raise ValueError(msg)
        yield idx, sub


def cell_seeds(X: sp.csr_matrix, gene_ids: np.ndarray, random_state: int) -> np.ndarray:
    """Per-cell seeds ``(random_state, crc32 of the cell's genes and values)``.

    Binning ties and gene subsampling of a cell then depend only on its expression and the seed:
    not on cell order, chunking, names, or which other cells are embedded with it. ``X`` must
    hold only non-zero entries with sorted indices.
    """
    seeds = np.empty((X.shape[0], 2), dtype=np.int64)
    seeds[:, 0] = random_state
    for i in range(X.shape[0]):
        s, e = X.indptr[i], X.indptr[i + 1]
        key = gene_ids[X.indices[s:e]].tobytes() + np.asarray(X.data[s:e], np.float32).tobytes()
        seeds[i, 1] = zlib.crc32(key)
    return seeds


@torch.no_grad()
def encode_tokens(
    module: TransformerModel,
    batch: dict[str, torch.Tensor],
    device: torch.device,
    batch_labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cell embeddings (not normalised) of one padded batch."""
    genes = batch["genes"].to(device, non_blocking=True)
    values = batch["values"].to(device, non_blocking=True)
    mask = batch["padding_mask"].to(device, non_blocking=True)
    if batch_labels is not None:
        batch_labels = batch_labels.to(device)
    with inference_autocast(device):
        out = module._encode(genes, values, mask, batch_labels)
        emb = module.get_cell_embedding(out, values)
    return emb.float()


def embed_cells(
    module: TransformerModel,
    vocab: GeneVocab,
    adata: AnnData,
    *,
    gene_ids: np.ndarray,
    layer: str | None = None,
    batch_size: int = 64,
    max_len: int | None = 1200,
    n_bins: int | None = 51,
    pad_value: float | None = None,
    device: str | torch.device = "auto",
    random_state: int = 0,
    chunk_size: int = 8192,
    progress: bool = True,
    normalize: bool = True,
    batch_labels: np.ndarray | None = None,
) -> np.ndarray:
    """Embed every cell of ``adata``; returns ``(n_obs, d_model)`` float32.

    ``gene_ids`` gives the vocabulary id of each var (``-1``: not in the vocabulary, dropped).
    Raises ``ValueError`` (before anything is written anywhere) on NaN/inf, negative values or
    cells with no expressed vocabulary gene. ``batch_labels`` (integer code per cell) are passed
    to models with batch tokens or domain-specific batch norm; every minibatch then holds cells
    of a single batch, as DSBN requires.
    """
    if max_len is not None and max_len < 2:
        msg = f"max_len={max_len} must be >= 2 (the <cls> token plus at least one gene)."
        raise ValueError(msg)
    if batch_size < 1:
        msg = f"batch_size={batch_size} must be >= 1."
        raise ValueError(msg)
    dev = resolve_device(device)
    chunk_size = batch_size * max(1, chunk_size // batch_size)  # whole buckets per chunk
    pad_value = module.config.pad_value if pad_value is None else pad_value
    cols = np.flatnonzero(gene_ids >= 0)
    col_ids = gene_ids[cols]
    was_training = module.training
    module.eval().to(dev)
    out = np.zeros((adata.n_obs, module.config.d_model), dtype=np.float32)
    n_batches = -(-adata.n_obs // batch_size)
    bar = _progress(range(n_batches), total=n_batches, desc="scGPT embed", disable=not progress)
    try:
        for idx, sub in vocab_chunks(adata, layer, cols, chunk_size):
            cells = tokenize_rows(
                sub, col_ids, cls_id=vocab.cls_id, pad_value=pad_value, n_bins=n_bins,
                max_len=max_len, row_seeds=cell_seeds(sub, col_ids, random_state),
            )  # fmt: skip
            lengths = np.fromiter((len(c.genes) for c in cells), dtype=np.int64)
            for b, labels in _buckets(lengths, batch_size, batch_labels, idx):
                batch = pad_batch([cells[i] for i in b], pad_id=vocab.pad_id, pad_value=pad_value)
                out[idx[b]] = encode_tokens(module, batch, dev, labels).cpu().numpy()
                bar.update(1)
    finally:
        bar.close()
        module.train(was_training)
    if normalize:
        out /= np.linalg.norm(out, axis=1, keepdims=True).clip(min=1e-12)
    return out


def _buckets(
    lengths: np.ndarray, batch_size: int, batch_labels: np.ndarray | None, idx: np.ndarray
):
    """Length buckets, within each batch label when labels are given."""
    if batch_labels is None:
        for b in length_buckets(lengths, batch_size):
            yield b, None
        return
    codes = np.asarray(batch_labels)[idx]
    for code in np.unique(codes):
        members = np.flatnonzero(codes == code)
        for b in length_buckets(lengths[members], batch_size):
            yield members[b], torch.full((len(b),), int(code), dtype=torch.long)
