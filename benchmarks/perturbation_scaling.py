"""Cost of perturbation prediction on a screen of many genes: default schedule and windows.

A real Perturb-seq screen as GEARS ships it measures about 5,000 genes, every one a token of
each pass; attention makes a pass cost about the square of its length. This script times, on
a screen of ``--genes`` genes (symbols from the default model's vocabulary, the rest new
genes; Poisson values, since only the cost is measured here), with the shipped default model:

* one training step of ``batch_size`` cells at the default length (``min(genes, 1536)``), and
  the default schedule's steps
  (:func:`omicformer.scgpt.model._perturbation_schedule.default_schedule`) against the
  schedule before it (60,000 cell passes, 1 to 15 epochs, whatever the length);
* one predicted perturbation over ``n_control_cells`` control cells, in windows of the
  model's ``max_len`` genes (the default) against one pass over every gene (the official
  ``pred_perturb``; ``predict(max_len=n_genes)``), with the ratio and the Pearson correlation
  of the two predicted changes.

Run::

    python benchmarks/perturbation_scaling.py --genes 5000 --cells 3000
"""

from __future__ import annotations

import argparse
import time

import anndata as ad
import numpy as np
import pandas as pd
import torch

from omicformer.scgpt._resolve import resolve_model
from omicformer.scgpt.model import ScGPTPerturbation
from omicformer.scgpt.model._perturbation_schedule import (
    DEFAULT_CELL_PASSES,
    DEFAULT_EPOCH_RANGE,
    default_schedule,
)


def screen(n_genes: int, n_cells: int, seed: int) -> ad.AnnData:
    """A third control cells, the rest 20 single knockdowns; log1p of Poisson(0.5) values."""
    _, vocab, _ = resolve_model("default")
    known = [g for g in vocab.to_dict() if not g.startswith("<")]
    genes = (known + [f"NEWGENE{i}" for i in range(n_genes)])[:n_genes]
    n_ctrl = n_cells // 3
    conds = ["ctrl"] * n_ctrl + [f"{genes[i % 20]}+ctrl" for i in range(n_cells - n_ctrl)]
    rng = np.random.default_rng(seed)
    X = np.log1p(rng.poisson(0.5, size=(n_cells, n_genes))).astype(np.float32)
    obs = pd.DataFrame({"condition": conds}, index=[f"cell{i}" for i in range(n_cells)])
    return ad.AnnData(X, obs=obs, var=pd.DataFrame(index=genes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--genes", type=int, default=5000)
    parser.add_argument("--cells", type=int, default=3000)
    parser.add_argument("--steps", type=int, default=3, help="training steps timed")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--n-control-cells", type=int, default=300)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    adata = screen(args.genes, args.cells, args.seed)
    ScGPTPerturbation.setup_anndata(adata)
    model = ScGPTPerturbation.load_pretrained("default", adata)
    tokens = min(args.genes, model.max_len)
    kw = {"batch_size": args.batch_size, "accelerator": "cpu", "enable_progress_bar": False}
    model.train(max_steps=1, **kw)  # warm-up: the covariance prior, first allocations
    t0 = time.perf_counter()
    model.train(max_steps=args.steps, **kw)
    per_step = (time.perf_counter() - t0) / args.steps

    epochs, steps = default_schedule(args.cells, tokens, args.batch_size)
    new_steps = steps if steps is not None else epochs * -(-args.cells // args.batch_size)
    lo, hi = DEFAULT_EPOCH_RANGE
    old_epochs = int(np.clip(round(DEFAULT_CELL_PASSES / args.cells), lo, hi))
    old_steps = old_epochs * -(-args.cells // args.batch_size)

    request = [f"{adata.var_names[25]}+ctrl"]
    times, deltas = {}, {}
    for name, max_len in (("windows (default)", None), ("every gene at once", args.genes)):
        t0 = time.perf_counter()
        pred = model.predict(
            request, n_control_cells=args.n_control_cells, max_len=max_len, progress=False
        )
        times[name] = time.perf_counter() - t0
        deltas[name] = pred.layers["delta"][0]

    print(f"screen: {args.cells} cells x {args.genes} genes; {tokens} genes a training pass; "
          f"{torch.get_num_threads()} torch threads")  # fmt: skip
    print(f"training: {per_step:.1f} s per step of {args.batch_size} cells")
    print("| default schedule | epochs | steps | training time (steps x s/step) |")
    print("|---|---|---|---|")
    print(f"| before (60,000 cell passes) | {old_epochs} | {old_steps} | "
          f"{old_steps * per_step / 60:.1f} min |")  # fmt: skip
    print(f"| now | {epochs} | {new_steps} | {new_steps * per_step / 60:.1f} min |")
    print(f"ratio before / now: {old_steps / new_steps:.1f}x")
    print(f"prediction, one perturbation over {args.n_control_cells} control cells:")
    print("| passes | s per perturbation |")
    print("|---|---|")
    for name, sec in times.items():
        print(f"| {name} | {sec:.1f} |")
    ratio = times["every gene at once"] / times["windows (default)"]
    r = np.corrcoef(*deltas.values())[0, 1]
    print(f"ratio every gene / windows: {ratio:.2f}x; Pearson r of the predicted changes {r:.4f}")


if __name__ == "__main__":
    main()
