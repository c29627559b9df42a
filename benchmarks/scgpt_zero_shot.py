"""Zero-shot default scGPT embedding vs PCA: 15-NN label accuracy on four labelled datasets.

For each dataset, one row: 5-fold cross-validated 15-nearest-neighbour accuracy (stratified,
shuffled with seed 0; ``omicformer demo``'s protocol) of

* ``scgpt.tl.embed(adata, model=...)`` (the shipped default unless ``--model`` is given), and
* 50 principal components (``sc.pp.pca``, seed 0) of the log-normalised data of the same cells
  (``log1p(normalize_total(x, 1e4))``; ``pbmc68k_reduced`` ships log-normalised),

and their ratio. ``pbmc68k_reduced`` (``bulk_labels``), PBMC 3k (``cell_type_scanpy_pbmc3k``)
and ``oligodendroglioma`` (``cell_type``) are in the default model's pretraining data;
``wu2020_tcells`` (``cluster_orig``) is not.

    python benchmarks/scgpt_zero_shot.py [--model default] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

from omicformer import datasets
from omicformer._demo import knn_accuracy

#: dataset: (label column, in the default model's pretraining data, already log-normalised)
SETS = {
    "pbmc68k_reduced": ("bulk_labels", True, True),
    "pbmc3k_desc": ("cell_type_scanpy_pbmc3k", True, False),
    "oligodendroglioma": ("cell_type", True, False),
    "wu2020_tcells": ("cluster_orig", False, False),
}


def evaluate(model="default", device: str = "cpu") -> dict[str, dict]:
    """``{dataset: {labels, cells, in_pretraining, scgpt, pca, ratio, seconds}}``."""
    import scanpy as sc

    from omicformer import scgpt

    out = {}
    for name, (key, seen, is_log) in SETS.items():
        a = getattr(datasets, name)()
        labels = a.obs[key].astype(str).to_numpy()
        t = time.perf_counter()
        scgpt.tl.embed(a, model=model, device=device, progress=False)
        seconds = time.perf_counter() - t
        pca = a.copy()
        if not is_log:
            sc.pp.normalize_total(pca, target_sum=1e4)
            sc.pp.log1p(pca)
        sc.pp.pca(pca, n_comps=50, random_state=0)
        s, p = knn_accuracy(a.obsm["X_scgpt"], labels), knn_accuracy(pca.obsm["X_pca"], labels)
        out[name] = {"labels": key, "cells": int(a.n_obs), "in_pretraining": seen,
                     "scgpt": round(s, 4), "pca": round(p, 4), "ratio": round(s / p, 3),
                     "embed_seconds": round(seconds, 1)}  # fmt: skip
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None, help="also write the table as JSON here")
    args = p.parse_args()
    res = evaluate(args.model, args.device)
    print(f"{'dataset':<20} {'labels':<26} {'cells':>5} {'seen':>5} {'scGPT':>6} {'PCA-50':>6} "
          f"{'ratio':>6}")  # fmt: skip
    for name, r in res.items():
        print(f"{name:<20} {r['labels']:<26} {r['cells']:>5} {'yes' if r['in_pretraining'] else 'no':>5} "
              f"{r['scgpt']:>6.3f} {r['pca']:>6.3f} {r['ratio']:>6.3f}")  # fmt: skip
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
