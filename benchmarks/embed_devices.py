"""Equality of scGPT embeddings computed on two devices (e.g. CPU and GPU): cosine similarity.

Embeds the bundled ``pbmc68k_reduced`` (700 cells) with ``scgpt.tl.embed`` and the default model
once on ``--reference-device`` (CPU, float32) and once on ``--device`` (on CUDA under fp16
autocast, as ``tl.embed`` runs there), and prints the cosine similarity of each cell's two
embeddings: minimum and mean over cells. Exits 1 when the minimum is below ``--min-cosine`` or
the mean below ``--mean-cosine``.

    python benchmarks/embed_devices.py --device cuda
    python benchmarks/embed_devices.py --device cpu --batch-size 7   # CPU vs CPU, other batches

On CPU against CPU the two runs differ only in ``--batch-size`` (other length buckets), which
must not change a cell's embedding beyond float32 rounding.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def embeddings(device: str, batch_size: int, n_cells: int | None) -> np.ndarray:
    from omicformer import datasets
    from omicformer.scgpt import tl

    adata = datasets.pbmc68k_reduced()
    if n_cells is not None:
        adata = adata[:n_cells].copy()
    tl.embed(adata, "default", device=device, batch_size=batch_size, progress=False)
    return adata.obsm["X_scgpt"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--reference-device", default="cpu")
    p.add_argument("--batch-size", type=int, default=64, help="batch size on --device")
    p.add_argument("--n-cells", type=int, default=None, help="first cells only (default: all)")
    p.add_argument("--min-cosine", type=float, default=0.99)
    p.add_argument("--mean-cosine", type=float, default=0.999)
    args = p.parse_args(argv)

    ref = embeddings(args.reference_device, 64, args.n_cells)
    out = embeddings(args.device, args.batch_size, args.n_cells)
    cos = np.sum(ref * out, axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1))
    ok = cos.min() >= args.min_cosine and cos.mean() >= args.mean_cosine
    print(f"embed {args.reference_device} vs {args.device}: cosine min {cos.min():.6f} mean "
          f"{cos.mean():.6f} over {len(cos)} cells (need min >= {args.min_cosine}, mean >= "
          f"{args.mean_cosine}) {'ok' if ok else 'FAILED'}")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
