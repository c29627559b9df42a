"""Readers of Perturb-seq screens users download: GEARS folders and scPerturb ``.h5ad`` files.

Both return the GEARS layout of :func:`~omicformer.datasets.perturbseq_simulation`:
``obs["condition"]`` holds ``"ctrl"``, ``"GENE+ctrl"`` or ``"GENE1+GENE2"``, ``var_names`` are
gene symbols and ``X`` is log-normalised expression.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._core._warnings import warn_caller
from ._perturb import _GEARS_FILE, _TARGET_SUM

if TYPE_CHECKING:
    import pandas as pd
    import scipy.sparse as sp
    from anndata import AnnData

__all__ = ["read_gears", "read_scperturb"]


def _read_h5ad(file: Path) -> AnnData:
    """``anndata.read_h5ad``, with a ``ValueError`` naming ``file`` when it is no ``.h5ad``.

    An empty or cut-off download, or another kind of file, raised h5py's ``OSError`` ("file
    signature not found"), naming neither the file nor the fix.
    """
    import anndata as ad

    try:
        return ad.read_h5ad(file)
    except OSError as err:
        msg = (
            f"cannot read {str(file)!r}: not a valid, readable .h5ad file ({err}). If it was "
            "downloaded, the download may be incomplete: download it again."
        )
        raise ValueError(msg) from err


def _h5ad_path(path: str | Path, default_name: str | None) -> Path:
    """``path`` itself if it is a file; ``path / default_name`` for a folder; else an error."""
    path = Path(path).expanduser()
    if path.is_dir() and default_name is not None:
        file = path / default_name
        if not file.is_file():
            found = sorted(p.name for p in path.iterdir())[:20]
            msg = f"No {default_name} in the folder {path} (it holds: {found})."
            raise FileNotFoundError(msg)
        return file
    if path.is_dir():
        msg = f"{path} is a folder; pass the path of the .h5ad file."
        raise FileNotFoundError(msg)
    if not path.is_file():
        msg = f"{path} does not exist."
        raise FileNotFoundError(msg)
    return path


def _float32(matrix: Any) -> np.ndarray | sp.csr_matrix:
    """A float32 copy of an expression matrix: sparse becomes CSR, dense stays dense."""
    import scipy.sparse as sp

    if sp.issparse(matrix):
        return sp.csr_matrix(matrix, dtype=np.float32)
    return np.asarray(matrix, dtype=np.float32)


def read_gears(path: str | Path) -> AnnData:
    """Read a GEARS Perturb-seq dataset (``perturb_processed.h5ad``) with symbols as ``var_names``.

    GEARS (``gears.PertData``) downloads each dataset as a folder, e.g. ``data/norman/``,
    ``data/adamson/`` or ``data/replogle_k562_essential/``, holding ``perturb_processed.h5ad``:
    log-normalised expression in ``X``, ``obs["condition"]`` (``"ctrl"``, ``"GENE+ctrl"``,
    ``"GENE1+GENE2"``), ``cell_type``, ``dose_val``, ``control``, ``condition_name``, and gene
    symbols in ``var["gene_name"]`` (the index holds gene ids). :func:`perturbseq_simulation`
    written to disk has the same layout.

    Parameters
    ----------
    path
        The ``.h5ad`` file, or the folder that holds ``perturb_processed.h5ad``.

    Returns
    -------
    AnnData with ``var_names`` = ``var["gene_name"]`` made unique (repeats get ``-1``, ``-2``,
    ...; a missing or blank name keeps its id) and the original index in ``var["gene_id"]``;
    ``X`` as shipped (log-normalised) in float32 (sparse as CSR); ``obs`` and ``uns``
    unchanged.

    Raises
    ------
    FileNotFoundError
        If the file, or ``perturb_processed.h5ad`` in the folder, does not exist.
    ValueError
        If the file is no readable ``.h5ad`` (an incomplete download, say), ``obs`` has no
        ``condition`` column or ``var`` no ``gene_name`` column.

    Notes
    -----
    The data sets GEARS distributes have their own licences and citations (Norman et al. 2019,
    Adamson et al. 2016, Replogle et al. 2022). GEARS: Y. Roohani, K. Huang, J. Leskovec,
    *Nat. Biotechnol.* 42, 927-935 (2024).

    Examples
    --------
    >>> from omicformer import datasets
    >>> adata = datasets.read_gears("data/norman")  # doctest: +SKIP
    >>> adata.obs["condition"].head()  # doctest: +SKIP
    """
    import anndata as ad
    import pandas as pd

    file = _h5ad_path(path, _GEARS_FILE)
    adata = _read_h5ad(file)
    if "condition" not in adata.obs.columns:
        msg = (
            f"{file} is not in the GEARS layout: obs has no 'condition' column (columns: "
            f"{list(adata.obs.columns)[:20]}). For scPerturb files use read_scperturb()."
        )
        raise ValueError(msg)
    if "gene_name" not in adata.var.columns:
        msg = (
            f"{file} is not in the GEARS layout: var has no 'gene_name' column (columns: "
            f"{list(adata.var.columns)[:20]}; index starts {list(adata.var_names[:3])})."
        )
        raise ValueError(msg)
    ids = adata.var_names.astype(str)
    names = adata.var["gene_name"].astype(object)
    blank = names.fillna("").astype(str).str.strip() == ""  # NaN, "" or spaces: no symbol
    symbols = names.where(~blank, pd.Series(ids, index=names.index))
    symbols = pd.Index(symbols.astype(str).to_numpy())
    adata.var["gene_id"] = np.asarray(ids)
    adata.var_names = ad.utils.make_index_unique(symbols)
    adata.X = _float32(adata.X)
    return adata


def _split_genes(label: str, measured: frozenset[str]) -> list[str]:
    """The genes of an scPerturb label: its ``"_"``-joined parts, read as measured symbols.

    A symbol that itself holds ``"_"`` (``"BRD2_AS"`` among ``measured``) stays whole: of the
    ways to cut the parts into measured symbols, the one with the fewest genes; where none
    exists, every part is a gene.
    """
    parts = label.split("_")
    best: list[list[str] | None] = [[]] + [None] * len(parts)  # best[i]: cut of parts[:i]
    for end in range(1, len(parts) + 1):
        for start in range(end):
            gene = "_".join(parts[start:end])
            prefix = best[start]
            if prefix is not None and gene in measured:
                if best[end] is None or len(prefix) + 1 < len(best[end]):
                    best[end] = [*prefix, gene]
    return best[-1] if best[-1] is not None else parts


def _convert_scperturb_labels(
    values: pd.Series, control: str, measured: frozenset[str] = frozenset()
) -> pd.Categorical:
    """Convert scPerturb labels (``control``, ``A``, ``A_B``) to GEARS condition strings.

    ``measured``: gene symbols of the file, so that a symbol holding ``"_"`` is one gene.
    """
    import pandas as pd

    from ..scgpt._conditions import CONTROL, SEP, condition_name, parse_condition

    bad = values[[not isinstance(v, str) for v in values]]
    if len(bad):
        examples = list(dict.fromkeys(map(repr, bad)))[:8]
        msg = (
            f"{len(bad)} cell(s) have a missing or non-string perturbation: {', '.join(examples)}. "
            "Every cell needs a label (the control label for unperturbed cells); subset them out."
        )
        raise ValueError(msg)
    mapping: dict[str, str] = {}
    unparsable: list[str] = []
    for label in dict.fromkeys(values):
        if label == control:
            mapping[label] = CONTROL
            continue
        genes = tuple(g for g in _split_genes(label, measured) if g != control)
        name = condition_name(genes)
        try:
            ok = not any(SEP in g for g in genes) and parse_condition(name) == genes
        except ValueError:
            ok = False
        if not ok:
            unparsable.append(repr(label))
        mapping[label] = name
    if unparsable:
        msg = (
            f"Cannot convert perturbation label(s) {', '.join(unparsable[:8])}: expected "
            f"{control!r}, a gene symbol or symbols joined by '_' (no spaces, each gene once)."
        )
        raise ValueError(msg)
    if control not in mapping:
        msg = (
            f"No control cells: no perturbation equals control={control!r} (labels look like "
            f"{list(mapping)[:5]}). Pass control= with the label of unperturbed cells."
        )
        raise ValueError(msg)
    return pd.Categorical(values.map(mapping).to_numpy())


def read_scperturb(
    path: str | Path, *, perturbation_key: str = "perturbation", control: str = "control"
) -> AnnData:
    """Read an scPerturb ``.h5ad`` file and convert it to the GEARS condition convention.

    scPerturb files hold raw counts in ``X``, gene symbols as ``var_names`` and
    ``obs["perturbation"]``: ``"control"`` for unperturbed cells, a gene symbol for single
    perturbations and symbols joined by ``"_"`` for combinations (``obs`` often also has
    ``perturbation_type`` and ``nperts``).

    Parameters
    ----------
    path
        The ``.h5ad`` file.
    perturbation_key
        ``obs`` column with the perturbation labels.
    control
        Label of unperturbed cells in that column.

    Returns
    -------
    AnnData with ``obs["condition"]`` (categorical) = ``"ctrl"``, ``"GENE+ctrl"`` or
    ``"GENE1+GENE2"`` (more genes joined by ``"+"``; a symbol of ``var_names`` that holds
    ``"_"``, such as ``"BRD2_AS"``, stays one gene) and the file's columns kept: a column
    already named ``"condition"`` (the labels themselves with ``perturbation_key="condition"``)
    is renamed ``condition_scperturb``;
    ``layers["counts"]``: the raw counts (float32); ``X``: ``log1p(counts / total * 1e4)`` per
    cell (float32; CSR if the file's ``X`` is sparse). ``var`` and ``uns`` unchanged, except
    that repeated gene symbols are made unique as
    :meth:`~anndata.AnnData.var_names_make_unique` does (``"TBCE"``, ``"TBCE-1"``; the first
    column keeps the symbol), with a warning, since a perturbed gene must name one column.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    KeyError
        If ``obs`` has no ``perturbation_key`` column.
    ValueError
        For a file that is no readable ``.h5ad``, missing or non-string labels, labels that
        are not gene symbols joined by ``"_"``,
        no cell labelled ``control``, negative / non-finite values in ``X``, or ``obs``
        columns named both ``condition`` and ``condition_scperturb``.

    Notes
    -----
    scPerturb: S. Peidli et al., "scPerturb: harmonized single-cell perturbation data",
    *Nat. Methods* 21, 531-540 (2024). Each data set has its own licence and citation.

    Examples
    --------
    >>> from omicformer import datasets
    >>> adata = datasets.read_scperturb("NormanWeissman2019_filtered.h5ad")  # doctest: +SKIP
    >>> adata.obs["condition"].value_counts().head()  # doctest: +SKIP
    """
    import warnings

    import scipy.sparse as sp

    file = _h5ad_path(path, None)
    with warnings.catch_warnings():  # repeated symbols: our own warning below says what is done
        warnings.filterwarnings("ignore", message="Variable names are not unique")
        adata = _read_h5ad(file)
    if perturbation_key not in adata.obs.columns:
        msg = (
            f"perturbation_key={perturbation_key!r} not found in obs of {file} (columns: "
            f"{list(adata.obs.columns)[:20]})."
        )
        raise KeyError(msg)
    if "condition" in adata.obs.columns and "condition_scperturb" in adata.obs.columns:
        msg = (
            f"obs of {file} has both 'condition' and 'condition_scperturb' columns; the GEARS "
            "labels go to obs['condition'] and the file's 'condition' would be renamed "
            "'condition_scperturb'. Rename one of them in the file first."
        )
        raise ValueError(msg)
    original = adata.obs[perturbation_key]
    values = original.astype(object).where(original.notna(), None)
    measured = frozenset(adata.var_names.astype(str))
    condition = _convert_scperturb_labels(values, control, measured)

    counts = _float32(adata.X)
    data = counts.data if sp.issparse(counts) else counts
    if data.size and (not np.all(np.isfinite(data)) or data.min() < 0):
        msg = f"X of {file} has negative or non-finite values; scPerturb files hold raw counts."
        raise ValueError(msg)
    if data.size and not np.array_equal(data, np.rint(data)):
        warn_caller(
            f"X of {file} is not integer-valued; it is normalised as if it held raw counts."
        )
    if "condition" in adata.obs.columns:  # the labels themselves, or another column
        adata.obs = adata.obs.rename(columns={"condition": "condition_scperturb"})
    adata.obs["condition"] = condition
    total = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
    scale = np.divide(_TARGET_SUM, total, out=np.zeros_like(total), where=total > 0)
    if sp.issparse(counts):
        lognorm = sp.csr_matrix(sp.diags(scale) @ counts.astype(np.float64))
        lognorm.data = np.log1p(lognorm.data)
    else:
        lognorm = np.log1p(counts * scale[:, None])
    adata.layers["counts"] = counts
    adata.X = _float32(lognorm)
    if not adata.var_names.is_unique:
        repeated = adata.var_names[adata.var_names.duplicated()].unique().tolist()
        warn_caller(
            f"Gene symbols that name more than one column of {file}: {repeated[:5]} "
            f"({len(repeated)} in all); made unique as var_names_make_unique() does (the first "
            "keeps the symbol, the others get '-1', '-2', ...)."
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            adata.var_names_make_unique()
    return adata
