"""What scvi-tools' :class:`~scvi.model.base.BaseModelClass` assumes and our models do differently.

Inherited methods that read scvi's pickled ``model.pt`` or need a count likelihood either work
on our folders (``load_registry``, ``view_setup_args``), delegate to the AnnData manager where
the inherited version fails (``view_registry``, ``update_setup_method_args``, broken in
scvi-tools 1.4 itself: they read ``self._registry``), or raise a clear error saying what to use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scvi.data import AnnDataManager
from scvi.data.fields import CategoricalObsField

from ._io import registry_from_json


class LabelsObsField(CategoricalObsField):
    """scvi-tools' categorical ``obs`` field, where cells may lack a label (NaN: code ``-1``).

    scvi-tools refuses missing categories; a reference whose unlabelled cells are predicted
    (``tl.annotate(adata, reference=None)``) keeps them in the registered AnnData, so that a
    backed file can be streamed whole: their code ``-1`` excludes them from training. Without
    missing values the field registers exactly as :class:`~scvi.data.fields.CategoricalObsField`.
    """

    def register_field(self, adata: Any) -> dict:
        """Register the labels: categories of the non-missing values, ``-1`` for missing."""
        if self.is_default or adata.obs[self._original_attr_key].notna().all():
            return super().register_field(adata)
        self.validate_field(adata)
        labels = adata.obs[self._original_attr_key].astype("category")
        adata.obs[self.attr_key] = labels.cat.codes.to_numpy()
        return {
            self.CATEGORICAL_MAPPING_KEY: labels.cat.categories.to_numpy(copy=True),
            self.ORIGINAL_ATTR_KEY: self._original_attr_key,
        }


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

        Parameters
        ----------
        hide_state_registries
            Print a shortened summary without each field's state registry.
        """
        self.adata_manager.view_registry(hide_state_registries=hide_state_registries)

    def update_setup_method_args(self, setup_method_args: dict) -> None:
        """Update the stored ``setup_anndata`` arguments of this model's registry.

        Parameters
        ----------
        setup_method_args
            Keyword arguments of ``setup_anndata`` whose recorded values are replaced.
        """
        self.registry_["setup_args"].update(setup_method_args)
