"""Batch integration: ``scgpt.tl.integrate`` vs unintegrated PCA, ComBat, Harmony and scVI.

Every method gets the same cells and writes one embedding; ``scib-metrics``' ``Benchmarker``
scores them all in one pass (bio conservation: isolated labels, KMeans NMI/ARI, label
silhouette, cLISI; batch correction: BRAS, iLISI, kBET per label, graph connectivity, PCR
comparison against the unintegrated PCA) and the script prints the unscaled aggregate scores
(``Bio conservation``, ``Batch correction``, ``Total`` = 0.6 bio + 0.4 batch), mean ± sample
sd over seeds, and the mean wall seconds of each method.

Data sets
---------
Built in ``benchmarks/integration_sets.py`` (``SETS``).

``pbmc`` — two real 10x PBMC experiments as two batches: ``datasets.pbmc68k_reduced()`` (700
cells, log-normalised, 765 genes) and ``datasets.pbmc_celltypist()`` (559 cells, raw counts), on
their 764 shared genes: 1,259 cells. Labels come from one marker-gene procedure applied to each
experiment separately (``pbmc_markers.marker_labels``: Ward clustering of the log-normalised
data into 12 clusters, each cluster named by its best marker score; markers a data set lacks
are left out of their type's mean), then coarsened to T, B, NK, myeloid (the monocyte and
dendritic types) and megakaryocyte. On ``pbmc68k_reduced`` these labels agree with its curated
``bulk_labels`` (coarsened the same way) for 641 of its 700 cells; the 30 CD8 T cells named NK
are the main difference.

``pbmc_cite`` — ``datasets.pbmc_cite_two_batch()``: 400 PBMCs from two 10x v3 CITE-seq runs
(``pbmc_10k_protein_v3``, ``pbmc_5k_protein_v3``, 200 each; 14,520 genes; raw counts), a
milder batch effect than ``pbmc``'s two experiments. Labels come from the 14 surface proteins
both runs measured, not from the RNA the methods see: per run, each cell's protein counts are
CLR-transformed (``log1p``, minus the cell's mean), each of CD3 (T), CD19 (B), CD56 (NK) and
CD14 (myeloid) is z-scored over the run's cells, and the cell takes the type of its highest z
(T 199, myeloid 114, NK 53, B 34; the types' mean RNA levels of CD3E, MS4A1, NKG7/GNLY and
CD14/LYZ agree).

``pbmc3k`` (only with ``--sets pbmc3k``) — ``datasets.pbmc3k_desc()`` (2,700 cells) and
``datasets.pbmc_celltypist()`` (559 cells), two 10x experiments with raw counts, on their
16,601 shared genes: 3,259 cells, batches of unequal size. Labels from the same marker-gene
procedure as ``pbmc`` (the curated PBMC 3k labels are not used, so both batches are labelled
alike). scVI gets all 16,601 genes, as every method gets all genes of the other sets, which
makes it slow here (about an hour per seed on one thread).

``pbmc4`` (only with ``--sets pbmc4``; a set no default was chosen on) — ``pbmc``'s two
experiments and ``pbmc_cite``'s two runs as four batches (700, 559, 200 and 200 cells) on the
697 genes all four share: 1,659 cells. Labels from ``pbmc``'s marker-gene procedure, applied
to each of the four batches separately (the CITE-seq runs on all their genes); not the
proteins, so that all four batches are labelled alike.

``pbmc3`` (only with ``--sets pbmc3``) — ``pbmc``'s two experiments and 700 cells of
``datasets.pbmc3k_desc()`` drawn at random (seed 0) as three batches, on the genes all three
share: 1,959 cells, each batch labelled by ``pbmc``'s marker-gene procedure (PBMC 3k's cells on
all its genes). The set on which two batches per minibatch (``tl.integrate``'s
``balance_batches`` for more than two batches) was chosen, added for that; ``pbmc4`` stayed
held out.

``pbmc5`` (only with ``--sets pbmc5``; added 2026-12-05 after every default was set, to check
them) — every bundled PBMC experiment as five batches: ``pbmc4``'s four and ``pbmc3``'s 700
PBMC 3k cells (the same draw), on the genes all five share, labelled as ``pbmc4``: 2,359 cells.

``pair_pbmc68k_pbmc3k``, ``pair_celltypist_cite5k``, ``pair_pbmc68k_cite10k`` (only when
named; added 2026-12-05 after every default was set, as two-batch pairings no setting was chosen
on) — two of ``pbmc5``'s batches each, with ``pbmc5``'s genes and labels: ``pbmc68k_reduced``
with the 700 PBMC 3k cells (1,400 cells), ``pbmc_celltypist`` with the 5k CITE-seq run (759
cells, 559 and 200: unequal), ``pbmc68k_reduced`` with the 10k CITE-seq run (900 cells).
``pair_pbmc3k_cite5k`` (added later, after the two-batch route was chosen by the batches'
zero-shot mixing, to check that rule): the 700 PBMC 3k cells with the 5k CITE-seq run (900
cells).

``pbmc_two_batch`` (only when named; added 2026-12-06 after every default was set) —
``datasets.pbmc_two_batch()``: ``pbmc_celltypist`` (559 cells) and Seurat's ``pbmc_small``
(80 cells), two 10x experiments with raw counts, on the 230 genes they share (few genes, a small
second batch); each experiment labelled by ``pbmc``'s marker procedure on all its own genes.

``wu2020_source``, ``wu2020_patient`` (only when named; added 2026-12-06 after every default
was set, as real batches of another tissue and design no setting was chosen on) —
``datasets.wu2020_tcells()``: 200 T cells of 14 cancer patients, raw counts, all 12,047 genes;
batches the tissue the cells came from (``source``: tumour 95, normal adjacent tissue 85, blood
20) or the patient (``patient``: 14 batches of 2 to 32 cells); biology the authors' 16 T-cell
subtypes (``cluster_orig``, 1 to 25 cells each), states of one lineage, so every method's
biology score is low.

``oligodendroglioma`` (only when named; added with the two above) —
``datasets.oligodendroglioma()``: 184 Smart-seq2 cells of oligodendroglioma, normalised TPM-like
values (not counts; scVI gets them rounded), 9,450 genes; batches the five patients (the cell
name's prefix: 57, 41, 40, 35 and 11 cells); biology malignant (142 cells, each tumour's own),
oligodendrocyte (23) or microglia/macrophage (19). Each tumour's malignant cells come from one
patient, so part of what separates the batches is biology.

``hsmm`` — ``datasets.hsmm()``: 271 differentiating myoblasts on 4 capture plates
(``Library``), biology = ``Hours`` (0, 24, 48, 72). Each plate holds one time point, so batch and
biology are fully confounded: removing the plate effect also removes the time signal, and no
method can score well on both. Kept because the issue asks for it; read its table with that in
mind. Its batch correction score leaves out BRAS and kBET, which compare batches within a
label and are undefined when no label spans two batches. The data are FPKM, not counts: scVI
gets ``round(FPKM)``.

Inputs per method
-----------------
* log-normalised matrix: ``log1p(normalize_total(x, 1e4))`` per experiment (``pbmc68k_reduced``
  already is; its counts are ``expm1(X) * n_counts / 1e4``, checked to be integers, for scVI);
* PCA (unintegrated, also the reference of the PCR comparison): top 2,000 ``seurat`` HVGs (all
  genes when fewer), z-scored, clipped at 10, 50 components;
* ComBat: ``sc.pp.combat`` on the log-normalised HVGs, then the same scaling and PCA;
* Harmony: ``harmonypy.run_harmony`` on the PCA (``random_state=seed``) with ``lamb=1`` (the
  ridge penalty of Harmony 1 and of harmonypy before 2.0), up to 20 iterations and
  ``epsilon_harmony=1e-4``: with harmonypy 2's defaults (lambda estimated, 10 iterations,
  epsilon 0.01) it stopped after one iteration on ``pbmc``, moving the PCs by 0.005 on average
  (their mean absolute value is 1.57), and scored the same as no integration;
* Harmony, mean of 5 starts (``harmony_mean5``): the mean of the components of 5 such runs
  (seeds ``omicformer._core._harmony.run_seeds(seed, 5)``), as ``tl.integrate`` averages its
  Harmony runs on its embedding (there with ``lamb=0.5`` since 2026-12-06), so that the
  averaging's gain can be told from the embedding's;
* scVI: counts, ``batch_key``, 2 layers, 30 latent dims (the scib benchmark settings), 400 epochs
  (``--quick``: 100), ``scvi.settings.seed = seed``;
* scGPT zero-shot: ``scgpt.tl.embed`` (default model, raw/log-normalised values as given; scGPT
  bins per cell so the two scales are equivalent);
* scGPT integrate: ``scgpt.tl.integrate(adata, batch_key=..., random_state=seed)`` with every
  other argument at its default (so with the correction of the embedding: for two batches
  apart in the pretrained embedding the cross-batch loss and MNN correction, else Harmony);
* scGPT integrate, ``dsbn=True``: the same with domain-specific batch norm, the documented
  choice when every batch holds other cells (hsmm; no correction then);
* scGPT integrate, ``mnn_weight=30`` + MNN correction (``scgpt_integrate_mnn``): the route
  for two batches apart, taken whatever the batches' zero-shot mixing (the two-batch default
  until 2026-12-05).

Timing: one torch and BLAS thread by default (``--threads``). Needs the ``benchmark`` extra
(``pip install -e ".[benchmark]"``: scib-metrics; harmonypy comes with the package).

    python benchmarks/integration.py                 # seeds 0 1 2: pbmc, hsmm, pbmc_cite
    python benchmarks/integration.py --quick         # seed 0, scVI 100 epochs
    python benchmarks/integration.py --sets pbmc --methods pca harmony scgpt_integrate
    python benchmarks/integration.py --sets pbmc3k --seeds 0   # the unequal pairing (slow scVI)
    python benchmarks/integration.py --sets pbmc4    # four batches of two kinds of experiment
    python benchmarks/integration.py --sets pbmc3    # three PBMC experiments
    python benchmarks/integration.py --sets pair_pbmc68k_pbmc3k pair_celltypist_cite5k \
        pair_pbmc68k_cite10k pair_pbmc3k_cite5k      # two-batch pairings no default was chosen on
    python benchmarks/integration.py --sets pbmc --methods scgpt_integrate scgpt_integrate_mnn
                                                     # two-batch default against the MNN route
    python benchmarks/integration.py --figure docs/_static/integration.png   # + UMAP figures
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
import torch
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).parent))
from integration_sets import (  # noqa: F401  (the sets, also for the other scripts and tests)
    DEFAULT_SETS,
    SETS,
    hsmm,
    pbmc,
    pbmc3,
    pbmc3k,
    pbmc4,
    pbmc5,
    pbmc_cite,
    protein_labels,
)

from omicformer import scgpt

METHODS = {
    "pca": "PCA (unintegrated)",
    "combat": "ComBat",
    "harmony": "Harmony",
    "harmony_mean5": "Harmony, mean of 5 starts",
    "scvi": "scVI",
    "scgpt_embed": "scGPT zero-shot embed",
    "scgpt_integrate": "scGPT integrate",
    "scgpt_integrate_dsbn": "scGPT integrate, dsbn=True",
    "scgpt_integrate_mnn": "scGPT integrate, mnn_weight=30 + MNN correction",
}
STOCHASTIC = {"harmony", "harmony_mean5", "scvi", "scgpt_integrate", "scgpt_integrate_dsbn",
              "scgpt_integrate_mnn"}  # fmt: skip


# ----------------------------------------------------------------------------------- methods
def _pca_of(x: ad.AnnData, seed: int) -> np.ndarray:
    x = x.copy()
    x.X = np.clip(sc.pp.scale(np.asarray(x.X.toarray() if sp.issparse(x.X) else x.X)), -10, 10)
    sc.pp.pca(x, n_comps=min(50, x.n_vars - 1, x.n_obs - 1), random_state=seed)
    return x.obsm["X_pca"]


def _hvg(adata: ad.AnnData) -> ad.AnnData:
    x = ad.AnnData(adata.layers["lognorm"].copy(), obs=adata.obs.copy(),
                   var=pd.DataFrame(index=adata.var_names))  # fmt: skip
    n_top = min(2000, x.n_vars)
    if n_top < x.n_vars:
        sc.pp.highly_variable_genes(x, n_top_genes=n_top, flavor="seurat")
        x = x[:, x.var["highly_variable"]].copy()
    return x


def pca(adata, batch_key, seed, args):
    return _pca_of(_hvg(adata), seed)


def combat(adata, batch_key, seed, args):
    x = _hvg(adata)
    x.X = np.asarray(x.X.toarray() if sp.issparse(x.X) else x.X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.combat(x, key=batch_key)
    return _pca_of(x, seed)


def harmony(adata, batch_key, seed, args):
    import harmonypy

    z = adata.obsm["X_pca"]
    ho = harmonypy.run_harmony(z.astype(np.float64), adata.obs, [batch_key], lamb=1.0,
                               max_iter_harmony=20, epsilon_harmony=1e-4, random_state=seed,
                               verbose=False)  # fmt: skip
    out = np.asarray(ho.Z_corr)
    return out.T if out.shape[0] != z.shape[0] else out


def harmony_mean5(adata, batch_key, seed, args):
    """The mean of 5 runs' components, as ``tl.integrate`` averages Harmony (``lamb=1`` here)."""
    from omicformer._core._harmony import run_seeds

    runs = [harmony(adata, batch_key, s, args) for s in run_seeds(seed, 5)]
    return np.mean(runs, axis=0)


def scvi_method(adata, batch_key, seed, args):
    import scvi

    scvi.settings.verbosity = logging.ERROR
    scvi.settings.seed = seed
    x = ad.AnnData(adata.layers["counts"].copy(), obs=adata.obs[[batch_key]].copy())
    scvi.model.SCVI.setup_anndata(x, batch_key=batch_key)
    vae = scvi.model.SCVI(x, n_layers=2, n_latent=30, gene_likelihood="nb")
    vae.train(max_epochs=args.scvi_epochs, accelerator="cpu", enable_progress_bar=False)
    return vae.get_latent_representation()


def scgpt_embed(adata, batch_key, seed, args):
    out = scgpt.tl.embed(adata, model=args.model, progress=False, random_state=seed, copy=True)
    return out.obsm["X_scgpt"]


def scgpt_integrate(adata, batch_key, seed, args, **kwargs):
    if not hasattr(scgpt.tl, "integrate"):
        return "not available"
    out = scgpt.tl.integrate(adata, batch_key=batch_key, model=args.model, random_state=seed,
                             progress=False, copy=True, **kwargs)  # fmt: skip
    return out.obsm["X_scgpt_integrated"]


def scgpt_integrate_dsbn(adata, batch_key, seed, args):
    """The documented choice for batches that hold different cells (hsmm)."""
    return scgpt_integrate(adata, batch_key, seed, args, dsbn=True)


def scgpt_integrate_mnn(adata, batch_key, seed, args):
    """The two-batch route for batches apart in the pretrained embedding, whatever they are."""
    return scgpt_integrate(adata, batch_key, seed, args, mnn_weight=30.0, correction="mnn")


RUN = {"pca": pca, "combat": combat, "harmony": harmony, "harmony_mean5": harmony_mean5,
       "scvi": scvi_method,
       "scgpt_embed": scgpt_embed, "scgpt_integrate": scgpt_integrate,
       "scgpt_integrate_dsbn": scgpt_integrate_dsbn,
       "scgpt_integrate_mnn": scgpt_integrate_mnn}  # fmt: skip


# ------------------------------------------------------------------------------------ scoring
def benchmark(adata, batch_key, label_key, keys) -> pd.DataFrame:
    from scib_metrics.benchmark import BatchCorrection, Benchmarker

    # BRAS and kBET are computed within each label across its batches; when every label sits in
    # one batch (hsmm: one time point per plate) they are undefined and left out.
    per_label = (adata.obs.groupby(label_key, observed=True)[batch_key].nunique() > 1).any()
    batch = BatchCorrection(bras=bool(per_label), kbet_per_label=bool(per_label))
    bm = Benchmarker(adata, batch_key=batch_key, label_key=label_key, embedding_obsm_keys=keys,
                     batch_correction_metrics=batch, pre_integrated_embedding_obsm_key="X_pca",
                     n_jobs=1, progress_bar=False)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bm.benchmark()
    res = bm.get_results(min_max_scale=False)
    return res.drop(index="Metric Type", errors="ignore").astype(float)


def evaluate(name: str, seeds: list[int], methods: list[str], args) -> pd.DataFrame:
    adata, batch_key, label_key = SETS[name]()
    print(f"\n{name}: {adata.n_obs} cells x {adata.n_vars} genes, batch {batch_key!r} "
          f"({adata.obs[batch_key].value_counts().to_dict()}), labels {label_key!r} "
          f"({adata.obs[label_key].value_counts().to_dict()})", flush=True)  # fmt: skip
    adata.obsm["X_pca"] = pca(adata, batch_key, 0, args)
    rows = []
    for seed in seeds:
        keys, seconds = [], {}
        for method in methods:
            if seed != seeds[0] and method not in STOCHASTIC:
                continue
            t0 = time.perf_counter()
            with threadpool_limits(args.threads):
                z = RUN[method](adata, batch_key, seed, args)
            if isinstance(z, str):
                print(f"  {method}: {z}")
                continue
            seconds[method] = time.perf_counter() - t0
            adata.obsm[f"Z_{method}"] = np.asarray(z, dtype=np.float32)
            keys.append(f"Z_{method}")
            print(f"  seed {seed} {method}: {seconds[method]:.1f} s", flush=True)
        res = benchmark(adata, batch_key, label_key, keys)
        if args.figure and seed == seeds[0] and "Z_scgpt_integrate" in adata.obsm:
            path = Path(args.figure)
            path = path.with_name(f"{path.stem}_{name}{path.suffix or '.png'}")
            scgpt.pl.integration(adata, batch_key=batch_key, color=label_key, basis_before="X_pca",
                                 basis_after="Z_scgpt_integrate", save=path, show=False)  # fmt: skip
            print(f"  figure: {path}")
        for key in keys:
            method = key[2:]
            row = res.loc[key].to_dict()
            rows.append({"set": name, "seed": seed, "method": method,
                         "seconds": seconds[method], **row})  # fmt: skip
    return pd.DataFrame(rows)


def print_table(res: pd.DataFrame, methods: list[str]) -> None:
    cols = ["Bio conservation", "Batch correction", "Total"]
    for name, part in res.groupby("set", sort=False):
        print(f"\n### {name}\n")
        print("| method | " + " | ".join(cols) + " | seconds | seeds |")
        print("|---|" + "---|" * (len(cols) + 2))
        for m in methods:
            r = part[part["method"] == m]
            if r.empty:
                continue
            cells = [f"{r[c].mean():.3f} ± {r[c].std():.3f}" if len(r) > 1 else f"{r[c].mean():.3f}"
                     for c in cols]  # fmt: skip
            print(
                f"| {METHODS[m]} | "
                + " | ".join(cells)
                + f" | {r['seconds'].mean():.0f} | {len(r)} |"
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sets", nargs="+", default=DEFAULT_SETS, choices=list(SETS))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--quick", action="store_true", help="seed 0 and 100 scVI epochs")
    p.add_argument("--scvi-epochs", type=int, default=None, help="default 400 (--quick: 100)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--model", default="default",
                   help='scGPT model for the scGPT rows: "default" or a model folder (an '
                   "official checkpoint or a scripts/train_default_scgpt.py output)")  # fmt: skip
    p.add_argument("--csv", default=None, help="also write every row to this CSV")
    p.add_argument("--figure", default=None,
                   help="write before (PCA) / after (scGPT integrate, first seed) UMAPs of each "
                   "set to this path, with the set's name appended to the file name")  # fmt: skip
    args = p.parse_args()
    if args.quick:
        args.seeds = args.seeds[:1]
    args.scvi_epochs = args.scvi_epochs or (100 if args.quick else 400)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import scib_metrics
    import scvi

    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({args.threads} thread(s)), scvi-tools {scvi.__version__}, scib-metrics "
          f"{scib_metrics.__version__}, scanpy {sc.__version__}; seeds {args.seeds}; "
          f"scGPT model {args.model!r}")  # fmt: skip
    res = pd.concat([evaluate(s, args.seeds, args.methods, args) for s in args.sets])
    if args.csv:
        res.to_csv(args.csv, index=False)
    print_table(res, args.methods)


if __name__ == "__main__":
    main()
