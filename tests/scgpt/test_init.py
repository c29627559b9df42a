"""PCA initialisation of gene embeddings, checked against scikit-learn's PCA."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.decomposition import PCA

from omicformer.scgpt._vocab import GeneVocab
from omicformer.scgpt.module import ScGPTConfig, TransformerModel
from omicformer.scgpt.train import init_gene_embeddings_pca, pca_gene_loadings


def _data(n=60, g=12, seed=0):
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(n, 3)) @ rng.normal(size=(3, g))
    return np.log1p(np.exp(factors + rng.normal(scale=0.3, size=(n, g))))


def test_loadings_match_sklearn_pca_up_to_sign_and_one_scale():
    X = _data()
    load = pca_gene_loadings(sp.csr_matrix(X), 4, scale=0.1)
    Z = (X - X.mean(0)) / X.std(0)
    pca = PCA(4, svd_solver="full").fit(Z)
    expected = pca.components_.T * np.sqrt(pca.explained_variance_ * (len(X) - 1) / len(X))
    ratio = load / expected  # one common factor, sign per component
    factor = np.abs(ratio).mean()
    np.testing.assert_allclose(np.abs(ratio), factor, rtol=1e-4)
    assert np.all(np.sign(ratio) == np.sign(ratio[0]))
    assert load.std() == pytest.approx(0.1, rel=1e-5)


def test_extra_components_are_zero_and_bad_input_raises():
    X = _data(n=5, g=8)
    load = pca_gene_loadings(X, 10)
    assert load.shape == (8, 10)
    assert np.all(load[:, 5:] == 0)
    with pytest.raises(ValueError, match="n_components"):
        pca_gene_loadings(X, 0)
    with pytest.raises(ValueError, match="finite"):
        pca_gene_loadings(np.full((3, 2), np.nan), 2)


def test_init_sets_only_the_given_genes_rows():
    genes = [f"G{i}" for i in range(12)]
    vocab = GeneVocab.from_genes([*genes, "OTHER"])
    cfg = ScGPTConfig(ntoken=len(vocab), pad_token_id=vocab.pad_id, d_model=8, nhead=2,
                      d_hid=8, nlayers=1)  # fmt: skip
    torch.manual_seed(0)
    module = TransformerModel(cfg)
    before = module.encoder.embedding.weight.detach().clone()
    X = _data()
    assert init_gene_embeddings_pca(module, vocab, X, genes) == 12
    after = module.encoder.embedding.weight.detach()
    rows = [vocab[g] for g in genes]
    np.testing.assert_allclose(after[rows].numpy(), pca_gene_loadings(X, 8), rtol=1e-6)
    others = [vocab["OTHER"], vocab.cls_id, vocab.pad_id]
    assert torch.equal(after[others], before[others])
    with pytest.raises(KeyError, match="not in the vocabulary"):
        init_gene_embeddings_pca(module, vocab, X, [*genes[:-1], "NOPE"])
