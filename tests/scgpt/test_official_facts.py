"""Official scGPT facts, each pinned against the official formula written out by hand.

The expectations below are written from the official ``scgpt/model/model.py``,
``scgpt/model/dsbn.py``, ``scgpt/preprocess.py`` and ``scgpt/tokenizer/gene_tokenizer.py``
(bowang-lab/scGPT), with plain tensor operations, not with our modules' forward methods.
"""

import json

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import nn

from omicformer.scgpt import GeneVocab, pp
from omicformer.scgpt.module import (
    ContinuousValueEncoder,
    ScGPTConfig,
    TransformerEncoderLayer,
    TransformerModel,
)

CLS, PAD = 36, 37


def _jitter(module: nn.Module, seed: int = 0) -> nn.Module:
    """Move every parameter off its initial value (LayerNorm 1/0, zero biases) so mistakes show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return module


def _model(**kw) -> TransformerModel:
    torch.manual_seed(0)
    cfg = ScGPTConfig(
        ntoken=40, pad_token_id=PAD, d_model=16, nhead=2, d_hid=32, nlayers=2, dropout=0.0, **kw
    )
    return _jitter(TransformerModel(cfg)).eval()


def _inputs():
    genes = torch.tensor([[CLS, 3, 4, 5, PAD], [CLS, 6, 7, 8, 9]])
    values = torch.tensor([[-2.0, 1, 7, 3, -2], [-2.0, 4, 5, 2, 50]])
    return genes, values, genes.eq(PAD)


def _layer_norm(x: torch.Tensor, ln: nn.LayerNorm) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = x.var(-1, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def _linear(x: torch.Tensor, lin: nn.Linear) -> torch.Tensor:
    return x @ lin.weight.T + (0 if lin.bias is None else lin.bias)


def _leaky(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x > 0, x, 0.01 * x)  # nn.LeakyReLU() default slope


def _expr_mlp(x: torch.Tensor, fc: nn.Sequential) -> torch.Tensor:
    """Official ExprDecoder ``fc``: Linear, LeakyReLU, Linear, LeakyReLU, Linear(d, 1)."""
    h = _leaky(_linear(x, fc[0]))
    h = _leaky(_linear(h, fc[2]))
    return _linear(h, fc[4])[..., 0]


def _gene_embs(m: TransformerModel, genes: torch.Tensor) -> torch.Tensor:
    """Official ``cur_gene_token_embs``: enc_norm(embedding(src)), before values are added."""
    return _layer_norm(m.encoder.embedding.weight[genes], m.encoder.enc_norm)


def test_continuous_value_encoder_is_the_official_mlp_clamped_above_only():
    enc = _jitter(ContinuousValueEncoder(8, dropout=0.0)).eval()
    x = torch.tensor([[-2.0, -1.0, 0.0, 3.5, 512.0, 1000.0]])
    clamped = torch.minimum(x, torch.tensor(512.0))  # official: clamp(max=512), no minimum
    h = torch.relu(clamped[..., None] * enc.linear1.weight[:, 0] + enc.linear1.bias)
    expected = _layer_norm(_linear(h, enc.linear2), enc.norm)
    with torch.no_grad():
        got = enc(x)
    torch.testing.assert_close(got, expected)
    assert torch.equal(got[0, 4], got[0, 5])  # 1000 enters as 512
    assert not torch.allclose(got[0, 0], got[0, 1])  # pad_value -2 and mask_value -1 stay apart


def test_heads_equal_the_official_formulas_with_batch_labels_and_zero_probs():
    m = _model(use_batch_labels=True, num_batch_labels=3, do_dab=True, explicit_zero_prob=True,
               do_mvc=True, n_cls=4)  # fmt: skip
    genes, values, pad = _inputs()
    labels = torch.tensor([2, 0])
    with torch.no_grad():
        out = m(genes, values, pad, batch_labels=labels, CLS=True, MVC=True)
        h = m._encode(genes, values, pad, labels)
        batch_emb = _layer_norm(m.batch_encoder.embedding.weight[labels], m.batch_encoder.enc_norm)
        # ExprDecoder on cat([h, batch_emb repeated over L]) (d_in = 2 d_model)
        x = torch.cat([h, batch_emb[:, None, :].expand(-1, h.shape[1], -1)], dim=2)
        torch.testing.assert_close(out["mlm_output"], _expr_mlp(x, m.decoder.fc))
        zero = torch.sigmoid(_expr_mlp(x, m.decoder.zero_logit))
        torch.testing.assert_close(out["mlm_zero_probs"], zero)
        # cell embedding: the <cls> position, not normalised
        cell = h[:, 0, :]
        torch.testing.assert_close(out["cell_emb"], cell)
        # ClsDecoder: (nlayers_cls - 1) x [Linear, ReLU, LayerNorm], then out_layer
        c = cell
        dec = m.cls_decoder._decoder
        for i in range(0, len(dec), 3):
            c = _layer_norm(torch.relu(_linear(c, dec[i])), dec[i + 2])
        assert len(dec) == 6  # nlayers_cls = 3
        torch.testing.assert_close(out["cls_output"], _linear(c, m.cls_decoder.out_layer))
        # MVC "inner product": q = sigmoid(gene2query(gene emb before values)),
        # pred_j = (W q_j) . [h_cls, batch_emb]; zero prob with W_zero_logit (which has a bias)
        q = torch.sigmoid(_linear(_gene_embs(m, genes), m.mvc_decoder.gene2query))
        cell_in = torch.cat([cell, batch_emb], dim=1)
        mvc = torch.einsum("bld,bd->bl", _linear(q, m.mvc_decoder.W), cell_in)
        torch.testing.assert_close(out["mvc_output"], mvc)
        mvc_zero = torch.einsum("bld,bd->bl", _linear(q, m.mvc_decoder.W_zero_logit), cell_in)
        torch.testing.assert_close(out["mvc_zero_probs"], torch.sigmoid(mvc_zero))
        assert m.mvc_decoder.W.bias is None
        # AdversarialDiscriminator: 2 x [Linear, LeakyReLU, LayerNorm], out_layer over batches
        d = cell
        dec = m.grad_reverse_discriminator._decoder
        for i in range(0, len(dec), 3):
            d = _layer_norm(_leaky(_linear(d, dec[i])), dec[i + 2])
        assert len(dec) == 6
        torch.testing.assert_close(out["dab_output"], _linear(d, m.grad_reverse_discriminator.out_layer))  # fmt: skip
    assert out["dab_output"].shape == (2, 3) and out["cls_output"].shape == (2, 4)


def test_w_pool_is_the_value_weighted_sum_l2_normalised():
    m = _model(cell_emb_style="w-pool")
    genes, values, pad = _inputs()
    with torch.no_grad():
        out = m(genes, values, pad)["cell_emb"]
        h = m._encode(genes, values, pad)
    # official: sum over ALL positions (pads and <cls> included) of h * values, then normalise
    s = (h * values[:, :, None]).sum(1)
    torch.testing.assert_close(out, s / s.norm(dim=1, keepdim=True))


def test_scaling_and_category_value_styles():
    genes, values, _ = _inputs()
    m = _model(input_emb_style="scaling")
    with torch.no_grad():
        total, gene = m._embed_tokens(genes, values, None)
    torch.testing.assert_close(gene, _gene_embs(m, genes))
    torch.testing.assert_close(total, gene * values[:, :, None])  # official: gene_emb * value
    # category style (pretraining: n_input_bins = n_bins + 2, pad_value = n_bins)
    m = _model(input_emb_style="category", n_input_bins=53, pad_value=51.0)
    assert m.value_encoder.embedding.padding_idx == 51
    bins = torch.tensor([[51, 1, 50, 0, 51]])
    with torch.no_grad():
        total, gene = m._embed_tokens(bins * 0 + 5, bins.float(), None)
    emb = _layer_norm(m.value_encoder.embedding.weight[bins], m.value_encoder.enc_norm)
    torch.testing.assert_close(total, gene + emb)


def test_pre_norm_layer_is_the_official_flash_layer_as_coded():
    torch.manual_seed(0)
    layer = _jitter(TransformerEncoderLayer(16, 2, 32, 0.0, norm_scheme="pre")).eval()
    mha = nn.MultiheadAttention(16, 2, dropout=0.0, batch_first=True).eval()
    mha.load_state_dict(layer.self_attn.state_dict())
    x = torch.randn(2, 5, 16)
    pad = torch.tensor([[False] * 5, [False, False, False, True, True]])
    with torch.no_grad():
        got = layer(x, (~pad)[:, None, None, :])
        # official pre-norm: src = norm1(src); src += attn(src); src = norm2(src); src += ff(src)
        s = layer.norm1(x)
        s = s + mha(s, s, s, key_padding_mask=pad, need_weights=False)[0]
        s = layer.norm2(s)
        s = s + layer.linear2(torch.relu(layer.linear1(s)))
    torch.testing.assert_close(got[~pad], s[~pad], atol=1e-5, rtol=1e-5)


def test_gene_embedding_init_is_uniform_01_padding_row_included():
    torch.manual_seed(0)
    m = TransformerModel(ScGPTConfig(ntoken=400, pad_token_id=397, d_model=32, nhead=2,
                                     d_hid=32, nlayers=1))  # fmt: skip
    w = m.encoder.embedding.weight.detach()
    # official init_weights(): embedding.weight.uniform_(-0.1, 0.1), which overwrites the pad row
    assert w.abs().max() <= 0.1 and w.abs().max() > 0.099
    assert w[397].abs().sum() > 0
    assert abs(float(w.mean())) < 0.005 and abs(float(w.std()) - 0.2 / 12**0.5) < 0.003


def test_dsbn_is_the_official_one_batchnorm_per_batch_eps_6_1e_5_no_affine():
    m = _model(domain_spec_batchnorm=True, num_batch_labels=2).train()
    for bn in m.dsbn.bns:
        assert (bn.eps, bn.affine, bn.momentum, bn.track_running_stats) == (
            6.1e-5,
            False,
            0.1,
            True,
        )
    genes, values, _ = _inputs()
    total = m.encoder(genes) + m.value_encoder(values)
    with torch.no_grad():
        got, _ = m._embed_tokens(genes, values, torch.tensor([1, 1]))
    # training mode: per feature, the statistics over all cells and positions of the minibatch
    mean = total.mean(dim=(0, 1))
    var = total.var(dim=(0, 1), unbiased=False)
    torch.testing.assert_close(got, (total - mean) / torch.sqrt(var + 6.1e-5), atol=1e-5, rtol=1e-4)
    assert m.dsbn.bns[1].num_batches_tracked == 1 and m.dsbn.bns[0].num_batches_tracked == 0
    plain = _model(domain_spec_batchnorm="batchnorm", num_batch_labels=2)
    assert plain.bn.eps == 6.1e-5 and plain.bn.affine and not hasattr(plain, "dsbn")


def _official_bin_edges(row: np.ndarray, n_bins: int) -> np.ndarray:
    """Official ``obsm["bin_edges"]`` row: ``[0] * n_bins`` for an all-zero cell, else
    ``concat([0], np.quantile(nonzero, np.linspace(0, 1, n_bins - 1)))``."""
    nz = row[row != 0]
    if nz.size == 0:
        return np.zeros(n_bins)
    return np.concatenate([[0], np.quantile(nz, np.linspace(0, 1, n_bins - 1))])


def test_bin_edges_all_zero_cell_and_single_value_cell():
    X = np.array(
        [
            [0.0, 2.5, 0.0, 7.0, 1.25, 3.0],
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # all zero: bins and edges all 0
            [0.0, 0.0, 4.0, 0.0, 0.0, 0.0],  # one value: every edge equals it
        ],
        dtype=np.float32,
    )
    a = ad.AnnData(sp.csr_matrix(X))
    pp.bin_expression(a, n_bins=5, random_state=0)
    bins = a.layers["X_binned"].toarray()
    edges = a.obsm["X_binned_edges"]
    for i, row in enumerate(X):
        np.testing.assert_allclose(edges[i], _official_bin_edges(row, 5))
    # row 0, 4 distinct values, 4 edges = the values themselves: digitize -> 1..4 in value order
    np.testing.assert_array_equal(bins[0], [0, 2, 0, 4, 1, 3])
    np.testing.assert_array_equal(bins[1], np.zeros(6))
    # row 2: np.digitize(4, [4,4,4,4]) = 4, right=True gives 0: any of 1..4 (official range)
    assert 1 <= bins[2, 2] <= 4 and np.count_nonzero(bins[2]) == 1


def test_vocab_keeps_specials_it_has_and_appends_the_missing_ones_in_order(tmp_path):
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps({"A": 0, "<pad>": 1, "B": 2, "<eoc>": 3}))
    v = GeneVocab.from_file(path)
    # official: for s in ["<pad>", "<cls>", "<eoc>"]: if s not in vocab: vocab.append_token(s)
    assert v.to_dict() == {"A": 0, "<pad>": 1, "B": 2, "<eoc>": 3, "<cls>": 4}
    assert (v.pad_id, v.cls_id) == (1, 4)


@pytest.mark.parametrize("ratio", [0.25, 0.4])
def test_random_mask_counts_like_official_random_mask_value(ratio):
    """Official ``random_mask_value``: in every row, ``int(len(non_padding) * ratio)`` positions
    whose value differs from ``pad_value`` get ``mask_value``. With ``<cls>`` carrying
    ``pad_value`` (our and ``embed_data``'s layout) those are the gene positions only."""
    from omicformer.scgpt.train import MaskedValueCollator

    rng = np.random.default_rng(0)
    X = sp.csr_matrix(rng.gamma(2, 2, size=(5, 30)) * (rng.random((5, 30)) < 0.6))
    items = [(i, X.indices[X.indptr[i]:X.indptr[i + 1]], X.data[X.indptr[i]:X.indptr[i + 1]], 0)
             for i in range(5)]  # fmt: skip
    coll = MaskedValueCollator(np.arange(30), cls_id=CLS, pad_id=PAD, mask_ratio=ratio, seed=1)
    b = coll(items)
    for i in range(5):
        non_padding = np.flatnonzero(b["target"][i].numpy() != -2.0)
        masked = np.flatnonzero(b["values"][i].numpy() == -1.0)
        assert len(masked) == int(len(non_padding) * ratio)
        assert set(masked) <= set(non_padding)


def test_masked_mse_is_the_official_sum_over_mask_divided_by_its_count():
    from omicformer.scgpt.module import masked_mse_loss

    pred = torch.tensor([[1.0, 5.0, -2.0], [0.5, 9.0, 3.0]], requires_grad=True)
    target = torch.tensor([[2.0, 0.0, 1.0], [0.5, 1.0, 1.0]])
    mask = torch.tensor([[True, False, True], [False, False, True]])
    # official: F.mse_loss(pred * mask, target * mask, reduction="sum") / mask.sum()
    expected = ((1.0 - 2.0) ** 2 + (-2.0 - 1.0) ** 2 + (3.0 - 1.0) ** 2) / 3
    torch.testing.assert_close(masked_mse_loss(pred, target, mask), torch.tensor(expected))
    # our guard: nothing masked gives 0 (official: NaN), still in the graph
    none = masked_mse_loss(pred, target, torch.zeros_like(mask))
    assert none.item() == 0.0 and none.requires_grad
