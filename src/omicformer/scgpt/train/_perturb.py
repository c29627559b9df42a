"""Fine-tuning scGPT for perturbation prediction (official ``Tutorial_Perturbation``, Cui et al. 2024).

Training pairs follow GEARS: every perturbed cell is a target, and its input is a randomly
drawn control cell of the training data (new draws every epoch); a control cell is its own
input and target. The input is the control cell's expression of every gene (continuous, no
binning, no masking) plus a per-gene perturbation flag (1 on the perturbed genes, 0 elsewhere)
whose embedding is added to the gene and value embeddings; the output is the expression of
every gene after the perturbation, ``coeff(h) * x_ctrl + bias(h)``.

Loss per batch: MSE over all genes (official), + ``de_weight`` x the MSE on the condition's
differentially expressed genes (optional).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import numpy as np
import scipy.sparse as sp
import torch
from torch.utils.data import Dataset

from ..._core._random import collate_rng
from ..._core._train import split_indices
from .._conditions import condition_id, parse_condition
from .._perturb_data import top_de_genes
from ..module import TransformerModel
from ._plan import FrozenHeadsMixin, LossPartsStepsMixin, adam_with_epoch_decay

#: Official per-gene flags (``pert_encoder`` rows): not perturbed, perturbed.
NOT_PERTURBED, PERTURBED = 0, 1
#: ``pert_pad_id`` of the official ``Tutorial_Perturbation``: ``Embedding(3, d, padding_idx=0)``,
#: so "not perturbed" (and padding) adds the zero vector and only "perturbed" is learned.
TUTORIAL_PERT_PAD_ID = NOT_PERTURBED


@dataclass
class Screen:
    """A Perturb-seq screen as fine-tuning reads it (built by :func:`training_screen`).

    Condition code ``k`` names ``conditions[k]``; code 0 is the control. ``perturbed[k]`` and
    ``de[k]`` are the model-gene columns of its perturbed and DE genes, ``deltas[k]`` the mean
    expression of its cells minus the control mean; ``held`` the codes whose cells are held out
    for validation.
    """

    X: Any  # CSR, cells x model genes
    codes: np.ndarray
    conditions: list[str]
    perturbed: list[np.ndarray]
    deltas: list[np.ndarray]
    de: list[np.ndarray]
    held: np.ndarray
    ctrl_mean: np.ndarray

    @property
    def val_mask(self) -> np.ndarray:
        return np.isin(self.codes, self.held)

    @property
    def ctrl_rows(self) -> np.ndarray:
        return np.flatnonzero(self.codes == 0)

    def trained_mean_change(self) -> np.ndarray:
        """Mean of ``deltas`` over the training perturbations (zeros when there are none)."""
        held = set(self.held.tolist())
        kept = [self.deltas[k] for k in range(1, len(self.conditions)) if k not in held]
        return np.mean(kept, axis=0) if kept else np.zeros_like(self.ctrl_mean)

    def trained_singles(self) -> dict[int, np.ndarray]:
        """``{column: delta}`` of every single-gene perturbation that is training data."""
        held = set(self.held.tolist())
        return {int(self.perturbed[k][0]): self.deltas[k]
                for k in range(1, len(self.conditions))
                if len(self.perturbed[k]) == 1 and k not in held}  # fmt: skip


def training_screen(
    X: Any,
    labels: np.ndarray,
    control: str,
    columns: Callable[[tuple[str, ...]], np.ndarray],
    genes: Sequence[str],
    *,
    n_de: int,
    validation_size: float,
    random_state: int,
) -> Screen:
    """Code the conditions of ``labels``, hold out whole perturbations, find each one's DE genes.

    A perturbation written in several ways (``"A+B"`` and ``"B+A"``, ``"A+ctrl"`` and
    ``"ctrl+A"``) is one condition: its cells are pooled and held out together; the DE
    genes of a condition are the ``n_de`` of largest mean change against the control mean,
    perturbed genes excluded (:func:`~omicformer.scgpt._perturb_data.top_de_genes`).
    ``columns(genes)`` gives the model-gene columns of perturbed genes.
    """
    # one code per perturbation, however it is spelled ("A+B" / "B+A", "A+ctrl" / "ctrl+A"),
    # named by its first spelling in sorted order: its cells are pooled
    spellings = sorted(set(labels) - {control})
    first: dict[frozenset[str], str] = {}
    for c in spellings:
        first.setdefault(condition_id(parse_condition(c, control)), c)
    names = sorted(first.values())
    code = {c: k for k, c in enumerate(names, start=1)}
    code_of = {control: 0}
    code_of.update({c: code[first[condition_id(parse_condition(c, control))]] for c in spellings})
    codes = np.array([code_of[c] for c in labels])
    parsed = [parse_condition(c, control) for c in [control, *names]]
    ids = sorted({condition_id(g) for g in parsed[1:]}, key=sorted)
    held_ids = {ids[i] for i in split_indices(len(ids), validation_size, random_state)[1]}
    held = np.array([k for k, g in enumerate(parsed) if k and condition_id(g) in held_ids],
                    dtype=np.int64)  # fmt: skip
    means = [np.asarray(X[codes == k].mean(axis=0)).ravel() for k in range(len(parsed))]
    deltas = [m - means[0] for m in means]  # code 0: the control, all zeros
    var = np.asarray(genes)
    de = [np.zeros(0, dtype=np.int64)]
    de += [top_de_genes(deltas[k], var, parsed[k], n_de) for k in range(1, len(parsed))]
    return Screen(X, codes, [control, *names], [columns(g) for g in parsed], deltas, de, held,
                  means[0])  # fmt: skip


class CovariancePrior:
    """A perturbation's expected effect on every gene from the control cells' covariance.

    Knocking a gene ``g`` down (or up) by ``e_g`` on the log scale is propagated linearly
    through the control cells' gene-gene covariance ``C`` (a Gaussian conditional mean):
    ``prior = e_g * C[:, g] / (C[g, g] + ridge)``, with ``prior[g] = e_g`` for the perturbed gene
    itself. ``e_g`` is the gene's own mean change in its training single perturbation when there
    is one, else the mean of those own changes over the training singles (the typical knockdown
    of the screen). With ``shared`` (``m``, the mean change of the training perturbations: the
    response they share, as the ``mean`` baseline predicts it), a gene's prior is ``m + (e_g -
    m_g) * C[:, g] / (C[g, g] + ridge)``, still ``e_g`` on ``g``. A combination gets the sum of
    its genes' priors, where a gene's observed single-perturbation change (``observed``)
    replaces its propagation (the additive expectation). Only control cells and training
    perturbations enter, never a perturbation to predict.

    Parameters
    ----------
    controls
        Control cells x model genes (CSR or dense), the expression the model reads.
    own_effect
        ``{column: e_g}`` for the genes with a training single perturbation.
    default_effect
        ``e_g`` of every other gene.
    ridge
        Added to each perturbed gene's variance, relative to the median variance of the
        expressed genes (shrinks the slopes of rarely detected genes).
    observed
        ``{column: change of every gene}`` of the training single perturbations.
    shared
        ``m`` above, one value per gene; ``None``: zeros (the prior of models saved before
        it existed).
    """

    def __init__(
        self,
        controls: Any,
        own_effect: dict[int, float],
        default_effect: float,
        ridge: float = 0.05,
        observed: dict[int, np.ndarray] | None = None,
        shared: np.ndarray | None = None,
    ):
        X = controls.toarray() if sp.issparse(controls) else np.asarray(controls)
        self.Xc = (X - X.mean(axis=0)).astype(np.float64)
        self.var = (self.Xc**2).sum(axis=0) / max(len(X) - 1, 1)
        expressed = self.var[self.var > 0]
        self.ridge = ridge * (float(np.median(expressed)) if expressed.size else 1.0)
        self.own_effect = {int(k): float(v) for k, v in own_effect.items()}
        self.default_effect = float(default_effect)
        self.observed = {
            int(k): np.asarray(v, dtype=np.float64) for k, v in (observed or {}).items()
        }
        n_genes = self.Xc.shape[1]
        self.shared = np.zeros(n_genes) if shared is None else np.asarray(shared, np.float64)
        self._slopes: dict[int, np.ndarray] = {}

    def effect(self, col: int) -> float:
        """``e_g`` of model gene column ``col``."""
        return self.own_effect.get(int(col), self.default_effect)

    def slope(self, col: int) -> np.ndarray:
        """``C[:, g] / (C[g, g] + ridge)`` for gene column ``col`` (cached)."""
        col = int(col)
        if col not in self._slopes:
            cov = self.Xc.T @ self.Xc[:, col] / max(len(self.Xc) - 1, 1)
            self._slopes[col] = cov / (self.var[col] + self.ridge)
        return self._slopes[col]

    def single(self, col: int) -> np.ndarray:
        """Prior change of every gene when gene column ``col`` alone is perturbed."""
        col, effect = int(col), self.effect(col)
        prior = self.shared + (effect - self.shared[col]) * self.slope(col)
        prior[col] = effect
        return prior

    def __call__(self, cols: Sequence[int]) -> np.ndarray:
        """Prior change of every gene (float32) when the genes at ``cols`` are perturbed.

        A single gene: the covariance propagation. Several genes: the sum over them of the
        observed change of their training single perturbation where there is one, else of
        their covariance propagation (the additive expectation).
        """
        cols = [int(c) for c in cols]
        if len(cols) == 1:
            return self.single(cols[0]).astype(np.float32)
        prior = np.zeros(self.Xc.shape[1])
        for col in cols:
            prior += self.observed[col] if col in self.observed else self.single(col)
        return prior.astype(np.float32)


class PerturbationDataset(Dataset):
    """Cells of a Perturb-seq experiment: items ``(row, condition code)``.

    Parameters
    ----------
    X
        Cells x model genes (CSR), the expression the model reads and predicts.
    conditions
        Condition code of every row; rows with code ``control_code`` are controls.
    control_code
        Code of the control condition.
    """

    def __init__(self, X: sp.csr_matrix, conditions: np.ndarray, control_code: int):
        self.X = sp.csr_matrix(X, dtype=np.float32)
        self.conditions = np.asarray(conditions, dtype=np.int64)
        if len(self.conditions) != self.X.shape[0]:
            msg = f"{len(self.conditions)} condition codes for {self.X.shape[0]} cells."
            raise ValueError(msg)
        self.control_code = int(control_code)
        self.control_rows = np.flatnonzero(self.conditions == self.control_code)

    def __len__(self) -> int:
        return self.X.shape[0]

    def __getitem__(self, i: int) -> tuple[int, int]:
        return int(i), int(self.conditions[i])


class PerturbationCollator:
    """Batches of (control cell, perturbation flags) -> perturbed cell pairs.

    Parameters
    ----------
    dataset
        The :class:`PerturbationDataset` whose items are collated (its rows are the targets).
    control_pool
        Control expression rows (CSR, same genes) that inputs are drawn from.
    gene_ids
        Vocabulary id of every model gene (column).
    perturbed
        For every condition code, the columns of its perturbed genes.
    de_genes
        For every condition code, the columns of its DE genes (for the ``de_weight`` loss).
    priors
        For every condition code, the prior change of every gene (``(n_genes,)``, see
        :class:`CovariancePrior`), or ``None`` for a model without a prior input.
    center
        Subtracted from inputs and targets (the control mean of every gene), so the model
        reads and predicts deviations from the control mean; ``None``: the raw expression.
    max_len
        Genes per pass; with more genes, every batch uses a random subset of ``max_len`` genes
        (official ``randperm`` subsampling) that always holds the batch's perturbed genes.
    seed
        ``None``: training (draws from torch's global generator, reseeded per epoch by the
        runner); an integer: fixed draws per batch (validation).
    """

    def __init__(
        self,
        dataset: PerturbationDataset,
        control_pool: sp.csr_matrix,
        gene_ids: np.ndarray,
        perturbed: Sequence[np.ndarray],
        de_genes: Sequence[np.ndarray],
        *,
        priors: np.ndarray | None = None,
        center: np.ndarray | None = None,
        max_len: int,
        seed: int | None = None,
    ):
        if control_pool.shape[0] == 0:
            msg = "No control cells to draw inputs from."
            raise ValueError(msg)
        self.dataset, self.pool = dataset, sp.csr_matrix(control_pool, dtype=np.float32)
        self.gene_ids = np.asarray(gene_ids, dtype=np.int64)
        self.perturbed, self.de_genes = list(perturbed), list(de_genes)
        self.priors = None if priors is None else np.asarray(priors, dtype=np.float32)
        self.center = None if center is None else np.asarray(center, dtype=np.float32)
        self.max_len, self.seed = int(max_len), seed

    def __call__(self, items: Sequence[tuple[int, int]]) -> dict[str, torch.Tensor]:
        rows = np.array([i for i, _ in items])
        codes = np.array([c for _, c in items])
        rng = collate_rng(self.seed, int(rows[0]))
        target = self.dataset.X[rows].toarray()
        inputs = self.pool[rng.integers(0, self.pool.shape[0], len(rows))].toarray()
        is_ctrl = codes == self.dataset.control_code
        inputs[is_ctrl] = target[is_ctrl]  # GEARS: a control cell is its own input
        if self.center is not None:
            inputs -= self.center
            target -= self.center
        n_genes = len(self.gene_ids)
        flags = np.full((len(rows), n_genes), NOT_PERTURBED, dtype=np.int64)
        de = np.zeros((len(rows), n_genes), dtype=bool)
        for b, code in enumerate(codes):
            flags[b, self.perturbed[code]] = PERTURBED
            de[b, self.de_genes[code]] = True
        cols = np.arange(n_genes)
        if n_genes > self.max_len:
            must = np.unique(np.concatenate([self.perturbed[c] for c in codes] + [[]]).astype(int))
            rest = np.setdiff1d(cols, must)
            extra = rng.choice(rest, max(self.max_len - len(must), 0), replace=False)
            cols = np.sort(np.concatenate([must, extra]))
        batch = {
            "genes": torch.as_tensor(
                np.broadcast_to(self.gene_ids[cols], (len(rows), len(cols))).copy()
            ),
            "values": torch.as_tensor(inputs[:, cols]),
            "pert_flags": torch.as_tensor(flags[:, cols]),
            "target": torch.as_tensor(target[:, cols]),
            "de": torch.as_tensor(de[:, cols]),
        }
        if self.priors is not None:
            batch["pert_prior"] = torch.as_tensor(self.priors[codes][:, cols])
        return batch


class PerturbationTrainingPlan(LossPartsStepsMixin, FrozenHeadsMixin, pl.LightningModule):
    """The official perturbation objective as a Lightning plan.

    Logs ``train_loss``, ``train_loss_mse`` and ``train_loss_de`` per epoch, and the same as
    ``validation_*`` on held-out conditions.

    Parameters
    ----------
    module
        A :class:`~omicformer.scgpt.module.TransformerModel` built with ``perturbation=True``.
    lr
        Adam learning rate (official 1e-4).
    de_weight
        Weight of the extra MSE on each condition's DE genes (0: the official loss only).
    weight_decay
        Adam weight decay.
    lr_decay
        Learning rate factor after every epoch (official ``StepLR`` gamma 0.9).
    """

    #: Module parts the perturbation objective uses; everything else is frozen while fitting.
    USED = ("encoder.", "value_encoder.", "pert_encoder.", "prior_encoder.",
            "transformer_encoder.", "decoder.", "bn.", "dsbn.", "batch_encoder.")  # fmt: skip

    def __init__(
        self,
        module: TransformerModel,
        *,
        lr: float = 1e-4,
        de_weight: float = 0.0,
        weight_decay: float = 0.0,
        lr_decay: float = 0.9,
    ):
        super().__init__()
        if not module.config.perturbation:
            msg = "PerturbationTrainingPlan needs a module built with perturbation=True."
            raise ValueError(msg)
        if de_weight < 0:
            msg = f"de_weight={de_weight} must be >= 0."
            raise ValueError(msg)
        self.module = module
        self.lr, self.de_weight = lr, de_weight
        self.weight_decay, self.lr_decay = weight_decay, lr_decay
        self.freeze(lambda name: not name.startswith(self.USED))

    def losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``loss`` = MSE on all genes (+ ``de_weight`` x MSE on DE genes), and its parts."""
        out = self.module(
            batch["genes"], batch["values"], None,
            pert_flags=batch["pert_flags"], pert_prior=batch.get("pert_prior"),
        )  # fmt: skip
        sq = (out["mlm_output"].float() - batch["target"]) ** 2
        parts = {"loss_mse": sq.mean()}
        de = batch["de"]
        parts["loss_de"] = sq[de].sum() / de.sum().clamp(min=1)
        loss = parts["loss_mse"] + self.de_weight * parts["loss_de"]
        return {"loss": loss, **parts}

    def configure_optimizers(self) -> Any:
        """Adam; the learning rate times ``lr_decay`` after every epoch (official StepLR)."""
        return adam_with_epoch_decay(self.module, self.lr, self.weight_decay, self.lr_decay)
