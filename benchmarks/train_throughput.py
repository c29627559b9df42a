"""Training step throughput and peak memory of ``ScGPT.train`` on synthetic cells.

Times ``--steps`` optimiser steps (after ``--warmup`` untimed ones) of the public training path,
``ScGPT.train`` (generative pretraining + MVC through Lightning, ``precision="auto"``: bf16-mixed
on GPUs with bf16, 32-bit on CPU), on cells of exactly ``--genes-per-cell`` expressed genes (so
that every cell has ``min(genes_per_cell + 1, max_len)`` tokens). Prints steps/s, cells/s,
tokens/s and, on CUDA, ``torch.cuda.max_memory_allocated`` over the training run (weights,
optimiser state, activations); on CPU the process's peak RSS instead.

Configurations (vocabulary: real gene symbols):

``default``
    The architecture and vocabulary of the default model shipped with omicformer (at the time of
    writing ``d_model`` 128, 4 layers, 4 heads), ``max_len`` 1200.
``human``
    The whole-human checkpoint's architecture (``d_model`` 512, 12 layers, 8 heads, ``d_hid``
    512, the 60,697-token CELLxGENE census vocabulary), ``max_len`` 1200.
``tiny``
    ``d_model`` 32, 2 layers, 2 heads, 200 genes, for tests.

    python benchmarks/train_throughput.py --config human --device cuda
    python benchmarks/train_throughput.py --config tiny --device cpu --steps 2 --warmup 1
    python benchmarks/train_throughput.py --config default --device cuda --json out.json
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np

CONFIGS = {
    "default": None,  # read from the shipped default model (default_config)
    "human": {"d_model": 512, "n_layers": 12, "n_heads": 8, "d_hid": 512, "max_len": 1200},
    "tiny": {"d_model": 32, "n_layers": 2, "n_heads": 2, "d_hid": 32, "max_len": 64},
}


def default_config() -> dict:
    """The architecture of the default model shipped with omicformer, ``max_len`` 1200."""
    from omicformer._core._io import load_model_config
    from omicformer.scgpt._resolve import DEFAULT_MODEL_DIR

    c = load_model_config(DEFAULT_MODEL_DIR)["module_config"]
    return {"d_model": c["d_model"], "n_layers": c["nlayers"], "n_heads": c["nhead"],
            "d_hid": c["d_hid"], "max_len": 1200}  # fmt: skip


def vocabulary(config: str):
    """The configuration's :class:`~omicformer.scgpt.GeneVocab` (real gene symbols)."""
    from omicformer import datasets
    from omicformer.scgpt._resolve import DEFAULT_MODEL_DIR
    from omicformer.scgpt._vocab import GeneVocab

    if config == "human":  # the whole-human vocab.json: census genes, then the special tokens
        return GeneVocab(datasets.official_census_vocab())
    vocab = GeneVocab.from_file(DEFAULT_MODEL_DIR / "vocab.json")
    if config == "tiny":
        return GeneVocab.from_genes([g for g in vocab.genes() if not g.startswith("<")][:200])
    return vocab


def synthetic_cells(genes: list[str], n_cells: int, genes_per_cell: int, seed: int = 0):
    """AnnData of ``n_cells`` with exactly ``genes_per_cell`` expressed ``genes`` (counts)."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    k = min(genes_per_cell, len(genes))
    cols = np.concatenate(
        [np.sort(rng.choice(len(genes), k, replace=False)) for _ in range(n_cells)]
    )
    counts = rng.negative_binomial(2, 0.3, n_cells * k).astype(np.float32) + 1
    X = sp.csr_matrix((counts, cols, np.arange(0, n_cells * k + 1, k)), shape=(n_cells, len(genes)))
    return ad.AnnData(X, obs=pd.DataFrame(index=[f"c{i}" for i in range(n_cells)]),
                      var=pd.DataFrame(index=genes))  # fmt: skip


def measure(args: argparse.Namespace) -> dict:
    """Train for ``warmup + steps`` steps; the timings and memory of the last ``steps``."""
    import lightning.pytorch as pl
    import torch

    from omicformer._core._train import auto_precision
    from omicformer.scgpt.model import ScGPT

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        msg = f"--device {args.device}: CUDA is not available (torch {torch.__version__})."
        raise SystemExit(msg)
    cfg = default_config() if args.config == "default" else {**CONFIGS[args.config]}
    if args.max_len is not None:
        cfg["max_len"] = args.max_len
    vocab = vocabulary(args.config)
    genes = [g for g in vocab.genes() if not g.startswith("<")][: args.n_genes]
    n_steps = args.warmup + args.steps
    adata = synthetic_cells(genes, args.batch_size * n_steps, args.genes_per_cell)
    ScGPT.setup_anndata(adata)
    model = ScGPT(adata, vocab=vocab, dropout=0.0, **cfg)

    class Clock(pl.Callback):
        """Wall time of the steps after the warm-up; peak CUDA memory of the whole run."""

        def on_train_start(self, trainer, module):
            if cuda:
                torch.cuda.reset_peak_memory_stats()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.global_step == args.warmup:
                if cuda:
                    torch.cuda.synchronize()
                self.start = time.perf_counter()

        def on_train_end(self, trainer, module):
            if cuda:
                torch.cuda.synchronize()
                self.peak = torch.cuda.max_memory_allocated() / 2**20
            self.seconds = time.perf_counter() - self.start
            self.steps = trainer.global_step - args.warmup

    clock = Clock()
    accelerator = "gpu" if cuda else "cpu"
    model.train(max_epochs=1, max_steps=n_steps, batch_size=args.batch_size,
                validation_size=0.0, accelerator=accelerator, devices=1, precision="auto",
                num_workers=args.num_workers, enable_progress_bar=False,
                callbacks=[clock])  # fmt: skip
    tokens = min(args.genes_per_cell + 1, len(genes) + 1, cfg["max_len"])
    peak = clock.peak if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "config": args.config,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "precision": str(auto_precision(accelerator, "auto")),
        "params": sum(p.numel() for p in model.module.parameters()),
        "batch_size": args.batch_size,
        "tokens_per_cell": tokens,
        "steps": clock.steps,
        "seconds": clock.seconds,
        "steps_per_s": clock.steps / clock.seconds,
        "cells_per_s": clock.steps * args.batch_size / clock.seconds,
        "tokens_per_s": clock.steps * args.batch_size * tokens / clock.seconds,
        "peak_mib": peak,
        "peak_kind": "cuda max_memory_allocated" if cuda else "process peak RSS",
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", choices=list(CONFIGS), default="default")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--genes-per-cell", type=int, default=1200)
    p.add_argument("--n-genes", type=int, default=20_000, help="genes in the synthetic AnnData")
    p.add_argument("--max-len", type=int, default=None, help="default: the configuration's")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 1:
        p.error("--steps and --warmup must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    r = measure(args)
    print(f"scGPT training, {r['config']} config ({r['params']:,} parameters) on "
          f"{r['device']}, {r['precision']}, batch {r['batch_size']} x {r['tokens_per_cell']} "
          f"tokens, {r['steps']} timed steps")  # fmt: skip
    print(f"train {r['config']}: {r['steps_per_s']:.2f} steps/s, {r['cells_per_s']:.0f} cells/s, "
          f"{r['tokens_per_s']:.0f} tokens/s, peak {r['peak_mib']:.0f} MiB ({r['peak_kind']})")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
