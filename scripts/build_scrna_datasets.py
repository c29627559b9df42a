"""Build the single-cell RNA files bundled in ``omicformer`` (no network at run time).

Writes, into ``src/omicformer/datasets/data/``:

- ``scrna_pbmc_celltypist.h5ad`` — celltypist's sample (559 cells x 32,786 genes, raw UMI counts,
  all genes kept).
- ``scrna_pbmc_seurat_small.h5ad`` — Seurat's ``extdata/pbmc_raw.txt`` (80 cells x 230 genes,
  raw UMI counts).
- ``scrna_hsmm.h5ad`` — HSMMSingleCell (Trapnell et al. 2014; 271 cells, FPKM), see
  :func:`build_hsmm` for the gene filter and rounding that keep it small.

and ``src/omicformer/scgpt/_data/default_census_vocab.json.gz`` — the official scGPT gene
vocabulary (60,694 symbols, ``scgpt/tokenizer/default_census_vocab.json`` from the scgpt 0.2.4
wheel, MIT licence).

Each expression matrix is stored once (in ``X``, CSR, gzip level 9; integer arrays also get the
HDF5 byte-shuffle filter); the loaders in ``omicformer.datasets._scrna`` copy it into the
``counts`` / ``fpkm`` layers at load time, so the package does not carry the matrix twice.
``pbmc_two_batch()`` and ``pbmc68k_reduced()`` need no file of their own.

Requirements
------------
- Python packages (only for building, not for using omicformer)::

      pip install celltypist rdata

- Debian/Ubuntu ``apt-get`` and ``dpkg-deb`` to fetch the R data packages *without* installing R
  (the ``.rda`` files are read with the pure-Python ``rdata`` package, so R itself is not
  needed)::

      apt-get update   # once
      # the script runs: apt-get download r-cran-seurat r-bioc-hsmmsinglecell; dpkg-deb -x ...

  If the packages are already installed (``/usr/lib/R/site-library/Seurat`` and
  ``.../HSMMSingleCell`` exist) they are used directly; pass ``--r-library DIR`` to point elsewhere.
- ``pip download`` access to PyPI for the scgpt wheel (it is only read as a zip, never
  installed), or ``--scgpt-wheel PATH`` to an already downloaded ``scgpt-0.2.4-py3-none-any.whl``.

Usage
-----
From the repository root::

    python scripts/build_scrna_datasets.py            # everything
    python scripts/build_scrna_datasets.py --only vocab hsmm

The script prints each file's shape and size, and the fraction of each dataset's genes found in
the scGPT vocabulary.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO / "src" / "omicformer" / "datasets" / "data"
VOCAB_PATH = REPO / "src" / "omicformer" / "scgpt" / "_data" / "default_census_vocab.json.gz"

SCGPT_VERSION = "0.2.4"
VOCAB_MEMBER = "scgpt/tokenizer/default_census_vocab.json"
R_LIBRARY = Path("/usr/lib/R/site-library")
DEBS = ("r-cran-seurat", "r-bioc-hsmmsinglecell")

# HSMM gene/value rules (see build_hsmm)
HSMM_MIN_FPKM = 1e-3  # values below are EM residue (< 1 fragment for any transcript), set to 0
HSMM_MIN_CELLS = 3  # keep genes with FPKM >= HSMM_MIN_FPKM in at least this many cells
HSMM_SIG_DIGITS = 4  # FPKM rounded to 4 significant digits (relative error <= 5e-4)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _write_compact(adata: ad.AnnData, path: Path, *, tight: bool = False) -> None:
    """Write ``adata`` as h5ad with gzip-9 everywhere and byte-shuffle on integer arrays.

    anndata writes the file first; it is then copied dataset by dataset into the final file with
    the extra filters (a plain HDF5 filter, transparent to every h5ad reader).

    ``tight=True`` (used by ``build_more_scrna_datasets.py``) adds three lossless measures that
    shrink a typical count matrix file by about 40%:

    - ASCII string arrays (``obs_names``, ``var_names``, string columns, categories) are stored
      as fixed-length strings, which gzip compresses; HDF5 keeps variable-length strings in an
      uncompressed heap (about 60-90 bytes per gene name). anndata reads string arrays through
      h5py's ``asstr()``, which returns ``str`` for both kinds.
    - 1-D arrays get chunks of ``TIGHT_CHUNK`` elements instead of h5py's automatic ~9,000, so
      the shuffle and gzip filters see long runs (CSR ``indices`` about 12% smaller).
    - the byte-shuffle filter is applied to float arrays too.

    It also leaves out HDF5's dataset timestamps, so a rebuild from the same data gives the
    same bytes.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.h5ad"
        adata.write_h5ad(raw, convert_strings_to_categoricals=False)
        with h5py.File(raw, "r") as src, h5py.File(path, "w") as dst:
            _copy_group(src, dst, tight=tight)
    back = ad.read_h5ad(path)
    assert back.shape == adata.shape
    assert back.obs_names.equals(adata.obs_names)
    assert back.var_names.equals(adata.var_names)
    assert (back.X != adata.X).nnz == 0


TIGHT_CHUNK = 1 << 18  # elements per HDF5 chunk of 1-D arrays with tight=True


def _fixed_length(obj: h5py.Dataset) -> np.ndarray | None:
    """An ASCII variable-length string array as fixed-length bytes (``None`` if not one)."""
    info = h5py.check_string_dtype(obj.dtype)
    if obj.ndim == 0 or obj.size == 0 or info is None or info.length is not None:
        return None
    values = obj.asstr()[()]
    if not all(v.isascii() for v in values.ravel()):
        return None
    width = max(1, max(len(v) for v in values.ravel()))
    return values.astype(f"S{width}")


def _copy_group(src: h5py.Group, dst: h5py.Group, *, tight: bool = False) -> None:
    for key, value in src.attrs.items():
        dst.attrs[key] = value
    for name, obj in src.items():
        if isinstance(obj, h5py.Group):
            _copy_group(obj, dst.create_group(name), tight=tight)
            continue
        data, dtype = obj[()], obj.dtype
        if tight and (fixed := _fixed_length(obj)) is not None:
            data, dtype = fixed, fixed.dtype
        if obj.shape == () or obj.size == 0:
            out = dst.create_dataset(name, data=data, dtype=dtype, track_times=not tight)
        else:
            tight_1d = tight and obj.ndim == 1
            out = dst.create_dataset(
                name,
                data=data,
                dtype=dtype,
                chunks=(min(obj.size, TIGHT_CHUNK),) if tight_1d else None,
                compression="gzip",
                compression_opts=9,
                shuffle=obj.dtype.kind in ("iubf" if tight else "iub"),
                track_times=not tight,
            )
        for key, value in obj.attrs.items():
            out.attrs[key] = value


def _fetch_r_library(explicit: Path | None, workdir: Path) -> Path:
    """Folder holding ``Seurat/`` and ``HSMMSingleCell/`` (downloading the .debs if needed)."""
    candidates = [explicit] if explicit is not None else [R_LIBRARY]
    for lib in candidates:
        if (lib / "Seurat" / "extdata").is_dir() and (lib / "HSMMSingleCell" / "data").is_dir():
            return lib
    if explicit is not None:
        msg = f"{explicit} lacks Seurat/extdata or HSMMSingleCell/data."
        raise FileNotFoundError(msg)
    print(f"downloading {' '.join(DEBS)} with apt-get (run `apt-get update` first if this fails)")
    subprocess.run(["apt-get", "download", *DEBS], cwd=workdir, check=True)
    root = workdir / "root"
    for deb in sorted(workdir.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return root / "usr" / "lib" / "R" / "site-library"


def _scgpt_wheel(explicit: Path | None, workdir: Path) -> Path:
    if explicit is not None:
        return explicit
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", f"scgpt=={SCGPT_VERSION}"]
    subprocess.run([*cmd, "-d", str(workdir)], check=True)
    return next(workdir.glob(f"scgpt-{SCGPT_VERSION}-*.whl"))


def _size(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.2f} MB"


# --------------------------------------------------------------------------------------------
# builders
# --------------------------------------------------------------------------------------------
def build_vocab(wheel: Path) -> dict[str, int]:
    """Copy the official census vocabulary out of the scgpt wheel, gzipped (mtime 0)."""
    with zipfile.ZipFile(wheel) as zf:
        vocab = json.loads(zf.read(VOCAB_MEMBER))
    ids = sorted(vocab.values())
    assert ids == list(range(len(ids))), "vocab ids are not 0..n-1"
    assert vocab["A1BG"] == 0
    payload = json.dumps(vocab, separators=(",", ":")).encode()
    VOCAB_PATH.parent.mkdir(parents=True, exist_ok=True)
    with open(VOCAB_PATH, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0) as gz:
        gz.write(payload)
    print(f"{VOCAB_PATH.name}: {len(vocab)} genes, {_size(VOCAB_PATH)}")
    return vocab


def build_celltypist() -> ad.AnnData:
    """celltypist's ``sample_cell_by_gene.csv``: 559 cells x 32,786 genes, all kept."""
    from celltypist import samples

    df = pd.read_csv(samples.get_sample_csv(), index_col=0)
    values = df.to_numpy()
    counts = np.rint(values)  # the CSV holds integers written as floats (e.g. 944.9999999999969)
    assert np.abs(values - counts).max() < 1e-6
    assert counts.min() >= 0
    adata = ad.AnnData(
        sp.csr_matrix(counts.astype(np.int32)),
        obs=pd.DataFrame(index=df.index.astype(str)),
        var=pd.DataFrame(index=df.columns.astype(str)),
    )
    adata.uns["omicformer_dataset"] = {
        "source": "celltypist 1.7.1 wheel, celltypist/data/samples/sample_cell_by_gene.csv",
        "license": "MIT",
        "processing": "none (values rounded to the integers they encode)",
    }
    path = DATA_DIR / "scrna_pbmc_celltypist.h5ad"
    _write_compact(adata, path)
    print(f"{path.name}: {adata.n_obs} x {adata.n_vars}, {_size(path)}")
    return adata


def build_seurat_small(rlib: Path) -> ad.AnnData:
    """Seurat's ``extdata/pbmc_raw.txt`` (genes x cells TSV), transposed to cells x genes."""
    df = pd.read_csv(rlib / "Seurat" / "extdata" / "pbmc_raw.txt", sep="\t", index_col=0).T
    assert (df.to_numpy() >= 0).all()
    adata = ad.AnnData(
        sp.csr_matrix(df.to_numpy().astype(np.int32)),
        obs=pd.DataFrame(index=df.index.astype(str)),
        var=pd.DataFrame(index=df.columns.astype(str)),
    )
    adata.uns["omicformer_dataset"] = {
        "source": "Debian r-cran-seurat 4.3.0, Seurat/extdata/pbmc_raw.txt",
        "license": "MIT (Seurat); data: 10x Genomics PBMC 3k",
        "processing": "transposed to cells x genes",
    }
    path = DATA_DIR / "scrna_pbmc_seurat_small.h5ad"
    _write_compact(adata, path)
    print(f"{path.name}: {adata.n_obs} x {adata.n_vars}, {_size(path)}")
    return adata


def _unique_symbols(symbols: pd.Series, n_cells: np.ndarray) -> pd.Index:
    """Gene symbols made unique; within a duplicated symbol the most detected gene keeps it bare.

    The others get ``-1``, ``-2``, ... (skipping any suffix that is already a symbol).
    """
    symbols = symbols.astype(str).reset_index(drop=True)
    taken = set(symbols)
    names = symbols.copy()
    order = np.lexsort((np.arange(len(symbols)), -n_cells))  # most detected first, stable
    seen: dict[str, int] = {}
    for i in order:
        sym = symbols[i]
        k = seen.get(sym, 0)
        seen[sym] = k + 1
        if k == 0:
            continue
        new = f"{sym}-{k}"
        while new in taken:
            k += 1
            new = f"{sym}-{k}"
        seen[sym] = k + 1
        taken.add(new)
        names[i] = new
    assert names.is_unique
    return pd.Index(names.to_numpy(), name=None)


def build_hsmm(rlib: Path) -> ad.AnnData:
    """HSMMSingleCell: FPKM of 271 cells, read from the package's ``.rda`` files with ``rdata``.

    Processing (documented in the loader):

    1. FPKM values below ``HSMM_MIN_FPKM`` (1e-3) are set to 0. The matrix holds 38,161 tiny
       positive values (1.9% of its non-zeros, down to 1e-318) left over by Cufflinks' EM; with
       at most 4.2M mapped fragments per cell, one fragment is >= 1e-3 FPKM for any transcript
       shorter than 240 kb (the longest human mRNA, TTN, is ~110 kb), so these are fractions of
       a fragment, but scGPT would count them as expressed genes.
    2. Genes are kept when detected (FPKM >= 1e-3) in at least ``HSMM_MIN_CELLS`` (3) cells.
    3. FPKM is rounded to ``HSMM_SIG_DIGITS`` (4) significant digits and stored as float32.
    """
    import rdata

    data = rlib / "HSMMSingleCell" / "data"
    expr = rdata.read_rda(data / "HSMM_expr_matrix.rda")["HSMM_expr_matrix"]
    sheet = rdata.read_rda(data / "HSMM_sample_sheet.rda")["HSMM_sample_sheet"]
    genes = rdata.read_rda(data / "HSMM_gene_annotation.rda")["HSMM_gene_annotation"]
    gene_ids = np.asarray(expr.coords[expr.dims[0]].values).astype(str)
    cell_ids = np.asarray(expr.coords[expr.dims[1]].values).astype(str)
    assert (gene_ids == genes.index.to_numpy().astype(str)).all()
    assert (cell_ids == sheet.index.to_numpy().astype(str)).all()

    x = np.asarray(expr.values, dtype=np.float64).T.copy()  # cells x genes
    assert x.min() >= 0
    x[x < HSMM_MIN_FPKM] = 0.0
    n_cells = (x > 0).sum(axis=0)
    keep = n_cells >= HSMM_MIN_CELLS
    x = x[:, keep]
    nz = x > 0
    exponent = np.floor(np.log10(x[nz]))
    scale = 10.0 ** (exponent - (HSMM_SIG_DIGITS - 1))
    x[nz] = np.round(x[nz] / scale) * scale
    matrix = sp.csr_matrix(x.astype(np.float32))

    genes = genes.loc[keep]
    var = pd.DataFrame(
        {
            "gene_ids": genes.index.astype(str),
            "biotype": pd.Categorical(genes["biotype"].astype(str).to_numpy()),
            "n_cells": n_cells[keep].astype(np.int32),
        }
    )
    # (no gene_short_name column: every string column costs ~1 MB of uncompressed HDF5 heap)
    var.index = _unique_symbols(genes["gene_short_name"], var["n_cells"].to_numpy())

    obs = pd.DataFrame(index=pd.Index(cell_ids))
    library = sheet["Library"].astype(str)
    well = sheet["Well"].astype(str)
    assert (library == library.str.split("_").str[0] + "_" + well).all()
    obs["Library"] = pd.Categorical(library.str.split("_").str[0].to_numpy())  # plate
    obs["Well"] = well.to_numpy()
    obs["Hours"] = pd.Categorical(
        sheet["Hours"].astype(str).to_numpy(), categories=["0", "24", "48", "72"], ordered=True
    )
    obs["Media"] = pd.Categorical(sheet["Media"].astype(str).to_numpy(), categories=["GM", "DM"])
    obs["Mapped.Fragments"] = sheet["Mapped.Fragments"].astype("int64").to_numpy()
    obs["Pseudotime"] = sheet["Pseudotime"].astype("float64").to_numpy()
    obs["State"] = pd.Categorical(sheet["State"].astype(str).to_numpy())

    adata = ad.AnnData(matrix, obs=obs, var=var)
    adata.uns["omicformer_dataset"] = {
        "source": "Debian r-bioc-hsmmsinglecell 1.18.0, HSMMSingleCell/data/HSMM_*.rda",
        "license": "Artistic-2.0",
        "processing": (
            f"FPKM < {HSMM_MIN_FPKM:g} set to 0; genes detected in >= {HSMM_MIN_CELLS} cells "
            f"kept; FPKM rounded to {HSMM_SIG_DIGITS} significant digits; var_names = "
            "gene_short_name made unique (most detected gene keeps the bare symbol); "
            "Library = plate (original Library = Library + '_' + Well)"
        ),
    }
    path = DATA_DIR / "scrna_hsmm.h5ad"
    _write_compact(adata, path)
    print(f"{path.name}: {adata.n_obs} x {adata.n_vars} (of {keep.size} genes), {_size(path)}")
    return adata


def _report_vocab_match(datasets: dict[str, ad.AnnData], vocab: dict[str, int]) -> None:
    for name, adata in datasets.items():
        hit = adata.var_names.isin(list(vocab))
        print(f"  {name}: {hit.sum()} / {adata.n_vars} genes in the scGPT vocab ({hit.mean():.1%})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        nargs="+",
        choices=["vocab", "celltypist", "seurat", "hsmm"],
        default=["vocab", "celltypist", "seurat", "hsmm"],
    )
    parser.add_argument("--r-library", type=Path, default=None, help="R site-library folder")
    parser.add_argument("--scgpt-wheel", type=Path, default=None, help="scgpt 0.2.4 wheel")
    args = parser.parse_args(argv)

    built: dict[str, ad.AnnData] = {}
    vocab = None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "vocab" in args.only:
            vocab = build_vocab(_scgpt_wheel(args.scgpt_wheel, tmp))
        if "celltypist" in args.only:
            built["pbmc_celltypist"] = build_celltypist()
        if {"seurat", "hsmm"} & set(args.only):
            rlib = _fetch_r_library(args.r_library, tmp)
            if "seurat" in args.only:
                built["pbmc_seurat_small"] = build_seurat_small(rlib)
            if "hsmm" in args.only:
                built["hsmm"] = build_hsmm(rlib)
    if vocab is None and VOCAB_PATH.exists():
        vocab = json.load(io.TextIOWrapper(gzip.open(VOCAB_PATH)))
    if vocab is not None and built:
        print("scGPT vocabulary match:")
        _report_vocab_match(built, vocab)


if __name__ == "__main__":
    main()
