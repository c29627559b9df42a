"""Real single-cell RNA datasets from other PyPI packages, shipped inside omicformer.

``scripts/build_more_scrna_datasets.py`` reads the files of desc, scArches, scirpy, infercnvpy
and scvi-tools from their archives at build time only and writes compact copies to
``omicformer/datasets/data/``; the loaders here read those copies, so each call returns a fresh,
independent :class:`~anndata.AnnData` without network access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from ._scrna import _read

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

__all__ = [
    "hlca_query",
    "oligodendroglioma",
    "pbmc3k_desc",
    "pbmc_cite_two_batch",
    "pbmc_cite_two_batch_mudata",
    "wu2020_tcells",
]

_MORE = "build_more_scrna_datasets.py"  # builds the files of every loader here


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
