"""Pretrain the small default scGPT shipped in ``omicformer/scgpt/_data/default_model``.

Recipe (one CPU run: 31 min on a shared 2-core machine):

* Data: every bundled scRNA dataset, concatenated on gene symbols (outer join, zeros where a
  dataset lacks a gene): ``pbmc_celltypist`` (559 cells, raw counts), ``pbmc68k_reduced`` (700,
  log-normalised; labels are NOT used), ``hsmm`` (271, FPKM) and ``pbmc_seurat_small`` (80,
  counts) = 1,610 cells. Binning is per cell and rank-based, so counts, FPKM and log values mix.
* Vocabulary: genes of the official scGPT census vocabulary (same symbols) detected in at least
  ``--min-cells`` training cells, plus every ``pbmc68k_reduced`` gene, capped at ``--max-genes``
  by detection, then ``<pad> <cls> <eoc>`` appended as in official checkpoints.
* Model: d_model 128, 4 layers, 4 heads, d_hid 128, dropout 0.1, 51 bins, continuous values.
* Objective: official generative pretraining (gen ratio from {0.25, 0.5, 0.75} per batch)
  + MVC + ECS (weight 10, threshold 0.3, as the official scripts); Adam lr 1e-3 with the official
  step decay; 30 epochs, batch 32; ``--max-len`` 256 tokens per cell during training (a random
  subset of genes each epoch), 1200 at inference.

Writes the model folder (``model.safetensors``, ``omicformer_config.json``, ``vocab.json``) and
``docs/_static/default_scgpt_loss.png`` + ``docs/_static/default_scgpt_metrics.json`` (loss
history, kNN accuracy on pbmc68k_reduced ``bulk_labels`` of the embedding vs PCA).

    python scripts/train_default_scgpt.py [--epochs 30] [--out src/omicformer/scgpt/_data/default_model]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp

from omicformer import datasets
from omicformer._demo import knn_accuracy
from omicformer.scgpt._vocab import GeneVocab
from omicformer.scgpt.model import ScGPT

ROOT = Path(__file__).resolve().parents[1]


def training_data() -> ad.AnnData:
    parts = {
        "pbmc_celltypist": datasets.pbmc_celltypist(),
        "pbmc68k_reduced": datasets.pbmc68k_reduced(),
        "hsmm": datasets.hsmm(),
        "pbmc_seurat_small": datasets.pbmc_seurat_small(),
    }
    slim = {}
    for name, a in parts.items():
        a.X = sp.csr_matrix(a.X, dtype=np.float32)
        slim[name] = ad.AnnData(a.X, obs={"dataset": [name] * a.n_obs}, var=a.var[[]])
        slim[name].obs_names = [f"{name}-{i}" for i in range(a.n_obs)]
        slim[name].var_names_make_unique()
    return ad.concat(slim, join="outer", fill_value=0, index_unique=None)


def select_vocab(adata: ad.AnnData, min_cells: int, max_genes: int) -> GeneVocab:
    census = datasets.official_census_vocab()
    detected = np.asarray((adata.X > 0).sum(0)).ravel()
    pbmc68k = set(datasets.pbmc68k_reduced().var_names)
    names = np.asarray(adata.var_names)
    keep = np.array([g in census for g in names]) & (
        (detected >= min_cells) | np.isin(names, list(pbmc68k))
    )
    order = np.argsort(-(detected + 1e9 * np.isin(names, list(pbmc68k))), kind="stable")
    chosen = [names[i] for i in order if keep[i]][:max_genes]
    chosen.sort(key=lambda g: census[g])  # official census order
    return GeneVocab.from_genes(chosen)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--min-cells", type=int, default=20)
    p.add_argument("--max-genes", type=int, default=4000)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--n-layers", type=int, default=4)
    p.add_argument("--ecs-weight", type=float, default=10.0)
    p.add_argument("--out", default=str(ROOT / "src/omicformer/scgpt/_data/default_model"))
    p.add_argument(
        "--static-dir", default=str(ROOT / "docs" / "_static"), help="loss plot + metrics"
    )
    args = p.parse_args()

    adata = training_data()
    vocab = select_vocab(adata, args.min_cells, args.max_genes)
    print(f"training cells {adata.n_obs}, genes {adata.n_vars}, vocab {len(vocab)}")
    ScGPT.setup_anndata(adata)
    model = ScGPT(adata, d_model=args.d_model, n_layers=args.n_layers, n_heads=4,
                  dropout=0.1, max_len=args.max_len, vocab=vocab, random_state=0)  # fmt: skip
    t = time.perf_counter()
    model.train(max_epochs=args.epochs, batch_size=32, lr=1e-3, ecs_weight=args.ecs_weight,
                accelerator="cpu", devices=1, random_state=0, enable_progress_bar=False)  # fmt: skip
    minutes = (time.perf_counter() - t) / 60
    model.max_len = 1200  # inference default, as the official embed_data
    model.save(args.out, overwrite=True)

    # evaluation on pbmc68k_reduced (labels used only here)
    import scanpy as sc

    pbmc = datasets.pbmc68k_reduced()
    from omicformer import scgpt

    scgpt.tl.embed(pbmc, model=args.out, device="cpu", progress=False)
    sc.pp.pca(pbmc, n_comps=50, random_state=0)
    labels = pbmc.obs["bulk_labels"].astype(str).to_numpy()
    metrics = {
        "train_minutes_cpu": round(minutes, 2),
        "epochs": args.epochs,
        "n_train_cells": int(adata.n_obs),
        "vocab_size": len(vocab),
        "knn_accuracy_scgpt_pbmc68k": knn_accuracy(pbmc.obsm["X_scgpt"], labels),
        "knn_accuracy_pca_pbmc68k": knn_accuracy(pbmc.obsm["X_pca"], labels),
    }
    hist = {  # per-epoch curves (the per-step loss would make the JSON long)
        k: v.iloc[:, 0].astype(float).tolist()
        for k, v in model.history.items()
        if v.index.name == "epoch"
    }
    static = Path(args.static_dir)
    static.mkdir(parents=True, exist_ok=True)
    (static / "default_scgpt_metrics.json").write_text(
        json.dumps({**metrics, "history": hist}, indent=1)
    )
    import matplotlib

    matplotlib.use("Agg")
    ax = scgpt.pl.loss_curve(model, show=False)
    ax.set_title("default scGPT pretraining (bundled data, CPU)")
    fig = ax.figure
    fig.tight_layout()
    fig.savefig(static / "default_scgpt_loss.png", dpi=120)
    print(json.dumps(metrics, indent=1))


if __name__ == "__main__":
    main()
