"""The reference probe of :class:`~omicformer.scgpt.model.ScGPTClassifier`.

Fine-tuning a small pretrained encoder on a few hundred reference cells makes it robust to a
query from another experiment, but costs it cells like the reference's own: on 70/30 splits
of ``pbmc68k_reduced`` a logistic regression on the *pretrained* embedding beat the
fine-tuned head by 0.08 macro-F1, while on a query from another experiment it fell 0.2 behind.
The probe keeps both. Before fine-tuning, a copy of the pretrained encoder is kept frozen and
a logistic regression is fitted on its (standardised) embedding of the training cells. A query
cell is then labelled by ``w * p_probe + (1 - w) * p_finetuned``, where ``w`` says whether
the cell lies among the reference cells in the pretrained embedding: ``d``, its mean distance
to its 15 nearest reference cells, is ranked among the same distances of the reference cells
themselves (leave-one-out), giving the conformal p-value ``p = (1 + #{d_ref >= d}) / (n + 1)``,
and ``w = min(1, p / 0.05)``. Cells like the reference's own (``p`` uniform on [0, 1]) get
``w = 1`` for 95% of them; cells of a batch the reference never saw (``p`` near 0) get the
fine-tuned head's probabilities.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

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
#: Inverse regularisation strength of the probe's logistic regression (scikit-learn's C).
PROBE_C = 1.0
#: File of a saved classifier's probe (frozen encoder + regression + reference distances).
PROBE_NAME = "probe.safetensors"
#: The probe's arrays, saved as tensors of that file (its scalars go to the model config).
PROBE_ARRAYS = ("coef", "intercept", "mean", "reference", "reference_distances")


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
    ``probe_module_`` the frozen pretrained encoder.
    """

    probe_: dict[str, Any] | None = None
    probe_module_: Any = None

    # ------------------------------------------------------------------ fitting
    def _keep_pretrained(self) -> None:
        """Freeze a copy of the current (pretrained) encoder: the probe's, before fine-tuning."""
        self.probe_module_ = copy.deepcopy(self.module).eval().requires_grad_(False)

    def _probe_data(
        self, train_idx: np.ndarray, val_idx: np.ndarray, random_state: int, accelerator: str
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Pretrained embeddings of training (at most :data:`PROBE_CELLS`) and validation cells.

        Returns ``(train_rows, train_emb, all_rows, all_emb)``, rows sorted.
        """
        rng = np.random.default_rng(random_state)
        train = np.sort(rng.choice(train_idx, min(len(train_idx), PROBE_CELLS), replace=False))
        rows = np.union1d(train, val_idx)
        device = "cpu" if accelerator == "cpu" else "auto"
        emb = self._probe_embeddings(self.adata, rows=rows, device=device,
                                     random_state=random_state, progress=False)  # fmt: skip
        emb = emb.astype(np.float64)
        return train, emb[np.searchsorted(rows, train)], rows, emb

    def _fit_probe(
        self, rows: np.ndarray, emb: np.ndarray, codes: np.ndarray, class_weight: str | None
    ) -> None:
        """Fit the regression on ``emb``, the pretrained embeddings of ``rows``, standardised.

        Keeps (up to :data:`PROBE_REFERENCE_CELLS`) of them to place query cells, and a
        temperature already fitted.
        """
        from sklearn.linear_model import LogisticRegression
        from sklearn.neighbors import NearestNeighbors

        mean, scale = emb.mean(0), float(np.sqrt(emb.var(0).mean() + 1e-5))
        z = (emb - mean) / scale
        lr = LogisticRegression(C=PROBE_C, class_weight=class_weight, max_iter=5000)
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
            "temperature": temperature,
        }  # fmt: skip

    def _calibrate_with_probe(
        self, train_idx: np.ndarray, val_idx: np.ndarray, labels: np.ndarray,
        class_weight: str | None, random_state: int, accelerator: str,
    ) -> None:  # fmt: skip
        """Fit the regression on the training cells, then refit it on every labelled cell.

        In between, the probe's temperature is fitted on the validation cells, and the
        classifier is calibrated and scored with the probe there (``_calibrate``); the refit
        keeps the temperature.
        """
        train, train_emb, rows, emb = self._probe_data(train_idx, val_idx, random_state,
                                                       accelerator)  # fmt: skip
        self._fit_probe(train, train_emb, labels, class_weight)
        z = (emb[np.searchsorted(rows, val_idx)] - self.probe_["mean"]) / self.probe_["scale"]
        if len(val_idx):  # the probe's temperature, on the validation cells' embeddings
            from ..train._classify import fit_temperature

            self.probe_["temperature"] = fit_temperature(self._probe_logits(z), labels[val_idx])
        self._calibrate(val_idx, labels, random_state, probe_features=z)
        if len(val_idx):  # without validation cells, ``rows`` are the training cells: fitted
            self._fit_probe(rows, emb, labels, class_weight)

    # ------------------------------------------------------------------ inference
    def _probe_embeddings(
        self, adata: AnnData, *, rows: np.ndarray | None, **kw: Any
    ) -> np.ndarray:
        """Embeddings of the frozen pretrained encoder (the fine-tuned model's cell embedding)."""
        fn = lambda a, **k: self._block_embeddings(a, module=self.probe_module_, **k)  # noqa: E731
        return self._by_block(fn, self.module.config.d_model, adata, rows, **kw)

    def _probe_features(self, adata: AnnData, *, rows: np.ndarray | None, **kw: Any) -> np.ndarray:
        """Standardised pretrained embeddings, the regression's input."""
        emb = self._probe_embeddings(adata, rows=rows, **kw).astype(np.float64)
        return (emb - self.probe_["mean"]) / self.probe_["scale"]

    def _probe_logits(self, z: np.ndarray) -> np.ndarray:
        return z @ self.probe_["coef"].T + self.probe_["intercept"]

    def _mix_probe(
        self,
        p_finetuned: np.ndarray,
        adata: AnnData,
        rows: Any,
        *,
        features: np.ndarray | None = None,
        **kw: Any,
    ) -> np.ndarray:
        """``w * p_probe + (1 - w) * p_finetuned`` per cell (the module docstring's ``w``).

        ``features``: the cells' standardised pretrained embeddings, if already computed.
        """
        from sklearn.neighbors import NearestNeighbors

        if self.probe_ is None:
            return p_finetuned
        z = self._probe_features(adata, rows=rows, **kw) if features is None else features
        p_probe = softmax(self._probe_logits(z) / self.probe_["temperature"])
        reference = self.probe_["reference"].astype(np.float64)
        k = neighbors(len(reference))
        dist = NearestNeighbors(n_neighbors=k).fit(reference).kneighbors(z)[0].mean(1)
        w = probe_weight(dist, self.probe_["reference_distances"])[:, None]
        return w * p_probe + (1.0 - w) * p_finetuned

    # ------------------------------------------------------------------ save / load
    def save(
        self, dir_path: str | os.PathLike[str], overwrite: bool = False, **kwargs: Any
    ) -> None:
        """Save as :meth:`ScGPT.save <omicformer.scgpt.model.ScGPT.save>`, plus the probe.

        The probe of ``train(probe=True)`` (frozen encoder, regression, reference distances)
        goes to ``probe.safetensors`` in the same folder.
        """
        from safetensors.torch import save_file

        from ..._core._train import is_global_zero

        super().save(dir_path, overwrite=overwrite, **kwargs)  # type: ignore[misc]
        path = Path(dir_path) / PROBE_NAME
        if not is_global_zero():
            return
        if self.probe_ is None:
            path.unlink(missing_ok=True)  # a probe of an overwritten model must not linger
            return
        tensors = {f"module.{k}": v.detach().cpu().contiguous().clone()
                   for k, v in self.probe_module_.state_dict().items()}  # fmt: skip
        for key in PROBE_ARRAYS:
            tensors[key] = torch.from_numpy(np.ascontiguousarray(self.probe_[key]))
        save_file(tensors, str(path))

    @classmethod
    def load(cls, dir_path: str | os.PathLike[str], adata: AnnData | None = None) -> Any:
        """Load a classifier saved by :meth:`save`, with its probe if it has one."""
        from ..._core._io import load_model_config

        model = super().load(dir_path, adata)  # type: ignore[misc]
        settings = load_model_config(dir_path).get("model_settings", {})
        model._load_probe(dir_path, settings.get("probe"))
        return model

    def _load_probe(self, dir_path: str | Path, settings: dict[str, Any] | None) -> None:
        from safetensors.torch import load_file

        self.probe_, self.probe_module_ = None, None
        if not settings:
            return
        tensors = load_file(str(Path(dir_path) / PROBE_NAME))
        module = copy.deepcopy(self.module)
        module.load_state_dict({k[len("module.") :]: v for k, v in tensors.items()
                                if k.startswith("module.")})  # fmt: skip
        self.probe_module_ = module.eval().requires_grad_(False)
        self.probe_ = {key: tensors[key].numpy() for key in PROBE_ARRAYS}
        self.probe_["scale"] = float(settings["scale"])
        self.probe_["temperature"] = float(settings["temperature"])

    def _probe_settings(self) -> dict[str, float] | None:
        if self.probe_ is None:
            return None
        return {"scale": float(self.probe_["scale"]),
                "temperature": float(self.probe_["temperature"])}  # fmt: skip
