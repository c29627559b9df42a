"""scvi-tools-style user class for scGPT: setup, pretrain, embed, save and load.

Design: :class:`ScGPT` subclasses :class:`scvi.model.base.BaseModelClass` and registers its
inputs through an :class:`scvi.data.AnnDataManager` (``LayerField`` for the expression,
``CategoricalObsField``'s state for batch and labels, coded by
:class:`~omicformer.scgpt.model._scvi.ObsCodesField`), so users get the familiar ``setup_anndata``,
``view_anndata_setup``, ``registry``, ``history`` and ``is_trained``. We override what assumes
scvi's own modules and file format:

* ``train`` runs our Lightning :class:`~omicformer.scgpt.train.GenerativeTrainingPlan` through
  the runner every omicformer model shares, :func:`omicformer._core._train.run_training`
  (scvi's ``TrainRunner``/``DataSplitter`` expect tensors from ``AnnTorchDataset``; scGPT
  needs per-cell tokenisation, binning and variable-length batches, which our collate does);
* ``save``/``load`` write safetensors + JSON + the official ``vocab.json`` instead of scvi's
  pickled ``model.pt``, so saved folders are safe to share and readable by
  :func:`~omicformer.scgpt.model.load_module` without scvi-tools;
* genes are matched to the model's vocabulary by name, so :meth:`get_latent_representation`
  accepts any AnnData with gene symbols (no ``var_names`` equality check), read in chunks;
* scvi-tools' accessors (``get_setup_arg``, ``get_state_registry``, ``_get_init_params``) are
  used as they are; inherited methods that assume scvi's files or a count likelihood are
  adapted or raise a clear error (:mod:`omicformer.scgpt.model._scvi`).
"""

from __future__ import annotations

import copy
import inspect
import os
from typing import TYPE_CHECKING, Any

import numpy as np
import rich.pretty  # noqa: F401  (scvi-tools 1.4's view_anndata_setup uses it unimported)
import torch
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.model.base import BaseModelClass

from ..._core._anndata import check_layer, check_not_view, check_obs_key
from .._embed import embed_cells
from .._genes import gene_names, gene_snapshot, genes_differ, match_genes, symbol_column
from .._resolve import batch_codes, known_batches, needs_batch_labels
from .._tokenize import check_gene_selection
from .._vocab import GeneVocab
from ..module import ScGPTConfig, TransformerModel
from ._io import (
    check_architecture,
    pretrained_module,
    records_train_config,
)
from ._persist import SaveLoadMixin
from ._pretrained_batches import (
    check_pretrained_batches,
    keeps_layers_of,
    without_batch_layers,
)
from ._scvi import GeneLayerField, ObsCodesField, ScviAdapterMixin, cells_to_read, init_params
from ._training import TRAIN_SIZE_RENAMED, GenerativeTrainingMixin

if TYPE_CHECKING:
    from anndata import AnnData


class ScGPT(GenerativeTrainingMixin, ScviAdapterMixin, SaveLoadMixin, BaseModelClass):
    """scGPT single-cell foundation model (Cui et al., Nature Methods 2024).

    Cells become ``<cls>`` + their expressed genes, each token the sum of a gene embedding
    and an embedding of the cell's per-cell quantile-binned value; a transformer encoder
    produces a cell embedding at ``<cls>``. :meth:`train` runs the official generative
    pretraining (predict held-out genes' values from the known ones, + MVC, optional ECS).

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata` (raw counts or non-negative expression).
    d_model
        Embedding size (official ``embsize``).
    n_layers
        Transformer blocks (official ``nlayers``).
    n_heads
        Attention heads (official ``nheads``).
    d_hid
        Feed-forward width; ``None`` uses ``d_model`` (official default).
    dropout
        Dropout everywhere in the transformer and value encoder.
    n_bins
        Bins of the per-cell quantile binning of values (official 51), at least 2: zeros are
        bin 0, expressed genes ``1 .. n_bins - 1``. Sizes that are not integers (or below 1;
        ``n_layers``, ``n_layers_cls``: 0) raise a ``ValueError`` naming them.
    max_len
        Maximum tokens per cell, ``<cls>`` included; longer cells keep the genes
        :attr:`gene_selection` says (here a random subset, as the official code).
    vocab
        ``None`` builds a vocabulary from the genes of ``adata`` (+ ``<pad>``, ``<cls>``,
        ``<eoc>``); or a ``GeneVocab`` / path to an official ``vocab.json``.
    use_batch_labels
        Condition the expression and MVC decoders on a learned batch embedding (needs
        ``batch_key``).
    dsbn
        Domain-specific batch norm on the input embeddings, one per batch (needs
        ``batch_key``); training batches then hold cells of one batch each.
    ecs_threshold
        Similarity threshold of the ECS loss (used when ``train(ecs_weight > 0)``).
    n_layers_cls
        Layers of the cell classifier head (official ``n_layers_cls``).
    random_state
        Seed for the initial weights.

    Examples
    --------
    >>> from omicformer import scgpt
    >>> scgpt.model.ScGPT.setup_anndata(adata, layer="counts", batch_key="batch")
    >>> model = scgpt.model.ScGPT(adata, n_layers=4, d_model=128)
    >>> model.train(max_epochs=10)
    >>> adata.obsm["X_scgpt"] = model.get_latent_representation()
    >>> model.save("my_scgpt/")
    >>> model = scgpt.model.ScGPT.load("my_scgpt/", adata=adata)

    References
    ----------
    Cui et al. (2024), scGPT: toward building a foundation model for single-cell multi-omics
    using generative AI. Nature Methods 21, 1470-1480.
    """

    #: Arguments of the last successful ``train`` call (``None``: not trained here), saved by
    #: :meth:`save` as ``train_config``.
    train_config_: dict[str, Any] | None = None
    #: Which genes a cell with more than ``max_len - 1`` expressed genes keeps, in training and
    #: embedding: ``"random"`` (official: a random subset) or ``"highest"`` (the most highly
    #: expressed). Saved with the model; set it with ``load_pretrained(gene_selection=...)``.
    gene_selection: str = "random"
    #: Warning of :meth:`get_latent_representation` before :meth:`train` (``None``: none, as
    #: here: a model from :meth:`load_pretrained` embeds with its pretrained weights).
    _untrained_embedding: str | None = None
    #: Ends the error of too few genes of ``adata`` in the vocabulary (what else to do).
    _few_genes_hint: str = ""
    #: Whether :meth:`load_pretrained` keeps the checkpoint's batch-dependent layers (batch
    #: tokens, DSBN) for the batches they were trained on, so that ``adata`` must code its
    #: batches as the checkpoint did (``False``: the class builds its own, or uses none).
    _keeps_batch_layers: bool = True
    #: The parts an official checkpoint must hold for :meth:`load_pretrained` (``"embed"``:
    #: the encoder only, for a class that builds its own decoder).
    _pretrained_task: str = "pretrain"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "train" in vars(cls):  # a task model's own train: scvi's train_size too
            train = records_train_config(vars(cls)["train"])  # records validation_size
            if "validation_size" in inspect.signature(train).parameters:
                train = TRAIN_SIZE_RENAMED(train)
            cls.train = train

    train = TRAIN_SIZE_RENAMED(records_train_config(GenerativeTrainingMixin.train))

    def __init__(
        self,
        adata: AnnData,
        d_model: int = 128,
        n_layers: int = 4,
        n_heads: int = 4,
        d_hid: int | None = None,
        dropout: float = 0.1,
        n_bins: int = 51,
        max_len: int = 1200,
        vocab: GeneVocab | str | os.PathLike[str] | None = None,
        use_batch_labels: bool = False,
        dsbn: bool = False,
        ecs_threshold: float = 0.3,
        n_layers_cls: int = 3,
        random_state: int = 0,
    ):
        check_architecture(d_model=d_model, n_layers=n_layers, n_heads=n_heads, d_hid=d_hid,
                           n_bins=n_bins, n_layers_cls=n_layers_cls)  # fmt: skip
        super().__init__(adata)
        n_batch = int(self.summary_stats.n_batch)
        if (use_batch_labels or dsbn) and self.get_setup_arg("batch_key") is None:
            msg = "use_batch_labels/dsbn need a batch_key: call ScGPT.setup_anndata(adata, batch_key=...)."
            raise ValueError(msg)
        if isinstance(vocab, str | os.PathLike):
            vocab = GeneVocab.from_file(vocab)
        elif vocab is None:
            vocab = GeneVocab.from_genes(gene_names(adata, self.get_setup_arg("gene_key")))
        config = ScGPTConfig(
            ntoken=len(vocab),
            pad_token_id=vocab.pad_id,
            d_model=d_model,
            nhead=n_heads,
            d_hid=d_model if d_hid is None else d_hid,
            nlayers=n_layers,
            nlayers_cls=n_layers_cls,
            n_cls=max(int(self.summary_stats.n_labels), 1),
            dropout=dropout,
            n_bins=n_bins,
            do_mvc=True,
            use_batch_labels=use_batch_labels,
            num_batch_labels=n_batch if (use_batch_labels or dsbn) else None,
            domain_spec_batchnorm=dsbn,
            ecs_threshold=ecs_threshold,
            use_generative_training=True,
        )
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(random_state)
            module = TransformerModel(config)
        self.init_params_ = init_params(ScGPT.__init__, locals())  # a task model adds its own
        self._attach(module, vocab, max_len)

    # ------------------------------------------------------------------ setup
    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        layer: str | None = None,
        batch_key: str | None = None,
        labels_key: str | None = None,
        gene_key: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Register ``adata`` for :class:`ScGPT`.

        Checks the keys first (``KeyError`` naming the missing key, ``adata`` untouched; a
        ``ValueError`` for a view, which cannot hold the registered columns: pass
        ``adata[cells].copy()``, or ``backed[cells].to_memory()`` for a view of a backed
        AnnData), then, as every scvi-tools model, stores integer codes in ``obs["_scvi_batch"]`` /
        ``obs["_scvi_labels"]`` and an id in ``uns``.

        Parameters
        ----------
        adata
            Cells x genes.
        layer
            Layer with raw counts or other non-negative expression; ``None`` uses ``adata.X``.
        batch_key
            ``obs`` column with batch labels (for ``use_batch_labels``/``dsbn``).
        labels_key
            ``obs`` column with cell labels (sizes the cell classifier head). Missing values,
            empty labels and ``"nan"``/``"<NA>"``/``"None"`` (warned) mark unlabelled cells
            (code ``-1``), which classifiers do not train on, as in ``tl.annotate``.
        gene_key
            ``var`` column with gene symbols; ``None`` uses ``var_names``. Other AnnData
            passed to the model later (a query to embed or label) are read by this column
            where they have it, else by symbols in their ``var_names`` or, failing that, in a
            ``var`` column that matches the vocabulary (with a warning naming it).
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields`.

        Examples
        --------
        >>> ScGPT.setup_anndata(adata, layer="counts", batch_key="batch")
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        check_not_view(adata, f"{cls.__name__}.setup_anndata")
        check_layer(adata, layer)
        check_obs_key(adata, batch_key, "batch_key")
        check_obs_key(adata, labels_key, "labels_key")
        gene_names(adata, gene_key)  # KeyError for an unknown gene_key
        anndata_fields = [
            GeneLayerField(
                REGISTRY_KEYS.X_KEY, layer, is_count_data=False, correct_data_format=False
            ),
            ObsCodesField(REGISTRY_KEYS.BATCH_KEY, batch_key),
            ObsCodesField(REGISTRY_KEYS.LABELS_KEY, labels_key, allow_missing=True),
        ]
        adata_manager = AnnDataManager(fields=anndata_fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    # ------------------------------------------------------------------ internals
    def _attach(self, module: TransformerModel, vocab: GeneVocab, max_len: int) -> None:
        """Set module, vocabulary and the gene matching of ``self.adata``."""
        if max_len < 2:
            msg = f"max_len={max_len} must be >= 2 (the <cls> token plus at least one gene)."
            raise ValueError(msg)
        self.module = module
        self.vocab = vocab
        self.max_len = int(max_len)
        self.gene_ids_ = None
        self._matched_adata, self._matched_genes = self.adata, None
        if self.adata is not None:
            self.gene_ids_ = match_genes(self.adata, vocab, self.get_setup_arg("gene_key"),
                                         warn_case="adata", hint=self._few_genes_hint)  # fmt: skip
            self._matched_genes = gene_snapshot(self.adata, self.get_setup_arg("gene_key"))

    @property
    def summary_string(self) -> str:
        """Summary of the model as it is now (``train(dropout=...)`` changes the module)."""
        c, ids = self.module.config, self.gene_ids_
        genes = "" if ids is None else f", {int((ids >= 0).sum())}/{len(ids)} genes of adata in vocab"  # fmt: skip
        self._model_summary_string = (
            f"{type(self).__name__} model with n_layers: {c.nlayers}, d_model: {c.d_model}, n_heads: {c.nhead}, "
            f"d_hid: {c.d_hid}, dropout: {c.dropout}, n_bins: {c.n_bins}, max_len: {self.max_len}, "
            f"use_batch_labels: {c.use_batch_labels}, dsbn: {bool(c.domain_spec_batchnorm)}; "
            f"vocab: {len(self.vocab)} tokens{genes}."
        )
        return super().summary_string

    def __repr__(self) -> str:
        return self.summary_string

    @property
    def device(self) -> torch.device:
        """Device of the module's parameters."""
        return next(self.module.parameters()).device

    def _gene_ids_for(self, adata: AnnData) -> np.ndarray:
        """Vocabulary id per gene of ``adata`` (``-1``: absent); cached for ``self.adata``.

        Matched again when ``self.adata`` was reassigned or its genes changed in place since
        (renamed, filtered with ``sc.pp.filter_genes``, another symbol column).
        """
        key = self.get_setup_arg("gene_key")
        if adata is self.adata:
            snapshot = getattr(self, "_matched_genes", None)
            if self._matched_adata is not adata or genes_differ(snapshot, adata, key):
                self._matched_adata = adata
                self.gene_ids_ = match_genes(adata, self.vocab, key, warn_case="adata")
                self._matched_genes = gene_snapshot(adata, key)
            return self.gene_ids_
        # another AnnData names its genes its own way: the set-up column where it has one,
        # else symbols in var_names or in a var column (as the tl functions find them)
        if key is not None and key not in adata.var.columns:
            key = None
        try:
            return match_genes(adata, self.vocab, key, warn_case="adata")
        except ValueError:  # too few matched: symbols in another var column (a warning names it)
            found = symbol_column(adata, self.vocab, None, "adata")
            if found is None or found == key:
                raise
            return match_genes(adata, self.vocab, found, warn_case="adata")

    def _registered(self, key: str) -> np.ndarray:
        """The registered ``key`` field of ``self.adata`` (batch or label codes), 1-d.

        Another ``setup_anndata`` of the same AnnData since (for another model, or with other
        keys) rewrote the integer-code columns; scvi-tools' ``validate`` replays this model's
        own registration first, as its models do before reading the data.
        """
        self.adata_manager.validate()
        return np.asarray(self.adata_manager.get_from_registry(key)).ravel()

    def _batch_codes(self, adata: AnnData) -> np.ndarray:
        """Integer batch codes of ``adata`` under this model's registered categories."""
        if adata is self.adata:
            return self._registered(REGISTRY_KEYS.BATCH_KEY)
        key = self.get_setup_arg("batch_key")
        check_obs_key(adata, key, "batch_key")
        mapping = list(self.get_state_registry(REGISTRY_KEYS.BATCH_KEY).categorical_mapping)
        return batch_codes(adata.obs[key].to_numpy(), mapping, key)

    def _needs_batch_codes(self) -> bool:
        return needs_batch_labels(self.module)

    # ------------------------------------------------------------------ inference
    def get_latent_representation(
        self,
        adata: AnnData | None = None,
        batch_size: int = 64,
        max_len: int | None = None,
        device: str | torch.device = "auto",
        *,
        random_state: int = 0,
        progress: bool = True,
        out_file: str | os.PathLike[str] | None = None,
        chunk_size: int = 8192,
        accelerator: str | None = None,
        devices: int | str | list[int] | None = None,
        strategy: str = "auto",
        num_nodes: int = 1,
    ) -> np.ndarray:
        """L2-normalised ``<cls>`` cell embeddings, ``(n_obs, d_model)`` float32.

        Parameters
        ----------
        adata
            Any AnnData with the registered layer and gene symbols (matched to the model's
            vocabulary by name); ``None`` uses the model's AnnData. ``backed="r"`` works.
        batch_size
            Cells per forward pass.
        max_len
            Maximum tokens per cell; ``None`` uses the model's ``max_len``. Longer cells keep
            the genes :attr:`gene_selection` says.
        device
            ``"auto"``, ``"cpu"``, ``"cuda"``, ... (the module is moved there).
        random_state
            Seed for binning ties and gene subsampling of long cells.
        progress
            Show a progress bar.
        out_file
            Write the embeddings chunk by chunk (for results larger than memory) to a ``.npy``
            file, or to ``obsm["X_scgpt"]`` of a new ``.h5ad``/``.zarr`` AnnData file holding
            ``adata``'s ``obs_names``, and return the file's array read-only (a memory map;
            a :class:`zarr.Array` for ``.zarr``). The file appears only when complete (written
            under a temporary name in the same folder, then renamed); after an error (e.g. a
            full disk) no file is left under either name.
        chunk_size
            Cells read, tokenised and embedded at a time (the memory used besides the model),
            and the unit spread over devices.
        accelerator, devices, strategy, num_nodes
            Embed with Lightning's ``Trainer.predict`` instead of in this process, e.g.
            ``accelerator="gpu", devices=4`` (DDP, run from a script) or ``num_nodes=2`` on a
            cluster: chunks are spread over the processes and gathered, and every process
            returns the same result as a single process, cells in their original order.
            Leave ``device`` at ``"auto"`` then.

        Returns
        -------
        ``(n_obs, d_model)`` float32 array (read-only, backed by the file, with ``out_file``).

        Examples
        --------
        >>> adata.obsm["X_scgpt"] = model.get_latent_representation()
        >>> z = model.get_latent_representation(atlas, out_file="atlas_scgpt.npy")
        """
        adata = cells_to_read(self, adata)
        if self._untrained_embedding is not None:
            self._check_if_trained(warn=True, message=self._untrained_embedding.format(
                name=type(self).__name__))  # fmt: skip
        layer = self.get_setup_arg("layer")
        gene_ids = self._gene_ids_for(adata)
        kwargs = {"gene_ids": gene_ids, "layer": layer, "batch_size": batch_size,
                  "max_len": self.max_len if max_len is None else max_len,
                  "n_bins": self.module.config.n_bins, "device": device,
                  "random_state": random_state, "progress": progress, "out_file": out_file,
                  "chunk_size": chunk_size, "accelerator": accelerator, "devices": devices,
                  "strategy": strategy, "num_nodes": num_nodes,
                  "gene_selection": self.gene_selection}  # fmt: skip
        # DSBN normalises a minibatch with one domain's statistics: embed_cells then groups
        # minibatches by batch label.
        codes = self._batch_codes(adata) if self._needs_batch_codes() else None
        return embed_cells(self.module, self.vocab, adata, batch_labels=codes, **kwargs)

    @classmethod
    def load_pretrained(
        cls,
        path: Any,
        adata: AnnData,
        *,
        max_len: int | None = None,
        gene_selection: str | None = None,
        drop_batch_layers: bool = False,
    ) -> ScGPT:
        """Start from pretrained weights: an official scGPT folder or one saved by :meth:`save`.

        ``adata`` must be set up with :meth:`setup_anndata`; its genes are matched to the
        checkpoint's vocabulary. Official checkpoints load with
        :func:`~omicformer.scgpt.checkpoint.load_official` (flash-attn names mapped); heads the
        generative objective needs but the file lacks (``flag_encoder``, ``mvc_decoder``) are
        freshly initialised and listed in ``model.pretrained_report_["missing"]``. The
        checkpoint's architecture is kept (no batch tokens/DSBN unless saved with them).

        Parameters
        ----------
        path
            Official folder (``args.json``, ``vocab.json``, ``best_model.pt``), our folder,
            ``"default"`` (the model shipped with omicformer) or an :class:`ScGPT` (its weights
            are copied).
        adata
            Registered AnnData to fine-tune on or embed.
        max_len
            Maximum tokens per cell; ``None`` uses the checkpoint's (official ``max_seq_len``)
            or 1200.
        gene_selection
            Which genes a cell with more than ``max_len - 1`` expressed genes keeps, in
            training and embedding: ``"random"`` (official) or ``"highest"``; ``None``: the
            class's default (:attr:`gene_selection`).
        drop_batch_layers
            Leave out the checkpoint's batch tokens and DSBN (listed in
            ``pretrained_report_["skipped"]``), as the official annotation recipe builds its
            model without them; ``adata`` then needs no ``batch_key``.

        Examples
        --------
        >>> ScGPT.setup_anndata(adata, layer="counts")
        >>> model = ScGPT.load_pretrained("scGPT_human/", adata)
        >>> model.train(max_epochs=2, lr=1e-4)
        """
        if isinstance(path, ScGPT):
            module, vocab = copy.deepcopy(path.module).cpu(), path.vocab
            report: dict[str, Any] = {"source": type(path).__name__, "missing": [], "skipped": []}
            saved_len = path.max_len
        else:
            module, vocab, report, saved_len = pretrained_module(path, cls._pretrained_task)
        if drop_batch_layers:
            module = without_batch_layers(module, report)
        cls._get_most_recent_anndata_manager(adata, required=True)
        model = cls._from_module(
            module, vocab, saved_len if max_len is None else max_len, adata, None
        )
        if needs_batch_labels(module):
            if cls._keeps_batch_layers:
                check_pretrained_batches(model, known_batches(path), path)
            elif not keeps_layers_of(model, known_batches(path)):  # sized for adata's anew
                model.module = without_batch_layers(model.module, report)
        if gene_selection is not None:
            check_gene_selection(gene_selection)
            model.gene_selection = gene_selection
        model.pretrained_report_ = report
        model.init_params_ = {"pretrained": report["source"]}
        return model

    from_pretrained = load_pretrained  # Hugging Face-style name of the same loader
