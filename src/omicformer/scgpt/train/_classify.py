"""Fine-tuning scGPT as a cell-type classifier (official annotation recipe, Cui et al. 2024).

The official ``Tutorial_Annotation`` fine-tunes the whole pretrained encoder plus the cell
classifier head (``cls_decoder`` on the ``<cls>`` embedding) with cross-entropy only (no masked
value prediction, ``mask_ratio=0``): cells are ``<cls>`` + their non-zero genes with per-cell
binned values, Adam with learning rate 1e-4, the rate times 0.9 after every epoch, dropout 0.2.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from .._tokenize import pad_batch
from ..module import TransformerModel
from ._data import CellCollator, CellDataset, per_cell_codes
from ._plan import FrozenHeadsMixin, adam_with_epoch_decay

#: Parameters the classifier objective trains: encoders, transformer, batch layers, the head.
CLASSIFIER_PARTS = (
    "encoder.",
    "value_encoder.",
    "transformer_encoder.",
    "batch_encoder.",
    "dsbn.",
    "bn.",
    "cls_decoder.",
)


class LabelledCellDataset(CellDataset):
    """:class:`CellDataset` whose items also carry a class code: ``(i, cols, values, batch, y)``.

    In memory; its out-of-core counterpart is
    ``ChunkedCellDataset`` (``omicformer.scgpt.train._data``) with ``labels=``.
    """

    def __init__(self, X: sp.csr_matrix, labels: np.ndarray, batch_codes: np.ndarray | None = None):
        super().__init__(X, batch_codes)
        self.labels = per_cell_codes(labels, self.X.shape[0], "labels")

    def __getitem__(self, i: int) -> tuple[int, np.ndarray, np.ndarray, int, int]:
        return (*super().__getitem__(i), int(self.labels[i]))


class ClassificationCollator(CellCollator):
    """Tokenise labelled cells (``<cls>`` + binned non-zero genes, at most ``max_len``).

    Parameters and randomness as :class:`~omicformer.scgpt.train.CellCollator`; the batch
    holds ``genes``, ``values``, ``padding_mask``, ``batch_labels`` and ``labels``.
    """

    def __call__(self, items: Sequence[tuple]) -> dict[str, torch.Tensor]:
        index, cols, vals, codes, labels = zip(*items, strict=True)
        cells, _ = self.tokenize(index, cols, vals)
        batch = pad_batch(cells, pad_id=self.pad_id, pad_value=self.pad_value)
        batch["batch_labels"] = torch.as_tensor(codes, dtype=torch.long)
        batch["labels"] = torch.as_tensor(labels, dtype=torch.long)
        return batch


class ClassifierTrainingPlan(FrozenHeadsMixin, pl.LightningModule):
    """Cross-entropy on ``cls_decoder(<cls> embedding)``; encoder and head are trained.

    Parameters
    ----------
    module
        A :class:`~omicformer.scgpt.module.TransformerModel` whose ``cls_decoder`` has one output
        per class.
    lr
        Adam learning rate (official annotation: 1e-4).
    weight_decay
        Adam weight decay.
    class_weight
        Per-class weights of the loss (e.g. inverse class frequencies), or ``None``.
    lr_decay
        Learning rate factor applied after every epoch (official ``schedule_ratio`` 0.9).
    """

    def __init__(
        self,
        module: TransformerModel,
        *,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        class_weight: torch.Tensor | None = None,
        lr_decay: float = 0.9,
    ):
        super().__init__()
        self.module = module
        self.lr, self.weight_decay, self.lr_decay = lr, weight_decay, lr_decay
        self.register_buffer("class_weight", class_weight, persistent=False)
        self._needs_batch = bool(
            module.config.use_batch_labels or module.config.domain_spec_batchnorm
        )
        self.freeze(lambda name: not name.startswith(CLASSIFIER_PARTS))

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Class logits ``(B, n_classes)`` of one batch."""
        labels = batch["batch_labels"] if self._needs_batch else None
        out = self.module._encode(batch["genes"], batch["values"], batch["padding_mask"], labels)
        return self.module.cls_decoder(self.module.get_cell_embedding(out, batch["values"]))

    def _step(self, batch: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
        logits = self.logits(batch).float()
        loss = F.cross_entropy(logits, batch["labels"], weight=self.class_weight)
        n = len(batch["labels"])
        metrics = {f"{prefix}_loss": loss.detach()}
        if prefix == "validation":
            metrics["validation_accuracy"] = (logits.argmax(-1) == batch["labels"]).float().mean()
        self.log_dict(metrics, on_step=False, on_epoch=True, sync_dist=True, batch_size=n)
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """One optimisation step; logs ``train_loss`` per epoch."""
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Logs ``validation_loss`` and ``validation_accuracy`` per epoch."""
        self._step(batch, "validation")

    def configure_optimizers(self) -> Any:
        """Adam; the learning rate times ``lr_decay`` after every epoch (official StepLR)."""
        return adam_with_epoch_decay(self.module, self.lr, self.weight_decay, self.lr_decay)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature ``T`` minimising the negative log-likelihood of ``softmax(logits / T)``.

    Temperature scaling (Guo et al., ICML 2017) calibrates probabilities on held-out cells
    without changing which class wins. Searched on a log grid from 0.05 to 20, then refined.
    """
    z = torch.as_tensor(logits, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long)

    def nll(t: float) -> float:
        return float(F.cross_entropy(z / t, y))

    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 61))
    best = grid[int(np.argmin([nll(t) for t in grid]))]
    fine = best * np.exp(np.linspace(-0.06, 0.06, 25))
    return float(fine[int(np.argmin([nll(t) for t in fine]))])
