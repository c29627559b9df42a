"""DNABert.pretrain's windows, its loss where masking drew no span, and its argument checks."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from omicformer.dnabert.model import DNABert
from omicformer.dnabert.model._inputs import windows_for_training


def test_training_windows_do_not_overlap_and_keep_the_remainder():
    # the docs promise non-overlapping windows; the last one was aligned to the sequence end,
    # repeating 58 of the 64 bases of the window before it (in training and validation alike)
    seq = "".join("ACGT"[i % 4] for i in range(70))
    windows, owner = windows_for_training([seq, seq[:64], seq[:65]], 3, window=64)
    assert windows == [seq[:64], seq[64:70], seq[:64], seq[:64]]  # 65: remainder of 1 < k
    assert owner.tolist() == [0, 0, 1, 2]
    windows, _ = windows_for_training([seq], 3, window=64, overlap=4)  # starts 0, 60
    assert windows == [seq[:64], seq[60:70]]
    with pytest.raises(ValueError, match="window_overlap=64 must satisfy"):
        windows_for_training([seq], 3, window=64, overlap=64)


def test_mlm_loss_is_the_mean_over_masked_kmers_and_zero_without_any():
    from omicformer.dnabert.train import DNABertTrainingPlan

    model = DNABert(k=3, n_layers=1, d_model=16, n_heads=2, max_len=16)
    plan = DNABertTrainingPlan(model.module)
    ids = torch.randint(5, 69, (2, 10))
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP]
    labels = torch.full_like(ids, -100)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    loss, logits, n = plan._loss(batch)  # cross_entropy's mean over nothing was NaN
    assert n == 0 and loss.item() == 0.0 and loss.requires_grad
    labels[0, 2:5], labels[1, 4] = ids[0, 2:5], ids[1, 4]
    loss, logits, n = plan._loss(batch)
    expected = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())  # the HF mean
    assert n == 4
    torch.testing.assert_close(loss, expected)


def test_pretrain_curves_stay_finite_when_batches_mask_nothing(make_seqs, tiny, fit_kw):
    # k=3, 8-base sequences, one per batch, few span centres: most batches mask nothing, and
    # every epoch mean (training and validation) was NaN
    model = DNABert(k=3, **tiny)
    model.pretrain(make_seqs(40, 8, seed=5), mlm_probability=0.02, batch_size=1, max_epochs=2,
                   validation_size=0.25, **fit_kw)  # fmt: skip
    for key in ("mlm_train_loss", "mlm_validation_loss"):
        values = model.history[key][key].to_numpy()
        assert len(values) == 2 and np.isfinite(values).all(), (key, values)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_unknown_fraction": float("nan")}, r"max_unknown_fraction=nan must be a number"),
        ({"max_unknown_fraction": -1}, r"max_unknown_fraction=-1 must be a number in \[0, 1\]"),
        ({"random_state": -1}, "random_state"),
        ({"weight_decay": -1.0}, "weight_decay=-1.0"),
        ({"lr": -1e-4}, r"lr=-0.0001 must be a number >= 0"),
        ({"warmup_ratio": -1.0}, r"warmup_ratio=-1.0 must be a number in \[0, 1\)"),
        ({"warmup_ratio": 5}, r"warmup_ratio=5 must be a number in \[0, 1\)"),
        ({"num_workers": 1.5}, r"num_workers=1.5 must be an integer >= 0"),
    ],
)
def test_pretrain_refuses_bad_arguments_before_any_work(seqs, tiny, fit_kw, kwargs, match):
    model = DNABert(k=3, **tiny)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        model.pretrain(seqs, max_steps=1, **kwargs, **fit_kw)
    after = model.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_max_steps_wins_over_the_default_max_epochs(seqs, tiny, fit_kw):
    # as the docstring says (max_epochs=1, the default, stopped it after one epoch: 3 steps)
    model = DNABert(k=3, **tiny)
    model.pretrain(seqs, max_steps=5, batch_size=8, **fit_kw)
    assert model.history["mlm_train_loss_step"].index.tolist() == [1, 2, 3, 4, 5]
