"""Torch datasets and collators for DNABERT: token rows in, padded (and masked) batches out."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..._core._random import collate_generator
from .._kmers import PAD_ID
from ._masking import DEFAULT_EXCLUDE_IDS, span_mask_tokens


class TokenDataset(Dataset):
    """Pre-tokenised sequences stored compactly as one padded int16 matrix.

    Parameters
    ----------
    input_ids
        ``(N, T)`` token ids ``[CLS] k-mers [SEP]`` padded with ``[PAD]`` (any int dtype; the
        DNABERT vocabularies fit int16).
    lengths
        Real tokens per row; inferred from non-pad tokens when ``None``.
    labels
        Optional class index per row (fine-tuning).
    """

    def __init__(
        self,
        input_ids: np.ndarray,
        lengths: np.ndarray | None = None,
        labels: np.ndarray | None = None,
    ) -> None:
        ids = np.asarray(input_ids)
        self.input_ids = torch.from_numpy(ids.astype(np.int16))
        if lengths is None:
            lengths = (ids != PAD_ID).sum(axis=1)
        self.lengths = torch.as_tensor(np.asarray(lengths), dtype=torch.long)
        self.labels = None if labels is None else torch.as_tensor(np.asarray(labels)).long()
        if self.labels is not None and len(self.labels) != len(self.input_ids):
            msg = f"{len(self.labels)} labels for {len(self.input_ids)} token rows."
            raise ValueError(msg)

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {"input_ids": self.input_ids[i, : self.lengths[i]].long(), "index": i}
        if self.labels is not None:
            item["labels"] = self.labels[i]
        return item


def pad_batch(rows: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D id tensors with ``[PAD]``; return ``(input_ids, attention_mask)``."""
    input_ids = torch.nn.utils.rnn.pad_sequence(list(rows), batch_first=True, padding_value=PAD_ID)
    lengths = torch.as_tensor([len(r) for r in rows])
    attention_mask = (torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]).long()
    return input_ids, attention_mask


class SpanMaskingCollator:
    """Pad a list of :class:`TokenDataset` items and apply DNABERT span masking.

    Parameters
    ----------
    k
        k-mer size.
    vocab_size
        Vocabulary size (random replacement tokens are drawn over it).
    mlm_probability
        Centre probability (official 0.15).
    seed
        ``None`` (training): every batch draws new masks from the shared runner's
        :func:`~omicformer._core._random.collate_generator`, different in every DataLoader
        worker, DDP rank and epoch. An integer (validation): the masks of a batch are a fixed
        function of ``(seed, index of its first item)``, the same every epoch.
    exclude_ids
        Ids never drawn as centres (official: ``[PAD] [CLS] [SEP]``).
    """

    def __init__(
        self,
        k: int,
        vocab_size: int,
        *,
        mlm_probability: float = 0.15,
        seed: int | None = None,
        exclude_ids: Sequence[int] = DEFAULT_EXCLUDE_IDS,
    ) -> None:
        self.k = k
        self.vocab_size = vocab_size
        self.mlm_probability = mlm_probability
        self.exclude_ids = tuple(exclude_ids)
        self.seed = seed

    def __call__(self, items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        input_ids, attention_mask = pad_batch([it["input_ids"] for it in items])
        inputs, labels = span_mask_tokens(
            input_ids,
            self.k,
            self.vocab_size,
            mlm_probability=self.mlm_probability,
            exclude_ids=self.exclude_ids,
            generator=collate_generator(self.seed, int(items[0].get("index", 0))),
        )
        return {"input_ids": inputs, "attention_mask": attention_mask, "labels": labels}


def classification_collate(items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Pad token rows and stack their class labels."""
    input_ids, attention_mask = pad_batch([it["input_ids"] for it in items])
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if "labels" in items[0]:
        batch["labels"] = torch.stack([it["labels"] for it in items])
    return batch
