"""The data sets of ``benchmarks/integration.py`` (documented in its docstring, "Data sets").

Each builder returns ``(adata, batch_key, label_key)``: ``X`` is what scGPT reads (counts, or
``pbmc68k_reduced``'s log-normalised values), ``layers["lognorm"]`` and ``layers["counts"]``
what the baselines read; labels come from one marker-gene procedure per experiment
(``pbmc_markers``), from surface proteins (``pbmc_cite``), or from the data set's own
annotation (``hsmm``, ``wu2020_*``, ``oligodendroglioma``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).parent))
from annotation_sets import recover_counts
from pbmc_markers import MARKER_TO_SCORED, lognormalised, marker_labels

from omicformer import datasets


def coarse_marker_labels(lognorm: ad.AnnData) -> np.ndarray:
    names, _ = marker_labels(lognorm)
    return names.map(lambda n: MARKER_TO_SCORED.get(n, n)).to_numpy()


def _counts_experiment(raw: ad.AnnData, genes: pd.Index | None = None) -> ad.AnnData:
    """One experiment of raw counts on ``genes`` (default all), ``X`` = counts, marker labels.

    The labels come from the experiment's log-normalised data on all its genes.
    """
    lognorm = lognormalised(raw)
    genes = raw.var_names if genes is None else genes
    return ad.AnnData(
        X=raw[:, genes].X.copy(),
        obs=pd.DataFrame({"cell_type": coarse_marker_labels(lognorm)}, index=raw.obs_names),
        var=pd.DataFrame(index=genes),
        layers={"lognorm": lognorm[:, genes].X.copy(), "counts": raw[:, genes].X.copy()},
    )


def pbmc() -> tuple[ad.AnnData, str, str]:
    """1,259 PBMCs, two experiments; ``X`` = scGPT input, layers lognorm/counts."""
    a = datasets.pbmc68k_reduced()
    counts_a, note = recover_counts(a)
    if counts_a is None:
        raise RuntimeError(note)
    b = datasets.pbmc_celltypist()
    shared = a.var_names[a.var_names.isin(b.var_names)]
    keep_a = a.var_names.isin(shared)
    parts = {
        "pbmc68k_reduced": ad.AnnData(
            X=a[:, shared].X.copy(),
            obs=pd.DataFrame({"cell_type": coarse_marker_labels(a)}, index=a.obs_names),
            layers={"lognorm": a[:, shared].X.copy(), "counts": sp.csr_matrix(counts_a[:, keep_a])},
        ),
        "pbmc_celltypist": _counts_experiment(b, shared),
    }
    for p in parts.values():
        p.var_names = shared
    adata = ad.concat(parts, label="batch", index_unique="-")
    adata.obs["cell_type"] = adata.obs["cell_type"].astype("category")
    return adata, "batch", "cell_type"


def pbmc3k() -> tuple[ad.AnnData, str, str]:
    """3,259 PBMCs, two experiments of unequal size (raw counts); ``X`` = counts."""
    parts = {"pbmc3k_desc": _counts_experiment(datasets.pbmc3k_desc()),
             "pbmc_celltypist": _counts_experiment(datasets.pbmc_celltypist())}  # fmt: skip
    adata = ad.concat(parts, label="batch", index_unique="-", join="inner")
    adata.obs["cell_type"] = adata.obs["cell_type"].astype("category")
    return adata, "batch", "cell_type"


def hsmm() -> tuple[ad.AnnData, str, str]:
    """271 myoblasts, 4 plates; biology = Hours."""
    adata = datasets.hsmm()
    lognorm = lognormalised(adata)
    adata.layers["lognorm"] = lognorm.X
    adata.layers["counts"] = sp.csr_matrix(np.round(adata.layers["fpkm"].toarray()))
    adata.obs["Hours"] = adata.obs["Hours"].astype(str).astype("category")
    adata.obs["Library"] = adata.obs["Library"].astype("category")
    return adata, "Library", "Hours"


#: Protein (antibody-derived tag) marking each coarse type in ``pbmc_cite``.
PROTEIN_MARKERS = {"T": "CD3_TotalSeqB", "B": "CD19_TotalSeqB", "NK": "CD56_TotalSeqB",
                   "myeloid": "CD14_TotalSeqB"}  # fmt: skip


def protein_labels(adata: ad.AnnData, batch_key: str) -> np.ndarray:
    """T / B / NK / myeloid per cell from its surface proteins (procedure in the module docstring)."""
    proteins = adata.obsm["protein_expression"]
    labels = np.empty(adata.n_obs, dtype=object)
    for b in adata.obs[batch_key].unique():
        rows = (adata.obs[batch_key] == b).to_numpy()
        x = np.log1p(proteins.loc[rows].to_numpy(np.float64))
        clr = pd.DataFrame(x - x.mean(axis=1, keepdims=True), columns=proteins.columns)
        z = pd.DataFrame({name: (clr[col] - clr[col].mean()) / clr[col].std()
                          for name, col in PROTEIN_MARKERS.items()})  # fmt: skip
        labels[rows] = z.idxmax(axis=1).to_numpy()
    return labels


def pbmc_cite() -> tuple[ad.AnnData, str, str]:
    """400 PBMCs, two 10x v3 CITE-seq runs; cell types from proteins, not from RNA."""
    adata = datasets.pbmc_cite_two_batch()
    lognorm = lognormalised(adata)
    out = ad.AnnData(
        X=adata.layers["counts"].copy(),
        obs=pd.DataFrame({"batch": adata.obs["batch"].astype("category"),
                          "cell_type": protein_labels(adata, "batch")}, index=adata.obs_names),
        var=pd.DataFrame(index=adata.var_names),
        layers={"lognorm": lognorm.X.copy(), "counts": adata.layers["counts"].copy()},
    )  # fmt: skip
    out.obs["cell_type"] = out.obs["cell_type"].astype("category")
    return out, "batch", "cell_type"


def _beside_pbmc(others: dict[str, ad.AnnData]) -> tuple[ad.AnnData, str, str]:
    """``pbmc``'s two experiments and ``others`` (raw counts, one experiment each, labelled
    by the marker procedure on all their genes) as batches, on the genes all of them share."""
    two, _, _ = pbmc()
    shared = two.var_names
    for other in others.values():
        shared = shared[shared.isin(other.var_names)]
    parts = {str(name): two[two.obs["batch"] == name, shared].copy()
             for name in two.obs["batch"].cat.categories}  # fmt: skip
    parts.update({name: _counts_experiment(other, shared) for name, other in others.items()})
    for part in parts.values():
        for key in ("lognorm", "counts"):
            part.layers[key] = sp.csr_matrix(part.layers[key])
        part.X = sp.csr_matrix(part.X)
        part.obs = part.obs[["cell_type"]]
    adata = ad.concat(parts, label="batch", index_unique="-")
    adata.obs["cell_type"] = adata.obs["cell_type"].astype("category")
    return adata, "batch", "cell_type"


def _cite_runs() -> dict[str, ad.AnnData]:
    """``pbmc_cite``'s two CITE-seq runs (raw counts), one experiment each."""
    runs = datasets.pbmc_cite_two_batch()
    return {str(name): runs[runs.obs["batch"] == name].copy()
            for name in runs.obs["batch"].cat.categories}  # fmt: skip


def _pbmc3k_cells() -> dict[str, ad.AnnData]:
    """700 cells of ``datasets.pbmc3k_desc()`` drawn at random (seed 0)."""
    raw = datasets.pbmc3k_desc()
    rows = np.sort(np.random.default_rng(0).choice(raw.n_obs, 700, replace=False))
    return {"pbmc3k_desc": raw[rows].copy()}


def pbmc4() -> tuple[ad.AnnData, str, str]:
    """1,659 PBMCs in four batches: ``pbmc``'s two experiments and ``pbmc_cite``'s two runs."""
    return _beside_pbmc(_cite_runs())


def pbmc3() -> tuple[ad.AnnData, str, str]:
    """1,959 PBMCs in three batches: ``pbmc``'s two experiments and 700 cells of PBMC 3k."""
    return _beside_pbmc(_pbmc3k_cells())


def pbmc5() -> tuple[ad.AnnData, str, str]:
    """2,359 PBMCs in five batches: every bundled PBMC experiment (``pbmc4``'s four batches and
    ``pbmc3``'s 700 cells of PBMC 3k)."""
    return _beside_pbmc({**_cite_runs(), **_pbmc3k_cells()})


def _pbmc5_pair(first: str, second: str):
    """Two of ``pbmc5``'s batches, with its genes and labels."""

    def make() -> tuple[ad.AnnData, str, str]:
        five, batch_key, label_key = pbmc5()
        adata = five[five.obs[batch_key].isin([first, second]).to_numpy()].copy()
        for key in (batch_key, label_key):
            adata.obs[key] = adata.obs[key].astype(str).astype("category")
        return adata, batch_key, label_key

    make.__doc__ = f"``pbmc5``'s batches {first!r} and {second!r}."
    return make


def pbmc_two_batch() -> tuple[ad.AnnData, str, str]:
    """``datasets.pbmc_two_batch()``'s two experiments (559 + 80 cells) on their 230 shared
    genes, each labelled by the marker procedure on all its own genes."""
    parts = {"celltypist": datasets.pbmc_celltypist(), "seurat": datasets.pbmc_seurat_small()}
    shared = datasets.pbmc_two_batch().var_names
    parts = {name: _counts_experiment(raw, shared) for name, raw in parts.items()}
    adata = ad.concat(parts, label="batch", index_unique="-")
    adata.obs["cell_type"] = adata.obs["cell_type"].astype("category")
    return adata, "batch", "cell_type"


def wu2020(batch_key: str):
    """``datasets.wu2020_tcells()``'s 200 T cells, batches ``batch_key`` (``source`` or
    ``patient``), biology = the authors' 16 subtypes (``cluster_orig``)."""

    def make() -> tuple[ad.AnnData, str, str]:
        raw = datasets.wu2020_tcells()  # X = layers["counts"]
        adata = ad.AnnData(
            X=raw.X.copy(),
            obs=raw.obs[[batch_key, "cluster_orig"]].astype(str).astype("category"),
            var=pd.DataFrame(index=raw.var_names),
            layers={"lognorm": lognormalised(raw).X.copy(), "counts": raw.X.copy()},
        )
        return adata, batch_key, "cluster_orig"

    make.__doc__ = f"``wu2020_tcells`` by {batch_key!r}, labels ``cluster_orig``."
    return make


def oligodendroglioma() -> tuple[ad.AnnData, str, str]:
    """184 oligodendroglioma cells (Smart-seq2), the five patients (tumours) as batches;
    biology = malignant / oligodendrocyte / microglia-macrophage."""
    raw = datasets.oligodendroglioma()
    kind = raw.obs["cell_type"].astype(str).str.replace(r"^malignant_.*", "malignant", regex=True)
    obs = pd.DataFrame(
        {"patient": [name.split("_")[0] for name in raw.obs_names], "cell_type": kind.to_numpy()},
        index=raw.obs_names,
    ).astype("category")
    adata = ad.AnnData(
        X=raw.X.copy(), obs=obs, var=pd.DataFrame(index=raw.var_names),
        layers={"lognorm": lognormalised(raw).X.copy(), "counts": sp.csr_matrix(np.round(
            raw.X.toarray()))},
    )  # fmt: skip
    return adata, "patient", "cell_type"


SETS = {"pbmc": pbmc, "hsmm": hsmm, "pbmc_cite": pbmc_cite, "pbmc3k": pbmc3k, "pbmc4": pbmc4,
        "pbmc3": pbmc3, "pbmc5": pbmc5,
        "pair_pbmc68k_pbmc3k": _pbmc5_pair("pbmc68k_reduced", "pbmc3k_desc"),
        "pair_celltypist_cite5k": _pbmc5_pair("pbmc_celltypist", "pbmc_5k_protein_v3"),
        "pair_pbmc68k_cite10k": _pbmc5_pair("pbmc68k_reduced", "pbmc_10k_protein_v3"),
        "pair_pbmc3k_cite5k": _pbmc5_pair("pbmc3k_desc", "pbmc_5k_protein_v3"),
        "pbmc_two_batch": pbmc_two_batch,
        "wu2020_source": wu2020("source"), "wu2020_patient": wu2020("patient"),
        "oligodendroglioma": oligodendroglioma}  # fmt: skip
#: Sets a run without ``--sets`` evaluates (``pbmc3k``: about an hour of scVI per seed).
DEFAULT_SETS = ["pbmc", "hsmm", "pbmc_cite"]
