"""Several scGPT classifiers fine-tuned with different seeds, predictions averaged (an ensemble).

Fine-tuning the small default model on a few hundred reference cells lands in a different
place on every seed; on a query from another experiment the mean of two classifiers'
predictions beat one classifier's on average and varied less between seeds over six
classifiers per pairing, though not on another machine's seeds 0-2, and it doubles the
fine-tuning time (``docs/benchmarks.md``, "One classifier again").
Member ``i`` is an :class:`~omicformer.scgpt.model.ScGPTClassifier` trained, and predicting,
with seed ``random_state + 100 * i`` (its own validation cells, minibatches and probe
cross-validation). Their unsmoothed predictions (the mixed probabilities, probe
probabilities, probe weights and bags of ``_probe_smooth.ProbeParts``) are averaged, and only then
smoothed over the query's neighbours, once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from omicformer._version import __version__

from ..._core._callbacks import RUNS_AFTER
from ..._core._checks import check_int
from ..._core._progress import RUN_LABEL
from ..._core._ranks import is_global_zero
from ._classifier import ScGPTClassifier
from ._classifier_infer import LabelPredictionMixin, proba_frame
from ._probe_smooth import SMOOTH_NEIGHBORS, check_smooth_neighbors, mean_parts, smooth_parts

if TYPE_CHECKING:
    import torch
    from anndata import AnnData

#: Member ``i`` trains and predicts with ``random_state + MEMBER_SEED_STEP * i``.
MEMBER_SEED_STEP = 100
#: The file that marks a folder written by :meth:`ScGPTClassifierEnsemble.save`.
ENSEMBLE_NAME = "ensemble.json"


def member_seed(random_state: int, i: int) -> int:
    """Seed of member ``i`` (``random_state`` itself for the first)."""
    return int(random_state) + MEMBER_SEED_STEP * i


def is_ensemble_dir(path: Any) -> bool:
    """Whether ``path`` is a folder written by :meth:`ScGPTClassifierEnsemble.save`."""
    return (
        isinstance(path, str | os.PathLike) and (Path(path).expanduser() / ENSEMBLE_NAME).is_file()
    )


class ScGPTClassifierEnsemble(LabelPredictionMixin):
    """Several :class:`ScGPTClassifier` fine-tuned with different seeds; their mean predicts.

    What :func:`~omicformer.scgpt.tl.annotate` trains with ``n_models=2`` or more. Member
    ``i`` is fine-tuned with seed ``random_state + 100 * i``, so each holds out its own
    validation cells and sees its own minibatches. Prediction averages the members'
    calibrated probabilities, probe weights, probe probabilities and probe representations
    (see :meth:`ScGPTClassifier.predict_proba`), then smooths the cells far from the reference
    once, over the mean. With the default model, labelling one PBMC experiment from another,
    two members raised query macro-F1 over one (means over six classifiers and every pair of
    them: 0.765 to 0.796 from PBMC 3k to ``pbmc_celltypist``, 0.820 to 0.845 from
    ``pbmc68k_reduced``), at twice the fine-tuning time (``docs/benchmarks.md``).

    Parameters
    ----------
    members
        Classifiers of the same classes (in the same order), e.g. from
        :meth:`load_pretrained`.

    Examples
    --------
    >>> from omicformer.scgpt.model import ScGPTClassifier, ScGPTClassifierEnsemble
    >>> ScGPTClassifier.setup_anndata(ref, labels_key="cell_type")
    >>> ens = ScGPTClassifierEnsemble.load_pretrained("default", ref, n_models=2)
    >>> ens.train()
    >>> query.obs["predicted"] = ens.predict(query)
    >>> ens.save("my_ensemble/")
    """

    def __init__(self, members: Sequence[ScGPTClassifier]):
        members = list(members)
        if not members:
            msg = "ScGPTClassifierEnsemble needs at least one ScGPTClassifier."
            raise ValueError(msg)
        for m in members:
            if not isinstance(m, ScGPTClassifier):
                msg = f"members must be ScGPTClassifier models, not {type(m).__name__}."
                raise TypeError(msg)
        first = members[0].classes_
        for i, m in enumerate(members[1:], 1):
            if m.classes_ != first:
                msg = (
                    f"member {i} predicts the classes {m.classes_}, member 0 {first}: the "
                    "members of an ensemble must be set up with the same labels."
                )
                raise ValueError(msg)
        self.members = members
        self.random_state_: int | None = None

    @classmethod
    def load_pretrained(
        cls,
        path: Any,
        adata: AnnData,
        *,
        n_models: int = 2,
        max_len: int | None = None,
        gene_selection: str | None = None,
        drop_batch_layers: bool = False,
    ) -> ScGPTClassifierEnsemble:
        """``n_models`` copies of :meth:`ScGPTClassifier.load_pretrained` (same arguments).

        Parameters
        ----------
        path, adata, max_len, gene_selection, drop_batch_layers
            As :meth:`ScGPTClassifier.load_pretrained`.
        n_models
            Members (each holds a copy of the model's weights).
        """
        n = check_int("n_models", n_models, hint="1 trains a single classifier")
        return cls([ScGPTClassifier.load_pretrained(path, adata, max_len=max_len,
                                                    gene_selection=gene_selection,
                                                    drop_batch_layers=drop_batch_layers)
                    for _ in range(n)])  # fmt: skip

    # ------------------------------------------------------------------ what it is
    @property
    def n_models(self) -> int:
        """Number of members."""
        return len(self.members)

    @property
    def classes_(self) -> list[str]:
        """Class names in output order (the members')."""
        return self.members[0].classes_

    @property
    def is_trained_(self) -> bool:
        """Whether every member is trained."""
        return all(m.is_trained_ for m in self.members)

    @property
    def adata(self) -> AnnData | None:
        """The first member's AnnData."""
        return self.members[0].adata

    @property
    def vocab(self) -> Any:
        """The first member's gene vocabulary (the members start from the same model)."""
        return self.members[0].vocab

    @property
    def gene_selection(self) -> str:
        """The first member's :attr:`ScGPTClassifier.gene_selection`."""
        return self.members[0].gene_selection

    @property
    def has_probe(self) -> bool:
        """Whether every member has the reference probe (``train(probe=True)``)."""
        return all(m.probe_ is not None for m in self.members)

    @property
    def validation_scores_(self) -> dict[str, Any]:
        """Mean accuracy and macro-F1 of the members on their own validation cells.

        Each member's scores (``ScGPTClassifier.validation_scores_``) under ``"member_<i>"``;
        empty when no member held cells out.
        """
        scores = [getattr(m, "validation_scores_", {}) for m in self.members]
        if not any(scores):
            return {}
        out: dict[str, Any] = {
            key: float(np.mean([s[key] for s in scores if key in s]))
            for key in ("accuracy", "macro_f1")
            if any(key in s for s in scores)
        }
        out.update({f"member_{i}": dict(s) for i, s in enumerate(scores)})
        return out

    def __repr__(self) -> str:
        state = "trained" if self.is_trained_ else "not trained"
        return (f"ScGPTClassifierEnsemble of {self.n_models} ScGPTClassifier members, "
                f"{len(self.classes_)} classes, {state}")  # fmt: skip

    # ------------------------------------------------------------------ training
    def train(
        self,
        *,
        random_state: int = 0,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        ckpt_path: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Fine-tune each member with :meth:`ScGPTClassifier.train`, one after the other.

        Parameters
        ----------
        random_state
            Member ``i`` trains with ``random_state + 100 * i``.
        checkpoint_dir
            Member ``i`` keeps its checkpoints under ``checkpoint_dir/member_<i>``.
        ckpt_path
            Not supported here: resume one member with ``members[i].train(ckpt_path=...,
            random_state=random_state + 100 * i)``.
        **kwargs
            The other arguments of :meth:`ScGPTClassifier.train` (the same for every member).
        """
        if ckpt_path is not None:
            msg = (
                "ScGPTClassifierEnsemble.train cannot resume all members from one checkpoint: "
                "resume member i with ensemble.members[i].train(ckpt_path=..., "
                "random_state=random_state + 100 * i)."
            )
            raise ValueError(msg)
        random_state = int(random_state)
        for i, m in enumerate(self.members):
            ckpt = None if checkpoint_dir is None else Path(checkpoint_dir) / f"member_{i}"
            token = RUNS_AFTER.set(len(self.members) - 1 - i)  # for a long CPU run's warning
            named = RUN_LABEL.set(f"classifier {i + 1}/{len(self.members)}")  # its bar's name
            try:
                m.train(random_state=member_seed(random_state, i), checkpoint_dir=ckpt, **kwargs)
            finally:
                RUN_LABEL.reset(named)
                RUNS_AFTER.reset(token)
        self.random_state_ = random_state

    # ------------------------------------------------------------------ inference
    def predict_proba(
        self,
        adata: AnnData | None = None,
        *,
        batch_size: int = 64,
        device: str | torch.device = "auto",
        random_state: int = 0,
        progress: bool = True,
        smooth_neighbors: int = SMOOTH_NEIGHBORS,
    ) -> pd.DataFrame:
        """Mean class probabilities of the members, ``(n_obs, n_classes)``, class names as columns.

        Parameters
        ----------
        adata
            As :meth:`ScGPTClassifier.predict_proba` (``None``: the first member's AnnData).
        batch_size, device, progress
            Inference settings, as :meth:`ScGPTClassifier.predict_proba`.
        random_state
            Member ``i`` predicts with ``random_state + 100 * i`` (the seed of the random
            choices of its input: ties of binned values).
        smooth_neighbors
            As :meth:`ScGPTClassifier.predict_proba`, applied once to the members' mean: the
            far cells' share that is not the probe's becomes a kernel mean of the mean mixed
            prediction of their ``smooth_neighbors`` nearest cells of ``adata`` in the mean
            probe representation. ``1``: each cell on its own.

        Raises
        ------
        RuntimeError
            A member is not trained: call :meth:`train` first.
        """
        self._require_trained()
        adata = self.adata if adata is None else adata
        if adata is None:
            msg = "This ensemble has no AnnData attached: pass adata=."
            raise ValueError(msg)
        return self._proba(adata, batch_size=batch_size, device=device,
                           random_state=random_state, progress=progress,
                           smooth_neighbors=smooth_neighbors)  # fmt: skip

    def _proba(
        self,
        adata: AnnData,
        *,
        rows: np.ndarray | None = None,
        smooth_neighbors: int = SMOOTH_NEIGHBORS,
        random_state: int = 0,
        **kwargs: Any,
    ) -> pd.DataFrame:
        """:meth:`predict_proba` of the cells ``rows`` of ``adata`` (``None``: all)."""
        k = check_smooth_neighbors(smooth_neighbors)
        parts = [m._parts(adata, rows=rows, random_state=member_seed(random_state, i), **kwargs)
                 for i, m in enumerate(self.members)]  # fmt: skip
        p = smooth_parts(mean_parts(parts), k, random_state=random_state)
        return proba_frame(p, adata, rows, self.classes_)

    # ------------------------------------------------------------------ save / load
    def save(
        self,
        dir_path: str | os.PathLike[str],
        overwrite: bool = False,
        save_anndata: bool = False,
        **anndata_write_kwargs: Any,
    ) -> None:
        """Save every member (:meth:`ScGPTClassifier.save`) to ``dir_path/member_<i>``.

        ``dir_path/ensemble.json`` lists them. Under DDP only global rank 0 writes.

        All or nothing, as :meth:`ScGPT.save <omicformer.scgpt.model.ScGPT.save>`: a failed
        or interrupted save leaves the folder as it was, never a mix of two ensembles.

        Parameters
        ----------
        dir_path
            Folder to write (created if needed).
        overwrite
            Replace an ensemble (or model) already saved there.
        save_anndata
            Also write the AnnData, once, as ``member_0/adata.h5ad``.
        **anndata_write_kwargs
            Passed to :meth:`anndata.AnnData.write_h5ad`, with ``save_anndata=True`` only.
        """
        from ..._core._staged import staged_folder
        from ._io import ADATA_NAME
        from ._persist import backed_file_followed, check_save_kwargs, check_save_target

        check_save_kwargs(type(self).__name__, save_anndata, anndata_write_kwargs)
        if not is_global_zero():
            return
        if save_anndata and self.members[0].adata is None:
            msg = "save_anndata=True but this ensemble has no AnnData attached."
            raise ValueError(msg)
        path = Path(dir_path).expanduser()
        stale = check_save_target(path, overwrite)
        names = [f"member_{i}" for i in range(self.n_models)]
        first = (self.members[0].adata if save_anndata else None), path / names[0] / ADATA_NAME
        with backed_file_followed(*first), staged_folder(path, stale=stale) as stage:
            for i, (name, m) in enumerate(zip(names, self.members, strict=True)):
                (stage / name).mkdir()
                m._write_folder(stage / name, save_anndata=save_anndata and i == 0,
                                **anndata_write_kwargs)  # fmt: skip
            config = {"model": type(self).__name__, "omicformer_version": __version__,
                      "members": names, "random_state": self.random_state_}  # fmt: skip
            (stage / ENSEMBLE_NAME).write_text(json.dumps(config, indent=2, sort_keys=True))

    @classmethod
    def load(
        cls, dir_path: str | os.PathLike[str], adata: AnnData | None = None, **scvi_kwargs: Any
    ) -> ScGPTClassifierEnsemble:
        """Load an ensemble saved by :meth:`save`.

        Parameters
        ----------
        dir_path
            Folder written by :meth:`save`.
        adata
            AnnData to attach to every member, as :meth:`ScGPTClassifier.load`; ``None``: the
            saved ``member_0/adata.h5ad`` if there is one.
        **scvi_kwargs
            Refused, as :meth:`ScGPT.load <omicformer.scgpt.model.ScGPT.load>` refuses them.
        """
        from ._persist import refuse_scvi_load_kwargs

        refuse_scvi_load_kwargs(cls.__name__, scvi_kwargs)
        if not is_ensemble_dir(dir_path):
            msg = (
                f"{dir_path} has no {ENSEMBLE_NAME}: it is not a folder written by "
                "ScGPTClassifierEnsemble.save (a single classifier's folder loads with "
                "ScGPTClassifier.load)."
            )
            raise FileNotFoundError(msg)
        path = Path(dir_path).expanduser()
        members: list[ScGPTClassifier] = []
        for name in _member_names(path):
            shared = adata if adata is not None or not members else members[0].adata
            members.append(ScGPTClassifier.load(path / name, shared))
        ens = cls(members)
        ens.random_state_ = json.loads((path / ENSEMBLE_NAME).read_text()).get("random_state")
        return ens


def _member_names(path: Path) -> list[str]:
    names = json.loads((path / ENSEMBLE_NAME).read_text()).get("members")
    if not names or not all(isinstance(n, str) and n.startswith("member_") for n in names):
        msg = f"{path / ENSEMBLE_NAME} lists no members: the folder is incomplete; save it again."
        raise ValueError(msg)
    return names
