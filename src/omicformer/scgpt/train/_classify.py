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
from torch import nn

from ..._core._samplers import counted_items
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


class EmbeddingStandardizer(nn.Module):
    """``(e - mean) / sqrt(mean(var) + eps)``, with statistics that follow the encoder.

    Each dimension is centred on its mean; all are divided by one scale, the root of the
    variance averaged over dimensions (isotropic: a direction in which the training cells vary
    little is not magnified, so a query shifted along it is not either).

    Unlike a ``BatchNorm1d``, the same (buffered) statistics standardise training and evaluation
    minibatches, so validation scores what prediction will do. In training mode each minibatch
    of at least 2 cells (over all DDP ranks) moves them by ``momentum`` towards its own mean and
    unbiased variance (no gradient flows through them); ``momentum=0`` keeps them fixed. The buffers are part of the
    state dict, so restoring the best epoch's weights restores its statistics too.

    Parameters
    ----------
    mean, var
        Initial per-dimension statistics, ``(d_model,)``.
    momentum
        Update rate per training minibatch, in [0, 1].
    eps
        Added to the variance.
    """

    def __init__(
        self, mean: torch.Tensor, var: torch.Tensor, momentum: float = 0.1, eps: float = 1e-5
    ):
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            msg = f"momentum={momentum} must be in [0, 1]."
            raise ValueError(msg)
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).clone())
        self.register_buffer("var", torch.as_tensor(var, dtype=torch.float32).clone())
        self.momentum, self.eps = float(momentum), float(eps)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """Standardised ``emb`` (float32); updates the statistics first in training mode."""
        emb = emb.float()
        if self.training and self.momentum > 0:
            with torch.no_grad():
                self._update(emb)
        return (emb - self.mean) * torch.rsqrt(self.var.mean() + self.eps)

    def _update(self, emb: torch.Tensor) -> None:
        """Move the statistics towards those of ``emb`` (pooled over DDP ranks, float64)."""
        x = emb.double()
        sums = torch.cat([x.new_tensor([len(x)]), x.sum(0), (x * x).sum(0)])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(sums)  # every rank, every step: the same statistics
        n, d = float(sums[0]), len(self.mean)
        if n < 2:  # no variance from one cell
            return
        mean = sums[1 : d + 1] / n
        var = (sums[d + 1 :] - n * mean * mean).clamp_min(0) / (n - 1)
        self.mean.lerp_(mean.float(), self.momentum)
        self.var.lerp_(var.float(), self.momentum)


class ClassifierTrainingPlan(FrozenHeadsMixin, pl.LightningModule):
    """Cross-entropy on ``cls_decoder(cell embedding)``; encoder and head are trained.

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
    input_stats
        ``(mean, var)`` of the cell embedding, e.g. of the training cells under the pretrained
        encoder: the head then reads ``(e - mean) / sqrt(mean(var) + 1e-5)`` (``input_norm``, an
        :class:`EmbeddingStandardizer`); call :meth:`fold_standardisation` after training to
        fold it into the head. ``None``: the official recipe.
    stats_momentum
        How fast ``input_norm`` follows the encoder while it is fine-tuned (see
        :class:`EmbeddingStandardizer`); 0 keeps ``input_stats`` fixed.
    """

    def __init__(
        self,
        module: TransformerModel,
        *,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        class_weight: torch.Tensor | None = None,
        lr_decay: float = 0.9,
        input_stats: tuple[torch.Tensor, torch.Tensor] | None = None,
        stats_momentum: float = 0.1,
    ):
        super().__init__()
        self.module = module
        self.lr, self.weight_decay, self.lr_decay = lr, weight_decay, lr_decay
        self.register_buffer("class_weight", class_weight, persistent=False)
        self.input_norm = (
            None if input_stats is None else EmbeddingStandardizer(*input_stats, stats_momentum)
        )
        self._needs_batch = bool(
            module.config.use_batch_labels or module.config.domain_spec_batchnorm
        )
        self.freeze(lambda name: not name.startswith(CLASSIFIER_PARTS))

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Class logits ``(B, n_classes)`` of one batch."""
        labels = batch["batch_labels"] if self._needs_batch else None
        out = self.module._encode(batch["genes"], batch["values"], batch["padding_mask"], labels)
        emb = self.module.get_cell_embedding(out, batch["values"], batch["padding_mask"])
        if self.input_norm is not None:
            emb = self.input_norm(emb)
        return self.module.cls_decoder(emb)

    @torch.no_grad()
    def fold_standardisation(self) -> None:
        """Fold the input standardisation into the head's first linear layer.

        ``input_norm(e) = (e - mean) * scale`` with its current statistics (one ``scale`` for
        every dimension), and ``Linear((e - mean) * scale) == Linear'(e)`` for ``W' = W scale``,
        ``b' = b - W' mean``. Afterwards ``module.cls_decoder`` alone gives the logits of
        :meth:`logits` in eval mode (an ordinary official-format head) and the plan no longer
        standardises.
        """
        norm = self.input_norm
        if norm is None:
            return
        head = self.module.cls_decoder
        first = head._decoder[0] if len(head._decoder) else head.out_layer
        w = first.weight  # the statistics may live elsewhere (e.g. after an interrupted fit)
        scale = torch.rsqrt(norm.var.double().mean() + norm.eps).to(w.device)
        new_w = w.double() * scale
        new_b = first.bias.double() - new_w @ norm.mean.double().to(w.device)
        w.copy_(new_w.to(w.dtype))
        first.bias.copy_(new_b.to(first.bias.dtype))
        self.input_norm = None

    def _step(
        self, batch: dict[str, torch.Tensor], prefix: str, n: int | None = None
    ) -> torch.Tensor:
        logits = self.logits(batch).float()
        loss = F.cross_entropy(logits, batch["labels"], weight=self.class_weight)
        n = len(batch["labels"]) if n is None else n
        metrics = {f"{prefix}_loss": loss.detach()}
        if prefix == "validation":
            metrics["validation_accuracy"] = (logits.argmax(-1) == batch["labels"]).float().mean()
        self.log_dict(metrics, on_step=False, on_epoch=True, sync_dist=True, batch_size=n)
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """One optimisation step; logs ``train_loss`` per epoch."""
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Logs ``validation_loss`` and ``validation_accuracy`` per epoch.

        A minibatch repeated to even out the ranks' shares under DDP is not counted
        (``omicformer._core._samplers.counted_items``).
        """
        self._step(
            batch, "validation", counted_items(self.trainer, batch_idx, len(batch["labels"]))
        )

    def configure_optimizers(self) -> Any:
        """Adam; the learning rate times ``lr_decay`` after every epoch (official StepLR)."""
        return adam_with_epoch_decay(self.module, self.lr, self.weight_decay, self.lr_decay)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature ``T`` minimising the negative log-likelihood of ``softmax(logits / T)``.

    Temperature scaling (Guo et al., ICML 2017) calibrates probabilities on held-out cells
    without changing which class wins. Searched on a log grid from 0.05 to 20, then refined.
    Held-out cells of one class cannot calibrate (sharpening their right answers always
    lowers the loss, down to the grid's end): ``T = 1`` then, the probabilities as trained.
    """
    if len(np.unique(labels)) < 2:
        return 1.0
    z = torch.as_tensor(logits, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long)

    def nll(t: float) -> float:
        return float(F.cross_entropy(z / t, y))

    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 61))
    best = grid[int(np.argmin([nll(t) for t in grid]))]
    fine = best * np.exp(np.linspace(-0.06, 0.06, 25))
    return float(fine[int(np.argmin([nll(t) for t in fine]))])
