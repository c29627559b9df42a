"""Train the small default DNABERT: ``omicformer/dnabert/_data/default_mlm`` and its promoter
fine-tune ``default_promoter`` (both v2, shipped).

Fine-tuned for 1,800 steps, v2 beats the 6-mer logistic regression on the promoter test splits
(shipped run: plain MCC 0.556, AUROC 0.863; GC-matched 0.564, 0.864; 3 seeds in
``benchmarks/dnabert_promoter.py``); at 900 steps it did not (MCC 0.487). The v1
``default_promoter`` it replaced (the v1 MLM fine-tuned through ``[CLS]``) scored MCC 0.547,
AUROC 0.861. ``--from-mlm`` fine-tunes an existing ``default_mlm`` without pretraining again,
which is how the shipped ``default_promoter`` was made. See the DNABERT guide, "Default models".

Recipe (v2; one CPU run on one thread of a shared 2-core machine, 2026-12-02; minutes are CPU
(process) time of the run that wrote the shipped ``default_mlm``: pretraining 44.6 (phases
7.3 + 7.2 + 30.0), fine-tuning 18.1, evaluation 1.3; wall-clock time on the busy machine was
66 minutes for pretraining):

* Model: DNABERT-6 (Ji et al., Bioinformatics 2021) scaled down: k=6 (vocabulary 4,101),
  4 layers, hidden 128, 4 heads, intermediate 512, 512 positions (official shape
  12/768/12/3072/512), 1.4 M parameters, saved as float16 (~2.8 MB per folder).
* Pretraining text: all bundled DNA except what a test split uses (14.4 Mb):

  - the bundled first 4 Mb of *C. elegans* ce2 chrX (:func:`omicformer.datasets.ce_chrx_sequence`)
    minus the 8 50-kb blocks that :func:`~omicformer.dnabert.tasks.promoter_task` puts in its
    test split (with ``random_state=0`` the same blocks hold the test windows of ``tfbs_task``
    and ``hnf4a_real_check``);
  - the 6,000 bundled *D. melanogaster* dm3 2-kb upstream regions
    (:func:`omicformer.datasets.dm3_upstream`) minus the promoter task's 600 test regions and
    every region overlapping one of them on the genome (5,400 kept).

  So the promoter test windows, the HNF4alpha check windows and the held-out MLM losses below
  use DNA the model never read.
* Objective: DNABERT span masking (centres p=0.15, spans of k k-mers, 80/10/10), AdamW
  (betas 0.9/0.98, eps 1e-6, weight decay 0.01), linear warmup 6% then linear decay per phase,
  gradient clipping 1.0, bf16 autocast on CPU, dropout 0.1.
* What gets it past the k-mer-frequency plateau (v1 of this script, randomly initialised and
  trained 1,100 steps, stalled at held-out loss 7.27; uniform guessing is 8.32). Three
  training-time devices, all from :mod:`omicformer.dnabert.module`; the saved folders are
  ordinary DNABERT checkpoints:

  - position embeddings initialised as Transformer sinusoids, std 0.05
    (:func:`~omicformer.dnabert.module.sinusoidal_position_init`), so attention can tell a
    masked span's neighbours from the first step;
  - compositional k-mer embeddings while pretraining
    (:func:`~omicformer.dnabert.module.use_compositional_embeddings`): each k-mer row is
    ``sum_j P[j, base_j] + R[kmer]`` with ``P`` a learned (6, 4, 128) table and ``R`` a free
    residual starting at 0, shared by the input and the tied output decoder; merged into a
    plain embedding (:func:`~omicformer.dnabert.module.merge_compositional_embeddings`)
    before saving;
  - random position offsets (:func:`~omicformer.dnabert.module.use_random_position_offsets`)
    in phase 1b, so what the model learned on short windows holds at all 512 positions.

* Phases (BERT's short-then-long schedule, Devlin et al. 2019):

  1a. ``--steps1a`` (1,500) steps of 64-bp windows (59 6-mers), batch 32, peak lr 2e-3;
  1b. ``--steps1b`` (1,500) steps of 64-bp windows, batch 32, peak lr 1e-3, each batch's
      positions shifted by a random offset (``[CLS]`` stays at 0);
  2.  ``--steps2`` (1,000) steps of DNABERT's pretraining windows, batch 8, peak lr 5e-4: the
      non-overlapping 515-bp windows of every sequence plus as many windows of random start
      and random length 10-515 bp (5-510 6-mers; the paper's "direct non-overlap splitting
      and random sampling, with sequence length between 5 and 510").

  Each phase holds out 0.5% of its windows as a validation set scored every 250 steps
  (phase 1 validates on 64-bp windows, phase 2 on its own windows, which overlap phase 1's
  training DNA; the held-out test-region losses written to the metrics are the honest ones).
* Saved to ``default_mlm/`` *before* fine-tuning.
* Fine-tuning: ``promoter_task(length=300, random_state=0)`` train split (4,800 dm3 TSS-proximal
  windows vs 2,400 dm3 distal + 2,400 ce2 background windows), ``label_names=["background",
  "promoter"]``, ``--finetune-steps`` (1,800) steps of batch 16 (3 epochs), lr 3e-4, 10% warmup,
  ``random_state=0``, ``pooling="mean"`` (the head reads the mean k-mer state:
  ``default_mlm`` records ``classifier_pooling="mean"``; through ``[CLS]`` a shorter v2 run
  reached MCC 0.374 against 0.518 with the mean); saved to ``default_promoter/`` (the
  shipped folder: ``--from-mlm``, 23.1 CPU-minutes on one thread).
  ``benchmarks/dnabert_promoter.py`` repeats this fine-tuning from
  ``default_mlm`` over several seeds against the k-mer baseline.
* Result of the run that wrote ``default_mlm``: held-out span-masked MLM loss 3.38 (ce2,
  256 bp), 3.41 (ce2, 515 bp), 3.54 (dm3, 515 bp), against 7.26 / 7.27 for v1 (uniform guess
  8.32).
* Evaluation of the saved (float16) folders: MLM loss on the held-out ce2 test blocks and dm3
  test regions (400 windows each, fixed masking seed), promoter MCC/F1/AUROC on the plain and
  GC-matched test splits (the same held-out dm3 regions and ce2 blocks; the GC-matched
  negatives are drawn per GC bin).

Writes the two model folders, ``docs/_static/default_dnabert_mlm_loss.png`` (via
:func:`omicformer.dnabert.pl.loss_curve`) and ``docs/_static/default_dnabert_metrics.json``.
Training histories are kept per optimizer step (rounded to 4 decimals) so that
``dnabert.pl.loss_curve`` on a loaded default model redraws the documented curve.

    python scripts/train_default_dnabert.py            # the shipped default_mlm
    python scripts/train_default_dnabert.py --quick    # few-minute smoke run into /tmp
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from omicformer import datasets
from omicformer.dnabert import pl, pp
from omicformer.dnabert.model import DNABert
from omicformer.dnabert.module import (
    SpanMaskingCollator,
    TokenDataset,
    merge_compositional_embeddings,
    remove_random_position_offsets,
    sinusoidal_position_init,
    use_compositional_embeddings,
    use_random_position_offsets,
)
from omicformer.dnabert.tasks import classification_metrics, promoter_task
from omicformer.dnabert.tasks._common import _dm3_regions

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["background", "promoter"]
SHAPE = {"k": 6, "n_layers": 4, "d_model": 128, "n_heads": 4, "max_len": 512}
FIT = {"accelerator": "cpu", "devices": 1, "precision": "bf16-mixed", "enable_progress_bar": False}
SPLIT = {"random_state": 0, "fractions": (0.8, 0.1, 0.1)}  # promoter_task's defaults
VAL_EVERY = 250  # steps between validation checks (every phase, so loss_curve spaces them evenly)
POSITION_STD = 0.05
MIN_WINDOW_BP = 10  # 5 6-mers
POOLING = "mean"  # fine-tuning head reads the mean k-mer state (see the module docstring)
V1_HELDOUT = {"ce2_256bp": 7.2596, "ce2_515bp": 7.269}  # v1 default (docs/_static, before v2)


class PrintProgress(Callback):
    """Print the mean training loss every ``every`` optimizer steps."""

    def __init__(self, every: int, label: str) -> None:
        self.every, self.label, self.losses = every, label, []
        self.t0, self.c0 = time.perf_counter(), time.process_time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))
        if trainer.global_step % self.every == 0:
            wall = (time.perf_counter() - self.t0) / 60
            cpu = (time.process_time() - self.c0) / 60
            print(
                f"  [{self.label}] step {trainer.global_step:5d}  loss "
                f"{np.mean(self.losses):.4f}  {cpu:5.1f} CPU-min ({wall:.1f} wall)",
                flush=True,
            )
            self.losses = []


def ce2_blocks() -> tuple[dict[str, str], dict[str, str]]:
    """ce2 chrX 50-kb blocks -> sequence, split into (pretraining, held-out test) blocks.

    The test blocks are those :func:`promoter_task` (plain and GC-matched, ``random_state=0``)
    draws its test background windows from.
    """
    test = set()
    for gc in (False, True):
        df = promoter_task(gc_matched=gc, random_state=0)
        bg = df[(df["source"] == "ce2_background") & (df["split"] == "test")]
        test |= set(bg["group"])
    seq = datasets.ce_chrx_sequence()
    blocks = {}
    for b in range(0, len(seq), 50_000):
        blocks[f"ce2:chrX:{b}-{min(b + 50_000, len(seq))}"] = seq[b : b + 50_000]
    assert test <= set(blocks), sorted(test - set(blocks))
    train = {name: s for name, s in blocks.items() if name not in test}
    return train, {name: blocks[name] for name in sorted(test)}


def dm3_regions() -> tuple[dict[str, str], dict[str, str]]:
    """dm3 upstream regions -> sequence: (pretraining, held-out test) regions.

    Test regions are the promoter task's test split (``random_state=0``); a non-test region
    overlapping any test region on the genome is left out of pretraining as well.
    """
    regions = _dm3_regions(SPLIT["random_state"], SPLIT["fractions"])
    test = regions[regions["split"] == "test"]
    keep = {}
    for r in regions[regions["split"] != "test"].itertuples():
        same = test[test["chrom"] == r.chrom]
        if not ((same["start"] < r.end) & (same["end"] > r.start)).any():
            keep[f"dm3:{r.name}"] = r.sequence
    return keep, {f"dm3:{r.name}": r.sequence for r in test.itertuples()}


def official_windows(sequences: list[str], seed: int) -> list[str]:
    """DNABERT pretraining windows: 515-bp windows + as many random ones.

    The 515-bp windows follow one another; a sequence's last one is aligned to its end
    (``pp.split_windows``), so it repeats part of the window before it. (``DNABert.pretrain``
    keeps the remainder instead; this script made the shipped model and cuts its windows as
    it did then, here and for phase 1.)

    Random windows have a uniform random length of 10..515 bp (5..510 6-mers) and a uniform
    random start; their sequences are drawn in proportion to length.
    """
    rng = np.random.default_rng(seed)
    full, _ = pp.split_windows(sequences, 515)
    lengths = np.array([len(s) for s in sequences])
    weight = np.maximum(lengths - 515 + 1, 1).astype(float)
    owner = rng.choice(len(sequences), size=len(full), p=weight / weight.sum())
    size = rng.integers(MIN_WINDOW_BP, 516, size=len(full))
    random = []
    for i, n in zip(owner, size, strict=True):
        start = int(rng.integers(0, max(lengths[i] - n, 0) + 1))
        random.append(sequences[i][start : start + int(n)])
    return full + random


@torch.inference_mode()
def heldout_mlm_loss(model: DNABert, sequences: list[str], window: int, max_windows: int) -> float:
    """Span-masked MLM loss per masked token on windows of held-out DNA (fixed masking seed)."""
    windows, _ = pp.split_windows(sequences, window)
    windows = [w for w in windows if len(w) == window and "N" not in w]
    windows = [windows[i] for i in np.linspace(0, len(windows) - 1, max_windows).astype(int)]
    tokens = pp.tokenize(windows, model.k)
    data = TokenDataset(tokens["input_ids"], tokens["attention_mask"].sum(1))
    collate = SpanMaskingCollator(model.k, model.config.vocab_size, seed=12345)
    module = model.module.eval()
    total, n = 0.0, 0
    for start in range(0, len(data), 32):
        batch = collate([data[i] for i in range(start, min(start + 32, len(data)))])
        n_masked = int((batch["labels"] != -100).sum())
        total += float(module(**batch).loss) * n_masked
        n += n_masked
    return total / n


def pretrain(args, train_seqs: list[str]) -> tuple[DNABert, dict]:
    model = DNABert(**SHAPE, random_state=0)
    sinusoidal_position_init(model.module.bert.embeddings.position_embeddings, std=POSITION_STD)
    use_compositional_embeddings(model.module, model.k, generator=torch.Generator().manual_seed(0))
    print(model, flush=True)
    # phase 1's 64-bp windows as the run that made the shipped model cut them (the last of a
    # block aligned to its end); DNABert.pretrain now keeps a block's remainder instead
    short, _ = pp.split_windows(train_seqs, 64)
    phases = [  # (label, sequences, window bp, batch, steps, lr, random position offsets)
        ("phase 1a", short, 64, 32, args.steps1a, 2e-3, False),
        ("phase 1b", short, 64, 32, args.steps1b, 1e-3, True),
        ("phase 2", official_windows(train_seqs, seed=0), 515, 8, args.steps2, 5e-4, False),
    ]
    info = {"phases": []}
    for label, data, window, batch, steps, lr, offsets in phases:
        if steps == 0:
            continue
        if offsets:
            use_random_position_offsets(model.module)
        t, c = time.perf_counter(), time.process_time()
        model.pretrain(
            data,
            window_size=window,
            max_steps=steps,
            max_epochs=None,
            batch_size=batch,
            lr=lr,
            warmup_ratio=0.06,
            validation_size=0.005,
            random_state=0,
            **FIT,
            val_check_interval=min(VAL_EVERY, steps),
            check_val_every_n_epoch=None,
            callbacks=[PrintProgress(args.print_every, label)],
        )
        remove_random_position_offsets(model.module)
        cpu, wall = (time.process_time() - c) / 60, (time.perf_counter() - t) / 60
        print(f"{label}: {steps} steps in {cpu:.1f} CPU-min ({wall:.1f} wall)", flush=True)
        info["phases"].append(
            {
                "phase": label,
                "windows": "64 bp" if window == 64 else "515 bp + random 10-515 bp",
                "batch_size": batch,
                "steps": steps,
                "peak_lr": lr,
                "random_position_offsets": offsets,
                "cpu_minutes": round(cpu, 2),
                "wall_minutes": round(wall, 2),
            }
        )
    merge_compositional_embeddings(model.module)
    return model, info


def round_history(model: DNABert) -> None:
    model.history_ = {k: frame.round(4) for k, frame in model.history_.items()}


def plot_loss(model: DNABert, phase_ends: list[int], heldout: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    pl.loss_curve(model, stage="mlm", smooth=50, ax=ax, show=False)
    labels = (" 1b: random offsets", " 2: 515 bp + random lengths")
    for end, text in zip(phase_ends, labels, strict=True):
        ax.axvline(end + 0.5, color="0.4", ls=":", lw=1)
        ax.text(end, ax.get_ylim()[1], text, va="top", fontsize=7)
    ax.axhline(V1_HELDOUT["ce2_515bp"], color="C3", ls="--", lw=1, label="v1 default, held-out")
    ax.axhline(heldout["ce2_515bp"], color="C2", ls="--", lw=1, label="v2, held-out (ce2 515 bp)")
    ax.set_title("default DNABERT-6 pretraining (ce2 chrX + dm3 upstream)")
    ax.legend(frameon=False, fontsize=7, loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def promoter_metrics(model: DNABert) -> dict:
    out = {}
    for name, gc in (("plain", False), ("gc_matched", True)):
        df = promoter_task(length=300, gc_matched=gc, random_state=0)
        test = df[df["split"] == "test"]
        prob = model.predict(
            test["sequence"].tolist(), device="cpu", batch_size=64, progress=False
        )[:, LABELS.index("promoter")]
        out[name] = {
            k: round(v, 4) if isinstance(v, float) else v
            for k, v in classification_metrics(test["label"], prob).items()
        }
        print(f"promoter test ({name}): {out[name]}", flush=True)
    return out


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps1a", type=int, default=1500)
    p.add_argument("--steps1b", type=int, default=1500)
    p.add_argument("--steps2", type=int, default=1000)
    p.add_argument("--finetune-steps", type=int, default=1800)
    p.add_argument("--print-every", type=int, default=250)
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on a busy box)"
    )
    p.add_argument("--out", default=str(ROOT / "src/omicformer/dnabert/_data"))
    p.add_argument("--static", default=str(ROOT / "docs/_static"))
    p.add_argument("--quick", action="store_true", help="tiny smoke run written to /tmp")
    p.add_argument("--from-mlm", help="skip pretraining: fine-tune this earlier default_mlm")
    p.add_argument(
        "--pretrain-metrics", help="with --from-mlm: the metrics JSON of the run that made it"
    )
    args = p.parse_args()
    if args.from_mlm and not args.pretrain_metrics:
        p.error("--from-mlm needs --pretrain-metrics")
    if args.quick:
        args.steps1a, args.steps1b, args.steps2 = 20, 20, 20
        args.finetune_steps, args.print_every = 20, 10
        args.out = args.static = "/tmp/omicformer_dnabert_quick"
    torch.set_num_threads(args.threads)
    out, static = Path(args.out), Path(args.static)
    static.mkdir(parents=True, exist_ok=True)

    ce2_train, ce2_test = ce2_blocks()
    dm3_train, dm3_test = dm3_regions()
    train_seqs = list(ce2_train.values()) + list(dm3_train.values())
    n_bp = sum(map(len, train_seqs))
    print(
        f"pretraining on {len(ce2_train)} ce2 blocks + {len(dm3_train)} dm3 regions "
        f"({n_bp:,} bp); held out {len(ce2_test)} ce2 test blocks, {len(dm3_test)} dm3 test "
        "regions (and their genomic overlaps)",
        flush=True,
    )
    if args.from_mlm:  # fine-tune and evaluate an MLM this script pretrained earlier
        model = DNABert.load(args.from_mlm)
        earlier = json.loads(Path(args.pretrain_metrics).read_text())["pretraining"]
        pre_info = {"phases": earlier["phases"]}
        pre_minutes = earlier["cpu_minutes"]
    else:
        c0 = time.process_time()
        model, pre_info = pretrain(args, train_seqs)
        pre_minutes = (time.process_time() - c0) / 60
        round_history(model)
    model.module.config.classifier_pooling = POOLING  # what finetune() uses by default
    model.save(out / "default_mlm", overwrite=True, half=True)

    task = promoter_task(length=300, random_state=0)
    train = task[task["split"] == "train"]
    c1 = time.process_time()
    model.finetune(
        train["sequence"].tolist(),
        train["label"].to_numpy(),
        label_names=LABELS,
        max_epochs=None,
        max_steps=args.finetune_steps,
        batch_size=16,
        lr=3e-4,
        warmup_ratio=0.1,
        random_state=0,
        **FIT,
        callbacks=[PrintProgress(args.print_every, "finetune")],
    )
    ft_minutes = (time.process_time() - c1) / 60
    round_history(model)
    model.save(out / "default_promoter", overwrite=True, half=True)

    # evaluate what ships: the float16 folders, reloaded
    c2 = time.process_time()
    mlm = DNABert.load(out / "default_mlm")
    promoter = DNABert.load(out / "default_promoter")
    hist = {k: frame.iloc[:, 0].tolist() for k, frame in mlm.history.items()}
    ce2, dm3 = list(ce2_test.values()), list(dm3_test.values())
    heldout = {
        "ce2_256bp": heldout_mlm_loss(mlm, ce2, 256, 400),
        "ce2_515bp": heldout_mlm_loss(mlm, ce2, 515, 400),
        "dm3_515bp": heldout_mlm_loss(mlm, dm3, 515, 400),
    }
    heldout = {k: round(v, 4) for k, v in heldout.items()}
    print(f"held-out MLM loss: {heldout}", flush=True)
    phase_ends = [args.steps1a, args.steps1a + args.steps1b]
    plot_loss(mlm, phase_ends, heldout, static / "default_dnabert_mlm_loss.png")
    promoter_test = promoter_metrics(promoter)
    eval_minutes = (time.process_time() - c2) / 60
    metrics = {
        "model": {
            **SHAPE,
            "parameters": sum(q.numel() for q in mlm.module.parameters()),
            "saved_as": "float16",
        },
        "pretraining": {
            "data": (
                f"ce2 chrX[0:4,000,000] minus promoter-test blocks ({len(ce2_train)} x 50 kb) + "
                f"{len(dm3_train)} dm3 upstream regions (2 kb) outside the promoter test split "
                f"and its genomic overlaps: {n_bp:,} bp"
            ),
            "init": {
                "position_embeddings": f"sinusoidal, std {POSITION_STD}",
                "kmer_embeddings": "compositional while pretraining (sum of (6, 4, 128) "
                "position-base vectors + free residual, tied decoder), merged before saving",
            },
            "steps": args.steps1a + args.steps1b + args.steps2,
            **pre_info,
            "cpu_minutes": round(pre_minutes, 2),
            "final_train_loss_mean_last_50_steps": round(
                float(np.mean(hist["mlm_train_loss_step"][-50:])), 4
            ),
            "validation_loss": hist.get("mlm_validation_loss", []),
            "heldout_mlm_loss": heldout,
            "v1_default_heldout_mlm_loss": V1_HELDOUT,
            "uniform_guess_loss": round(float(np.log(mlm.config.vocab_size - 5)), 4),
        },
        "finetuning": {
            "task": "promoter_task(length=300, random_state=0) train split",
            "n_train": len(train),
            "steps": args.finetune_steps,
            "batch_size": 16,
            "epochs": round(args.finetune_steps * 16 / len(train), 2),
            "pooling": POOLING,
            "cpu_minutes": round(ft_minutes, 2),
        },
        "promoter_test": promoter_test,
        "evaluation_cpu_minutes": round(eval_minutes, 2),
        "folder_bytes": {
            "default_mlm": folder_bytes(out / "default_mlm"),
            "default_promoter": folder_bytes(out / "default_promoter"),
        },
        "torch_threads": args.threads,
    }
    (static / "default_dnabert_metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    print(json.dumps(metrics, indent=1))


if __name__ == "__main__":
    main()
