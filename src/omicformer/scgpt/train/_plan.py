"""Lightning training plan for scGPT generative pretraining (Cui et al., Nature Methods 2024).

Loss per batch (official dev-branch ``pretrain.py``, ``training_tasks="gen"``):

* ``loss_gen``: masked MSE between the expression decoder's predictions for the tokens to
  generate and their (binned) values;
* ``loss_mvc`` (``mvc=True``): the same MSE for the MVC/GEPC head, ``mvc_output[:, Lp:]``, which
  predicts each generated gene's value from the cell embedding and the gene's embedding;
* ``ecs_weight * loss_ecs`` (optional elastic cell similarity; official weight 10,
  threshold 0.3).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch

from ..._core._samplers import counted_items
from ..module import TransformerModel, masked_mse_loss


class FrozenHeadsMixin:
    """Freeze the heads an objective never uses for the duration of ``fit``.

    DDP requires every trainable parameter to receive a gradient; :meth:`unfreeze` (called by
    ``teardown`` at the end of ``fit``) gives ``requires_grad`` back.
    """

    module: torch.nn.Module

    def freeze(self, unused: Callable[[str], bool]) -> None:
        """Stop gradients of the parameters whose name ``unused`` accepts."""
        self._frozen = [
            p for name, p in self.module.named_parameters() if unused(name) and p.requires_grad
        ]
        for p in self._frozen:
            p.requires_grad_(False)

    def unfreeze(self) -> None:
        """Give back ``requires_grad`` to the parameters frozen for this objective."""
        for p in getattr(self, "_frozen", []):
            p.requires_grad_(True)
        self._frozen = []

    def teardown(self, stage: str) -> None:
        """Unfreeze at the end of ``fit``."""
        self.unfreeze()


def adam_with_epoch_decay(
    module: torch.nn.Module, lr: float, weight_decay: float, lr_decay: float
) -> dict[str, Any]:
    """Adam on the trainable parameters; the learning rate times ``lr_decay`` after every epoch.

    The official fine-tuning schedule (``StepLR(step_size=1, gamma=schedule_ratio)`` stepped
    once per epoch), as Lightning's ``configure_optimizers`` return value.
    """
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=lr_decay)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


class LossPartsStepsMixin:
    """Training and validation steps for a plan whose ``losses(batch)`` gives its loss parts.

    ``losses`` returns ``{"loss": total, **parts}``: each entry is logged per epoch as
    ``train_<key>`` or ``validation_<key>`` (averaged over cells) and the total is optimised.

    :attr:`size_key` names the batch tensor whose first dimension counts the cells;
    :meth:`_logged` may rename what is logged.
    """

    #: Batch entry whose first dimension is the number of cells in the minibatch.
    size_key = "genes"

    def losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Total ``loss`` and its parts for one minibatch (each plan defines it)."""
        raise NotImplementedError

    def _logged(self, parts: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
        """What to log for one minibatch: every part as ``<prefix>_<key>``, detached."""
        return {f"{prefix}_{k}": v.detach() for k, v in parts.items()}

    def _step(
        self, batch: dict[str, torch.Tensor], prefix: str, n: int | None = None
    ) -> torch.Tensor:
        parts = self.losses(batch)
        n = batch[self.size_key].shape[0] if n is None else n
        self.log_dict(  # type: ignore[attr-defined]  (a LightningModule's)
            self._logged(parts, prefix), on_step=False, on_epoch=True,
            batch_size=n, sync_dist=True, prog_bar=False,
        )  # fmt: skip
        return parts["loss"]

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """One optimisation step on the total ``loss``; logs ``train_loss`` and its parts."""
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Logs ``validation_loss`` and its parts (the same objective on held-out cells).

        A minibatch repeated to even out the ranks' shares under DDP is not counted
        (``omicformer._core._samplers.counted_items``).
        """
        n = counted_items(self.trainer, batch_idx, batch[self.size_key].shape[0])  # type: ignore[attr-defined]
        self._step(batch, "validation", n)


class GenerativeTrainingPlan(LossPartsStepsMixin, FrozenHeadsMixin, pl.LightningModule):
    """Train a :class:`~omicformer.scgpt.module.TransformerModel` by generative pretraining.

    Logs ``train_loss``/``validation_loss`` and their parts (``loss_gen``, ``loss_mvc``,
    ``loss_ecs``) per epoch.

    Parameters
    ----------
    module
        The scGPT module (built with ``use_generative_training=True``; ``do_mvc=True`` for MVC).
    lr
        Adam learning rate (official pretraining: ``1e-3``; fine-tuning: ``1e-4``).
    weight_decay
        Adam weight decay.
    mvc
        Add the MVC (GEPC) loss on the generated genes.
    ecs_weight
        Weight of the ECS loss; ``0`` turns it off.
    scheduler_interval, scheduler_factor
        Multiply the learning rate by ``scheduler_factor`` every ``scheduler_interval`` optimiser
        steps (``StepLR`` with 100 and 0.99, the official pretraining script's schedule when it
        runs without warm-up; with its default warm-up it uses a cosine schedule instead).
        ``scheduler_factor=1`` disables it.

    Examples
    --------
    >>> plan = GenerativeTrainingPlan(module, lr=1e-3, mvc=True)  # doctest: +SKIP
    >>> run_training(
    ...     plan, dataset, GenerativeCollator(gene_ids, cls_id=..., pad_id=...)
    ... )  # doctest: +SKIP
    """

    size_key = "pcpt_genes"

    def __init__(
        self,
        module: TransformerModel,
        *,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        mvc: bool = True,
        ecs_weight: float = 0.0,
        scheduler_interval: int = 100,
        scheduler_factor: float = 0.99,
    ):
        super().__init__()
        if mvc and not module.config.do_mvc:
            msg = "mvc=True needs a module built with do_mvc=True."
            raise ValueError(msg)
        self.module = module
        self.lr, self.weight_decay = lr, weight_decay
        self.mvc, self.ecs_weight = mvc, ecs_weight
        self.scheduler_interval, self.scheduler_factor = scheduler_interval, scheduler_factor
        c = module.config
        self._needs_batch = bool(c.use_batch_labels or c.domain_spec_batchnorm)
        unused = ["cls_decoder.", "grad_reverse_discriminator.", "decoder.zero_logit."]
        unused += ["mvc_decoder.W_zero_logit."] if self.mvc else ["mvc_decoder."]
        self.freeze(lambda name: name.startswith(tuple(unused)))

    def losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Total ``loss`` and its parts for one batch from :class:`GenerativeCollator`."""
        out = self.module.generative_forward(
            batch["pcpt_genes"],
            batch["pcpt_values"],
            batch["pcpt_padding_mask"],
            batch["gen_genes"],
            batch["gen_padding_mask"],
            batch_labels=batch["batch_labels"] if self._needs_batch else None,
            MVC=self.mvc,
            ECS=self.ecs_weight > 0,
        )
        target, keep = batch["gen_values"], ~batch["gen_padding_mask"]
        parts = {"loss_gen": masked_mse_loss(out["gen_preds"], target, keep)}
        if self.mvc:
            Lp = batch["pcpt_genes"].shape[1]
            parts["loss_mvc"] = masked_mse_loss(out["mvc_output"][:, Lp:], target, keep)
        if self.ecs_weight > 0:
            parts["loss_ecs"] = out["loss_ecs"]
        loss = parts["loss_gen"] + parts.get("loss_mvc", 0.0)
        if self.ecs_weight > 0:
            loss = loss + self.ecs_weight * parts["loss_ecs"]
        return {"loss": loss, **parts}

    def configure_optimizers(self) -> Any:
        """Adam and the official step-wise exponential decay."""
        params = [p for p in self.module.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.scheduler_factor == 1:
            return opt
        sched = torch.optim.lr_scheduler.StepLR(
            opt, step_size=self.scheduler_interval, gamma=self.scheduler_factor
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
