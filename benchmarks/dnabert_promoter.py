"""Promoter classification and the HNF4alpha check: the default DNABERT, fine-tuned over several
seeds, vs a k-mer logistic regression; tokenisation throughput: ``dnabert.pp.tokenize`` vs naive
Python ``seq2kmer`` + dict lookup.

Promoter part. The pretrained ``default_mlm`` (or ``--mlm``) is fine-tuned with the recipe of
``scripts/train_default_dnabert.py`` (1,800 steps of batch 16, lr 3e-4, 10% warmup, bf16 on CPU)
once per ``--seeds`` value on the train split of ``promoter_task(length=300,
random_state=0)``; seed 0 is the recipe of the shipped ``default_promoter``. The k-mer
baseline, :func:`omicformer.dnabert.tasks.kmer_baseline` (normalised 6-mer counts, L2 logistic
regression, C chosen by grouped 3-fold CV on the train split; deterministic), learns from the
same split. Both are scored on the plain test split and the GC-matched one (same held-out dm3
regions and ce2 blocks, negatives drawn per GC bin so GC content alone does not separate the
classes). The table gives MCC, AUROC and F1 as mean ± sd over seeds, the per-seed margin over
the k-mer model (mean ± sd) and how many seeds beat it. As a stronger reference for the
GC-matched test, the k-mer model is also refitted on the GC-matched train split.

HNF4alpha part. The same MLM is fine-tuned per seed (``--hnf4a-steps`` steps, otherwise the
same recipe) on the train split of the motif-derived ``tfbs_task("MA0114", random_state=0)``
(JASPAR HNF4A samples planted in ce2 windows of 101 bp) and scored on that task's test split and
on :func:`~omicformer.dnabert.tasks.hnf4a_real_check` (the 71 real HNF4alpha sites of
Biostrings in held-out ce2 windows vs 71 unchanged windows), against the 6-mer logistic
regression fitted on the same train split.

Tokenisation part. ``--n-seqs`` real windows of ``--length`` bp from the bundled ce2 chrX,
tokenised for k=``--k`` into a padded id matrix ``[CLS] k-mers [SEP]`` by

* ours: ``pp.tokenize`` (vectorised numpy);
* naive: ``seq2kmer(seq, k).split()`` (the official DNABERT helper) and a Python dict lookup of
  every k-mer in the official vocabulary, then ``np.asarray``.

Both outputs are checked to be identical; the median and best of ``--repeats`` runs are
reported (single runs of ``pp.tokenize`` vary several-fold with memory allocation).

    python benchmarks/dnabert_promoter.py            # 3 seeds: about 100 CPU-minutes
    python benchmarks/dnabert_promoter.py --mlm path/to/mlm --seeds 0 1 2 3 4 --skip-tokenize
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

import numpy as np
import pandas as pd
import torch

from omicformer import datasets
from omicformer.dnabert import pp
from omicformer.dnabert.model import DNABert, default_model_path
from omicformer.dnabert.tasks import (
    classification_metrics,
    hnf4a_real_check,
    kmer_baseline,
    promoter_task,
    tfbs_task,
)

TASK = {"length": 300, "random_state": 0}
LABELS = ["background", "promoter"]


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


FINETUNE = {  # the fine-tuning recipe of scripts/train_default_dnabert.py
    "max_epochs": None,
    "batch_size": 16,
    "lr": 3e-4,
    "warmup_ratio": 0.1,
    "accelerator": "cpu",
    "devices": 1,
    "precision": "bf16-mixed",
    "enable_progress_bar": False,
}
METRICS = ("mcc", "auroc", "f1")


def mean_sd(values) -> str:
    v = np.asarray(values, dtype=float)
    sd = v.std(ddof=1) if len(v) > 1 else 0.0
    return f"{v.mean():.3f} ± {sd:.3f}"


def finetuned(
    mlm: str, train: pd.DataFrame, labels: list[str], steps: int, seed: int, pooling: str | None
) -> DNABert:
    model = DNABert.load(default_model_path("mlm") if mlm == "default" else mlm)
    model.finetune(
        train["sequence"].tolist(),
        train["label"].to_numpy(),
        label_names=labels,
        pooling=pooling,
        max_steps=steps,
        random_state=seed,
        **FINETUNE,
    )
    return model


def seed_run(
    mlm: str,
    train: pd.DataFrame,
    labels: list[str],
    steps: int,
    seed: int,
    pooling: str | None,
    sequences: list[str],
    batch_size: int,
    threads: int,
) -> tuple[int, np.ndarray, float, float]:
    """Fine-tune with ``seed``, predict ``sequences``: (seed, P(last class), CPU-s fit, predict)."""
    torch.set_num_threads(threads)
    t = time.process_time()
    model = finetuned(mlm, train, labels, steps, seed, pooling)
    t_fit = time.process_time() - t
    t = time.process_time()
    prob = model.predict(sequences, device="cpu", batch_size=batch_size, progress=False)[:, -1]
    return seed, prob, t_fit, time.process_time() - t


def over_seeds(seeds: list[int], jobs: int, **kw: Any):
    """:func:`seed_run` per seed, ``jobs`` processes at a time; yields results as they finish."""
    if jobs <= 1:
        for seed in seeds:
            yield seed_run(seed=seed, **kw)
        return
    ctx = multiprocessing.get_context("spawn")  # no fork after torch/OpenMP started
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        futures = [pool.submit(seed_run, seed=seed, **kw) for seed in seeds]
        for future in as_completed(futures):
            yield future.result()


def print_seed_table(title: str, results: dict, baseline: dict, n: dict) -> None:
    """``results[split][seed] -> metrics`` (fine-tuned DNABERT); ``baseline[split] -> metrics``."""
    print(title)
    print(
        f"  {'test split':<12}{'model':<32}{'n':>6}" + "".join(f"{m.upper():>16}" for m in METRICS)
    )
    for split, per_seed in results.items():
        seeds = sorted(per_seed)
        cols = {m: [per_seed[s][m] for s in seeds] for m in METRICS}
        base = baseline[split]
        margin = {m: np.asarray(cols[m]) - base[m] for m in METRICS}
        rows = [
            (f"DNABERT default ({len(seeds)} seeds)", [mean_sd(cols[m]) for m in METRICS]),
            ("6-mer logistic regression", [f"{base[m]:.3f}" for m in METRICS]),
            ("margin (DNABERT - k-mer)", [mean_sd(margin[m]) for m in METRICS]),
            (
                "seeds above the k-mer model",
                [f"{int((margin[m] > 0).sum())}/{len(seeds)}" for m in METRICS],
            ),
        ]
        for name, values in rows:
            print(f"  {split:<12}{name:<32}{n[split]:>6}" + "".join(f"{v:>16}" for v in values))
        per = "; ".join(
            f"seed {s}: " + ", ".join(f"{m.upper()} {per_seed[s][m]:.3f}" for m in ("mcc", "auroc"))
            for s in seeds
        )
        print(f"  {'':<12}{per}")


def promoter_benchmark(
    mlm: str,
    seeds: list[int],
    steps: int,
    batch_size: int,
    pooling: str | None,
    jobs: int,
    threads: int,
) -> None:
    tasks = {gc: promoter_task(gc_matched=gc, **TASK) for gc in (False, True)}
    train = tasks[False][tasks[False]["split"] == "train"]
    tests = {
        name: tasks[gc][tasks[gc]["split"] == "test"]
        for name, gc in (("plain", False), ("gc_matched", True))
    }
    both = pd.concat(tests.values(), ignore_index=True)
    n_plain = len(tests["plain"])
    slices = {"plain": slice(0, n_plain), "gc_matched": slice(n_plain, None)}

    t = time.perf_counter()
    p_kmer = kmer_baseline(train, both, k=6)
    t_kmer = time.perf_counter() - t
    baseline = {
        name: classification_metrics(tests[name]["label"].to_numpy(), p_kmer[sl])
        for name, sl in slices.items()
    }
    gc_train = tasks[True][tasks[True]["split"] == "train"]
    kmer_gc = classification_metrics(
        tests["gc_matched"]["label"].to_numpy(), kmer_baseline(gc_train, tests["gc_matched"], k=6)
    )

    results: dict = {name: {} for name in slices}
    t_ft = t_pred = 0.0
    for seed, prob, fit_s, pred_s in over_seeds(
        seeds, jobs, mlm=mlm, train=train, labels=LABELS, steps=steps, pooling=pooling,
        sequences=both["sequence"].tolist(), batch_size=batch_size, threads=threads,
    ):  # fmt: skip
        t_ft, t_pred = t_ft + fit_s, t_pred + pred_s
        for name, sl in slices.items():
            results[name][seed] = classification_metrics(tests[name]["label"].to_numpy(), prob[sl])
        print(
            f"  seed {seed}: plain MCC {results['plain'][seed]['mcc']:.3f}, "
            f"GC-matched MCC {results['gc_matched'][seed]['mcc']:.3f}",
            flush=True,
        )

    print_seed_table(
        f"\nPromoter task: promoter_task(length=300, random_state=0). The {mlm} MLM fine-tuned on "
        f"the plain train split ({len(train):,} windows, {steps} steps of 16) with seeds "
        f"{seeds}; the 6-mer logistic regression fitted on the same split. Mean ± sd over seeds "
        "(sd with ddof=1); the k-mer model is deterministic.",
        results,
        baseline,
        {name: len(tests[name]) for name in slices},
    )
    print(
        "  reference: 6-mer LR refitted on the GC-matched train split, GC-matched test: "
        f"MCC {kmer_gc['mcc']:.3f}, AUROC {kmer_gc['auroc']:.3f}, F1 {kmer_gc['f1']:.3f}"
    )
    print(
        f"  time: fine-tuning {t_ft / 60 / len(seeds):.1f} CPU-min per seed, prediction "
        f"{t_pred / len(seeds):.0f} CPU-s per seed for {len(both):,} windows; k-mer baseline "
        f"fit (incl. C search) + predict {t_kmer:.1f} s"
    )


def hnf4a_benchmark(
    mlm: str,
    seeds: list[int],
    steps: int,
    batch_size: int,
    pooling: str | None,
    jobs: int,
    threads: int,
) -> None:
    """Fine-tune on the motif-derived HNF4A task; score its test split and the real sites."""
    task = tfbs_task("MA0114", random_state=0)
    train = task[task["split"] == "train"]
    tests = {"tfbs_test": task[task["split"] == "test"], "hnf4a_real": hnf4a_real_check()}
    both = pd.concat(tests.values(), ignore_index=True)
    n_first = len(tests["tfbs_test"])
    slices = {"tfbs_test": slice(0, n_first), "hnf4a_real": slice(n_first, None)}
    p_kmer = kmer_baseline(train, both, k=6)
    baseline = {
        name: classification_metrics(tests[name]["label"].to_numpy(), p_kmer[sl])
        for name, sl in slices.items()
    }
    results: dict = {name: {} for name in slices}
    for seed, prob, _, _ in over_seeds(
        seeds, jobs, mlm=mlm, train=train, labels=["background", "site"], steps=steps,
        pooling=pooling, sequences=both["sequence"].tolist(), batch_size=batch_size,
        threads=threads,
    ):  # fmt: skip
        for name, sl in slices.items():
            results[name][seed] = classification_metrics(tests[name]["label"].to_numpy(), prob[sl])
        print(
            f"  seed {seed}: real HNF4alpha sites AUROC {results['hnf4a_real'][seed]['auroc']:.3f}",
            flush=True,
        )
    print_seed_table(
        f"\nHNF4alpha check: the {mlm} MLM fine-tuned on tfbs_task('MA0114', random_state=0) "
        f"train split ({len(train):,} windows of 101 bp, JASPAR MA0114 samples planted in ce2, "
        f"{steps} steps of 16) with seeds {seeds}; scored on that task's test split "
        "(tfbs_test) and on hnf4a_real_check() (hnf4a_real: the 71 real Biostrings HNF4alpha "
        "sites in held-out ce2 windows vs 71 unchanged windows); the 6-mer logistic regression "
        "fitted on the same train split.",
        results,
        baseline,
        {name: len(tests[name]) for name in slices},
    )


def embedding_probe(mlms: list[str], batch_size: int) -> None:
    """Frozen mean embeddings of each MLM + logistic regression, vs the 6-mer model."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    tasks = {gc: promoter_task(gc_matched=gc, **TASK) for gc in (False, True)}
    train = tasks[False][tasks[False]["split"] == "train"]
    tests = {"plain": tasks[False], "gc_matched": tasks[True]}
    tests = {name: df[df["split"] == "test"] for name, df in tests.items()}
    print(
        "\nFrozen embeddings: mean-pooled last hidden states (dnabert embed, no fine-tuning) of "
        "the promoter windows, standardised, L2 logistic regression (C=1) fitted on the plain "
        "train split; the 6-mer model as above."
    )
    print(f"  {'MLM':<44}{'test split':<12}{'MCC':>8}{'AUROC':>8}")
    for name, data in tests.items():
        m = classification_metrics(data["label"].to_numpy(), kmer_baseline(train, data, k=6))
        print(f"  {'6-mer logistic regression':<44}{name:<12}{m['mcc']:>8.3f}{m['auroc']:>8.3f}")
    for mlm in mlms:
        model = DNABert.load(default_model_path("mlm") if mlm == "default" else mlm)
        kw = {"device": "cpu", "batch_size": batch_size, "progress": False}
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=3000))
        clf.fit(model.embed(train["sequence"].tolist(), **kw), train["label"])
        for name, data in tests.items():
            prob = clf.predict_proba(model.embed(data["sequence"].tolist(), **kw))[:, 1]
            m = classification_metrics(data["label"].to_numpy(), prob)
            print(f"  {mlm[-44:]:<44}{name:<12}{m['mcc']:>8.3f}{m['auroc']:>8.3f}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--mlm", default="default", help="pretrained MLM folder to fine-tune ('default': shipped)"
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="fine-tuning seeds")
    p.add_argument("--finetune-steps", type=int, default=1800, help="promoter fine-tuning steps")
    p.add_argument("--hnf4a-steps", type=int, default=1500, help="HNF4A-task fine-tuning steps")
    p.add_argument(
        "--pooling", choices=["cls", "mean"], help="fine-tuning head (default: the MLM's own)"
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--n-seqs", type=int, default=20_000)
    p.add_argument("--length", type=int, default=515)
    p.add_argument("--k", type=int, default=6)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch threads (per job)")
    p.add_argument("--jobs", type=int, default=1, help="seeds fine-tuned in parallel processes")
    p.add_argument("--skip-promoter", action="store_true")
    p.add_argument("--skip-hnf4a", action="store_true")
    p.add_argument("--skip-tokenize", action="store_true")
    p.add_argument(
        "--probe",
        nargs="*",
        default=None,
        metavar="MLM",
        help="also score frozen embeddings of these MLM folders ('default': shipped; a bare "
        "--probe: the shipped one)",
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    common = (args.pooling, args.jobs, args.threads)
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__} with {torch.get_num_threads()} thread(s)"
    )
    if not args.skip_promoter:
        promoter_benchmark(args.mlm, args.seeds, args.finetune_steps, args.batch_size, *common)
    if not args.skip_hnf4a:
        hnf4a_benchmark(args.mlm, args.seeds, args.hnf4a_steps, args.batch_size, *common)
    if args.probe is not None:
        embedding_probe(args.probe or ["default"], args.batch_size)
    if not args.skip_tokenize:
        tokenize_benchmark(args.n_seqs, args.length, args.k, args.repeats)


if __name__ == "__main__":
    main()
