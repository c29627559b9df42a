import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from omicformer.dnabert import pp
from omicformer.dnabert.model import DNABert


def test_finetune_learns_and_records_history(finetuned, labelled):
    seqs, labels = labelled
    probs = finetuned.predict(seqs, device="cpu", progress=False)
    assert probs.shape == (32, 2)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    accuracy = np.mean(np.array(finetuned.labels_)[probs.argmax(1)] == np.array(labels))
    assert accuracy > 0.8
    # scvi-tools-style frames: one column named as the key, indexed by epoch or step
    epochs, steps = (
        finetuned.history["finetune_train_loss"],
        finetuned.history["finetune_train_loss_step"],
    )
    assert list(epochs.columns) == ["finetune_train_loss"] and epochs.index.tolist() == [0, 1, 2]
    # 32 sequences of 70 bp -> 2 windows of 64 bp each; 10% of sequences (3) held out:
    # 29 x 2 = 58 training windows / batch 8 -> 8 steps per epoch, 3 epochs
    assert steps.index.tolist() == list(range(1, 25))
    assert len(finetuned.history["finetune_validation_accuracy"]) == 3


def test_pretrain_is_reproducible_and_masks_spans(seqs, tiny, fit_kw, make_seqs):
    from omicformer.dnabert.module import SpanMaskingCollator, span_mask_tokens

    def check_spans(ids: np.ndarray, masked: np.ndarray, k: int) -> tuple[int, int]:
        """Independent span checks on one row; returns (masked, eligible) position counts.

        Position i (1..end) is the k-mer of bases i-1 .. i+k-2; [CLS] is 0, [SEP] is end+1.
        """
        end = int(np.flatnonzero(ids == 3)[0]) - 1  # last real k-mer, before [SEP]
        assert not masked[0] and not masked[end + 1 :].any()  # never [CLS]/[SEP]/[PAD]
        m = masked[1 : end + 1]
        # maximal runs of masked k-mers: >= k long unless clipped at the first / last k-mer
        edges = np.diff(np.concatenate([[0], m.astype(int), [0]]))
        for s, e in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
            assert e - s >= k or s == 0 or e == end, (s, e, k)
        # no masked k-mer is spelled out by unmasked neighbours: some base of it is covered by
        # masked k-mers only
        readable = np.zeros(end + k - 1, dtype=bool)
        for i in np.flatnonzero(~m) + 1:
            readable[i - 1 : i - 1 + k] = True
        for j in np.flatnonzero(m) + 1:
            assert not readable[j - 1 : j - 1 + k].all(), (j, k)
        return int(m.sum()), end

    # masks from the pretraining collator (k=3 as the model below), variable lengths + padding
    rows = pp.tokenize(make_seqs(64, list(range(20, 84)), seed=11), k=3)["input_ids"]
    items = [{"input_ids": torch.as_tensor(r[r != 0])} for r in rows]
    collate = SpanMaskingCollator(3, pp.vocab_size(3), seed=7)
    batch = collate(items)
    labels = batch["labels"].numpy()
    masked = labels != -100
    assert masked.any()
    np.testing.assert_array_equal(labels[masked], batch["input_ids"].new_tensor(rows)[masked])
    for r, mk in zip(rows, masked, strict=True):
        check_spans(r, mk, 3)
    is_mask = batch["input_ids"].numpy()[masked] == 4
    assert 0.7 < is_mask.mean() < 0.9  # 80% [MASK], the rest random or unchanged
    assert (batch["input_ids"].numpy()[~masked] == rows[~masked]).all()
    again = SpanMaskingCollator(3, pp.vocab_size(3), seed=7)(items)
    for key in ("input_ids", "labels"):
        assert torch.equal(again[key], batch[key])

    # every k: span property and the masked share 1 - (1 - p)^k of interior k-mers
    for k in (3, 4, 5, 6):
        rows = pp.tokenize(make_seqs(48, 120, seed=k), k=k)["input_ids"]
        g = torch.Generator().manual_seed(k)
        _, labels = span_mask_tokens(torch.as_tensor(rows), k, pp.vocab_size(k), generator=g)
        masked = labels.numpy() != -100
        for r, mk in zip(rows, masked, strict=True):
            check_spans(r, mk, k)
        interior = masked[:, k + 1 : -k - 2]
        assert abs(interior.mean() - (1 - 0.85**k)) < 0.05, (k, interior.mean())

    # reproducibility: same seeds -> same curves and weights; another masking seed differs
    def run(random_state=3):
        model = DNABert(k=3, random_state=5, **tiny)
        model.pretrain(
            seqs, max_epochs=2, batch_size=8, validation_size=0.25, random_state=random_state,
            **fit_kw,
        )  # fmt: skip
        return model

    a, b, c = run(), run(), run(random_state=4)
    assert a.history_ and a.history_.keys() == b.history_.keys()
    for key, curve in a.history_.items():
        np.testing.assert_array_equal(np.asarray(curve, float), np.asarray(b.history_[key], float))
    steps = [v for key, v in a.history_.items() if key.startswith("mlm") and "step" in key]
    assert [len(v) for v in steps] == [6]  # 18 train windows / 8 -> 3 steps x 2 epochs
    assert [len(v) for key, v in a.history_.items() if "validation" in key] == [2]
    for x, y in zip(a.module.state_dict().values(), b.module.state_dict().values(), strict=True):
        assert torch.equal(x, y)
    assert any(
        not torch.equal(x, y)
        for x, y in zip(a.module.state_dict().values(), c.module.state_dict().values(), strict=True)
    )
    np.testing.assert_array_equal(
        a.embed(seqs[:2], device="cpu", progress=False),
        b.embed(seqs[:2], device="cpu", progress=False),
    )


def test_pretrain_from_fasta_and_max_steps(genome, tiny, fit_kw):
    path, _ = genome
    model = DNABert(k=3, **tiny)
    model.pretrain(path, max_steps=3, batch_size=2, **fit_kw)
    assert model.history["mlm_train_loss_step"].index.tolist() == [1, 2, 3]
    model.pretrain(path, max_steps=2, batch_size=2, **fit_kw)  # continued: curves go on
    assert model.history["mlm_train_loss_step"].index.tolist() == [1, 2, 3, 4, 5]
    assert model.history["mlm_train_loss"].index.tolist() == [0, 1]
    with pytest.raises(ValueError, match="window_size"):
        model.pretrain(path, window_size=500, max_steps=1, **fit_kw)
    with pytest.raises(TypeError, match="not a FASTA file"):
        model.pretrain("ACGTACGT", max_steps=1, **fit_kw)


def test_resumed_pretrain_does_not_repeat_the_checkpointed_curves(seqs, tiny, fit_kw, tmp_path):
    """A ``ckpt_path="last"`` run starts with the checkpoint's curves; this model has them.

    Before, they were appended again: a 1-epoch run extended to 2 epochs from its checkpoint
    had epochs 0, 1, 2, and resuming a finished run (no training) doubled the curves.
    """
    kw = {"batch_size": 8, "validation_size": 0.0, "checkpoint_dir": tmp_path, **fit_kw}
    model = DNABert(k=3, **tiny)
    model.pretrain(seqs, max_epochs=1, **kw)  # 24 windows: 3 steps per epoch
    first = model.history["mlm_train_loss"].copy()
    model.pretrain(seqs, max_epochs=2, ckpt_path="last", **kw)
    assert model.history["mlm_train_loss"].index.tolist() == [0, 1]
    assert model.history["mlm_train_loss_step"].index.tolist() == [1, 2, 3, 4, 5, 6]
    assert model.history["mlm_train_loss"].iloc[0, 0] == first.iloc[0, 0]
    before = {k: v.copy() for k, v in model.history.items()}
    model.pretrain(seqs, max_epochs=2, ckpt_path="last", **kw)  # finished already: no training
    assert set(model.history) == set(before)
    for key, frame in before.items():
        pd.testing.assert_frame_equal(model.history[key], frame)
    # a new model resuming the checkpoint (a restarted script) gets the whole run's curves
    fresh = DNABert(k=3, **tiny)
    fresh.pretrain(seqs, max_epochs=2, ckpt_path="last", **kw)
    for key, frame in before.items():
        pd.testing.assert_frame_equal(fresh.history[key], frame)


def test_long_sequences_windowed_and_strand_symmetric(tiny, make_seqs):
    model = DNABert(k=3, **tiny)
    long, short = make_seqs(2, [300, 40], seed=3)
    kw = {"device": "cpu", "progress": False}
    emb = model.embed([long, short], **kw)
    assert emb.shape == (2, 32)
    # a short sequence equals its own single window; long = token-weighted mean over windows
    np.testing.assert_allclose(model.embed([short], **kw)[0], emb[1], rtol=1e-5, atol=1e-6)
    wins, _ = pp.split_windows([long], model.window_size, model.window_size // 4)
    per_window = model.embed(wins, **kw)
    counts = np.array([len(w) - 2 for w in wins], dtype=float)
    expected = (per_window * counts[:, None]).sum(0) / counts.sum()
    np.testing.assert_allclose(emb[0], expected, rtol=1e-4, atol=1e-5)
    both = model.embed([long], reverse_complement=True, **kw)
    flipped = model.embed([pp.reverse_complement(long)], reverse_complement=True, **kw)
    np.testing.assert_allclose(both, flipped, rtol=1e-4, atol=1e-5)
    cls = model.embed([long, short], pooling="cls", **kw)
    assert not np.allclose(cls, emb)


def test_regions_with_fasta(genome, finetuned):
    path, chroms = genome
    kw = {"device": "cpu", "progress": False}
    by_region = finetuned.predict(["chr1:10-90", "chr2_0_60(-)"], fasta=path, **kw)
    by_seq = finetuned.predict(
        [chroms["chr1"][10:90], pp.reverse_complement(chroms["chr2"][:60])], **kw
    )
    np.testing.assert_allclose(by_region, by_seq, rtol=1e-6)
    # Region objects in a tuple, or one Region, are regions (were split into their fields)
    regions = pp.parse_regions(["chr1:10-90", "chr2_0_60(-)"])
    np.testing.assert_allclose(finetuned.predict(tuple(regions), fasta=path, **kw), by_seq,
                               rtol=1e-6)  # fmt: skip
    np.testing.assert_allclose(finetuned.predict(regions[1], fasta=path, **kw), by_seq[1:],
                               rtol=1e-6)  # fmt: skip


def test_an_empty_fasta_record_is_named_as_too_short(tmp_path, finetuned):
    # its sequence is "" (as a list's "" is), not the interval s_empty:0-0
    path = tmp_path / "seqs.fa"
    path.write_text(">s_full\nACGTACGTACGTAC\n>s_empty\n>s_last\nACGTACGTAC\n")
    with pytest.raises(ValueError, match=r"Sequence 's_empty' has 0 bases, shorter than k"):
        finetuned.predict(str(path), device="cpu", progress=False)


def test_bad_inputs(tmp_path, finetuned, labelled, tiny, fit_kw):
    seqs, labels = labelled
    with pytest.raises(ValueError, match="labels has 31 entries but there are 32"):
        finetuned.finetune(seqs, labels[:-1], max_epochs=1, **fit_kw)
    with pytest.raises(ValueError, match="at least two classes"):
        finetuned.finetune(seqs, ["a"] * 32, max_epochs=1, **fit_kw)
    with pytest.raises(ValueError, match="no classification head"):
        DNABert(k=3, **tiny).predict(seqs)
    with pytest.raises(ValueError, match="pooling"):
        finetuned.embed(seqs, pooling="max")
    with pytest.raises(ValueError, match=r"'seq_1' has invalid character 'X'"):
        finetuned.embed(["ACGTACGT", "ACGXA"])
    with pytest.raises(ValueError, match="shorter than k=3"):
        finetuned.predict(["AC"])
    with pytest.raises(ValueError, match="3, 4, 5 or 6"):
        DNABert(k=8)
    with pytest.raises(ValueError, match="classification head"):
        finetuned.pretrain(seqs, max_steps=1, **fit_kw)
    (tmp_path / "afile").write_text("")
    with pytest.raises(FileExistsError, match="afile is a file; a model is saved as a folder"):
        finetuned.save(tmp_path / "afile")
    with pytest.raises(FileNotFoundError, match=r"afile' is a file; a DNABERT model is a folder"):
        DNABert.load(tmp_path / "afile")  # was "folder ... does not exist"


def test_inputs_that_read_wrongly_or_failed_unclearly(finetuned, labelled, tiny, fit_kw):
    seqs, labels = labelled
    four = dict(zip("abcd", labels[:4], strict=True))  # names no sequence has
    with pytest.raises(TypeError, match=r"labels is a mapping; give one label per sequence"):
        finetuned.finetune(seqs, four, max_epochs=1, **fit_kw)
    for shape, match in (((32, 1), r"\(32, 1\).*ravel"), ((32, 2), r"\(32, 2\).*argmax")):
        with pytest.raises(ValueError, match=match):  # was "unhashable type: 'numpy.ndarray'"
            finetuned.finetune(seqs, np.zeros(shape, int), max_epochs=1, **fit_kw)
    long = "ACGT" * 100  # one sequence of 400 bases, not wrapped in a list
    with pytest.raises(TypeError, match="is not a FASTA file; pass sequences as a list"):
        finetuned.predict(long)  # was OSError: File name too long
    frame = pd.DataFrame({"sequence": seqs[:3], "label": labels[:3]})
    with pytest.raises(TypeError, match=r"got a DataFrame .*df\['sequence'\]"):
        finetuned.predict(frame)
    with pytest.raises(ValueError, match="reverse_complement='False' must be True or False"):
        finetuned.predict(seqs[:2], reverse_complement="False")  # read as True
    with pytest.raises(ValueError, match="No sequences to train on"):
        DNABert(k=3, **tiny).pretrain([], max_steps=1, **fit_kw)  # said: too many N bases


def test_finetune_reads_labels_by_sequence_name_and_keeps_rare_classes_in_training(
    labelled, tiny, fit_kw, monkeypatch
):
    from omicformer.dnabert.model import _training

    seqs, labels = labelled
    named = {f"r{i}": s for i, s in enumerate(seqs)}
    by_name = dict(reversed(list(zip(named, labels, strict=True))))  # another order
    trained = []
    split = _training.split_indices

    def spy(n, size, seed, stratify=None):
        train, val = split(n, size, seed, stratify=stratify)
        trained.append(sorted({labels_now[i] for i in train}))
        return train, val

    monkeypatch.setattr(_training, "split_indices", spy)
    labels_now = labels
    model = DNABert(k=3, **tiny)
    model.finetune(named, by_name, max_epochs=1, validation_size=0.2, **fit_kw)
    assert model.labels_ == ["at", "gc"]  # not the 32 sequence names
    # one sequence of a class among 20: held out by a plain random 10% split on seed 0
    labels_now = ["bg"] * 19 + ["promoter"]
    rare = DNABert(k=3, **tiny)
    rare.finetune(seqs[:20], labels_now, max_epochs=1, validation_size=0.1, **fit_kw)
    assert trained[-1] == ["bg", "promoter"]
    # four classes of 5: no class has a share to hold out; as many as a plain split (2) are
    labels_now = [c for c in "abcd" for _ in range(5)]  # so early stopping still has data
    small = DNABert(k=3, **tiny)
    small.finetune(seqs[:20], labels_now, max_epochs=1, validation_size=0.1, early_stopping=True,
                   **fit_kw)  # fmt: skip
    assert len(small.history["finetune_validation_loss"]) == 1


def test_a_generator_of_sequences_reads_as_its_list(finetuned, labelled):
    seqs, _ = labelled
    expected = finetuned.predict(seqs[:4])
    got = finetuned.predict(s for s in seqs[:4])  # was "Sequence 'seq_0' is <generator ...>"
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


@pytest.mark.parametrize("batch_size", [0, -1, 2.0])
def test_embed_batch_size_must_be_a_positive_integer(finetuned, batch_size):
    with pytest.raises(ValueError, match=rf"batch_size={batch_size!r} must be an integer >= 1"):
        finetuned.embed(["ACGTACGT"], batch_size=batch_size, device="cpu", progress=False)


@pytest.mark.parametrize("max_len", [2, 0, 3.0, None])
def test_max_len_too_small_refused_up_front(max_len):
    # [CLS], one k-mer and [SEP]: 3 positions at least (2 was accepted, failing at first use)
    match = rf"max_len={max_len!r} must be an integer >= 3 \(\[CLS\], one k-mer and \[SEP\]\)"
    with pytest.raises(ValueError, match=match):
        DNABert(k=3, n_layers=1, d_model=8, n_heads=2, max_len=max_len)


def test_smallest_max_len_works():
    model = DNABert(k=3, n_layers=1, d_model=8, n_heads=2, max_len=3)
    assert model.window_size == 3  # one 3-mer per window: 3 - 2 + 3 - 1
    assert model.embed(["ACGTAC"], device="cpu", progress=False).shape == (1, 8)


@pytest.mark.parametrize("window_overlap", [10.7, 10.0, -1, "10"])
def test_window_overlap_must_be_an_integer(finetuned, window_overlap):
    long = "ACGT" * 40  # 160 bp: several windows of the tiny model's 64 bp
    kw = {"window_overlap": window_overlap, "device": "cpu", "progress": False}
    match = rf"window_overlap={window_overlap!r} must be an integer >= 0"
    with pytest.raises(ValueError, match=match):  # 10.7 was cut to 10 silently
        finetuned.predict([long], **kw)
    with pytest.raises(ValueError, match=match):
        finetuned.embed([long], **kw)


def test_window_overlap_integer_types_and_upper_bound(finetuned):
    long = "ACGT" * 40
    kw = {"device": "cpu", "progress": False}
    np.testing.assert_array_equal(
        finetuned.predict([long], window_overlap=np.int64(10), **kw),
        finetuned.predict([long], window_overlap=10, **kw),
    )
    # window of max_len=64, k=3: 64 - 2 + 3 - 1 = 64 bases
    with pytest.raises(
        ValueError, match="window_overlap=64 must be smaller than the model's window of 64"
    ):
        finetuned.embed([long], window_overlap=64, **kw)


def test_pretrain_window_arguments_must_be_integers(tiny, fit_kw, seqs):
    model = DNABert(k=3, **tiny)
    with pytest.raises(ValueError, match=r"window_size=30.5 must be an integer"):  # was cut to 30
        model.pretrain(seqs, window_size=30.5, max_steps=1, **fit_kw)
    with pytest.raises(ValueError, match=r"window_overlap=2.5 must be an integer >= 0"):
        model.pretrain(seqs, window_size=30, window_overlap=2.5, max_steps=1, **fit_kw)
    for p in (2.0, 0, "0.15"):  # was torch's "Expected p_in >= 0 && p_in <= 1" from training
        with pytest.raises(
            ValueError, match=rf"mlm_probability={p!r} must be a number in \(0, 1\)"
        ):
            model.pretrain(seqs, mlm_probability=p, max_steps=1, **fit_kw)
    assert model.history == {}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size=0"),
        ({"max_epochs": None}, "max_epochs or max_steps"),
        ({"early_stopping": True, "validation_size": 0}, "early_stopping=True"),
        ({"ckpt_path": "last"}, "checkpoint_dir"),
        ({"no_such_trainer_argument": 1}, "no_such_trainer_argument"),
        ({"window_overlap": 2.5}, r"window_overlap=2.5 must be an integer >= 0"),
    ],
)
def test_refused_finetune_keeps_the_masked_lm_head(tiny, fit_kw, labelled, kwargs, match):
    seqs, labels = labelled
    model = DNABert(k=3, **tiny)
    module = model.module
    with pytest.raises((ValueError, TypeError), match=match):
        model.finetune(seqs, labels, **{**fit_kw, **kwargs})
    assert model.task == "mlm"
    assert model.labels_ is None
    assert model.module is module
    assert type(model.module).__name__ == "BertForMaskedLM"


def test_categorical_series_labels_keep_their_order(tiny, fit_kw, labelled):
    seqs, labels = labelled  # "gc" then "at": sorted order would be ["at", "gc"]
    model = DNABert(k=3, **tiny)
    series = pd.Series(pd.Categorical(labels, categories=["gc", "at"]))
    model.finetune(seqs, series, max_steps=1, batch_size=8, **fit_kw)
    assert model.labels_ == ["gc", "at"]


@pytest.mark.parametrize(
    ("labels", "label_names"),
    [([1] * 32, None), ([1] * 32, ["background", "promoter"]), (["a"] * 32, ["a", "b"])],
)
def test_labels_of_one_class_refused(tiny, fit_kw, labelled, labels, label_names):
    seqs, _ = labelled
    model = DNABert(k=3, **tiny)
    with pytest.raises(ValueError, match="at least two classes; every label is"):
        model.finetune(seqs, labels, label_names=label_names, max_steps=1, **fit_kw)
    assert model.task == "mlm"


@pytest.mark.parametrize("labels", [[0, 1] * 16, ["a", "b"] * 16])
def test_repeated_label_names_refused(tiny, fit_kw, labelled, labels):
    seqs, _ = labelled
    model = DNABert(k=3, **tiny)
    with pytest.raises(ValueError, match=r"label_names repeats \['a'\]"):
        model.finetune(seqs, labels, label_names=["a", "a"], max_steps=1, **fit_kw)


def test_training_defaults_are_the_official_recipes():
    """Official DNABERT README runs: pretraining lr 4e-4, weight decay 0.01, warmup 10,000 of
    200,000 steps, AdamW betas 0.9/0.98, eps 1e-6; fine-tuning lr 2e-4, weight decay 0.01,
    warmup_percent 0.1, batch 32; both clip gradients at max_grad_norm 1.0."""
    import inspect

    from omicformer._core._train import run_training
    from omicformer.dnabert.train import DNABertTrainingPlan

    def defaults(fn):
        return {n: p.default for n, p in inspect.signature(fn).parameters.items()}

    pre, fine = defaults(DNABert.pretrain), defaults(DNABert.finetune)
    assert (pre["lr"], pre["weight_decay"], pre["warmup_ratio"]) == (4e-4, 0.01, 10_000 / 200_000)
    plan = defaults(DNABertTrainingPlan.__init__)
    assert (plan["betas"], plan["eps"]) == ((0.9, 0.98), 1e-6)
    assert (fine["lr"], fine["weight_decay"], fine["warmup_ratio"]) == (2e-4, 0.01, 0.1)
    assert fine["batch_size"] == 32
    assert defaults(run_training)["gradient_clip_val"] == 1.0


def test_finetune_and_pretrain_use_the_official_adamw_settings(tiny, fit_kw, labelled):
    # run_finetune.py: AdamW(lr, eps=adam_epsilon 1e-8), betas torch's (0.9, 0.999);
    # the README's pretraining run: --beta1 0.9 --beta2 0.98 --adam_epsilon 1e-6
    import lightning.pytorch as pl

    class Optimiser(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            self.defaults = dict(trainer.optimizers[0].defaults)

    seqs, labels = labelled
    seen = {}
    for stage in ("pretrain", "finetune"):
        model, cb = DNABert(k=3, **tiny), Optimiser()
        args = (seqs,) if stage == "pretrain" else (seqs, labels)
        kw = {**fit_kw, "max_steps": 1, "max_epochs": None, "validation_size": 0.0}
        getattr(model, stage)(*args, callbacks=[cb], **kw)
        seen[stage] = (cb.defaults["betas"], cb.defaults["eps"])
    assert seen == {"pretrain": ((0.9, 0.98), 1e-6), "finetune": ((0.9, 0.999), 1e-8)}


def test_sequences_without_a_known_kmer_are_named(finetuned):
    # every k-mer of "NNNN...RYACN" holds an ambiguous base: the model reads only [UNK]
    seqs = pd.Series(["ACGTACGTAC" * 3, "N" * 30, "ACNGTRYACN" * 3], index=["ok", "gap", "iupac"])
    with pytest.warns(UserWarning, match=r"2 of 3 sequences \(e.g. gap, iupac\) have no 3-mer"):
        finetuned.predict(seqs, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        finetuned.predict(["ACGTN" * 6], progress=False)  # one known 3-mer is enough


def test_learning_rate_schedule_is_the_official_linear_warmup(tiny, fit_kw, labelled):
    # run_finetune.py: get_linear_schedule_with_warmup(warmup_steps=int(0.1 * t_total)): the
    # rate of optimizer step s is lr * s / warmup while s < warmup (0 at the first step), then
    # lr * (t_total - s) / (t_total - warmup)
    import lightning.pytorch as pl

    class Rates(pl.Callback):
        def __init__(self):
            self.rates, self.total = [], None

        def on_train_start(self, trainer, pl_module):
            self.total = int(trainer.estimated_stepping_batches)

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.rates.append(trainer.optimizers[0].param_groups[0]["lr"])

    seqs, labels = labelled
    cb = Rates()
    kw = {**fit_kw, "max_steps": None, "max_epochs": 5, "batch_size": 8, "validation_size": 0.0}
    DNABert(k=3, **tiny).finetune(seqs, labels, lr=1e-3, warmup_ratio=0.3, callbacks=[cb], **kw)
    total = cb.total
    warmup = int(0.3 * total)
    official = [
        1e-3 * (s / warmup if s < warmup else (total - s) / (total - warmup)) for s in range(total)
    ]
    assert len(cb.rates) == total and warmup >= 5 and cb.rates[0] == 0.0
    np.testing.assert_allclose(cb.rates, official, rtol=1e-12, atol=1e-15)


def test_an_interrupted_run_leaves_the_model_as_it_was(labelled, seqs, tiny, fit_kw):
    # Ctrl-C (Lightning ended the fit with SystemExit, now a KeyboardInterrupt again): finetune
    # kept the half-trained classification head, and pretrain left the module in train mode
    import lightning.pytorch as pl

    class CtrlC(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 1:
                raise KeyboardInterrupt

    model = DNABert(k=3, **tiny)
    with pytest.raises(KeyboardInterrupt):
        model.finetune(*labelled, max_steps=3, batch_size=8, callbacks=[CtrlC()], **fit_kw)
    assert model.task == "mlm" and model.labels_ is None and not model.module.training
    with pytest.raises(ValueError, match="no classification head"):
        model.predict(labelled[0][:2], progress=False)
    with pytest.raises(KeyboardInterrupt):
        model.pretrain(seqs, max_steps=3, batch_size=4, callbacks=[CtrlC()], **fit_kw)
    assert not model.module.training
    model.pretrain(seqs, max_steps=1, batch_size=4, **fit_kw)  # usable afterwards
