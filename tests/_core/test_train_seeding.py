"""The shared training runner's randomness: per worker, rank and epoch; the split rule."""

from types import SimpleNamespace

import anndata as ad
import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from omicformer._core._callbacks import SeedCallback
from omicformer._core._train import split_indices
from omicformer.dnabert.model import DNABert
from omicformer.scgpt.model import ScGPT

QUIET = {"accelerator": "cpu", "enable_progress_bar": False}


class Recorder(pl.Callback):
    """Keeps (epoch, a copy of the batch) for every training step."""

    def __init__(self):
        self.batches = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append((trainer.current_epoch, {k: v.clone() for k, v in batch.items()}))


# ---------------------------------------------------------------- per-worker/rank/epoch masks
def test_dnabert_masks_differ_across_workers_and_epochs():
    """Identical sequences in every item: any repeated mask means a repeated random stream.

    Before the shared runner, each DataLoader worker got a copy of one collator-owned generator,
    so with ``num_workers=2`` the first batch of worker 0 and of worker 1 had the same masks.
    """
    rng = np.random.default_rng(0)
    seq = "".join(rng.choice(list("ACGT"), 80))
    rec = Recorder()
    model = DNABert(k=3, n_layers=1, d_model=16, n_heads=2, max_len=96)
    model.pretrain([seq] * 16, max_epochs=2, batch_size=4, validation_size=0.0, num_workers=2,
                   mlm_probability=0.2, callbacks=[rec], **QUIET)  # fmt: skip
    masks = [(e, (b["labels"] != -100).numpy()) for e, b in rec.batches]
    assert len(masks) == 8  # 4 batches x 2 epochs; workers 0/1 alternate batches
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            assert not np.array_equal(masks[i][1], masks[j][1]), (i, j)


def test_scgpt_generated_genes_differ_across_workers_and_epochs():
    counts = sp.csr_matrix(np.tile(np.arange(1, 41, dtype=np.float32), (16, 1)))
    adata = ad.AnnData(counts, var=pd.DataFrame(index=[f"G{i}" for i in range(40)]))
    ScGPT.setup_anndata(adata)
    model = ScGPT(adata, d_model=16, n_layers=1, n_heads=2)
    rec = Recorder()
    model.train(max_epochs=2, batch_size=4, validation_size=0.0, num_workers=2, callbacks=[rec],
                gen_ratios=(0.5,), **QUIET)  # fmt: skip
    gens = [b["gen_genes"].numpy() for _, b in rec.batches]
    assert len(gens) == 8
    for i in range(len(gens)):
        for j in range(i + 1, len(gens)):
            assert not np.array_equal(gens[i], gens[j]), (i, j)


def test_seed_callback_streams_differ_by_rank_and_epoch():
    draws = {}
    for rank in (0, 1):
        for epoch in (0, 1):
            SeedCallback(7).on_train_epoch_start(
                SimpleNamespace(global_rank=rank, current_epoch=epoch), None
            )
            draws[rank, epoch] = torch.rand(4)
    values = list(draws.values())
    assert all(not torch.equal(a, b) for i, a in enumerate(values) for b in values[i + 1 :])
    SeedCallback(7).on_train_epoch_start(SimpleNamespace(global_rank=1, current_epoch=0), None)
    assert torch.equal(torch.rand(4), draws[1, 0])  # a function of (seed, rank, epoch) only


# ---------------------------------------------------------------- splits and samplers
def test_split_rule_hand_examples():
    train, val = split_indices(10, 0.25, random_state=0)
    assert len(val) == 2 and len(train) == 8  # floor(0.25 * 10)
    assert sorted([*train, *val]) == list(range(10))
    assert list(train) == sorted(train) and list(val) == sorted(val)
    assert len(split_indices(5, 0.1, 0)[1]) == 0  # floor(0.5): no validation
    assert np.array_equal(split_indices(10, 0.25, 3)[1], split_indices(10, 0.25, 3)[1])
    for bad in (None, 1.0, "0.1"):  # None was a bare TypeError from the comparison
        with pytest.raises(ValueError, match=rf"validation_size={bad!r} must be a number in"):
            split_indices(10, bad, 0)
    # stratified: floor(0.25 * n_c) per class: 12 -> 3, 5 -> 1, 3 -> 0 held out
    classes = np.array([0] * 12 + [1] * 5 + [2] * 3)
    train, val = split_indices(20, 0.25, 0, stratify=classes)
    assert np.bincount(classes[val], minlength=3).tolist() == [3, 1, 0]
    assert sorted([*train, *val]) == list(range(20)) and list(val) == sorted(val)
    assert np.array_equal(val, split_indices(20, 0.25, 0, stratify=classes)[1])
    with pytest.raises(ValueError, match="stratify"):
        split_indices(20, 0.25, 0, stratify=classes[:5])
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="validation_size"):
            split_indices(10, bad, 0)
