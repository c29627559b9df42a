"""Lightning training plan for DNABERT: span-masked MLM pretraining and sequence classification."""

from __future__ import annotations

from collections import defaultdict

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from ..module import CLASSIFICATION, MLM, SpanMaskingCollator


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
    collators
        ``{"train": ..., "val": ...}`` span-masking collators, reseeded per DDP rank so every
        process draws its own masks, and the validation masks repeat each epoch.
    seed
        Base seed for the collators.

    Notes
    -----
    ``history`` collects ``loss_step`` (every optimizer step), ``loss_epoch`` and, with
    validation data, ``validation_loss`` (and ``validation_accuracy`` for classification).
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
        collators: dict[str, SpanMaskingCollator] | None = None,
        seed: int = 0,
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
        self.collators = collators or {}
        self.seed = seed
        self.history: dict[str, list[float]] = defaultdict(list)
        self._epoch_losses: list[float] = []
        self._val: dict[str, float] = defaultdict(float)

    def setup(self, stage: str) -> None:
        if "train" in self.collators:
            self.collators["train"].reseed(self.seed + self.global_rank)

    def _loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        logits = self.module(**inputs).logits
        labels = batch["labels"]
        if self.task == MLM:  # (B, T, V) vs (B, T) with -100 ignored
            loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())
        else:  # (B, C) vs (B,)
            loss = F.cross_entropy(logits.float(), labels, weight=self.class_weight)
        return loss, logits

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _ = self._loss(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["input_ids"]))
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        loss = float(outputs["loss"].detach())
        self.history["loss_step"].append(loss)
        self._epoch_losses.append(loss)

    def on_train_epoch_end(self) -> None:
        if self._epoch_losses:
            self.history["loss_epoch"].append(sum(self._epoch_losses) / len(self._epoch_losses))
        self._epoch_losses = []

    def on_validation_epoch_start(self) -> None:
        if "val" in self.collators:
            self.collators["val"].reseed(self.seed + 1_000_003 + self.global_rank)
        self._val = defaultdict(float)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, logits = self._loss(batch)
        n = len(batch["input_ids"])
        self.log("validation_loss", loss, sync_dist=True, prog_bar=True, batch_size=n)
        self._val["loss"] += float(loss) * n
        self._val["n"] += n
        if self.task == CLASSIFICATION:
            self._val["correct"] += float((logits.argmax(-1) == batch["labels"]).sum())

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or not self._val["n"]:
            return
        self.history["validation_loss"].append(self._val["loss"] / self._val["n"])
        if self.task == CLASSIFICATION:
            self.history["validation_accuracy"].append(self._val["correct"] / self._val["n"])

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

        def schedule(step: int) -> float:  # linear warmup, then linear decay to 0
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return max(0.0, (total - step) / max(1, total - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
