"""scGPT fine-tuned for batch integration: an scvi-tools-style model."""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any

import numpy as np
from scvi import REGISTRY_KEYS

from ..._core._fit_checks import check_fit_args
from ..._core._train import VALIDATION_SIZE, split_indices
from ._io import rebuild_module
from ._scgpt import ScGPT
from ._scvi import require_training_cells

if TYPE_CHECKING:
    from anndata import AnnData

#: Cell passes of a default-length run (``max_epochs=None``): epochs = this / n_cells, clipped.
DEFAULT_CELL_PASSES = 8_000
DEFAULT_EPOCH_RANGE = (1, 15)
#: ... and a default-length run stops after this many cell passes (large data: part of an epoch).
MAX_DEFAULT_CELL_PASSES = 16_000
#: Label category of cells without a cell type (as scANVI's ``unlabeled_category``).
UNLABELLED = "Unknown"
#: Batches in each balanced training minibatch (``balance_batches=True``): cells of two
#: batches at a time, every pair in turn. On three PBMC experiments (``benchmarks/integration.py
#: --sets pbmc3``) scib batch correction was 0.533 (3 seeds), against 0.468 with random
#: minibatches (3 seeds) and 0.469 with all three batches in every minibatch (seed 0).
BATCHES_PER_MINIBATCH = 2


class ScGPTIntegration(ScGPT):
    """scGPT fine-tuned to remove batch effects (official integration recipe).

    The module gets a batch discriminator behind a gradient-reversal layer (DAB) and, by
    default, domain-specific batch norm (DSBN); :meth:`train` then optimises masked value
    prediction + GEPC (MVC) + elastic cell similarity + the adversarial batch loss (and, when
    ``labels_key`` was registered, a cell-type loss on the labelled cells).
    :meth:`get_latent_representation` returns the corrected ``<cls>`` embedding (before
    :meth:`train`, the loaded encoder's, with a ``UserWarning`` as scvi-tools models give on
    untrained models; a model from :meth:`load` counts as trained if it was when saved). Cells with
    more expressed genes than ``max_len - 1`` keep their most highly expressed ones
    (:attr:`gene_selection` ``"highest"``; the official recipe keeps a random subset,
    ``load_pretrained(gene_selection="random")``).

    Parameters
    ----------
    adata
        AnnData registered with ``setup_anndata(..., batch_key=...)`` and optionally
        ``labels_key=`` (cells whose label is missing, NaN, or ``"Unknown"`` count as
        unlabelled, as in scANVI).
    dsbn
        Add domain-specific batch norm (default ``True``, the official recipe;
        :func:`~omicformer.scgpt.tl.integrate` passes ``dsbn=False`` unless asked). The batch
        also enters the expression decoders (``use_batch_labels=True`` unless given in
        ``kwargs``), as in the official integration tutorial.
    ecs_threshold
        Cosine similarity above which ECS pulls two cells together (default 0.8, the official
        integration tutorial's, as :meth:`load_pretrained`).
    **kwargs
        Architecture of a model trained from scratch, as :class:`ScGPT` (use
        :meth:`load_pretrained` to start from pretrained weights, as the recipe does).

    Examples
    --------
    >>> from omicformer.scgpt.model import ScGPTIntegration
    >>> ScGPTIntegration.setup_anndata(adata, layer="counts", batch_key="batch")
    >>> model = ScGPTIntegration.load_pretrained("default", adata)
    >>> model.train()
    >>> adata.obsm["X_scgpt_integrated"] = model.get_latent_representation()
    >>> model.save("my_integration/")

    References
    ----------
    Cui et al. (2024), scGPT: toward building a foundation model for single-cell multi-omics
    using generative AI. Nature Methods 21, 1470-1480.
    """

    gene_selection = "highest"
    #: load_pretrained sizes the batch layers for adata's batches (_add_integration_heads).
    _keeps_batch_layers = False
    #: An untrained model embeds, with a UserWarning (scvi-tools' ``_check_if_trained``).
    _untrained_embedding = (
        "This {name} is not trained: get_latent_representation returns the encoder's "
        "embedding as it was loaded (with freshly initialised batch layers), not a "
        "batch-corrected one. Call {name}.train() first."
    )

    def __init__(
        self, adata: AnnData, *, dsbn: bool = True, ecs_threshold: float = 0.8, **kwargs: Any
    ):
        _require_batches(type(self), adata)
        kwargs.setdefault("use_batch_labels", True)  # the official integration tutorial's
        super().__init__(adata, dsbn=dsbn, ecs_threshold=ecs_threshold, **kwargs)
        c = self.module.config
        self._add_integration_heads(
            dsbn=dsbn, ecs_threshold=c.ecs_threshold, use_batch_labels=c.use_batch_labels
        )

    @classmethod
    def load_pretrained(
        cls,
        path: Any,
        adata: AnnData,
        *,
        max_len: int | None = None,
        dsbn: bool = True,
        ecs_threshold: float = 0.8,
        use_batch_labels: bool = True,
        gene_selection: str | None = None,
    ) -> ScGPTIntegration:
        """Pretrained weights + the integration heads, sized for the batches of ``adata``.

        Parameters
        ----------
        path
            ``"default"``, an official scGPT folder, a folder saved by :meth:`save`, or an
            :class:`ScGPT` model (its weights are copied).
        adata
            AnnData registered with ``setup_anndata(..., batch_key=...)``.
        max_len
            Maximum tokens per cell; ``None`` keeps the checkpoint's.
        dsbn
            Add domain-specific batch norm (one set of normalisation statistics per batch).
        ecs_threshold
            Cosine similarity above which ECS pulls two cells together (official 0.8).
        use_batch_labels
            Give the batch to the expression and GEPC decoders, so the cell embedding needs not
            carry it (default ``True``: the official integration tutorial builds its model with
            ``use_batch_labels=True`` beside DSBN; :func:`~omicformer.scgpt.tl.integrate`'s
            ``batch_conditioned``).
        gene_selection
            Which genes a cell with more than ``max_len - 1`` expressed genes keeps;
            ``None``: ``"highest"``, this class's default (see :attr:`gene_selection`).

        Notes
        -----
        The parts the checkpoint lacks (discriminator, DSBN, a cell-type head sized for the
        registered labels) are freshly initialised and listed in
        ``model.pretrained_report_["missing"]``.
        """
        _require_batches(cls, adata)
        model = super().load_pretrained(path, adata, max_len=max_len, gene_selection=gene_selection)
        fresh = model._add_integration_heads(
            dsbn=dsbn, ecs_threshold=ecs_threshold, use_batch_labels=use_batch_labels
        )
        report = model.pretrained_report_
        report["missing"] = sorted(set(report.get("missing", [])) | set(fresh))
        return model

    from_pretrained = load_pretrained

    def _add_integration_heads(
        self, *, dsbn: bool, ecs_threshold: float, use_batch_labels: bool = False
    ) -> list[str]:
        """Rebuild the module with DAB, DSBN and a cell-type head for this AnnData's categories."""
        n_batch = int(self.summary_stats.n_batch)
        n_labels = len(self._label_categories())
        c = self.module.config
        changes = {"do_dab": True, "domain_spec_batchnorm": bool(dsbn),
                   "num_batch_labels": n_batch, "ecs_threshold": float(ecs_threshold),
                   "n_cls": max(n_labels, 1), "use_batch_labels": bool(use_batch_labels)}  # fmt: skip
        if all(getattr(c, k) == v for k, v in changes.items()):
            return []
        self.module, fresh = rebuild_module(self.module, **changes)
        return fresh

    @property
    def batches_(self) -> list[str]:
        """Batch names in code order (the batches this model has layers for)."""
        mapping = self.get_state_registry(REGISTRY_KEYS.BATCH_KEY).categorical_mapping
        return [str(b) for b in mapping]

    def _label_categories(self) -> list[str]:
        """Registered cell types, without :data:`UNLABELLED` (empty without ``labels_key``)."""
        if self.get_setup_arg("labels_key") is None:
            return []
        mapping = self.get_state_registry(REGISTRY_KEYS.LABELS_KEY).categorical_mapping
        return [str(c) for c in mapping if str(c) != UNLABELLED]

    def _label_codes(self) -> np.ndarray:
        """Cell-type code of every cell of ``self.adata`` (``-1``: unlabelled or no labels)."""
        classes = self._label_categories()
        if not classes:
            return np.full(self.adata.n_obs, -1, dtype=np.int64)
        mapping = self.get_state_registry(REGISTRY_KEYS.LABELS_KEY).categorical_mapping
        lookup = np.array([classes.index(str(c)) if str(c) in classes else -1 for c in mapping])
        codes = self._registered(REGISTRY_KEYS.LABELS_KEY).astype(np.int64)
        out = np.full(codes.shape, -1, dtype=np.int64)  # a missing label (code -1) stays -1
        out[codes >= 0] = lookup[codes[codes >= 0]]
        return out

    # ------------------------------------------------------------------ training
    def train(
        self,
        max_epochs: int | None = None,
        batch_size: int = 64,
        lr: float = 1e-4,
        *,
        max_steps: int | None = None,
        validation_size: float = VALIDATION_SIZE,
        early_stopping: bool = False,
        early_stopping_patience: int = 5,
        mask_ratio: float = 0.4,
        n_zero_genes: int = 0,
        mvc: bool = True,
        ecs_weight: float = 10.0,
        dab_weight: float = 1.0,
        label_weight: float = 1.0,
        mnn_weight: float = 0.0,
        balance_batches: bool = False,
        weight_decay: float = 0.0,
        lr_decay: float = 0.9,
        dropout: float | None = None,
        accelerator: str = "auto",
        devices: int | str | list[int] = "auto",
        num_nodes: int = 1,
        strategy: str = "auto",
        precision: str | int | None = "auto",
        num_workers: int = 0,
        random_state: int = 0,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        ckpt_path: str | os.PathLike[str] | None = None,
        enable_progress_bar: bool = True,
        streaming: bool | None = None,
        chunk_size: int = 1024,
        shuffle_window: int = 4,
        **trainer_kwargs: Any,
    ) -> None:
        """Fine-tune for integration (official ``Tutorial_Integration`` objective).

        With DSBN and ``mnn_weight=0`` (the official recipe) every minibatch holds cells of one
        batch (the official ``per_seq_batch_sample``); otherwise minibatches mix the batches,
        and DSBN normalises the cells of each batch in a minibatch with that batch's layer.
        Loss:
        ``mse + gepc + ecs_weight * ecs + dab_weight * dab (+ mnn_weight * mnn)
        (+ label_weight * cls)``; see :class:`~omicformer.scgpt.train.IntegrationTrainingPlan`.

        Parameters
        ----------
        max_epochs
            Passes over the cells; ``None`` (with ``max_steps=None``) scales with the data:
            about 8,000 cell passes, between 1 and 15 epochs (the official tutorial runs 15),
            and at most 16,000 cell passes (``max_steps = 16000 / batch_size``; under DDP
            the processes share them: over ``batch_size`` times the processes), so that CPU
            runs take minutes also on large data (where the model then sees a sample: the
            epochs shorten to ``max_steps / max_epochs`` minibatches, ``limit_train_batches``,
            so that each ends validated).
        batch_size, lr
            Cells per minibatch (per device) and Adam learning rate (official 64 and 1e-4).
        max_steps, validation_size, early_stopping, early_stopping_patience
            As :meth:`ScGPT.train`; ``validation_loss`` is the masked-value MSE of the held-out
            cells (the official tutorial's model-selection loss).
        mask_ratio
            Fraction of each cell's values hidden and predicted (official 0.4).
        n_zero_genes
            Per cell, also predict 0 with the GEPC head for this many random genes of the data
            that the cell does not express (see
            :class:`~omicformer.scgpt.train.MaskedValueCollator`).
        mvc
            Add the GEPC (MVC) loss.
        ecs_weight
            Weight of elastic cell similarity (official 10); its threshold is the model's
            (``ecs_threshold`` of :meth:`load_pretrained` or the constructor, official 0.8).
            ``0`` disables it.
        dab_weight
            Weight of the adversarial batch loss (official 1); ``0`` disables it.
        label_weight
            Weight of the cell-type cross-entropy on labelled cells (only with a registered
            ``labels_key``; cells without a label only take part in the other losses).
        mnn_weight
            Weight of the cross-batch mutual-nearest-neighbour loss, not part of the official
            recipe (:func:`~omicformer.scgpt.module.mnn_loss`): in each minibatch, two cells of
            different batches that are each other's most similar cell of the other batch
            (cosine of the centred ``<cls>`` embeddings) are pulled together. ``0`` (default)
            disables it. When it is on, minibatches mix the batches, also with DSBN.
            :func:`~omicformer.scgpt.tl.integrate` uses 30.
        balance_batches
            Every training minibatch holds cells of two batches, the same number of each
            (:class:`~omicformer._core._samplers.BalancedBatchSampler` with
            ``groups_per_batch=2``; cells of small batches are drawn more often, of large ones
            less), going through every pair of batches in turn, so that the cross-batch loss
            finds pairs for the cells of a small batch and for every two batches, not only for
            the two most alike. With two batches every minibatch holds both. ``False``
            (default): minibatches are random draws of all cells. Needs mixed minibatches (not
            DSBN with ``mnn_weight=0``). Streamed, the same rules hold, each batch's cells read
            by chunk (:class:`~omicformer._core._chunk_sampler.ChunkBatchSampler` with
            ``balance=True``), so that a file storing its batches one after the other still
            gives minibatches of two batches.
            :func:`~omicformer.scgpt.tl.integrate` turns it on for more than two batches and
            where the largest batch has more than twice the cells of the smallest.
        weight_decay, lr_decay
            Adam weight decay; learning rate factor per epoch (official 0.9).
        dropout
            Dropout rate while fine-tuning (and kept in the saved config); ``None`` keeps the
            module's. On CPU a training step with dropout 0.1 took 4x as long as with 0.
        accelerator, devices, num_nodes, strategy, precision, num_workers, random_state, checkpoint_dir, ckpt_path, enable_progress_bar, **trainer_kwargs
            As :meth:`ScGPT.train` (the shared runner's options).
        streaming, chunk_size, shuffle_window
            Out-of-core training, as :meth:`ScGPT.train`: ``None`` (default) streams when the
            model's AnnData is ``backed="r"``; ``True`` streams in-memory data too (same
            batches as backed data); ``False`` loads the vocabulary genes of all cells. Batch
            and label codes stay in memory (one integer each per cell). As in memory, with
            DSBN and ``mnn_weight=0`` every minibatch holds cells of one batch; streamed,
            every minibatch also holds cells of one chunk, and the minibatches of a window's
            chunks are shuffled together. Otherwise, unbalanced, a minibatch holds random cells
            of a window of ``shuffle_window`` chunks: of one batch only where the file stores
            the batches one after the other in runs longer than the window; balanced
            (``balance_batches``), of two batches always.

        Notes
        -----
        Sets ``history`` (per epoch ``train_loss``, ``train_loss_mse``, ``train_loss_gepc``,
        ``train_loss_ecs``, ``train_loss_dab``, ``train_loss_cls``, ``validation_loss``, ...),
        ``train_indices``, ``validation_indices`` and ``is_trained``.
        """
        from ..train._integrate import IntegrationTrainingPlan, MaskedValueCollator
        from ._training import _check_streaming, capped_schedule

        require_training_cells(self)
        for name, value in (("ecs_weight", ecs_weight), ("dab_weight", dab_weight),
                            ("label_weight", label_weight), ("mnn_weight", mnn_weight)):  # fmt: skip
            if value < 0:
                msg = f"{name}={value} must be >= 0."
                raise ValueError(msg)
        check_fit_args(batch_size=batch_size, max_epochs=max_epochs, max_steps=max_steps,
                       validation_size=validation_size, dropout=dropout, lr=lr,
                       weight_decay=weight_decay,
                       early_stopping_patience=early_stopping_patience, random_state=random_state,
                       factors={"lr_decay": lr_decay},
                       num_workers=num_workers, trainer_kwargs=trainer_kwargs)  # fmt: skip
        # the collator checks it too, after the model has changed
        if not (
            isinstance(mask_ratio, int | float | np.integer | np.floating) and 0 < mask_ratio < 1
        ):
            msg = f"mask_ratio={mask_ratio!r} must lie strictly between 0 and 1."
            raise ValueError(msg)
        c = self.module.config
        if balance_batches and one_batch_per_minibatch(c.domain_spec_batchnorm, mnn_weight):
            msg = (
                "balance_batches=True mixes the batches in every minibatch; it cannot be "
                "combined with DSBN at mnn_weight=0 (one batch per minibatch). Set "
                "mnn_weight > 0 or dsbn=False."
            )
            raise ValueError(msg)
        stream = _check_streaming(self.adata, streaming, chunk_size, shuffle_window)
        with self._kept_until_a_step(()) as plans:  # a refusal leaves the dropout as it was
            if dropout is not None:  # every argument checked: the model changes from here on
                self.module.set_dropout(dropout)
            n_labels = len(self._label_categories())
            label_weight = label_weight if n_labels else 0.0
            batches = self._batch_codes(self.adata)
            labels = self._label_codes()
            train_idx, val_idx = split_indices(self.adata.n_obs, validation_size, random_state)
            if max_epochs is None and max_steps is None:
                max_epochs = default_epochs(len(train_idx))
                max_steps = capped_schedule(
                    len(train_idx), batch_size, max_epochs, MAX_DEFAULT_CELL_PASSES, trainer_kwargs,
                    accelerator=accelerator, devices=devices, num_nodes=num_nodes,
                    strategy=strategy,
                )  # fmt: skip
            common = {"cls_id": self.vocab.cls_id, "pad_id": self.vocab.pad_id,
                      "pad_value": c.pad_value, "n_bins": c.n_bins, "max_len": self.max_len,
                      "gene_selection": self.gene_selection,
                      "mask_ratio": mask_ratio, "mask_value": c.mask_value,
                      "n_zero_genes": n_zero_genes if mvc else 0}  # fmt: skip
            with self._training_cells(stream, chunk_size, shuffle_window) as (dataset, col_ids):
                train_ds, val_ds = (
                    dataset(train_idx, batches, labels),
                    dataset(val_idx, batches, labels),
                )
                plan = IntegrationTrainingPlan(
                    self.module, lr=lr, mvc=mvc, ecs_weight=ecs_weight, dab_weight=dab_weight,
                    label_weight=label_weight, weight_decay=weight_decay, lr_decay=lr_decay,
                    mnn_weight=mnn_weight,
                )  # fmt: skip
                plans.append(plan)
                # DSBN without the cross-batch loss: one batch per minibatch (the official
                # per_seq_batch_sample); else mixed (DSBN then normalises each batch's cells of a
                # minibatch with that batch's layer)
                groups = None
                if one_batch_per_minibatch(c.domain_spec_batchnorm, mnn_weight):
                    groups = (train_ds.batch_codes, val_ds.batch_codes)
                if balance_batches:  # checked above: not with one batch per minibatch
                    groups = (train_ds.batch_codes, val_ds.batch_codes)
                self._fit(
                    plan, functools.partial(MaskedValueCollator, col_ids, **common),
                    (train_ds, val_ds), (train_idx, val_idx), groups=groups,
                    balance_groups=balance_batches, groups_per_batch=BATCHES_PER_MINIBATCH,
                    batch_size=batch_size,
                    max_epochs=max_epochs, max_steps=max_steps, accelerator=accelerator,
                    devices=devices, num_nodes=num_nodes, strategy=strategy, precision=precision,
                    num_workers=num_workers, random_state=random_state,
                    early_stopping=early_stopping,  # without held-out cells: run_training's error
                    early_stopping_patience=early_stopping_patience, checkpoint_dir=checkpoint_dir,
                    ckpt_path=ckpt_path, enable_progress_bar=enable_progress_bar, **trainer_kwargs,
                )  # fmt: skip

    def _needs_batch_codes(self) -> bool:
        return bool(self.module.config.domain_spec_batchnorm or self.module.config.use_batch_labels)


def one_batch_per_minibatch(dsbn: bool, mnn_weight: float) -> bool:
    """Whether training draws every minibatch from one batch: DSBN without the cross-batch loss.

    The official ``per_seq_batch_sample``; otherwise minibatches mix the batches.
    """
    return bool(dsbn) and mnn_weight == 0


#: Epochs of unbalanced streamed minibatches :func:`streamed_minibatches_mix` looks at.
EPOCHS_MEASURED = 8


def streamed_minibatches_mix(
    batch_codes: np.ndarray,
    batch_size: int,
    *,
    chunk_size: int = 1024,
    window: int = 4,
    min_share: float = 0.9,
) -> bool:
    """Whether unbalanced streamed minibatches mix the batches about as random draws of all cells do.

    Streamed training without ``balance_batches`` cuts minibatches from windows of ``window``
    chunks of ``chunk_size`` consecutive cells (:class:`~omicformer._core._chunk_sampler.
    ChunkBatchSampler`); where the file stores the batches one after the other in runs of
    several chunks, a minibatch then holds the batches of a few chunks, often one. Measured by
    the Gini-Simpson diversity of the batches in a minibatch (the chance that two of its cells
    come from different batches): ``True`` when its mean over the minibatches of the first
    :data:`EPOCHS_MEASURED` epochs (seed 0) is at least ``min_share`` of the diversity of all
    cells, which random minibatches of 64 cells reach to 98%.
    """
    from ..._core._chunk_sampler import ChunkBatchSampler

    codes = np.asarray(batch_codes)
    n = len(codes)
    overall = 1.0 - float(np.sum((np.bincount(codes) / max(n, 1)) ** 2))
    if n == 0 or overall == 0.0:
        return True
    sampler = ChunkBatchSampler(np.arange(n) // chunk_size, batch_size, window=window)
    diversity = []
    for epoch in range(EPOCHS_MEASURED):
        sampler.set_epoch(epoch)
        diversity += [1.0 - float(np.sum((np.bincount(codes[b]) / len(b)) ** 2))
                      for b in sampler.batches()]  # fmt: skip
    return float(np.mean(diversity)) >= min_share * overall


def default_epochs(n_cells: int) -> int:
    """Epochs when ``max_epochs=None``: about 8,000 cell passes, between 1 and 15 epochs."""
    lo, hi = DEFAULT_EPOCH_RANGE
    return int(np.clip(round(DEFAULT_CELL_PASSES / max(n_cells, 1)), lo, hi))


def _require_batches(cls: type[ScGPT], adata: AnnData) -> None:
    manager = cls._get_most_recent_anndata_manager(adata, required=False)
    if manager is None or manager.registry["setup_args"].get("batch_key") is None:
        msg = (
            "ScGPTIntegration needs batches: call ScGPTIntegration.setup_anndata(adata, "
            "batch_key=<obs column with the batch of each cell>) first."
        )
        raise ValueError(msg)
