"""Pretrain the small default scGPT shipped in ``omicformer/scgpt/_data/default_model`` (v3).

Recipe (measured minutes are written to ``docs/_static/default_scgpt_metrics.json``):

* **Data**: every real scRNA dataset that installs offline, concatenated on gene symbols
  (outer join, zeros where a dataset lacks a gene): ``pbmc3k_desc`` (2,700 cells, counts),
  ``hlca_query`` (1,786 lung cells, counts), ``pbmc68k_reduced`` (700, log-normalised; its
  labels are NOT used), ``pbmc_celltypist`` (559, counts), ``pbmc_cite_two_batch`` (400,
  counts), ``hsmm`` (271, FPKM) and ``oligodendroglioma`` (184, normalised) = 6,600 cells.
  ``wu2020_tcells`` (200 labelled T cells) is held out of pretraining entirely, to score the
  embedding on data the model never saw; ``pbmc_seurat_small`` is left out because its 80
  cells are PBMC 3k cells. Per-cell rank binning lets counts, FPKM and log values mix.
* **Vocabulary**: the ``--n-hvg`` (2,000) most variable genes of the log-normalised training
  data (scanpy ``highly_variable_genes``, ``flavor="seurat"``, ``batch_key`` = dataset),
  among genes of the official census vocabulary detected in >= 10 cells, plus every
  ``pbmc68k_reduced`` gene; ids in census order, then ``<pad> <cls> <eoc>``.
* **Initialisation**: gene-token embeddings start at the genes' principal-component loadings
  of the standardised log-normalised training data
  (:func:`omicformer.scgpt.train.init_gene_embeddings_pca`); all other weights as the
  official code. ``--no-pca-init`` draws them at random (official ``uniform(-0.1, 0.1)``).
* **Model**: d_model 128, 4 layers, 4 heads, d_hid 128, dropout 0.1, 51 bins, continuous
  values.
* **Objective**: the official generative pretraining (generation ratio 0.25/0.5/0.75 per batch)
  + MVC + ECS (weight ``--ecs-weight``, threshold 0.3); Adam, lr ``--lr`` (1e-4) with the official
  step decay (x0.99 every 100 steps), batch 32, ``--epochs`` (1) epoch(s), ``--max-len`` tokens per
  cell during training (a random subset of a cell's genes when it expresses more), 1,200 at
  inference.

**Evaluation** (labels used only here): ``benchmarks/scgpt_zero_shot.py``, 5-fold
cross-validated 15-nearest-neighbour label accuracy (``omicformer demo``'s protocol) of the
zero-shot embedding and of 50 principal components of the log-normalised data of the same
cells, on ``pbmc68k_reduced`` ``bulk_labels``, PBMC 3k ``cell_type_scanpy_pbmc3k`` and
``oligodendroglioma`` ``cell_type`` (cells seen in pretraining, as PCA sees them) and on
held-out ``wu2020_tcells`` ``cluster_orig``.

Writes the model folder (``model.safetensors``, ``omicformer_config.json``, ``vocab.json``),
``docs/_static/default_scgpt_loss.png`` and ``docs/_static/default_scgpt_metrics.json``.

    python scripts/train_default_scgpt.py [--epochs 1] [--out src/omicformer/scgpt/_data/default_model]

Sweeps (the "Sweep around the v3 recipe" table of ``docs/scgpt.md``): ``--epoch-dirs DIR`` also
saves ``DIR/e0`` (before training) and ``DIR/e1``, ... (after each epoch) for
``benchmarks/scgpt_zero_shot.py --model DIR/eN``; ``--n-hvg``, ``--ecs-weight``,
``--ecs-threshold`` and ``--freeze-gene-embeddings`` change the recipe.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp
from lightning.pytorch.callbacks import Callback

from omicformer import datasets
from omicformer.scgpt._vocab import GeneVocab
from omicformer.scgpt.model import ScGPT
from omicformer.scgpt.train import init_gene_embeddings_pca

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ("pbmc3k_desc", "hlca_query", "pbmc68k_reduced", "pbmc_celltypist",
         "pbmc_cite_two_batch", "hsmm", "oligodendroglioma")  # fmt: skip
LOG_NORMALISED = {"pbmc68k_reduced"}


def lognormalise(a: ad.AnnData, name: str) -> ad.AnnData:
    """``log1p(normalize_total(x, 1e4))`` unless the data set already is log-normalised."""
    import scanpy as sc

    a = a.copy()
    if name not in LOG_NORMALISED:
        sc.pp.normalize_total(a, target_sum=1e4)
        sc.pp.log1p(a)
    return a


def training_data() -> tuple[ad.AnnData, ad.AnnData]:
    """Training cells on the union of genes: (values as shipped, log-normalised)."""
    raw, logn = {}, {}
    for name in TRAIN:
        a = getattr(datasets, name)()
        slim = ad.AnnData(sp.csr_matrix(a.X, dtype=np.float32), var=a.var[[]],
                          obs={"dataset": [name] * a.n_obs})  # fmt: skip
        slim.obs_names = [f"{name}-{i}" for i in range(a.n_obs)]
        slim.var_names_make_unique()
        raw[name], logn[name] = slim, lognormalise(slim, name)
    concat = {"join": "outer", "fill_value": 0, "index_unique": None}
    return ad.concat(raw, **concat), ad.concat(logn, **concat)


def select_genes(logn: ad.AnnData, n_hvg: int) -> list[str]:
    """Highly variable census genes (per-dataset batches) + every pbmc68k_reduced gene."""
    import scanpy as sc

    census = datasets.official_census_vocab()
    a = logn[:, [g in census for g in logn.var_names]].copy()
    sc.pp.filter_genes(a, min_cells=10)
    sc.pp.highly_variable_genes(a, n_top_genes=n_hvg, batch_key="dataset", flavor="seurat")
    genes = set(a.var_names[a.var["highly_variable"]])
    genes |= set(datasets.pbmc68k_reduced().var_names) & set(a.var_names)
    return sorted(genes, key=lambda g: census[g])  # official census order


class EpochSnapshots(Callback):
    """Save the model before training (``e0``) and after every epoch (``e1``, ...) under ``root``."""

    def __init__(self, model: ScGPT, root: str):
        self.model, self.root = model, Path(root)

    def on_train_start(self, trainer, pl_module) -> None:
        self._save(0)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._save(trainer.current_epoch + 1)

    def _save(self, epoch: int) -> None:
        m = self.model
        trained, max_len = m.is_trained_, m.max_len
        m.is_trained_, m.max_len = True, 1200  # as the shipped folder
        m.save(self.root / f"e{epoch}", overwrite=True)
        m.is_trained_, m.max_len = trained, max_len
        print(f"saved {self.root / f'e{epoch}'}", flush=True)


def evaluate(model_dir: str) -> dict[str, dict]:
    """The zero-shot kNN table of ``benchmarks/scgpt_zero_shot.py`` for the new model."""
    import importlib.util

    path = ROOT / "benchmarks" / "scgpt_zero_shot.py"
    spec = importlib.util.spec_from_file_location("scgpt_zero_shot", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench.evaluate(model_dir)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--n-hvg", type=int, default=2000)
    p.add_argument("--no-pca-init", action="store_true")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--n-layers", type=int, default=4)
    p.add_argument("--ecs-weight", type=float, default=10.0)
    p.add_argument("--ecs-threshold", type=float, default=0.3)
    p.add_argument(
        "--freeze-gene-embeddings",
        action="store_true",
        help="keep the (PCA-initialised) gene-token embeddings fixed while training",
    )
    p.add_argument("--epoch-dirs", default=None,
                   help="also save the model before training and after every epoch as "
                        "EPOCH_DIRS/e0, e1, ... (benchmarks/scgpt_zero_shot.py --model scores "
                        "each)")  # fmt: skip
    p.add_argument("--out", default=str(ROOT / "src/omicformer/scgpt/_data/default_model"))
    p.add_argument(
        "--static-dir", default=str(ROOT / "docs" / "_static"), help="loss plot + metrics"
    )
    args = p.parse_args()

    raw, logn = training_data()
    genes = select_genes(logn, args.n_hvg)
    vocab = GeneVocab.from_genes(genes)
    adata = raw[:, genes].copy()
    keep = np.asarray((adata.X > 0).sum(1)).ravel() >= 10  # cells with >= 10 vocabulary genes
    adata = adata[keep].copy()
    print(f"training cells {adata.n_obs}, vocabulary genes {len(genes)}", flush=True)
    ScGPT.setup_anndata(adata)
    model = ScGPT(adata, d_model=args.d_model, n_layers=args.n_layers, n_heads=4,
                  dropout=0.1, max_len=args.max_len, vocab=vocab, random_state=0,
                  ecs_threshold=args.ecs_threshold)  # fmt: skip
    if not args.no_pca_init:
        init_gene_embeddings_pca(model.module, vocab, logn[keep][:, genes].X, genes)
    if args.freeze_gene_embeddings:
        model.module.encoder.embedding.weight.requires_grad_(False)
    callbacks = [EpochSnapshots(model, args.epoch_dirs)] if args.epoch_dirs else []
    t = time.perf_counter()
    model.train(max_epochs=args.epochs, batch_size=32, lr=args.lr, ecs_weight=args.ecs_weight,
                accelerator="cpu", devices=1, random_state=0, enable_progress_bar=False,
                callbacks=callbacks)  # fmt: skip
    minutes = (time.perf_counter() - t) / 60
    model.max_len = 1200  # inference default, as the official embed_data
    model.save(args.out, overwrite=True)

    metrics = {
        "train_minutes_cpu": round(minutes, 2),
        "epochs": args.epochs,
        "n_train_cells": int(adata.n_obs),
        "vocab_size": len(vocab),
        "pca_init": not args.no_pca_init,
        "zero_shot_knn": evaluate(args.out),
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
    from omicformer import scgpt

    ax = scgpt.pl.loss_curve(model, keys=("train_loss_step",), show=False)  # one short epoch
    ax.set_title("default scGPT pretraining (6,600 real cells, CPU)")
    fig = ax.figure
    fig.tight_layout()
    fig.savefig(static / "default_scgpt_loss.png", dpi=120)
    print(json.dumps(metrics, indent=1))


if __name__ == "__main__":
    main()
