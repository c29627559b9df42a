"""Streamed (backed) `scgpt.tl.integrate`: balanced minibatches against unbalanced, and in memory.

A backed ``.h5ad`` is fine-tuned out of core: minibatches are cut from windows of a few
chunks of consecutive cells. Where the file stores its batches one after the other (as
``anndata.concat`` writes them) in runs longer than a window, unbalanced minibatches hold mostly
one batch and the cross-batch loss finds few pairs; balanced minibatches (``balance_batches``,
each batch's cells read by chunk) hold two batches in equal numbers, as in memory.

The bundled sets are far smaller than an atlas: one window of the default 4 chunks of 1,024
cells holds all of them. To reproduce the regime of a large file, this script fine-tunes with
chunks of ``--chunk-size`` cells (default 128: pbmc's 1,259 cells are 10 chunks, each batch a
run of 4-6 chunks), by passing ``chunk_size`` to ``ScGPTIntegration.train`` while it runs;
everything else is ``tl.integrate``'s defaults. The cells are written sorted by batch.

Methods, each scored with scib-metrics as ``benchmarks/integration.py`` does (same sets,
labels, PCA and ``benchmark`` function):

* ``memory``: ``tl.integrate`` on the AnnData in memory (the named baseline);
* ``streamed_unbalanced``: on the backed file with ``balance_batches=False`` (what a backed
  file of two batches of similar size got before streamed balancing existed);
* ``streamed_balanced``: on the backed file with ``balance_batches=True``.

Prints one table per set (mean ± sd over seeds) with each method's total as a ratio of the
in-memory total.

    python benchmarks/streamed_integration.py --sets pbmc --seeds 0 1 2 --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
import integration as ib

from omicformer import scgpt
from omicformer.scgpt.model import ScGPTIntegration

METHODS = ("memory", "streamed_unbalanced", "streamed_balanced")
COLS = ["Bio conservation", "Batch correction", "Total"]


@contextlib.contextmanager
def train_chunk_size(chunk_size: int) -> Iterator[None]:
    """``ScGPTIntegration.train`` reads chunks of ``chunk_size`` cells meanwhile (unless told)."""
    original = ScGPTIntegration.train

    def train(self, *args, **kwargs):
        kwargs.setdefault("chunk_size", chunk_size)
        return original(self, *args, **kwargs)

    ScGPTIntegration.train = train
    try:
        yield
    finally:
        ScGPTIntegration.train = original


def run(method: str, adata: ad.AnnData, path: Path, batch_key: str, seed: int) -> np.ndarray:
    kw = {"batch_key": batch_key, "random_state": seed, "progress": False}
    if method == "memory":
        return scgpt.tl.integrate(adata, copy=True, **kw).obsm["X_scgpt_integrated"]
    backed = ad.read_h5ad(path, backed="r")
    try:
        scgpt.tl.integrate(backed, balance_batches=method == "streamed_balanced", **kw)
        return np.asarray(backed.obsm["X_scgpt_integrated"])
    finally:
        backed.file.close()


def evaluate(name: str, seeds: list[int], methods: list[str], chunk_size: int,
             folder: Path) -> pd.DataFrame:  # fmt: skip
    adata, batch_key, label_key = ib.SETS[name]()
    adata = adata[np.argsort(adata.obs[batch_key].astype(str).to_numpy(), kind="stable")].copy()
    adata.obsm["X_pca"] = ib.pca(adata, batch_key, 0, None)
    path = folder / f"{name}.h5ad"
    adata.write_h5ad(path)
    sizes = adata.obs[batch_key].value_counts(sort=False).to_dict()
    print(f"\n{name}: {adata.n_obs} cells, batches stored in runs {sizes}, chunks of "
          f"{chunk_size} cells", flush=True)  # fmt: skip
    rows = []
    for seed in seeds:
        keys, seconds = [], {}
        for method in methods:
            t0 = time.perf_counter()
            with train_chunk_size(chunk_size):
                z = run(method, adata, path, batch_key, seed)
            seconds[method] = time.perf_counter() - t0
            adata.obsm[f"Z_{method}"] = np.asarray(z, dtype=np.float32)
            keys.append(f"Z_{method}")
            print(f"  seed {seed} {method}: {seconds[method]:.0f} s", flush=True)
        res = ib.benchmark(adata, batch_key, label_key, keys)
        for key in keys:
            rows.append({"set": name, "seed": seed, "method": key[2:],
                         "seconds": seconds[key[2:]], **res.loc[key].to_dict()})  # fmt: skip
    return pd.DataFrame(rows)


def print_table(res: pd.DataFrame, methods: list[str]) -> None:
    for name, part in res.groupby("set", sort=False):
        base = part[part["method"] == "memory"]["Total"].mean()
        print(f"\n### {name}\n")
        print("| method | " + " | ".join(COLS) + " | total / in memory | s/run | seeds |")
        print("|---|" + "---|" * (len(COLS) + 3))
        for m in methods:
            r = part[part["method"] == m]
            cells = [f"{r[c].mean():.3f} ± {r[c].std():.3f}" if len(r) > 1 else f"{r[c].mean():.3f}"
                     for c in COLS]  # fmt: skip
            ratio = f"{r['Total'].mean() / base:.3f}" if np.isfinite(base) else "-"
            print(f"| {m} | " + " | ".join(cells)
                  + f" | {ratio} | {r['seconds'].mean():.0f} | {len(r)} |")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sets", nargs="+", default=["pbmc"], choices=list(ib.SETS))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--chunk-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as folder, threadpool_limits(args.threads):
        import torch

        torch.set_num_threads(args.threads)
        res = pd.concat([evaluate(s, args.seeds, args.methods, args.chunk_size, Path(folder))
                         for s in args.sets])  # fmt: skip
    print_table(res, args.methods)


if __name__ == "__main__":
    main()
