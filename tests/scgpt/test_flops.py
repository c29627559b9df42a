"""``encoder_flops`` against a hand count and an independent count by ``FlopCounterMode``.

FlopCounterMode counts matmul ops as they run (``addmm`` for the linear layers, ``bmm`` for the
attention products of SDPA's math backend), 2 FLOPs per multiply-accumulate, biases not counted.
SDPA's default CPU kernel (``_scaled_dot_product_flash_attention_for_cpu``) is not in its table
and would count as 0, so the attention is counted on the math backend. Every cell runs alone
(batch of 1, no padding), so its length is exact.
"""

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from omicformer.scgpt.module import ScGPTConfig, TransformerModel, encoder_flops


def _model(d_model, nhead, d_hid, nlayers, **kw):
    torch.manual_seed(0)
    cfg = ScGPTConfig(ntoken=40, pad_token_id=0, d_model=d_model, nhead=nhead, d_hid=d_hid,
                      nlayers=nlayers, dropout=0.0, **kw)  # fmt: skip
    return TransformerModel(cfg).eval()


def _math_sdpa():
    attention = pytest.importorskip("torch.nn.attention")
    return attention.sdpa_kernel(attention.SDPBackend.MATH)


@torch.no_grad()
def _count(fn) -> dict[str, int]:
    """FLOPs of ``fn()`` per aten op, attention on SDPA's math backend."""
    with _math_sdpa(), FlopCounterMode(display=False) as fc:
        fn()
    return {str(op): int(n) for op, n in fc.get_flop_counts()["Global"].items()}


def _encoder_input(model, n_cells, length):
    g = torch.Generator().manual_seed(length)
    genes = torch.randint(3, model.config.ntoken, (n_cells, length), generator=g)
    values = torch.rand(n_cells, length, generator=g) * 5
    x, _ = model._embed_tokens(genes, values, None)
    return genes, values, x


def test_hand_example():
    # d = 4, d_hid = 8, L = 3, 1 layer. MACs per token:
    #   Q, K, V projections 3 * 4 * 4 = 48, output projection 4 * 4 = 16,
    #   feed-forward 2 * 4 * 8 = 64, Q K^T 3 * 4 = 12, weights @ V 3 * 4 = 12
    #   -> 48 + 16 + 64 + 12 + 12 = 152 MACs = 304 FLOPs per token; 3 tokens -> 912 FLOPs.
    cfg = ScGPTConfig(ntoken=10, pad_token_id=0, d_model=4, nhead=2, d_hid=8, nlayers=1)
    assert int(encoder_flops(cfg, 3)) == 912
    assert encoder_flops(cfg, [3, 3]).tolist() == [912, 912]

    model = _model(4, 2, 8, 1)
    _, _, x = _encoder_input(model, 1, 3)
    counts = _count(lambda: model.transformer_encoder(x))
    assert counts == {"aten.addmm": 3 * 2 * (48 + 16 + 64), "aten.bmm": 3 * 2 * (12 + 12)}
    assert sum(counts.values()) == 912


@pytest.mark.parametrize(
    ("d_model", "nhead", "d_hid", "nlayers", "pre_norm"),
    [(32, 4, 64, 2, False), (24, 3, 40, 3, True)],  # d_hid != 2 d: d^2 and d d_hid terms differ
)
def test_matches_flop_counter(d_model, nhead, d_hid, nlayers, pre_norm):
    model = _model(d_model, nhead, d_hid, nlayers, pre_norm=pre_norm)
    lengths = np.array([1, 5, 17, 40])
    expected = encoder_flops(model.config, lengths)
    assert expected.dtype == np.int64
    assert expected.shape == lengths.shape
    d, L = d_model, lengths
    for i, length in enumerate(lengths.tolist()):
        _, _, x = _encoder_input(model, 1, length)
        counts = _count(lambda x=x: model.transformer_encoder(x))
        # each term separately, then the total
        assert counts["aten.addmm"] == nlayers * length * 2 * (4 * d * d + 2 * d * d_hid)
        assert counts["aten.bmm"] == nlayers * length * 2 * (2 * length * d)
        assert sum(counts.values()) == expected[i]
    # a padding-free batch of equal-length cells costs the sum of its cells
    _, _, x = _encoder_input(model, 3, 17)
    assert sum(_count(lambda: model.transformer_encoder(x)).values()) == 3 * expected[2]
    assert (expected == nlayers * L * (8 * d * d + 4 * d * d_hid + 4 * L * d)).all()


def test_value_encoder_not_counted():
    """The whole ``_encode`` adds exactly the value encoder's two linear layers to the count."""
    model = _model(32, 4, 64, 2)
    d, length = 32, 9
    genes, values, _ = _encoder_input(model, 1, length)
    total = sum(_count(lambda: model._encode(genes, values, None)).values())
    value_encoder = length * 2 * (1 * d + d * d)  # Linear(1, d) and Linear(d, d)
    assert total == int(encoder_flops(model.config, length)) + value_encoder
