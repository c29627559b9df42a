"""``scgpt.tl.integrate``: remove batch effects by fine-tuning scGPT (official integration recipe)."""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._core._checks import check_key, check_seed
from .._core._deprecation import renamed_kwargs
from ._backed import closes_reopened
from ._embed import empty_cells_warned_once
from ._genes import case_warning_given
from ._integrate_input import prepare
from ._resolve import describe_model

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

#: ``mnn_weight`` for two batches (``mnn_weight=None``; more batches: 0, Harmony mixes them).
MNN_WEIGHT = 30.0
#: Two batches mixing less than this in the pretrained embedding get ``MNN_WEIGHT`` (else 0).
APART = 0.05
#: Cells per batch that measure it (a seeded random subset of larger batches).
MIXING_CELLS = 1000


def _correction_of(mnn_correct: bool | None) -> str | None:
    """``correction`` for the deprecated ``mnn_correct``."""
    return "auto" if mnn_correct is None else ("mnn" if mnn_correct else None)


@closes_reopened  # its read-only handles on the caller's file, also on errors
@empty_cells_warned_once
@case_warning_given  # the tl function warns; the model classes it drives do not
@renamed_kwargs(mnn_correct=("correction", _correction_of))
def integrate(
    adata: AnnData,
    *,
    batch_key: str,
    model: Any = "default",
    labels_key: str | None = None,
    layer: str | None = None,
    gene_key: str | None = None,
    key_added: str = "X_scgpt_integrated",
    max_epochs: int | None = None,
    ecs_weight: float = 10.0,
    ecs_threshold: float = 0.8,
    dab_weight: float = 1.0,
    mnn_weight: float | None = None,
    correction: str | None = "auto",
    balance_batches: bool | None = None,
    dsbn: bool = False,
    batch_conditioned: bool = True,
    dropout: float = 0.0,
    batch_size: int = 64,
    max_len: int | None = None,
    gene_selection: str | None = None,
    device: str = "auto",
    random_state: int = 0,
    progress: bool = True,
    return_model: bool = False,
    copy: bool = False,
) -> Any:
    """Integrate batches with scGPT: fine-tune, then embed every cell batch-corrected.

    The official scGPT integration recipe (``Tutorial_Integration``): starting from the
    pretrained model, fine-tune on ``adata`` with masked value prediction (40% of each cell's
    values hidden) + GEPC (the same values predicted from the cell embedding), elastic cell
    similarity (ECS), an adversarial batch discriminator behind a gradient-reversal layer (DAB)
    and, with ``dsbn=True``, domain-specific batch norm (DSBN; the official minibatches hold one
    batch each). Then the fine-tuned embedding is corrected (``correction``). By default, two
    batches that lie apart in the pretrained embedding (PBMC experiments of different labs)
    get one addition to the objective, cells of different batches that are mutual nearest
    neighbours in a minibatch pulled together (``mnn_weight``), and mutual-nearest-neighbour
    correction vectors afterwards (the ``<cls>`` output, L2-normalised, as :func:`embed`);
    two batches that already mix somewhat, and more batches, are corrected by Harmony.

    Parameters
    ----------
    adata
        Cells x genes, raw counts or other non-negative expression in ``X`` or ``layer`` (scGPT
        bins each cell's values by rank, so log-normalised data work too); gene symbols in
        ``var_names`` or ``var[gene_key]``. Genes outside the model's vocabulary are dropped
        (how many is logged and stored in ``uns``). ``backed="r"`` works: fine-tuning
        streams the file in chunks of cells (minibatches from windows of a few chunks, or with
        ``balance_batches`` each batch's cells read by chunk, as
        ``ScGPTIntegration.train(streaming=True)``) and memory does not grow with the number
        of cells; so does the embedding. A trained ``ScGPTIntegration`` passed as ``model``
        (no fine-tuning) is the exception: the cells' values of the vocabulary genes are read
        into memory first, in chunks, as for an AnnData in memory.
    batch_key
        ``obs`` column with the batch of each cell (at least 2 batches; a missing value is
        an error, an empty batch or one named ``"nan"``, ``"<NA>"`` or ``"None"`` a warning).
    model
        ``"default"``, an official scGPT folder, a folder saved by ``save``, or an
        :class:`~omicformer.scgpt.model.ScGPT`; fine-tuning starts from its weights. An
        :class:`~omicformer.scgpt.model.ScGPTIntegration` already trained on these batches is
        used as it is (embedding only, no retraining; the fine-tuning arguments, such as
        ``max_epochs``, ``dsbn`` or ``labels_key``, are then ignored, with a warning).
    labels_key
        Optional ``obs`` column with cell types for the cells that have one (missing or empty
        values, and the texts ``"nan"``, ``"<NA>"`` and ``"None"``, with a warning: unlabelled;
        not the ``batch_key``). As scANVI does, a cell-type head is then trained on the labelled
        cells too (cross-entropy, weight 1), meant to keep known cell types apart. Measured
        with half the cells of six PBMC sets labelled, it did not do so reliably: biology
        -0.023 to +0.046 and batch correction -0.044 to +0.006 against no labels (the
        benchmarks page, "Cell labels in fine-tuning").
    layer, gene_key
        Where the expression and the gene symbols are (``gene_key=None``: ``var_names``, or
        a ``var`` column of symbols where they are Ensembl ids, see
        :func:`~omicformer.scgpt.tl.embed`). ``layer=None`` reads ``adata.X``, or
        ``adata.raw`` (with a warning) when ``X`` holds scaled values (negative ones: scanpy's
        ``sc.pp.scale``) and ``adata.raw`` holds none (in memory; a ``backed="r"`` file's
        ``X`` is read as it is).
    key_added
        ``obsm`` key of the corrected embedding. No ``"/"`` for a backed ``adata`` (HDF5 reads
        it as nested groups).
    max_epochs
        Fine-tuning epochs; ``None`` scales with the data (about 8,000 cell passes, between 1
        and 15 epochs, at most 16,000 cell passes), so that CPU runs take minutes.
    ecs_weight, ecs_threshold
        Elastic cell similarity weight and cosine threshold (official 10 and 0.8).
    dab_weight
        Weight of the adversarial batch loss (official 1).
    mnn_weight
        Weight of a loss that is not part of the official recipe: in every minibatch, two cells
        of different batches that are each other's most similar cell of the other batch
        (mutual nearest neighbours, by cosine of the centred ``<cls>`` embeddings) are pulled
        together (:func:`~omicformer.scgpt.module.mnn_loss`). Official ECS only ever compares
        cells of one batch (its minibatches hold one batch each), and the adversarial
        discriminator alone left two PBMC experiments fully apart; with this loss on,
        minibatches mix the batches, so it finds pairs (with ``dsbn=True`` too, which then
        normalises each batch's cells of a minibatch with that batch's layer). ``0``: the
        official objective (with DSBN, one batch per minibatch). It assumes the batches share
        their cell types: a population that only one batch holds can end inside another type
        (try ``0`` then). ``None`` (default): for two batches, 30 where the pretrained
        model's embedding of the batches (up to 1,000 cells of each, a seeded random subset)
        mixes them less than 0.05 (:func:`omicformer._core._mnn.mixing`: about 1 mixed, 0 apart),
        else 0; with ``dsbn=True`` 30 for two batches without measuring (pass 0 for the
        official one-batch minibatches); 0 for more batches. Where the batches start less apart, the loss cost biology
        and mixing both with Harmony after it (three PBMC experiments, seed 0, scib bio /
        batch: 0.626 / 0.555 with it, 0.649 / 0.609 without), and two batches starting at
        0.08 to 0.75 scored higher without it and Harmony than with it and the MNN
        correction (scib total, 3 seeds: 0.831 against 0.827, 0.695 / 0.653, 0.608 / 0.537,
        0.750 / 0.670, 0.766 / 0.757); the two PBMC pairings that start at 0.006 and 0.010
        scored higher with it (0.678 and 0.678 against 0.627 and 0.624, 2 seeds). See
        "Integrating batches" in the scGPT guide.
    correction
        How the fine-tuned embedding is corrected afterwards; not part of the official recipe.
        ``"mnn"``: as Haghverdi et al. (2018) correct genes, cells of two batches that are
        among each other's 20 nearest cells of the other batch are pairs, and each batch
        (largest first) moves onto those merged before it by a Gaussian-kernel average of the
        pair differences around each cell, a narrow kernel where the batch lies apart from the
        others and a wide one where it already mixes with them (:mod:`omicformer._core._mnn`);
        then every cell is L2-normalised again. ``"harmony"``: Harmony (Korsunsky et al.,
        2019; ``harmonypy``, ``theta=2``, ``lamb=0.5``) on the embedding's top 50 principal
        components, all batches at once, run from 5 k-means starts, the mean of the 5
        corrected components then corrected again the same way (a second round), which is the
        result (:mod:`omicformer._core._harmony`: one start's result depended on the start,
        and on the order of the cells, by up to 0.04 of biology conservation; one round left
        part of the batches' offsets). ``None``: no correction. ``"auto"`` (default):
        ``None`` with ``dsbn=True`` (the setting for batches that hold different cells); else
        for two batches ``"mnn"`` when ``mnn_weight > 0`` (``"harmony"`` at ``0``), and for
        more ``"harmony"`` (a trained model passed as ``model`` is judged by how it was
        trained).
        Measured with the defaults (scib bio conservation / batch correction, ``None`` ->
        the correction): two batches apart, ``"mnn"``: two PBMC experiments 0.636 / 0.519 ->
        0.633 / 0.724 (9 seeds), PBMC 3k with ``pbmc_celltypist`` 0.741 / 0.460 -> 0.743 /
        0.562 (3 seeds), and before the route depended on the mixing, two CITE-seq runs 0.788 /
        0.846 -> 0.788 / 0.885 (7 seeds; now Harmony, see below); more batches, the
        defaults before (``"mnn"``, ``mnn_weight=30``) -> now (``"harmony"``,
        ``mnn_weight=0``; one Harmony start), 3 seeds: three PBMC experiments 0.633 / 0.533 ->
        0.647 / 0.613, four PBMC batches (two experiments, two CITE-seq runs) 0.612 / 0.572 ->
        0.666 / 0.689; hsmm's four plates (one time point each; 6 seeds) 0.307 / 0.362 ->
        0.275 / 0.560 (use ``dsbn=True`` there); with the mean of five starts 0.648 / 0.616,
        0.663 / 0.684 and 0.271 / 0.571; with ``lamb=0.5`` instead of 1 (since 2026-12-06)
        0.655 / 0.653, 0.659 / 0.701 and 0.264 / 0.607 (3 seeds); with Harmony's second round
        (since late on 2026-12-06) 0.632 / 0.667, 0.683 / 0.727 and 0.244 / 0.649, and two
        CITE-seq runs 0.775 / 0.917. Harmony did worse than
        ``"mnn"`` on two batches apart (two PBMC experiments 0.632 / 0.686 against 0.637 /
        0.736). See "Integrating batches" in the scGPT guide. It applies to the cells
        integrated together here: the returned model's own embedding of further cells is not
        corrected. Formerly ``mnn_correct`` (``True``:
        ``"mnn"``, ``False``: ``None``, ``None``: ``"auto"``), deprecated.
    balance_batches
        Every training minibatch holds cells of two batches, the same number of each (cells of
        small batches drawn more often), going through every pair of batches in turn; with two
        batches, both in every minibatch. So the cross-batch loss finds pairs for a small
        batch's cells, and for every two batches, not only the two most alike. ``None``
        (default): on for more than two batches and where the largest batch has more than
        twice the cells of the smallest (where minibatches mix the batches); for a backed
        file, also where it stores the batches in runs so long that streamed minibatches of
        random cells of a few chunks would mostly hold one batch (fewer than 90% with two;
        ``ScGPTIntegration.train``'s ``chunk_size`` and ``shuffle_window``). On PBMC
        3k (2,700 cells) with ``pbmc_celltypist`` (559) it raised scib bio / batch / total from
        0.700 / 0.407 / 0.583 to 0.741 / 0.460 / 0.629 (3 seeds); two batches at a time, on
        three PBMC experiments, batch correction from 0.468 to 0.533 and on four PBMC batches
        (a set not used to choose it) from 0.543 to 0.572, biology within 0.003 (3 seeds); on
        hsmm's plates (one time point each) biology fell from 0.326 to 0.307 and batch
        correction rose from 0.334 to 0.362 (6 seeds; see "Integrating batches" in the scGPT
        guide). Two batches of similar size keep random minibatches (balancing them lowered
        biology on two benchmarks). ``True`` needs minibatches that mix the batches (not
        ``dsbn=True`` with ``mnn_weight=0``).
    dsbn
        Domain-specific batch norm (the official tutorial's ``DSBN=True``). Off by default:
        with the default model, ``False`` mixed batches that share cell types more and kept
        more of their biology (scib total, 3 seeds: 0.741 against 0.597 on two CITE-seq PBMC
        runs, 0.422 against 0.374 on two PBMC experiments), while ``True`` kept far more
        biology where every batch holds other cells (hsmm, one time point per plate: 0.485
        against 0.421). With the current defaults (scib bio / batch / total; ``dsbn=True`` 3
        seeds, ``False`` 6 and 9), ``dsbn=True`` scored 0.479 / 0.440 / 0.464 on hsmm against
        0.275 / 0.560 / 0.389 (the plates mixed, the time points lost), and 0.443 against
        0.669 total on the PBMC experiments: use it for batches that hold different cells.
        See "``dsbn=True`` or ``False``?" in the scGPT guide.
    batch_conditioned
        Give the batch to the expression decoders (as the official integration tutorial does:
        ``use_batch_labels=True``), so that the cell embedding needs not carry the batch to
        reconstruct a cell's values; on our benchmark this lifted the batch correction score from 0.25 to
        0.46 (``docs/benchmarks``).
    dropout
        Dropout while fine-tuning (the official tutorial uses 0.2). On a CPU a training step
        with dropout 0.1 took 4x as long as without, for the same benchmark scores.
    batch_size
        Cells per minibatch (official 64).
    max_len
        Tokens per cell (``<cls>`` included); ``None``: 256, or the length a trained
        :class:`~omicformer.scgpt.model.ScGPTIntegration` passed as ``model`` was trained
        with. A cell with more expressed genes
        keeps its ``max_len - 1`` most highly expressed ones, binned among themselves (the
        official recipe keeps a random subset; ``ScGPTIntegration.gene_selection``).
    gene_selection
        Which genes a cell with more than ``max_len - 1`` expressed genes keeps, in training
        and embedding: ``"highest"`` (its most highly expressed) or ``"random"`` (a seeded
        random subset, the official recipe). ``None``: ``"highest"``. A trained
        :class:`~omicformer.scgpt.model.ScGPTIntegration` passed as ``model`` keeps its own.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ... Fine-tuning runs on CUDA when the device is a CUDA
        device, else on the CPU; embedding and prediction run on the device (``"auto"``:
        CUDA, then Apple MPS, then CPU).
    random_state
        Seed of the validation split, training and embedding: equal seeds give equal results
        on CPU.
    progress
        Progress bars.
    return_model
        Also return the fine-tuned :class:`~omicformer.scgpt.model.ScGPTIntegration` (to embed
        further cells of these batches, or ``save`` it).
    copy
        Return a copy of ``adata`` with the results instead of writing into it.

    Returns
    -------
    ``None``, the integrated copy (``copy=True``), the model (``return_model=True``), or
    ``(copy, model)``. Sets the following fields:

    ``adata.obsm[key_added]``
        Float32 corrected embedding: ``(n_obs, d_model)``, unit L2 norm (``"mnn"`` or no
        correction), or ``(n_obs, min(50, d_model, n_obs - 1))`` Harmony-corrected
        components.
    ``adata.uns["scgpt"][key_added]``
        ``params`` (``correction`` and ``mnn_weight``: the ones applied; with a trained model
        passed as ``model``, the fine-tuning settings are the model's; ``zero_shot_mixing``:
        the two batches' mixing in the pretrained embedding where it chose ``mnn_weight``,
        else ``None``), ``batches`` (in the model's code order),
        ``correction`` (``method``; for ``"mnn"`` ``order``, the batches in merge order, and
        ``merged``, a data frame with one row per batch merged into those before it: the
        ``pairs`` found, the kernel's ``sigma`` and ``n_anchors`` and, where the batch's
        mixing chose them, ``mixing``; for
        ``"harmony"`` ``n_pcs``, ``theta``, ``lamb``, ``n_runs``, ``n_clusters``,
        ``iterations``; ``None``
        without correction), ``epochs`` trained, ``losses``
        (last-epoch training and validation losses), ``n_genes_matched``,
        ``n_genes_total`` and ``case_ignored`` (symbols matched ignoring case).

    Examples
    --------
    >>> import scanpy as sc
    >>> from omicformer import scgpt
    >>> scgpt.tl.integrate(adata, batch_key="batch")
    >>> sc.pp.neighbors(adata, use_rep="X_scgpt_integrated")
    >>> scgpt.pl.integration(adata, batch_key="batch", color="cell_type")

    References
    ----------
    Cui et al. (2024), scGPT: toward building a foundation model for single-cell multi-omics
    using generative AI. Nature Methods 21, 1470-1480.
    """
    check_key(key_added)
    check_seed(random_state)
    from .._core._checks import check_file_key, warn_ignored
    from .._core._device import resolve_device
    from .model import ScGPTIntegration
    from .model._integration import (
        BATCHES_PER_MINIBATCH,
        one_batch_per_minibatch,
        streamed_minibatches_mix,
    )

    if adata.isbacked:  # the embedding stays with the file, which only an .h5ad can hold
        check_file_key(key_added, where="a backed AnnData's .h5ad file")
    work, genes, fitted, stream, gene_key = prepare(
        adata, batch_key, model, labels_key, layer, gene_key, copy, ecs_weight, dab_weight,
        mnn_weight, ecs_threshold, max_len, gene_selection, correction,
    )  # fmt: skip
    if fitted is not None:
        warn_ignored(
            integrate,
            {"labels_key": labels_key, "max_epochs": max_epochs, "ecs_weight": ecs_weight,
             "ecs_threshold": ecs_threshold, "dab_weight": dab_weight, "mnn_weight": mnn_weight,
             "balance_batches": balance_batches, "dsbn": dsbn,
             "batch_conditioned": batch_conditioned, "dropout": dropout,
             "gene_selection": gene_selection},
            "model is an ScGPTIntegration already trained on these batches and embeds the "
            "cells as it is",
        )  # fmt: skip
    if max_len is None:  # a trained model embeds at the length it was trained with
        max_len = 256 if fitted is None else int(fitted.max_len)
    sizes = adata.obs[batch_key].astype(str).value_counts()
    # two batches, weight not given: the pretrained embedding chooses it (after the checks)
    measure = mnn_weight is None and len(sizes) == 2 and fitted is None and not dsbn
    if mnn_weight is None and not measure:
        mnn_weight = MNN_WEIGHT if len(sizes) == 2 else 0.0
    mixed = measure or not one_batch_per_minibatch(dsbn, mnn_weight)  # measured: dsbn=False
    fits = BATCHES_PER_MINIBATCH <= batch_size  # one cell of each batch of a minibatch
    if balance_batches and fitted is None and not (mixed and fits):
        msg = (
            "balance_batches=True needs minibatches that mix the batches (mnn_weight > 0 or "
            f"dsbn=False) and batch_size of at least {BATCHES_PER_MINIBATCH} ({batch_size} here)."
        )
        raise ValueError(msg)
    if balance_batches is None:  # several or unequal batches, where minibatches mix them
        several = len(sizes) > BATCHES_PER_MINIBATCH or sizes.max() > 2 * sizes.min()
        if stream and not several:  # a file storing the batches in long runs: see docstring
            codes = adata.obs[batch_key].astype("category").cat.codes.to_numpy()
            several = not streamed_minibatches_mix(codes, batch_size)
        balance_batches = bool(mixed and fits and fitted is None and several)
    zero_shot = None  # the batches' mixing in the pretrained embedding, where it chose the route
    if fitted is not None:
        integration = fitted
    else:
        with warnings.catch_warnings():  # the input's check has said of "nan" batches/labels
            warnings.filterwarnings("ignore", message=".*the text of a missing value")
            ScGPTIntegration.setup_anndata(
                work, batch_key=batch_key, labels_key=labels_key,
                layer=layer if stream else None, gene_key=gene_key if stream else None,
            )  # fmt: skip
        integration = ScGPTIntegration.load_pretrained(
            model, work, max_len=max_len, dsbn=dsbn, ecs_threshold=ecs_threshold,
            use_batch_labels=batch_conditioned, gene_selection=gene_selection,
        )  # fmt: skip
        if measure:
            zero_shot = _zero_shot_mixing(
                integration, work, batch_size, max_len, device, random_state, stream, layer
            )
            mnn_weight = MNN_WEIGHT if zero_shot < APART else 0.0
            logger.info("integrate: the two batches mix %.3f in the pretrained embedding (%s %g), "
                        "so mnn_weight=%g.", zero_shot, "below" if mnn_weight else "at least",
                        APART, mnn_weight)  # fmt: skip
        dev = resolve_device(device)
        integration.train(
            max_epochs=max_epochs, batch_size=batch_size, ecs_weight=ecs_weight,
            dab_weight=dab_weight, mnn_weight=mnn_weight, balance_batches=balance_batches,
            dropout=dropout,
            random_state=random_state,
            accelerator="gpu" if dev.type == "cuda" else "cpu", devices=1,
            enable_progress_bar=progress,
        )  # fmt: skip
    emb = integration.get_latent_representation(
        work, batch_size=batch_size, max_len=max_len, device=device, random_state=random_state,
        progress=progress,
    )  # fmt: skip

    batches = adata.obs[batch_key].astype(str).to_numpy()
    if fitted is not None:  # recorded and judged as the model was trained (arguments ignored)
        trained = (getattr(fitted, "train_config_", None) or {}).get("arguments") or {}
        mnn_weight = float(trained.get("mnn_weight", mnn_weight))
        max_epochs = trained.get("max_epochs", max_epochs)
        ecs_weight = trained.get("ecs_weight", ecs_weight)
        dab_weight = trained.get("dab_weight", dab_weight)
        balance_batches = trained.get("balance_batches", balance_batches)
        dropout = trained.get("dropout", dropout)
        config = fitted.module.config
        ecs_threshold = float(config.ecs_threshold)
        dsbn = bool(config.domain_spec_batchnorm)
        batch_conditioned = bool(config.use_batch_labels)
    if correction == "auto":  # as the model was trained (a model passed in: its own settings)
        if integration.module.config.domain_spec_batchnorm:  # batches of different cells
            correction = None
        else:
            correction = "mnn" if mnn_weight > 0 and len(sizes) == 2 else "harmony"
    report = None
    if correction == "mnn":
        from .._core._mnn import mnn_correct

        emb, report = mnn_correct(emb, batches, random_state=random_state)
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        report = {"method": "mnn", "order": report["order"], "merged": _merge_table(report)}
    elif correction == "harmony":
        from .._core._harmony import harmony_correct

        emb, report = harmony_correct(emb, batches, random_state=random_state)

    adata = adata.copy() if copy else adata
    adata.obsm[key_added] = emb
    history = integration.history or {}
    adata.uns.setdefault("scgpt", {})[key_added] = {
        "params": {
            "batch_key": batch_key, "labels_key": labels_key, "model": describe_model(model),
            "layer": layer, "gene_key": gene_key, "max_epochs": max_epochs,
            "ecs_weight": ecs_weight, "ecs_threshold": ecs_threshold, "dab_weight": dab_weight,
            "mnn_weight": mnn_weight, "correction": correction,
            "balance_batches": balance_batches, "dsbn": dsbn,
            "batch_conditioned": batch_conditioned,
            "dropout": dropout, "batch_size": batch_size, "max_len": max_len,
            "gene_selection": integration.gene_selection, "random_state": random_state,
            "retrained": fitted is None, "zero_shot_mixing": zero_shot,
        },
        "batches": [str(b) for b in integration.batches_],
        "correction": report,
        "epochs": len(history["train_loss"]) if "train_loss" in history else 0,
        "losses": {k: float(np.asarray(v).ravel()[-1]) for k, v in history.items()
                   if "step" not in k and len(v)},
        **genes,
    }  # fmt: skip
    if return_model:
        return (adata, integration) if copy else integration
    return adata if copy else None


def _zero_shot_mixing(
    integration: Any,
    work: AnnData,
    batch_size: int,
    max_len: int,
    device: str,
    random_state: int,
    stream: bool,
    layer: str | None,
) -> float:
    """Mixing (:func:`omicformer._core._mnn.mixing`) of two batches in the pretrained embedding.

    Measured on up to ``MIXING_CELLS`` cells of each batch (a seeded random subset), embedded
    by the not yet fine-tuned ``integration``.
    """
    from .._core._mnn import mixing

    codes = work.obs[integration.get_setup_arg("batch_key")].cat.codes.to_numpy()
    rng = np.random.default_rng(random_state)
    picks = []
    for code in (0, 1):
        cells = np.flatnonzero(codes == code)
        if len(cells) > MIXING_CELLS:
            cells = rng.choice(cells, MIXING_CELLS, replace=False)
        picks.append(cells)
    idx = np.sort(np.concatenate(picks))  # in file order (a backed file reads rows in order)
    if stream:  # the chosen rows of the file, read in memory (only those)
        from ._backed import subset

        chosen = np.zeros(work.n_obs, dtype=bool)
        chosen[idx] = True
        sub = subset(work, chosen, np.ones(work.n_vars, dtype=bool), layer)
    else:
        sub = work[idx]
    with warnings.catch_warnings():  # not trained yet on purpose: not the user's mistake
        warnings.filterwarnings("ignore", message=r"This \w+ is not trained", category=UserWarning)
        emb = integration.get_latent_representation(
            sub, batch_size=batch_size, max_len=max_len, device=device,
            random_state=random_state, progress=False,
        )  # fmt: skip
    first = codes[idx] == 0
    return mixing(emb[first], emb[~first])


def _merge_table(report: dict[str, Any]) -> pd.DataFrame:
    """The MNN report's per-batch values as a table, one row per batch merged, in order.

    Batch names are data: as keys of ``uns`` a ``"/"`` in one would be read back as nested
    groups (``.h5ad``) or refused (``.zarr``); as a table's index they are stored as values.
    """
    merged = report["order"][1:]
    table = pd.DataFrame(
        {"pairs": [int(report["pairs"][b]) for b in merged],
         "sigma": [float(report["kernel"][b]["sigma"]) for b in merged],
         "n_anchors": [int(report["kernel"][b]["n_anchors"]) for b in merged]},
        index=pd.Index(merged, name="batch"),
    )  # fmt: skip
    if "mixing" in report:
        table["mixing"] = [float(report["mixing"][b]) for b in merged]
    return table
