"""Minibatch samplers of the training runner: groups, epochs, DDP ranks, balanced groups."""

import numpy as np
import pytest

from omicformer._core import _ranks
from omicformer._core._samplers import BalancedBatchSampler, EpochBatchSampler


def test_epoch_batch_sampler_groups_epochs_and_ranks(monkeypatch, rank_shards):
    groups = np.array([0] * 37 + [1] * 20 + [2] * 5)
    sampler = EpochBatchSampler(len(groups), 8, groups=groups, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 5 + 3 + 1
    assert all(len(set(groups[b])) == 1 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(len(groups)))
    sampler.set_epoch(1)
    assert list(sampler) != batches
    shards = rank_shards(sampler)
    assert len(shards[0]) == len(shards[1]) == len(sampler) == 5
    assert {i for s in shards for b in s for i in b} == set(range(len(groups)))
    plain = EpochBatchSampler(10, 4, shuffle=False)
    monkeypatch.setattr(_ranks, "world_size", lambda: 1)
    monkeypatch.setattr(_ranks, "global_rank", lambda: 0)
    assert list(plain) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_balanced_batch_sampler_deals_every_group_equally(rank_shards):
    groups = np.array([0] * 12 + [1] * 3)  # items 12, 13, 14 form the small group
    plain = BalancedBatchSampler(len(groups), 4, groups=groups, shuffle=False)
    # ceil(15 / 4) = 4 minibatches of 2 + 2; the small group dealt again when it runs out
    assert list(plain) == [[0, 1, 12, 13], [2, 3, 14, 12], [4, 5, 13, 14], [6, 7, 12, 13]]
    assert len(plain) == 4
    sampler = BalancedBatchSampler(len(groups), 5, groups=groups, seed=3)  # 5 // 2 = 2 each
    batches = list(sampler)
    assert len(batches) == len(sampler) == 3
    assert all(sorted(groups[b]) == [0, 0, 1, 1] for b in batches)
    assert list(sampler) == batches  # a function of (seed, epoch)
    sampler.set_epoch(1)
    assert list(sampler) != batches
    shards = rank_shards(sampler)
    assert len(shards[0]) == len(shards[1]) == len(sampler) == 2
    with pytest.raises(ValueError, match="3 groups do not fit a minibatch of 2"):
        BalancedBatchSampler(6, 2, groups=np.array([0, 1, 2, 0, 1, 2]))


def test_balanced_batch_sampler_two_groups_per_minibatch():
    groups = np.array([0] * 6 + [1] * 4 + [2] * 2)
    plain = BalancedBatchSampler(len(groups), 4, groups=groups, shuffle=False, groups_per_batch=2)
    # ceil(12 / 4) = 3 minibatches, the pairs (0, 1), (0, 2), (1, 2) in turn, 2 items of each;
    # a group's items are dealt in index order, again from its first when they run out
    assert list(plain) == [[0, 1, 6, 7], [2, 3, 10, 11], [8, 9, 10, 11]]
    sampler = BalancedBatchSampler(60, 8, groups=np.arange(60) % 4, seed=2, groups_per_batch=2)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 8
    counts = [np.bincount(np.arange(60)[b] % 4, minlength=4) for b in batches]
    assert all(sorted(c.tolist()) == [0, 0, 4, 4] for c in counts)
    met = {tuple(np.flatnonzero(c)) for c in counts}
    assert met == {(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)}  # 8 >= 6 pairs: all meet
    assert list(sampler) == batches
    sampler.set_epoch(1)
    assert list(sampler) != batches
    # as many groups per minibatch as there are: the sampler without the option, draw for draw
    two = np.array([0] * 9 + [1] * 3)
    assert list(BalancedBatchSampler(12, 4, groups=two, seed=5, groups_per_batch=2)) == list(
        BalancedBatchSampler(12, 4, groups=two, seed=5)
    )
    with pytest.raises(ValueError, match="groups_per_batch=0 must be at least 1"):
        BalancedBatchSampler(6, 4, groups=two[:6], groups_per_batch=0)


def test_repeated_minibatches_of_a_short_share_are_not_counted(monkeypatch):
    # 20 items in minibatches of 8: [0-7] [8-15] [16-19]; two ranks take every other one, and
    # rank 1's share is evened out with a repeat of the first: its second minibatch
    from types import SimpleNamespace

    from omicformer._core._chunk_sampler import ChunkBatchSampler
    from omicformer._core._samplers import counted_items

    def counted(sampler, rank, world=2):
        monkeypatch.setattr(_ranks, "world_size", lambda: world)
        monkeypatch.setattr(_ranks, "global_rank", lambda: rank)
        trainer = SimpleNamespace(val_dataloaders=SimpleNamespace(batch_sampler=sampler))
        return [(b, counted_items(trainer, i, len(b))) for i, b in enumerate(sampler)]

    plain = EpochBatchSampler(20, 8, shuffle=False)
    assert counted(plain, 0) == [(list(range(8)), 8), (list(range(16, 20)), 4)]
    assert counted(plain, 1) == [(list(range(8, 16)), 8), (list(range(8)), 0)]
    assert counted(plain, 0, world=1)[-1] == (list(range(16, 20)), 4)
    # one process whose Lightning rank is not 0 (RANK=1 in the environment) counts them all
    assert [n for _, n in counted(plain, 1, world=1)] == [8, 8, 4]
    assert counted(EpochBatchSampler(8, 8, shuffle=False), 1) == [(list(range(8)), 0)]
    # an out-of-core dataset's sampler: rank r takes the r-th contiguous share
    chunks = ChunkBatchSampler(np.zeros(20, np.int64), 8, shuffle=False)
    assert counted(chunks, 0) == [(list(range(8)), 8), (list(range(8, 16)), 8)]
    assert counted(chunks, 1) == [(list(range(16, 20)), 4), (list(range(8)), 0)]
    assert [n for _, n in counted(chunks, 1, world=1)] == [8, 8, 4]
    # before a sampler has been read, or a loader without one: every item counts
    assert counted_items(SimpleNamespace(), 5, 3) == 3
