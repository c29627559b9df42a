"""The perturbation heads of :class:`~omicformer.scgpt.model.ScGPTPerturbation` on a module."""

from __future__ import annotations

from typing import Any

import torch

from ..train._perturb import TUTORIAL_PERT_PAD_ID
from ._io import rebuild_module


def _perturbation_module(module: Any, prior: str | None) -> tuple[Any, list[str]]:
    """``module`` rebuilt with the perturbation heads and the tutorial's ``pert_pad_id=0``.

    The "not perturbed" row of ``pert_encoder`` is the zero vector (also where weights of a
    model built with another ``pert_pad_id`` were copied into it).
    """
    new, fresh = rebuild_module(module, perturbation=True, perturbation_prior=prior is not None,
                                n_cls=1, pert_pad_id=TUTORIAL_PERT_PAD_ID)  # fmt: skip
    with torch.no_grad():
        new.pert_encoder.weight[TUTORIAL_PERT_PAD_ID].zero_()
    return new, fresh


def _check_prior(prior: str | None) -> None:
    if prior not in ("covariance", None):
        msg = f"prior={prior!r} is not 'covariance' or None."
        raise ValueError(msg)
