"""Real single-cell RNA datasets shipped inside the package (no network access needed).

The ``.h5ad`` files in ``omicformer/datasets/data/`` are built from data that other registry
packages ship: ``scripts/build_scrna_datasets.py`` (celltypist on PyPI, Debian's
``r-cran-seurat`` and ``r-bioc-hsmmsinglecell``) and ``scripts/build_more_scrna_datasets.py``
(the PyPI packages desc, scArches, scirpy, infercnvpy and scvi-tools, read as archives at build
time only); :func:`pbmc68k_reduced` reads the file inside scanpy's wheel. Every loader reads
from disk, so each call returns a fresh, independent :class:`~anndata.AnnData`.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

__all__ = [
    "hlca_query",
    "hsmm",
    "official_census_vocab",
    "oligodendroglioma",
    "pbmc3k_desc",
    "pbmc68k_reduced",
    "pbmc_celltypist",
    "pbmc_cite_two_batch",
    "pbmc_cite_two_batch_mudata",
    "pbmc_seurat_small",
    "pbmc_two_batch",
    "wu2020_tcells",
]

_DATA_DIR = Path(__file__).resolve().parent / "data"
_VOCAB_PATH = (
    Path(__file__).resolve().parent.parent / "scgpt" / "_data" / "default_census_vocab.json.gz"
)
_INFO_KEY = "omicformer_dataset"
_MORE = "build_more_scrna_datasets.py"  # builds the files of pbmc3k_desc ... pbmc_cite_two_batch


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
    (CSR, float32, integer-valued, 944 to 39,886 UMIs per cell). ``obs_names`` are ``Cell_1`` ...
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


def pbmc3k_desc() -> AnnData:
    """10x Genomics' 3k PBMCs with raw UMI counts and cell types from the scanpy tutorial.

    The counts are ``desc/datasets/pbmc.h5ad`` from the desc 2.1.1 wheel on PyPI: the 2,700 cells
    x 32,738 genes of 10x's "3k PBMCs from a healthy donor" (the data of scanpy's and Seurat's
    PBMC 3k tutorials). ``scripts/build_more_scrna_datasets.py`` keeps the 16,634 genes detected
    in at least one cell (most detected first) and adds labels made by one procedure:

    1. the scanpy PBMC 3k tutorial clustering of the counts: ``filter_cells(min_genes=200)``,
       ``filter_genes(min_cells=3)``, cells with < 2,500 genes and < 5% mitochondrial counts
       (2,638 pass), ``normalize_total(1e4)``, ``log1p``, 1,838 highly variable genes,
       ``regress_out`` of total and mitochondrial counts, ``scale(max_value=10)``, PCA,
       ``neighbors(n_neighbors=10, n_pcs=40)``, Leiden (igraph, resolution 1.0, seed 0; the
       tutorial's 0.9 merges CD8 T and NK cells with scanpy 1.11 and igraph 1.0);
    2. names from the tutorial's marker table (IL7R: CD4 T; CD14, LYZ: CD14+ Monocytes; MS4A1:
       B; CD8A: CD8 T; GNLY, NKG7: NK; FCGR3A, MS4A7: FCGR3A+ Monocytes; FCER1A, CST3:
       Dendritic; PPBP: Megakaryocytes): each cluster takes the type whose markers have the
       highest mean z-score of cluster-mean log-normalised expression. The 8 clusters receive 8
       different types.

    Returns
    -------
    AnnData of 2,700 cells x 16,634 genes. ``X`` and ``layers["counts"]`` hold the raw UMI counts
    (CSR, float32, integer-valued, 548 to 15,844 per cell). ``obs["cell_type_scanpy_pbmc3k"]``
    (categorical): CD4 T 1,138, CD14+ Monocytes 486, B 341, CD8 T 310, NK 164, FCGR3A+
    Monocytes 150, Dendritic 36, Megakaryocytes 13, and NaN for the 62 cells that fail QC;
    ``obs["leiden_scanpy_pbmc3k"]`` holds the clusters and ``uns["cell_type_scanpy_pbmc3k"]`` the
    procedure, parameters, marker table, cluster-to-type map and package versions.
    ``var["gene_ids"]`` are Ensembl ids (10x's hg19 annotation); 87.9% of the gene symbols are in
    the official scGPT vocabulary.

    The 80 cells of :func:`pbmc_seurat_small` are among these (barcode + ``"-1"``, same counts),
    about 10 of each type: hold them out together when either set is used for evaluation.

    Notes
    -----
    Licence: MIT (desc); data by 10x Genomics. Citations: G. X. Y. Zheng et al., "Massively
    parallel digital transcriptional profiling of single cells", *Nat. Commun.* 8, 14049 (2017);
    X. Li et al., "Deep learning enables accurate clustering with batch effect removal in
    single-cell RNA-seq analysis", *Nat. Commun.* 11, 2338 (2020) (desc); F. A. Wolf,
    P. Angerer, F. J. Theis, "SCANPY: large-scale single-cell gene expression data analysis",
    *Genome Biol.* 19, 15 (2018) (the clustering).

    Examples
    --------
    >>> from omicformer import datasets
    >>> adata = datasets.pbmc3k_desc()
    >>> int((adata.obs["cell_type_scanpy_pbmc3k"] == "B").sum())
    341
    """
    return _read("scrna_pbmc3k.h5ad", "counts", _MORE)


def hlca_query() -> AnnData:
    """1,786 human lung cells with raw UMI counts: the query data of scArches' HLCA tutorial.

    ``notebooks/HLCA_query.h5ad`` from the scArches 0.6.1 source package on PyPI: one fresh-tissue
    10x sample from the lung autopsy atlas of Delorey et al. (2021, GEO GSE171668), which
    scArches maps onto the Human Lung Cell Atlas (HLCA) in its tutorial. It carries no cell
    types and one batch.

    The file indexes genes by Ensembl id. Its ``gene_names`` column was damaged upstream (the
    leading characters G, R, C, h, 3, 8 and ``_`` are stripped, as by ``lstrip("GRCh38_")``:
    ``LIC3`` for CLIC3, ``D1`` for RCCD1) and is not kept. ``var_names`` are symbols looked up by
    id, first match wins: the GENCODE v44 table shipped in celltypist 1.7.1 (19,104 genes); for
    ids retired before v44, 10x's hg19 symbol of the same id in :func:`pbmc3k_desc`'s source file
    when it agrees with the damaged name (33); otherwise the Ensembl id itself (118 genes, 0.04%
    of the counts). Symbols shared by several ids are made unique with ``-1``, ``-2``, ... (the
    most detected id keeps the bare symbol). 85.9% of the genes, carrying 99.2% of the counts,
    are in the official scGPT vocabulary.

    Returns
    -------
    AnnData of 1,786 cells x 19,255 genes (those detected in at least one cell, of 33,567; most
    detected first). ``X`` and ``layers["counts"]`` hold the raw UMI counts (CSR, float32,
    integer-valued, 437 to 20,230 per cell). ``var["gene_ids"]`` are the Ensembl ids (10x
    GRCh38-2020 annotation); ``var["symbol_source"]`` says which rule named each gene
    (``"GENCODE v44"``, ``"10x hg19 (desc pbmc3k)"`` or ``"Ensembl id"``).

    Notes
    -----
    Licence: BSD-3-Clause (the LICENSE file of scArches 0.6.1; its package metadata says MIT);
    the GENCODE table comes from celltypist (MIT). Citations: T. M. Delorey et al., "COVID-19
    tissue atlases reveal SARS-CoV-2 pathology and cellular targets", *Nature* 595, 107-113
    (2021); L. Sikkema et al., "An integrated cell atlas of the lung in health and disease",
    *Nat. Med.* 29, 1563-1577 (2023); M. Lotfollahi et al., "Mapping single-cell data to
    reference atlases by transfer learning", *Nat. Biotechnol.* 40, 121-130 (2022).

    Examples
    --------
    >>> from omicformer import datasets
    >>> adata = datasets.hlca_query()
    >>> adata.var.loc["SFTPC", "gene_ids"]
    'ENSG00000168484'
    """
    return _read("scrna_hlca_query.h5ad", "counts", _MORE)


def wu2020_tcells() -> AnnData:
    """200 T cells from tumours, normal tissue and blood, with raw counts and T-cell subtypes.

    ``scirpy/tests/data/wu2020_200_v0_11.h5ad`` from the scirpy 0.22.5 wheel on PyPI: 200 T cells
    of Wu et al. (2020) from 14 patients with lung, endometrial, renal or colon cancer, sampled
    from the tumour, normal adjacent tissue (NAT) or blood, with the authors' subtype
    annotation. Genes with zero counts in all 200 cells are dropped (12,047 of 30,727 kept,
    most detected first); 88.3% are in the official scGPT vocabulary.

    Returns
    -------
    AnnData of 200 cells x 12,047 genes. ``X`` and ``layers["counts"]`` hold the raw UMI counts
    (CSR, float32, integer-valued, 173 to 9,818 per cell). ``obs`` columns (categorical):
    ``cluster_orig`` (the paper's 16 subtypes, e.g. ``4.3-TCF7``, ``4.6a-Treg``,
    ``8.1-Teff``, ``8.3a-Trm``; 4.x are CD4+ and 8.x CD8+ subsets), ``patient`` (14: Lung1-6,
    Endo1-3, Renal1-3, Colon1-2), ``sample`` (30, patient and tissue), ``source`` (Tumor 95,
    NAT 85, Blood 20) and ``clonotype_orig`` (the authors' TCR clonotype ids).
    ``obsm["X_umap_orig"]`` is the authors' UMAP. ``var_names`` are NCBI gene symbols and
    ``var["gene_ids"]`` NCBI Gene ids (``GeneID:...``). The file's TCR chain columns are not
    kept (scirpy reads them).

    Notes
    -----
    Licence: BSD-3-Clause (scirpy). Citations: T. D. Wu et al., "Peripheral T cell expansion
    predicts tumour infiltration and clinical response", *Nature* 579, 274-278 (2020);
    G. Sturm et al., "Scirpy: a Scanpy extension for analyzing single-cell T-cell receptor-
    sequencing data", *Bioinformatics* 36, 4817-4818 (2020).

    Examples
    --------
    >>> from omicformer import datasets
    >>> adata = datasets.wu2020_tcells()
    >>> adata.obs["source"].value_counts().to_dict()
    {'Tumor': 95, 'NAT': 85, 'Blood': 20}
    """
    return _read("scrna_wu2020_tcells.h5ad", "counts", _MORE)


def oligodendroglioma() -> AnnData:
    """184 oligodendroglioma cells (Smart-seq2) with cell types: the inferCNV example data.

    ``infercnvpy/datasets/data/oligodendroglioma.h5ad`` from the infercnvpy 0.6.1 wheel on PyPI,
    the example data of inferCNV drawn from Tirosh et al. (2016): malignant cells of four tumours
    and non-malignant oligodendrocytes and microglia/macrophages. The values are normalised
    expression as shipped, **not counts** (positive, non-integer, 75,000 to 128,000 per cell
    over these 9,450 genes). To keep the package small the build script rounds them to 11
    significant bits (relative error <= 4.9e-4, the bound of :func:`hsmm`'s rounding; 0.17% of
    the values change scGPT bin, with 51 per-cell quantile bins) and orders the genes by the
    number of cells detecting them. 93.9% of the genes are in the official scGPT vocabulary.

    Returns
    -------
    AnnData of 184 cells x 9,450 genes. ``X`` and ``layers["norm"]`` hold the normalised values
    (CSR, float32). ``obs["cell_type"]`` (categorical): malignant_93 40, malignant_97 35,
    malignant_MGH53 34, malignant_MGH36 33 (one per tumour), Oligodendrocytes (non-malignant)
    23, Microglia/Macrophage 19. ``var`` holds each gene's ``chromosome``, ``start`` and ``end``
    (as inferCNV needs them).

    Notes
    -----
    Licence: BSD-3-Clause (infercnvpy). Citation: I. Tirosh et al., "Single-cell RNA-seq
    supports a developmental hierarchy in human oligodendroglioma", *Nature* 539, 309-313
    (2016); inferCNV of the Trinity CTAT Project (Broad Institute).

    Examples
    --------
    >>> from omicformer import datasets
    >>> adata = datasets.oligodendroglioma()
    >>> adata.obs["cell_type"].nunique()
    6
    """
    return _read("scrna_oligodendroglioma.h5ad", "norm", _MORE)


def pbmc_cite_two_batch(proteins: Literal["shared", "all"] = "shared") -> AnnData:
    """400 PBMCs from two 10x CITE-seq runs: RNA counts, protein counts and a real batch effect.

    The scvi-tools 1.4.2 source package on PyPI ships 200-cell subsets of two 10x Genomics
    data sets of healthy-donor PBMCs with TotalSeq-B antibodies, v3 chemistry
    (``tests/test_data/pbmc_10k_protein_v3.h5ad`` and ``pbmc_5k_protein_v3.h5ad``). The build
    script concatenates them on the 15,792 genes both files have and keeps the 14,520 detected
    in at least one of the 400 cells (most detected first); 87.5% are in the official scGPT
    vocabulary. There are no cell labels.

    Parameters
    ----------
    proteins
        ``"shared"``: the 14 proteins both runs measured. ``"all"``: all 29 proteins of the 5k
        panel; the 15 that the 10k run did not measure are 0 in its cells, which scvi-tools'
        totalVI reads as missing in that batch.

    Returns
    -------
    AnnData of 400 cells x 14,520 genes. ``X`` and ``layers["counts"]`` hold the raw UMI counts
    (CSR, float32, integer-valued, 918 to 19,439 per cell). ``obs["batch"]`` (categorical) is
    ``"pbmc_10k_protein_v3"`` or ``"pbmc_5k_protein_v3"`` (200 each); ``obs_names`` are the
    barcode, ``"-"`` and the batch (two barcodes occur in both runs).
    ``obsm["protein_expression"]`` is a data frame of protein counts (float32, integer-valued;
    columns such as ``CD3_TotalSeqB``) and ``uns["protein_measured"]`` maps each batch to the
    proteins it measured.

    Notes
    -----
    Licence: BSD-3-Clause (scvi-tools); data by 10x Genomics. Citations: M. Stoeckius et al.,
    "Simultaneous epitope and transcriptome measurement in single cells", *Nat. Methods* 14,
    865-868 (2017) (CITE-seq); A. Gayoso et al., "Joint probabilistic modeling of single-cell
    multi-omic data with totalVI", *Nat. Methods* 18, 272-282 (2021).

    Examples
    --------
    >>> from omicformer import datasets
    >>> adata = datasets.pbmc_cite_two_batch()
    >>> adata.obsm["protein_expression"].shape
    (400, 14)
    """
    import numpy as np

    if proteins not in ("shared", "all"):
        msg = f"proteins must be 'shared' or 'all', not {proteins!r}."
        raise ValueError(msg)
    adata = _read("scrna_pbmc_cite.h5ad", "counts", _MORE)
    measured = {str(b): [str(p) for p in v] for b, v in adata.uns["protein_measured"].items()}
    adata.uns["protein_measured"] = measured
    table = adata.obsm["protein_expression"].astype(np.float32)
    if proteins == "shared":
        keep = set.intersection(*(set(v) for v in measured.values()))
        table = table.loc[:, [c for c in table.columns if c in keep]]
    adata.obsm["protein_expression"] = table
    return adata


def pbmc_cite_two_batch_mudata(proteins: Literal["shared", "all"] = "shared") -> MuData:
    """:func:`pbmc_cite_two_batch` as a :class:`~mudata.MuData` with ``rna`` and ``prot``.

    Needs the optional ``mudata`` package (``pip install mudata``).

    Parameters
    ----------
    proteins
        Which proteins the ``prot`` modality holds, as in :func:`pbmc_cite_two_batch`.

    Returns
    -------
    MuData of 400 cells with modalities ``"rna"`` (14,520 genes; ``X`` and ``layers["counts"]``
    raw UMI counts) and ``"prot"`` (14 or 29 proteins; ``X`` and ``layers["counts"]`` protein
    counts, dense float32). ``obs["batch"]`` is set on the MuData and on both modalities.

    Notes
    -----
    Licence and citations: see :func:`pbmc_cite_two_batch`; MuData: D. Bredikhin, I. Kats,
    O. Stegle, "MUON: multimodal omics analysis framework", *Genome Biol.* 23, 42 (2022).

    Examples
    --------
    >>> from omicformer import datasets
    >>> mdata = datasets.pbmc_cite_two_batch_mudata()
    >>> mdata.mod["prot"].shape
    (400, 14)
    """
    try:
        import mudata as md
    except ImportError as err:
        msg = "pbmc_cite_two_batch_mudata needs mudata: `pip install mudata`."
        raise ImportError(msg) from err
    import anndata as ad
    import numpy as np
    import pandas as pd

    rna = pbmc_cite_two_batch(proteins)
    table = rna.obsm.pop("protein_expression")
    values = table.to_numpy(dtype=np.float32)
    prot = ad.AnnData(
        values,
        obs=rna.obs[["batch"]].copy(),
        var=pd.DataFrame(index=table.columns.astype(str)),
        layers={"counts": values.copy()},
    )
    prot.uns["protein_measured"] = rna.uns.pop("protein_measured")
    mdata = md.MuData({"rna": rna, "prot": prot})
    mdata.obs["batch"] = rna.obs["batch"].array
    return mdata


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
