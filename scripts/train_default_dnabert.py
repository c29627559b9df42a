"""Train the small default DNABERT shipped in ``omicformer/dnabert/_data/default_{mlm,promoter}``.

Recipe (one CPU run on one thread of a shared 2-core machine: pretraining 11.6 min, fine-tuning
7.6 min, evaluation ~1 min):

* Model: DNABERT-6 (Ji et al., Bioinformatics 2021) scaled down: k=6 (vocabulary 4,101),
  4 layers, hidden 128, 4 heads, intermediate 512, 512 positions (official shape
  12/768/12/3072/512), 1.4 M parameters, saved as float16 (~2.8 MB per folder).
* Pretraining text: the bundled first 4 Mb of *C. elegans* ce2 chrX
  (:func:`omicformer.datasets.ce_chrx_fasta_path`) *minus* the 50-kb blocks that
  :func:`~omicformer.dnabert.tasks.promoter_task` puts in its test split (so the promoter test
  background and the held-out MLM loss below use DNA the model never read).
* Objective: DNABERT span masking (centres p=0.15, spans of k k-mers, 80/10/10), AdamW
  (betas 0.9/0.98, eps 1e-6, weight decay 0.01), linear warmup 6% then linear decay,
  gradient clipping 1.0, bf16 autocast on CPU, dropout 0.1.
  Two phases as in BERT (Devlin et al. 2019: short sequences first, then full length so every
  position embedding is trained):

  1. ``--steps1`` (1,000) steps of 256-bp windows (251 6-mers), batch 16, peak lr 1e-3;
  2. ``--steps2`` (100) steps of full 515-bp windows (510 6-mers), batch 8, peak lr 3e-4.

  Each phase holds out 2% of its windows as a validation set scored every 100 steps
  (phase 2's windows overlap phase 1's training DNA, so its validation loss is optimistic;
  the held-out test-block loss written to the metrics is not).
* Saved to ``default_mlm/`` *before* fine-tuning.
* Fine-tuning: ``promoter_task(length=300, random_state=0)`` train split (4,800 dm3 TSS-proximal
  windows vs 2,400 dm3 distal + 2,400 ce2 background windows), ``label_names=["background",
  "promoter"]``, ``--finetune-steps`` (900) steps of batch 16 (1.5 epochs), lr 3e-4, 10% warmup;
  saved to ``default_promoter/``.
* Evaluation of the saved (float16) folders: MLM loss on the held-out ce2 test blocks (fixed
  masking seed), promoter MCC/F1/AUROC on the plain and GC-matched test splits (the same
  held-out dm3 regions and ce2 blocks; the GC-matched negatives are drawn per GC bin).

Writes the two model folders, ``docs/_static/default_dnabert_mlm_loss.png`` (via
:func:`omicformer.dnabert.pl.loss_curve`) and ``docs/_static/default_dnabert_metrics.json``.
Training histories are kept per optimizer step (rounded to 4 decimals) so that
``dnabert.pl.loss_curve`` on a loaded default model redraws the documented curve.

    python scripts/train_default_dnabert.py            # the shipped models
    python scripts/train_default_dnabert.py --quick    # 2-minute smoke run into /tmp
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
from omicformer.dnabert.module import SpanMaskingCollator, TokenDataset
from omicformer.dnabert.tasks import classification_metrics, promoter_task

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["background", "promoter"]
SHAPE = {"k": 6, "n_layers": 4, "d_model": 128, "n_heads": 4, "max_len": 512}
FIT = {"accelerator": "cpu", "devices": 1, "precision": "bf16-mixed", "enable_progress_bar": False}
VAL_EVERY = 100  # steps between validation checks (both phases, so loss_curve spaces them evenly)


class PrintProgress(Callback):
    """Print the mean training loss every ``every`` optimizer steps."""

    def __init__(self, every: int, label: str) -> None:
        self.every, self.label, self.losses, self.t0 = every, label, [], time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))
        if trainer.global_step % self.every == 0:
            mins = (time.perf_counter() - self.t0) / 60
            print(
                f"  [{self.label}] step {trainer.global_step:5d}  loss "
                f"{np.mean(self.losses):.4f}  {mins:5.1f} min",
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


@torch.inference_mode()
def heldout_mlm_loss(
    model: DNABert, blocks: dict[str, str], window: int, max_windows: int
) -> float:
    """Span-masked MLM loss per masked token on windows of held-out DNA (fixed masking seed)."""
    windows, _ = pp.split_windows(list(blocks.values()), window)
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


def pretrain(args, train_blocks: dict[str, str]) -> tuple[DNABert, dict]:
    model = DNABert(**SHAPE, random_state=0)
    print(model, flush=True)
    phases = [  # (label, window bp, batch, steps, lr)
        ("phase 1", 256, 16, args.steps1, 1e-3),
        ("phase 2", model.window_size, 8, args.steps2, 3e-4),
    ]
    info = {"phases": []}
    for label, window, batch, steps, lr in phases:
        if steps == 0:
            continue
        t = time.perf_counter()
        model.pretrain(
            train_blocks,
            window_size=window,
            max_steps=steps,
            max_epochs=None,
            batch_size=batch,
            lr=lr,
            warmup_ratio=0.06,
            validation_size=0.02,
            random_state=0,
            **FIT,
            val_check_interval=min(VAL_EVERY, steps),
            check_val_every_n_epoch=None,
            callbacks=[PrintProgress(args.print_every, label)],
        )
        minutes = (time.perf_counter() - t) / 60
        print(f"{label}: {steps} steps of {window}-bp windows in {minutes:.1f} min", flush=True)
        info["phases"].append(
            {
                "window_bp": window,
                "batch_size": batch,
                "steps": steps,
                "peak_lr": lr,
                "minutes": round(minutes, 2),
            }
        )
    return model, info


def round_history(model: DNABert) -> None:
    model.history_ = {k: frame.round(4) for k, frame in model.history_.items()}


def plot_loss(model: DNABert, phase1_steps: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    pl.loss_curve(model, stage="mlm", smooth=50, ax=ax, show=False)
    ax.axvline(phase1_steps + 0.5, color="0.4", ls=":", lw=1)
    ax.text(phase1_steps, ax.get_ylim()[1], " 515-bp windows", va="top", fontsize=8)
    ax.set_title("default DNABERT-6 pretraining (ce2 chrX)")
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
    p.add_argument("--steps1", type=int, default=1000)
    p.add_argument("--steps2", type=int, default=100)
    p.add_argument("--finetune-steps", type=int, default=900)
    p.add_argument("--print-every", type=int, default=100)
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on a busy box)"
    )
    p.add_argument("--out", default=str(ROOT / "src/omicformer/dnabert/_data"))
    p.add_argument("--static", default=str(ROOT / "docs/_static"))
    p.add_argument("--quick", action="store_true", help="tiny smoke run written to /tmp")
    args = p.parse_args()
    if args.quick:
        args.steps1, args.steps2, args.finetune_steps, args.print_every = 20, 20, 20, 10
        args.out = args.static = "/tmp/omicformer_dnabert_quick"
    torch.set_num_threads(args.threads)
    out, static = Path(args.out), Path(args.static)
    static.mkdir(parents=True, exist_ok=True)

    train_blocks, test_blocks = ce2_blocks()
    print(
        f"pretraining on {len(train_blocks)} ce2 blocks ({sum(map(len, train_blocks.values())):,} bp); "
        f"held out {len(test_blocks)} test blocks",
        flush=True,
    )
    t0 = time.perf_counter()
    model, pre_info = pretrain(args, train_blocks)
    pre_minutes = (time.perf_counter() - t0) / 60
    round_history(model)
    model.save(out / "default_mlm", overwrite=True, half=True)
    plot_loss(model, args.steps1, static / "default_dnabert_mlm_loss.png")

    task = promoter_task(length=300, random_state=0)
    train = task[task["split"] == "train"]
    t1 = time.perf_counter()
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
    ft_minutes = (time.perf_counter() - t1) / 60
    round_history(model)
    model.save(out / "default_promoter", overwrite=True, half=True)

    # evaluate what ships: the float16 folders, reloaded
    mlm = DNABert.load(out / "default_mlm")
    promoter = DNABert.load(out / "default_promoter")
    hist = {k: frame.iloc[:, 0].tolist() for k, frame in mlm.history.items()}
    heldout = {f"{w}bp": round(heldout_mlm_loss(mlm, test_blocks, w, 400), 4) for w in (256, 515)}
    print(f"held-out MLM loss: {heldout}", flush=True)
    metrics = {
        "model": {
            **SHAPE,
            "parameters": sum(q.numel() for q in mlm.module.parameters()),
            "saved_as": "float16",
        },
        "pretraining": {
            "data": f"ce2 chrX[0:4,000,000] minus promoter-test blocks ({len(train_blocks)} x 50 kb)",
            "steps": args.steps1 + args.steps2,
            **pre_info,
            "minutes_cpu": round(pre_minutes, 2),
            "final_train_loss_mean_last_50_steps": round(
                float(np.mean(hist["mlm_train_loss_step"][-50:])), 4
            ),
            "validation_loss": hist.get("mlm_validation_loss", []),
            "heldout_test_blocks_mlm_loss": heldout,
            "uniform_guess_loss": round(float(np.log(mlm.config.vocab_size - 5)), 4),
        },
        "finetuning": {
            "task": "promoter_task(length=300, random_state=0) train split",
            "n_train": len(train),
            "steps": args.finetune_steps,
            "batch_size": 16,
            "epochs": round(args.finetune_steps * 16 / len(train), 2),
            "minutes_cpu": round(ft_minutes, 2),
        },
        "promoter_test": promoter_metrics(promoter),
        "folder_bytes": {
            f"default_{t}": folder_bytes(out / f"default_{t}") for t in ("mlm", "promoter")
        },
        "torch_threads": args.threads,
    }
    (static / "default_dnabert_metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    print(json.dumps(metrics, indent=1))


if __name__ == "__main__":
    main()
