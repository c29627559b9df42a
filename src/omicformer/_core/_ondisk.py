"""Out-of-core training data: rows read one contiguous chunk at a time, and chunk-shuffled batches.

Random access to single rows of an on-disk (``backed="r"``) matrix costs one read per row; at
atlas scale that is the bottleneck, and loading everything does not fit in memory. As
AnnLoader and scDataset ("block shuffling"), training here reads contiguous chunks of rows
instead and shuffles at two levels:

* :class:`ChunkedRows`: the rows of an AnnData matrix (backed or in memory), read one
  contiguous chunk of ``chunk_size`` rows at a time, the last few chunks cached, each chunk
  passed through a ``transform`` (column selection, validation) when read;
* :class:`~omicformer._core._chunk_sampler.ChunkBatchSampler` (its own module): per epoch,
  the order of chunks is shuffled from ``(seed, epoch)``, rows are shuffled within windows of
  ``window`` chunks, and the result is cut into minibatches; under DDP each rank takes a
  contiguous, distinct share of the batches (same number of steps on every rank). One epoch
  then reads every chunk about once (``n_rows / chunk_size`` reads, not one per row), and
  memory holds ``window`` chunks plus a few 4-byte integers per row (row numbers and the
  epoch's order, int32 below 2**31 rows; a backed file's ``indptr`` is read per chunk, not
  cached whole).

A dataset supplies its sampler to the shared runner through ``make_batch_sampler(batch_size,
*, shuffle, seed, groups=None)`` (:func:`omicformer._core._train.make_loader`).
A backed file is opened read-only by path in every process that reads it (DataLoader workers,
DDP ranks), never through a handle inherited across ``fork``; :func:`open_h5` turns a missing
or write-locked file into a clear error.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from ._anndata import check_csr, get_matrix, sparse_element, to_csr

if TYPE_CHECKING:
    import h5py
    from anndata import AnnData

__all__ = ["ChunkedRows", "RowSource", "index_dtype", "open_h5"]

#: ``transform(chunk, first_row) -> chunk``, applied to every chunk when it is read.
ChunkTransform = Callable[[sp.csr_matrix, int], sp.csr_matrix]


def index_dtype(n: int) -> np.dtype:
    """The smallest of int32 and int64 that holds indices ``0 .. n`` (4 bytes a cell up to 2**31)."""
    return np.dtype(np.int32 if n < np.iinfo(np.int32).max else np.int64)


# ---------------------------------------------------------------------------- files
def open_h5(path: str | os.PathLike[str]) -> h5py.File:
    """Open an HDF5 (``.h5ad``) file read-only, with clear errors for the usual faults.

    Raises
    ------
    FileNotFoundError
        The file does not exist (moved or deleted after it was opened ``backed``).
    OSError
        Another process holds the file open for writing (HDF5 file lock).
    """
    import h5py

    path = os.fspath(path)
    if not os.path.exists(path):
        msg = f"Backed file {path!r} does not exist (moved or deleted?); reopen the AnnData from its new location."
        raise FileNotFoundError(msg)
    try:
        return h5py.File(path, "r")
    except OSError as err:
        if "lock" not in str(err).lower():
            raise
        msg = (
            f"Cannot read {path!r}: another process has it open for writing (HDF5 file lock). "
            "Close the writer (e.g. an AnnData opened with backed='r+' or h5py.File(..., 'a')) "
            "and open the data read-only, anndata.read_h5ad(path, backed='r')."
        )
        raise OSError(msg) from err


class RowSource:
    """Where rows come from: an in-memory matrix, or an element of an ``.h5ad`` file.

    A file is opened read-only by path, lazily and once per process (see :func:`open_h5`), so
    the source can be pickled to DataLoader workers and DDP ranks.

    Parameters
    ----------
    matrix
        In-memory matrix (dense or sparse); or ``None`` with ``filename``.
    filename, key
        ``.h5ad`` file and the element to read (``"X"`` or ``"layers/<name>"``).
    """

    def __init__(
        self,
        matrix: Any = None,
        *,
        filename: str | os.PathLike[str] | None = None,
        key: str = "X",
    ) -> None:
        if (matrix is None) == (filename is None):
            msg = "Give either an in-memory matrix or a filename."
            raise ValueError(msg)
        self.matrix = matrix
        self.filename = None if filename is None else os.fspath(filename)
        self.key = key
        self._file: h5py.File | None = None
        self._element: Any = None
        self._pid: int | None = None
        if matrix is None:
            self.shape = tuple(int(s) for s in self._open().shape)
        else:
            self.shape = tuple(int(s) for s in matrix.shape)

    @classmethod
    def from_anndata(cls, adata: AnnData, layer: str | None = None) -> RowSource:
        """The matrix of ``adata`` (``X`` or ``layers[layer]``), in memory or ``backed="r"``.

        Only a backed AnnData's ``X`` is read from its file: anndata reads the layers into
        memory when it opens the file, and a layer the caller added or replaced since then
        exists only there, so ``adata.layers[layer]`` is what is read. For ``X`` the AnnData
        must be read-only (``backed="r"``) and not a view; its file is reopened by path, so a
        file that was moved, deleted or is locked by a writer gives a clear error here, before
        any training.
        """
        if not adata.isbacked or layer is not None:
            return cls(get_matrix(adata, layer))  # KeyError for an unknown layer
        if adata.is_view:
            msg = (
                "adata is a view of a backed AnnData; streaming reads whole files. Write the "
                "subset to its own file (adata.write_h5ad(path)) and open that with backed='r'."
            )
            raise ValueError(msg)
        mode = getattr(adata.file, "_filemode", "r")
        if mode != "r":
            msg = (
                f"adata is opened with backed={mode!r} (read-write); streaming reads the file from "
                "several processes and needs it read-only: reopen it with "
                f"anndata.read_h5ad({os.fspath(adata.filename)!r}, backed='r')."
            )
            raise ValueError(msg)
        return cls(filename=adata.filename, key="X")

    def _open(self) -> Any:
        """The file's matrix element, opened in this process (reopened after a fork/spawn)."""
        if self._element is None or self._pid != os.getpid():
            f = open_h5(self.filename)
            try:
                element = _matrix_element(f, self.key, self.filename)
            except Exception:
                f.close()
                raise
            self._file, self._pid = f, os.getpid()
            if hasattr(element, "keys"):  # sparse: read ``indptr`` per chunk, not all cells'
                element = sparse_element(element)
            self._element = element
        return self._element

    def read(self, start: int, stop: int) -> sp.csr_matrix:
        """Rows ``start:stop`` as float32 CSR (one contiguous read)."""
        block = self.matrix if self.matrix is not None else self._open()
        return to_csr(block[start:stop])

    def close(self) -> None:
        """Close the file (if any); it is reopened on the next read."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = self._element = self._pid = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None, "_element": None, "_pid": None}


def _matrix_element(f: h5py.File, key: str, filename: str) -> Any:
    """The group (sparse) or dataset (dense) at ``key``; errors for absent or CSC matrices."""
    if key not in f:
        msg = f"{key!r} not found in {filename!r}."
        raise KeyError(msg)
    element = f[key]
    check_csr(element, key, filename)
    return element


# ---------------------------------------------------------------------------- rows
class ChunkedRows:
    """Rows of a :class:`RowSource` read one contiguous chunk at a time (cached).

    Item ``i`` is source row ``rows[i]``; it is served from chunk ``rows[i] // chunk_size``
    (source rows ``[k * chunk_size, (k + 1) * chunk_size)``), read whole, passed through
    ``transform`` and kept in a cache of the ``cache_chunks`` most recently used chunks.

    Parameters
    ----------
    source
        The matrix (:class:`RowSource`).
    rows
        Source rows of the items, sorted (``None``: all rows).
    chunk_size
        Rows per read.
    transform
        ``transform(chunk, first_row) -> chunk`` applied once per read (select columns,
        validate); must keep the number of rows and be picklable for worker processes.
    cache_chunks
        Chunks kept in memory; use the sampler's ``window`` so that every chunk is read once
        per epoch.
    """

    def __init__(
        self,
        source: RowSource,
        *,
        rows: np.ndarray | None = None,
        chunk_size: int = 1024,
        transform: ChunkTransform | None = None,
        cache_chunks: int = 1,
    ) -> None:
        if int(chunk_size) < 1 or int(cache_chunks) < 1:
            msg = f"chunk_size={chunk_size} and cache_chunks={cache_chunks} must be >= 1."
            raise ValueError(msg)
        n = source.shape[0]
        dtype = index_dtype(n)
        if rows is None:
            rows = np.arange(n, dtype=dtype)
        else:
            rows = np.asarray(rows)
            if rows.size and (rows.min() < 0 or rows.max() >= n or np.any(rows[1:] < rows[:-1])):
                msg = f"rows must be sorted indices in [0, {n})."
                raise ValueError(msg)
            rows = rows.astype(dtype, copy=False)
        self.source, self.rows, self.transform = source, rows, transform
        self.chunk_size, self.cache_chunks = int(chunk_size), int(cache_chunks)
        self.n_reads = 0
        self._cache: OrderedDict[int, sp.csr_matrix] = OrderedDict()

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def chunk_ids(self) -> np.ndarray:
        """Chunk of every item, non-decreasing (what the chunk sampler groups by)."""
        return self.rows // self.rows.dtype.type(self.chunk_size)

    def subset(self, items: np.ndarray) -> ChunkedRows:
        """The rows of these items (sorted), sharing source and transform; own cache."""
        items = np.asarray(items)
        if np.any(items[1:] < items[:-1]):
            items = np.sort(items)
        return ChunkedRows(
            self.source, rows=self.rows[items], chunk_size=self.chunk_size,
            transform=self.transform, cache_chunks=self.cache_chunks,
        )  # fmt: skip

    def _read(self, k: int) -> sp.csr_matrix:
        start = k * self.chunk_size
        chunk = self.source.read(start, min(start + self.chunk_size, self.source.shape[0]))
        self.n_reads += 1
        return chunk if self.transform is None else self.transform(chunk, start)

    def chunk(self, k: int) -> sp.csr_matrix:
        """Chunk ``k`` (source rows ``k * chunk_size`` on), from the cache or read now."""
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        chunk = self._read(k)
        self._cache[k] = chunk
        while len(self._cache) > self.cache_chunks:
            self._cache.popitem(last=False)
        return chunk

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(column indices, values)`` of item ``i``'s stored entries."""
        row = int(self.rows[i])
        k, local = divmod(row, self.chunk_size)
        X = self.chunk(k)
        s, e = X.indptr[local], X.indptr[local + 1]
        return X.indices[s:e], X.data[s:e]

    def iter_chunks(self) -> Iterator[tuple[int, sp.csr_matrix]]:
        """``(first source row, chunk)`` of every chunk holding an item, in order, uncached.

        One pass over the data in ``len(rows) / chunk_size`` reads, e.g. to validate it
        before training.
        """
        for k in np.unique(self.chunk_ids):
            yield int(k) * self.chunk_size, self._read(int(k))

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cache": OrderedDict()}
