"""scGPT fine-tuned to predict genetic perturbation responses: an scvi-tools-style model."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import CategoricalObsField

from ..._core._anndata import check_layer, check_not_view
from ..._core._checks import check_int
from ..._core._fit_checks import check_fit_args
from .._conditions import (
    CONTROL,
    check_genes_known,
)
from .._genes import gene_names, lookup_symbols
from .._perturb_data import check_measured, check_perturbation_data
from .._vocab import GeneVocab
from ._io import rebuild_module
from ._perturbation_heads import _check_prior, _perturbation_module
from ._perturbation_predict import PerturbationPredictionMixin
from ._perturbation_schedule import _trains_on_cpu, default_schedule
from ._scgpt import GeneLayerField, ScGPT
from ._scvi import require_training_cells

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger("omicformer")

#: Genes per forward pass during training (official ``max_seq_len`` of the tutorial).
DEFAULT_MAX_LEN = 1536
#: What ``train`` sets before training: back as it was when training fails before a step.
_TRAIN_STATE = ("is_trained_", "schedule_", "train_conditions_", "centered_", "prior_effects_",
                "prior_observed_", "prior_default_", "prior_shared_")  # fmt: skip


class ScGPTPerturbation(PerturbationPredictionMixin, ScGPT):
    """scGPT fine-tuned to predict the expression response to genetic perturbations.

    The official ``TransformerGenerator`` method (Cui et al. 2024): a control cell's expression
    of every gene (continuous values, no binning, no masking) enters as tokens whose embedding
    is gene + value + a per-gene perturbation flag (``pert_encoder``: 0 not perturbed, the
    zero vector as in ``Tutorial_Perturbation`` (``pert_pad_id=0``), 1 perturbed, learned);
    the affine decoder predicts every gene's post-perturbation
    expression, ``coeff(h) * x_ctrl + bias(h)``. :meth:`train` fits it on (random control cell,
    perturbed cell) pairs with MSE on all genes; :meth:`predict` averages the predictions over
    control cells, for any combination of measured genes, seen in training or not.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`: control and perturbed cells,
        log-normalised expression.
    max_len
        Genes per forward pass (default 1536, as :meth:`load_pretrained`).
    prior
        ``"covariance"`` (default) or ``None``, as :meth:`load_pretrained`.
    **kwargs
        Architecture of a model trained from scratch, as :class:`ScGPT` (use
        :meth:`load_pretrained` to start from pretrained weights, as the official method does).

    Examples
    --------
    >>> from omicformer.scgpt.model import ScGPTPerturbation
    >>> ScGPTPerturbation.setup_anndata(adata, condition_key="condition", control="ctrl")
    >>> model = ScGPTPerturbation.load_pretrained("default", adata)
    >>> model.train()
    >>> pred = model.predict(["KLF1+ctrl", "KLF1+CEBPA"])
    >>> model.save("my_perturbation_model/")

    References
    ----------
    Cui et al. (2024), scGPT: toward building a foundation model for single-cell multi-omics
    using generative AI. Nature Methods 21, 1470-1480.
    Roohani, Huang & Leskovec (2024), Predicting transcriptional outcomes of novel multigene
    perturbations with GEARS. Nature Biotechnology 42, 927-935.
    """

    _few_genes_hint = (
        "ScGPTPerturbation.load_pretrained gives genes outside the vocabulary new embeddings, "
        "but with so few genes known the pretrained weights carry almost nothing over: to use "
        "these genes as they are, train a model from scratch, ScGPTPerturbation(adata) (its "
        "vocabulary is adata's genes)."
    )
    #: Perturbation data has no batch_key (setup_anndata registers none).
    _keeps_batch_layers = False
    #: The official recipe loads ``encoder``, ``value_encoder`` and ``transformer_encoder``
    #: only: a TransformerGenerator's checkpoint has another decoder, and ours is new anyway.
    _pretrained_task = "embed"

    def __init__(
        self,
        adata: AnnData,
        *,
        max_len: int = DEFAULT_MAX_LEN,
        prior: str | None = "covariance",
        **kwargs: Any,
    ):
        _check_prior(prior)
        super().__init__(adata, max_len=max_len, **kwargs)
        self.init_params_["non_kwargs"]["prior"] = prior
        self.module, _ = _perturbation_module(self.module, prior)
        self.module.decoder.init_identity()
        self._set_genes()

    # ------------------------------------------------------------------ setup
    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        layer: str | None = None,
        condition_key: str = "condition",
        control: str = CONTROL,
        gene_key: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Register Perturb-seq data for :class:`ScGPTPerturbation`.

        Checks first (``adata`` untouched on error): ``adata`` is no view (pass
        ``adata[cells].copy()``, or ``backed[cells].to_memory()``), ``condition_key`` exists, every
        condition parses (``control``, ``"GENE+ctrl"``, ``"GENE1+GENE2"``), its genes are
        measured, control cells exist, the expression has no NaN or negative values.

        Parameters
        ----------
        adata
            Cells x genes, log-normalised expression (as GEARS ships it).
        layer
            Layer with the expression; ``None`` uses ``X``.
        condition_key
            ``obs`` column with condition strings.
        control
            Label of unperturbed cells.
        gene_key
            ``var`` column with gene symbols; ``None`` uses ``var_names``.
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields`.
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        check_not_view(adata, f"{cls.__name__}.setup_anndata")
        genes = gene_names(adata, gene_key)
        check_measured(check_perturbation_data(adata, condition_key, control, layer), genes,
                       gene_key)  # fmt: skip
        fields = [
            GeneLayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=False,
                            correct_data_format=False),
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, None),
            CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, condition_key),
        ]  # fmt: skip
        manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        manager.register_fields(adata, **kwargs)
        cls.register_manager(manager)

    @classmethod
    def load_pretrained(
        cls,
        path: Any,
        adata: AnnData,
        *,
        max_len: int | None = None,
        prior: str | None = "covariance",
    ) -> ScGPTPerturbation:
        """Pretrained weights + the perturbation flag embedding and the affine decoder.

        The official recipe keeps the pretrained ``encoder``, ``value_encoder`` and
        ``transformer_encoder``; ``pert_encoder`` and the decoder are new. Genes of ``adata``
        missing from the checkpoint's vocabulary (matched as ``tl.embed`` matches them:
        ignoring case where most symbols match only so, as mouse ones; of genes that differ
        only in case, the one spelled as the token keeps it) get new, freshly initialised
        embeddings, so every measured gene is predicted; they are listed in
        ``model.pretrained_report_["new_genes"]``. This needs enough genes in the vocabulary
        for the pretrained weights to matter: at least 10% of the smaller of ``adata``'s genes
        and the vocabulary's (the check of every scGPT model); with fewer, a ``ValueError``
        names the counts (see Raises).

        Parameters
        ----------
        path
            ``"default"``, an official scGPT folder, a folder saved by :meth:`save`, or an
            :class:`ScGPT` model (its weights are copied).
        adata
            AnnData registered with :meth:`setup_anndata`.
        max_len
            Genes per forward pass in training (a random subset of the genes, always with the
            perturbed ones, when there are more); ``None``: 1536 (official tutorial).
        prior
            ``"covariance"`` (default, our addition): every token also receives a prior of the
            perturbation's effect on its gene: the training perturbations' mean change plus the
            perturbed genes' own change beyond it, propagated through the control cells'
            gene-gene covariance
            (:class:`~omicformer.scgpt.train.CovariancePrior`), as a second value embedding
            (``prior_encoder``) and as a residual of the decoder, so the transformer learns
            corrections to it. ``None``: the official method (flags only).

        Raises
        ------
        ValueError
            Fewer than 10% of the genes (of the smaller of the two gene sets) are in the
            checkpoint's vocabulary: most often symbols of another kind (Ensembl IDs: pass
            ``gene_key=`` naming a ``var`` column with symbols). The message gives the counts;
            to use such genes as they are, train from scratch with ``ScGPTPerturbation(adata)``,
            whose vocabulary is ``adata``'s genes.
        """
        _check_prior(prior)
        model = super().load_pretrained(
            path, adata, max_len=DEFAULT_MAX_LEN if max_len is None else max_len
        )
        genes = list(dict.fromkeys(gene_names(adata, model.get_setup_arg("gene_key")).tolist()))
        # matched as every scGPT model matches symbols (ignoring case for mouse-style ones);
        # genes that land on one token (``Anp32b`` and ``ANP32B``) leave it to the one spelled
        # as the token, and all of them are new where none is: one token per gene
        ids = lookup_symbols(np.asarray(genes, dtype=str), model.vocab)[0]
        exact = model.vocab.lookup(genes)
        shared = pd.Series(ids[ids >= 0]).value_counts()
        new = [g for g, i, e in zip(genes, ids, exact, strict=True)
               if i < 0 or (shared[i] > 1 and e != i)]  # fmt: skip
        fresh: list[str] = []
        if new:
            model._extend_vocab(new)
            fresh.append("encoder.embedding.weight (new genes' rows)")
        c = model.module.config
        if not c.perturbation or c.perturbation_prior != (prior is not None):
            model.module, heads = _perturbation_module(model.module, prior)
            if any(h.startswith("decoder.") for h in heads):
                model.module.decoder.init_identity()
            fresh += heads
        model._set_genes()
        report = model.pretrained_report_
        report["missing"] = sorted(set(report.get("missing", [])) | set(fresh))
        report["new_genes"] = new
        if new:
            logger.info("%d genes of adata are not in the model's vocabulary and get new "
                        "embeddings: %s", len(new), new[:10])  # fmt: skip
        return model

    from_pretrained = load_pretrained

    def _extend_vocab(self, new: list[str]) -> None:
        """Append ``new`` genes to the vocabulary; their embedding rows are initialised anew."""
        old = self.vocab
        vocab = GeneVocab({**old.to_dict(), **{g: len(old) + i for i, g in enumerate(new)}})
        weight = self.module.encoder.embedding.weight.detach()
        module, _ = rebuild_module(self.module, ntoken=len(vocab))
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(len(vocab))
            emb = module.encoder.embedding.weight
            emb[: len(old)] = weight
            emb[len(old) :].uniform_(-0.1, 0.1)  # official init_weights()
        self._attach(module, vocab, self.max_len)

    def _set_genes(self) -> None:
        """The genes this model predicts: every gene of the registered AnnData, in order."""
        names = [str(g) for g in gene_names(self.adata, self.get_setup_arg("gene_key"))]
        ids = self.vocab.lookup(names, ignore_case=True)  # as _gene_token_ids reads them
        unknown = [g for g, i in zip(names, ids, strict=True) if i < 0]
        check_genes_known(unknown, self.vocab.genes(), "the model's vocabulary")
        self.genes_ = names

    # ------------------------------------------------------------------ data
    def _conditions(self, adata: AnnData) -> pd.Series:
        return adata.obs[self.get_setup_arg("condition_key")].astype(str)

    def _columns(self, adata: AnnData) -> np.ndarray:
        """Column of ``adata`` for every model gene; ``ValueError`` when the genes differ."""
        names = [str(g) for g in gene_names(adata, self.get_setup_arg("gene_key"))]
        if set(names) != set(self.genes_) or len(names) != len(self.genes_):
            missing = [g for g in self.genes_ if g not in set(names)]
            extra = [g for g in names if g not in set(self.genes_)]
            msg = (
                f"The genes of adata do not match the model's {len(self.genes_)} genes "
                f"(missing from adata: {len(missing)}, e.g. {missing[:5]}; not in the model: "
                f"{len(extra)}, e.g. {extra[:5]}). Predict on AnnData with the genes the model "
                "was trained on."
            )
            raise ValueError(msg)
        pos = {g: i for i, g in enumerate(names)}
        return np.array([pos[g] for g in self.genes_])

    def _matrix(self, adata: AnnData, rows: np.ndarray | None = None) -> Any:
        """CSR (cells x model genes, model order) of ``adata``'s registered layer."""
        import scipy.sparse as sp

        from ..._core._anndata import iter_row_chunks

        layer = self.get_setup_arg("layer")
        check_layer(adata, layer)
        cols = self._columns(adata)
        sub = adata if rows is None else adata[np.sort(rows)]
        parts = [chunk[:, cols] for _, chunk in iter_row_chunks(sub, layer)]
        return sp.vstack(parts, format="csr")

    def _perturbed_columns(self, genes: Sequence[str]) -> np.ndarray:
        pos = {g: i for i, g in enumerate(self.genes_)}
        return np.array([pos[g] for g in genes], dtype=np.int64)

    # ------------------------------------------------------------------ training
    def train(
        self,
        max_epochs: int | None = None,
        batch_size: int = 64,
        lr: float = 1e-4,
        *,
        max_steps: int | None = None,
        validation_size: float = 0.0,
        early_stopping: bool = False,
        early_stopping_patience: int = 5,
        de_weight: float = 0.0,
        n_de: int = 20,
        weight_decay: float = 0.0,
        lr_decay: float = 0.9,
        dropout: float | None = 0.0,
        center: bool = True,
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
        **trainer_kwargs: Any,
    ) -> None:
        """Fine-tune on the registered cells (official ``Tutorial_Perturbation`` objective).

        Every perturbed cell is a target whose input is a control cell drawn at random (new
        draws every epoch); control cells are their own input and target (as GEARS).

        Parameters
        ----------
        max_epochs
            Passes over the cells; ``None`` (with ``max_steps=None``): about 60,000 cell passes,
            between 1 and 15 epochs (the official tutorial runs 15). Trained on a CPU with
            more than 256 genes per pass (``min(n_genes, max_len)``), ``60,000 *
            (256 / genes) ** 2`` cell passes (1,667 at 1,536 genes), so that a default run
            costs about the same whatever the number of genes (:func:`default_schedule`); when
            that is fewer than the cells, one epoch stopped after as many steps (a random
            sample of the cells). On a GPU, 60,000 cell passes at any length.
        batch_size, lr
            Pairs per minibatch and Adam learning rate (official 64 and 1e-4).
        max_steps
            Optimiser steps; training stops at whichever of ``max_epochs``/``max_steps`` comes
            first.
        validation_size
            Fraction of the perturbation conditions held out whole (seeded), so that
            ``validation_loss`` measures prediction of perturbations not seen in training
            (GEARS' validation split). Default 0: train on everything.
        early_stopping, early_stopping_patience
            Stop when ``validation_loss`` has not improved for that many epochs and restore
            the best epoch's weights (needs ``validation_size > 0``).
        de_weight
            Weight of an extra MSE on each condition's ``n_de`` DE genes (largest change of
            mean expression against the control mean in the training cells, perturbed genes
            excluded); 0: the official loss, MSE on all genes.
        n_de
            DE genes per condition for ``de_weight``.
        weight_decay, lr_decay
            Adam weight decay; learning rate factor per epoch (official 0.9).
        dropout
            Dropout while fine-tuning (official tutorial 0); ``None`` keeps the module's.
        center
            ``True`` (default, our addition): inputs and targets are deviations from the
            control mean of the training cells; ``False``: the expression values themselves,
            as the official method.
        accelerator, devices, num_nodes, strategy, precision, num_workers, random_state, checkpoint_dir, ckpt_path, enable_progress_bar, **trainer_kwargs
            As :meth:`ScGPT.train` (the shared runner's options).

        Notes
        -----
        Sets ``history`` (per epoch ``train_loss``, ``train_loss_mse``, ``train_loss_de``,
        ``validation_loss``, ...), ``train_indices``, ``validation_indices`` (cells),
        ``train_conditions_``, ``schedule_`` (the ``max_epochs`` and ``max_steps`` used) and
        ``is_trained``.
        """
        from ..train._perturb import (
            PerturbationCollator,
            PerturbationDataset,
            PerturbationTrainingPlan,
            training_screen,
        )

        require_training_cells(self)
        check_fit_args(batch_size=batch_size, max_epochs=max_epochs, max_steps=max_steps,
                       validation_size=validation_size, dropout=dropout, lr=lr,
                       weight_decay=weight_decay,
                       early_stopping_patience=early_stopping_patience, random_state=random_state,
                       factors={"lr_decay": lr_decay},
                       num_workers=num_workers, trainer_kwargs=trainer_kwargs)  # fmt: skip
        check_int("n_de", n_de, hint="DE genes per condition")
        real = isinstance(de_weight, int | float | np.integer | np.floating)
        if isinstance(de_weight, bool) or not real or not de_weight >= 0:
            msg = f"de_weight={de_weight!r} must be a number >= 0."
            raise ValueError(msg)
        if early_stopping and validation_size == 0:
            msg = "early_stopping=True needs held-out conditions: set validation_size > 0."
            raise ValueError(msg)
        with self._kept_until_a_step(_TRAIN_STATE) as plans:  # a refusal changes nothing
            if dropout is not None:  # every argument checked: the model changes from here on
                self.module.set_dropout(dropout)
            screen = training_screen(
                self._matrix(self.adata), self._conditions(self.adata).to_numpy(),
                self.get_setup_arg("control"), self._perturbed_columns, self.genes_, n_de=n_de,
                validation_size=validation_size, random_state=random_state,
            )  # fmt: skip
            X, codes, perturbed, ctrl_mean = (
                screen.X,
                screen.codes,
                screen.perturbed,
                screen.ctrl_mean,
            )
            train_idx, val_idx = np.flatnonzero(~screen.val_mask), np.flatnonzero(screen.val_mask)
            if max_epochs is None and max_steps is None:
                tokens = min(len(self.genes_), self.max_len)
                max_epochs, max_steps = default_schedule(
                    len(train_idx), tokens, batch_size, cpu=_trains_on_cpu(accelerator)
                )
            # untrained until _fit finishes: an interrupted run must not pair the weights with
            # this run's prior, schedule and conditions
            self.is_trained_ = False
            self.schedule_ = {"max_epochs": max_epochs, "max_steps": max_steps}
            held = set(screen.held.tolist())
            self.train_conditions_ = [
                c for k, c in enumerate(screen.conditions) if k and k not in held
            ]
            self.centered_ = bool(center)
            priors = None
            if self.module.config.perturbation_prior:
                singles = screen.trained_singles()
                self.prior_effects_ = {self.genes_[c]: float(d[c]) for c, d in singles.items()}
                self.prior_observed_ = {self.genes_[c]: d.astype(np.float32)
                                        for c, d in singles.items()}  # fmt: skip
                own = list(self.prior_effects_.values())
                self.prior_default_ = float(np.mean(own)) if own else 0.0
                self.prior_shared_ = screen.trained_mean_change().astype(np.float32)
                prior = self._prior(X[screen.ctrl_rows])
                priors = np.stack([np.zeros(len(self.genes_), dtype=np.float32)]
                                  + [prior(p) for p in perturbed[1:]])  # fmt: skip

            train_ds = PerturbationDataset(X[train_idx], codes[train_idx], 0)
            val_ds = PerturbationDataset(X[val_idx], codes[val_idx], 0)
            pool = X[screen.ctrl_rows]
            gene_ids = self._gene_token_ids()

            def collator(seed: int | None = None, ds: Any = train_ds) -> PerturbationCollator:
                return PerturbationCollator(ds, pool, gene_ids, perturbed, screen.de, priors=priors,
                                            center=ctrl_mean if center else None,
                                            max_len=self.max_len, seed=seed)  # fmt: skip

            def make_collator(seed: int | None = None) -> PerturbationCollator:
                return collator(seed, train_ds if seed is None else val_ds)

            plan = PerturbationTrainingPlan(self.module, lr=lr, de_weight=de_weight,
                                            weight_decay=weight_decay, lr_decay=lr_decay)  # fmt: skip
            plans.append(plan)
            self._fit(
                plan, make_collator, (train_ds, val_ds), (train_idx, val_idx),
                batch_size=batch_size, max_epochs=max_epochs, max_steps=max_steps,
                accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy,
                precision=precision, num_workers=num_workers, random_state=random_state,
                early_stopping=early_stopping, early_stopping_patience=early_stopping_patience,
                checkpoint_dir=checkpoint_dir, ckpt_path=ckpt_path,
                enable_progress_bar=enable_progress_bar, **trainer_kwargs,
            )  # fmt: skip

    # ------------------------------------------------------------------ save / load
    def _settings(self) -> dict[str, Any]:
        return {"max_len": self.max_len, "genes": list(self.genes_),
                "train_conditions": list(getattr(self, "train_conditions_", [])),
                "prior_effects": dict(getattr(self, "prior_effects_", {})),
                "prior_default": float(getattr(self, "prior_default_", 0.0)),
                "prior_observed": {g: np.asarray(d, dtype=np.float64).tolist() for g, d in
                                   getattr(self, "prior_observed_", {}).items()},
                "prior_shared": (None if getattr(self, "prior_shared_", None) is None
                                 else np.asarray(self.prior_shared_, np.float64).tolist()),
                "centered": bool(getattr(self, "centered_", False)),
                "schedule": dict(getattr(self, "schedule_", {}))}  # fmt: skip

    def _restore_settings(self, settings: dict[str, Any]) -> None:
        self.genes_ = list(settings["genes"])
        self.train_conditions_ = list(settings.get("train_conditions", []))
        self.prior_effects_ = dict(settings.get("prior_effects", {}))
        self.prior_default_ = float(settings.get("prior_default", 0.0))
        self.prior_observed_ = {g: np.asarray(d, dtype=np.float32)
                                for g, d in settings.get("prior_observed", {}).items()}  # fmt: skip
        shared = settings.get("prior_shared")
        self.prior_shared_ = None if shared is None else np.asarray(shared, dtype=np.float32)
        self.centered_ = bool(settings.get("centered", False))
        if settings.get("schedule"):  # not in models saved before it was kept
            self.schedule_ = dict(settings["schedule"])
