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
    adata: AnnData, layer: str | None = None, chunk_size: int = 1024
) -> Iterator[tuple[np.ndarray, sp.csr_matrix]]:
    """Yield ``(row_indices, csr_chunk)`` over cells, reading at most ``chunk_size`` rows at a time.

    Works for in-memory and ``backed="r"`` AnnData: only one chunk is ever materialised.
    """
    X = get_matrix(adata, layer)
    for start in range(0, adata.n_obs, chunk_size):
        stop = min(start + chunk_size, adata.n_obs)
        yield np.arange(start, stop), to_csr(X[start:stop])


def check_values(chunk: sp.csr_matrix, where: str, first_row: int) -> None:
    """Raise ``ValueError`` for NaN/inf or negative values in a chunk of expression rows."""
    data = chunk.data
    if data.size and not np.all(np.isfinite(data)):
        msg = (
            f"{where} contains NaN or infinite values (rows from {first_row}); remove or impute "
            "them before running omicformer."
        )
        raise ValueError(msg)
    if data.size and data.min() < 0:
        msg = (
            f"{where} contains negative values (min {data.min():.3g}); scGPT expects raw counts or "
            "non-negative normalised expression, not scaled data. Pass layer='counts' (or the "
            "layer holding counts) or use adata.raw.to_adata()."
        )
        raise ValueError(msg)


def to_csr(block) -> sp.csr_matrix:
    """Convert a dense/sparse/backed block to float32 CSR."""
    if hasattr(block, "to_memory"):
        block = block.to_memory()
    if sp.issparse(block):
        return sp.csr_matrix(block, dtype=np.float32)
    return sp.csr_matrix(np.asarray(block, dtype=np.float32))
