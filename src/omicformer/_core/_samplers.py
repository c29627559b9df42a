"""Minibatch samplers of the training runner (:func:`omicformer._core._train.make_loader`).

Both are functions of ``(seed, epoch)`` and hand every DDP rank its own slice of the epoch's
minibatches, all ranks the same number of steps; out-of-core datasets bring their own sampler
(:class:`~omicformer._core._chunk_sampler.ChunkBatchSampler`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from . import _ranks


class EpochBatchSampler(Sampler[list[int]]):
    """Minibatches of item indices, reshuffled per epoch, split across DDP ranks.

    With ``groups``, every minibatch holds items of one group only (domain-specific batch norm
    normalises a minibatch with one domain's statistics, as the official
    ``per_seq_batch_sample``). Order and membership are a function of ``(seed, epoch)``; under
    ``torch.distributed`` rank ``r`` takes every ``world_size``-th batch, the list padded by
    repetition so that all ranks run the same number of steps. Used with
    ``Trainer(use_distributed_sampler=False)``.

    Parameters
    ----------
    n_items
        Number of items.
    batch_size
        Maximum items per minibatch.
    groups
        Optional group per item.
    shuffle
        Shuffle items (within groups) and the order of batches.
    seed
        Base seed; Lightning calls :meth:`set_epoch` every epoch.
    """

    def __init__(
        self,
        n_items: int,
        batch_size: int,
        *,
        groups: np.ndarray | None = None,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        self.groups = np.zeros(n_items, np.int64) if groups is None else np.asarray(groups)
        if len(self.groups) != n_items:
            msg = f"{len(self.groups)} groups for {n_items} items."
            raise ValueError(msg)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch (different shuffles per epoch, identical across ranks)."""
        self.epoch = int(epoch)

    def _all_batches(self) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
        batches = []
        for g in np.unique(self.groups):
            idx = np.flatnonzero(self.groups == g)
            if self.shuffle:
                idx = rng.permutation(idx)
            batches += [idx[i : i + self.batch_size] for i in range(0, len(idx), self.batch_size)]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    #: Minibatches of this rank's share in the epoch being read that are not padding
    #: (:func:`counted_items`); ``None`` before the first epoch is read.
    real_steps: int | None = None

    def __iter__(self) -> Iterator[list[int]]:
        rank, world = _ranks.global_rank(), _ranks.world_size()
        batches = self._all_batches()
        # ranks take every world-th; one process is rank 0 whatever Lightning's env rank says
        self.real_steps = len(range(rank if world > 1 else 0, len(batches), world))
        if world > 1:
            n = -(-len(batches) // world) * world
            batches = (batches * (n // max(len(batches), 1) + 1))[:n]
            batches = batches[rank::world]
        for b in batches:
            yield b.tolist()

    def __len__(self) -> int:
        n = sum(
            -(-int((self.groups == g).sum()) // self.batch_size) for g in np.unique(self.groups)
        )
        return -(-n // _ranks.world_size())


class BalancedBatchSampler(EpochBatchSampler):
    """Minibatches that mix the groups, every group with the same number of items in each.

    A minibatch holds ``batch_size // n_groups`` items of every group (so ``batch_size``
    rounded down to a multiple of the number of groups); an epoch has as many minibatches as
    :class:`EpochBatchSampler` would make of all items, ``ceil(n_items / batch_size)``. Each
    group's items are dealt in a random order (``shuffle=False``: in index order) and dealt
    again, reshuffled, when they run out, so an epoch shows the items of a small group more than
    once and not every item of a large one. Order and membership are a function of ``(seed,
    epoch)``; ranks of a DDP run take every ``world_size``-th minibatch, as
    :class:`EpochBatchSampler`. For cross-batch losses that pair cells of different batches
    within a minibatch (:func:`~omicformer.scgpt.module.mnn_loss`): a batch of a sixth of the
    cells would otherwise have about a sixth of each minibatch.

    With ``groups_per_batch=m`` smaller than the number of groups, a minibatch holds
    ``batch_size // m`` items of each of ``m`` groups only, and the minibatches go through every
    combination of ``m`` groups in turn (all of them, in a random order, then again in another;
    ``shuffle=False``: in lexicographic order), so that every two groups meet equally often.

    Parameters
    ----------
    n_items, batch_size, groups, shuffle, seed
        As :class:`EpochBatchSampler`; ``groups`` (one per item) is required, and a minibatch
        must fit one item of each of its groups (``batch_size`` at least the number of groups,
        or ``groups_per_batch``).
    groups_per_batch
        Groups per minibatch; ``None`` (or at least the number of groups): all of them.
    """

    def __init__(
        self,
        n_items: int,
        batch_size: int,
        *,
        groups: np.ndarray,
        shuffle: bool = True,
        seed: int = 0,
        groups_per_batch: int | None = None,
    ) -> None:
        super().__init__(n_items, batch_size, groups=groups, shuffle=shuffle, seed=seed)
        n_groups = len(np.unique(self.groups))
        m = groups_in_minibatch(n_groups, self.batch_size, groups_per_batch)
        self.groups_per_batch = None if m == n_groups else m

    def _all_batches(self) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
        members = [np.flatnonzero(self.groups == g) for g in np.unique(self.groups)]
        if self.groups_per_batch is not None:
            return self._combination_batches(rng, members, self.groups_per_batch)
        per_group = self.batch_size // max(len(members), 1)
        n_batches = -(-len(self.groups) // self.batch_size)
        need = n_batches * per_group
        dealt = [self._deal(rng, idx, need).reshape(n_batches, per_group) for idx in members]
        batches = np.concatenate(dealt, axis=1) if dealt else np.zeros((0, 0), np.int64)
        if self.shuffle:
            batches = rng.permuted(batches, axis=1)
        return list(batches)

    def _deal(self, rng: np.random.Generator, items: np.ndarray, n: int) -> np.ndarray:
        """The first ``n`` of ``items`` dealt in rounds (as many as ``n`` needs)."""
        return deal(rng, items, n, shuffle=self.shuffle)

    def _combination_batches(
        self, rng: np.random.Generator, members: list[np.ndarray], m: int
    ) -> list[np.ndarray]:
        """Minibatches of ``m`` groups each, going through every combination of ``m`` groups."""
        sequence = group_sequence(rng, len(members), m, -(-len(self.groups) // self.batch_size),
                                  shuffle=self.shuffle)  # fmt: skip
        per_group = self.batch_size // m
        need = items_needed(sequence, len(members), per_group)
        streams = [self._deal(rng, idx, n) for idx, n in zip(members, need, strict=True)]
        return fill_batches(rng, sequence, streams, per_group, shuffle=self.shuffle)

    def __len__(self) -> int:
        n_batches = -(-len(self.groups) // self.batch_size)
        return -(-n_batches // _ranks.world_size())


def groups_in_minibatch(n_groups: int, batch_size: int, groups_per_batch: int | None) -> int:
    """Groups in each balanced minibatch: ``groups_per_batch``, at most ``n_groups`` (``None``: all).

    ``ValueError`` for ``groups_per_batch < 1``, or more groups than ``batch_size`` holds items.
    """
    if groups_per_batch is not None and groups_per_batch < 1:
        msg = f"groups_per_batch={groups_per_batch} must be at least 1 (or None: all groups)."
        raise ValueError(msg)
    m = n_groups if groups_per_batch is None else min(groups_per_batch, n_groups)
    if m > batch_size:
        msg = (
            f"{m} groups do not fit a minibatch of {batch_size} items with one item of each; "
            "raise batch_size or leave the groups unbalanced."
        )
        raise ValueError(msg)
    return m


def deal(rng: np.random.Generator, items: np.ndarray, n: int, *, shuffle: bool) -> np.ndarray:
    """The first ``n`` of ``items`` dealt in rounds (as many as ``n`` needs).

    Each round holds all of them, in a new random order (``shuffle=False``: their order).
    """
    rounds = [rng.permutation(items) if shuffle else items for _ in range(-(-n // len(items)))]
    return np.concatenate(rounds)[:n] if rounds else items[:0]


def group_sequence(
    rng: np.random.Generator, n_groups: int, m: int, n_batches: int, *, shuffle: bool
) -> list[tuple[int, ...]]:
    """The groups of each of ``n_batches`` minibatches: every combination of ``m`` in turn.

    All combinations in a random order (``shuffle=False``: lexicographic), then again in
    another, as many rounds as ``n_batches`` needs; so every two groups meet equally often.
    """
    combos = list(itertools.combinations(range(n_groups), m))
    return [combos[c] for c in deal(rng, np.arange(len(combos)), n_batches, shuffle=shuffle)]


def items_needed(sequence: list[tuple[int, ...]], n_groups: int, per_group: int) -> np.ndarray:
    """Items each group gives to the minibatches of ``sequence``, ``per_group`` to each."""
    need = np.zeros(n_groups, np.int64)
    for combo in sequence:
        need[list(combo)] += per_group
    return need


def fill_batches(
    rng: np.random.Generator,
    sequence: list[tuple[int, ...]],
    streams: list[np.ndarray],
    per_group: int,
    *,
    shuffle: bool,
) -> list[np.ndarray]:
    """Minibatches of ``sequence``: the next ``per_group`` items of each of its groups' streams.

    ``streams[g]`` holds at least :func:`items_needed` items of group ``g``, in the order they
    are taken; a minibatch's items are shuffled together (``shuffle=False``: group by group).
    """
    taken = np.zeros(len(streams), np.int64)
    batches = []
    for combo in sequence:
        parts = []
        for g in combo:
            parts.append(streams[g][taken[g] : taken[g] + per_group])
            taken[g] += per_group
        batch = np.concatenate(parts)
        batches.append(rng.permutation(batch) if shuffle else batch)
    return batches


def counted_items(trainer: Any, batch_idx: int, n: int) -> int:
    """Items a validation minibatch adds to the epoch's logged means: ``n``, or 0 for padding.

    Under DDP every rank runs as many minibatches (DDP's forward synchronises the ranks), so a
    sampler pads a short share by repeating minibatches (:class:`EpochBatchSampler`,
    :class:`~omicformer._core._chunk_sampler.ChunkBatchSampler`); logged with ``batch_size=0``,
    a repeat leaves the mean of ``validation_loss`` over the ranks (Lightning's ``sync_dist``
    weighs each rank by its items) that of the held-out items, each counted once.
    """
    loaders = getattr(trainer, "val_dataloaders", None)
    sampler = getattr(loaders, "batch_sampler", None)
    real = getattr(sampler, "real_steps", None)
    return 0 if real is not None and batch_idx >= real else n
