"""The small DNABERT models shipped in the package (built by scripts/train_default_dnabert.py)."""

import anndata as ad
import numpy as np
import pytest

from omicformer import datasets
from omicformer.dnabert import pp, tl
from omicformer.dnabert.model import DNABert, default_model_path
from omicformer.dnabert.tasks import promoter_task


@pytest.mark.parametrize("task", ["mlm", "promoter"])
def test_default_folders_load(task):
    path = default_model_path(task)
    assert pp.read_vocab_txt(path / "vocab.txt") == pp.kmer_vocab(6)
    model = DNABert.from_pretrained(path)
    assert model.k == 6
    assert model.config.vocab_size == 5 + 4**6
    assert model.max_length == 512
    if task == "promoter":
        assert model.task == "classification"
        assert model.labels_ == ["background", "promoter"]
        assert model.history_["finetune_loss_step"]
    else:
        assert model.task == "mlm"
        assert model.history_["mlm_validation_loss"]


def test_default_promoter_predict_separates_held_out_windows():
    df = promoter_task(length=300, random_state=0)
    test = df[df["split"] == "test"]
    pos = test[test["source"] == "dm3_proximal"].head(20)
    neg = test[test["source"] == "ce2_background"].head(20)
    seqs = {f"promoter_{i}": s for i, s in enumerate(pos["sequence"])}
    seqs |= {f"background_{i}": s for i, s in enumerate(neg["sequence"])}
    out = tl.predict(seqs, model="default", device="cpu", progress=False)
    probs = out[["dnabert_prob_background", "dnabert_prob_promoter"]].to_numpy()
    assert ((probs >= 0) & (probs <= 1)).all()
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    p = out["dnabert_prob_promoter"].to_numpy()
    assert p[:20].mean() > p[20:].mean() + 0.2  # TSS-proximal dm3 vs C. elegans background
    assert set(out["dnabert_prediction"].cat.categories) == {"background", "promoter"}


def test_default_embed_regions_writes_varm():
    regions = ["chrX:1000-1300", "chrX:250000-250515", "chrX:3999000-3999900", "chrX_77000_77290"]
    adata = ad.AnnData(np.ones((3, len(regions)), dtype=np.float32))
    adata.var_names = regions
    tl.embed_regions(
        adata, datasets.ce_chrx_fasta_path(), model="default", device="cpu", progress=False
    )
    emb = adata.varm["X_dnabert"]
    assert emb.shape == (len(regions), 128)
    assert np.isfinite(emb).all()
    assert np.abs(emb).sum(1).min() > 0
    assert adata.uns["dnabert"]["X_dnabert"]["params"]["model"] == "default"
    assert adata.uns["dnabert"]["X_dnabert"]["params"]["k"] == 6
