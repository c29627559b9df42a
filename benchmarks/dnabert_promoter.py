"""Promoter classification: the fine-tuned default DNABERT vs a k-mer logistic regression;
tokenisation throughput: ``dnabert.pp.tokenize`` vs naive Python ``seq2kmer`` + dict lookup.

Promoter part. Both classifiers learn from the same data, the train split of
``promoter_task(length=300, random_state=0)`` (the split the shipped ``default_promoter`` model
was fine-tuned on, see ``scripts/train_default_dnabert.py``), and are scored on the same test
splits: the plain task and the GC-matched task (same held-out dm3 regions and ce2 blocks,
negatives drawn per GC bin so GC content alone does not separate the classes). As a stronger
reference for the GC-matched test, the k-mer model is also refitted on the GC-matched train
split. The k-mer baseline is :func:`omicformer.dnabert.tasks.kmer_baseline` (normalised 6-mer
counts, L2 logistic regression, C chosen by grouped 3-fold CV on the train split).

Tokenisation part. ``--n-seqs`` real windows of ``--length`` bp from the bundled ce2 chrX,
tokenised for k=``--k`` into a padded id matrix ``[CLS] k-mers [SEP]`` by

* ours: ``pp.tokenize`` (vectorised numpy);
* naive: ``seq2kmer(seq, k).split()`` (the official DNABERT helper) and a Python dict lookup of
  every k-mer in the official vocabulary, then ``np.asarray``.

Both outputs are checked to be identical; the median and best of ``--repeats`` runs are
reported (single runs of ``pp.tokenize`` vary several-fold with memory allocation).

    python benchmarks/dnabert_promoter.py
    python benchmarks/dnabert_promoter.py --model path/to/finetuned --skip-tokenize
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import pandas as pd
import torch

from omicformer import datasets
from omicformer.dnabert import pp, tl
from omicformer.dnabert.tasks import classification_metrics, kmer_baseline, promoter_task

TASK = {"length": 300, "random_state": 0}


def naive_tokenize(sequences: list[str], k: int) -> np.ndarray:
    """Official-style tokenisation: seq2kmer string, split, one dict lookup per k-mer."""
    vocab = {token: i for i, token in enumerate(pp.kmer_vocab(k))}
    cls, sep, unk = vocab["[CLS]"], vocab["[SEP]"], vocab["[UNK]"]
    rows = []
    for seq in sequences:
        kmers = pp.seq2kmer(seq, k).split()
        rows.append([cls, *(vocab.get(kmer, unk) for kmer in kmers), sep])
    return np.asarray(rows, dtype=np.int64)


def run_times(fn, repeats: int) -> tuple[list[float], object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return times, out


def tokenize_benchmark(n: int, length: int, k: int, repeats: int) -> None:
    genome = datasets.ce_chrx_sequence()
    starts = np.random.default_rng(0).integers(0, len(genome) - length, n)
    seqs = [genome[s : s + length] for s in starts]
    t_ours, ours = run_times(lambda: pp.tokenize(seqs, k)["input_ids"], repeats)
    t_naive, naive = run_times(lambda: naive_tokenize(seqs, k), repeats)
    if not np.array_equal(ours, naive):
        msg = "pp.tokenize and the naive seq2kmer + vocab lookup disagree."
        raise AssertionError(msg)
    n_kmers = n * (length - k + 1)
    print(
        f"\nTokenisation, {n:,} x {length} bp, k={k} ({n_kmers:,} k-mers), {repeats} runs each, "
        "outputs identical"
    )
    print(f"  {'method':<34}{'median s':>9}{'best s':>9}{'seqs/s':>11}{'k-mers/s':>13}  (median)")
    for name, t in (("pp.tokenize (numpy)", t_ours), ("seq2kmer + dict lookup (Python)", t_naive)):
        med = float(np.median(t))
        print(f"  {name:<34}{med:>9.3f}{min(t):>9.3f}{n / med:>11,.0f}{n_kmers / med:>13,.0f}")
    ratio = np.median(t_naive) / np.median(t_ours)
    print(f"  speed-up: {ratio:.1f}x (median), {min(t_naive) / min(t_ours):.1f}x (best runs)")


def promoter_benchmark(model: str, batch_size: int) -> None:
    tasks = {gc: promoter_task(gc_matched=gc, **TASK) for gc in (False, True)}
    train = tasks[False][tasks[False]["split"] == "train"]
    tests = {
        name: tasks[gc][tasks[gc]["split"] == "test"]
        for name, gc in (("plain", False), ("gc_matched", True))
    }
    both = pd.concat(tests.values(), ignore_index=True)
    n_plain = len(tests["plain"])

    t = time.perf_counter()
    pred = tl.predict(
        both["sequence"].tolist(),
        model=model,
        device="cpu",
        batch_size=batch_size,
        progress=False,
    )
    t_dnabert = time.perf_counter() - t
    p_dnabert = pred["dnabert_prob_promoter"].to_numpy()
    t = time.perf_counter()
    p_kmer = kmer_baseline(train, both, k=6)
    t_kmer = time.perf_counter() - t
    gc_train = tasks[True][tasks[True]["split"] == "train"]
    p_kmer_gc = kmer_baseline(gc_train, tests["gc_matched"], k=6)

    rows = []
    for name, sl in (("plain", slice(0, n_plain)), ("gc_matched", slice(n_plain, None))):
        y = tests[name]["label"].to_numpy()
        rows.append(
            (
                name,
                "DNABERT default (fine-tuned)",
                "plain",
                classification_metrics(y, p_dnabert[sl]),
            )
        )
        rows.append(
            (name, "6-mer logistic regression", "plain", classification_metrics(y, p_kmer[sl]))
        )
    y = tests["gc_matched"]["label"].to_numpy()
    rows.append(
        (
            "gc_matched",
            "6-mer logistic regression",
            "gc_matched",
            classification_metrics(y, p_kmer_gc),
        )
    )

    print(
        f"Promoter task: promoter_task(length=300, random_state=0); train {len(train):,} "
        f"windows (plain), test {n_plain:,} (plain) / {len(tests['gc_matched']):,} (GC-matched)"
    )
    print(
        f"  {'test split':<12}{'model':<31}{'trained on':<12}{'n':>6}{'MCC':>8}{'F1':>8}{'AUROC':>8}"
    )
    for test, name, trained, m in rows:
        print(
            f"  {test:<12}{name:<31}{trained:<12}{m['n']:>6}{m['mcc']:>8.3f}{m['f1']:>8.3f}{m['auroc']:>8.3f}"
        )
    print(
        f"  time: DNABERT inference {t_dnabert:.1f} s for {len(both):,} windows; "
        f"k-mer baseline fit (incl. C search) + predict {t_kmer:.1f} s"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default", help="fine-tuned promoter model folder")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--n-seqs", type=int, default=20_000)
    p.add_argument("--length", type=int, default=515)
    p.add_argument("--k", type=int, default=6)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--skip-promoter", action="store_true")
    p.add_argument("--skip-tokenize", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__} with {torch.get_num_threads()} thread(s)"
    )
    if not args.skip_promoter:
        promoter_benchmark(args.model, args.batch_size)
    if not args.skip_tokenize:
        tokenize_benchmark(args.n_seqs, args.length, args.k, args.repeats)


if __name__ == "__main__":
    main()
