"""``dnabert.tl.embed_regions``: DNABERT embeddings of the regions of a peak-by-cell AnnData."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..._core._anndata import check_backed_writable, check_uns
from ..._core._checks import check_key
from ..._core._deprecation import formerly_positional
from .._genome import Genome, as_genome, fetch_sequences
from ._common import describe, modality, var_regions

if TYPE_CHECKING:
    import torch
    from anndata import AnnData

    from ..model import DNABert


def _is_model(value: Any) -> bool:
    """Whether ``value`` is a model: ``"default"``, a folder or a DNABert (never a FASTA file)."""
    if isinstance(value, str | os.PathLike):
        return value == "default" or Path(value).expanduser().is_dir()
    from ..model import DNABert

    return isinstance(value, DNABert)


def _model_second(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Read ``embed_regions(adata, model)`` as the new order, anything else as the old one.

    The old call ``embed_regions(adata, fasta, model)`` keeps working, with a ``FutureWarning``
    (:func:`~omicformer._core._deprecation.formerly_positional`), when the second positional
    argument is not a model; a model there (``"default"``, a folder, a DNABert) is ``model``.
    """
    old_order = formerly_positional("fasta", "model")(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if len(args) > 1 and _is_model(args[1]):
            if len(args) > 2:
                msg = (
                    f"embed_regions() takes adata and model by position, got {len(args)} "
                    "positional arguments; pass fasta= and the others by keyword."
                )
                raise TypeError(msg)
            return fn(*args, **kwargs)
        return old_order(*args, **kwargs)

    return wrapper


@_model_second
def embed_regions(
    adata: AnnData,
    model: DNABert | str | os.PathLike[str] = "default",
    *,
    fasta: str | os.PathLike[str] | Genome | None = None,
    key_added: str = "X_dnabert",
    region_key: str | None = None,
    mod: str = "atac",
    pooling: str = "mean",
    reverse_complement: bool = False,
    window_overlap: int | None = None,
    batch_size: int = 64,
    device: str | torch.device = "auto",
    progress: bool = True,
    copy: bool = False,
) -> AnnData | None:
    """Embed each genomic region (variable) of an AnnData from its DNA sequence with DNABERT.

    Regions are read from ``var_names`` (``chr1:100-600``, ``chr1-100-600``, ``chr1_100_600``;
    0-based half-open like BED; optional strand suffix ``:-`` reverse-complements) or from a
    ``var`` column, their sequences fetched from ``fasta``, and embedded by ``model``. Regions
    longer than the model window are split into overlapping windows and pooled. Everything is
    checked (region syntax, chromosomes, bounds, bases) before the model runs or ``adata``
    changes.

    Parameters
    ----------
    adata
        Peak-by-cell AnnData (cells x regions), or a MuData (the ``mod`` modality is used).
    model
        ``"default"`` (the small k=6 DNABERT shipped with omicformer), a folder (official
        DNABERT or :meth:`~omicformer.dnabert.model.DNABert.save`), or a
        :class:`~omicformer.dnabert.model.DNABert`.
    fasta
        Genome FASTA (plain, bgzip or gzip) or a :class:`~omicformer.dnabert.pp.Genome`;
        required, keyword-only, as in :func:`~omicformer.dnabert.tl.predict`
        (``embed_regions(adata, "genome.fa")`` still works in this release, with a
        ``FutureWarning``, when the second argument is a FASTA file and not a model).
    key_added
        ``adata.varm`` key for the embeddings.
    region_key
        ``var`` column with the region strings; ``None`` uses ``var_names``.
    mod
        Modality of a MuData to embed.
    pooling
        ``"mean"`` over k-mer tokens or ``"cls"``.
    reverse_complement
        Average the embeddings of both strands.
    window_overlap
        Overlap in bases of windows of long regions (default a quarter window).
    batch_size, device, progress
        Inference settings (``device="auto"`` picks CUDA, then MPS, then CPU).
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    ``None``, or the modified copy if ``copy=True``. Sets the following fields:

    ``adata.varm[key_added]``
        Region embeddings, :class:`numpy.ndarray` of shape ``(n_vars, d_model)``.
    ``adata.uns["dnabert"][key_added]["params"]``
        Parameters of the call (:class:`dict`).

    Examples
    --------
    >>> from omicformer import dnabert
    >>> dnabert.tl.embed_regions(atac, fasta="genome.fa")  # doctest: +SKIP
    >>> atac.varm["X_dnabert"].shape  # doctest: +SKIP
    >>> dnabert.tl.embed_regions(mdata, fasta="genome.fa", mod="atac")  # doctest: +SKIP

    References
    ----------
    Ji Y, Zhou Z, Liu H, Davuluri RV (2021). DNABERT: pre-trained Bidirectional Encoder
    Representations from Transformers model for DNA-language in genome. Bioinformatics 37(15).
    """
    check_key(key_added)
    from ..model import resolve_model

    if fasta is None:
        msg = "fasta= is required to fetch the sequences of the regions in adata.var_names."
        raise ValueError(msg)
    target = modality(adata, mod)
    check_uns(target, "dnabert")
    check_backed_writable(target, copy, f"varm[{key_added!r}]", key_added)
    regions = var_regions(target, region_key)
    sequences = fetch_sequences(regions, as_genome(fasta))  # all validated before the model
    dnabert = resolve_model(model, "mlm")
    embedding = dnabert.embed(
        pd.Series(sequences, index=regions, dtype=object),  # errors name the region
        pooling=pooling,
        reverse_complement=reverse_complement,
        window_overlap=window_overlap,
        batch_size=batch_size,
        device=device,
        progress=progress,
    )
    params: dict[str, Any] = {
        "model": describe(model),
        "fasta": describe(fasta),
        "k": dnabert.k,
        "pooling": pooling,
        "reverse_complement": reverse_complement,
        "window_overlap": window_overlap,
        "region_key": region_key,
    }
    adata = adata.copy() if copy else adata
    target = modality(adata, mod)
    target.varm[key_added] = np.asarray(embedding, dtype=np.float32)
    target.uns.setdefault("dnabert", {})[key_added] = {"params": params}
    return adata if copy else None
