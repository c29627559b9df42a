"""Helpers shared by the DNABERT tools: AnnData/MuData targets and region lists."""

from __future__ import annotations

import os
import sys
from typing import Any

from .._genome import Genome


def is_mudata(data: Any) -> bool:
    """Whether ``data`` is a :class:`mudata.MuData` (mudata is only looked up if imported)."""
    mudata = sys.modules.get("mudata")
    return mudata is not None and isinstance(data, mudata.MuData)


def is_anndata(data: Any) -> bool:
    """Whether ``data`` is an AnnData or a MuData."""
    if is_mudata(data):
        return True
    from anndata import AnnData

    return isinstance(data, AnnData)


def modality(data: Any, mod: str):
    """The AnnData to work on: ``data`` itself, or ``data.mod[mod]`` for a MuData."""
    if not is_mudata(data):
        return data
    if mod not in data.mod:
        msg = f"mod={mod!r} is not a modality of this MuData (it has {list(data.mod)})."
        raise KeyError(msg)
    return data.mod[mod]


def var_regions(adata: Any, region_key: str | None) -> list[str]:
    """Region strings of ``adata``: its ``var_names`` or the ``var[region_key]`` column."""
    if region_key is None:
        return [str(r) for r in adata.var_names]
    if region_key not in adata.var.columns:
        msg = (
            f"region_key={region_key!r} is not a column of adata.var (columns: "
            f"{list(adata.var.columns)[:20]}); pass region_key=None to use var_names."
        )
        raise KeyError(msg)
    column = adata.var[region_key]
    missing = column.isna().to_numpy()
    if missing.any():  # str() would make them 'nan'/'None', "could not parse"
        msg = (
            f"adata.var[{region_key!r}] has no region for {int(missing.sum())} of "
            f"{len(column)} entries (e.g. {str(adata.var_names[missing][0])!r}); fill them in "
            "or subset adata to the entries with a region."
        )
        raise ValueError(msg)
    return [str(r) for r in column]


def describe(value: Any) -> str:
    """A JSON-friendly description of a model or FASTA argument for ``uns[...]['params']``."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, os.PathLike):
        return str(value)
    if isinstance(value, Genome):
        return str(value.path)
    return type(value).__name__


def prob_column(key_added: str, label: Any) -> str:
    """The column holding class ``label``'s probability: ``f"{key_added}_prob_{label}"``.

    A ``/`` in the label is written ``_``: ``.h5ad`` files warn of it in a column name and
    ``.zarr`` stores refuse it (``"TF/other"`` → ``"dnabert_prob_TF_other"``).
    """
    return f"{key_added}_prob_{str(label).replace('/', '_')}"


def predicted_labels(adata: Any, key_added: str) -> list[str] | None:
    """Class labels that ``tl.predict(..., key_added=key_added)`` last wrote into ``adata``.

    Read from ``adata.uns["dnabert"][key_added]["params"]["labels"]``; ``None`` when no call
    of ``tl.predict`` is recorded there (never run, or its ``uns`` entry was removed).
    """
    entry = adata.uns.get("dnabert", {})
    entry = entry.get(key_added) if isinstance(entry, dict) else None
    params = entry.get("params") if isinstance(entry, dict) else None
    labels = params.get("labels") if isinstance(params, dict) else None
    if labels is None or isinstance(labels, str):
        return None
    return [str(label) for label in labels]
