"""The reference probe of :class:`~omicformer.scgpt.model.ScGPTClassifier`.

Fine-tuning a small pretrained encoder on a few hundred reference cells makes it robust to a
query from another experiment, but costs it cells like the reference's own: on 70/30 splits
of ``pbmc68k_reduced`` a logistic regression on a *pretrained* representation beat the
fine-tuned head by 0.08 macro-F1, while on a query from another experiment it fell 0.2 behind.
The probe keeps both. Before fine-tuning, the pretrained gene embeddings of the reference's
genes are kept. A cell's probe representation, its *bag*, is their mean over all of its
expressed genes, weighted by its binned values (the model's own per-cell quantile bins;
:func:`gene_bag`), so it reads every expressed gene, not only the ``max_len - 1`` the encoder
sees, and costs no encoder pass. A logistic regression, its C chosen by cross-validation
(:func:`choose_c`), is fitted on the (standardised) bags of the training cells. A query cell
is then labelled by
``w * p_probe + (1 - w) * p_finetuned``, where ``w`` says whether the cell lies among the
reference cells in that representation: ``d``, its mean distance to its 15 nearest reference
cells, is ranked among the same distances of the reference cells themselves (leave-one-out),
giving the conformal p-value ``p = (1 + #{d_ref >= d}) / (n + 1)``, and
``w = min(1, p / 0.05)``. Cells like the reference's own (``p`` uniform on [0, 1]) get
``w = 1`` for 95% of them; cells of a batch the reference never saw (``p`` near 0) get the
fine-tuned head's probabilities.

Those cells then share their predictions with their query neighbours: a cell's probabilities
become ``w * p_probe + (1 - w) * m``, ``m`` a kernel mean of the mixed probabilities of its
nearest cells of the same query in the bag (``omicformer.scgpt.model._probe_smooth``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch

from ..._core._blas import one_blas_thread
from ._probe_smooth import ProbeParts, smooth_parts

if TYPE_CHECKING:
    from anndata import AnnData

#: Training cells (at most, drawn at random) the probe's regression is fitted on.
PROBE_CELLS = 10_000
#: Reference cells (at most) kept to place query cells (distances, ``(n, d_model)`` floats).
PROBE_REFERENCE_CELLS = 5_000
#: Neighbours whose mean distance places a cell.
PROBE_NEIGHBORS = 15
#: A query cell whose p-value is at least this takes the probe's probabilities alone.
PROBE_ALPHA = 0.05
#: Cells read at a time for the probe's representation.
PROBE_CHUNK = 4096
#: Inverse regularisation strengths (scikit-learn's C) the probe's regression chooses from.
PROBE_CS = (0.1, 0.3, 1.0, 3.0, 10.0)
#: C where cross-validation cannot run (a class with a single training cell).
PROBE_C = 1.0
#: Training cells (at most, drawn at random) and folds of the cross-validation that picks C.
PROBE_CV_CELLS = 2_000
PROBE_FOLDS = 5
#: File of a saved classifier's probe (gene embeddings + regression + reference distances).
PROBE_NAME = "probe.safetensors"
#: The probe's arrays, saved as tensors of that file (its scalars go to the model config).
PROBE_ARRAYS = ("coef", "intercept", "mean", "reference", "reference_distances")
#: The kept pretrained gene embeddings, saved as tensors of that file too.
PROBE_GENE_ARRAYS = ("genes", "table")


def gene_bag(
    X: sp.csr_matrix,
    gene_ids: np.ndarray,
    genes: np.ndarray,
    table: np.ndarray,
    *,
    n_bins: int | None,
) -> np.ndarray:
    """Per cell, the mean of ``table``'s rows over its expressed genes, weighted by their bins.

    Parameters
    ----------
    X
        Cells x genes, non-negative; column ``j`` is vocabulary gene ``gene_ids[j]`` (``-1``:
        not in the vocabulary). Only columns whose gene is in ``genes`` count.
    gene_ids
        Vocabulary id of every column of ``X``.
    genes, table
        Sorted vocabulary ids and their embeddings (row ``i`` of ``table`` is ``genes[i]``).
    n_bins
        The model's per-cell quantile bins (the official edges over the cell's non-zero
        values); a value tied with an edge, which the model's input draws at random in its
        range (``_binning.digitize``), weighs the middle of that range
        (``_binning.expected_digits``), so the bag is deterministic. ``None``: the values
        themselves.

    Returns
    -------
    ``(n_cells, table.shape[1])`` float64; a cell with none of ``genes`` gets zeros.
    """
    from .._binning import expected_digits, quantile_edges

    gene_ids = np.asarray(gene_ids)
    pos = np.searchsorted(genes, gene_ids).clip(max=max(len(genes) - 1, 0))
    cols = np.flatnonzero((gene_ids >= 0) & (len(genes) > 0) & (genes[pos] == gene_ids))
    sub = sp.csr_matrix(X[:, cols], dtype=np.float64)
    sub.eliminate_zeros()
    weights = sub.data.copy()
    if n_bins is not None:
        for i in range(sub.shape[0]):
            s, e = sub.indptr[i], sub.indptr[i + 1]
            if e > s:
                weights[s:e] = expected_digits(sub.data[s:e], quantile_edges(sub.data[s:e], n_bins))
    rows = np.searchsorted(genes, gene_ids[cols][sub.indices])
    W = sp.csr_matrix((weights, rows, sub.indptr), shape=(sub.shape[0], len(genes)))
    total = np.asarray(W.sum(1)).ravel()
    return np.asarray(W @ table) / np.where(total > 0, total, 1.0)[:, None]


def probe_weight(
    distances: np.ndarray, reference_distances: np.ndarray, alpha: float = PROBE_ALPHA
) -> np.ndarray:
    """Per query cell, the weight of the probe: ``min(1, p / alpha)``.

    ``p = (1 + #{reference_distances >= d}) / (n + 1)`` is the conformal p-value of the cell's
    distance ``d`` among the ``n`` reference cells' own (leave-one-out) distances.
    """
    ref = np.sort(np.asarray(reference_distances, dtype=np.float64))
    d = np.asarray(distances, dtype=np.float64)
    at_least = ref.size - np.searchsorted(ref, d, side="left")
    p = (1.0 + at_least) / (ref.size + 1.0)
    return np.minimum(1.0, p / alpha)


def choose_c(z: np.ndarray, y: np.ndarray, class_weight: str | None, random_state: int) -> float:
    """The C of :data:`PROBE_CS` with the lowest cross-validated log loss of the regression.

    Stratified ``min(5, smallest class)``-fold cross-validation (shuffled with
    ``random_state``) on at most :data:`PROBE_CV_CELLS` of the cells ``z`` with integer labels
    ``y``; the loss is ``-log p(true label)`` summed over all held-out cells. With a class
    of a single cell (or a single class) there is nothing to cross-validate:
    :data:`PROBE_C`.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y)
    if len(y) > PROBE_CV_CELLS:
        keep = np.sort(np.random.default_rng(random_state).choice(len(y), PROBE_CV_CELLS,
                                                                  replace=False))  # fmt: skip
        z, y = z[keep], y[keep]
    counts = np.unique(y, return_counts=True)[1]
    folds = min(PROBE_FOLDS, int(counts.min()))
    if len(counts) < 2 or folds < 2:
        return PROBE_C
    loss = np.zeros(len(PROBE_CS))
    split = StratifiedKFold(folds, shuffle=True, random_state=random_state).split(z, y)
    with one_blas_thread():  # small fits: many times faster (``_core._blas``)
        for train, held in split:  # every class has a cell in every fold: all are trained on
            for j, c in enumerate(PROBE_CS):
                lr = LogisticRegression(C=c, class_weight=class_weight, max_iter=5000)
                p = lr.fit(z[train], y[train]).predict_proba(z[held])
                true = p[np.arange(len(held)), np.searchsorted(lr.classes_, y[held])]
                loss[j] -= np.log(np.clip(true, 1e-12, None)).sum()
    return float(PROBE_CS[int(np.argmin(loss))])


def neighbors(n_reference: int) -> int:
    """Neighbours that place a cell among ``n_reference`` kept reference cells (others for them)."""
    return max(1, min(PROBE_NEIGHBORS, n_reference - 1))


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``z`` (float64)."""
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class ReferenceProbeMixin:
    """Fit, apply, save and load the reference probe (see the module docstring).

    ``probe_`` holds the regression and the reference distances (``None``: no probe),
    ``probe_genes_`` the kept pretrained gene embeddings (``"genes"``: sorted vocabulary ids of
    the reference's genes, ``"table"``: their embeddings).
    """

    probe_: dict[str, Any] | None = None
    probe_genes_: dict[str, np.ndarray] | None = None

    # ------------------------------------------------------------------ fitting
    def _keep_pretrained(self) -> None:
        """Keep the pretrained embeddings of the reference's genes: the probe's, before fine-tuning."""
        genes = np.unique(self._gene_ids_for(self.adata))
        genes = genes[genes >= 0]
        weight = self.module.encoder.embedding.weight.detach()
        table = weight[torch.as_tensor(genes)].cpu().float().numpy()  # as the model keeps them
        self.probe_genes_ = {"genes": genes.astype(np.int64), "table": table}

    def _probe_data(
        self, train_idx: np.ndarray, val_idx: np.ndarray, random_state: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Probe representations of training (at most :data:`PROBE_CELLS`) and validation cells.

        Returns ``(train_rows, train_emb, all_rows, all_emb)``, rows sorted.
        """
        rng = np.random.default_rng(random_state)
        train = np.sort(rng.choice(train_idx, min(len(train_idx), PROBE_CELLS), replace=False))
        rows = np.union1d(train, val_idx)
        emb = self._probe_embeddings(self.adata, rows=rows)  # deterministic: no seed
        return train, emb[np.searchsorted(rows, train)], rows, emb

    def _fit_probe(
        self,
        rows: np.ndarray,
        emb: np.ndarray,
        codes: np.ndarray,
        class_weight: str | None,
        random_state: int = 0,
    ) -> None:
        """Fit the regression on ``emb``, the probe representations of ``rows``, standardised.

        C is chosen by :func:`choose_c` at the first fit and kept when the regression is refitted,
        as is a temperature already fitted. Keeps (up to :data:`PROBE_REFERENCE_CELLS`) of the
        cells to place query cells.
        """
        from sklearn.linear_model import LogisticRegression
        from sklearn.neighbors import NearestNeighbors

        mean, scale = emb.mean(0), float(np.sqrt(emb.var(0).mean() + 1e-5))
        z = (emb - mean) / scale
        if self.probe_ is None:
            c = choose_c(z, codes[rows], class_weight, random_state)
        else:
            c = self.probe_["C"]
        lr = LogisticRegression(C=c, class_weight=class_weight, max_iter=5000)
        with one_blas_thread():  # at most PROBE_CELLS cells: faster with one thread
            lr.fit(z, codes[rows])
        n_classes, d = len(self.classes_), z.shape[1]
        coef = np.zeros((n_classes, d))
        intercept = np.full(n_classes, -1e9)  # classes without training cells never win
        if len(lr.classes_) == 2:  # scikit-learn keeps one row: logit(class 1) - logit(class 0)
            coef[lr.classes_[1]], intercept[lr.classes_[0]] = lr.coef_[0], 0.0
            intercept[lr.classes_[1]] = lr.intercept_[0]
        else:
            coef[lr.classes_], intercept[lr.classes_] = lr.coef_, lr.intercept_
        keep = np.random.default_rng(0).choice(len(z), min(len(z), PROBE_REFERENCE_CELLS),
                                               replace=False)  # fmt: skip
        reference = z[np.sort(keep)]
        k = neighbors(len(reference))
        if len(reference) > 1:
            nn = NearestNeighbors(n_neighbors=k + 1).fit(reference)
            ref_dist = nn.kneighbors(reference)[0][:, 1:].mean(1)
        else:  # one reference cell: nothing to compare with, the probe is used everywhere
            ref_dist = np.array([np.inf])
        temperature = 1.0 if self.probe_ is None else self.probe_["temperature"]
        self.probe_ = {
            "coef": coef, "intercept": intercept, "mean": mean, "scale": scale,
            "reference": reference.astype(np.float32), "reference_distances": ref_dist,
            "temperature": temperature, "C": c,
        }  # fmt: skip

    def _calibrate_with_probe(
        self, train_idx: np.ndarray, val_idx: np.ndarray, labels: np.ndarray,
        class_weight: str | None, random_state: int,
    ) -> None:  # fmt: skip
        """Fit the regression on the training cells, then refit it on every labelled cell.

        In between, the probe's temperature is fitted on the validation cells, and the
        classifier is calibrated and scored with the probe there (``_calibrate``); the refit
        keeps the temperature.
        """
        train, train_emb, rows, emb = self._probe_data(train_idx, val_idx, random_state)
        self._fit_probe(train, train_emb, labels, class_weight, random_state)
        z = (emb[np.searchsorted(rows, val_idx)] - self.probe_["mean"]) / self.probe_["scale"]
        if len(val_idx):  # the probe's temperature, on the validation cells' representations
            from ..train._classify import fit_temperature

            self.probe_["temperature"] = fit_temperature(self._probe_logits(z), labels[val_idx])
        self._calibrate(val_idx, labels, random_state, probe_features=z)
        if len(val_idx):  # without validation cells, ``rows`` are the training cells: fitted
            self._fit_probe(rows, emb, labels, class_weight)

    # ------------------------------------------------------------------ inference
    def _probe_embeddings(
        self, adata: AnnData, *, rows: np.ndarray | None, **kw: Any
    ) -> np.ndarray:
        """Probe representations (:func:`gene_bag`) of the cells ``rows`` of ``adata``, float64.

        Read in chunks of cells (``backed="r"`` too); keywords as :meth:`_by_block`.
        """
        fn = lambda a, **k: self._block_bag(a)  # noqa: E731
        return self._by_block(fn, self.probe_genes_["table"].shape[1], adata, rows, **kw)

    def _block_bag(self, adata: AnnData) -> np.ndarray:
        from ..._core._anndata import check_values, iter_row_chunks

        layer = self.get_setup_arg("layer")
        where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
        ids, g = self._gene_ids_for(adata), self.probe_genes_
        parts = [np.zeros((0, g["table"].shape[1]))]
        for idx, chunk in iter_row_chunks(adata, layer, PROBE_CHUNK):
            check_values(chunk, where, int(idx[0]))
            parts.append(gene_bag(chunk, ids, g["genes"], g["table"],
                                  n_bins=self.module.config.n_bins))  # fmt: skip
        return np.concatenate(parts)

    def _probe_features(self, adata: AnnData, *, rows: np.ndarray | None, **kw: Any) -> np.ndarray:
        """Standardised probe representations, the regression's input."""
        emb = self._probe_embeddings(adata, rows=rows, **kw)
        return (emb - self.probe_["mean"]) / self.probe_["scale"]

    def _probe_logits(self, z: np.ndarray) -> np.ndarray:
        return z @ self.probe_["coef"].T + self.probe_["intercept"]

    def _probe_parts(
        self,
        p_finetuned: np.ndarray,
        adata: AnnData,
        rows: Any,
        *,
        features: np.ndarray | None = None,
        **kw: Any,
    ) -> ProbeParts:
        """``w * p_probe + (1 - w) * p_finetuned`` per cell (module docstring's ``w``), unsmoothed.

        ``features``: the cells' standardised bags (:meth:`_probe_features`), if already
        computed. Without a probe, ``p_finetuned`` alone.
        """
        from sklearn.neighbors import NearestNeighbors

        if self.probe_ is None or len(p_finetuned) == 0:  # no cells: nothing to mix or smooth
            return ProbeParts(p_finetuned)
        z = self._probe_features(adata, rows=rows, **kw) if features is None else features
        p_probe = softmax(self._probe_logits(z) / self.probe_["temperature"])
        reference = self.probe_["reference"].astype(np.float64)
        k = neighbors(len(reference))
        dist = NearestNeighbors(n_neighbors=k).fit(reference).kneighbors(z)[0].mean(1)
        w = probe_weight(dist, self.probe_["reference_distances"])[:, None]
        return ProbeParts(w * p_probe + (1.0 - w) * p_finetuned, p_probe, w, z)

    def _mix_probe(
        self,
        p_finetuned: np.ndarray,
        adata: AnnData,
        rows: Any,
        *,
        features: np.ndarray | None = None,
        smooth_neighbors: int = 1,
        **kw: Any,
    ) -> np.ndarray:
        """:meth:`_probe_parts`, then :func:`smooth_parts` over ``smooth_neighbors`` cells.

        ``smooth_neighbors > 1``: each cell's ``(1 - w)`` share is a kernel mean of the mix
        over its nearest of these cells (``_probe_smooth.smooth_far_cells``).
        """
        parts = self._probe_parts(p_finetuned, adata, rows, features=features, **kw)
        seed = int(kw.get("random_state", 0))
        return smooth_parts(parts, smooth_neighbors, random_state=seed)

    # ------------------------------------------------------------------ save / load
    def save(
        self, dir_path: str | os.PathLike[str], overwrite: bool = False, **kwargs: Any
    ) -> None:
        """Save as :meth:`ScGPT.save <omicformer.scgpt.model.ScGPT.save>`, plus the probe.

        The probe of ``train(probe=True)`` (pretrained gene embeddings, regression, reference
        distances) goes to ``probe.safetensors`` in the same folder.

        Parameters
        ----------
        dir_path
            Folder to write (created if needed).
        overwrite
            Replace a model already saved there (an ensemble's files too).
        **kwargs
            ``save_anndata`` and the AnnData writer's arguments, as
            :meth:`ScGPT.save <omicformer.scgpt.model.ScGPT.save>` takes them.
        """
        super().save(dir_path, overwrite=overwrite, **kwargs)  # type: ignore[misc]

    def _write_folder(self, path: Path, **kwargs: Any) -> None:
        """The model's files (:class:`ScGPT`'s), plus ``probe.safetensors`` if it has a probe."""
        from safetensors.torch import save_file

        super()._write_folder(path, **kwargs)  # type: ignore[misc]
        if self.probe_ is None:
            return
        arrays = {**{k: self.probe_[k] for k in PROBE_ARRAYS},
                  **{k: self.probe_genes_[k] for k in PROBE_GENE_ARRAYS}}  # fmt: skip
        tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
        save_file(tensors, str(path / PROBE_NAME))

    @classmethod
    def load(
        cls, dir_path: str | os.PathLike[str], adata: AnnData | None = None, **scvi_kwargs: Any
    ) -> Any:
        """Load a classifier saved by :meth:`save`, with its probe if it has one.

        Parameters
        ----------
        dir_path
            A folder written by :meth:`save`.
        adata
            AnnData to attach, as :meth:`ScGPT.load <omicformer.scgpt.model.ScGPT.load>`
            takes it; ``None`` attaches the AnnData saved with the model, if any.
        **scvi_kwargs
            Refused, as :meth:`ScGPT.load <omicformer.scgpt.model.ScGPT.load>` refuses them.

        Returns
        -------
        The classifier, ready for ``predict``/``predict_proba``.
        """
        from ..._core._io import load_model_config

        model = super().load(dir_path, adata, **scvi_kwargs)  # type: ignore[misc]
        settings = load_model_config(dir_path).get("model_settings", {})
        model._load_probe(dir_path, settings.get("probe"))
        return model

    def _load_probe(self, dir_path: str | Path, settings: dict[str, Any] | None) -> None:
        from safetensors.torch import load_file

        self.probe_, self.probe_genes_ = None, None
        if not settings:
            return
        path = Path(dir_path).expanduser() / PROBE_NAME
        if not path.is_file():
            msg = (
                f"{dir_path} was saved with a reference probe but has no {PROBE_NAME}: copy the "
                "whole folder that ScGPTClassifier.save wrote, or train the classifier again."
            )
            raise FileNotFoundError(msg)
        tensors = load_file(str(path))
        missing = [k for k in (*PROBE_GENE_ARRAYS, *PROBE_ARRAYS) if k not in tensors]
        if missing:
            msg = (
                f"{path} lacks {missing}: it is incomplete, or holds the probe of an earlier "
                "omicformer version (a copy of the pretrained encoder instead of its gene "
                "embeddings), which this version cannot read. Train the classifier again "
                "(ScGPTClassifier.train, or scgpt.tl.annotate) and save it."
            )
            raise ValueError(msg)
        self.probe_genes_ = {key: tensors[key].numpy() for key in PROBE_GENE_ARRAYS}
        self.probe_ = {key: tensors[key].numpy() for key in PROBE_ARRAYS}
        self.probe_["scale"] = float(settings["scale"])
        self.probe_["temperature"] = float(settings["temperature"])
        self.probe_["C"] = float(settings["C"])

    def _probe_settings(self) -> dict[str, float] | None:
        if self.probe_ is None:
            return None
        return {"scale": float(self.probe_["scale"]),
                "temperature": float(self.probe_["temperature"]),
                "C": float(self.probe_["C"])}  # fmt: skip
