"""benchmarks/scaling.py: the synthetic atlas it writes, each measured case, and its smoke run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from omicformer import datasets

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "scaling.py"


@pytest.fixture(scope="module")
def scaling(load_benchmark):
    return load_benchmark("scaling")


@pytest.fixture(scope="module")
def cells(scaling, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scaling") / "cells.h5ad"
    info = scaling.write_synthetic(path, 800, chunk=300)  # several chunks
    assert info["n_cells"] == 800 and info["bytes"] == path.stat().st_size
    return path


def test_synthetic_atlas_has_real_genes_and_realistic_sparse_counts(cells):
    backed = ad.read_h5ad(cells, backed="r")
    try:
        X = sp.csr_matrix(backed.X[:])  # the chunked writer's CSR, read by anndata
        assert backed.shape == (800, 20_000)
        assert set(backed.var_names) <= set(datasets.official_census_vocab())
        np.testing.assert_array_equal(backed.X[250:350].toarray(), X[250:350].toarray())
        types = backed.obs["cell_type"].to_numpy()
    finally:
        backed.file.close()
    assert X.has_sorted_indices and X.data.min() >= 1
    np.testing.assert_array_equal(X.data, np.round(X.data))  # integer counts
    detected = np.diff(X.indptr)
    assert 650 < detected.mean() < 900  # a few hundred to ~1,500 genes per cell
    assert 150 < np.percentile(detected, 1) and np.percentile(detected, 99) < 2500
    # negative binomial, not Poisson: variance above the mean within one cell type
    assert len(set(types)) == 12
    t0 = X[types == "type0"].toarray()
    top = np.argsort(t0.mean(axis=0))[-20:]
    assert np.all(t0[:, top].var(axis=0) > 1.5 * t0[:, top].mean(axis=0))


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
def test_cases_agree_and_report_memory(scaling, cells, tmp_path):
    threads = torch.get_num_threads()
    heads = {}
    try:
        for case in ("embed_backed", "embed_memory", "pad_baseline"):
            result = tmp_path / f"{case}.json"
            scaling.main(["--case", case, "--file", str(cells), "--result", str(result),
                          "--scratch", str(tmp_path), "--head", "300"])  # fmt: skip
            out = json.loads(result.read_text())
            assert out["n"] == 800 and out["seconds"] > 0 and out["cpu_seconds"] > 0
            assert out["peak_rss"] >= out["rss_after_open"] > 0 and out["peak_anon"] > 0
            heads[case] = np.array(out["head"])
    finally:
        torch.set_num_threads(threads)
    assert heads["embed_backed"].shape == (300, 32)
    np.testing.assert_allclose(np.linalg.norm(heads["embed_backed"], axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(heads["embed_memory"], heads["embed_backed"])
    np.testing.assert_allclose(heads["pad_baseline"], heads["embed_backed"], atol=1e-5)


def test_in_memory_cases_are_skipped_when_they_do_not_fit(scaling, tmp_path, capsys):
    args = scaling.parse_args(["--max-memory-fraction", "1e-9"])
    info = {"n_cells": 1000, "nnz": 760_000}
    row = scaling.measure(args, "train_memory", 1000, tmp_path / "x.h5ad", info, 1024.0, tmp_path)
    assert row["skipped"].startswith("skipped: needs")
    scaling.report([row], {1000: {**info, "bytes": 2**20}})
    assert "skipped: needs" in capsys.readouterr().out


@pytest.mark.slow
def test_quick_run_prints_every_case_and_cleans_up(tmp_path):
    work = tmp_path / "work"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--workdir", str(work)],
                          capture_output=True, text=True, check=False, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for size in (1000, 3000):
        for case in (
            "embed_backed",
            "embed_memory",
            "pad_baseline",
            "train_backed",
            "train_memory",
        ):
            assert re.search(rf"^\s+{size} {case}\s+\d", out, re.M), (size, case, out)
    diffs = [float(x) for x in re.findall(r"(?:embed_memory|pad_baseline) ([0-9.e+-]+)", out)]
    assert len(diffs) == 4 and max(diffs) < 1e-5
    assert "goal embed_backed 1000 -> 3000 cells" in out
    assert not list(work.glob("*.h5ad"))  # the data are deleted without --keep
