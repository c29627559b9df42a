"""Throughput of ``scgpt.tl.embed`` vs a plain reference forward of the same weights.

Reference = what the official ``embed_data`` does without flash-attn: every cell padded to
``max_len`` and run through ``torch.nn.TransformerEncoder`` (default settings, as in the official
``TransformerModel``) with a key padding mask, cells in their original order. Ours = length
buckets + SDPA (+ fp16 autocast on GPU). Both use identical tokens and weights; the script checks
the embeddings agree and prints cells/s, peak memory and the ratio from one run.

    python benchmarks/embed_throughput.py                      # CPU, bundled data, default model
    python benchmarks/embed_throughput.py --config human --device cuda --n-cells 4096

``--config human`` builds the whole-human architecture (d_model 512, 12 layers, 8 heads,
d_hid 512) with random weights and synthetic cells of exactly ``--genes-per-cell`` genes, and on
CUDA also reports model FLOP utilisation (MFU) against ``--peak-tflops``.

MFU, as printed: FLOPs = ``omicformer.scgpt.module.encoder_flops`` summed over the cells, i.e.
per cell of L tokens ``nlayers * L * 2 * (4 d^2 + 2 d d_hid + 2 L d)``, from these
multiply-accumulates (MACs, 2 FLOPs each) per token per layer: Q, K, V projections 3 d^2,
output projection d^2, feed-forward 2 d d_hid, attention scores Q K^T L d and weights times V
L d (d = d_model). Token encoders, layer norms, softmax, biases and padding tokens are not
counted. Achieved FLOP/s = those FLOPs / wall seconds of the whole timed omicformer pass
(batching, host-to-device copies and the uncounted work included; warm-up excluded);
MFU = achieved FLOP/s / (``--peak-tflops`` * 1e12).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from omicformer import datasets
from omicformer._core._device import inference_autocast, resolve_device
from omicformer.scgpt._embed import encode_tokens
from omicformer.scgpt._genes import match_genes
from omicformer.scgpt._resolve import resolve_model
from omicformer.scgpt._tokenize import length_buckets, pad_batch, tokenize_rows
from omicformer.scgpt._vocab import GeneVocab
from omicformer.scgpt.module import ScGPTConfig, TransformerModel, encoder_flops


def reference_encoder(module: TransformerModel) -> nn.TransformerEncoder:
    c = module.config
    layer = nn.TransformerEncoderLayer(c.d_model, c.nhead, c.d_hid, c.dropout, batch_first=True)
    ref = nn.TransformerEncoder(layer, c.nlayers)
    ref.load_state_dict(module.transformer_encoder.state_dict())
    return ref.eval()


@torch.no_grad()
def run_reference(module, ref, cells, vocab, max_len, batch_size, device):
    out = []
    pad_value = module.config.pad_value
    for s in range(0, len(cells), batch_size):
        batch = cells[s : s + batch_size]
        genes = np.full((len(batch), max_len), vocab.pad_id, dtype=np.int64)
        values = np.full((len(batch), max_len), pad_value, dtype=np.float32)
        for i, c in enumerate(batch):
            genes[i, : len(c.genes)], values[i, : len(c.values)] = c.genes, c.values
        g = torch.from_numpy(genes).to(device)
        v = torch.from_numpy(values).to(device)
        with inference_autocast(device):
            total = module.encoder(g) + module.value_encoder(v)
            h = ref(total, src_key_padding_mask=g.eq(vocab.pad_id))
        out.append(h[:, 0].float().cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def run_ours(module, cells, vocab, batch_size, device):
    out = np.zeros((len(cells), module.config.d_model), dtype=np.float32)
    lengths = np.array([len(c.genes) for c in cells])
    for b in length_buckets(lengths, batch_size):
        batch = pad_batch(
            [cells[i] for i in b], pad_id=vocab.pad_id, pad_value=module.config.pad_value
        )
        out[b] = encode_tokens(module, batch, device).cpu().numpy()
    return out


def _proc_status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux ``clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def timed(fn, device):
    """Run ``fn``; return (result, seconds, peak MiB above the memory in use before the run).

    CPU: peak RSS growth (Linux ``VmHWM`` after a reset); CUDA: ``max_memory_allocated``.
    """
    if device.type == "cpu":
        ok = _reset_peak_rss()
        base = _proc_status_mib("VmRSS:")
        t = time.perf_counter()
        res = fn()
        dt = time.perf_counter() - t
        peak = _proc_status_mib("VmHWM:") - base if ok else float("nan")
        return res, dt, peak
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    res = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    mem = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else float("nan")
    return res, dt, mem


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--config", choices=["default", "human"], default="default")
    p.add_argument(
        "--dataset", choices=["pbmc68k_reduced", "pbmc_celltypist"], default="pbmc68k_reduced"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-len", type=int, default=1200)
    p.add_argument("--n-cells", type=int, default=None)
    p.add_argument("--genes-per-cell", type=int, default=1200)
    p.add_argument(
        "--peak-tflops", type=float, default=989.0, help="dense fp16/bf16 peak (H100 SXM: 989)"
    )
    p.add_argument("--only", choices=["ref", "ours"], default=None, help=argparse.SUPPRESS)
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    return p.parse_args()


def run_one(args: argparse.Namespace) -> None:
    """Build model + tokens deterministically, time one side, save results to ``--result``."""
    torch.manual_seed(0)
    device = resolve_device(args.device)
    rng = np.random.default_rng(0)

    if args.config == "human":
        n = args.n_cells or 512
        genes = [f"G{i}" for i in range(20000)]
        vocab = GeneVocab.from_genes(genes)
        cfg = ScGPTConfig(ntoken=len(vocab), pad_token_id=vocab.pad_id, d_model=512, nhead=8,
                          d_hid=512, nlayers=12, dropout=0.0)  # fmt: skip
        module = TransformerModel(cfg).eval()
        k = args.genes_per_cell - 1
        rows = np.repeat(np.arange(n), k)
        cols = np.concatenate([rng.choice(len(genes), k, replace=False) for _ in range(n)])
        X = sp.csr_matrix((rng.gamma(2, 2, n * k) + 0.1, (rows, cols)), shape=(n, len(genes)))
        gene_ids = np.arange(len(genes))
        label = f"whole-human config, synthetic cells with {args.genes_per_cell} tokens"
    else:
        module, vocab, _ = resolve_model("default")
        adata = getattr(datasets, args.dataset)()
        if args.n_cells:
            adata = adata[: args.n_cells].copy()
        gene_ids = match_genes(adata, vocab)
        keep = gene_ids >= 0
        X, gene_ids = sp.csr_matrix(adata.X)[:, keep], gene_ids[keep]
        label = f"default model on {args.dataset}"
    module = module.to(device).eval()
    cells = tokenize_rows(X, gene_ids, cls_id=vocab.cls_id, pad_value=module.config.pad_value,
                          max_len=args.max_len, rng=rng)  # fmt: skip
    lengths = np.array([len(c.genes) for c in cells])
    max_len = int(min(args.max_len, lengths.max()))
    ref = reference_encoder(module).to(device)

    if args.only == "ref":
        fn = lambda: run_reference(module, ref, cells, vocab, max_len, args.batch_size, device)  # noqa: E731
        run_reference(module, ref, cells[:8], vocab, max_len, args.batch_size, device)  # warm-up
    else:
        fn = lambda: run_ours(module, cells, vocab, args.batch_size, device)  # noqa: E731
        run_ours(module, cells[:8], vocab, args.batch_size, device)  # warm-up
    out, seconds, peak = timed(fn, device)
    flops = float(encoder_flops(module.config, lengths).sum())
    np.savez(args.result, emb=out, seconds=seconds, peak=peak, flops=flops, n=len(cells),
             median_len=np.median(lengths), label=label, device=str(device))  # fmt: skip


def main() -> None:
    """Run each side in its own fresh process (clean peak memory), then compare."""
    import subprocess
    import sys
    import tempfile

    args = parse_args()
    if args.only:
        run_one(args)
        return
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for side in ("ref", "ours"):
            path = f"{tmp}/{side}.npz"
            subprocess.run([sys.executable, __file__, *sys.argv[1:], "--only", side, "--result", path],
                           check=True)  # fmt: skip
            res[side] = dict(np.load(path))

    def norm(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    ref, ours = res["ref"], res["ours"]
    diff = float(np.abs(norm(ref["emb"]) - norm(ours["emb"])).max())
    n, t_ref, t_our = int(ours["n"]), float(ref["seconds"]), float(ours["seconds"])
    print(
        f"scGPT embed throughput — {ours['label']}; {n} cells, tokens/cell median "
        f"{int(ours['median_len'])} (max_len {args.max_len}), batch {args.batch_size}, "
        f"device {ours['device']}, torch {torch.__version__}"
    )
    print(f"{'':34s}{'cells/s':>10s}{'peak MiB':>10s}")
    print(f"{'reference (pad to max_len, nn.TE)':34s}{n / t_ref:10.1f}{float(ref['peak']):10.0f}")
    print(f"{'omicformer (buckets + SDPA)':34s}{n / t_our:10.1f}{float(ours['peak']):10.0f}")
    print(
        f"speed-up ours/reference: {t_ref / t_our:.2f}x; max |emb diff| (L2-normalised): {diff:.2e}"
    )
    print("peak MiB: each side in a fresh process; CPU = peak RSS growth during the run (VmHWM), "
          "CUDA = max allocated")  # fmt: skip
    if ours["device"].item().startswith("cuda"):
        tflops = float(ours["flops"]) / t_our / 1e12
        print(f"MFU ours: {tflops / args.peak_tflops:.1%} of {args.peak_tflops} TFLOP/s "
              f"({tflops:.1f} TFLOP/s achieved)")  # fmt: skip


if __name__ == "__main__":
    main()
