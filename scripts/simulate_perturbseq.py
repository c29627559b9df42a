"""Write the simulated Perturb-seq screen of ``omicformer`` as a GEARS dataset folder.

Makes ``OUT/perturbseq_sim/perturb_processed.h5ad`` (``OUT`` from ``--out``, default ``data``):
the output of :func:`omicformer.datasets.perturbseq_simulation`, a **simulated** (not real)
CRISPRi Perturb-seq screen generated from a known nonlinear gene regulatory network, in the
layout of GEARS' processed data sets: log-normalised ``X``, raw counts in ``layers["counts"]``,
``obs`` columns ``condition`` (``"ctrl"``, ``"GENE+ctrl"``, ``"GENE1+GENE2"``), ``cell_type``,
``dose_val``, ``control``, ``condition_name``, gene symbols in ``var["gene_name"]``, top DE
genes in ``uns["rank_genes_groups_cov_all"]`` and the true network in
``uns["omicformer_dataset"]``. Read it back with ``omicformer.datasets.read_gears(OUT /
"perturbseq_sim")``.

Usage
-----
From the repository root::

    python scripts/simulate_perturbseq.py --out data
    python scripts/simulate_perturbseq.py --out data --n-cells 12000 --seed 1 --name sim_seed1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from omicformer.datasets import perturbseq_simulation

GEARS_FILE = "perturb_processed.h5ad"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Write the simulated Perturb-seq screen as a GEARS dataset folder.",
    )
    parser.add_argument("--out", type=Path, default=Path("data"), help="parent folder (data)")
    parser.add_argument(
        "--name", default="perturbseq_sim", help="dataset folder name (perturbseq_sim)"
    )
    parser.add_argument("--n-cells", type=int, default=6000, help="cells (6000)")
    parser.add_argument("--n-genes", type=int, default=200, help="genes (200)")
    parser.add_argument("--n-singles", type=int, default=50, help="single perturbations (50)")
    parser.add_argument("--n-doubles", type=int, default=50, help="double perturbations (50)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing perturb_processed.h5ad"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    folder = args.out / args.name
    path = folder / GEARS_FILE
    if path.exists() and not args.overwrite:
        print(f"{path} exists; pass --overwrite to replace it.", file=sys.stderr)
        return 1
    start = time.perf_counter()
    adata = perturbseq_simulation(
        n_cells=args.n_cells,
        n_genes=args.n_genes,
        n_singles=args.n_singles,
        n_doubles=args.n_doubles,
        random_state=args.seed,
    )
    folder.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(path, compression="gzip")
    n_ctrl = int(adata.obs["control"].sum())
    print(
        f"wrote {path}: {adata.n_obs} cells x {adata.n_vars} genes, "
        f"{adata.obs['condition'].nunique() - 1} perturbations, {n_ctrl} control cells, "
        f"seed {args.seed} ({time.perf_counter() - start:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
