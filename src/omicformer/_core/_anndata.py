"""AnnData access shared by every model: layers, chunked (backed-safe) reads, validation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    from anndata import AnnData


def check_layer(adata: AnnData, layer: str | None) -> None:
    """Raise a clear ``KeyError`` if ``layer`` is not in ``adata.layers``."""
    if layer is not None and layer not in adata.layers:
        msg = (
            f"layer={layer!r} not found in adata.layers (available: {list(adata.layers.keys())}); "
            "pass layer=None to use adata.X."
        )
        raise KeyError(msg)


def check_obs_key(adata: AnnData, key: str | None, argname: str) -> None:
    """Raise a clear ``KeyError`` if ``key`` is not a column of ``adata.obs``."""
    if key is not None and key not in adata.obs.columns:
        cols = list(adata.obs.columns)[:20]
        msg = f"{argname}={key!r} not found in adata.obs (columns: {cols})."
        raise KeyError(msg)


def get_matrix(adata: AnnData, layer: str | None):
    """Return ``adata.X`` or ``adata.layers[layer]`` (a backed dataset stays lazy)."""
    check_layer(adata, layer)
    return adata.X if layer is None else adata.layers[layer]


def iter_row_chunks(
    adata: AnnData, layer: str | None = None, chunk_size: int = 1024, rows: np.ndarray | None = None
) -> Iterator[tuple[np.ndarray, sp.csr_matrix]]:
    """Yield ``(row_indices, csr_chunk)`` over cells, reading at most ``chunk_size`` rows at a time.

    Works for in-memory and ``backed="r"`` AnnData: only one chunk is ever materialised.
    """
    X = get_matrix(adata, layer)
    n = adata.n_obs
    order = np.arange(n) if rows is None else np.asarray(rows)
    for start in range(0, len(order), chunk_size):
        idx = order[start : start + chunk_size]
        if rows is None:
            block = X[int(idx[0]) : int(idx[-1]) + 1]
        else:
            block = X[np.sort(idx)] if adata.isbacked else X[idx]
            if adata.isbacked:
                inv = np.argsort(np.argsort(idx))
                block = sp.csr_matrix(block)[inv] if sp.issparse(block) else np.asarray(block)[inv]
        yield idx, to_csr(block)


def to_csr(block) -> sp.csr_matrix:
    """Convert a dense/sparse/backed block to float32 CSR."""
    if hasattr(block, "to_memory"):
        block = block.to_memory()
    if sp.issparse(block):
        return sp.csr_matrix(block, dtype=np.float32)
    return sp.csr_matrix(np.asarray(block, dtype=np.float32))


def validate_counts(
    adata: AnnData,
    layer: str | None = None,
    *,
    chunk_size: int = 4096,
    allow_empty_cells: bool = False,
) -> np.ndarray:
    """Check an expression matrix for NaN/inf, negatives and empty cells, chunk by chunk.

    Returns the number of non-zero genes per cell. Raises ``ValueError`` naming the problem and
    the fix; nothing is written to ``adata``.
    """
    n_expressed = np.zeros(adata.n_obs, dtype=np.int64)
    where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    for idx, chunk in iter_row_chunks(adata, layer, chunk_size):
        data = chunk.data
        if not np.all(np.isfinite(data)):
            bad = int((~np.isfinite(data)).sum())
            msg = (
                f"{where} contains {bad} NaN or infinite value(s) (first in cells starting at row "
                f"{int(idx[0])}); remove or impute them before running omicformer."
            )
            raise ValueError(msg)
        if data.size and data.min() < 0:
            msg = (
                f"{where} contains negative values (min {data.min():.3g}); scGPT expects raw counts or "
                "normalised non-negative expression. Did you pass scaled data? Use the counts layer "
                "(layer='counts') or adata.raw."
            )
            raise ValueError(msg)
        chunk.eliminate_zeros()
        n_expressed[idx] = np.diff(chunk.indptr)
    if not allow_empty_cells:
        empty = int((n_expressed == 0).sum())
        if empty:
            msg = (
                f"{empty} cell(s) have no expressed genes (among the genes used); remove them first, "
                "e.g. sc.pp.filter_cells(adata, min_genes=1)."
            )
            raise ValueError(msg)
    return n_expressed
