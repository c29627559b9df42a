import json

import numpy as np
import pytest

from omicformer import datasets, scgpt
from omicformer.cli import main


def test_default_model_embeds_bundled_data():
    adata = datasets.pbmc68k_reduced()[:60].copy()
    scgpt.tl.embed(adata, device="cpu", progress=False)
    emb = adata.obsm["X_scgpt"]
    assert emb.shape[0] == 60
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, rtol=1e-5)
    info = adata.uns["scgpt"]["X_scgpt"]
    assert info["params"]["model"] == "default"
    assert info["n_genes_matched"] > 600  # of 765 genes


@pytest.mark.slow
def test_demo_cli(tmp_path):
    assert main(["demo", "--out", str(tmp_path), "--device", "cpu"]) == 0
    assert (tmp_path / "scgpt_umap.png").stat().st_size > 10_000
    scores = json.loads((tmp_path / "scores.json").read_text())
    # the default embedding must carry real cell-type signal: far above the 10-class majority rate
    assert scores["knn_accuracy_scgpt"] > 0.5
    assert 0.5 < scores["knn_accuracy_pca"] <= 1
