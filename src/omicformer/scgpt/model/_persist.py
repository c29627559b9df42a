"""Saving and loading scGPT model folders: weights (safetensors), config (JSON), ``vocab.json``.

:class:`SaveLoadMixin` gives :class:`~omicformer.scgpt.model.ScGPT` and its task models
``save`` and ``load``; a subclass records its own settings by extending ``_settings`` and
``_restore_settings``. Pretrained starting points (official folders) load through
``ScGPT.load_pretrained`` instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scvi.model.base import BaseModelClass

from omicformer._version import __version__

from ..._core._callbacks import history_from_json, history_to_json
from ..._core._io import (
    check_folder_path,
    environment_versions,
    model_entries,
    save_model_dir,
)
from ..._core._ranks import is_global_zero
from ..._core._staged import staged_folder
from ._io import (
    ADATA_NAME,
    MODEL_NAME,
    MODEL_NAMES,
    VOCAB_NAME,
    jsonable,
    load_module,
    registry_from_json,
    registry_to_json,
    saved_max_len,
    without_gene_names,
)
from ._scvi import check_saved_categories

if TYPE_CHECKING:
    from anndata import AnnData
    from typing_extensions import Self

    from .._vocab import GeneVocab
    from ..module import TransformerModel

#: Registry entry holding the ``setup_anndata`` arguments.
_SETUP = "setup_args"


class SaveLoadMixin:
    """``save``/``load`` of an omicformer scGPT model folder."""

    def save(
        self,
        dir_path: str | Path,
        overwrite: bool = False,
        save_anndata: bool = False,
        **anndata_write_kwargs: Any,
    ) -> None:
        """Save weights (safetensors), config (JSON) and the official ``vocab.json``.

        Under DDP (a script run once per device) only global rank 0 writes, so a training
        script can call ``save`` unguarded. Besides the architecture, setup and history, the
        config records ``train_config`` (the arguments of the last :meth:`train` call) and
        ``versions`` (Python, omicformer, torch, lightning, anndata, scvi-tools, numpy, scipy).

        The save is all or nothing: the files are written aside (a hidden folder inside
        ``dir_path``) and moved in once complete, so a full disk or Ctrl-C part-way leaves
        ``dir_path`` as it was, with the model saved there before, if any.

        Parameters
        ----------
        dir_path
            Folder to write (created if needed). Files of yours in it stay.
        overwrite
            Replace a model already saved there, with its ``adata.h5ad`` (removed without
            ``save_anndata``, so that :meth:`load` does not attach the old model's AnnData).
        save_anndata
            Also write the AnnData as ``adata.h5ad``.
        **anndata_write_kwargs
            Passed to :meth:`anndata.AnnData.write_h5ad` (``compression``, ...), with
            ``save_anndata=True`` only. scvi-tools' ``prefix`` is refused: a folder holds one
            model, under fixed file names.

        Examples
        --------
        >>> model.save("my_scgpt/", overwrite=True)
        >>> scgpt.tl.embed(adata, model="my_scgpt/")
        """
        check_save_kwargs(type(self).__name__, save_anndata, anndata_write_kwargs)
        if not is_global_zero():
            return
        if save_anndata and self.adata is None:
            msg = "save_anndata=True but this model has no AnnData attached."
            raise ValueError(msg)
        path = Path(dir_path).expanduser()
        stale = check_save_target(path, overwrite)
        adata = self.adata if save_anndata else None
        with backed_file_followed(adata, path / ADATA_NAME), staged_folder(path, stale=stale) as st:
            self._write_folder(st, save_anndata=save_anndata, **anndata_write_kwargs)

    def _write_folder(
        self, path: Path, *, save_anndata: bool = False, **anndata_write_kwargs: Any
    ) -> None:
        """Write this model's files into the new, empty folder ``path`` (no checks)."""
        config = {
            "model": _saved_name(type(self)),
            "omicformer_version": __version__,
            "module_config": self.module.config.to_dict(),
            "model_settings": self._settings(),
            "init_params": jsonable(getattr(self, "init_params_", {})),
            "registry": registry_to_json(without_gene_names(self.registry_)),
            "history": history_to_json(self.history_) or None,
            "is_trained": bool(self.is_trained_),
            "train_config": self.train_config_,
            "versions": environment_versions(),
        }
        save_model_dir(path, self.module.state_dict(), config)
        self.vocab.save_json(path / VOCAB_NAME)
        if save_anndata:
            self.adata.write_h5ad(path / ADATA_NAME, **anndata_write_kwargs)

    @classmethod
    def load(cls, dir_path: str | Path, adata: AnnData | None = None, **scvi_kwargs: Any) -> Self:
        """Load a model saved by :meth:`save`.

        Parameters
        ----------
        dir_path
            Folder written by :meth:`save`.
        adata
            AnnData to attach; it is set up with the saved ``setup_anndata`` arguments and
            batch/label categories. ``None`` uses ``adata.h5ad`` in the folder if present,
            else the model has no AnnData (embedding still works with ``adata=``).
        **scvi_kwargs
            scvi-tools' other ``load`` arguments (``accelerator``, ``device``, ``prefix``,
            ``backup_url``): a ``TypeError`` that says why none is needed.

        Raises
        ------
        KeyError
            ``adata.obs`` lacks the saved ``batch_key`` or ``labels_key`` column.
        ValueError
            That column holds categories the saved model was not set up with (or, for the
            batch, missing values): ``load`` cannot add categories. The message names them
            and the known ones; subset the cells, load without ``adata`` and pass it to
            ``get_latent_representation``/``predict``, or train a new model. ``adata`` is
            left unchanged.

        Notes
        -----
        ``model.train_config_`` and ``model.saved_versions_`` hold the training arguments and
        library versions recorded by :meth:`save` (``None`` for folders written before they
        were recorded).

        Examples
        --------
        >>> model = ScGPT.load("my_scgpt/", adata=adata)
        """
        refuse_scvi_load_kwargs(cls.__name__, scvi_kwargs)
        module, vocab, config = load_module(dir_path)
        saved, mine = config.get("model"), _saved_name(cls)
        if saved != mine:  # as scvi-tools: a folder loads into the class that saved it
            msg = (
                f"{dir_path} holds a saved {saved}, not a {mine}: load it with {saved}.load, or "
                f"start a new {cls.__name__} from its weights with "
                f"{cls.__name__}.load_pretrained({str(dir_path)!r}, adata)."
            )
            raise ValueError(msg)
        registry = registry_from_json(config["registry"])
        if adata is None and (Path(dir_path).expanduser() / ADATA_NAME).exists():
            import anndata

            adata = anndata.read_h5ad(Path(dir_path).expanduser() / ADATA_NAME)
        model = cls._from_module(module, vocab, saved_max_len(config, dir_path), adata, registry)
        model._restore_settings(config["model_settings"])
        model.init_params_ = config.get("init_params", {})
        model.history_ = history_from_json(config.get("history")) or None
        model.is_trained_ = bool(config.get("is_trained", False))
        model.train_config_ = config.get("train_config")
        model.saved_versions_ = config.get("versions")
        return model

    def _settings(self) -> dict[str, Any]:
        """What :meth:`save` records besides weights, config and registry (subclasses add)."""
        return {"max_len": self.max_len, "gene_selection": self.gene_selection}

    def _restore_settings(self, settings: dict[str, Any]) -> None:
        """Inverse of :meth:`_settings` after :meth:`load` (``max_len`` is set on creation)."""
        # folders saved before the setting existed were trained with random subsets
        self.gene_selection = str(settings.get("gene_selection", "random"))

    @classmethod
    def _from_module(
        cls,
        module: TransformerModel,
        vocab: GeneVocab,
        max_len: int,
        adata: AnnData | None,
        registry: dict | None,
    ) -> Self:
        """Build an instance around an existing module (no re-initialisation)."""
        if adata is None or registry is None:
            model = cls.__new__(cls)
            BaseModelClass.__init__(model, adata, None if adata is not None else registry)
            model._attach(module, vocab, max_len)
            return model
        # before any setup: a failed transfer would leave code columns behind
        check_saved_categories(adata, registry, cls.__name__)
        obs, uns = set(adata.obs.columns), set(adata.uns.keys())
        try:
            setup = getattr(cls, registry.get("setup_method_name", "setup_anndata"))
            setup(adata, source_registry=registry, **registry[_SETUP])
            model = cls.__new__(cls)
            BaseModelClass.__init__(model, adata, None)
            model._attach(module, vocab, max_len)  # ValueError for too few known genes
        except Exception:  # the columns and keys setup added go again (a view stays a view)
            added = [c for c in adata.obs.columns if c not in obs]
            if added:
                adata.obs.drop(columns=added, inplace=True)
            for key in [k for k in adata.uns.keys() if k not in uns]:
                del adata.uns[key]
            raise
        return model


#: scvi-tools' ``load`` arguments, and why an omicformer folder needs none of them.
_ON_CPU = (
    "the model loads on the CPU; each call that runs it takes its device "
    "(get_latent_representation(device=...), predict(device=...), train(accelerator=...))"
)
_SCVI_LOAD_ARGS = {
    "accelerator": _ON_CPU,
    "device": _ON_CPU,
    "prefix": "a folder holds one model, under fixed file names",
    "backup_url": "nothing is downloaded: pass a local folder",
    "datamodule": "models read their cells from an AnnData (adata=)",
}


def check_save_kwargs(name: str, save_anndata: bool, kwargs: dict[str, Any]) -> None:
    """The keywords of ``save`` besides its own: :meth:`anndata.AnnData.write_h5ad`'s only.

    scvi-tools' ``prefix`` (and ``save_kwargs``, ``legacy_mudata_format``, ``datamodule``) and
    misspelt names were taken for the AnnData's writer and dropped without ``save_anndata``.
    """
    import inspect

    from anndata import AnnData

    if not kwargs:
        return
    if "prefix" in kwargs:
        msg = (
            f"{name}.save(prefix=...) is not supported: an omicformer model folder holds one "
            "model, under fixed file names (as an official scGPT folder). Save each model to "
            "its own folder."
        )
        raise ValueError(msg)
    writer = set(inspect.signature(AnnData.write_h5ad).parameters) - {"self", "filename"}
    unknown = sorted(set(kwargs) - writer)
    if unknown:
        msg = (
            f"{name}.save() got unexpected keyword argument(s) {unknown}: it takes dir_path, "
            "overwrite, save_anndata and, with save_anndata=True, the arguments of "
            f"AnnData.write_h5ad ({', '.join(sorted(writer))})."
        )
        raise TypeError(msg)
    if not save_anndata:
        msg = (
            f"{sorted(kwargs)} are arguments of AnnData.write_h5ad, used only with "
            "save_anndata=True (nothing else is written with them)."
        )
        raise ValueError(msg)


def refuse_scvi_load_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    """``TypeError`` for keywords of ``load`` besides its own, saying why scvi's are not taken."""
    for key in kwargs:
        why = _SCVI_LOAD_ARGS.get(key)
        msg = f"{name}.load() got an unexpected keyword argument {key!r}" + (
            f" (scvi-tools' {key}= is not taken: {why})." if why else "."
        )
        raise TypeError(msg)


def check_save_target(path: Path, overwrite: bool) -> list[str]:
    """Before a model is saved to folder ``path``: refuse a model there without ``overwrite``.

    A model is any of ours (one model, an ensemble, a DNABERT model), an official scGPT
    folder (``args.json``, ``best_model.pt``) or a Hugging Face folder with weights
    (:func:`~omicformer._core._io.model_entries`). Returns the names of its entries: they all
    go when the new model moves in, so that nothing of the old one (its ``adata.h5ad``, its
    probe, an ensemble's members, another kind's vocabulary) is read with the new. A folder
    holding ``ensemble.json`` loads as the ensemble, so it is replaced whole.

    Raises
    ------
    FileExistsError
        ``path`` is a file, or holds a model and ``overwrite`` is False.
    """
    from ._ensemble import ENSEMBLE_NAME

    check_folder_path(path)
    held = model_entries(path)
    if held and not overwrite:
        what = "a saved ensemble" if ENSEMBLE_NAME in held else "a saved model"
        msg = f"{path} already holds {what}; pass overwrite=True to replace it."
        raise FileExistsError(msg)
    return held


@contextlib.contextmanager
def backed_file_followed(adata: AnnData | None, final: Path) -> Iterator[None]:
    """Inside, a staged save may write the backed ``adata``; its file name then stays true.

    anndata points a backed AnnData at the file ``write_h5ad`` wrote, which is the staged copy
    that moves to ``final`` (or, on failure, is deleted): the name follows to ``final``, or goes
    back to what it was.
    """
    if adata is None or not adata.isbacked or adata.is_view:
        yield
        return
    before = adata.file.filename
    try:
        yield
    except BaseException:
        adata.file.filename = before
        raise
    if adata.file.filename != before:
        adata.file.filename = final


def _saved_name(cls: type) -> str:
    """The class name :meth:`save` records: the class's own, or ``"ScGPT"`` for subclasses."""
    return cls.__name__ if cls.__name__ in MODEL_NAMES else MODEL_NAME
