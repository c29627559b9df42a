"""Turn what users pass (sequences, regions + FASTA, a FASTA file) into named DNA strings."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._genome import Genome, as_genome, fetch_sequences
from .._kmers import check_sequences, tokenize
from .._regions import Region

SequenceInput = Sequence[str] | Mapping[str, str] | str | os.PathLike[str] | Genome


def _fasta_records(fasta: str | os.PathLike[str] | Genome) -> tuple[list[str], list[str]]:
    genome = as_genome(fasta)
    names = list(genome.chrom_sizes)
    # an empty record is "" (refused as shorter than k, named), not the interval n:0-0
    sizes = genome.chrom_sizes
    return [genome.fetch(n, 0, sizes[n]) if sizes[n] else "" for n in names], names


def resolve_sequences(
    data: SequenceInput, *, fasta: str | os.PathLike[str] | Genome | None = None
) -> tuple[list[str], list[str]]:
    """Return ``(sequences, names)`` from any accepted input.

    * ``fasta`` given: ``data`` are regions (``chr1:100-600`` ...) fetched from the genome,
      named by the keys/index of a mapping or pandas Series (as sequences are), else by the
      region strings;
    * a path to a FASTA file or a :class:`Genome`: all its records;
    * a mapping ``name -> sequence`` or a pandas Series: its values, named by keys/index;
    * a list of DNA strings, named ``seq_0``, ``seq_1``, ...

    Entries are returned as given: a missing (NaN/None) or non-string sequence is refused by
    :func:`~omicformer.dnabert.pp.check_sequences`, naming it, before any model runs.
    """
    if fasta is not None:
        values, names = _named(data)
        regions = [r if isinstance(r, Region) else str(r) for r in values]
        if names is None:
            names = [r.name if isinstance(r, Region) else r for r in regions]
        return fetch_sequences(regions, fasta), names
    if isinstance(data, Genome):
        return _fasta_records(data)
    if isinstance(data, pd.DataFrame):
        msg = (
            f"got a DataFrame (columns {list(data.columns)[:10]}); pass the column of "
            "sequences (or regions, with fasta=), e.g. df['sequence']."
        )
        raise TypeError(msg)
    if isinstance(data, str | os.PathLike):
        if _is_file(data):
            return _fasta_records(data)
        msg = (
            f"{str(data)[:40]!r} is not a FASTA file; pass sequences as a list of strings "
            "(wrap a single sequence: [seq]), or regions together with fasta=GENOME."
        )
        raise TypeError(msg)
    seqs, names = _named(data)  # not str(): NaN/None must fail the check, not read as "nan"
    return seqs, [f"seq_{i}" for i in range(len(seqs))] if names is None else names


def _is_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a file; ``False`` for strings no file can have (a long sequence)."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):  # name too long, NUL byte
        return False


def _named(data: Any) -> tuple[list, list[str] | None]:
    """Entries of ``data`` and their names (``None`` for a plain list).

    A Series is read by position and named by its index, a mapping by its keys.
    """
    if isinstance(data, pd.Series):  # by position, named by the index
        return data.tolist(), [str(key) for key in data.index]
    if isinstance(data, Mapping) or hasattr(data, "keys"):
        keys = list(data.keys())
        return [data[key] for key in keys], [str(key) for key in keys]
    return list(_as_list(data)), None


def _as_list(data: Iterable) -> list:
    if isinstance(data, (str, Region)):  # one region is a tuple of its fields
        return [data]
    if isinstance(data, (list, tuple)):
        return list(data)
    if isinstance(data, np.ndarray) or hasattr(data, "__len__"):
        return list(np.asarray(data, dtype=object).ravel())
    return list(data)  # a generator or another iterator, read once


def max_window_bp(k: int, max_tokens: int) -> int:
    """Longest sequence (bases) that fits ``max_tokens`` tokens: ``max_tokens - 2 + k - 1``."""
    return max_tokens - 2 + k - 1


def tokenize_windows(
    windows: Sequence[str], k: int, *, chunk_size: int = 8192
) -> tuple[np.ndarray, np.ndarray]:
    """Tokenise windows chunk by chunk into a padded int16 matrix ``(N, T)`` and lengths."""
    if not windows:
        msg = "No sequences to tokenise."
        raise ValueError(msg)
    longest = max(len(w) for w in windows) - k + 1 + 2
    out = np.zeros((len(windows), longest), dtype=np.int16)
    lengths = np.zeros(len(windows), dtype=np.int64)
    for start in range(0, len(windows), chunk_size):
        batch = tokenize(windows[start : start + chunk_size], k, max_len=longest, dtype=np.int16)
        rows = slice(start, start + len(batch["input_ids"]))
        out[rows, : batch["input_ids"].shape[1]] = batch["input_ids"]
        lengths[rows] = batch["attention_mask"].sum(axis=1)
    return out, lengths


def windows_for_training(
    sequences: Sequence[str],
    k: int,
    *,
    window: int,
    overlap: int = 0,
    max_unknown_fraction: float = 0.1,
    names: Sequence[str] | None = None,
) -> tuple[list[str], np.ndarray]:
    """Validate sequences, cut them into windows and drop windows with too many N/IUPAC bases.

    Windows start every ``window - overlap`` bases; a sequence's last window is its remainder
    (shorter; dropped when shorter than ``k``), not a window aligned to the sequence's end as
    in :func:`~omicformer.dnabert.pp.split_windows`, which would repeat up to ``window - 1``
    bases of the window before it (in training and validation windows alike).
    """
    check_sequences(sequences, k, names=names)
    if not 0 <= overlap < window:
        msg = f"window_overlap={overlap} must satisfy 0 <= window_overlap < window ({window})."
        raise ValueError(msg)
    windows, owner_list = [], []
    for i, seq in enumerate(sequences):
        for start in range(0, max(len(seq) - overlap, 1), window - overlap):
            piece = seq[start : start + window]
            if len(piece) >= k:
                windows.append(piece)
                owner_list.append(i)
    owner = np.asarray(owner_list, dtype=np.int64)
    if max_unknown_fraction < 1:
        keep = [
            i
            for i, w in enumerate(windows)
            if sum(map(w.upper().count, "ACGT")) >= (1 - max_unknown_fraction) * len(w)
        ]
        windows, owner = [windows[i] for i in keep], owner[keep]
    if not len(sequences):
        msg = "No sequences to train on: the input is empty."
        raise ValueError(msg)
    if not windows:
        msg = (
            "No usable training windows: every window has more than "
            f"{max_unknown_fraction:.0%} N/IUPAC bases (raise max_unknown_fraction)."
        )
        raise ValueError(msg)
    return windows, owner


def encode_labels(
    labels: Any,
    n: int,
    num_labels: int | None = None,
    existing: list[str] | None = None,
    label_names: Sequence[str] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Class codes and names; checks length, NaN and class count before anything runs.

    Integer labels are class indices (named by ``label_names`` or ``"0"``, ``"1"``, ...);
    other labels are categories, ordered by ``label_names``, the categorical order (of a
    :class:`pandas.Categorical` or a categorical Series), or sorted. Repeated ``label_names``
    and labels that hold fewer than two classes are refused.
    """
    if isinstance(labels, Mapping):  # list(...) would read its keys
        msg = (
            "labels is a mapping; give one label per sequence in the sequences' order (a "
            "list, array or Series), e.g. [labels[name] for name in sequences]."
        )
        raise TypeError(msg)
    if isinstance(labels, np.ndarray | pd.DataFrame) and np.ndim(labels) != 1:
        msg = (
            f"labels has shape {np.shape(labels)}; give one label per sequence (1-D), e.g. "
            "labels.argmax(1) for one-hot rows or labels.ravel() for a column."
        )
        raise ValueError(msg)
    if isinstance(labels, pd.Series | pd.Index) and isinstance(labels.dtype, pd.CategoricalDtype):
        labels = pd.Categorical(labels)  # list(...) would drop the categories' order
    values = labels if isinstance(labels, pd.Categorical) else pd.Series(list(labels)).values
    if len(values) != n:
        msg = (
            f"labels has {len(values)} entries but there are {n} sequences; give one per sequence."
        )
        raise ValueError(msg)
    names = None if label_names is None else [str(c) for c in label_names]
    if names is not None and len(set(names)) < len(names):
        repeated = sorted({c for c in names if names.count(c) > 1})
        msg = f"label_names repeats {repeated}; give each class one name."
        raise ValueError(msg)
    if names is not None and num_labels is not None and num_labels != len(names):
        msg = f"num_labels={num_labels} but label_names has {len(names)} names."
        raise ValueError(msg)
    arr = np.asarray(values)
    if arr.dtype.kind in "iu":
        n_cls = len(names) if names is not None else int(num_labels or (arr.max() + 1 if n else 0))
        if n and (arr.min() < 0 or arr.max() >= n_cls):
            msg = f"Integer labels must lie in [0, {n_cls}); got {arr.min()}..{arr.max()}."
            raise ValueError(msg)
        codes, classes = arr.astype(np.int64), names or [str(i) for i in range(n_cls)]
        if names is None and existing is not None and len(existing) == n_cls:
            classes = list(existing)
    else:
        if names is not None:
            cat = pd.Categorical(pd.Series(values).astype(str), categories=names)
        else:
            cat = values if isinstance(values, pd.Categorical) else pd.Categorical(values)
            if existing is not None and set(map(str, cat.categories)) <= set(existing):
                cat = pd.Categorical(cat.astype(str), categories=existing)
        if (cat.codes < 0).any():
            bad = pd.Series(values)[cat.codes < 0].iloc[0]
            msg = (
                f"label {bad!r} is missing (NaN/None) or not in label_names; drop those "
                "sequences or fix label_names."
            )
            raise ValueError(msg)
        codes, classes = np.asarray(cat.codes, dtype=np.int64), [str(c) for c in cat.categories]
        if num_labels is not None and num_labels != len(classes):
            msg = f"num_labels={num_labels} but labels have {len(classes)} classes {classes}."
            raise ValueError(msg)
    if len(classes) < 2:
        msg = f"Fine-tuning needs at least two classes; labels have {classes}."
        raise ValueError(msg)
    present = np.unique(codes)
    if len(present) < 2:
        msg = (
            f"Fine-tuning needs at least two classes; every label is {classes[present[0]]!r} "
            f"(classes {classes}), so the model would learn to predict that class alone."
        )
        raise ValueError(msg)
    return codes, classes
