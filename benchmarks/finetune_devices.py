"""scGPT fine-tuning with default arguments on one device: ``tl.annotate`` and ``tl.integrate``.

Calls the two public functions as a user does, ``device`` left at ``"auto"`` (the GPU when one
is present) unless ``--device`` names one, and prints what each took and gave:

1. ``annotate``: the 30% query of a 70/30 split of ``pbmc68k_reduced`` (``bulk_labels``,
   stratified, seed 0; the annotation benchmark's ``split_task``) labelled from the other 70%:
   wall seconds, the device it ran on and the query's macro-F1 (CPU, defaults: 0.72 ± 0.03
   over seeds, docs/benchmarks.md).
2. ``integrate``: the integration benchmark's ``pbmc`` set (1,259 cells of two experiments,
   marker-derived labels): wall seconds, and for the zero-shot ``tl.embed`` and the integrated
   embedding the 15-NN accuracy of the label (biology) and the fraction of each cell's 15
   neighbours from the other batch (mixing; the other batch's share of the cells when fully
   mixed).

Exits 1 when a call fails, an embedding is not finite, or the macro-F1 is below ``--min-f1``.

    python benchmarks/finetune_devices.py                        # device "auto"
    python benchmarks/finetune_devices.py --device cpu --n-cells 300 --max-epochs 1   # smoke
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

K = 15


def _neighbours(x: np.ndarray) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    idx = NearestNeighbors(n_neighbors=K + 1).fit(x).kneighbors(x, return_distance=False)
    return idx[:, 1:]  # without the cell itself


def knn_scores(x: np.ndarray, labels: np.ndarray, batches: np.ndarray) -> tuple[float, float]:
    """15-NN label accuracy (majority vote of the neighbours) and cross-batch neighbour share."""
    nn = _neighbours(x)
    votes = labels[nn]
    pred = np.array([max(set(row), key=list(row).count) for row in votes])
    return float(np.mean(pred == labels)), float(np.mean(batches[nn] != batches[:, None]))


def _subsample(adata, n: int | None, seed: int):
    if n is None or n >= adata.n_obs:
        return adata
    keep = np.sort(np.random.default_rng(seed).choice(adata.n_obs, n, replace=False))
    return adata[keep].copy()


def _device_used(dev: str) -> str:
    import torch

    from omicformer._core._device import resolve_device

    d = resolve_device(dev)
    return torch.cuda.get_device_name(d) if d.type == "cuda" else str(d)


def annotate_step(args) -> bool:
    from annotation_sets import LABEL, pbmc68k, split_task
    from sklearn.metrics import f1_score

    from omicformer.scgpt import tl

    adata, reason, _ = pbmc68k()
    adata = _subsample(adata, args.n_cells, 0)
    counts = adata.obs[LABEL].value_counts()
    adata = adata[adata.obs[LABEL].isin(counts.index[counts >= 5])].copy()  # only when subsampled
    task = split_task(adata, reason, seed=0)
    query = task.query.copy()
    t = time.perf_counter()
    tl.annotate(query, task.ref, label_key=LABEL, device=args.device, max_epochs=args.max_epochs,
                progress=False)  # fmt: skip
    dt = time.perf_counter() - t
    pred = query.obs[f"scgpt_{LABEL}"].astype(str).to_numpy()
    f1 = f1_score(task.truth, pred, labels=sorted(set(task.truth)), average="macro",
                  zero_division=0)  # fmt: skip
    ok = f1 >= args.min_f1
    print(f"annotate: {task.ref.n_obs} reference -> {query.n_obs} query cells on "
          f"{_device_used(args.device)}: {dt:.1f} s, macro-F1 {f1:.3f} (need >= {args.min_f1}) "
          f"{'ok' if ok else 'FAILED'}")  # fmt: skip
    return ok


def integrate_step(args) -> bool:
    import integration as ib

    from omicformer.scgpt import tl

    adata, batch_key, label_key = ib.pbmc()
    adata = _subsample(adata, args.n_cells, 0)
    t = time.perf_counter()
    tl.embed(adata, device=args.device, progress=False)
    t_embed = time.perf_counter() - t
    t = time.perf_counter()
    tl.integrate(adata, batch_key=batch_key, device=args.device, max_epochs=args.max_epochs,
                 progress=False)  # fmt: skip
    dt = time.perf_counter() - t
    labels = adata.obs[label_key].astype(str).to_numpy()
    batches = adata.obs[batch_key].astype(str).to_numpy()
    ok = True
    shares = adata.obs[batch_key].value_counts(normalize=True)
    mixed = float(1 - np.sum(shares.to_numpy() ** 2))  # other-batch share when fully mixed
    print(f"integrate: {adata.n_obs} cells x {adata.n_vars} genes, {len(shares)} batches on "
          f"{_device_used(args.device)}: tl.embed {t_embed:.1f} s, tl.integrate {dt:.1f} s")  # fmt: skip
    for key in ("X_scgpt", "X_scgpt_integrated"):
        x = np.asarray(adata.obsm[key])
        if not np.isfinite(x).all():
            print(f"integrate: {key} holds non-finite values FAILED")
            ok = False
            continue
        acc, cross = knn_scores(x, labels, batches)
        print(f"integrate: {key:<19} {K}-NN label accuracy {acc:.3f}, other-batch neighbours "
              f"{cross:.3f} (fully mixed {mixed:.3f})")  # fmt: skip
    return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--n-cells", type=int, default=None,
                   help="a random subset of each data set (default: all; for smoke tests)")  # fmt: skip
    p.add_argument("--max-epochs", type=int, default=None, help="default: the functions' own")
    p.add_argument("--min-f1", type=float, default=0.6)
    p.add_argument("--steps", nargs="+", default=["annotate", "integrate"],
                   choices=["annotate", "integrate"])  # fmt: skip
    args = p.parse_args(argv)
    ok = True
    for step in args.steps:
        ok &= (annotate_step if step == "annotate" else integrate_step)(args)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
