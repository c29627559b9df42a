"""``scgpt.tl.predict_perturbation``: fine-tune scGPT on Perturb-seq data, predict perturbations."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._core._anndata import check_layer, iter_row_chunks
from .._core._checks import check_int
from ._conditions import CONTROL, check_genes_known, parse_requests
from ._genes import gene_names
from ._perturb_data import check_perturbation_data, check_unique_genes
from ._resolve import describe_model

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger("omicformer")
_CONDITION = "condition"


def predict_perturbation(
    adata: AnnData,
    perturbations: Sequence[str],
    *,
    model: Any = "default",
    condition_key: str = "condition",
    control: str = CONTROL,
    layer: str | None = None,
    gene_key: str | None = None,
    max_epochs: int | None = None,
    n_control_cells: int = 100,
    prior: str | None = "covariance",
    de_weight: float = 0.0,
    batch_size: int = 64,
    device: str = "auto",
    random_state: int = 0,
    progress: bool = True,
    return_model: bool = False,
) -> AnnData | tuple[AnnData, Any]:
    """Predict the expression response to genetic perturbations, seen or never seen.

    Fine-tunes scGPT on ``adata`` with the official perturbation recipe (see
    :class:`~omicformer.scgpt.model.ScGPTPerturbation`), then perturbs ``n_control_cells``
    control cells in silico with each requested perturbation and averages the predictions.

    Parameters
    ----------
    adata
        Perturb-seq cells to learn from: control cells and the measured perturbations, in the
        GEARS convention (``obs[condition_key]``: ``control``, ``"GENE+ctrl"``,
        ``"GENE1+GENE2"``), log-normalised expression in ``X`` or ``layer``. Not modified.
    perturbations
        Condition strings to predict, e.g. ``["FOXA1+ctrl", "FOXA1+GATA1"]``: single genes or
        combinations of measured genes, including genes and combinations never perturbed in
        ``adata`` (requests that are training data are allowed, reported with a warning and
        in ``uns``).
    model
        A fitted :class:`~omicformer.scgpt.model.ScGPTPerturbation` (used as it is, no
        training; its genes must be ``adata``'s; ``max_epochs``, ``prior`` and ``de_weight``
        then do not apply, and a warning names those given), or a pretrained scGPT to fine-tune first:
        ``"default"`` (shipped with omicformer), an official scGPT folder, a folder saved by
        ``save()`` or an :class:`~omicformer.scgpt.model.ScGPT`.
    condition_key
        ``obs`` column with the conditions.
    control
        Label of unperturbed cells.
    layer
        Layer with log-normalised expression; ``None`` uses ``X``.
    gene_key
        ``var`` column with gene symbols; ``None`` uses ``var_names``.
    max_epochs
        Fine-tuning epochs; ``None``: about 60,000 cell passes, between 1 and 15 epochs; on a
        CPU, fewer when a training pass reads more than 256 genes (1,667 cell passes at the
        1,536 genes a pass reads of a screen of 5,000), so that a default run takes minutes
        whatever the number of genes (see
        :meth:`~omicformer.scgpt.model.ScGPTPerturbation.train`; the official tutorial trains
        15 epochs).
    n_control_cells
        Control cells perturbed in silico per perturbation (the same cells for every
        perturbation); all when there are fewer. Each gene's mean over them is
        regression-adjusted for the sample (see
        :meth:`~omicformer.scgpt.model.ScGPTPerturbation.predict`, ``adjust``), so 100 predict
        as 300 did and a third of the time; a prediction's cost grows with this number.
    prior
        ``"covariance"`` (default, our addition to the official method): each gene's token
        also receives the effect expected from the training perturbations' mean change and
        the control cells' gene-gene covariance (combinations: the sum of the genes' priors,
        observed single effects where measured), and the transformer learns corrections to
        it; ``None``: the official method (flags only).
        See :class:`~omicformer.scgpt.train.CovariancePrior`.
    de_weight
        Weight of the extra loss on each training condition's DE genes (0: official loss).
    batch_size
        Cell pairs per training step and cells per prediction pass.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ... Fine-tuning runs on CUDA when the device is a CUDA
        device, else on the CPU; embedding and prediction run on the device (``"auto"``:
        CUDA, then Apple MPS, then CPU).
    random_state
        Seed of fine-tuning (pairing, shuffling) and of the control cells' draw.
    progress
        Show progress bars.
    return_model
        Also return the fitted model, to predict more perturbations without retraining
        (``model.predict([...])`` or ``predict_perturbation(adata, [...], model=model)``).

    Returns
    -------
    AnnData with one observation per requested perturbation (``obs_names`` and
    ``obs["condition"]``: the strings as given), ``X``: predicted mean post-perturbation
    expression on the scale and genes (``var_names``, same order) of ``adata`` (never below 0;
    ``uns["perturbation_prediction"]["n_clipped"]`` counts the values raised to 0),
    ``layers["delta"]``: ``X`` minus the control mean, and ``uns["perturbation_prediction"]``
    (params, the model's description, training epochs, ``max_epochs`` / ``max_steps`` used
    (``"schedule"``) and losses, genes per prediction pass (``"max_len"``), perturbations that
    were training data, genes given new embeddings). With ``return_model=True``:
    ``(prediction, model)``.

    Examples
    --------
    >>> from omicformer import scgpt
    >>> pred = scgpt.tl.predict_perturbation(adata, ["KLF1+ctrl", "KLF1+CEBPA"])
    >>> pred.layers["delta"]  # predicted change against the control mean
    >>> scgpt.tl.evaluate_perturbation(pred, adata_test)  # when the truth is known

    References
    ----------
    Cui et al. (2024), scGPT: toward building a foundation model for single-cell multi-omics
    using generative AI. Nature Methods 21, 1470-1480.
    """
    from .._core._checks import warn_ignored
    from .._core._device import resolve_device
    from .model import ScGPTPerturbation

    trained = isinstance(model, ScGPTPerturbation) and model.is_trained_
    if trained and model.get_setup_arg("control") != control:  # before the requests are read
        msg = (
            f"The model's control label is {model.get_setup_arg('control')!r}, not "
            f"{control!r}: pass control={model.get_setup_arg('control')!r} (and perturbations "
            "written with it)."
        )
        raise ValueError(msg)
    work = _prepare(adata, perturbations, condition_key, control, layer, gene_key,
                    n_control_cells, prior, random_state)  # fmt: skip
    if trained:
        fitted = model
        warn_ignored(
            predict_perturbation,
            {"max_epochs": max_epochs, "prior": prior, "de_weight": de_weight},
            "model is a trained ScGPTPerturbation and predicts as it is",
        )
        # the fitted model reads its own setup's condition column, gene column and layer
        work.obs = work.obs.rename(columns={_CONDITION: fitted.get_setup_arg("condition_key")})
        if fitted.get_setup_arg("gene_key") is not None:
            work.var[fitted.get_setup_arg("gene_key")] = work.var_names
        if fitted.get_setup_arg("layer") is not None:
            work.layers[fitted.get_setup_arg("layer")] = work.X
        fitted._columns(work)  # ValueError when the genes differ
        retrained = False
    else:
        if not (work.obs[_CONDITION] != control).any():
            msg = (
                f"adata holds only control cells (obs[{condition_key!r}] == {control!r}): "
                "fine-tuning needs perturbed cells to learn from. Pass a trained "
                "ScGPTPerturbation as model= to predict from the controls alone."
            )
            raise ValueError(msg)
        with warnings.catch_warnings():  # the input's check (_prepare) has warned of counts
            warnings.filterwarnings("ignore", message=".*raw counts, it seems")
            ScGPTPerturbation.setup_anndata(work, condition_key=_CONDITION, control=control)
        fitted = ScGPTPerturbation.load_pretrained(model, work, prior=prior)
        dev = resolve_device(device)
        fitted.train(
            max_epochs=max_epochs, batch_size=batch_size, de_weight=de_weight,
            random_state=random_state, accelerator="gpu" if dev.type == "cuda" else "cpu",
            devices=1, enable_progress_bar=progress,
        )  # fmt: skip
        retrained = True
    pred = fitted.predict(
        perturbations, work, n_control_cells=n_control_cells, batch_size=batch_size,
        device=device, random_state=random_state, progress=progress,
    )  # fmt: skip
    pred.var = adata.var.copy()
    history = fitted.history or {}
    info = pred.uns["perturbation_prediction"]
    info["params"] = {
        "model": describe_model(model), "condition_key": condition_key, "control": control,
        "layer": layer, "gene_key": gene_key, "max_epochs": max_epochs,
        "n_control_cells": n_control_cells,
        "prior": "covariance" if fitted.module.config.perturbation_prior else "none",
        "de_weight": de_weight, "batch_size": batch_size,
        "random_state": random_state, "retrained": retrained,
    }  # fmt: skip
    info["epochs"] = len(history["train_loss"]) if "train_loss" in history else 0
    info["schedule"] = dict(getattr(fitted, "schedule_", {}))
    info["losses"] = {k: float(np.asarray(v).ravel()[-1]) for k, v in history.items()
                      if "step" not in k and len(v)}  # fmt: skip
    info["new_genes"] = list(getattr(fitted, "pretrained_report_", {}).get("new_genes", []))
    return (pred, fitted) if return_model else pred


def _prepare(
    adata: AnnData,
    perturbations: Sequence[str],
    condition_key: str,
    control: str,
    layer: str | None,
    gene_key: str | None,
    n_control_cells: int,
    prior: str | None,
    random_state: int,
) -> AnnData:
    """Validate everything before any work; return a private AnnData for scvi-tools' setup.

    It holds every gene of ``adata`` (symbols as ``var_names``), the expression of ``layer``
    and ``obs["condition"]``; scvi-tools writes into it, never into ``adata``.
    """
    import anndata as ad
    import scipy.sparse as sp

    check_layer(adata, layer)
    if prior not in ("covariance", None):
        msg = f"prior={prior!r} is not 'covariance' or None."
        raise ValueError(msg)
    check_int("n_control_cells", n_control_cells, hint="control cells each prediction reads")
    check_int("random_state", random_state, minimum=0, hint="the seed of training and prediction")
    if isinstance(perturbations, str):
        msg = f"perturbations must be a list of condition strings, e.g. [{perturbations!r}]."
        raise TypeError(msg)
    requested = parse_requests(perturbations, control)
    check_perturbation_data(adata, condition_key, control, layer)
    names = gene_names(adata, gene_key)
    check_unique_genes(names, gene_key)
    check_genes_known([g for gs in requested for g in gs], names, "the genes of adata")
    X = sp.vstack([chunk for _, chunk in iter_row_chunks(adata, layer)], format="csr")
    obs = pd.DataFrame(
        {_CONDITION: pd.Categorical(adata.obs[condition_key].astype(str).to_numpy())},
        index=adata.obs_names.copy(),
    )
    return ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=pd.Index(names.astype(str))))
