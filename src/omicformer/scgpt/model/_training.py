"""Generative pretraining of :class:`~omicformer.scgpt.model.ScGPT` (mixin, as scvi-tools' training mixins)."""

from __future__ import annotations

import contextlib
import copy
import functools
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from ..._core._callbacks import extend_history
from ..._core._checks import check_int
from ..._core._deprecation import renamed_kwargs
from ..._core._fit_checks import check_fit_args
from ..._core._train import VALIDATION_SIZE, run_training, split_indices
from .._embed import vocab_chunks
from ._scvi import require_training_cells

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from ..._core._ondisk import ChunkedRows


def capped_schedule(
    n_train: int,
    batch_size: int,
    max_epochs: int,
    cap: int,
    trainer_kwargs: dict[str, Any],
    *,
    accelerator: str,
    devices: int | str | list[int],
    num_nodes: int,
    strategy: Any,
) -> int:
    """``max_steps`` of a default schedule of ``max_epochs`` epochs, at most ``cap`` cell passes.

    It is ``cap`` over the cells of one optimiser step, ``batch_size`` times the
    DDP processes these settings give (so several devices share the cap, not multiply it).
    Where the cap would end the run inside an epoch (a large data set), ``limit_train_batches``
    (set in ``trainer_kwargs`` unless given) makes each epoch ``max_steps // max_epochs``
    minibatches, a new random share of the cells each, so that every epoch ends validated
    (early stopping and the best weights read those losses; the cap inside the first epoch
    left none).
    """
    from ..._core._distributed import world_size_of

    world = world_size_of(accelerator, devices, num_nodes, strategy)
    max_steps = -(-cap // (batch_size * world))
    batches = -(-n_train // batch_size)
    per_epoch = -(-batches // world)  # one process's minibatches
    if max_steps < max_epochs * per_epoch:
        trainer_kwargs.setdefault("limit_train_batches", max(1, max_steps // max_epochs))
    return max_steps


#: scvi-tools' ``train_size`` taken as ``validation_size = 1 - train_size`` (a FutureWarning).
TRAIN_SIZE_RENAMED = renamed_kwargs(
    train_size=("validation_size", lambda v: round(1 - float(v), 12))
)


class GenerativeTrainingMixin:
    """``train()`` for scGPT models: Lightning generative pretraining (+ MVC, optional ECS)."""

    def _training_matrix(self) -> tuple[sp.csr_matrix, np.ndarray]:
        """CSR of vocabulary genes (read in chunks) and their vocab ids; errors on bad input."""
        layer = self.get_setup_arg("layer")
        gene_ids = self._gene_ids_for(self.adata)
        cols = np.flatnonzero(gene_ids >= 0)
        X = sp.vstack([sub for _, sub in vocab_chunks(self.adata, layer, cols)], format="csr")
        return X, gene_ids[cols]

    def _training_rows(self, chunk_size: int, cache_chunks: int) -> tuple[ChunkedRows, np.ndarray]:
        """Vocabulary genes of every cell, read lazily in chunks, and their vocab ids.

        Out-of-core counterpart of :meth:`_training_matrix`: nothing but the current chunks is
        kept in memory. All cells are validated first, in one pass of chunk reads, so bad input
        fails before training starts, as in memory.
        """
        from ..._core._ondisk import ChunkedRows, RowSource
        from .._embed import vocab_columns

        layer = self.get_setup_arg("layer")
        gene_ids = self._gene_ids_for(self.adata)
        cols = np.flatnonzero(gene_ids >= 0)
        where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
        transform = functools.partial(vocab_columns, cols=cols, where=where)
        source = RowSource.from_anndata(self.adata, layer)
        rows = ChunkedRows(
            source, chunk_size=chunk_size, transform=transform, cache_chunks=cache_chunks
        )
        try:
            for _ in rows.iter_chunks():  # validation only: each chunk is dropped at once
                pass
        finally:
            source.close()  # reopened by whichever process reads next (workers, ranks)
        return rows, gene_ids[cols]

    @contextlib.contextmanager
    def _training_cells(
        self, stream: bool, chunk_size: int, shuffle_window: int
    ) -> Iterator[tuple[Callable[..., Any], np.ndarray]]:
        """The training cells of every trainer, in memory or streamed; closes the file after.

        Yields ``(dataset, col_ids)``: ``dataset(idx, batch_codes=None, labels=None)`` makes
        the dataset of cells ``idx`` (sorted rows of ``self.adata``) with those cells' entries
        of the per-cell arrays ``batch_codes`` and ``labels`` (all cells, kept in memory):
        :class:`~omicformer.scgpt.train.CellDataset` /
        :class:`~omicformer.scgpt.train.LabelledCellDataset` on the vocabulary columns loaded
        with :meth:`_training_matrix`, or, with ``stream``, a
        ``ChunkedCellDataset`` (``omicformer.scgpt.train._data``) reading ``chunk_size`` cells
        at a time (:meth:`_training_rows`, all cells validated first). ``col_ids`` are the
        vocabulary ids of the dataset's columns.
        """
        from ..train import CellDataset, LabelledCellDataset
        from ..train._data import ChunkedCellDataset

        if stream:
            rows, col_ids = self._training_rows(chunk_size, cache_chunks=shuffle_window)
        else:
            X, col_ids = self._training_matrix()

        def dataset(
            idx: np.ndarray, batch_codes: np.ndarray | None = None, labels: np.ndarray | None = None
        ) -> Any:
            codes = None if batch_codes is None else batch_codes[idx]
            y = None if labels is None else labels[idx]
            if stream:
                return ChunkedCellDataset(rows.subset(idx), codes, labels=y, window=shuffle_window)
            if y is None:
                return CellDataset(X[idx], codes)
            return LabelledCellDataset(X[idx], y, codes)

        try:
            yield dataset, col_ids
        finally:
            if stream:
                rows.source.close()

    def _fit(
        self,
        plan: Any,
        collator: Callable[..., Any],
        datasets: tuple[Any, Any],
        indices: tuple[np.ndarray, np.ndarray],
        *,
        random_state: int,
        **runner: Any,
    ) -> None:
        """Fit ``plan`` on the shared runner and record the run on the model.

        ``collator(seed=None)`` tokenises training batches, ``collator(seed=random_state)``
        validation batches (fixed draws, so validation losses compare across epochs). Heads
        frozen for the objective are unfrozen even when training fails; afterwards the module
        is on the CPU in eval mode (also when training fails), the run's curves extend
        ``history`` (a repeated ``train`` continues them, as in scvi-tools), and
        ``train_indices``, ``validation_indices`` and ``is_trained`` are set. ``runner`` goes to
        :func:`~omicformer._core._train.run_training`.
        """
        (train_ds, val_ds), (train_idx, val_idx) = datasets, indices
        try:
            history = run_training(
                plan, train_ds, collator(seed=None), val=val_ds,
                val_collate_fn=collator(seed=random_state), random_state=random_state, **runner,
            )  # fmt: skip
        finally:
            plan.unfreeze()
            self.module.cpu().eval()  # also when training failed
        self.history_ = extend_history(self.history_, history)
        self.train_indices_, self.validation_indices_ = train_idx, val_idx
        self.is_trained_ = True

    @contextlib.contextmanager
    def _kept_until_a_step(
        self, names: tuple[str, ...], parts: tuple[str, ...] = ()
    ) -> Iterator[list[Any]]:
        """Inside, the model comes back as it was if training fails before a step.

        Before its first optimiser step (a refused argument) the weights are as they were, so
        the attributes ``names``, the module's submodules ``parts`` (a head made anew), its
        config and its dropout rate, which ``train`` set first, come back with them. Yields a
        list to append the training plan to once it exists; a run that failed after a step
        is left as it stopped (``is_trained`` False: untrained).
        """
        kept = {n: self.__dict__[n] for n in names if n in self.__dict__}
        modules = {n: copy.deepcopy(getattr(self.module, n)) for n in parts}
        config = self.module.config
        plans: list[Any] = []
        try:
            yield plans
        except BaseException:
            if not any(plan.global_step for plan in plans):
                for name in names:
                    if name in kept:
                        setattr(self, name, kept[name])
                    else:
                        self.__dict__.pop(name, None)
                for name, module in modules.items():
                    setattr(self.module, name, module)
                self.module.set_dropout(config.dropout)
                self.module.config = config
            raise

    # ------------------------------------------------------------------ training
    def train(
        self,
        max_epochs: int | None = 10,
        batch_size: int = 32,
        lr: float = 1e-3,
        *,
        max_steps: int | None = None,
        validation_size: float = VALIDATION_SIZE,
        early_stopping: bool = False,
        early_stopping_patience: int = 5,
        gen_ratios: Sequence[float] = (0.25, 0.5, 0.75),
        mvc: bool = True,
        ecs_weight: float = 0.0,
        weight_decay: float = 0.0,
        scheduler_interval: int = 100,
        scheduler_factor: float = 0.99,
        accelerator: str = "auto",
        devices: int | str | list[int] = "auto",
        num_nodes: int = 1,
        strategy: str = "auto",
        precision: str | int | None = "auto",
        num_workers: int = 0,
        random_state: int = 0,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        checkpoint_every_n_steps: int | None = None,
        ckpt_path: str | os.PathLike[str] | None = None,
        enable_progress_bar: bool = True,
        streaming: bool | None = None,
        chunk_size: int = 1024,
        shuffle_window: int = 4,
        **trainer_kwargs: Any,
    ) -> None:
        """Generative pretraining with Lightning (CPU, one GPU, or several with DDP).

        Each batch draws a ratio from ``gen_ratios``; that fraction of every cell's genes is
        hidden and predicted from the rest (known tokens ``<cls>`` + gene + binned value; tokens
        to generate carry gene + a learned flag; known tokens attend only to known tokens, each
        token to generate to the known ones and itself). Loss: MSE on the generated values,
        + MVC MSE (``mvc``), + ``ecs_weight`` x ECS. Runs on the shared runner
        (:func:`omicformer._core._train.run_training`), as every omicformer model.

        Parameters
        ----------
        max_epochs, max_steps
            Passes over the training cells; with ``max_steps`` (optimiser steps) training
            stops at whichever comes first.
        batch_size
            Cells per minibatch (per device under DDP).
        lr
            Adam learning rate.
        validation_size
            Fraction of cells held out; their loss is ``validation_loss``.
        early_stopping, early_stopping_patience
            Stop when ``validation_loss`` has not improved for that many epochs and restore
            the best epoch's weights.
        gen_ratios
            Fractions of genes to generate, one drawn per batch (official 0.25/0.5/0.75).
        mvc
            Add the MVC (GEPC) loss.
        ecs_weight
            Weight of the elastic cell similarity loss (official 10 with threshold 0.3);
            ``0`` disables it.
        weight_decay
            Adam weight decay.
        scheduler_interval, scheduler_factor
            Learning rate times ``scheduler_factor`` every ``scheduler_interval`` steps.
        accelerator, devices, num_nodes, strategy
            Passed to :class:`lightning.pytorch.Trainer`; several devices or nodes use DDP.
            Run DDP from a script (``strategy="ddp"``), not a notebook.
        precision
            ``"auto"``: bf16 mixed precision on GPUs that support it, 32-bit on CPU; or any
            Lightning precision.
        num_workers
            DataLoader worker processes (each draws its own masks).
        random_state
            Seed of the split, the shuffling, the masking and dropout: equal seeds give equal
            results on CPU.
        checkpoint_dir, checkpoint_every_n_steps, ckpt_path
            Write Lightning checkpoints (``last.ckpt``: weights, optimiser, sampler position,
            random state) to ``checkpoint_dir`` every epoch, or every
            ``checkpoint_every_n_steps`` optimiser steps; ``ckpt_path="last"`` resumes from
            there (a run killed mid-epoch then reaches the weights of an uninterrupted run).
        enable_progress_bar
            Show Lightning's progress bar.
        streaming
            Read cells out of core instead of loading the matrix: ``None`` (default) streams
            when the model's AnnData is ``backed="r"``; ``True`` streams in-memory data too
            (same batches as backed data, e.g. to compare); ``False`` loads all vocabulary
            genes of all cells into memory first. Streaming reads ``chunk_size`` contiguous
            cells at a time (the file is opened read-only in every process that reads it),
            shuffles the order of chunks every epoch and the cells within windows of
            ``shuffle_window`` chunks, then cuts minibatches (block shuffling, as AnnLoader
            and scDataset); peak memory holds ``shuffle_window`` chunks, not the data, and an
            epoch reads every chunk about once (once per DataLoader worker). All cells are
            validated in one chunked pass before training. With ``dsbn`` every streamed
            minibatch holds cells of one batch label and one chunk (the minibatches of a
            window's chunks are shuffled together).
        chunk_size
            Cells per read when streaming.
        shuffle_window
            Chunks whose cells are shuffled together when streaming (larger: better mixing,
            more memory).
        **trainer_kwargs
            Further :class:`lightning.pytorch.Trainer` arguments (e.g.
            ``accumulate_grad_batches``).

        Notes
        -----
        Sets ``history`` (scvi-tools format: per-epoch ``train_loss``, ``train_loss_gen``,
        ``train_loss_mvc``, ``validation_loss``, ..., and per-step ``train_loss_step``),
        ``train_indices``, ``validation_indices`` and ``is_trained``. ``train_size=`` (the
        training fraction) is deprecated: pass ``validation_size=1 - train_size``.

        Examples
        --------
        >>> model.train(max_epochs=20, batch_size=64, ecs_weight=10.0)
        >>> model.history["validation_loss"].plot()

        Out of core (a file larger than memory):

        >>> adata = anndata.read_h5ad("atlas.h5ad", backed="r")
        >>> ScGPT.setup_anndata(adata, layer="counts")
        >>> model = ScGPT(adata)
        >>> model.train(max_epochs=1, chunk_size=2048, shuffle_window=8)  # streams (backed)
        """
        from ..train import GenerativeCollator, GenerativeTrainingPlan

        require_training_cells(self)
        check_fit_args(batch_size=batch_size, max_epochs=max_epochs, max_steps=max_steps,
                       validation_size=validation_size, lr=lr, weight_decay=weight_decay,
                       counts={"scheduler_interval": scheduler_interval},
                       early_stopping_patience=early_stopping_patience, random_state=random_state,
                       factors={"scheduler_factor": scheduler_factor},
                       num_workers=num_workers, trainer_kwargs=trainer_kwargs)  # fmt: skip
        _check_train_args(gen_ratios, ecs_weight)
        c = self.module.config
        stream = _check_streaming(self.adata, streaming, chunk_size, shuffle_window)
        codes = self._batch_codes(self.adata) if self._needs_batch_codes() else None
        common = {"cls_id": self.vocab.cls_id, "pad_id": self.vocab.pad_id, "pad_value": c.pad_value,
                  "n_bins": c.n_bins, "max_len": self.max_len, "gen_ratios": gen_ratios,
                  "gene_selection": self.gene_selection}  # fmt: skip
        with self._training_cells(stream, chunk_size, shuffle_window) as (dataset, col_ids):
            train_idx, val_idx = split_indices(self.adata.n_obs, validation_size, random_state)
            train_ds, val_ds = dataset(train_idx, codes), dataset(val_idx, codes)
            plan = GenerativeTrainingPlan(
                self.module, lr=lr, weight_decay=weight_decay, mvc=mvc, ecs_weight=ecs_weight,
                scheduler_interval=scheduler_interval, scheduler_factor=scheduler_factor,
            )  # fmt: skip
            # DSBN normalises a minibatch with one domain's statistics: one batch label each
            groups = (train_ds.batch_codes, val_ds.batch_codes) if c.domain_spec_batchnorm else None
            self._fit(
                plan, functools.partial(GenerativeCollator, col_ids, **common), (train_ds, val_ds),
                (train_idx, val_idx), groups=groups, batch_size=batch_size, max_epochs=max_epochs,
                max_steps=max_steps, accelerator=accelerator, devices=devices, num_nodes=num_nodes,
                strategy=strategy, precision=precision, num_workers=num_workers,
                random_state=random_state, early_stopping=early_stopping,
                early_stopping_patience=early_stopping_patience, checkpoint_dir=checkpoint_dir,
                checkpoint_every_n_steps=checkpoint_every_n_steps, ckpt_path=ckpt_path,
                enable_progress_bar=enable_progress_bar, **trainer_kwargs,
            )  # fmt: skip


def _check_streaming(
    adata: Any, streaming: bool | None, chunk_size: int, shuffle_window: int
) -> bool:
    """Whether to train out of core; ``ValueError`` for settings that cannot work."""
    for name, value in (("chunk_size", chunk_size), ("shuffle_window", shuffle_window)):
        check_int(name, value)
    return bool(adata.isbacked) if streaming is None else bool(streaming)


def _check_train_args(gen_ratios: Sequence[float], ecs_weight: float) -> None:
    if not gen_ratios or any(not 0 < r < 1 for r in gen_ratios):
        msg = f"gen_ratios={tuple(gen_ratios)} must be fractions strictly between 0 and 1."
        raise ValueError(msg)
    if ecs_weight < 0:
        msg = f"ecs_weight={ecs_weight} must be >= 0."
        raise ValueError(msg)
