"""The chunk-shuffling sampler of streamed training: groups, balanced groups, order."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from omicformer._core import _ranks
from omicformer._core._chunk_sampler import ChunkBatchSampler
from omicformer._core._ondisk import ChunkedRows, RowSource


def test_chunk_sampler_groups_one_group_and_chunk_per_batch(monkeypatch):
    chunk_ids = np.arange(50) // 8  # 7 chunks (the last of 2 items)
    groups = np.random.default_rng(1).integers(0, 3, 50)
    sampler = ChunkBatchSampler(chunk_ids, 3, window=3, seed=5, groups=groups)
    # per chunk and group ceil(n / 3) batches, the same count every epoch
    expected = sum(-(-int(((chunk_ids == c) & (groups == g)).sum()) // 3)
                   for c in range(7) for g in range(3))  # fmt: skip
    seen = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) == expected
        assert sorted(i for b in batches for i in b) == list(range(50))  # each item once
        for b in batches:
            assert len(set(groups[b])) == 1 and len(set(chunk_ids[b])) == 1 and len(b) <= 3
        # the batches of a window's 3 chunks come together (memory holds one window)
        chunk_of = [int(chunk_ids[b[0]]) for b in batches]
        first_seen = list(dict.fromkeys(chunk_of))
        window_of = [first_seen.index(c) // 3 for c in chunk_of]
        assert window_of == sorted(window_of)
        seen.append(batches)
    assert seen[0] != seen[1]  # reshuffled per epoch
    groups6 = np.array([0, 1, 0, 1, 1, 1])
    plain = ChunkBatchSampler(np.arange(6) // 3, 2, shuffle=False, groups=groups6)
    assert list(plain) == [[0, 2], [1], [3, 4], [5]]  # chunk by chunk, group by group
    with pytest.raises(ValueError, match="groups"):
        ChunkBatchSampler(chunk_ids, 3, groups=groups[:10])
    monkeypatch.setattr(_ranks, "world_size", lambda: 2)
    assert len(sampler) == -(-expected // 2)


def _reference_order(chunk_ids, window, seed, epoch):
    """The sampler's documented order, written plainly (int64, argsort): what it must equal."""
    chunk_ids = np.asarray(chunk_ids, np.int64)
    items = np.argsort(chunk_ids, kind="stable")
    chunks, starts = np.unique(chunk_ids[items], return_index=True)
    bounds = np.append(starts, len(items))
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(len(chunks))
    parts = [
        rng.permutation(
            np.concatenate([items[bounds[j] : bounds[j + 1]] for j in perm[w : w + window]])
        )
        for w in range(0, len(perm), window)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


@pytest.mark.parametrize("sort", [True, False])
def test_chunk_sampler_order_is_compact_and_unchanged(sort):
    rng = np.random.default_rng(5)
    for n in (0, 1, 37, 500):
        chunk_ids = rng.integers(0, 9, n)
        chunk_ids = np.sort(chunk_ids) if sort else chunk_ids
        sampler = ChunkBatchSampler(chunk_ids, 6, window=3, seed=2)
        for epoch in range(3):
            sampler.set_epoch(epoch)
            order = sampler.order()
            assert order.dtype == np.int32  # 4 bytes per cell, not 8
            np.testing.assert_array_equal(order, _reference_order(chunk_ids, 3, 2, epoch))
            flat = [i for b in sampler for i in b]
            assert flat == order.tolist()


def _sorted_groups() -> tuple[np.ndarray, np.ndarray]:
    """A file storing three groups one after the other (120, 40, 12 rows), chunks of 10 rows."""
    groups = np.repeat([0, 1, 2], [120, 40, 12])
    return np.arange(len(groups)) // 10, groups


def test_balanced_chunk_sampler_mixes_groups_stored_one_after_the_other():
    chunk_ids, groups = _sorted_groups()
    plain = ChunkBatchSampler(chunk_ids, 8, window=2, seed=1)
    # without balancing, a window of 2 chunks of one group gives minibatches of that group only
    assert np.mean([len(set(groups[b])) == 1 for b in plain]) > 0.4
    sampler = ChunkBatchSampler(chunk_ids, 8, window=2, seed=1, groups=groups, balance=True)
    assert len(sampler) == -(-172 // 8) == 22  # as many minibatches as unbalanced
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == 22
        for b in batches:  # 8 // 3 = 2 items of each of the 3 groups
            assert len(b) == 6 and np.bincount(groups[b], minlength=3).tolist() == [2, 2, 2]
        flat = np.concatenate(batches)
        for g, n in ((0, 120), (1, 40), (2, 12)):
            mine = flat[groups[flat] == g]
            # 44 items of each group an epoch: the large group's distinct, the small one's
            # dealt again (12 items 3 times and 8 of a 4th round), each round every item once
            assert len(mine) == 44
            rounds = [mine[i : i + n] for i in range(0, 44, n)]
            assert all(len(set(r)) == len(r) for r in rounds)
            if n < 44:
                assert sorted(rounds[0]) == list(
                    range(groups.searchsorted(g), groups.searchsorted(g) + n)
                )
    sampler.set_epoch(1)
    again = ChunkBatchSampler(chunk_ids, 8, window=2, seed=1, groups=groups, balance=True)
    again.set_epoch(1)
    assert list(again) == list(sampler)  # a function of (seed, epoch)
    sampler.set_epoch(2)
    assert list(again) != list(sampler)


def test_balanced_chunk_sampler_pairs_of_groups_and_chunk_reads():
    chunk_ids, groups = _sorted_groups()
    sampler = ChunkBatchSampler(chunk_ids, 8, window=4, seed=2, groups=groups, balance=True,
                                groups_per_batch=2)  # fmt: skip
    assert sampler.group_window == 2 and sampler.cache_chunks == 6  # 2 chunks per group
    batches = [np.array(b) for b in sampler]
    pairs = [tuple(np.flatnonzero(np.bincount(groups[b], minlength=3))) for b in batches]
    assert all(np.bincount(groups[b], minlength=3).max() == 4 for b in batches)  # 4 + 4
    counts = {p: pairs.count(p) for p in set(pairs)}
    assert (
        set(counts) == {(0, 1), (0, 2), (1, 2)} and max(counts.values()) - min(counts.values()) <= 1
    )
    # the large group's items come chunk by chunk: its first 20 items from a window of 2
    big = np.concatenate([b[groups[b] == 0] for b in batches])
    assert len(set(chunk_ids[big[:20]])) == 2
    # reading an epoch through a cache of cache_chunks reads each chunk about once per round:
    # a group's stream goes through its chunks once per round of its items
    X = sp.csr_matrix(np.ones((172, 3), np.float32))
    rows = ChunkedRows(RowSource(X), chunk_size=10, cache_chunks=sampler.cache_chunks)
    for b in batches:
        for i in b:
            rows[i]
    flat = np.concatenate(batches)
    bound = 0
    for g, n in ((0, 120), (1, 40), (2, 12)):
        rounds = -(-int((groups[flat] == g).sum()) // n)
        bound += rounds * len(np.unique(chunk_ids[groups == g]))
    assert rows.n_reads <= bound < 40  # 18 chunks; not one read per minibatch (22 x 2 groups)


def test_balanced_chunk_sampler_no_shuffle_ranks_and_errors(rank_shards):
    groups = np.array([0, 0, 0, 0, 1, 1])
    plain = ChunkBatchSampler(np.arange(6) // 2, 2, shuffle=False, groups=groups, balance=True)
    # chunks in order, group 1 dealt again when its 2 items run out; 3 minibatches of 1 + 1
    assert list(plain) == [[0, 4], [1, 5], [2, 4]]
    # items not sorted by chunk (a subset's rows need not be): a group's window is its chunks
    rng = np.random.default_rng(0)
    chunk_ids, groups = rng.integers(0, 7, 100), rng.integers(0, 3, 100)
    sampler = ChunkBatchSampler(chunk_ids, 9, window=3, seed=1, groups=groups, balance=True)
    batches = list(sampler)
    assert all(np.bincount(groups[b], minlength=3).tolist() == [3, 3, 3] for b in batches)
    mine = [np.array(b)[groups[b] == 0] for b in batches]  # 3 of group 0 per minibatch
    window = np.isin(chunk_ids, chunk_ids[mine[0][0]]) & (groups == 0)  # window of 1 chunk
    whole = int(window.sum()) // 3  # minibatches filled from that window alone
    assert whole >= 1 and set(np.concatenate(mine[:whole])) <= set(np.flatnonzero(window))
    chunk_ids, groups = _sorted_groups()
    sampler = ChunkBatchSampler(chunk_ids, 8, seed=3, groups=groups, balance=True)
    everything = list(sampler)
    shards = rank_shards(sampler)
    assert len(shards[0]) == len(shards[1]) == len(sampler) == 11
    assert shards[0] + shards[1] == everything
    with pytest.raises(ValueError, match="needs groups"):
        ChunkBatchSampler(chunk_ids, 8, balance=True)
    with pytest.raises(ValueError, match="groups_per_batch=0"):
        ChunkBatchSampler(chunk_ids, 8, groups=groups, balance=True, groups_per_batch=0)
    with pytest.raises(ValueError, match="3 groups do not fit a minibatch of 2"):
        ChunkBatchSampler(chunk_ids, 2, groups=groups, balance=True)
