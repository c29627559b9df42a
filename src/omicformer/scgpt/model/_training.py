"""Generative pretraining of :class:`~omicformer.scgpt.model.ScGPT` (mixin, as scvi-tools' training mixins)."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from .._embed import vocab_chunks

if TYPE_CHECKING:
    from collections.abc import Sequence


class GenerativeTrainingMixin:
    """``train()`` for scGPT models: Lightning generative pretraining (+ MVC, optional ECS)."""

    def _training_matrix(self) -> tuple[sp.csr_matrix, np.ndarray]:
        """CSR of vocabulary genes (read in chunks) and their vocab ids; errors on bad input."""
        layer = self._setup_arg("layer")
        gene_ids = self._gene_ids_for(self.adata)
        cols = np.flatnonzero(gene_ids >= 0)
        X = sp.vstack([sub for _, sub in vocab_chunks(self.adata, layer, cols)], format="csr")
        return X, gene_ids[cols]

    # ------------------------------------------------------------------ training
    def train(
        self,
        max_epochs: int = 10,
        batch_size: int = 32,
        lr: float = 1e-3,
        *,
        accelerator: str = "auto",
        devices: int | str | list[int] = "auto",
        strategy: str = "auto",
        gen_ratios: Sequence[float] = (0.25, 0.5, 0.75),
        mvc: bool = True,
        ecs_weight: float = 0.0,
        train_size: float = 0.9,
        random_state: int = 0,
        weight_decay: float = 0.0,
        scheduler_interval: int = 100,
        scheduler_factor: float = 0.99,
        precision: str | int | None = None,
        num_workers: int = 0,
        enable_progress_bar: bool = True,
        **trainer_kwargs: Any,
    ) -> None:
        """Generative pretraining with Lightning (CPU, one GPU, or several with DDP).

        Each batch draws a ratio from ``gen_ratios``; that fraction of every cell's genes is
        hidden and predicted from the rest (known tokens ``<cls>`` + gene + binned value; tokens
        to generate carry gene + a learned flag; known tokens attend only to known tokens, each
        token to generate to the known ones and itself). Loss: MSE on the generated values,
        + MVC MSE (``mvc``), + ``ecs_weight`` x ECS.

        Parameters
        ----------
        max_epochs
            Passes over the training cells.
        batch_size
            Cells per minibatch (per device under DDP).
        lr
            Adam learning rate.
        accelerator, devices, strategy
            Passed to :class:`lightning.pytorch.Trainer`; several devices use DDP. Run DDP from
            a script (``strategy="ddp"``), not a notebook.
        gen_ratios
            Fractions of genes to generate, one drawn per batch (official 0.25/0.5/0.75).
        mvc
            Add the MVC (GEPC) loss.
        ecs_weight
            Weight of the elastic cell similarity loss (official 10 with threshold 0.3);
            ``0`` disables it.
        train_size
            Fraction of cells for training; the rest gives ``validation_loss``.
        random_state
            Seed of the split, the shuffling, the masking and dropout: equal seeds give equal
            results on CPU.
        weight_decay
            Adam weight decay.
        scheduler_interval, scheduler_factor
            Learning rate times ``scheduler_factor`` every ``scheduler_interval`` steps.
        precision
            Lightning precision, e.g. ``"bf16-mixed"`` on GPU.
        num_workers
            DataLoader worker processes.
        enable_progress_bar
            Show Lightning's progress bar.
        **trainer_kwargs
            Further :class:`lightning.pytorch.Trainer` arguments.

        Notes
        -----
        Sets ``history`` (per-epoch ``train_loss``, ``train_loss_gen``, ``train_loss_mvc``,
        ``validation_loss``, ... as scvi-tools ``DataFrame`` s), ``train_indices``,
        ``validation_indices`` and ``is_trained``.

        Examples
        --------
        >>> model.train(max_epochs=20, batch_size=64, ecs_weight=10.0)
        >>> model.history["validation_loss"].plot()
        """
        from torch.utils.data import DataLoader

        from ..._core._lightning import make_trainer, seed_everything
        from ..train import (
            CellDataset,
            GenerativeCollator,
            GenerativeTrainingPlan,
            GroupedBatchSampler,
            HistoryCallback,
        )

        if self.adata is None:
            msg = "This model has no AnnData; load it with ScGPT.load(path, adata=...) to train."
            raise ValueError(msg)
        _check_train_args(max_epochs, batch_size, gen_ratios, train_size, ecs_weight)
        X, col_ids = self._training_matrix()
        codes = self._batch_codes(self.adata) if self._needs_batch_codes() else None
        n = X.shape[0]
        perm = np.random.default_rng(random_state).permutation(n)
        n_train = n if train_size >= 1 else min(max(int(np.ceil(train_size * n)), 1), n)
        train_idx, val_idx = np.sort(perm[:n_train]), np.sort(perm[n_train:])

        c = self.module.config
        common = {"cls_id": self.vocab.cls_id, "pad_id": self.vocab.pad_id, "pad_value": c.pad_value,
                  "n_bins": c.n_bins, "max_len": self.max_len, "gen_ratios": gen_ratios}  # fmt: skip
        dsbn = bool(c.domain_spec_batchnorm)

        def loader(idx: np.ndarray, train: bool) -> DataLoader:
            ds = CellDataset(X[idx], None if codes is None else codes[idx])
            collate = GenerativeCollator(col_ids, seed=None if train else random_state, **common)
            kw = {
                "collate_fn": collate,
                "num_workers": num_workers,
                "persistent_workers": num_workers > 0,
            }
            if dsbn:
                sampler = GroupedBatchSampler(
                    ds.batch_codes, batch_size, shuffle=train, seed=random_state
                )
                return DataLoader(ds, batch_sampler=sampler, **kw)
            return DataLoader(ds, batch_size=batch_size, shuffle=train, **kw)

        seed_everything(random_state)
        train_dl = loader(train_idx, True)
        val_dl = loader(val_idx, False) if len(val_idx) else None
        plan = GenerativeTrainingPlan(
            self.module, lr=lr, weight_decay=weight_decay, mvc=mvc, ecs_weight=ecs_weight,
            scheduler_interval=scheduler_interval, scheduler_factor=scheduler_factor,
        )  # fmt: skip
        history = HistoryCallback()
        callbacks = [*trainer_kwargs.pop("callbacks", []), history]
        if dsbn:
            trainer_kwargs.setdefault("use_distributed_sampler", False)
        if val_dl is None:
            trainer_kwargs.setdefault("limit_val_batches", 0)
        trainer = make_trainer(
            max_epochs=max_epochs, accelerator=accelerator, devices=devices, strategy=strategy,
            precision=precision, enable_progress_bar=enable_progress_bar, callbacks=callbacks,
            **trainer_kwargs,
        )  # fmt: skip
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")
                trainer.fit(plan, train_dl, val_dl)
        finally:
            plan.unfreeze()
        self.module.eval()
        self.history_ = history.history
        self.train_indices_, self.validation_indices_ = train_idx, val_idx
        self.is_trained_ = True


def _check_train_args(
    max_epochs: int,
    batch_size: int,
    gen_ratios: Sequence[float],
    train_size: float,
    ecs_weight: float,
) -> None:
    if max_epochs < 1 or batch_size < 1:
        msg = f"max_epochs={max_epochs} and batch_size={batch_size} must be >= 1."
        raise ValueError(msg)
    if not gen_ratios or any(not 0 < r < 1 for r in gen_ratios):
        msg = f"gen_ratios={tuple(gen_ratios)} must be fractions strictly between 0 and 1."
        raise ValueError(msg)
    if not 0 < train_size <= 1:
        msg = f"train_size={train_size} must be in (0, 1]."
        raise ValueError(msg)
    if ecs_weight < 0:
        msg = f"ecs_weight={ecs_weight} must be >= 0."
        raise ValueError(msg)
