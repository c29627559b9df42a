"""Real single-cell RNA datasets shipped inside the package (no network access needed).

The ``.h5ad`` files in ``omicformer/datasets/data/`` are built from data that other registry
packages ship: ``scripts/build_scrna_datasets.py`` (celltypist on PyPI, Debian's
``r-cran-seurat`` and ``r-bioc-hsmmsinglecell``); the loaders of the files that
``scripts/build_more_scrna_datasets.py`` makes (desc, scArches, scirpy, infercnvpy, scvi-tools)
are in ``_scrna_pypi``; :func:`pbmc68k_reduced` reads the file inside scanpy's wheel. Every loader reads
from disk, so each call returns a fresh, independent :class:`~anndata.AnnData`.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = [
    "hsmm",
    "official_census_vocab",
    "pbmc68k_reduced",
    "pbmc_celltypist",
    "pbmc_seurat_small",
    "pbmc_two_batch",
]

_DATA_DIR = Path(__file__).resolve().parent / "data"
_VOCAB_PATH = (
    Path(__file__).resolve().parent.parent / "scgpt" / "_data" / "default_census_vocab.json.gz"
)
_INFO_KEY = "omicformer_dataset"


def _read(filename: str, layer: str, script: str = "build_scrna_datasets.py") -> AnnData:
    """Read a bundled h5ad; ``X`` becomes float32 and is copied into ``layers[layer]``."""
    import anndata as ad
    import numpy as np

    path = _DATA_DIR / filename
    if not path.exists():
        msg = (
            f"Bundled dataset {path} is missing; reinstall omicformer or rebuild it with "
            f"`python scripts/{script}`."
        )
        raise FileNotFoundError(msg)
    adata = ad.read_h5ad(path)
    adata.X = adata.X.astype(np.float32)
    adata.layers[layer] = adata.X.copy()
    return adata


def pbmc_celltypist() -> AnnData:
    """Immune cells with raw UMI counts: the sample matrix shipped in celltypist's wheel.

    The matrix is ``celltypist/data/samples/sample_cell_by_gene.csv`` from celltypist 1.7.1,
    stored unchanged (all 32,786 genes kept, including 22,976 that are zero in every cell).
    celltypist does not document where the sample comes from; its profile is of blood immune
    cells (``PTPRC`` detected in 91% of cells, myeloid-rich: ``LYZ`` in 88%). Gene symbols follow
    the 10x GRCh38 annotation; 83.5% of them are in the official scGPT vocabulary. The sample
    carries no cell labels and no batch.

    Returns
    -------
    AnnData of 559 cells x 32,786 genes. ``X`` and ``layers["counts"]`` hold the raw UMI counts
    (CSR, float32, integer-valued, 945 to 39,886 UMIs per cell). ``obs_names`` are ``Cell_1`` ...
    ``Cell_559``; ``var_names`` are gene symbols; ``uns["omicformer_dataset"]`` records the source.

    Notes
    -----
    Licence: MIT (celltypist). Citation: C. Domínguez Conde et al., "Cross-tissue immune cell
    analysis reveals tissue-specific features in humans", *Science* 376, eabl5197 (2022).

    Examples
    --------
    >>> from omicformer import datasets
    >>> adata = datasets.pbmc_celltypist()
    >>> adata.shape
    (559, 32786)
    """
    return _read("scrna_pbmc_celltypist.h5ad", "counts")


def pbmc_seurat_small() -> AnnData:
    """80 PBMCs x 230 genes with raw UMI counts: the counts behind Seurat's ``pbmc_small``.

    The file is ``Seurat/extdata/pbmc_raw.txt`` from Debian's ``r-cran-seurat`` 4.3.0 (a subset
    of 10x Genomics' public "3k PBMCs from a healthy donor" data), transposed to cells x genes.
    Every gene is also in :func:`pbmc_celltypist`; 94.3% are in the official scGPT vocabulary.
    Tiny: meant for smoke tests of raw-count tokenisation, not for biology.

    Returns
    -------
    AnnData of 80 cells x 230 genes. ``X`` and ``layers["counts"]`` hold the raw UMI counts (CSR,
    float32, integer-valued, max 138). ``obs_names`` are 10x barcodes; no labels or batches.

    Notes
    -----
    Licence: MIT (Seurat); data by 10x Genomics. Citation: Y. Hao et al., "Integrated analysis of
    multimodal single-cell data", *Cell* 184, 3573-3587 (2021).

    Examples
    --------
    >>> from omicformer import datasets
    >>> datasets.pbmc_seurat_small().shape
    (80, 230)
    """
    return _read("scrna_pbmc_seurat_small.h5ad", "counts")


def hsmm() -> AnnData:
    """Differentiating human skeletal muscle myoblasts (Smart-seq, FPKM), Trapnell et al. 2014.

    From the Bioconductor data package HSMMSingleCell 1.18.0 (Debian ``r-bioc-hsmmsinglecell``):
    271 primary myoblasts captured on Fluidigm C1 at 0, 24, 48 and 72 hours after switching
    from growth medium (GM) to differentiation medium (DM). ``scripts/build_scrna_datasets.py``
    (1) sets FPKM values below 0.001 to 0 (1.9% of the non-zeros: residue of Cufflinks' EM down
    to 1e-318, a fraction of one fragment, which scGPT would otherwise count as expressed), and,
    to keep the package small, (2) keeps the 21,412 of 47,192 genes detected in at least 3 cells
    (99.9% of the total FPKM) and (3) rounds FPKM to 4 significant digits (relative error
    <= 5e-4).

    Returns
    -------
    AnnData of 271 cells x 21,412 genes. ``X`` and ``layers["fpkm"]`` hold FPKM (CSR, float32;
    **not counts** — no raw counts exist for this data set).

    ``var_names`` are gene symbols (``gene_short_name``), made unique: when several Ensembl genes
    share a symbol, the one detected in most cells keeps it and the others get ``-1``, ``-2``, ...;
    82.7% of them are in the official scGPT vocabulary. ``var`` columns: ``gene_ids`` (versioned
    Ensembl id), ``biotype``, ``n_cells`` (cells with FPKM >= 0.001).

    ``obs`` columns: ``Library`` (capture plate, 4 levels: SCC10013, SCC10014, SCC10015,
    SCC10023), ``Well``, ``Hours`` (ordered: 0, 24, 48, 72), ``Media`` (GM, DM),
    ``Mapped.Fragments``, ``Pseudotime`` and ``State`` (1, 2, 3; Monocle's ordering as shipped
    with the package). The original ``Library`` value is ``Library + "_" + Well``. Each plate
    holds exactly one time point, so ``Library`` as a batch is fully confounded with ``Hours``:
    integrating over it also removes the differentiation signal.

    Notes
    -----
    Licence: Artistic-2.0. Citation: C. Trapnell et al., "The dynamics and regulators of cell fate
    decisions are revealed by pseudotemporal ordering of single cells", *Nat. Biotechnol.* 32,
    381-386 (2014).

    Examples
    --------
    >>> from omicformer import datasets
    >>> adata = datasets.hsmm()
    >>> adata.obs["Hours"].value_counts().sort_index().tolist()
    [69, 74, 79, 49]
    """
    return _read("scrna_hsmm.h5ad", "fpkm")


def pbmc68k_reduced() -> AnnData:
    """Labelled PBMCs (10 cell types), log-normalised, from the file inside scanpy's wheel.

    Reads ``scanpy/datasets/10x_pbmc68k_reduced.h5ad`` through
    :func:`scanpy.datasets.pbmc68k_reduced` (no network access) and puts its log-normalised
    ``.raw`` matrix in ``X``. **No raw counts exist for this data set**; scanpy only ships
    ``log1p(normalize_total(counts, 1e4))`` of 765 genes. That transform is increasing within each
    cell and keeps zeros at zero, so scGPT's per-cell binning (quantiles of a cell's non-zero
    values, then ``np.digitize``) gives the same bins from these values as from the counts of the
    same genes: the binned input, and hence the scGPT embedding, is unaffected.

    Returns
    -------
    AnnData of 700 cells x 765 genes. ``X`` and ``layers["lognorm"]`` hold the log-normalised
    values (CSR, float32, non-negative, max 6.49); ``layers["scaled"]`` is scanpy's original
    ``X`` (dense, per-gene z-scores, -2.0 to 28.4). ``obs`` holds
    ``bulk_labels`` (10 cell types, e.g. Dendritic 240, CD14+ Monocyte 129, CD19+ B 95),
    ``louvain``, ``phase``, ``n_counts``, ``n_genes``, ``percent_mito``, ``S_score``,
    ``G2M_score``; ``obsm`` holds ``X_pca`` and ``X_umap``; ``uns`` the label colours. 764 of the
    765 genes are in :func:`pbmc_celltypist`.

    Notes
    -----
    Licence: BSD-3-Clause (scanpy); data by 10x Genomics. Citation: G. X. Y. Zheng et al.,
    "Massively parallel digital transcriptional profiling of single cells", *Nat. Commun.* 8,
    14049 (2017).

    Examples
    --------
    >>> from omicformer import datasets
    >>> adata = datasets.pbmc68k_reduced()
    >>> adata.obs["bulk_labels"].nunique()
    10
    """
    import anndata as ad
    import numpy as np
    import scanpy as sc
    import scipy.sparse as sp

    src = sc.datasets.pbmc68k_reduced()
    lognorm = sp.csr_matrix(src.raw.X, dtype=np.float32)
    adata = ad.AnnData(
        X=lognorm,
        obs=src.obs.copy(),
        var=src.var.copy(),
        obsm={k: np.asarray(src.obsm[k]).copy() for k in ("X_pca", "X_umap")},
        layers={"lognorm": lognorm.copy(), "scaled": np.asarray(src.X, dtype=np.float32).copy()},
    )
    for key in ("bulk_labels_colors", "louvain_colors"):
        adata.uns[key] = np.asarray(src.uns[key]).copy()
    adata.uns[_INFO_KEY] = {
        "source": "scanpy wheel, scanpy/datasets/10x_pbmc68k_reduced.h5ad",
        "license": "BSD-3-Clause",
        "processing": "X = .raw (log1p of counts normalised to 1e4 per cell); no raw counts",
    }
    return adata


def pbmc_two_batch() -> AnnData:
    """Raw counts from two separate PBMC experiments, as two real technical batches.

    Concatenates :func:`pbmc_celltypist` (559 cells) and :func:`pbmc_seurat_small` (80 cells) on
    their 230 shared genes (all genes of the Seurat file, in its order). The two sets differ in
    donor, chemistry and sequencing depth, so the batch effect is real; there are no cell labels.
    31 of the 230 genes are zero in every celltypist cell.

    Returns
    -------
    AnnData of 639 cells x 230 genes. ``X`` and ``layers["counts"]`` hold raw UMI counts (CSR,
    float32, integer-valued). ``obs["batch"]`` (categorical) is ``"celltypist"`` or ``"seurat"``.

    Notes
    -----
    Licences: MIT (celltypist, Seurat). Citations: see :func:`pbmc_celltypist` and
    :func:`pbmc_seurat_small`.

    Examples
    --------
    >>> from omicformer import datasets
    >>> adata = datasets.pbmc_two_batch()
    >>> adata.obs["batch"].value_counts().to_dict()
    {'celltypist': 559, 'seurat': 80}
    """
    import anndata as ad

    parts = {"celltypist": pbmc_celltypist(), "seurat": pbmc_seurat_small()}
    shared = parts["seurat"].var_names
    shared = shared[shared.isin(parts["celltypist"].var_names)]
    adata = ad.concat(
        {name: part[:, shared] for name, part in parts.items()},
        label="batch",
        index_unique=None,
    )
    adata.uns[_INFO_KEY] = {
        "source": "pbmc_celltypist() + pbmc_seurat_small(), shared genes",
        "license": "MIT",
        "processing": "concatenated on shared genes; obs['batch'] = dataset of origin",
    }
    return adata


def official_census_vocab() -> dict[str, int]:
    """The official scGPT gene vocabulary (CELLxGENE census genes), gene symbol -> token id.

    Copied from ``scgpt/tokenizer/default_census_vocab.json`` in the scgpt 0.2.4 wheel: 60,694
    human gene symbols with ids 0..60693 (``A1BG`` = 0) and no special tokens. The whole-human
    checkpoint's ``vocab.json`` is this mapping with ``<pad>``, ``<cls>``, ``<eoc>`` appended at
    60694..60696.

    Returns
    -------
    A new ``dict`` on every call.

    Notes
    -----
    Licence: MIT (scGPT). Citation: H. Cui et al., "scGPT: toward building a foundation model for
    single-cell multi-omics using generative AI", *Nat. Methods* 21, 1470-1480 (2024).

    Examples
    --------
    >>> from omicformer import datasets
    >>> vocab = datasets.official_census_vocab()
    >>> len(vocab), vocab["A1BG"]
    (60694, 0)
    """
    with gzip.open(_VOCAB_PATH, "rt", encoding="utf-8") as fh:
        return {str(k): int(v) for k, v in json.load(fh).items()}
