"""A user's first calls leave the global random streams as they were (docs/conventions.md).

Some dependencies draw from them when first imported (jax through scvi-tools, Lightning), so
this runs in a fresh process, where the namespaces and their imports are not loaded yet.
"""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = r"""
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
    after = states()
    print(name, [a == b for a, b in zip(before, after)])

unchanged("import", lambda: __import__("omicformer").scgpt)
from omicformer import datasets, scgpt
a = datasets.pbmc68k_reduced()
a = a[a.obs["bulk_labels"].isin(["CD14+ Monocyte", "CD19+ B", "Dendritic"]).to_numpy()][:60].copy()
kw = dict(device="cpu", progress=False, max_len=32)
unchanged("embed", lambda: scgpt.tl.embed(a[40:].copy(), **kw))
unchanged("knn", lambda: scgpt.tl.annotate(a[40:].copy(), a[:40].copy(), label_key="bulk_labels",
                                           method="knn", n_neighbors=3, **kw))
unchanged("dnabert.model", lambda: __import__("omicformer").dnabert.model)
"""


def test_first_calls_leave_python_numpy_and_torch_streams_alone(tmp_path):
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         cwd=tmp_path, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in out.stdout.strip().splitlines())
    assert lines == dict.fromkeys(["import", "embed", "knn", "dnabert.model"], "[True, True, True]")
