"""benchmarks/gpu_check.sh and its Python steps, on CPU with tiny sizes (no GPU, no pip)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.parametrize("config", ["tiny", "default"])
def test_train_throughput_times_steps_on_cpu(config, tmp_path, capsys, load_benchmark):
    out = tmp_path / "train.json"
    argv = ["--config", config, "--device", "cpu", "--steps", "2", "--warmup", "1",
            "--batch-size", "4", "--genes-per-cell", "20", "--max-len", "16", "--json", str(out)]  # fmt: skip
    assert load_benchmark("train_throughput").main(argv) == 0
    r = json.loads(out.read_text())
    assert r["steps"] == 2 and r["precision"] == "32-true" and r["tokens_per_cell"] == 16
    assert r["steps_per_s"] > 0 and r["cells_per_s"] == pytest.approx(4 * r["steps_per_s"])
    assert r["peak_mib"] > 0 and r["peak_kind"] == "process peak RSS"
    if config == "default":  # the shipped default model's architecture and vocabulary
        from omicformer.scgpt._resolve import resolve_model

        module, _, _ = resolve_model("default")
        assert r["params"] == sum(p.numel() for p in module.parameters())
    assert f"train {config}: " in capsys.readouterr().out


def test_train_throughput_refuses_cuda_without_a_gpu(load_benchmark):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit, match="CUDA is not available"):
        load_benchmark("train_throughput").main(["--config", "tiny", "--device", "cuda"])


def test_embed_devices_reports_cosine_and_fails_below_threshold(capsys, load_benchmark):
    embed_devices = load_benchmark("embed_devices")
    argv = ["--device", "cpu", "--batch-size", "7", "--n-cells", "40"]
    assert embed_devices.main(argv) == 0
    assert "cosine min 1.000000 mean 1.000000 over 40 cells" in capsys.readouterr().out
    assert embed_devices.main([*argv, "--min-cosine", "1.5"]) == 1
    assert "FAILED" in capsys.readouterr().out


def _script(*args: str, python: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": python, "LOG_DIR": str(tmp_path / "logs")}
    return subprocess.run(["bash", str(BENCH / "gpu_check.sh"), *args], env=env,
                          capture_output=True, text=True, check=False, timeout=900)  # fmt: skip


def test_gpu_check_exits_non_zero_when_a_step_fails(tmp_path):
    proc = _script("--cpu-smoke", python="false", tmp_path=tmp_path)
    assert proc.returncode == 1
    assert proc.stdout.count("FAIL  ") == 5 and "GPU check FAILED" in proc.stdout
    assert _script("--bogus", python="false", tmp_path=tmp_path).returncode == 2


@pytest.mark.slow
def test_gpu_check_cpu_smoke_runs_every_step(tmp_path):
    proc = _script("--cpu-smoke", python=sys.executable, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = proc.stdout.split("== summary")[1]
    for line in ("embed (whole-human config): reference", "speed-up ours/reference",
                 "train default:", "train human:", "embed cpu vs cpu: cosine min 1.000000",
                 "annotate: ", "integrate: X_scgpt_integrated  15-NN"):  # fmt: skip
        assert line in summary
    assert summary.count("ok    ") == 5 and "GPU check passed" in summary


def test_finetune_devices_knn_scores_on_two_far_clusters(load_benchmark):
    knn_scores = load_benchmark("finetune_devices").knn_scores
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(0, 0.1, (16, 3)), rng.normal(100, 0.1, (16, 3))])
    labels = np.repeat(["a", "b"], 16)
    batches = np.tile(["x", "y"], 16)  # 8 of each batch per cluster
    # each cell's 15 neighbours are the rest of its cluster: its own label, 8 of the other batch
    assert knn_scores(x, labels, batches) == (1.0, 8 / 15)
    flipped = labels.copy()
    flipped[0] = "b"  # outvoted by its 15 neighbours; the others keep their majority
    assert knn_scores(x, flipped, batches)[0] == 31 / 32
