"""Backed AnnData in fine-tuning: ``backed="r"`` files streamed, other backed data read in chunks."""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pandas as pd

from ._genes import gene_names

if TYPE_CHECKING:
    from anndata import AnnData

F = TypeVar("F", bound=Callable[..., Any])
#: The files :func:`reopened` opened during a call wrapped by :func:`closes_reopened`.
_REOPENED: contextvars.ContextVar[list | None] = contextvars.ContextVar("reopened", default=None)


def closes_reopened(func: F) -> F:
    """Close every file :func:`reopened` opens during ``func``, however it ends.

    A ``tl`` function interrupted (Ctrl-C) or failing while it trains left its read-only handle
    on the caller's file open for the rest of the session, so the file could not be opened for
    writing (HDF5: "file is already open for read-only").
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        opened: list = []
        token = _REOPENED.set(opened)
        try:
            return func(*args, **kwargs)
        finally:
            _REOPENED.reset(token)
            for work in opened:
                if work.file.is_open:
                    work.file.close()

    return wrapper  # type: ignore[return-value]


def streamable(adata: AnnData) -> bool:
    """Whether ``adata`` is a ``backed="r"`` AnnData (not a view): trained and read in chunks."""
    if not adata.isbacked or adata.is_view:
        return False
    return getattr(adata.file, "_filemode", "r") == "r"


_SAME = object()


def reopened(
    adata: AnnData,
    gene_key: str | None,
    keep: np.ndarray,
    layer: str | None = None,
    names_to: object = _SAME,
    names: np.ndarray | None = None,
) -> AnnData:
    """``adata``'s file opened again read-only, its genes outside ``keep`` renamed unmatched.

    ``X`` stays on disk; ``var`` holds only the gene names (``var_names``, or the
    ``gene_key`` column; ``names_to``: moved to the ``var_names`` (``None``) or that column,
    where another AnnData has them) with the genes not kept renamed to names no vocabulary
    holds, so the model reads exactly the kept genes, as from a copy restricted to them.
    ``layers`` holds only ``layer``, as the caller holds it in ``adata.layers``: anndata keeps
    a backed AnnData's layers in memory, where one may have been added or replaced since the
    file was written. ``names``: the gene names to write instead of ``adata``'s (the
    vocabulary's spelling, :func:`~omicformer.scgpt._genes.vocab_spelled`). scvi-tools' setup
    ids in the file's ``uns`` are dropped (setting the working AnnData up must not replace the
    caller's registration). ``adata`` itself is not changed.
    """
    import anndata as ad

    from .model._scvi import forget_scvi_setup

    names = (gene_names(adata, gene_key) if names is None else np.asarray(names)).astype(object)
    names[~keep] = [f"omicformer-unshared-{i}" for i in np.flatnonzero(~keep)]
    work = ad.read_h5ad(adata.filename, backed="r")
    forget_scvi_setup(work)  # a file written after a setup: its own setup must not replace it
    for key in list(work.layers.keys()):  # the file's: not necessarily the caller's
        del work.layers[key]
    if layer is not None:
        work.layers[layer] = adata.layers[layer]
    column = gene_key if names_to is _SAME else names_to
    if column is None:
        work.var = pd.DataFrame(index=pd.Index(names.astype(str)))
    else:
        work.var = pd.DataFrame({column: names.astype(str)}, index=adata.var_names.copy())
    opened = _REOPENED.get()
    if opened is not None:
        opened.append(work)
    return work


def subset(adata: AnnData, rows: np.ndarray, genes: np.ndarray, layer: str | None) -> AnnData:
    """``adata[rows][:, genes]``: a view in memory; read in chunks into memory when backed.

    ``rows`` and ``genes`` are boolean masks. Backed, only the rows asked for are read, through
    a view of them (anndata's ``to_memory`` would close the caller's file, and reads ``X`` even
    when the expression is in ``layer``). A backed view cannot be indexed again: the view of
    a view is taken of the AnnData it views, at the positions there.
    """
    if not adata.isbacked:
        return adata[rows][:, genes]
    import anndata as ad
    import scipy.sparse as sp

    from .._core._anndata import iter_row_chunks, positions

    base, obs_at, var_at = adata, np.arange(adata.n_obs), np.arange(adata.n_vars)
    if adata.is_view:
        base = adata._adata_ref
        obs_at = np.asarray(positions(adata._oidx, base.n_obs))
        var_at = np.asarray(positions(adata._vidx, base.n_vars))
    view = base[obs_at[np.flatnonzero(rows)], var_at[np.flatnonzero(genes)]]
    X = sp.vstack([chunk for _, chunk in iter_row_chunks(view, layer)], format="csr")
    out = ad.AnnData(X, obs=view.obs.copy(), var=adata.var[genes].copy())
    if layer is not None:
        out.layers[layer] = X
    return out
