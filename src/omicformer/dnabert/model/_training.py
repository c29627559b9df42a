"""Training for :class:`DNABert`: span-masked MLM pretraining and classification fine-tuning."""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..._core._callbacks import History, extend_history
from ..._core._checks import check_int
from ..._core._deprecation import renamed_kwargs
from ..._core._fit_checks import check_fit_args, is_real
from ..._core._train import VALIDATION_SIZE, run_training, split_indices
from .._genome import Genome
from .._kmers import check_sequences, vocab_size
from .._windows import split_windows
from ..module import (
    CLASSIFICATION,
    MLM,
    POOLINGS,
    SpanMaskingCollator,
    TokenDataset,
    build_bert,
    classification_collate,
    classifier_pooling,
)
from ._inference import default_overlap
from ._inputs import (
    SequenceInput,
    encode_labels,
    resolve_sequences,
    tokenize_windows,
    windows_for_training,
)

Fasta = str | os.PathLike[str] | Genome


#: AdamW betas and eps of the official fine-tuning (``run_finetune.py``, torch's defaults).
FINETUNE_BETAS, FINETUNE_EPS = (0.9, 0.999), 1e-8


def check_optimiser(lr: Any, warmup_ratio: Any) -> None:
    """``ValueError`` unless ``lr >= 0`` (0 freezes the weights) and ``warmup_ratio`` in [0, 1)."""
    if not is_real(lr) or not lr >= 0:
        msg = f"lr={lr!r} must be a number >= 0 (the optimiser's learning rate)."
        raise ValueError(msg)
    if not is_real(warmup_ratio) or not 0 <= warmup_ratio < 1:
        msg = (
            f"warmup_ratio={warmup_ratio!r} must be a number in [0, 1) (the share of the "
            "optimiser steps with a linear warmup)."
        )
        raise ValueError(msg)


class TrainingMixin:
    """``pretrain`` and ``finetune`` for :class:`~omicformer.dnabert.model.DNABert`.

    Both run a Lightning :class:`~omicformer.dnabert.train.DNABertTrainingPlan` (CPU, one GPU
    or several with DDP, unchanged) through the shared runner
    (:func:`omicformer._core._train.run_training`) and store their curves in ``history``.
    """

    k: int
    module: torch.nn.Module
    task: str
    labels_: list[str] | None
    history_: History
    window_size: int

    @renamed_kwargs(trainer_kwargs="**")
    def pretrain(
        self,
        sequences_or_fasta: SequenceInput,
        *,
        max_epochs: int | None = 1,
        max_steps: int | None = None,
        batch_size: int = 32,
        lr: float = 4e-4,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.05,
        mlm_probability: float = 0.15,
        window_size: int | None = None,
        window_overlap: int = 0,
        max_unknown_fraction: float = 0.1,
        validation_size: float = VALIDATION_SIZE,
        early_stopping: bool = False,
        early_stopping_patience: int = 5,
        accelerator: str = "auto",
        devices: int | str | list[int] = "auto",
        num_nodes: int = 1,
        strategy: str = "auto",
        precision: str | int | None = "auto",
        num_workers: int = 0,
        random_state: int = 0,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        ckpt_path: str | os.PathLike[str] | None = None,
        enable_progress_bar: bool = True,
        **trainer_kwargs: Any,
    ) -> None:
        """Pretrain (or continue pretraining) with DNABERT's span-masked language modelling.

        Sequences are cut into non-overlapping windows (``window_size`` bases, default the
        model maximum; a sequence's last window is its remainder, dropped when shorter than
        k bases) and masked on the fly: centres with probability ``mlm_probability``,
        each expanded to a span of k k-mers, 80/10/10 ``[MASK]``/random/unchanged.

        Parameters
        ----------
        sequences_or_fasta
            A list of DNA strings (or dict name -> sequence), a FASTA path (plain, bgzip or
            gzip) or a :class:`~omicformer.dnabert.pp.Genome`.
        max_epochs, max_steps
            Training length; ``max_steps`` (optimizer steps) wins when both are given.
        batch_size
            Windows per batch (per device).
        lr, weight_decay, warmup_ratio
            AdamW (betas 0.9/0.98, eps 1e-6 as the DNABERT pretraining run) with linear warmup
            over ``warmup_ratio`` of the steps and linear decay.
        mlm_probability
            Span-centre probability (official ``run_pretrain.py`` default 0.15). Each centre
            masks a span of k k-mers, so about ``1 - (1 - p) ** k`` of the k-mers are masked
            (62% for k=6 at 0.15); the official README's DNABERT-6 pretraining command passes
            0.025, which masks about 14%, the paper's "15%".
        window_size, window_overlap
            Window length in bases (at most :attr:`window_size`) and the bases consecutive
            windows share (with an overlap, held-out windows can share bases with training
            windows).
        max_unknown_fraction
            Windows with a larger fraction of N/IUPAC bases are skipped.
        validation_size
            Fraction of windows held out (shared rule: ``floor(validation_size * n)``); their
            MLM loss, with masks fixed across epochs, is ``validation_loss``.
        early_stopping, early_stopping_patience
            Stop when ``validation_loss`` has not improved for that many epochs and restore
            the best epoch's weights.
        accelerator, devices, num_nodes, strategy, precision
            Lightning settings; several devices or nodes use DDP. ``precision="auto"``: bf16
            mixed precision on GPUs that support it, else 32-bit.
        num_workers
            DataLoader workers (each draws its own masks).
        random_state
            Seeds shuffling, masking (per worker, DDP rank and epoch) and dropout.
        checkpoint_dir, ckpt_path
            Write Lightning checkpoints (``last.ckpt``) to ``checkpoint_dir`` every epoch;
            ``ckpt_path="last"`` resumes from there.
        enable_progress_bar
            Show Lightning's progress bar.
        **trainer_kwargs
            Further :class:`lightning.pytorch.Trainer` arguments (``trainer_kwargs=dict(...)``
            is deprecated).

        Notes
        -----
        The run's curves go to :attr:`history` with an ``mlm_`` prefix: ``mlm_train_loss``
        (per epoch), ``mlm_train_loss_step`` (per step), ``mlm_validation_loss``; a further
        ``pretrain`` call continues them (epochs and steps numbered on).
        """
        from ..train import DNABertTrainingPlan

        if self.task != MLM:
            msg = (
                "This model has a classification head; pretrain a masked-LM model (a fresh "
                "DNABert or a pretrained MLM checkpoint) before fine-tuning."
            )
            raise ValueError(msg)
        check_fit_args(batch_size=batch_size, max_epochs=max_epochs, max_steps=max_steps,
                       validation_size=validation_size, weight_decay=weight_decay,
                       early_stopping_patience=early_stopping_patience, random_state=random_state,
                       num_workers=num_workers, trainer_kwargs=trainer_kwargs)  # fmt: skip
        check_optimiser(lr, warmup_ratio)
        if not is_real(max_unknown_fraction) or not 0 <= max_unknown_fraction <= 1:
            msg = (
                f"max_unknown_fraction={max_unknown_fraction!r} must be a number in [0, 1] (the "
                "largest share of N/IUPAC bases a training window may hold)."
            )
            raise ValueError(msg)
        window = self.window_size if window_size is None else check_int("window_size", window_size)
        window_overlap = check_int("window_overlap", window_overlap, minimum=0, hint="bases")
        real = isinstance(mlm_probability, int | float | np.integer | np.floating)
        real = real and not isinstance(mlm_probability, bool)
        if not real or not 0 < mlm_probability < 1:
            msg = (
                f"mlm_probability={mlm_probability!r} must be a number in (0, 1) (the share of "
                "span centres; the official default is 0.15)."
            )
            raise ValueError(msg)
        if not self.k <= window <= self.window_size:
            msg = f"window_size={window} must be between k={self.k} and {self.window_size} bases."
            raise ValueError(msg)
        seqs, names = resolve_sequences(sequences_or_fasta)
        windows, _ = windows_for_training(
            seqs,
            self.k,
            window=window,
            overlap=window_overlap,
            max_unknown_fraction=max_unknown_fraction,
            names=names,
        )
        ids, lengths = tokenize_windows(windows, self.k)
        train_idx, val_idx = split_indices(len(ids), validation_size, random_state)
        n_vocab = vocab_size(self.k)
        plan = DNABertTrainingPlan(
            self.module, MLM, lr=lr, weight_decay=weight_decay, warmup_ratio=warmup_ratio
        )
        with self._at_rest_after():
            history = run_training(
                plan,
                TokenDataset(ids[train_idx], lengths[train_idx]),
                SpanMaskingCollator(self.k, n_vocab, mlm_probability=mlm_probability),
                val=TokenDataset(ids[val_idx], lengths[val_idx]),
                val_collate_fn=SpanMaskingCollator(
                    self.k, n_vocab, mlm_probability=mlm_probability, seed=random_state
                ),
                batch_size=batch_size,
                max_epochs=None if max_steps is not None else max_epochs,  # max_steps wins
                max_steps=max_steps,
                accelerator=accelerator,
                devices=devices,
                num_nodes=num_nodes,
                strategy=strategy,
                precision=precision,
                num_workers=num_workers,
                random_state=random_state,
                early_stopping=early_stopping,
                early_stopping_patience=early_stopping_patience,
                checkpoint_dir=checkpoint_dir,
                ckpt_path=ckpt_path,
                enable_progress_bar=enable_progress_bar,
                **trainer_kwargs,
            )
        self._record("mlm", history)

    @renamed_kwargs(trainer_kwargs="**")
    def finetune(
        self,
        sequences_or_regions: SequenceInput,
        labels: Any,
        *,
        fasta: Fasta | None = None,
        num_labels: int | None = None,
        label_names: Sequence[str] | None = None,
        max_epochs: int | None = 3,
        max_steps: int | None = None,
        batch_size: int = 32,
        lr: float = 2e-4,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        class_weight: str | None = None,
        pooling: str | None = None,
        window_overlap: int | None = None,
        validation_size: float = VALIDATION_SIZE,
        early_stopping: bool = False,
        early_stopping_patience: int = 5,
        accelerator: str = "auto",
        devices: int | str | list[int] = "auto",
        num_nodes: int = 1,
        strategy: str = "auto",
        precision: str | int | None = "auto",
        num_workers: int = 0,
        random_state: int = 0,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        ckpt_path: str | os.PathLike[str] | None = None,
        enable_progress_bar: bool = True,
        **trainer_kwargs: Any,
    ) -> None:
        """Fine-tune for binary or multi-class sequence classification.

        A masked-LM model gets a new ``BertForSequenceClassification`` head (the encoder
        weights are kept, the MLM head is dropped; save it first if you need it). A refused
        argument or a failed run keeps the model's former head and classes. Sequences
        longer than one window are split into overlapping windows that inherit the label;
        :meth:`predict` averages window probabilities the same way.

        Parameters
        ----------
        sequences_or_regions
            DNA strings, or region strings (``chr1:100-600``) when ``fasta`` is given.
        labels
            One label per sequence, in their order: integers ``0..C-1``, or strings /
            categories (classes in sorted or categorical order, of a :class:`pandas.Categorical`
            or a categorical Series, read by position); or a mapping (a dict) from every
            sequence's name (the keys or index of the sequences given) to its label. At least
            two classes must occur.
        fasta
            Genome to fetch regions from.
        num_labels
            Number of classes; default: inferred from ``labels``.
        label_names
            Class names in output order, e.g. ``["background", "promoter"]`` for integer
            labels 0/1 (they name the ``tl.predict`` columns); for string labels, their order.
        max_epochs, max_steps, batch_size, lr, weight_decay, warmup_ratio
            Training length and AdamW with linear warmup/decay (official DNABERT fine-tuning
            used lr 2e-4, 10% warmup, weight decay 0.01; AdamW's betas 0.9/0.999 and eps 1e-8
            as its ``run_finetune.py``, where pretraining used 0.9/0.98 and 1e-6).
        class_weight
            ``"balanced"`` weights the loss by inverse class frequency; ``None`` does not.
        pooling
            What the head classifies: ``"cls"``, BERT's pooler on the ``[CLS]`` state (official
            DNABERT), or ``"mean"``, the same pooler on the mean of the k-mer states. ``None``
            (default) takes the model's ``config.classifier_pooling`` (the shipped default MLM
            says ``"mean"``: its ``[CLS]`` state carries too little to fine-tune from, see the
            DNABERT guide), else ``"cls"``. Kept in the saved ``config.json``.
        window_overlap
            Overlap (bases) of windows of long sequences; default a quarter window.
        validation_size
            Fraction of *sequences* held out (split before windowing, so no window leaks), of
            each class on its own: ``floor(validation_size * n)`` of a class of ``n``; when
            that holds out none (every class small), ``floor(validation_size * N)`` of all
            ``N`` at random, a class never held out whole.
        early_stopping, early_stopping_patience, accelerator, devices, num_nodes, strategy, precision, num_workers, random_state, checkpoint_dir, ckpt_path, enable_progress_bar, **trainer_kwargs
            As in :meth:`pretrain`; ``random_state`` also seeds the new head.

        Notes
        -----
        The run's curves go to :attr:`history` with a ``finetune_`` prefix
        (``finetune_train_loss``, ``finetune_validation_accuracy``, ...).
        """
        from ..train import DNABertTrainingPlan

        check_fit_args(batch_size=batch_size, max_epochs=max_epochs, max_steps=max_steps,
                       validation_size=validation_size, weight_decay=weight_decay,
                       early_stopping_patience=early_stopping_patience, random_state=random_state,
                       num_workers=num_workers, trainer_kwargs=trainer_kwargs)  # fmt: skip
        check_optimiser(lr, warmup_ratio)
        seqs, names = resolve_sequences(sequences_or_regions, fasta=fasta)
        if (
            isinstance(labels, Mapping)
            and len(labels) == len(names)
            and set(names) <= set(map(str, labels))
        ):  # labels by sequence name (the keys of a mapping of sequences, say)
            by_name = {str(key): value for key, value in labels.items()}
            labels = [by_name[name] for name in names]
        codes, classes = encode_labels(
            labels, len(seqs), num_labels, self._reusable_labels(), label_names
        )
        if class_weight not in (None, "balanced"):
            msg = f"class_weight={class_weight!r} must be None or 'balanced'."
            raise ValueError(msg)
        if pooling is None:
            pooling = classifier_pooling(self.module.config)
        elif pooling not in POOLINGS:
            msg = f"pooling={pooling!r} must be one of {POOLINGS} (or None for the model's own)."
            raise ValueError(msg)
        check_sequences(seqs, self.k, names=names)
        # each class held out in proportion: a rare class is never left out of training
        train_seq, val_seq = split_indices(len(seqs), validation_size, random_state, stratify=codes)
        if not len(val_seq):
            # every class too small for its share: as many as a plain split holds out, but no
            # class held out whole (its held-out sequences go back to training)
            train_seq, val_seq = split_indices(len(seqs), validation_size, random_state)
            whole = np.isin(codes[val_seq], np.setdiff1d(codes, codes[train_seq]))
            train_seq = np.sort(np.concatenate([train_seq, val_seq[whole]]))
            val_seq = val_seq[~whole]
        overlap = (
            default_overlap(self.window_size)
            if window_overlap is None
            else check_int("window_overlap", window_overlap, minimum=0, hint="bases")
        )

        def dataset(index: np.ndarray) -> TokenDataset:
            windows, owner = split_windows([seqs[i] for i in index], self.window_size, overlap)
            ids, lengths = tokenize_windows(windows, self.k)
            return TokenDataset(ids, lengths, labels=codes[index][owner])

        train = dataset(train_seq)
        weight = None
        if class_weight == "balanced":
            counts = np.bincount(train.labels.numpy(), minlength=len(classes)).astype(float)
            weight = torch.as_tensor(counts.sum() / (len(classes) * np.maximum(counts, 1)))
        val = dataset(val_seq) if len(val_seq) else None
        before = self.module, self.task, self.labels_
        self._set_classifier(classes, random_state, pooling)
        try:
            plan = DNABertTrainingPlan(
                self.module,
                CLASSIFICATION,
                lr=lr,
                weight_decay=weight_decay,
                warmup_ratio=warmup_ratio,
                betas=FINETUNE_BETAS,
                eps=FINETUNE_EPS,
                class_weight=None if weight is None else weight.float(),
            )
            history = run_training(
                plan,
                train,
                classification_collate,
                val=val,
                batch_size=batch_size,
                max_epochs=None if max_steps is not None else max_epochs,  # max_steps wins
                max_steps=max_steps,
                accelerator=accelerator,
                devices=devices,
                num_nodes=num_nodes,
                strategy=strategy,
                precision=precision,
                num_workers=num_workers,
                random_state=random_state,
                early_stopping=early_stopping,
                early_stopping_patience=early_stopping_patience,
                checkpoint_dir=checkpoint_dir,
                ckpt_path=ckpt_path,
                enable_progress_bar=enable_progress_bar,
                **trainer_kwargs,
            )
        except BaseException:  # Ctrl-C too (Lightning ends the run with SystemExit then)
            # a refused argument (or a failed or interrupted run) leaves the model as it was:
            # the new head is dropped, the masked-LM head and the old classes come back
            self.module, self.task, self.labels_ = before
            self.module.cpu().eval()
            raise
        self._record("finetune", history)

    @contextlib.contextmanager
    def _at_rest_after(self) -> Iterator[None]:
        """On an error or interruption inside, the module goes back to CPU and eval mode.

        As after a finished run (:meth:`_record`): an interrupted ``pretrain`` left it in
        train mode, so that embeddings and predictions drew dropout.
        """
        try:
            yield
        except BaseException:
            self.module.cpu().eval()
            raise

    def _reusable_labels(self) -> list[str] | None:
        return self.labels_ if self.task == CLASSIFICATION else None

    def _set_classifier(self, classes: list[str], random_state: int, pooling: str) -> None:
        """Give the model a ``pooling`` head for ``classes`` (kept if it already fits)."""
        config = self.module.config
        if self.task == CLASSIFICATION and self.labels_ == classes:
            if classifier_pooling(config) == pooling:
                return
            # same head weights, other pooling: rebuild around them
            config = copy.deepcopy(config)
            config.classifier_pooling = pooling
            module = build_bert(config, CLASSIFICATION, seed=random_state)
            module.load_state_dict(self.module.state_dict())
            self.module = module
            return
        config = copy.deepcopy(config)
        config.classifier_pooling = pooling
        config.num_labels = len(classes)
        config.id2label = dict(enumerate(classes))
        config.label2id = {c: i for i, c in enumerate(classes)}
        config.problem_type = "single_label_classification"
        module = build_bert(config, CLASSIFICATION, seed=random_state)
        module.bert.load_state_dict(self.module.bert.state_dict(), strict=False)
        self.module, self.task, self.labels_ = module, CLASSIFICATION, list(classes)

    def _record(self, stage: str, history: History) -> None:
        """Append a run's curves under ``{stage}_`` keys: a continued run extends the curves.

        See :func:`~omicformer._core._callbacks.extend_history`.
        """
        self.module.cpu().eval()
        self.history_ = extend_history(self.history_, history, prefix=f"{stage}_")
