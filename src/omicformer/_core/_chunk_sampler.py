"""Chunk-shuffled minibatches for out-of-core training (block shuffling).

:class:`ChunkBatchSampler` hands the shared runner (:func:`omicformer._core._train.make_loader`)
minibatches of row numbers that read a file one contiguous chunk at a time
(:class:`~omicformer._core._ondisk.ChunkedRows` caches the chunks): per epoch the chunks come in
a shuffled order and rows are shuffled within windows of a few chunks, so an epoch reads every
chunk about once instead of once per row. It also keeps domain-specific batch norm's one-group
minibatches and balances groups (two batches per minibatch) as the in-memory samplers do
(:class:`~omicformer._core._samplers.BalancedBatchSampler`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

from . import _ranks
from ._ondisk import index_dtype
from ._samplers import fill_batches, group_sequence, groups_in_minibatch, items_needed

__all__ = ["ChunkBatchSampler"]


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

    #: Minibatches of this rank's share that are not padding (as
    #: :attr:`~omicformer._core._samplers.EpochBatchSampler.real_steps`).
    real_steps: int | None = None

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.batches()
        rank, world = _ranks.global_rank(), _ranks.world_size()
        per_rank = -(-len(batches) // world)  # rank r takes the r-th contiguous share
        first = rank * per_rank if world > 1 else 0  # one process: all, whatever the env rank
        self.real_steps = int(np.clip(len(batches) - first, 0, per_rank))
        if world > 1 and batches:
            batches = (batches * world)[: per_rank * world]
            batches = batches[rank * per_rank : (rank + 1) * per_rank]
        for b in batches:
            yield b.tolist()

    def __len__(self) -> int:
        return -(-self._n_batches // _ranks.world_size())
