"""Prediction for :class:`~omicformer.scgpt.model.ScGPTPerturbation`.

Control cells are perturbed in silico and their predictions averaged per requested condition.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from ..._core._anndata import check_obs_key
from ..._core._checks import check_int
from ..._core._warnings import warn_caller
from .._conditions import check_genes_known, condition_id, parse_condition, parse_requests

if TYPE_CHECKING:
    from anndata import AnnData


class PerturbationPredictionMixin:
    """``predict`` and its helpers, mixed into :class:`ScGPTPerturbation`.

    The class using it provides ``genes_``, ``module``, ``vocab``, ``get_setup_arg`` and the
    data accessors ``_columns``, ``_matrix``, ``_conditions`` and ``_perturbed_columns``.
    """

    def _gene_token_ids(self) -> np.ndarray:
        """Vocabulary id of each of the model's genes ``genes_`` (``-1``: not in it).

        A gene is its token as written, else the token that differs only in case: the genes
        that ``load_pretrained`` matched ignoring case (mouse-style symbols) keep their
        pretrained rows, the genes it added to the vocabulary are there as written.
        """
        return self.vocab.lookup(self.genes_, ignore_case=True)

    def _prior(self, controls: Any) -> Any:
        """The :class:`CovariancePrior` of these control cells and the trained own effects."""
        from ..train._perturb import CovariancePrior

        pos = {g: i for i, g in enumerate(self.genes_)}
        own = {pos[g]: e for g, e in getattr(self, "prior_effects_", {}).items() if g in pos}
        seen = getattr(self, "prior_observed_", {})
        observed = {pos[g]: d for g, d in seen.items() if g in pos}
        return CovariancePrior(controls, own, getattr(self, "prior_default_", 0.0),
                               observed=observed,
                               shared=getattr(self, "prior_shared_", None))  # fmt: skip

    def predict(
        self,
        perturbations: Sequence[str],
        adata: AnnData | None = None,
        *,
        n_control_cells: int = 100,
        max_len: int | None = None,
        adjust: bool = True,
        batch_size: int = 64,
        device: str | torch.device = "auto",
        random_state: int = 0,
        progress: bool = True,
    ) -> AnnData:
        """Predicted mean expression after each perturbation.

        Parameters
        ----------
        perturbations
            Condition strings (``"GENE+ctrl"``, ``"GENE1+GENE2"``) of measured genes, seen in
            training or not.
        adata
            AnnData whose control cells are perturbed in silico (same genes as the model;
            registered layer and condition column); ``None``: the model's AnnData.
        n_control_cells
            Control cells (drawn once, seeded, the same for every perturbation) whose
            predictions are averaged; all controls when there are fewer. A prediction's cost
            grows with this number.
        max_len
            Genes per forward pass; ``None``: the model's ``max_len`` (what each training pass
            read, 1,536 by default). With more genes, the genes other than the perturbed ones
            are dealt at random into the fewest windows that fit, each window read with the
            perturbed genes, as in training (the perturbed genes' predictions are the mean over
            the windows); at 5,000 genes this costs about a third of one pass over all of them.
            Pass the number of genes (or more) to read every gene at once, as the official
            ``pred_perturb`` does.
        adjust
            Regression-adjust each gene's mean for the sample of control cells (when
            ``n_control_cells`` is fewer than the control cells): minus the slope of the
            gene's prediction on the cell's own value of it (least squares over the sampled
            cells) times how far the sample's mean of that value lies from the mean of every
            control cell. A model that passes part of each cell through, as a briefly trained
            one does, then predicts about what it would from every control cell, without
            reading them all; a model whose predictions do not follow the cell is left as it
            is. ``False``: the plain mean over the sampled cells (the official
            ``pred_perturb``).
        batch_size
            Cells per forward pass (fewer with many genes: every gene of a pass is a token, and
            a pass holds at most 2e8 attention scores).
        device
            ``"auto"``, ``"cpu"``, ``"cuda"``, ...
        random_state
            Seed of the control cells' draw and of the windows.
        progress
            Show a progress bar.

        Warns
        -----
        UserWarning
            The model is not trained (scvi-tools' convention for untrained models): the new
            decoder of :meth:`load_pretrained` starts as the identity, so the predictions are
            the control mean, a change of 0. A model from :meth:`load` counts as trained if it
            was when saved.

        Returns
        -------
        AnnData with one observation per perturbation (``obs_names`` and
        ``obs["condition"]``: the strings as given), ``X`` the predicted mean expression on
        the scale and genes (same order) of ``adata`` (values the model puts below 0 raised to
        0: expression is never negative), ``layers["delta"]`` = ``X`` minus the control mean
        of ``adata``, and ``uns["perturbation_prediction"]`` (method, number of control cells,
        genes per pass ``"max_len"``, ``"adjust"``, the perturbations that were training data,
        ``"n_clipped"``: how many values were raised to 0).
        """
        import anndata as ad

        from ..._core._device import resolve_device
        from ..train._perturb_predict import mean_perturbed_expression

        self._check_if_trained(warn=True, message=(
            f"This {type(self).__name__} is not trained, or its last train() did not finish: "
            "a new decoder is the identity, so every prediction is the control cells' mean "
            "expression (a change of 0), and an unfinished run's predictions are no "
            f"perturbation response either. Call {type(self).__name__}.train() first."
        ))  # fmt: skip
        adata = self.adata if adata is None else adata
        if adata is None:
            msg = "This model has no AnnData attached; pass adata= with control cells."
            raise ValueError(msg)
        n_control_cells = check_int("n_control_cells", n_control_cells,
                                    hint="control cells each prediction reads")  # fmt: skip
        batch_size = check_int("batch_size", batch_size, hint="cells per forward pass")
        if not isinstance(adjust, bool | np.bool_):
            msg = f"adjust={adjust!r} must be True or False."
            raise ValueError(msg)
        max_len = self.max_len if max_len is None else max_len
        if isinstance(max_len, bool) or not isinstance(max_len, int | np.integer) or max_len < 2:
            msg = f"max_len={max_len!r} must be an integer >= 2 (genes per forward pass)."
            raise ValueError(msg)
        control = self.get_setup_arg("control")
        if isinstance(perturbations, str):
            perturbations = [perturbations]
        requested = self.check_perturbations(perturbations)
        cols = self._columns(adata)
        check_obs_key(adata, self.get_setup_arg("condition_key"), "the model's condition_key")
        labels = self._conditions(adata).to_numpy()
        if not (labels == control).any():
            msg = (
                f"adata has no control cells (obs[{self.get_setup_arg('condition_key')!r}] == "
                f"{control!r}) to perturb in silico."
            )
            raise ValueError(msg)
        ctrl_rows = np.flatnonzero(labels == control)
        ctrl_all = self._matrix(adata, ctrl_rows)
        ctrl_mean = np.asarray(ctrl_all.mean(axis=0)).ravel()
        rng = np.random.default_rng(random_state)
        pick = np.sort(
            rng.choice(len(ctrl_rows), min(n_control_cells, len(ctrl_rows)), replace=False)
        )
        shift = ctrl_mean if getattr(self, "centered_", False) else np.zeros_like(ctrl_mean)
        Xc = torch.as_tensor(ctrl_all[pick].toarray() - shift[None, :].astype(np.float32))

        prior = self._prior(ctrl_all) if self.module.config.perturbation_prior else None
        out = mean_perturbed_expression(
            self.module, self._gene_token_ids(), Xc,
            [self._perturbed_columns(genes) for genes in requested], prior,
            max_len=int(max_len), control_mean=(ctrl_mean - shift) if adjust else None,
            batch_size=batch_size, device=resolve_device(device),
            progress=progress, random_state=random_state,
        ) + shift  # fmt: skip
        # log-normalised expression is never negative (the data were checked for it): the
        # regression head can go below 0 where a perturbed gene's prior change exceeds its
        # control level, and those values are raised to 0
        n_clipped = int((out < 0).sum())
        out = np.maximum(out, 0.0)
        inverse = _inverse(cols)  # model gene order -> adata's gene order
        X = out[:, inverse]
        trained = self._trained_ids()
        seen = [p for p, g in zip(perturbations, requested, strict=True)
                if condition_id(g) in trained]  # fmt: skip
        if seen:
            warn_caller(
                f"{len(seen)} requested perturbation(s) were training data, not unseen: "
                f"{seen[:5]}{' ...' if len(seen) > 5 else ''}."
            )
        names = [str(p) for p in perturbations]
        pred = ad.AnnData(
            X=X.astype(np.float32),
            obs=pd.DataFrame({"condition": names}, index=pd.Index(names)),
            var=adata.var.copy(),
        )
        pred.layers["delta"] = (X - ctrl_mean[inverse][None, :]).astype(np.float32)
        pred.uns["perturbation_prediction"] = {
            "method": type(self).__name__,
            "control": control,
            "condition_key": self.get_setup_arg("condition_key"),
            "n_control_cells": int(Xc.shape[0]),
            "max_len": int(max_len),
            "adjust": bool(adjust),
            "seen_in_training": seen,
            "random_state": int(random_state),
            "n_clipped": n_clipped,
        }
        return pred

    def check_perturbations(self, perturbations: Sequence[str]) -> list[tuple[str, ...]]:
        """Parse ``perturbations`` and check their genes are model genes (clear errors).

        Parameters
        ----------
        perturbations
            Conditions such as ``"GENE"``, ``"GENE+ctrl"`` or ``"A+B"`` (one string or a
            list); the model's control label stands for no gene.

        Returns
        -------
        The genes of each condition, as tuples.
        """
        if isinstance(perturbations, str):
            perturbations = [perturbations]
        parsed = parse_requests(perturbations, self.get_setup_arg("control"))
        check_genes_known([g for gs in parsed for g in gs], self.genes_, "the model's genes")
        return parsed

    def _trained_ids(self) -> set[frozenset[str]]:
        control = self.get_setup_arg("control")
        names = getattr(self, "train_conditions_", [])
        return {condition_id(parse_condition(c, control)) for c in names}


def _inverse(cols: np.ndarray) -> np.ndarray:
    """Permutation taking model-order columns back to the AnnData's order."""
    inv = np.empty_like(cols)
    inv[cols] = np.arange(len(cols))
    return inv
