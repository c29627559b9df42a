"""What scvi-tools' :class:`~scvi.model.base.BaseModelClass` assumes and our models do differently.

Inherited methods that read scvi's pickled ``model.pt`` or need a count likelihood either work
on our folders (``load_registry``, ``view_setup_args``), delegate to the AnnData manager where
the inherited version fails (``view_registry``, ``update_setup_method_args``, broken in
scvi-tools 1.4 itself: they read ``self._registry``), or raise a clear error saying what to use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scvi.data import AnnDataManager
from scvi.data.fields import CategoricalObsField, LayerField

from ..._core._anndata import missing_texts, warn_batch_texts
from ..._core._warnings import warn_user
from ._io import registry_from_json

if TYPE_CHECKING:
    from anndata import AnnData


class ObsCodesField(CategoricalObsField):
    """scvi-tools' categorical ``obs`` field, registered with NumPy and without pandas' index.

    Registers the same state as :class:`~scvi.data.fields.CategoricalObsField` (the sorted
    categories as ``categorical_mapping``, integer codes in ``obs["_scvi_<key>"]``), but codes
    the column as a NumPy array: scvi-tools codes a pandas Series, which makes pandas build a
    hash table of every cell name (32 bytes per cell, kept with ``obs``; 32 MiB for a 1M-cell
    backed atlas). With ``allow_missing``, missing values (NaN; also empty labels and the
    texts ``"nan"``, ``"<NA>"``, ``"None"``, with a warning) get code ``-1`` and no category
    (scvi-tools refuses them), e.g. the unlabelled cells of a reference whose other cells are
    predicted (``tl.annotate(adata, reference=None)``): a backed file can then be streamed
    whole, and code ``-1`` keeps those cells out of training.
    """

    def __init__(self, registry_key: str, attr_key: str | None, *, allow_missing: bool = False):
        super().__init__(registry_key, attr_key)
        self.allow_missing = allow_missing

    def register_field(self, adata: Any) -> dict:
        """Register the column: categories of its values, ``-1`` for missing ones if allowed."""
        if self.is_default:
            self._setup_default_attr(adata)
        self.validate_field(adata)
        column = adata.obs[self._original_attr_key]
        if isinstance(column.dtype, pd.CategoricalDtype):  # its categories, unused ones too
            labels = column.array
        else:
            labels = pd.Categorical(plain_values(column))
        if self.allow_missing:  # "", "nan", "<NA>", "None": missing, as in the tl functions
            blank = missing_texts(pd.Series(labels.categories, dtype=object))
            if blank.any():
                n = int(np.isin(labels.codes, np.flatnonzero(blank)).sum())
                _warn_read_as_missing(self._original_attr_key, n)
                labels = labels.remove_categories(labels.categories[blank])
        if not self.allow_missing and (labels.codes < 0).any():
            msg = (
                f"adata.obs[{self._original_attr_key!r}] has missing values; fill them (every cell "
                "needs a value here)."
            )
            raise ValueError(msg)
        if not self.allow_missing and self.registry_key == "batch":  # "nan": as tl.integrate
            warn_batch_texts(column, self._original_attr_key, "one batch of their own")
        adata.obs[self.attr_key] = np.asarray(labels.codes)
        return {
            self.CATEGORICAL_MAPPING_KEY: labels.categories.to_numpy(copy=True),
            self.ORIGINAL_ATTR_KEY: self._original_attr_key,
        }

    def transfer_field(self, state_registry: dict, adata_target: Any, **kwargs: Any) -> dict:
        """Code the column with the saved categories (a model's ``load`` onto new AnnData).

        Categories the saved registry lacks raise the error of :func:`check_known_categories`
        (scvi-tools' names an ``extend_categories`` option our ``load`` does not have); with
        ``allow_missing``, missing values get code ``-1`` (scvi-tools' transfer fails on them).
        """
        if self.is_default:
            self._setup_default_attr(adata_target)
        self.validate_field(adata_target)
        mapping = np.asarray(state_registry[self.CATEGORICAL_MAPPING_KEY])
        column = pd.Series(plain_values(adata_target.obs[self._original_attr_key]), dtype=object)
        if self.allow_missing:  # missing as at the setup: "", "nan", "<NA>", "None"
            blank = missing_texts(column, known=mapping)
            _warn_read_as_missing(self._original_attr_key, int(blank.sum()))
            column = column.mask(blank)
        if not self.is_default:
            check_known_categories(column, mapping, self._original_attr_key, self.registry_key,
                                   allow_missing=self.allow_missing)  # fmt: skip
        codes = pd.Categorical(column.to_numpy(), categories=pd.Index(mapping)).codes
        adata_target.obs[self.attr_key] = np.asarray(codes)
        return {
            self.CATEGORICAL_MAPPING_KEY: mapping.copy(),
            self.ORIGINAL_ATTR_KEY: self._original_attr_key,
        }


def plain_values(column: pd.Series) -> np.ndarray:
    """The values of an ``obs`` column as NumPy holds them, a missing one as NaN.

    pandas' nullable columns (``Int64``, ``boolean``, ``string``) become objects of their
    values: ``Int64`` with ``pd.NA`` would otherwise become floats, and ``1`` the label
    ``"1.0"`` (a plain ``int64`` column, or ``tl.annotate``, gives ``"1"``).
    """
    if pd.api.types.is_extension_array_dtype(column.dtype) and not isinstance(
        column.dtype, pd.CategoricalDtype
    ):
        return column.to_numpy(dtype=object, na_value=np.nan)
    return column.to_numpy()


def _warn_read_as_missing(key: str, n: int) -> None:
    """Say that ``n`` cells' labels in ``obs[key]`` are read as missing (nothing when 0)."""
    if n:
        warn_user(
            f"adata.obs[{key!r}]: {n} cells have an empty label or the text of a missing value "
            "(as .astype(str) writes it); they are read as missing (unlabelled). Rename that "
            "label if it is a real one."
        )


#: The ``setup_anndata`` argument naming the ``obs`` column of each categorical field.
_CATEGORICAL_ARGS = {"batch": "batch_key", "labels": "labels_key", "conditions": "condition_key"}


def check_known_categories(
    column: pd.Series,
    mapping: np.ndarray,
    name: str,
    registry_key: str,
    *,
    allow_missing: bool = False,
    model: str | None = None,
) -> None:
    """``ValueError`` when ``column`` holds values outside the saved categories ``mapping``.

    Names the column, the unseen categories (the first 5), the known ones and what to do.
    Missing values (NaN) are unseen unless ``allow_missing``. ``model``: the class name when
    ``load`` checks a saved registry; ``None`` when a set-up model is handed new cells
    (``model.adata = ...``), where the class is not known and ``load`` is not involved.
    """
    subject = f"the saved {model}" if model else "this model"
    values = pd.Series(plain_values(column), dtype=object)
    if allow_missing:
        values = values.mask(missing_texts(values, known=mapping))
    missing = values.isna()
    if missing.any() and not allow_missing:
        msg = (
            f"adata.obs[{name!r}] ({_CATEGORICAL_ARGS.get(registry_key, registry_key)}) has "
            f"{int(missing.sum())} missing values; {subject} needs a category for every cell "
            f"here (known: {_preview(mapping, 10)}). Fill them, or subset the cells that have one."
        )
        raise ValueError(msg)
    present = pd.unique(values[~missing])
    unseen = [v for v, i in zip(present, pd.Index(mapping).get_indexer(present), strict=True)
              if i < 0]  # fmt: skip
    if not unseen:
        return
    arg = _CATEGORICAL_ARGS.get(registry_key, registry_key)
    batch = registry_key == "batch"
    what = ("batch" if len(unseen) == 1 else "batches") if batch else (
        "label" if len(unseen) == 1 else "labels")  # fmt: skip
    # Where the cells are not the model's own: load without them, or keep the model's AnnData.
    elsewhere = (
        f"load without adata ({model}.load(path)) and" if model else "keep the model's AnnData and"
    )
    if registry_key == "conditions":
        what = "condition" if len(unseen) == 1 else "conditions"
        why = "the conditions of the screen it was trained on"
        other = (
            f"or {elsewhere} pass adata= to predict, which reads the control cells of any screen"
        )
    elif batch:
        why = "its batch-dependent layers (DSBN, batch embeddings) exist only for those"
        other = (
            f"or {elsewhere} pass adata= to get_latent_representation, which reads no batches "
            "unless the model has batch-dependent layers"
        )
    else:
        why = "its cell-type outputs are those labels"
        other = (
            f"or set the unknown labels missing (NaN); or {elsewhere} pass adata= to "
            "get_latent_representation / predict, which read no labels"
        )
    cannot = "load() cannot add categories" if model else "a set-up model cannot add categories"
    msg = (
        f"adata.obs[{name!r}] ({arg}) has {len(unseen)} {what} that {subject} was not set up "
        f"with: {_preview(sorted(map(str, unseen)), 5)}. It knows {len(mapping)}: "
        f"{_preview(mapping, 10)} ({why}), and {cannot}. Subset the cells to the known ones "
        f"(adata[adata.obs[{name!r}].isin(known)].copy()); {other}; or train a new "
        f"{model or 'model'} on these data."
    )
    raise ValueError(msg)


def check_saved_categories(adata: Any, registry: dict, model: str) -> None:
    """Check ``adata`` against a saved registry's batch and label categories, before setup.

    ``KeyError`` for a registered column that ``adata.obs`` lacks, ``ValueError`` (see
    :func:`check_known_categories`) for categories the saved model does not know; ``adata`` is
    not changed. ``model``: the class name, for the messages.
    """
    setup = registry.get("setup_args", {})
    fields = registry.get("field_registries", {})
    for kind, arg in _CATEGORICAL_ARGS.items():
        key = "labels" if kind == "conditions" else kind  # ScGPTPerturbation's labels field
        name = setup.get(arg)
        if name is None or key not in fields:
            continue
        if name not in adata.obs.columns:
            msg = (
                f"adata.obs has no column {name!r}, which the saved {model} was set up with "
                f"({arg}={name!r}; columns: {list(adata.obs.columns)[:20]}). Add it, or load "
                f"without adata ({model}.load(path)) and pass adata= to "
                "get_latent_representation / predict."
            )
            raise KeyError(msg)
        mapping = np.asarray(fields[key]["state_registry"]["categorical_mapping"])
        check_known_categories(adata.obs[name], mapping, name, kind,
                               allow_missing=kind == "labels", model=model)  # fmt: skip


def cells_to_read(model: Any, adata: AnnData | None) -> AnnData:
    """``adata`` or ``model``'s own (``ValueError``: neither), holding the setup layer.

    A model loaded without AnnData has none; a query without the layer the model was set up
    to read gets a ``KeyError`` that says to add it (inference takes no ``layer=``).
    """
    from ..._core._anndata import check_layer

    name = type(model).__name__
    adata = model.adata if adata is None else adata
    if adata is None:  # loaded without one
        msg = f"This {name} has no AnnData attached; pass adata=."
        raise ValueError(msg)
    layer = model.get_setup_arg("layer")
    check_layer(adata, layer, fix=(
        f"this {name} was set up with layer={layer!r} and reads it from every AnnData: add "
        f"it, adata.layers[{layer!r}] = ..."
    ))  # fmt: skip
    return adata


def init_params(init: Any, scope: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """scvi-tools' ``init_params_`` record of a call of ``init`` (``{"kwargs", "non_kwargs"}``).

    scvi's ``_get_init_params`` reads the signature of ``type(self).__init__``: that of a task
    model (``adata, **kwargs``) kept none of :class:`ScGPT`'s arguments.
    """
    import inspect

    own = inspect.signature(init).parameters
    kept = {k: v for k, v in scope.items() if k in own and k not in ("self", "adata")}
    return {"kwargs": {}, "non_kwargs": kept}


def require_training_cells(model: Any) -> None:
    """``ValueError`` for a model loaded without AnnData: it has no cells to train on."""
    if model.adata is None:
        name = type(model).__name__
        msg = f"This {name} has no AnnData; load it with {name}.load(path, adata=...) to train."
        raise ValueError(msg)


def forget_scvi_setup(adata: AnnData) -> None:
    """Remove the scvi-tools setup ids a copy of a set-up AnnData inherits (in place).

    scvi-tools keeps the setup of an AnnData under the id in its ``uns``; a copy carries that
    id, so setting the copy up again would replace the registration of the AnnData it was
    copied from (whose models then refuse it: "Did you make a copy?").
    """
    from scvi.data._constants import _MANAGER_UUID_KEY, _SCVI_UUID_KEY

    for key in (_SCVI_UUID_KEY, _MANAGER_UUID_KEY):
        adata.uns.pop(key, None)


def _preview(values: Any, n: int) -> str:
    """The first ``n`` of ``values`` as a list, with how many more there are."""
    values = [str(v) for v in values]
    more = f" and {len(values) - n} more" if len(values) > n else ""
    return f"{values[:n]}{more}"


class GeneLayerField(LayerField):
    """Expression layer whose genes are matched to the vocabulary by name.

    scvi's ``LayerField`` refuses to transfer a setup to AnnData with another number of genes;
    scGPT reads genes by symbol, so any gene set is fine.
    """

    def transfer_field(self, state_registry: dict, adata_target: Any, **kwargs: Any) -> dict:
        return self.register_field(adata_target)


class ScviAdapterMixin:
    """scvi-tools methods adapted to omicformer model folders and scGPT's outputs."""

    @staticmethod
    def load_registry(dir_path: str | Path, prefix: str | None = None) -> dict:
        """The scvi-tools registry saved with a model by ``save``.

        Parameters
        ----------
        dir_path
            Folder written by ``save``.
        prefix
            Not used (our folders have fixed file names); accepted for scvi-tools compatibility.
        """
        from ..._core._io import load_model_config

        return registry_from_json(load_model_config(dir_path)["registry"])

    @staticmethod
    def view_setup_args(dir_path: str | Path, prefix: str | None = None) -> None:
        """Print the ``setup_anndata`` arguments of a model saved by ``save``.

        Parameters
        ----------
        dir_path
            Folder written by ``save``.
        prefix
            Not used (our folders have fixed file names); accepted for scvi-tools compatibility.

        Examples
        --------
        >>> ScGPT.view_setup_args("my_scgpt/")  # doctest: +SKIP
        """
        AnnDataManager.view_setup_method_args(ScviAdapterMixin.load_registry(dir_path, prefix))

    def get_normalized_expression(self, *args: Any, **kwargs: Any) -> None:
        """Not available: scGPT has no library-size-normalised generative likelihood.

        Raises
        ------
        NotImplementedError
            Always, naming what to use instead.
        """
        msg = (
            "ScGPT does not model normalised expression (no count likelihood as scVI). Use "
            "get_latent_representation() for cell embeddings, or scanpy "
            "(sc.pp.normalize_total + sc.pp.log1p) for normalised expression."
        )
        raise NotImplementedError(msg)

    @classmethod
    def convert_legacy_save(cls, *args: Any, **kwargs: Any) -> None:
        """Not needed: :meth:`save` folders have one format (safetensors + JSON).

        Raises
        ------
        NotImplementedError
            Always.
        """
        msg = "ScGPT folders need no conversion; load them with ScGPT.load(path, adata=...)."
        raise NotImplementedError(msg)

    def differential_abundance(self, *args: Any, **kwargs: Any) -> None:
        """Not available on ScGPT.

        Raises
        ------
        NotImplementedError
            Always, naming what to use instead.
        """
        msg = (
            "ScGPT has no differential abundance test; compute it on the embedding, e.g. "
            "sc.pp.neighbors(adata, use_rep='X_scgpt') followed by a Milo-style test (pertpy)."
        )
        raise NotImplementedError(msg)

    def view_registry(self, hide_state_registries: bool = False) -> None:
        """Print a summary of the registry (as :meth:`scvi.data.AnnDataManager.view_registry`).

        A model loaded without AnnData prints the ``setup_anndata`` arguments it was saved
        with.

        Parameters
        ----------
        hide_state_registries
            Print a shortened summary without each field's state registry.
        """
        if self.adata_manager is None:
            self._view_setup_args()
            return
        self.adata_manager.view_registry(hide_state_registries=hide_state_registries)

    def view_anndata_setup(
        self, adata: AnnData | None = None, hide_state_registries: bool = False
    ) -> None:
        """Print the setup of ``adata`` (default: the model's AnnData), as scvi-tools does.

        A model loaded without AnnData, asked for its own, prints the ``setup_anndata``
        arguments it was saved with.

        Parameters
        ----------
        adata
            An AnnData set up for this model; ``None``: the model's own.
        hide_state_registries
            Print a shortened summary without each field's state registry.
        """
        if self.adata_manager is not None:
            super().view_anndata_setup(adata, hide_state_registries)  # type: ignore[misc]
        elif adata is None:
            self._view_setup_args()
        else:  # no manager of this model's own: the one setup_anndata made for adata
            manager = type(self)._get_most_recent_anndata_manager(adata, required=True)
            manager.view_registry(hide_state_registries=hide_state_registries)

    def _view_setup_args(self) -> None:
        import rich

        AnnDataManager.view_setup_method_args(self.registry_)
        rich.print(
            f"No AnnData is attached to this {type(self).__name__} (loaded without one): pass "
            "one, view_anndata_setup(adata), to see its fields."
        )

    def update_setup_method_args(self, setup_method_args: dict) -> None:
        """Update the stored ``setup_anndata`` arguments of this model's registry.

        Parameters
        ----------
        setup_method_args
            Keyword arguments of ``setup_anndata`` whose recorded values are replaced.
        """
        self.registry_["setup_args"].update(setup_method_args)
