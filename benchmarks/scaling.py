"""Scaling of scGPT embedding and training with the number of cells: cells/s and peak memory.

For each size (default 10k, 100k and 1M cells) a synthetic ``.h5ad`` is written to disk in
chunks (the matrix is never held in memory), then every case runs in its own fresh process, so
that the peak resident memory (RSS) printed is that case's alone:

``embed_backed``
    ``scgpt.tl.embed`` on ``anndata.read_h5ad(path, backed="r")``, embeddings to ``out_file``
    (a ``.npy``): our out-of-core path.
``embed_memory``
    ``scgpt.tl.embed`` after ``anndata.read_h5ad(path)`` (the matrix in memory), into ``obsm``.
``pad_baseline``
    What the official ``embed_data`` does: read the whole matrix, tokenise every cell and pad it
    to ``max_len`` (one ``(n_cells, max_len)`` array), then run the padded batches in order
    through ``torch.nn.TransformerEncoder`` with a key padding mask (the reference of
    ``benchmarks/embed_throughput.py``). Same tokens and weights as ours, so the embeddings must
    agree; the script prints the largest difference.
``train_backed``
    ``ScGPT.train(max_epochs=1, max_steps=N)`` on the backed file (streaming: chunks of 1024
    contiguous cells, shuffled in windows of 4 chunks).
``train_memory``
    The same on the AnnData read into memory, ``streaming=False`` (all vocabulary genes of all
    cells loaded first).

The in-memory cases run only for sizes whose estimated footprint fits in 40% of the memory
available when the script starts (``--max-memory-fraction``); the others print why they were
skipped. Every case times everything from opening the file to the result (cells/s = cells /
wall seconds; training: cells/s = ``N * batch_size`` / seconds of the N steps, the set-up --
opening, the one validation pass over all cells, the model -- printed apart). On a shared
machine wall time depends on the other load; the CPU seconds of the case's process are printed
too (cells per CPU second).

Data: NB counts of 20,000 real gene symbols (a fixed random subset of the official CELLxGENE
census vocabulary, :func:`omicformer.datasets.official_census_vocab`), 12 "cell types" with
their own expression profiles (gene means log-normal, sigma 2, times a log-normal type factor,
sigma 0.7), library sizes log-normal around ``--median-umi`` (1,500 UMIs, sigma 0.45). Each
cell's UMIs come in Poisson-many bursts of log-series sizes (q = 0.5) placed on genes drawn
from its type's profile, so every gene's count is negative binomial. With the defaults a cell
has 760 detected genes on average (1st-99th percentile about 290-1,600), 57% of the non-zero
counts are 1, and the file takes about 6.1 kB per cell (float32 values, int32 indices,
uncompressed CSR): 5.7 GiB for 1M cells. ``--workdir DIR --keep`` keeps the files for the next
run.

Model: random weights of a tiny scGPT (``d_model`` 32, 2 layers, 2 heads, ``max_len`` 256) so
that the data path dominates; batch size 64.

    python benchmarks/scaling.py                           # 10k, 100k, 1M (minutes to an hour)
    python benchmarks/scaling.py --quick                   # 1k and 3k cells, a smoke test
    python benchmarks/scaling.py --sizes 100000 --cases embed_backed train_backed
    python benchmarks/scaling.py --check --json rows.json  # exit 1 unless the goal holds

Goal (``--check``): from the second-largest to the largest size, peak RSS of ``embed_backed`` and
``train_backed`` within 10% and their cells/s within 10%.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from synthetic_atlas import write_synthetic  # noqa: E402  (a sibling file of this script)

CASES = ("embed_backed", "embed_memory", "pad_baseline", "train_backed", "train_memory")
IN_MEMORY = {"embed_memory", "pad_baseline", "train_memory"}
MODEL = {"d_model": 32, "nlayers": 2, "nhead": 2, "max_len": 256}
#: The AnnData a case opened (its ``obs`` is measured after the clock stops).
OPENED: list = []


# ---------------------------------------------------------------------------- synthetic data
def dataset(workdir: Path, n_cells: int, median_umi: float, seed: int) -> tuple[Path, dict]:
    """The synthetic file of ``n_cells`` in ``workdir`` (written if absent) and its summary."""
    path = workdir / f"cells_{n_cells}_umi{median_umi:g}_seed{seed}.h5ad"
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        return path, json.loads(meta.read_text())
    t = time.perf_counter()
    info = write_synthetic(path, n_cells, median_umi=median_umi, seed=seed)
    info["write_seconds"] = time.perf_counter() - t
    meta.write_text(json.dumps(info))
    return path, info


# ---------------------------------------------------------------------------- cases (child)
class MemoryWatch:
    """Peak RSS (kernel, ``ru_maxrss``) and peak anonymous RSS (sampled every 20 ms).

    File pages mapped into the process (e.g. a ``.npy`` memory map being written) count in RSS
    but the kernel can drop them once written; anonymous memory (arrays, Python objects) cannot.
    """

    def __init__(self) -> None:
        self.peak_anon = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def status(field: str) -> float:
        """A ``/proc/self/status`` field in MiB."""
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_anon = max(self.peak_anon, self.status("RssAnon:"))

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_anon = max(self.peak_anon, self.status("RssAnon:"))
        self.peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tiny_module(genes: list[str]):
    """The benchmark's scGPT (random weights, seed 0) and a vocabulary of ``genes``."""
    import torch

    from omicformer.scgpt._vocab import GeneVocab
    from omicformer.scgpt.module import ScGPTConfig, TransformerModel

    vocab = GeneVocab.from_genes(genes)
    torch.manual_seed(0)
    cfg = ScGPTConfig(ntoken=len(vocab), pad_token_id=vocab.pad_id, d_model=MODEL["d_model"],
                      nhead=MODEL["nhead"], d_hid=MODEL["d_model"], nlayers=MODEL["nlayers"],
                      dropout=0.0)  # fmt: skip
    return TransformerModel(cfg).eval(), vocab


def embed(args: argparse.Namespace, out: dict) -> None:
    """``embed_backed`` / ``embed_memory``: ``scgpt.tl.embed`` end to end."""
    import anndata as ad

    from omicformer.scgpt import tl

    backed = args.case == "embed_backed"
    adata = ad.read_h5ad(args.file, backed="r" if backed else None)
    out["rss_after_open"] = MemoryWatch.status("VmRSS:")
    OPENED.append(adata)
    model = tiny_module(list(adata.var_names))
    out_file = os.path.join(args.scratch, "emb.npy") if backed else None
    tl.embed(adata, model, max_len=MODEL["max_len"], batch_size=args.batch_size, device="cpu",
             progress=False, out_file=out_file)  # fmt: skip
    emb = np.load(out_file, mmap_mode="r") if backed else adata.obsm["X_scgpt"]
    out["head"] = np.asarray(emb[: args.head]).tolist()
    out["n"] = adata.n_obs


def _embed_throughput():
    """``benchmarks/embed_throughput.py`` as a module (its reference encoder)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("embed_throughput", HERE / "embed_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pad_baseline(args: argparse.Namespace, out: dict) -> None:
    """Read everything, tokenise and pad every cell to ``max_len``, forward batches in order."""
    import anndata as ad
    import torch

    from omicformer._core._anndata import to_csr
    from omicformer.scgpt._embed import cell_seeds
    from omicformer.scgpt._tokenize import tokenize_rows

    adata = ad.read_h5ad(args.file)
    out["rss_after_open"] = MemoryWatch.status("VmRSS:")
    OPENED.append(adata)
    module, vocab = tiny_module(list(adata.var_names))
    ids = np.arange(adata.n_vars)  # every gene is in the vocabulary, in order
    X = to_csr(adata.X)
    X.indices = X.indices.astype(X.indptr.dtype)  # read back as int32 indices, int64 indptr
    cells = tokenize_rows(X, ids, cls_id=vocab.cls_id, pad_value=module.config.pad_value,
                          max_len=MODEL["max_len"], row_seeds=cell_seeds(X, ids, 0))  # fmt: skip
    n, L = len(cells), MODEL["max_len"]
    genes = np.full((n, L), vocab.pad_id, dtype=np.int64)
    values = np.full((n, L), module.config.pad_value, dtype=np.float32)
    for i, c in enumerate(cells):
        genes[i, : len(c.genes)], values[i, : len(c.values)] = c.genes, c.values
    del cells
    ref = _embed_throughput().reference_encoder(module)
    emb = np.empty((n, module.config.d_model), dtype=np.float32)
    with torch.no_grad():
        for s in range(0, n, args.batch_size):
            g = torch.from_numpy(genes[s : s + args.batch_size])
            v = torch.from_numpy(values[s : s + args.batch_size])
            h = ref(
                module.encoder(g) + module.value_encoder(v), src_key_padding_mask=g.eq(vocab.pad_id)
            )
            emb[s : s + len(g)] = h[:, 0].numpy()
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    out["head"] = emb[: args.head].tolist()
    out["n"] = n


def train(args: argparse.Namespace, out: dict) -> None:
    """``train_backed`` / ``train_memory``: one epoch cut at ``--train-steps`` steps."""
    import anndata as ad
    import lightning.pytorch as pl

    from omicformer.scgpt.model import ScGPT

    class StepClock(pl.Callback):
        def on_train_start(self, trainer, module):
            self.start, self.cpu = time.perf_counter(), time.process_time()

        def on_train_end(self, trainer, module):
            self.seconds, self.steps = time.perf_counter() - self.start, trainer.global_step
            self.cpu = time.process_time() - self.cpu

    backed = args.case == "train_backed"
    adata = ad.read_h5ad(args.file, backed="r" if backed else None)
    out["rss_after_open"] = MemoryWatch.status("VmRSS:")
    OPENED.append(adata)
    ScGPT.setup_anndata(adata)
    model = ScGPT(adata, d_model=MODEL["d_model"], n_layers=MODEL["nlayers"],
                  n_heads=MODEL["nhead"], max_len=MODEL["max_len"], dropout=0.0)  # fmt: skip
    clock = StepClock()
    model.train(max_epochs=1, max_steps=args.train_steps, batch_size=args.batch_size,
                validation_size=0.0, accelerator="cpu", devices=1, enable_progress_bar=False,
                streaming=backed, callbacks=[clock])  # fmt: skip
    out["n"] = clock.steps * args.batch_size
    out["loop_seconds"], out["loop_cpu_seconds"] = clock.seconds, clock.cpu


def obs_mib(adata) -> float:
    """Memory of what anndata holds per cell for a file: ``obs`` and its index (cell names)."""
    obs = adata.obs
    return (
        obs.memory_usage(deep=True, index=False).sum() + obs.index.memory_usage(deep=True)
    ) / 2**20


def run_case(args: argparse.Namespace) -> None:
    """Child process: run one case, write its measurements to ``--result`` (JSON)."""
    import importlib

    import torch

    modules = ["anndata", "omicformer.scgpt.tl", "omicformer.scgpt._tokenize"]
    if args.case.startswith("train"):
        modules += ["lightning.pytorch", "omicformer.scgpt.model"]
    for name in modules:  # imported before the clock starts
        importlib.import_module(name)
    torch.set_num_threads(1)
    out: dict = {"case": args.case, "rss_start": MemoryWatch.status("VmRSS:")}
    fn = {"embed_backed": embed, "embed_memory": embed, "pad_baseline": pad_baseline,
          "train_backed": train, "train_memory": train}[args.case]  # fmt: skip
    cpu0, t = time.process_time(), time.perf_counter()
    with MemoryWatch() as mem:
        fn(args, out)
    out["seconds"], out["cpu_seconds"] = time.perf_counter() - t, time.process_time() - cpu0
    # the kernel's high-water mark (ru_maxrss) is synced lazily from per-thread counters and can
    # trail a VmRSS read by a few hundred KiB: the peak is at least any RSS observed
    out["peak_rss"] = max(mem.peak_rss, out.get("rss_after_open", 0.0))
    out["peak_anon"] = mem.peak_anon
    out["obs_mib"] = obs_mib(OPENED[0]) if OPENED else float("nan")
    Path(args.result).write_text(json.dumps(out))


# ---------------------------------------------------------------------------- driver (parent)
def available_mib() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return float("inf")


def footprint_mib(case: str, info: dict) -> float:
    """Rough memory of an in-memory case: CSR copies (8 bytes per entry) + padded tokens."""
    csr = info["nnz"] * 8 / 2**20
    if case == "pad_baseline":
        return 2 * csr + 2 * info["n_cells"] * MODEL["max_len"] * 12 / 2**20
    return (3 if case == "train_memory" else 2) * csr


def run_child(args: argparse.Namespace, case: str, path: Path, scratch: Path) -> dict:
    result = scratch / f"{case}.json"
    cmd = [sys.executable, __file__, "--case", case, "--file", str(path), "--result", str(result),
           "--scratch", str(scratch), "--batch-size", str(args.batch_size),
           "--train-steps", str(args.train_steps), "--head", str(args.head)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        msg = f"case {case} on {path.name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        raise RuntimeError(msg)
    return json.loads(result.read_text())


def measure(args: argparse.Namespace, case: str, size: int, path: Path, info: dict,
            avail: float, workdir: Path) -> dict:  # fmt: skip
    """One row of the table: the case run in a fresh process, or why it was skipped."""
    import shutil
    import tempfile

    need = footprint_mib(case, info) if case in IN_MEMORY else 0
    if need > args.max_memory_fraction * avail:
        why = f"skipped: needs ~{need / 1024:.1f} GiB in memory, {avail / 1024:.1f} GiB available"
        return {"size": size, "case": case, "skipped": why}
    scratch = Path(tempfile.mkdtemp(dir=workdir))
    try:
        row = {"size": size, **run_child(args, case, path, scratch)}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(
        f"  {size} {case}: {row['seconds']:.1f} s, peak RSS {row['peak_rss']:.0f} MiB", flush=True
    )
    return row


def report(rows: list[dict], info: dict[int, dict]) -> None:
    print(f"{'cells':>9s} {'case':14s} {'seconds':>8s} {'cells/s':>8s} {'cells/CPU-s':>11s} "
          f"{'peak RSS MiB':>12s} {'anon MiB':>8s} {'open MiB':>8s} {'+MiB':>6s} {'obs MiB':>7s}  note")  # fmt: skip
    for r in rows:
        if "skipped" in r:
            print(f"{r['size']:9d} {r['case']:14s} {'-':>8s} {'-':>8s} {'-':>11s} {'-':>12s} "
                  f"{'-':>8s} {'-':>8s} {'-':>6s} {'-':>7s}  {r['skipped']}")  # fmt: skip
            continue
        secs = r.get("loop_seconds", r["seconds"])
        cpu = r.get("loop_cpu_seconds", r["cpu_seconds"])
        note = f"set-up {r['seconds'] - secs:.1f} s, {r['n']} cells trained" if "loop_seconds" in r else ""  # fmt: skip
        print(f"{r['size']:9d} {r['case']:14s} {r['seconds']:8.1f} {r['n'] / secs:8.0f} "
              f"{r['n'] / cpu:11.0f} {r['peak_rss']:12.0f} {r['peak_anon']:8.0f} "
              f"{r['rss_after_open']:8.0f} {r['peak_rss'] - r['rss_after_open']:6.0f} "
              f"{r.get('obs_mib', float('nan')):7.0f}  {note}")  # fmt: skip
    print("peak RSS: the case's process (ru_maxrss); anon: peak anonymous RSS (sampled, without "
          "mapped file pages); open MiB: RSS after imports and opening the file (obs, var, and "
          "for in-memory cases the matrix); +MiB: peak RSS - open MiB; obs MiB: anndata's obs "
          "and cell names, held in memory for a backed file too (part of open MiB).")  # fmt: skip
    for n, i in info.items():
        print(f"data {n} cells: {i['nnz'] / n:.0f} detected genes/cell, {i['bytes'] / 2**30:.2f} GiB "
              f"on disk")  # fmt: skip


def agreement(rows: list[dict]) -> None:
    for size in sorted({r["size"] for r in rows}):
        heads = {r["case"]: np.array(r["head"]) for r in rows if r["size"] == size and "head" in r}
        if "embed_backed" in heads and len(heads) > 1:
            diffs = ", ".join(f"{c} {np.abs(h - heads['embed_backed']).max():.1e}"
                              for c, h in heads.items() if c != "embed_backed")  # fmt: skip
            print(f"max |embedding - embed_backed| on the first rows ({size} cells): {diffs}")


def goal(rows: list[dict]) -> bool:
    """Peak RSS and cells/s of the backed cases within 10% from the second-largest size up."""
    ok = True
    for case in ("embed_backed", "train_backed"):
        done = sorted((r for r in rows if r["case"] == case and "skipped" not in r),
                      key=lambda r: r["size"])  # fmt: skip
        if len(done) < 2:
            continue
        a, b = done[-2:]
        rss = b["peak_rss"] / a["peak_rss"] - 1
        speed = lambda r: r["n"] / r.get("loop_seconds", r["seconds"])  # noqa: E731
        rate = speed(b) / speed(a) - 1
        flat = abs(rss) <= 0.10 and abs(rate) <= 0.10
        ok &= flat
        print(f"goal {case} {a['size']} -> {b['size']} cells: peak RSS {rss:+.1%}, cells/s "
              f"{rate:+.1%} ({'flat' if flat else 'NOT flat'} within 10%)")  # fmt: skip
    return ok


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="default 10k, 100k, 1M")
    p.add_argument(
        "--quick", action="store_true", help="smoke test: 1k and 3k cells, 5 training steps"
    )
    p.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    p.add_argument(
        "--workdir", default=None, help="where the data go (default: a temporary folder)"
    )
    p.add_argument("--keep", action="store_true", help="keep the data (reused by the next run)")
    p.add_argument("--median-umi", type=float, default=1500.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--train-steps", type=int, default=100)
    p.add_argument("--max-memory-fraction", type=float, default=0.4)
    p.add_argument("--check", action="store_true", help="exit 1 unless the backed cases are flat")
    p.add_argument("--json", default=None, help="also write every row to this file")
    for hidden in ("--case", "--file", "--result", "--scratch"):
        p.add_argument(hidden, default=None, help=argparse.SUPPRESS)
    p.add_argument("--head", type=int, default=256, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.sizes is None:
        args.sizes = [1_000, 3_000] if args.quick else [10_000, 100_000, 1_000_000]
    if args.quick:
        args.train_steps = min(args.train_steps, 5)
    return args


def main(argv: list[str] | None = None) -> int:
    import platform
    import shutil
    import tempfile

    args = parse_args(argv)
    if args.case:
        run_case(args)
        return 0
    own_dir = args.workdir is None
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="omicformer_scaling_"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"scGPT scaling: d_model {MODEL['d_model']}, {MODEL['nlayers']} layers, max_len "
          f"{MODEL['max_len']}, batch {args.batch_size}, {args.train_steps} training steps; "
          f"{platform.machine()}, {os.cpu_count()} CPUs, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}", flush=True)  # fmt: skip
    rows, info, avail = [], {}, available_mib()
    try:
        for size in sorted(args.sizes):
            path, info[size] = dataset(workdir, size, args.median_umi, args.seed)
            try:
                for case in args.cases:
                    rows.append(measure(args, case, size, path, info[size], avail, workdir))
            finally:
                if not args.keep:
                    path.unlink(missing_ok=True)
                    path.with_suffix(".json").unlink(missing_ok=True)
    finally:
        if own_dir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    report(rows, info)
    agreement(rows)
    if args.json:
        slim = [{k: v for k, v in r.items() if k != "head"} for r in rows]
        Path(args.json).write_text(json.dumps({"rows": slim, "data": info}, indent=1))
    ok = goal(rows)
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
