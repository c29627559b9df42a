"""The user-facing DNABERT model: pretrain, fine-tune, predict, embed, save and load."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._genome import Genome
from .._kmers import check_k, check_sequences, split_windows, vocab_size
from ..module import (
    CLASSIFICATION,
    MLM,
    SpanMaskingCollator,
    TokenDataset,
    bert_config,
    build_bert,
    classification_collate,
)
from ._checkpoint import load_module, read_checkpoint, write_checkpoint
from ._fit import fit_plan, split_indices
from ._inference import default_overlap, run_windows
from ._inputs import (
    SequenceInput,
    encode_labels,
    max_window_bp,
    resolve_sequences,
    tokenize_windows,
    windows_for_training,
)

Fasta = str | os.PathLike[str] | Genome


class DNABert:
    """DNABERT: a BERT over overlapping DNA k-mers (Hugging Face ``transformers`` inside).

    Create a fresh model with the constructor, or load an official DNABERT folder
    (``zhihan1996/DNA_bert_6`` etc.) or one of our saves with :meth:`from_pretrained`.
    Then :meth:`pretrain` (span-masked MLM), :meth:`finetune` (sequence classification),
    :meth:`predict`, :meth:`embed`, :meth:`save`.

    Parameters
    ----------
    k
        k-mer size, 3 to 6 (vocabulary ``5 + 4**k``).
    n_layers, hidden_size, n_heads, intermediate_size
        Transformer shape (official DNABERT: 12, 768, 12, 3072). ``intermediate_size``
        defaults to ``4 * hidden_size``.
    max_length
        Token positions including ``[CLS]``/``[SEP]`` (official 512, i.e. ``510 + k - 1`` bp
        per window); longer sequences are split into overlapping windows.
    dropout, attention_dropout
        Dropout of hidden states and attention probabilities.
    random_state
        Seed of the weight initialisation.

    Attributes
    ----------
    module
        The ``transformers`` ``BertForMaskedLM`` or ``BertForSequenceClassification``.
    task
        ``"mlm"`` or ``"classification"``.
    labels_
        Class names in output order (after :meth:`finetune`).
    history_
        Training curves, dict of lists: ``mlm_loss_step``, ``mlm_loss_epoch``,
        ``mlm_validation_loss`` and ``finetune_loss_step``, ``finetune_loss_epoch``,
        ``finetune_validation_loss``, ``finetune_validation_accuracy``.

    Examples
    --------
    >>> from omicformer.dnabert.model import DNABert
    >>> model = DNABert(k=6, n_layers=4, hidden_size=256)
    >>> model.pretrain("genome.fa", max_steps=10_000, batch_size=64)  # doctest: +SKIP
    >>> model.finetune(train_seqs, train_labels, max_epochs=3)  # doctest: +SKIP
    >>> probs = model.predict(test_seqs)  # doctest: +SKIP
    >>> model.save("my_dnabert")  # doctest: +SKIP

    References
    ----------
    Ji Y, Zhou Z, Liu H, Davuluri RV (2021). DNABERT: pre-trained Bidirectional Encoder
    Representations from Transformers model for DNA-language in genome. Bioinformatics 37(15),
    2112-2120. https://doi.org/10.1093/bioinformatics/btab083
    """

    def __init__(
        self,
        k: int = 6,
        *,
        n_layers: int = 4,
        hidden_size: int = 256,
        n_heads: int = 4,
        intermediate_size: int | None = None,
        max_length: int = 512,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        random_state: int = 0,
    ) -> None:
        self.k = check_k(k)
        config = bert_config(
            self.k,
            n_layers=n_layers,
            hidden_size=hidden_size,
            n_heads=n_heads,
            intermediate_size=intermediate_size,
            max_length=max_length,
            dropout=dropout,
            attention_dropout=attention_dropout,
        )
        self.module = build_bert(config, MLM, seed=random_state)
        self.task = MLM
        self.labels_: list[str] | None = None
        self.history_: dict[str, list[float]] = {}

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str]) -> DNABert:
        """Load an official DNABERT Hugging Face folder or a folder written by :meth:`save`.

        Parameters
        ----------
        path
            Folder with ``config.json``, ``vocab.txt`` and ``model.safetensors`` or
            ``pytorch_model.bin`` (read with ``weights_only=True``; old transformers
            configs and ``LayerNorm.gamma/beta`` names accepted). Nothing is downloaded.

        Examples
        --------
        >>> from omicformer.dnabert.model import DNABert
        >>> model = DNABert.from_pretrained("DNA_bert_6")  # doctest: +SKIP
        """
        ckpt = read_checkpoint(path)
        self = cls.__new__(cls)
        self.k = ckpt.k
        self.module = load_module(ckpt)
        self.task = ckpt.task
        labels = ckpt.metadata.get("labels")
        if labels is None and self.task == CLASSIFICATION:
            id2label = getattr(ckpt.config, "id2label", None) or {}
            labels = [str(id2label.get(i, i)) for i in range(ckpt.config.num_labels)]
        self.labels_ = labels
        self.history_ = {key: list(v) for key, v in ckpt.metadata.get("history", {}).items()}
        return self

    load = from_pretrained

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Save as a Hugging Face-compatible folder plus ``omicformer_config.json``.

        Writes ``config.json``, ``model.safetensors``, ``vocab.txt``, ``tokenizer_config.json``,
        ``special_tokens_map.json`` and ``omicformer_config.json`` (k, task, labels, history).
        """
        from ... import __version__

        metadata = {
            "model": "DNABert",
            "omicformer_version": __version__,
            "labels": self.labels_,
            "history": self.history_,
        }
        return write_checkpoint(
            path, self.module, k=self.k, task=self.task, metadata=metadata, overwrite=overwrite
        )

    @property
    def config(self):
        """The ``transformers`` ``BertConfig``."""
        return self.module.config

    @property
    def max_length(self) -> int:
        """Token positions per window, including ``[CLS]`` and ``[SEP]``."""
        return int(self.config.max_position_embeddings)

    @property
    def window_size(self) -> int:
        """Bases per window: ``max_length - 2 + k - 1``."""
        return max_window_bp(self.k, self.max_length)

    def __repr__(self) -> str:
        c = self.config
        n_params = sum(p.numel() for p in self.module.parameters())
        head = f"classification {self.labels_}" if self.task == CLASSIFICATION else "masked LM"
        return (
            f"DNABert(k={self.k}, n_layers={c.num_hidden_layers}, hidden_size={c.hidden_size}, "
            f"n_heads={c.num_attention_heads}, max_length={self.max_length}) with a {head} head, "
            f"{n_params / 1e6:.2f}M parameters"
        )

    # ------------------------------------------------------------------ training
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
        validation_size: float = 0.0,
        accelerator: str = "auto",
        devices: int | str | list[int] = "auto",
        strategy: str = "auto",
        precision: str | int | None = "auto",
        num_workers: int = 0,
        random_state: int = 0,
        enable_progress_bar: bool = True,
        trainer_kwargs: dict[str, Any] | None = None,
    ) -> dict[str, list[float]]:
        """Pretrain (or continue pretraining) with DNABERT's span-masked language modelling.

        Sequences are cut into non-overlapping windows (``window_size`` bases, default the
        model maximum) and masked on the fly: centres with probability ``mlm_probability``,
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
            Span-centre probability (official 0.15).
        window_size, window_overlap
            Window length in bases (at most :attr:`window_size`) and overlap.
        max_unknown_fraction
            Windows with a larger fraction of N/IUPAC bases are skipped.
        validation_size
            Fraction of windows held out; their MLM loss is recorded each epoch.
        accelerator, devices, strategy, precision
            Lightning settings; several devices use DDP. ``precision="auto"``: bf16 mixed
            precision on GPUs that support it, else 32-bit.
        num_workers
            DataLoader workers.
        random_state
            Seeds shuffling, masking (per DDP rank) and dropout.
        enable_progress_bar
            Show Lightning's progress bar.
        trainer_kwargs
            Extra :class:`lightning.pytorch.Trainer` arguments.

        Returns
        -------
        This run's history (``loss_step``, ``loss_epoch``, ``validation_loss``); also appended
        to :attr:`history_` with an ``mlm_`` prefix.
        """
        from ..train import DNABertTrainingPlan

        if self.task != MLM:
            msg = (
                "This model has a classification head; pretrain a masked-LM model (a fresh "
                "DNABert or a pretrained MLM checkpoint) before fine-tuning."
            )
            raise ValueError(msg)
        window = self.window_size if window_size is None else int(window_size)
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
        collators = {
            "train": SpanMaskingCollator(self.k, n_vocab, mlm_probability=mlm_probability),
            "val": SpanMaskingCollator(self.k, n_vocab, mlm_probability=mlm_probability),
        }
        plan = DNABertTrainingPlan(
            self.module,
            MLM,
            lr=lr,
            weight_decay=weight_decay,
            warmup_ratio=warmup_ratio,
            collators=collators,
            seed=random_state,
        )
        history = fit_plan(
            plan,
            TokenDataset(ids[train_idx], lengths[train_idx]),
            collators["train"],
            val=TokenDataset(ids[val_idx], lengths[val_idx]) if len(val_idx) else None,
            collate_val=collators["val"],
            batch_size=batch_size,
            max_epochs=max_epochs,
            max_steps=max_steps,
            accelerator=accelerator,
            devices=devices,
            strategy=strategy,
            precision=precision,
            num_workers=num_workers,
            random_state=random_state,
            enable_progress_bar=enable_progress_bar,
            trainer_kwargs=trainer_kwargs,
        )
        self._record("mlm", history)
        return history

    def finetune(
        self,
        sequences_or_regions: SequenceInput,
        labels: Any,
        *,
        fasta: Fasta | None = None,
        num_labels: int | None = None,
        max_epochs: int | None = 3,
        max_steps: int | None = None,
        batch_size: int = 32,
        lr: float = 2e-4,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        class_weight: str | None = None,
        window_overlap: int | None = None,
        validation_size: float = 0.0,
        accelerator: str = "auto",
        devices: int | str | list[int] = "auto",
        strategy: str = "auto",
        precision: str | int | None = "auto",
        num_workers: int = 0,
        random_state: int = 0,
        enable_progress_bar: bool = True,
        trainer_kwargs: dict[str, Any] | None = None,
    ) -> dict[str, list[float]]:
        """Fine-tune for binary or multi-class sequence classification.

        A masked-LM model gets a new ``BertForSequenceClassification`` head (the encoder
        weights are kept, the MLM head is dropped; save it first if you need it). Sequences
        longer than one window are split into overlapping windows that inherit the label;
        :meth:`predict` averages window probabilities the same way.

        Parameters
        ----------
        sequences_or_regions
            DNA strings, or region strings (``chr1:100-600``) when ``fasta`` is given.
        labels
            One label per sequence: integers ``0..C-1``, or strings / categories (classes in
            sorted or categorical order).
        fasta
            Genome to fetch regions from.
        num_labels
            Number of classes; default: inferred from ``labels``.
        max_epochs, max_steps, batch_size, lr, weight_decay, warmup_ratio
            Training length and AdamW with linear warmup/decay (official DNABERT fine-tuning
            used lr 2e-4, 10% warmup, weight decay 0.01).
        class_weight
            ``"balanced"`` weights the loss by inverse class frequency; ``None`` does not.
        window_overlap
            Overlap (bases) of windows of long sequences; default a quarter window.
        validation_size
            Fraction of *sequences* held out (split before windowing, so no window leaks).
        accelerator, devices, strategy, precision, num_workers, random_state, enable_progress_bar, trainer_kwargs
            As in :meth:`pretrain`; ``random_state`` also seeds the new head.

        Returns
        -------
        This run's history (also in :attr:`history_` with a ``finetune_`` prefix).
        """
        from ..train import DNABertTrainingPlan

        seqs, names = resolve_sequences(sequences_or_regions, fasta=fasta)
        codes, classes = encode_labels(labels, len(seqs), num_labels, self._reusable_labels())
        if class_weight not in (None, "balanced"):
            msg = f"class_weight={class_weight!r} must be None or 'balanced'."
            raise ValueError(msg)
        check_sequences(seqs, self.k, names=names)
        train_seq, val_seq = split_indices(len(seqs), validation_size, random_state)
        overlap = default_overlap(self.window_size) if window_overlap is None else window_overlap

        def dataset(index: np.ndarray) -> TokenDataset:
            windows, owner = split_windows([seqs[i] for i in index], self.window_size, overlap)
            ids, lengths = tokenize_windows(windows, self.k)
            return TokenDataset(ids, lengths, labels=codes[index][owner])

        train = dataset(train_seq)
        weight = None
        if class_weight == "balanced":
            counts = np.bincount(train.labels.numpy(), minlength=len(classes)).astype(float)
            weight = torch.as_tensor(counts.sum() / (len(classes) * np.maximum(counts, 1)))
        self._set_classifier(classes, random_state)
        plan = DNABertTrainingPlan(
            self.module,
            CLASSIFICATION,
            lr=lr,
            weight_decay=weight_decay,
            warmup_ratio=warmup_ratio,
            class_weight=None if weight is None else weight.float(),
            seed=random_state,
        )
        history = fit_plan(
            plan,
            train,
            classification_collate,
            val=dataset(val_seq) if len(val_seq) else None,
            collate_val=classification_collate,
            batch_size=batch_size,
            max_epochs=max_epochs,
            max_steps=max_steps,
            accelerator=accelerator,
            devices=devices,
            strategy=strategy,
            precision=precision,
            num_workers=num_workers,
            random_state=random_state,
            enable_progress_bar=enable_progress_bar,
            trainer_kwargs=trainer_kwargs,
        )
        self._record("finetune", history)
        return history

    def _reusable_labels(self) -> list[str] | None:
        return self.labels_ if self.task == CLASSIFICATION else None

    def _set_classifier(self, classes: list[str], random_state: int) -> None:
        """Give the model a classification head for ``classes`` (kept if it already fits)."""
        if self.task == CLASSIFICATION and self.labels_ == classes:
            return
        config = copy.deepcopy(self.module.config)
        config.num_labels = len(classes)
        config.id2label = dict(enumerate(classes))
        config.label2id = {c: i for i, c in enumerate(classes)}
        config.problem_type = "single_label_classification"
        module = build_bert(config, CLASSIFICATION, seed=random_state)
        module.bert.load_state_dict(self.module.bert.state_dict(), strict=False)
        self.module, self.task, self.labels_ = module, CLASSIFICATION, list(classes)

    def _record(self, prefix: str, history: dict[str, list[float]]) -> None:
        for key, values in history.items():
            self.history_.setdefault(f"{prefix}_{key}", []).extend(values)

    # ------------------------------------------------------------------ inference
    def predict(
        self,
        sequences_or_regions: SequenceInput,
        *,
        fasta: Fasta | None = None,
        batch_size: int = 64,
        device: str | torch.device = "auto",
        reverse_complement: bool = False,
        window_overlap: int | None = None,
        show_progress: bool = True,
    ) -> np.ndarray:
        """Class probabilities ``(n_sequences, n_classes)``, columns in :attr:`labels_` order.

        Long sequences: probabilities averaged over overlapping windows; with
        ``reverse_complement=True`` also averaged with the reverse complement.

        Examples
        --------
        >>> probs = model.predict(["ACGT" * 50], device="cpu")  # doctest: +SKIP
        """
        if self.task != CLASSIFICATION:
            msg = (
                "This DNABERT has no classification head; call finetune(...) first or load a "
                "fine-tuned model (e.g. default_model_path('promoter'))."
            )
            raise ValueError(msg)
        seqs, names = resolve_sequences(sequences_or_regions, fasta=fasta)
        return run_windows(
            self.module,
            seqs,
            self.k,
            output="probs",
            names=names,
            window_overlap=window_overlap,
            reverse_complement_average=reverse_complement,
            batch_size=batch_size,
            device=device,
            show_progress=show_progress,
            desc="DNABERT predict",
        )

    def embed(
        self,
        sequences_or_regions: SequenceInput,
        *,
        fasta: Fasta | None = None,
        pooling: str = "mean",
        reverse_complement: bool = False,
        batch_size: int = 64,
        device: str | torch.device = "auto",
        window_overlap: int | None = None,
        show_progress: bool = True,
    ) -> np.ndarray:
        """Sequence embeddings ``(n_sequences, hidden_size)`` from the last encoder layer.

        Parameters
        ----------
        sequences_or_regions
            DNA strings, a FASTA path, or regions together with ``fasta``.
        fasta
            Genome to fetch regions from.
        pooling
            ``"mean"``: average over all real k-mer tokens (all windows of a long sequence);
            ``"cls"``: the ``[CLS]`` state (averaged over windows).
        reverse_complement
            Average with the embedding of the reverse complement (strand-symmetric).
        batch_size, device, window_overlap, show_progress
            Inference settings; windows of long sequences overlap by ``window_overlap`` bases
            (default a quarter window).

        Examples
        --------
        >>> X = model.embed(["ACGT" * 50, "GGCC" * 30], device="cpu")  # doctest: +SKIP
        """
        if pooling not in ("mean", "cls"):
            msg = f"pooling={pooling!r} must be 'mean' or 'cls'."
            raise ValueError(msg)
        seqs, names = resolve_sequences(sequences_or_regions, fasta=fasta)
        return run_windows(
            self.module,
            seqs,
            self.k,
            output=pooling,
            names=names,
            window_overlap=window_overlap,
            reverse_complement_average=reverse_complement,
            batch_size=batch_size,
            device=device,
            show_progress=show_progress,
            desc="DNABERT embed",
        )
