"""Lightning training plan for DNABERT: span-masked MLM pretraining and sequence classification."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from ..._core._samplers import counted_items
from ..module import CLASSIFICATION, MLM


class DNABertTrainingPlan(pl.LightningModule):
    """Train a Hugging Face BERT (MLM or sequence classification) with AdamW + linear warmup.

    Parameters
    ----------
    module
        ``BertForMaskedLM`` (``task="mlm"``) or ``BertForSequenceClassification``.
    task
        ``"mlm"`` or ``"classification"``.
    lr, weight_decay, betas, eps
        AdamW settings; no weight decay on biases and LayerNorm weights (as official DNABERT).
    warmup_ratio
        Fraction of the optimizer steps with linear warmup; then linear decay to 0.
    class_weight
        Optional per-class loss weights (classification).

    Notes
    -----
    Logs ``train_loss`` per epoch and, with validation data, ``validation_loss`` (and
    ``validation_accuracy`` for classification); the shared runner's history collects them and
    the loss of every step. The MLM epoch means are over masked k-mers (each minibatch weighted
    by its masked k-mers; one without any has loss 0, also in the step curve, and no weight),
    the classification ones over sequences. An epoch in which masking draws no span at all (a
    held-out set of a few short windows) has no mean: NaN, as before. Masking randomness lives
    in the collators (:class:`~omicformer.dnabert.module.SpanMaskingCollator`).
    """

    def __init__(
        self,
        module: torch.nn.Module,
        task: str = MLM,
        *,
        lr: float = 4e-4,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.98),
        eps: float = 1e-6,
        warmup_ratio: float = 0.05,
        class_weight: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if task not in (MLM, CLASSIFICATION):
            msg = f"task={task!r} must be {MLM!r} or {CLASSIFICATION!r}."
            raise ValueError(msg)
        self.module = module
        self.task = task
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps
        self.warmup_ratio = warmup_ratio
        self.register_buffer("class_weight", class_weight, persistent=False)

    def _loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Loss, logits and the loss's weight in epoch means (masked k-mers, or sequences)."""
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        logits = self.module(**inputs).logits
        labels = batch["labels"]
        if self.task == MLM:  # (B, T, V) vs (B, T), -100 where not masked
            flat = labels.flatten()
            n = int((flat != -100).sum())
            # summed over the masked k-mers, then divided: a minibatch where masking drew no
            # span has loss 0 (no gradient) and weight 0, where the mean over nothing was NaN
            loss = F.cross_entropy(logits.flatten(0, 1).float(), flat, reduction="sum")
            return loss / max(n, 1), logits, n
        loss = F.cross_entropy(logits.float(), labels, weight=self.class_weight)  # (B, C) vs (B,)
        return loss, logits, len(labels)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _, n = self._loss(batch)
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=n)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, logits, n = self._loss(batch)
        # a minibatch repeated to even out the ranks' shares under DDP is not counted
        n = counted_items(self.trainer, batch_idx, n)
        metrics = {"validation_loss": loss}
        if self.task == CLASSIFICATION:
            metrics["validation_accuracy"] = (logits.argmax(-1) == batch["labels"]).float().mean()
        self.log_dict(metrics, on_epoch=True, sync_dist=True, prog_bar=True, batch_size=n)

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, param in self.module.named_parameters():
            if not param.requires_grad:
                continue
            (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(param)
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.lr,
            betas=self.betas,
            eps=self.eps,
        )
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = int(self.warmup_ratio * total)

        from transformers import get_linear_schedule_with_warmup

        # the official runs' schedule: lr * step / warmup, then linear decay to 0 at the end
        scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
