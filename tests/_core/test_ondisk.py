"""Out-of-core pieces: chunked row reads, chunk-shuffled reading, file faults."""

from __future__ import annotations

import inspect
import pickle
import re

import anndata as ad
import lightning.pytorch as pl
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from anndata.io import sparse_dataset

from omicformer._core import _train
from omicformer._core._chunk_sampler import ChunkBatchSampler
from omicformer._core._ondisk import ChunkedRows, RowSource, open_h5
from omicformer._core._train import run_training


@pytest.fixture
def matrix() -> sp.csr_matrix:
    rng = np.random.default_rng(0)
    X = rng.poisson(0.7, size=(103, 9)).astype(np.float32)
    X[:, 0] += np.arange(103)  # row i is recognisable from its first column
    return sp.csr_matrix(X)


@pytest.fixture
def h5ad_path(matrix, tmp_path):
    adata = ad.AnnData(matrix, layers={"dense": matrix.toarray()})
    path = tmp_path / "m.h5ad"
    adata.write_h5ad(path)
    return path


def _read_all(rows: ChunkedRows, order) -> np.ndarray:
    """Dense rows of these items, read through ``rows`` in this order."""
    out = np.zeros((len(order), rows.source.shape[1]), np.float32)
    for j, i in enumerate(order):
        cols, vals = rows[i]
        out[j, cols] = vals
    return out


# ---------------------------------------------------------------- sampler
def test_chunk_sampler_each_epoch_visits_every_item_once_in_n_chunk_reads(matrix):
    keep = np.sort(np.random.default_rng(1).choice(103, 80, replace=False))  # e.g. a train split
    rows = ChunkedRows(RowSource(matrix), rows=keep, chunk_size=10, cache_chunks=3)
    sampler = ChunkBatchSampler(rows.chunk_ids, 7, window=3, seed=4)
    n_chunks = len(np.unique(keep // 10))
    orders = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) == -(-80 // 7)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(80))  # every item exactly once
        before = rows.n_reads
        got = _read_all(rows, flat)
        assert rows.n_reads - before <= n_chunks + 3  # each chunk about once, not once per row
        np.testing.assert_array_equal(got, matrix[keep[flat]].toarray())
        orders.append(flat)
    assert orders[0] != orders[1] != orders[2]
    sampler.set_epoch(1)
    assert [i for b in sampler for i in b] == orders[1]  # a function of (seed, epoch)
    # a chunk's items are shuffled within a window of 3 chunks of <= 10 rows, not over the epoch
    chunk_seq = rows.chunk_ids[orders[0]]
    spans = [np.ptp(np.flatnonzero(chunk_seq == k)) for k in np.unique(chunk_seq)]
    assert max(spans) < 30


def test_chunk_sampler_reads_each_chunk_exactly_once_per_epoch(matrix):
    rows = ChunkedRows(RowSource(matrix), chunk_size=8, cache_chunks=4)
    sampler = ChunkBatchSampler(rows.chunk_ids, 5, window=4, seed=0)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        before = rows.n_reads
        for batch in sampler:
            for i in batch:
                rows[i]
        reads = rows.n_reads - before
        # 13 chunks; in epoch 1 a chunk still cached from the end of epoch 0 may be reused
        assert reads == 13 if epoch == 0 else 12 <= reads <= 13


def test_chunk_sampler_no_shuffle_and_ranks(matrix, rank_shards):
    plain = ChunkBatchSampler(np.arange(10) // 4, 3, shuffle=False)
    assert list(plain) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    sampler = ChunkBatchSampler(np.arange(103) // 10, 8, window=2, seed=3)
    everything = list(sampler)  # 13 batches
    shards = rank_shards(sampler)
    assert len(shards[0]) == len(shards[1]) == len(sampler) == 7  # same number of steps
    assert shards[0] + shards[1][:6] == everything  # contiguous shares, distinct batches
    assert shards[1][6] == everything[0]  # padded by repetition
    with pytest.raises(ValueError, match="batch_size"):
        ChunkBatchSampler(np.zeros(3, int), 0)


# ---------------------------------------------------------------- rows and files
def test_chunked_rows_transform_cache_and_subset(matrix):
    seen = []

    def double(chunk, first_row):
        seen.append(first_row)
        return chunk * 2

    rows = ChunkedRows(RowSource(matrix), chunk_size=10, transform=double, cache_chunks=2)
    assert len(rows) == 103
    np.testing.assert_array_equal(
        _read_all(rows, [0, 15, 1, 102]), 2 * matrix[[0, 15, 1, 102]].toarray()
    )
    assert seen == [0, 10, 100] and rows.n_reads == 3  # chunk 0 still cached for row 1
    rows[25]  # evicts chunk 0 (least recently used)
    rows[3]
    assert seen[-2:] == [20, 0]
    sub = rows.subset([50, 3, 99])
    assert sub.rows.tolist() == [3, 50, 99] and sub.n_reads == 0
    assert [k for k, _ in sub.iter_chunks()] == [0, 50, 90]
    with pytest.raises(ValueError, match="sorted"):
        ChunkedRows(RowSource(matrix), rows=np.array([5, 2]))


def test_backed_source_equals_memory_and_pickles(matrix, h5ad_path):
    backed = ad.read_h5ad(h5ad_path, backed="r")
    for layer in (None, "dense"):
        source = RowSource.from_anndata(backed, layer)
        # X streams from the file; a layer, which anndata loaded when opening it, from memory
        assert source.filename == (str(h5ad_path) if layer is None else None)
        assert source.shape == matrix.shape
        rows = ChunkedRows(source, chunk_size=16)
        order = np.random.default_rng(0).permutation(103)
        np.testing.assert_array_equal(_read_all(rows, order), matrix[order].toarray())
        assert rows.n_reads > 10
        clone = pickle.loads(pickle.dumps(rows))  # as sent to a spawned worker
        assert clone.source._file is None and not clone._cache  # X: reopens the file
        np.testing.assert_array_equal(_read_all(clone, [7]), matrix[[7]].toarray())
        clone.source.close()
        source.close()
    with pytest.raises(KeyError, match="nolayer"):
        RowSource.from_anndata(backed, "nolayer")
    with pytest.raises(ValueError, match="view"):
        RowSource.from_anndata(backed[:10], None)
    backed.file.close()


def test_backed_source_reads_the_callers_layers(matrix, h5ad_path):
    """A layer added or replaced after opening the file is read as the caller holds it."""
    backed = ad.read_h5ad(h5ad_path, backed="r")
    replaced, added = 3 * matrix, sp.csr_matrix(matrix.toarray()[:, ::-1])
    backed.layers["dense"] = replaced.toarray()
    backed.layers["added"] = added
    for layer, expected in (("dense", replaced), ("added", added)):
        rows = ChunkedRows(RowSource.from_anndata(backed, layer), chunk_size=16)
        np.testing.assert_array_equal(_read_all(rows, [0, 50, 102]),
                                      expected[[0, 50, 102]].toarray())  # fmt: skip
    view = backed[10:20]  # a view's layer is in memory too: its own rows
    rows = ChunkedRows(RowSource.from_anndata(view, "dense"), chunk_size=4)
    np.testing.assert_array_equal(_read_all(rows, [0, 9]), replaced[[10, 19]].toarray())
    backed.file.close()


def test_backed_faults_missing_read_write_and_csc(matrix, h5ad_path, tmp_path):
    backed = ad.read_h5ad(h5ad_path, backed="r")
    moved = tmp_path / "moved.h5ad"
    h5ad_path.rename(moved)
    with pytest.raises(FileNotFoundError, match=re.escape(str(h5ad_path))):
        RowSource.from_anndata(backed)
    backed.file.close()
    writable = ad.read_h5ad(moved, backed="r+")
    with pytest.raises(ValueError, match="backed='r'"):
        RowSource.from_anndata(writable)
    writable.file.close()
    csc = tmp_path / "csc.h5ad"
    ad.AnnData(sp.csc_matrix(matrix)).write_h5ad(csc)
    with pytest.raises(ValueError, match="CSC"):
        RowSource(filename=csc)


def test_file_locked_by_another_writer_gives_a_clear_error(h5ad_path, h5_writer):
    with h5_writer(h5ad_path):
        with pytest.raises(OSError, match="another process has it open for writing") as info:
            open_h5(h5ad_path)
        assert "backed='r'" in str(info.value) and str(h5ad_path) in str(info.value)
        with pytest.raises(OSError, match="Close the writer"):
            RowSource(filename=h5ad_path)
    open_h5(h5ad_path).close()  # readable once the writer is gone


# ---------------------------------------------------------------- the runner
class _Items(torch.utils.data.Dataset):
    """x -> 2x pairs that supply their own (chunked) batch sampler."""

    def __init__(self, n):
        self.x = torch.linspace(-1, 1, n)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return int(i), self.x[i]

    def make_batch_sampler(self, batch_size, *, shuffle, seed, groups=None, **balance):
        return ChunkBatchSampler(np.arange(len(self)) // 5, batch_size, window=2,
                                 shuffle=shuffle, seed=seed, groups=groups, **balance)  # fmt: skip


class _Fit(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[list[int]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch["i"].tolist())
        return ((self.w * batch["x"] - 2 * batch["x"]) ** 2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def _collate(items):
    return {"i": torch.tensor([i for i, _ in items]), "x": torch.stack([x for _, x in items])}


def test_run_training_takes_the_dataset_sampler():
    plan = _Fit()
    run_training(plan, _Items(23), _collate, batch_size=4, max_epochs=2, random_state=3,
                 accelerator="cpu", enable_progress_bar=False)  # fmt: skip
    expected = []
    for epoch in range(2):
        sampler = _Items(23).make_batch_sampler(4, shuffle=True, seed=3)
        sampler.set_epoch(epoch)
        expected += list(sampler)
    assert plan.seen == expected
    # groups (DSBN) reach the dataset's sampler: one group per minibatch
    groups = np.arange(8) % 2
    loader = _train.make_loader(_Items(8), _collate, batch_size=2, shuffle=True, groups=groups)
    assert all(len(set(groups[b])) == 1 for b in loader.batch_sampler)
    # balance_groups reaches it too: both groups in every minibatch, one item each
    loader = _train.make_loader(_Items(8), _collate, batch_size=2, shuffle=True, groups=groups,
                                balance_groups=True)  # fmt: skip
    assert loader.batch_sampler.balance
    assert all(sorted(groups[b]) == [0, 1] for b in loader.batch_sampler)
    with pytest.raises(ValueError, match="needs groups"):
        _train.make_loader(_Items(8), _collate, batch_size=2, shuffle=True, balance_groups=True)


def test_chunked_rows_keep_int32_rows_and_no_whole_indptr(h5ad_path, matrix):
    source = RowSource(filename=h5ad_path)
    rows = ChunkedRows(source, chunk_size=10)
    assert rows.rows.dtype == np.int32 and rows.chunk_ids.dtype == np.int32
    sub = rows.subset(np.array([99, 3, 50]))
    assert sub.rows.dtype == np.int32 and sub.rows.tolist() == [3, 50, 99]
    _, vals = sub[2]
    np.testing.assert_array_equal(vals, matrix[99].data)
    if "should_cache_indptr" in inspect.signature(sparse_dataset).parameters:  # anndata 0.12+
        assert not isinstance(source._open()._indptr, np.ndarray)  # read per chunk, not cached
    source.close()


# ---------------------------------------------------------------- balanced chunk sampler
