"""What the reference probe of ``tl.annotate`` reads: the gene bag vs the pretrained encoder.

The probe of :class:`~omicformer.scgpt.model.ScGPTClassifier` is a logistic regression
(scikit-learn, ``class_weight="balanced"``, C chosen by cross-validation on the reference,
``_classifier_probe.choose_c``) on a standardised representation of the reference cells
(``omicformer.scgpt.model._classifier_probe``). This script fits that regression on all
reference cells of stratified 70/30 splits and scores query macro-F1 for three
representations of the same cells, all from the same pretrained model (``--c 1`` fixes C
instead):

``bag`` (what the probe reads)
    each cell's mean of the pretrained gene embeddings of all its expressed genes, weighted by
    the model's per-cell quantile bins (``_classifier_probe.gene_bag``);
``encoder`` (the named baseline: what the probe read before)
    the pretrained encoder's cell embedding as the classifier computes it (``gene-mean`` of the
    gene tokens' outputs), from the ``max_len - 1 = 255`` most expressed genes of each cell;
``random``
    the same bag with a random Gaussian table in place of the gene embeddings: a control for
    what a linear projection of all genes gives without the pretraining.

No fine-tuning is involved, so the whole run takes a few minutes on 2 CPU cores. Sets: the
70/30 splits of ``benchmarks/annotation.py`` (``pbmc68k``, ``pbmc3k``, ``wu2020``,
``oligodendroglioma``), seeds 0-2 by default.

    python benchmarks/probe_representation.py [--sets ...] [--seeds ...] [--model PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time

import numpy as np
import scipy.sparse as sp
import torch
from annotation_sets import LABEL, oligodendroglioma, pbmc3k, pbmc68k, wu2020
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split

from omicformer.scgpt._embed import embed_cells
from omicformer.scgpt._genes import match_genes
from omicformer.scgpt._resolve import resolve_model
from omicformer.scgpt.model._classifier_probe import choose_c, gene_bag

SETS = {
    "pbmc68k": lambda: pbmc68k()[0],
    "pbmc3k": pbmc3k,
    "wu2020": wu2020,
    "oligodendroglioma": lambda: oligodendroglioma()[0],
}
REPRESENTATIONS = ("bag", "encoder", "random")


def representations(adata, module, vocab) -> dict[str, np.ndarray]:
    """The three representations of every cell of ``adata`` (its genes = the reference's)."""
    ids = match_genes(adata, vocab, None)
    genes = np.unique(ids[ids >= 0])
    X = sp.csr_matrix(adata.X)
    n_bins = module.config.n_bins
    table = module.encoder.embedding.weight.detach().float().numpy()[genes]
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(table.shape).astype(np.float32)
    gene_mean = dataclasses.replace(module.config, cell_emb_style="gene-mean")
    encoder = type(module)(gene_mean)
    encoder.load_state_dict(module.state_dict())
    emb = embed_cells(encoder.eval(), vocab, adata, gene_ids=ids, max_len=256, n_bins=n_bins,
                      device="cpu", progress=False, normalize=False,
                      gene_selection="highest")  # fmt: skip
    return {
        "bag": gene_bag(X, ids, genes, table, n_bins=n_bins),
        "encoder": emb.astype(np.float64),
        "random": gene_bag(X, ids, genes, noise, n_bins=n_bins),
    }


def probe_f1(F: np.ndarray, y: np.ndarray, seed: int, c: float | None) -> float:
    """Query macro-F1 of the probe's regression fitted on the reference of split ``seed``.

    ``c``: the regression's C; ``None``: chosen as the probe chooses it (``choose_c``).
    """
    ref, query = train_test_split(np.arange(len(y)), test_size=0.3, stratify=y, random_state=seed)
    mean, scale = F[ref].mean(0), np.sqrt(F[ref].var(0).mean() + 1e-5)
    Z = (F - mean) / scale
    c = choose_c(Z[ref], y[ref], "balanced", 0) if c is None else c
    lr = LogisticRegression(C=c, class_weight="balanced", max_iter=5000)
    lr.fit(Z[ref], y[ref])
    return float(f1_score(y[query], lr.predict(Z[query]), average="macro"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--model", default="default", help='"default" or a model folder')
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--c", type=float, default=None, help="fixed C (default: as the probe)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    module, vocab, description = resolve_model(args.model, task="embed")
    module.eval()
    print(f"{platform.machine()}, torch {torch.__version__} ({args.threads} threads); "
          f"model {description}; seeds {args.seeds}; C {args.c or 'by cross-validation'}; "
          "query macro-F1, mean ± sd")  # fmt: skip
    print(f"{'set':18s} {'bag':>15s} {'encoder':>15s} {'random':>15s} {'bag/encoder':>12s} s")
    means = {r: [] for r in REPRESENTATIONS}
    for name in args.sets:
        adata = SETS[name]()
        t0 = time.perf_counter()
        reps = representations(adata, module, vocab)
        y = adata.obs[LABEL].astype(str).to_numpy()
        scores = {r: [probe_f1(reps[r], y, s, args.c) for s in args.seeds] for r in REPRESENTATIONS}
        cells = []
        for r in REPRESENTATIONS:
            means[r].append(np.mean(scores[r]))
            sd = np.std(scores[r], ddof=1) if len(scores[r]) > 1 else 0.0
            cells.append(f"{np.mean(scores[r]):.3f} ± {sd:.3f}")
        ratio = np.mean(scores["bag"]) / np.mean(scores["encoder"])
        print(f"{name:18s} {cells[0]:>15s} {cells[1]:>15s} {cells[2]:>15s} {ratio:12.2f} "
              f"{time.perf_counter() - t0:.0f}")  # fmt: skip
        for r in REPRESENTATIONS:
            print(f"  {r} per seed: " + " ".join(f"{s:.3f}" for s in scores[r]))
    print(f"{'mean over sets':18s} " + " ".join(f"{np.mean(means[r]):15.3f}" for r in REPRESENTATIONS)
          + f" {np.mean(means['bag']) / np.mean(means['encoder']):12.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
