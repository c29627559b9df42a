"""``dnabert.tl.predict``: class probabilities (promoter, TFBS, ...) for regions or sequences."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..._core._anndata import check_backed_writable, check_uns
from ..._core._checks import check_key
from .._genome import Genome, as_genome
from ._common import describe, is_anndata, modality, predicted_labels, prob_column, var_regions

if TYPE_CHECKING:
    import torch
    from anndata import AnnData

    from ..model import DNABert


def predict(
    data: Any,
    model: DNABert | str | os.PathLike[str] = "default",
    *,
    fasta: str | os.PathLike[str] | Genome | None = None,
    key_added: str = "dnabert",
    region_key: str | None = None,
    mod: str = "atac",
    reverse_complement: bool = False,
    window_overlap: int | None = None,
    batch_size: int = 64,
    device: str | torch.device = "auto",
    progress: bool = True,
    copy: bool = False,
) -> AnnData | pd.DataFrame | None:
    """Predict class probabilities of regions or sequences with a fine-tuned DNABERT.

    Parameters
    ----------
    data
        A peak-by-cell AnnData (regions in ``var_names`` or ``var[region_key]``; needs
        ``fasta``), a MuData (modality ``mod``), or sequences: a list of DNA strings, a dict /
        Series name -> sequence, a FASTA file path, or region strings together with ``fasta``.
    model
        ``"default"`` (the shipped promoter model), a fine-tuned model folder, or a
        :class:`~omicformer.dnabert.model.DNABert` with a classification head.
    fasta
        Genome to fetch regions from.
    key_added
        Prefix of the output columns.
    region_key, mod
        Where the regions are (``var`` column; MuData modality).
    reverse_complement
        Average the probabilities of both strands.
    window_overlap
        Overlap (bases) of windows of long sequences; probabilities are averaged over windows.
    batch_size, device, progress
        Inference settings.
    copy
        For AnnData input: return a modified copy instead of writing in place.

    Returns
    -------
    For AnnData input ``None`` (or the copy), setting the following fields:

    ``adata.var[f"{key_added}_prob_{label}"]``
        Probability (float) of each class ``label`` of the model (a ``/`` in ``label`` is
        written ``_``: files cannot hold it in a column name). The probability columns
        of an earlier call with the same ``key_added`` are removed first (a model with
        other classes leaves no stale ones).
    ``adata.var[f"{key_added}_prediction"]``
        The most probable class (categorical).
    ``adata.uns["dnabert"][key_added]["params"]``
        Parameters of the call (dict).

    For sequences, a :class:`pandas.DataFrame` with the same columns, indexed by sequence
    name: the keys of a dict, the index of a Series (of sequences or of regions), the region
    strings of a list of regions, ``seq_0``, ``seq_1``, ... for a list of sequences.

    Examples
    --------
    >>> from omicformer import dnabert
    >>> dnabert.tl.predict(atac, model="default", fasta="genome.fa")  # doctest: +SKIP
    >>> atac.var["dnabert_prob_promoter"]  # doctest: +SKIP
    >>> df = dnabert.tl.predict(["ACGT" * 60, "GGCA" * 50], model=finetuned)  # doctest: +SKIP

    References
    ----------
    Ji Y, Zhou Z, Liu H, Davuluri RV (2021). DNABERT: pre-trained Bidirectional Encoder
    Representations from Transformers model for DNA-language in genome. Bioinformatics 37(15).
    """
    check_key(key_added)
    from ..model import resolve_model
    from ..model._inputs import resolve_sequences

    genome = None if fasta is None else as_genome(fasta)
    annotated = is_anndata(data)
    if annotated:
        if genome is None:
            msg = "fasta= is required to fetch the sequences of the regions in adata.var_names."
            raise ValueError(msg)
        check_uns(modality(data, mod), "dnabert")
        check_backed_writable(modality(data, mod), copy, "the predictions in var", key_added)
        sequences, names = resolve_sequences(
            var_regions(modality(data, mod), region_key), fasta=genome
        )
    else:
        sequences, names = resolve_sequences(data, fasta=genome)
    dnabert = resolve_model(model, "promoter")
    _check_columns(key_added, dnabert.labels_)
    probs = dnabert.predict(
        pd.Series(sequences, index=names, dtype=object),  # keeps the names for its errors
        reverse_complement=reverse_complement,
        window_overlap=window_overlap,
        batch_size=batch_size,
        device=device,
        progress=progress,
    )
    labels = list(dnabert.labels_ or range(probs.shape[1]))
    columns = {prob_column(key_added, label): probs[:, i] for i, label in enumerate(labels)}
    prediction = pd.Categorical(
        np.asarray(labels, dtype=object)[probs.argmax(1)], categories=labels
    )
    if not annotated:
        frame = pd.DataFrame(columns, index=pd.Index(names, name="sequence"))
        frame[f"{key_added}_prediction"] = prediction
        return frame

    params = {
        "model": describe(model),
        "fasta": describe(fasta),
        "k": dnabert.k,
        "labels": [str(label) for label in labels],
        "reverse_complement": reverse_complement,
        "window_overlap": window_overlap,
        "region_key": region_key,
    }
    data = data.copy() if copy else data
    target = modality(data, mod)
    # the probability columns of an earlier call with this key_added (maybe other classes)
    previous = [c for lab in predicted_labels(target, key_added) or []  # '/' kept before
                for c in (prob_column(key_added, lab), f"{key_added}_prob_{lab}")]  # fmt: skip
    target.var = target.var.drop(columns=[c for c in previous if c in target.var.columns])
    for column, values in columns.items():
        target.var[column] = values
    target.var[f"{key_added}_prediction"] = prediction
    target.uns.setdefault("dnabert", {})[key_added] = {"params": params}
    return data if copy else None


def _check_columns(key_added: str, labels: list[str] | None) -> None:
    """``ValueError`` when two class names give one probability column (:func:`prob_column`)."""
    columns = [prob_column(key_added, label) for label in labels or []]
    if len(set(columns)) < len(columns):
        msg = (
            f"The model's classes {labels} give the same column name twice: a '/' in a class "
            "name is written '_' (files cannot hold '/' in names). Rename the classes "
            "(model.labels_) so that they differ in more than '/' and '_'."
        )
        raise ValueError(msg)
