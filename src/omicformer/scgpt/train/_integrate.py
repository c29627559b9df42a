"""Fine-tuning scGPT for batch integration (official ``Tutorial_Integration``, Cui et al. 2024).

Loss per batch, the official tutorial's terms (``MLM``, ``GEPC``, ``ECS``, ``DAB``, ``DSBN``)
with the departures listed at the end:

* ``loss_mse``: masked value prediction, the MSE of the expression decoder on the 40% of each
  cell's gene values replaced by ``mask_value`` (``mask_ratio=0.4``);
* ``loss_gepc``: the same MSE for the MVC (GEPC) head, which predicts each masked gene's value
  from the cell embedding and the gene's embedding;
* ``ecs_weight * loss_ecs``: elastic cell similarity on the ``<cls>`` embeddings (official
  weight 10, threshold 0.8);
* ``dab_weight * loss_dab``: cross-entropy of the batch discriminator, which sits behind the
  gradient-reversal layer, so the encoder learns to make batches indistinguishable
  (official weight 1);
* ``mnn_weight * loss_mnn`` (our addition, off by default): mutual nearest neighbours from
  different batches of a minibatch, on the centred ``<cls>`` embeddings, pulled together
  (:func:`~omicformer.scgpt.module.mnn_loss`); needs minibatches that mix batches;
* ``label_weight * loss_cls`` (our addition, as scANVI does): cross-entropy of the cell-type head
  on the cells that have a label, so that known cell types stay apart.

Domain-specific batch norm lives in the module (``domain_spec_batchnorm=True``); with it, every
minibatch holds cells of one batch (the runner's ``groups``), as the official
``per_seq_batch_sample``.

Departures from the tutorial, kept because the pretrained models are read this way: its cells
are tokenised with ``tokenize_and_pad_batch`` (``<cls>`` value 0, unexpressed genes as tokens,
``include_zero_gene=True``), and ``random_mask_value`` masks ``int(n * 0.4)`` of the ``n``
non-padding positions, ``<cls>`` among them. Here ``<cls>`` has the value ``pad_value``, as
in the official ``embed_data`` (so fine-tuned and zero-shot embeddings read the same tokens),
only expressed genes are tokens (with ``n_zero_genes``, a sample of unexpressed ones enters the
GEPC loss as ``zero_genes``), and
``int(n_genes * 0.4)`` gene positions are masked, never ``<cls>``. With no zero tokens, the
tutorial's two Bernoulli terms on the zero probabilities (``explicit_zero_prob=True``) are
left out and their heads frozen (:data:`UNUSED_HEADS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F

from .._tokenize import pad_batch
from ..module import TransformerModel, masked_mse_loss, mnn_loss
from ._data import CellCollator
from ._plan import FrozenHeadsMixin, LossPartsStepsMixin, adam_with_epoch_decay

#: Parameters the integration objective never uses.
UNUSED_HEADS = ("flag_encoder.", "decoder.zero_logit.", "mvc_decoder.W_zero_logit.")


class MaskedValueCollator(CellCollator):
    """Tokenise cells and hide a fraction of their values (as the official ``random_mask_value``).

    In every cell, ``int(n_genes * mask_ratio)`` randomly chosen gene positions (never
    ``<cls>``, never padding) get ``mask_value`` as input; their binned values are the targets.
    The official function counts ``<cls>`` among the positions it may mask (value 0 in the
    tutorial's tokens), so it masks ``int((n_genes + 1) * mask_ratio)`` positions: at most one
    more, sometimes ``<cls>`` (see the module docstring).

    Parameters
    ----------
    gene_ids, cls_id, pad_id, pad_value, n_bins, max_len, seed, gene_selection
        Token layout and randomness, as :class:`~omicformer.scgpt.train.CellCollator`.
    mask_ratio
        Fraction of each cell's genes to mask (official 0.4).
    mask_value
        Input value of masked positions (official ``-1``).

    n_zero_genes
        Also draw, per cell, this many dataset genes the cell does not express
        (``zero_genes``, ``(B, n_zero_genes)``, ``pad_id`` where fewer exist); the GEPC head
        learns to predict 0 for them. The official recipe feeds unexpressed genes as tokens
        (``include_zero_gene=True``); this keeps that signal for the cell embedding without
        paying for the extra tokens in the transformer.

    Returns
    -------
    A dict of tensors: ``genes``, ``values`` (input, masked), ``target`` (unmasked values),
    ``padding_mask`` (True at pads), ``masked`` (True where a value is hidden), all (B, L);
    ``batch_labels``, ``labels`` (``-1``: no label) and ``cell_index``, (B,); with
    ``n_zero_genes``, ``zero_genes``.
    """

    def __init__(
        self,
        gene_ids: np.ndarray,
        *,
        cls_id: int,
        pad_id: int,
        pad_value: float = -2.0,
        n_bins: int | None = 51,
        max_len: int | None = 1200,
        mask_ratio: float = 0.4,
        mask_value: float = -1.0,
        n_zero_genes: int = 0,
        seed: int | None = None,
        gene_selection: str = "random",
    ):
        super().__init__(gene_ids, cls_id=cls_id, pad_id=pad_id, pad_value=pad_value,
                         n_bins=n_bins, max_len=max_len, seed=seed,
                         gene_selection=gene_selection)  # fmt: skip
        if not 0 < mask_ratio < 1:
            msg = f"mask_ratio={mask_ratio} must lie strictly between 0 and 1."
            raise ValueError(msg)
        if n_zero_genes < 0:
            msg = f"n_zero_genes={n_zero_genes} must be >= 0."
            raise ValueError(msg)
        self.mask_ratio, self.mask_value = float(mask_ratio), float(mask_value)
        self.n_zero_genes = int(n_zero_genes)

    def __call__(self, items: Sequence[tuple]) -> dict[str, torch.Tensor]:
        index, cols, vals, codes, *rest = zip(*items, strict=True)
        labels = rest[0] if rest else (-1,) * len(index)
        cells, rng = self.tokenize(index, cols, vals)
        batch = pad_batch(cells, pad_id=self.pad_id, pad_value=self.pad_value)
        masked = np.zeros(batch["genes"].shape, dtype=bool)
        for i, cell in enumerate(cells):
            n = len(cell.genes) - 1
            n_mask = int(n * self.mask_ratio)
            masked[i, 1 + rng.choice(n, n_mask, replace=False)] = True
        masked_t = torch.from_numpy(masked)
        batch["target"] = batch["values"]
        batch["values"] = batch["values"].masked_fill(masked_t, self.mask_value)
        batch["masked"] = masked_t
        batch["batch_labels"] = torch.as_tensor(codes, dtype=torch.long)
        batch["labels"] = torch.as_tensor(labels, dtype=torch.long)
        batch["cell_index"] = torch.as_tensor(index, dtype=torch.long)
        if self.n_zero_genes:
            batch["zero_genes"] = self._zero_genes(cols, rng)
        return batch

    def _zero_genes(self, cols: Sequence[np.ndarray], rng: np.random.Generator) -> torch.Tensor:
        """Per cell, up to ``n_zero_genes`` random dataset genes it does not express (pad-filled)."""
        n = len(self.gene_ids)
        out = np.full((len(cols), self.n_zero_genes), self.pad_id, dtype=np.int64)
        for i, c in enumerate(cols):
            k = min(self.n_zero_genes, n - len(c))
            if k <= 0:
                continue
            draw = rng.choice(n, size=min(n, len(c) + 2 * k), replace=False)
            draw = draw[~np.isin(draw, c)][:k]
            out[i, : len(draw)] = self.gene_ids[draw]
        return torch.from_numpy(out)


class IntegrationTrainingPlan(LossPartsStepsMixin, FrozenHeadsMixin, pl.LightningModule):
    """The official integration objective (see the module docstring) as a Lightning plan.

    Logs ``train_loss`` and its parts per epoch; in validation, ``validation_loss`` is the
    masked-value MSE (the official model-selection loss), ``validation_loss_total`` the total.

    Parameters
    ----------
    module
        A :class:`~omicformer.scgpt.module.TransformerModel`; ``do_dab=True`` for the batch
        discriminator, ``domain_spec_batchnorm=True`` for DSBN, ``do_mvc=True`` for GEPC, and a
        ``cls_decoder`` with one output per class for ``label_weight > 0``.
    lr
        Adam learning rate (official 1e-4).
    mvc
        Add the GEPC (MVC) loss.
    ecs_weight
        Weight of the ECS loss (official 10; the threshold is the module's ``ecs_threshold``).
    dab_weight
        Weight of the discriminator's cross-entropy (official 1).
    mnn_weight
        Weight of the cross-batch mutual-nearest-neighbour loss (not official; 0: off).
    label_weight
        Weight of the cell-type cross-entropy on labelled cells (0: off).
    weight_decay
        Adam weight decay.
    lr_decay
        Learning rate factor after every epoch (official ``schedule_ratio`` 0.9).
    """

    def __init__(
        self,
        module: TransformerModel,
        *,
        lr: float = 1e-4,
        mvc: bool = True,
        ecs_weight: float = 10.0,
        dab_weight: float = 1.0,
        label_weight: float = 0.0,
        weight_decay: float = 0.0,
        lr_decay: float = 0.9,
        mnn_weight: float = 0.0,
    ):
        super().__init__()
        c = module.config
        if mvc and not c.do_mvc:
            msg = "mvc=True needs a module built with do_mvc=True."
            raise ValueError(msg)
        if dab_weight > 0 and not c.do_dab:
            msg = "dab_weight > 0 needs a module built with do_dab=True."
            raise ValueError(msg)
        self.module = module
        self.lr, self.weight_decay, self.lr_decay = lr, weight_decay, lr_decay
        self.mvc, self.ecs_weight = mvc, ecs_weight
        self.dab_weight, self.label_weight = dab_weight, label_weight
        self.mnn_weight = mnn_weight
        self._needs_batch = bool(c.use_batch_labels or c.domain_spec_batchnorm)
        unused = list(UNUSED_HEADS)
        if not mvc:
            unused.append("mvc_decoder.")
        if label_weight == 0:
            unused.append("cls_decoder.")
        if dab_weight == 0:
            unused.append("grad_reverse_discriminator.")
        self.freeze(lambda name: name.startswith(tuple(unused)))

    def losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Total ``loss`` and its parts for one batch from :class:`MaskedValueCollator`."""
        labels = batch["labels"]
        has_label = labels >= 0
        out = self.module(
            batch["genes"],
            batch["values"],
            batch["padding_mask"],
            batch_labels=batch["batch_labels"] if self._needs_batch else None,
            CLS=self.label_weight > 0,
            MVC=self.mvc,
            ECS=self.ecs_weight > 0,
        )
        target, masked = batch["target"], batch["masked"]
        parts = {"loss_mse": masked_mse_loss(out["mlm_output"].float(), target, masked)}
        loss = parts["loss_mse"]
        if self.mvc:
            parts["loss_gepc"] = self._gepc(out, batch)
            loss = loss + parts["loss_gepc"]
        if self.ecs_weight > 0:
            parts["loss_ecs"] = out["loss_ecs"].float()
            loss = loss + self.ecs_weight * parts["loss_ecs"]
        if self.mnn_weight > 0:
            parts["loss_mnn"] = mnn_loss(out["cell_emb"].float(), batch["batch_labels"])
            loss = loss + self.mnn_weight * parts["loss_mnn"]
        if self.dab_weight > 0:
            parts["loss_dab"] = F.cross_entropy(out["dab_output"].float(), batch["batch_labels"])
            loss = loss + self.dab_weight * parts["loss_dab"]
        if self.label_weight > 0:
            if has_label.any():
                logits = out["cls_output"][has_label].float()
                parts["loss_cls"] = F.cross_entropy(logits, labels[has_label])
            else:  # keeps every trainable parameter in the graph (DDP)
                parts["loss_cls"] = out["cls_output"].sum() * 0.0
            loss = loss + self.label_weight * parts["loss_cls"]
        return {"loss": loss, **parts}

    def _gepc(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """MSE of the MVC head on the masked genes (and on ``zero_genes``, whose target is 0)."""
        target, masked = batch["target"], batch["masked"]
        if "zero_genes" not in batch:
            return masked_mse_loss(out["mvc_output"].float(), target, masked)
        zero_genes = batch["zero_genes"]
        real = zero_genes.ne(self.module.config.pad_token_id)
        cell = out["cell_emb"]
        if self.module.config.use_batch_labels:
            cell = torch.cat([cell, self.module.batch_encoder(batch["batch_labels"])], dim=1)
        zero_pred = self.module.mvc_decoder(cell, self.module.encoder(zero_genes))["pred"]
        sq = ((out["mvc_output"].float() - target) ** 2)[masked].sum()
        sq = sq + (zero_pred.float() ** 2)[real].sum()
        return sq / (masked.sum() + real.sum()).clamp(min=1)

    def _logged(self, parts: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
        """The parts as ``<prefix>_<key>``; ``validation_loss`` is the masked-value MSE.

        The official model-selection loss; the validation total is ``validation_loss_total``.
        """
        logged = super()._logged(parts, prefix)
        if prefix == "validation":
            logged["validation_loss_total"] = logged["validation_loss"]
            logged["validation_loss"] = logged["validation_loss_mse"]
        return logged

    def configure_optimizers(self) -> Any:
        """Adam; the learning rate times ``lr_decay`` after every epoch (official StepLR)."""
        return adam_with_epoch_decay(self.module, self.lr, self.weight_decay, self.lr_decay)
