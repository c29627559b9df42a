"""Importing and first calls leave the global random streams as they were (docs/conventions.md).

Some libraries draw from them when first imported (jax, which scvi-tools imports; Lightning;
umap), so each case runs in a fresh process, where nothing is imported yet.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

HEAD = r"""
import pickle, random, warnings
warnings.filterwarnings("ignore")
import numpy as np, torch
torch.set_num_threads(1)

def states():
    return (pickle.dumps(random.getstate()), pickle.dumps(np.random.get_state()),
            torch.get_rng_state().numpy().tobytes())

def unchanged(name, call):
    random.seed(0); np.random.seed(0); torch.manual_seed(0)
    before = states()
    call()
    print(name, [a == b for a, b in zip(before, states())])
"""
CASES = {
    # the import forms the docs use, each first in its process
    "model_import": 'unchanged("from omicformer.scgpt.model import ScGPT", '
    'lambda: exec("from omicformer.scgpt.model import ScGPT"))\n'
    'unchanged("from omicformer.dnabert.model import DNABert", '
    'lambda: exec("from omicformer.dnabert.model import DNABert"))\n'
    'unchanged("import umap (after omicformer)", lambda: exec("import umap"))',
    "first_calls": r"""
unchanged("omicformer.scgpt", lambda: __import__("omicformer").scgpt)
from omicformer import datasets, scgpt
a = datasets.pbmc68k_reduced()
a = a[a.obs["bulk_labels"].isin(["CD14+ Monocyte", "CD19+ B", "Dendritic"]).to_numpy()][:60].copy()
kw = dict(device="cpu", progress=False, max_len=32)
unchanged("scgpt.tl.embed", lambda: scgpt.tl.embed(a[40:].copy(), **kw))
unchanged("scgpt.tl.annotate knn", lambda: scgpt.tl.annotate(
    a[40:].copy(), a[:40].copy(), label_key="bulk_labels", method="knn", n_neighbors=3, **kw))
""",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_imports_and_first_calls_leave_python_numpy_and_torch_streams_alone(case, tmp_path):
    out = subprocess.run([sys.executable, "-c", HEAD + CASES[case]], capture_output=True,
                         text=True, cwd=tmp_path, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line.rsplit(" [", 1) for line in out.stdout.strip().splitlines()]
    assert len(lines) == CASES[case].count("unchanged(")
    assert {name: flags for name, flags in lines} == {
        name: "True, True, True]" for name, _ in lines
    }
