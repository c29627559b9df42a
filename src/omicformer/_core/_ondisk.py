"""Out-of-core training data: rows read one contiguous chunk at a time, and chunk-shuffled batches.

Random access to single rows of an on-disk (``backed="r"``) matrix costs one read per row; at
atlas scale that is the bottleneck, and loading everything does not fit in memory. As
AnnLoader and scDataset ("block shuffling"), training here reads contiguous chunks of rows
instead and shuffles at two levels:

* :class:`ChunkedRows`: the rows of an AnnData matrix (backed or in memory), read one
  contiguous chunk of ``chunk_size`` rows at a time, the last few chunks cached, each chunk
  passed through a ``transform`` (column selection, validation) when read;
* :class:`ChunkBatchSampler`: per epoch, the order of chunks is shuffled from
  ``(seed, epoch)``, rows are shuffled within windows of ``window`` chunks, and the result is
  cut into minibatches; under DDP each rank takes a contiguous, distinct share of the batches
  (same number of steps on every rank). One epoch then reads every chunk about once
  (``n_rows / chunk_size`` reads, not one per row), and memory holds ``window`` chunks plus
  a few 4-byte integers per row (row numbers and the epoch's order, int32 below 2**31 rows;
  a backed file's ``indptr`` is read per chunk, not cached whole).

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
from torch.utils.data import Sampler

from . import _ranks
from ._anndata import check_layer, get_matrix, sparse_element, to_csr
from ._samplers import fill_batches, group_sequence, groups_in_minibatch, items_needed

if TYPE_CHECKING:
    import h5py
    from anndata import AnnData

__all__ = ["ChunkBatchSampler", "ChunkedRows", "RowSource", "open_h5"]

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

        A backed AnnData must be read-only (``backed="r"``) and not a view; its file is
        reopened by path, so a file that was moved, deleted or is locked by a writer gives a
        clear error here, before any training.
        """
        if not adata.isbacked:
            return cls(get_matrix(adata, layer))  # KeyError for an unknown layer
        check_layer(adata, layer)  # without touching adata.X, which would reopen the file
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
        return cls(filename=adata.filename, key="X" if layer is None else f"layers/{layer}")

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
    if element.attrs.get("encoding-type") == "csc_matrix":
        msg = (
            f"{key!r} in {filename!r} is stored column-major (CSC): every chunk of rows would "
            "read the whole matrix. Store it as CSR, e.g. adata.X = "
            "scipy.sparse.csr_matrix(adata.X) before write_h5ad."
        )
        raise ValueError(msg)
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
        """Chunk of every item (what :class:`ChunkBatchSampler` groups by), non-decreasing."""
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


# ---------------------------------------------------------------------------- sampler
class ChunkBatchSampler(Sampler[list[int]]):
    """Minibatches that read contiguous chunks: chunk order shuffled, rows shuffled in windows.

    Per epoch (a function of ``(seed, epoch)``, identical on every rank): the chunks are put in
    random order and grouped into windows of ``window`` chunks; the items of each window are
    shuffled together; the concatenation is cut into minibatches of ``batch_size`` (block
    shuffling, as AnnLoader and scDataset). Every item appears exactly once per epoch. With a
    dataset that caches ``window`` chunks, each chunk is read once per epoch (per DataLoader
    worker). Under ``torch.distributed`` the batch list is padded by repetition to a multiple
    of the world size and rank ``r`` takes the ``r``-th contiguous share, so ranks see
    distinct batches, run the same number of steps and read mostly distinct chunks. Used with
    ``Trainer(use_distributed_sampler=False)``; ``shuffle=False`` keeps the item order.

    With ``groups`` (e.g. batch labels for domain-specific batch norm) every minibatch holds
    items of one group and one chunk: each chunk's shuffled items are split by group and cut
    into minibatches, and the minibatches of a window's chunks are shuffled together. The
    number of minibatches per epoch is then the same every epoch (per chunk and group,
    ``ceil(n / batch_size)``), as a resumable run needs.

    With ``groups`` and ``balance=True`` every minibatch instead mixes the groups, the same
    number of items of each (as the in-memory
    :class:`~omicformer._core._samplers.BalancedBatchSampler`, whose rules it follows:
    ``batch_size // m`` items of each of ``m`` groups, ``m = groups_per_batch`` or all groups,
    every combination of ``m`` groups in turn, ``ceil(n_items / batch_size)`` minibatches per
    epoch, the items of a small group dealt again when they run out). Each group's items come
    as a stream that reads chunks: the epoch's chunk order (shuffled, shared by the groups)
    restricted to the chunks holding the group, its items shuffled within windows of
    ``max(1, window // m)`` of them; a stream dealt again goes through its chunks in a new
    order. A file whose batches are stored one after the other then still gives minibatches of
    several batches, which cross-batch losses need, while a dataset caching
    :attr:`cache_chunks` chunks reads each chunk about once per epoch and group.

    Parameters
    ----------
    chunk_ids
        Chunk of every item (e.g. :attr:`ChunkedRows.chunk_ids`).
    batch_size
        Maximum items per minibatch.
    window
        Chunks whose items are shuffled together.
    shuffle
        Shuffle chunks and items; ``False``: items in order.
    seed
        Base seed; Lightning calls :meth:`set_epoch` every epoch.
    groups
        Group of every item (integers); ``None``: minibatches mix everything in a window.
    balance
        With ``groups``: minibatches hold every group (or ``groups_per_batch`` of them) in
        equal numbers instead of one group each.
    groups_per_batch
        With ``balance``: groups per minibatch (``None`` or at least the number of groups:
        all).
    """

    def __init__(
        self,
        chunk_ids: np.ndarray,
        batch_size: int,
        *,
        window: int = 4,
        shuffle: bool = True,
        seed: int = 0,
        groups: np.ndarray | None = None,
        balance: bool = False,
        groups_per_batch: int | None = None,
    ) -> None:
        if int(batch_size) < 1 or int(window) < 1:
            msg = f"batch_size={batch_size} and window={window} must be >= 1."
            raise ValueError(msg)
        chunk_ids = np.asarray(chunk_ids)
        self.n_items = len(chunk_ids)
        dtype = index_dtype(self.n_items)
        if np.all(chunk_ids[1:] >= chunk_ids[:-1]):  # e.g. ChunkedRows.chunk_ids: no sort
            self._items = None  # items of the j-th distinct chunk: bounds[j]:bounds[j + 1]
            starts = np.flatnonzero(chunk_ids[1:] != chunk_ids[:-1]) + 1
            self._chunks = chunk_ids[np.append(0, starts)] if self.n_items else chunk_ids[:0]
        else:
            self._items = np.argsort(chunk_ids, kind="stable").astype(dtype)
            self._chunks, starts = np.unique(chunk_ids[self._items], return_index=True)
            starts = starts[1:]
        # items of the j-th distinct chunk: self._items[self._bounds[j]:self._bounds[j + 1]]
        self._bounds = np.concatenate([[0], starts, [self.n_items]]).astype(np.int64)
        if not self.n_items:
            self._bounds = np.zeros(1, np.int64)
        self.batch_size, self.window = int(batch_size), int(window)
        self.shuffle, self.seed, self.epoch = shuffle, int(seed), 0
        self.groups = None
        if groups is not None:
            self.groups = np.asarray(groups)
            if self.groups.shape != (self.n_items,):
                msg = f"{self.groups.shape[0]} groups for {self.n_items} items."
                raise ValueError(msg)
        self.balance = bool(balance)
        if self.balance:
            self._setup_balance(groups_per_batch)
        self._n_batches = self._count_batches()

    def _setup_balance(self, groups_per_batch: int | None) -> None:
        """Index the items by group and chunk; check that a minibatch fits its groups."""
        if self.groups is None:
            msg = "balance=True needs groups= (the group of every item)."
            raise ValueError(msg)
        _, codes = np.unique(self.groups, return_inverse=True)
        self._n_groups = int(codes.max()) + 1 if self.n_items else 0
        m = groups_in_minibatch(self._n_groups, self.batch_size, groups_per_batch)
        self._m = max(m, 1)
        # items sorted by (group, chunk position): items of group g in chunk j form one slice
        n_chunks = len(self._chunks)
        in_order = np.repeat(np.arange(n_chunks), np.diff(self._bounds)[:n_chunks])
        chunk_pos = in_order if self._items is None else np.empty(self.n_items, np.int64)
        if self._items is not None:
            chunk_pos[self._items] = in_order
        key = codes.astype(np.int64) * max(len(self._chunks), 1) + chunk_pos
        dtype = index_dtype(self.n_items)
        self._by_key = np.argsort(key, kind="stable").astype(dtype)
        keys, starts = np.unique(key[self._by_key], return_index=True)
        self._key_bounds = np.append(starts, self.n_items).astype(np.int64)
        self._key_group = keys // max(len(self._chunks), 1)
        self._key_chunk = keys % max(len(self._chunks), 1)

    @property
    def group_window(self) -> int:
        """Chunks of one group whose items a balanced stream shuffles together."""
        return max(1, self.window // self._m) if self.balance else self.window

    @property
    def cache_chunks(self) -> int:
        """Chunks a dataset should cache to read each about once per epoch (and group)."""
        if not self.balance:
            return self.window
        return min(max(len(self._chunks), 1), self.group_window * max(self._n_groups, 1))

    def _count_batches(self) -> int:
        """Minibatches per epoch (the same every epoch)."""
        if self.groups is None or self.balance:
            return -(-self.n_items // self.batch_size)
        n = 0
        for j in range(len(self._chunks)):
            sizes = np.unique(self.groups[self._chunk_items(j, np.int64)], return_counts=True)[1]
            n += int((-(-sizes // self.batch_size)).sum())
        return n

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch (different shuffles per epoch, identical across ranks)."""
        self.epoch = int(epoch)

    def order(self) -> np.ndarray:
        """Item order of the current epoch (all items, each once) before cutting into batches.

        Without ``groups``; with them, :meth:`batches` cuts each chunk by group instead.
        """
        dtype = index_dtype(self.n_items)
        if not self.shuffle:
            return np.arange(self.n_items, dtype=dtype)
        rng = np.random.default_rng([self.seed, self.epoch])
        chunks = rng.permutation(len(self._chunks))
        out, at = np.empty(self.n_items, dtype=dtype), 0
        for w in range(0, len(chunks), self.window):
            items = np.concatenate(
                [self._chunk_items(j, dtype) for j in chunks[w : w + self.window]]
            )
            rng.shuffle(items)  # the draws of rng.permutation(items)
            out[at : at + len(items)] = items
            at += len(items)
        return out

    def _chunk_items(self, j: int, dtype: np.dtype) -> np.ndarray:
        """Items of the ``j``-th distinct chunk."""
        lo, hi = self._bounds[j], self._bounds[j + 1]
        return np.arange(lo, hi, dtype=dtype) if self._items is None else self._items[lo:hi]

    def batches(self) -> list[np.ndarray]:
        """Minibatches of the current epoch (all ranks' before the split between ranks)."""
        if self.balance:
            return self._balanced_batches()
        if self.groups is None:
            order = self.order()
            return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        dtype = index_dtype(self.n_items)
        rng = np.random.default_rng([self.seed, self.epoch])
        n_chunks = len(self._chunks)
        chunks = rng.permutation(n_chunks) if self.shuffle else np.arange(n_chunks)
        out: list[np.ndarray] = []
        for w in range(0, n_chunks, self.window):
            window: list[np.ndarray] = []
            for j in chunks[w : w + self.window]:
                items = self._chunk_items(j, dtype)
                if self.shuffle:
                    items = rng.permutation(items)
                codes = self.groups[items]
                for g in np.unique(codes):
                    mine = items[codes == g]
                    window += [mine[i : i + self.batch_size]
                               for i in range(0, len(mine), self.batch_size)]  # fmt: skip
            if self.shuffle:
                window = [window[i] for i in rng.permutation(len(window))]
            out += window
        return out

    def _balanced_batches(self) -> list[np.ndarray]:
        """Minibatches mixing the groups in equal numbers, each group's items read by chunk."""
        if not self.n_items:
            return []
        rng = np.random.default_rng([self.seed, self.epoch])
        n_chunks = len(self._chunks)
        order = rng.permutation(n_chunks) if self.shuffle else np.arange(n_chunks)
        rank = np.empty(n_chunks, np.int64)
        rank[order] = np.arange(n_chunks)
        sequence = group_sequence(rng, self._n_groups, self._m, self._n_batches,
                                  shuffle=self.shuffle)  # fmt: skip
        per_group = self.batch_size // self._m
        need = items_needed(sequence, self._n_groups, per_group)
        streams = []
        for g in range(self._n_groups):
            keys = np.flatnonzero(self._key_group == g)
            keys = keys[np.argsort(rank[self._key_chunk[keys]], kind="stable")]  # epoch's order
            streams.append(self._stream(rng, keys, int(need[g])))
        return fill_batches(rng, sequence, streams, per_group, shuffle=self.shuffle)

    def _stream(self, rng: np.random.Generator, keys: np.ndarray, n: int) -> np.ndarray:
        """``n`` items of one group: its chunks (``keys``, in order) in windows, dealt in rounds."""
        dtype = index_dtype(self.n_items)
        parts, total, first = [], 0, True
        while total < n:
            if not first and self.shuffle:
                keys = rng.permutation(keys)
            first = False
            for w in range(0, len(keys), self.group_window):
                items = np.concatenate([
                    self._by_key[self._key_bounds[k] : self._key_bounds[k + 1]]
                    for k in keys[w : w + self.group_window]
                ]).astype(dtype, copy=False)  # fmt: skip
                if self.shuffle:
                    items = rng.permutation(items)
                parts.append(items)
                total += len(items)
                if total >= n:
                    break
        return np.concatenate(parts)[:n] if parts else np.zeros(0, dtype)

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.batches()
        rank, world = _ranks.global_rank(), _ranks.world_size()
        if world > 1 and batches:
            per_rank = -(-len(batches) // world)
            batches = (batches * world)[: per_rank * world]
            batches = batches[rank * per_rank : (rank + 1) * per_rank]
        for b in batches:
            yield b.tolist()

    def __len__(self) -> int:
        return -(-self._n_batches // _ranks.world_size())
