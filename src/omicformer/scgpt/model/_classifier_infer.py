"""Block-wise inference of :class:`~omicformer.scgpt.model.ScGPTClassifier` on AnnData.

Embeddings and class logits of any cells of an AnnData, in memory or ``backed="r"``, one
:func:`~omicformer.scgpt._embed.embed_cells` chunk at a time.
Also the labels and named probabilities that the classifier and its ensemble predict.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from .._embed import embed_cells

if TYPE_CHECKING:
    from anndata import AnnData

#: Cells per :func:`embed_cells` chunk in prediction (rounded to whole batches).
EMBED_CHUNK = 8192


class BlockInferenceMixin:
    """``_embeddings`` and ``_logits`` of the cells ``rows`` of an AnnData, block by block.

    Also ``_calibrate``: the temperature of the logits, fitted on held-out cells.
    """

    def _calibrate(
        self,
        val_idx: np.ndarray,
        labels: np.ndarray,
        random_state: int,
        probe_features: np.ndarray | None = None,
    ) -> None:
        """Temperatures and scores on the validation cells (none held out: temperature 1).

        The scores are those of :meth:`predict_proba` with ``smooth_neighbors=1`` (with the
        probe, if there is one; ``probe_features``: its standardised inputs of the validation
        cells, when computed), so each held-out cell is scored on its own.
        """
        from sklearn.metrics import accuracy_score, f1_score

        from ..train._classify import fit_temperature
        from ._classifier_probe import softmax

        self.temperature_, self.validation_scores_ = 1.0, {}
        if len(val_idx) == 0:
            return
        logits = self._logits(self.adata, rows=val_idx, random_state=random_state, progress=False)
        y = labels[val_idx]
        if len(np.unique(y)) < 2:
            _warn_one_class(self, y)
        self.temperature_ = fit_temperature(logits, y)
        proba = self._mix_probe(softmax(logits / self.temperature_), self.adata, val_idx,
                                features=probe_features, random_state=random_state,
                                progress=False)  # fmt: skip
        pred = proba.argmax(1)
        self.validation_scores_ = {
            "n_cells": len(val_idx),
            "n_classes": len(np.unique(y)),
            "accuracy": float(accuracy_score(y, pred)),
            "macro_f1": float(f1_score(y, pred, average="macro")),
            "temperature": self.temperature_,
        }

    @torch.no_grad()
    def _logits(self, adata: AnnData, *, rows: np.ndarray | None = None, **kw: Any) -> np.ndarray:
        """Class logits of the cells ``rows`` of ``adata`` (``None``: all), ``(n, n_classes)``.

        Keywords as :meth:`_embeddings`; the head runs block by block, so memory holds one
        block's embeddings.
        """
        return self._by_block(self._block_logits, self.module.config.n_cls, adata, rows, **kw)

    @torch.no_grad()
    def _embeddings(
        self, adata: AnnData, *, rows: np.ndarray | None = None, **kw: Any
    ) -> np.ndarray:
        """Unnormalised cell embeddings of the cells ``rows`` of ``adata`` (``None``: all).

        Keywords: ``batch_size`` (64), ``device`` ("auto"), ``random_state`` (0), ``progress``
        (True), as :func:`embed_cells`.
        """
        return self._by_block(self._block_embeddings, self.module.config.d_model, adata, rows, **kw)

    def _by_block(
        self,
        fn: Any,
        width: int,
        adata: AnnData,
        rows: np.ndarray | None,
        *,
        batch_size: int = 64,
        device: str | torch.device = "auto",
        random_state: int = 0,
        progress: bool = True,
    ) -> np.ndarray:
        """``fn`` on the cells ``rows`` of ``adata``, one :func:`embed_cells` chunk at a time.

        ``adata`` is embedded by :func:`embed_cells`, which reads a backed AnnData in chunks.
        A subset ``rows`` is embedded in blocks of that chunk size, each block a view of its
        rows only: a backed block is read once and memory holds one block (a view of
        ``adata[rows]`` would be read whole for every chunk, and a backed view cannot be
        indexed again). The blocks are the chunks :func:`embed_cells` would make of
        ``adata[rows]``, so the result does not depend on how the data are stored.
        """
        kw = {"batch_size": batch_size, "device": device, "random_state": random_state,
              "progress": progress}  # fmt: skip
        if rows is None:
            return fn(adata, **kw)
        rows = np.asarray(rows, np.int64)
        block = batch_size * max(1, EMBED_CHUNK // batch_size)  # embed_cells' chunk rounding
        parts = [fn(adata[rows[s : s + block]], **kw) for s in range(0, rows.size, block)]
        if not parts:
            return np.zeros((0, width), dtype=np.float32)
        return np.concatenate(parts)

    def _block_logits(self, adata: AnnData, **kw: Any) -> np.ndarray:
        """Class logits of every cell of ``adata`` (one chunk)."""
        emb = self._block_embeddings(adata, **kw)
        head = self.module.cls_decoder.eval()
        dev = next(head.parameters()).device
        return head(torch.from_numpy(emb).to(dev)).float().cpu().numpy()

    def _block_embeddings(
        self,
        adata: AnnData,
        *,
        batch_size: int,
        device: str | torch.device,
        random_state: int,
        progress: bool,
        module: torch.nn.Module | None = None,
    ) -> np.ndarray:
        """Unnormalised cell embeddings (the config's style) of every cell of ``adata`` (one chunk).

        ``module``: the encoder to run (``None``: the model's own).
        """
        layer = self.get_setup_arg("layer")
        codes = self._batch_codes(adata) if self._needs_batch_codes() else None
        return embed_cells(
            self.module if module is None else module, self.vocab, adata, gene_ids=self._gene_ids_for(adata), layer=layer,
            batch_size=batch_size, max_len=self.max_len, n_bins=self.module.config.n_bins,
            device=device, random_state=random_state, progress=progress, normalize=False,
            batch_labels=codes, chunk_size=EMBED_CHUNK, gene_selection=self.gene_selection,
        )  # fmt: skip


class LabelPredictionMixin:
    """``predict`` from the class's ``predict_proba`` (a classifier, or an ensemble of them)."""

    def predict(self, adata: AnnData | None = None, **kwargs: Any) -> pd.Series:
        """Most probable class per cell (a categorical :class:`~pandas.Series`).

        Parameters
        ----------
        adata
            As :meth:`predict_proba`.
        **kwargs
            Passed to :meth:`predict_proba`.

        Raises
        ------
        RuntimeError
            The model is not trained (see :meth:`predict_proba`).
        TypeError
            scvi-tools' ``soft=`` or ``indices=``, with what to call instead.
        """
        hints = {"soft": "call predict_proba(adata) for the class probabilities",
                 "indices": "pass the cells as adata[indices]"}  # fmt: skip
        for key in hints.keys() & kwargs.keys():
            msg = f"{type(self).__name__}.predict() takes no {key}= (scvi-tools'): {hints[key]}."
            raise TypeError(msg)
        proba = self.predict_proba(adata, **kwargs)
        labels = pd.Categorical(proba.columns[proba.to_numpy().argmax(1)], categories=proba.columns)
        return pd.Series(labels, index=proba.index)

    def _require_trained(self) -> None:
        """``RuntimeError`` unless trained: an untrained head's predictions are arbitrary.

        scvi-tools' ``_check_if_trained`` only warns by default; a cell-type head freshly
        initialised by ``load_pretrained`` (or ``__init__``) has random weights, so its labels
        mean nothing. A model loaded from a folder counts as trained if it was when saved.
        """
        if not self.is_trained_:
            name = type(self).__name__
            msg = (
                f"This {name} is not trained: its cell-type head holds random weights (or those "
                "of a train() that did not finish), so its predictions would be arbitrary. Call "
                f"{name}.train() first, or load a trained one with {name}.load(path)."
            )
            raise RuntimeError(msg)


def proba_frame(
    p: np.ndarray, adata: AnnData, rows: np.ndarray | None, classes: list[str]
) -> pd.DataFrame:
    """Probabilities ``p`` of the cells ``rows`` of ``adata`` (``None``: all), named."""
    names = adata.obs_names if rows is None else adata.obs_names[rows]
    return pd.DataFrame(p, index=names.copy(), columns=classes)


def _warn_one_class(model: Any, y: np.ndarray) -> None:
    """Warn that the held-out cells, all of one class, can neither calibrate nor score."""
    from ..._core._warnings import warn_caller

    classes = getattr(model, "classes_", None)
    name = repr(classes[int(y[0])]) if classes is not None else str(y[0])
    warn_caller(
        f"The {len(y)} held-out reference cells are all of one class ({name}): the "
        "probabilities are left uncalibrated (temperature 1) and the validation scores "
        "measure that class only. A class holds out floor(validation_size x its cells) "
        "cells (none below 10 cells with the default 0.1); give the small classes more "
        "cells, or train ScGPTClassifier with a larger validation_size."
    )
