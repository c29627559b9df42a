"""The user-facing DNABERT model: pretrain, fine-tune, predict, embed, save and load."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..._core._callbacks import History, history_from_json, history_from_rows, history_to_json
from ..._core._deprecation import renamed_kwargs, warn_renamed
from ..._core._ranks import is_global_zero
from .._genome import Genome
from .._kmers import check_k
from ..module import (
    CLASSIFICATION,
    MLM,
    bert_config,
    build_bert,
)
from ._checkpoint import load_module, read_checkpoint, write_checkpoint
from ._inference import run_windows
from ._inputs import (
    SequenceInput,
    max_window_bp,
    resolve_sequences,
)
from ._training import TrainingMixin

Fasta = str | os.PathLike[str] | Genome


class DNABert(TrainingMixin):
    """DNABERT: a BERT over overlapping DNA k-mers (Hugging Face ``transformers`` inside).

    Create a fresh model with the constructor, or load an official DNABERT folder
    (``zhihan1996/DNA_bert_6`` etc.) or one of our saves with :meth:`from_pretrained`.
    Then :meth:`pretrain` (span-masked MLM), :meth:`finetune` (sequence classification),
    :meth:`predict`, :meth:`embed`, :meth:`save`.

    Parameters
    ----------
    k
        k-mer size, 3 to 6 (vocabulary ``5 + 4**k``).
    n_layers, d_model, n_heads, d_hid
        Transformer shape: blocks, hidden size, attention heads, feed-forward width (official
        DNABERT: 12, 768, 12, 3072; the same names as :class:`~omicformer.scgpt.model.ScGPT`).
        ``d_hid`` defaults to ``4 * d_model``.
    max_len
        Token positions including ``[CLS]``/``[SEP]`` (official 512, i.e. ``510 + k - 1`` bp
        per window); longer sequences are split into overlapping windows. At least 3
        (``[CLS]``, one k-mer, ``[SEP]``).
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

    Examples
    --------
    >>> from omicformer.dnabert.model import DNABert
    >>> model = DNABert(k=6, n_layers=4, d_model=256)
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

    @renamed_kwargs(hidden_size="d_model", intermediate_size="d_hid", max_length="max_len")
    def __init__(
        self,
        k: int = 6,
        *,
        n_layers: int = 4,
        d_model: int = 256,
        n_heads: int = 4,
        d_hid: int | None = None,
        max_len: int = 512,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        random_state: int = 0,
    ) -> None:
        self.k = check_k(k)
        config = bert_config(
            self.k,
            n_layers=n_layers,
            d_model=d_model,
            n_heads=n_heads,
            d_hid=d_hid,
            max_len=max_len,
            dropout=dropout,
            attention_dropout=attention_dropout,
        )
        self.module = build_bert(config, MLM, seed=random_state)
        self.task = MLM
        self.labels_: list[str] | None = None
        self.history_: History = {}

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DNABert:
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
        >>> model = DNABert.load("DNA_bert_6")  # doctest: +SKIP
        >>> model = DNABert.from_pretrained("DNA_bert_6")  # Hugging Face-style alias
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
        self.history_ = _history_from_metadata(ckpt.metadata.get("history"))
        return self

    from_pretrained = load  # Hugging Face-style name of the same loader

    def save(
        self, path: str | os.PathLike[str], *, overwrite: bool = False, half: bool = False
    ) -> Path:
        """Save as a Hugging Face-compatible folder plus ``omicformer_config.json``.

        Writes ``config.json``, ``model.safetensors``, ``vocab.txt``, ``tokenizer_config.json``,
        ``special_tokens_map.json`` and ``omicformer_config.json`` (k, task, labels, history).
        Under DDP (a script run once per device) only global rank 0 writes, so a training
        script can call ``save`` unguarded.

        Parameters
        ----------
        path
            Folder to create.
        overwrite
            Replace a model already in ``path`` (a save of ours or an official DNABERT folder);
            without it such a folder is a ``FileExistsError`` and stays as it was.
        half
            Store weights as float16 (half the size, e.g. for models shipped in a package);
            they are cast back to float32 when loaded.

        Returns
        -------
        Path
            The folder written.

        Examples
        --------
        >>> model.save("dnabert_promoter")  # doctest: +SKIP
        >>> DNABert.load("dnabert_promoter")  # doctest: +SKIP
        """
        from omicformer._version import __version__

        if not is_global_zero():
            return Path(path)

        metadata = {
            "model": "DNABert",
            "omicformer_version": __version__,
            "labels": self.labels_,
            "history": history_to_json(self.history_),
        }
        return write_checkpoint(
            path,
            self.module,
            k=self.k,
            task=self.task,
            metadata=metadata,
            overwrite=overwrite,
            half=half,
        )

    @property
    def config(self):
        """The ``transformers`` ``BertConfig``."""
        return self.module.config

    @property
    def max_len(self) -> int:
        """Token positions per window, including ``[CLS]`` and ``[SEP]``."""
        return int(self.config.max_position_embeddings)

    @property
    def max_length(self) -> int:
        """Deprecated name of :attr:`max_len`."""
        warn_renamed("DNABert", "max_length", "max_len")
        return self.max_len

    @property
    def history(self) -> History:
        """Training curves in scvi-tools' format (``{name: DataFrame}``), per stage.

        ``mlm_train_loss``, ``mlm_train_loss_step``, ``mlm_validation_loss`` (pretraining) and
        ``finetune_train_loss``, ``finetune_train_loss_step``, ``finetune_validation_loss``,
        ``finetune_validation_accuracy`` (fine-tuning); frames are indexed by ``epoch`` or
        ``step``.
        """
        return self.history_

    @property
    def window_size(self) -> int:
        """Bases per window: ``max_len - 2 + k - 1``."""
        return max_window_bp(self.k, self.max_len)

    def __repr__(self) -> str:
        c = self.config
        n_params = sum(p.numel() for p in self.module.parameters())
        head = f"classification {self.labels_}" if self.task == CLASSIFICATION else "masked LM"
        return (
            f"DNABert(k={self.k}, n_layers={c.num_hidden_layers}, d_model={c.hidden_size}, "
            f"n_heads={c.num_attention_heads}, max_len={self.max_len}) with a {head} head, "
            f"{n_params / 1e6:.2f}M parameters"
        )

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
        progress: bool = True,
    ) -> np.ndarray:
        """Class probabilities ``(n_sequences, n_classes)``, columns in :attr:`labels_` order.

        Long sequences: probabilities averaged over overlapping windows; with
        ``reverse_complement=True`` also averaged with the reverse complement.

        Parameters
        ----------
        sequences_or_regions, fasta, batch_size, device, window_overlap, progress
            As :meth:`embed`.
        reverse_complement
            Average with the probabilities of the reverse complement (strand-symmetric).

        Returns
        -------
        ``float`` array ``(n_sequences, n_classes)``; rows sum to 1.

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
            progress=progress,
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
        progress: bool = True,
    ) -> np.ndarray:
        """Sequence embeddings ``(n_sequences, d_model)`` from the last encoder layer.

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
        batch_size, device, window_overlap, progress
            Inference settings; windows of long sequences overlap by ``window_overlap`` bases
            (default a quarter window).

        Returns
        -------
        numpy.ndarray
            ``(n_sequences, d_model)`` float32 embeddings, in the order of the input.

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
            progress=progress,
            desc="DNABERT embed",
        )


def _history_from_metadata(data: dict | None) -> History:
    """History saved by :meth:`DNABert.save`; also reads the lists of omicformer 0.1 saves."""
    if not data or all(isinstance(v, dict) for v in data.values()):
        return history_from_json(data)
    rows = {}
    for key, values in data.items():  # 0.1: {stage}_loss_step / _loss_epoch / _validation_*
        stage, _, name = key.partition("_")
        name = {"loss_step": "train_loss_step", "loss_epoch": "train_loss"}.get(name, name)
        start = 1 if name.endswith("_step") else 0
        rows[f"{stage}_{name}"] = list(enumerate(values, start=start))
    return history_from_rows(rows)
