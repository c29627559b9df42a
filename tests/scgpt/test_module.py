import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from omicformer.scgpt.module import (
    ScGPTConfig,
    TransformerModel,
    ecs_loss,
    generative_attn_mask,
    grad_reverse,
    masked_mse_loss,
    mnn_loss,
    padding_attn_mask,
)


def _model(**kw):
    torch.manual_seed(0)
    cfg = ScGPTConfig(
        ntoken=40, pad_token_id=37, d_model=16, nhead=2, d_hid=32, nlayers=2, dropout=0.0, **kw
    )
    return TransformerModel(cfg).eval()


def test_generative_mask_layout():
    pcpt_valid = torch.tensor([[True, True, False]])
    gen_valid = torch.tensor([[True, True]])
    m = generative_attn_mask(pcpt_valid, gen_valid)[0, 0]
    expected = torch.tensor(
        [  # keys: p0 p1 p2(pad) g0 g1
            [1, 1, 0, 0, 0],  # known tokens see valid known tokens only
            [1, 1, 0, 0, 0],
            [1, 1, 0, 0, 0],
            [1, 1, 0, 1, 0],  # a token to generate sees known tokens and itself
            [1, 1, 0, 0, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(m, expected)
    assert padding_attn_mask(torch.zeros(2, 3, dtype=torch.bool)) is None


def test_generative_forward_semantics():
    m = _model()
    g = torch.tensor([[35, 3, 4, 5, 37], [35, 6, 7, 37, 37]])  # <cls>=35 first, pads at the end
    v = torch.tensor([[-2.0, 1, 2, 3, -2], [-2.0, 4, 5, -2, -2]])
    pm = g.eq(37)
    gen = torch.tensor([[10, 11, 12], [13, 14, 37]])
    gpm = gen.eq(37)
    out = m.generative_forward(g, v, pm, gen, gpm, MVC=True)
    # known tokens never see tokens to generate: same as a plain pass over the known part
    plain = m(g, v, pm)
    torch.testing.assert_close(out["cell_emb"], plain["cell_emb"])
    torch.testing.assert_close(out["pcpt_preds"][~pm], plain["mlm_output"][~pm])
    # a token to generate does not see other tokens to generate
    gen2 = gen.clone()
    gen2[0, 1] = 20
    out2 = m.generative_forward(g, v, pm, gen2, gpm)
    torch.testing.assert_close(out2["gen_preds"][0, [0, 2]], out["gen_preds"][0, [0, 2]])
    assert not torch.allclose(out2["gen_preds"][0, 1], out["gen_preds"][0, 1])
    assert out["mvc_output"].shape == (2, 8)


def test_attention_equals_torch_mha():
    m = _model()
    layer = m.transformer_encoder.layers[0]
    ref = nn.TransformerEncoderLayer(16, 2, 32, 0.0, batch_first=True).eval()
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(3, 7, 16)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[1, 5:] = True
    ours = layer(x, padding_attn_mask(pad))
    theirs = ref(x, src_key_padding_mask=pad)
    torch.testing.assert_close(ours[~pad], theirs[~pad], atol=1e-5, rtol=1e-5)


def test_losses_and_grad_reverse():
    e = torch.randn(6, 8)
    n = F.normalize(e, dim=1)
    cos = (n @ n.T).masked_fill(torch.eye(6, dtype=torch.bool), 0).relu()
    torch.testing.assert_close(ecs_loss(e, 0.3), (1 - (cos - 0.3) ** 2).mean())
    pred, tgt = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 0.0, 0.0])
    assert masked_mse_loss(pred, tgt, torch.tensor([False, True, True])).item() == 6.5
    x = torch.ones(3, requires_grad=True)
    grad_reverse(x, 2.0).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), -2.0))


def test_batch_heads_and_dsbn():
    m = _model(use_batch_labels=True, num_batch_labels=3, domain_spec_batchnorm=True, do_dab=True)
    g = torch.tensor([[35, 3, 4], [35, 5, 6]])
    v = torch.tensor([[-2.0, 1, 2], [-2.0, 3, 4]])
    out = m(g, v, g.eq(37), batch_labels=torch.tensor([1, 1]), CLS=True, MVC=True, ECS=True)
    assert out["dab_output"].shape == (2, 3)
    assert out["cls_output"].shape == (2, 1)
    assert set(m.state_dict()) >= {"dsbn.bns.2.running_mean", "batch_encoder.embedding.weight"}


def test_ecs_hand_computed_example():
    # cells 0 and 1 point the same way, cell 2 is orthogonal: off-diagonal cosines are 1 for
    # (0, 1) and (1, 0), 0 elsewhere; the diagonal is zeroed. With threshold 0.3 the 9 entries
    # give 1 - 0.7^2 = 0.51 twice and 1 - 0.3^2 = 0.91 seven times: (2 * 0.51 + 7 * 0.91) / 9.
    e = torch.tensor([[2.0, 0.0], [0.5, 0.0], [0.0, 3.0]])
    torch.testing.assert_close(ecs_loss(e, 0.3), torch.tensor(7.39 / 9))


def test_mnn_hand_computed_example():
    # batch 0: x0 = (3, 1), x1 = (-3, 1); batch 1: y0 = (3, -1), y1 = (-1, -1), y2 = (-2, 0);
    # all shifted by (10, 10), which centring removes (their mean is the shift). Cosines across
    # batches: x0.y0 = 8/10, x0.y1 = -4/sqrt(20), x0.y2 = -6/(2 sqrt(10)); x1.y0 = -1,
    # x1.y1 = 2/sqrt(20), x1.y2 = 6/(2 sqrt(10)). Nearest of the other batch: x0 -> y0,
    # x1 -> y2, y0 -> x0, y1 -> x1, y2 -> x1. Mutual: (x0, y0) and (x1, y2), each counted from
    # both sides; y1's neighbour x1 prefers y2, so y1 is in no pair.
    e = torch.tensor([[3.0, 1.0], [-3.0, 1.0], [3.0, -1.0], [-1.0, -1.0], [-2.0, 0.0]]) + 10.0
    batches = torch.tensor([0, 0, 1, 1, 1])
    expected = (2 * (1 - 0.8) + 2 * (1 - 3 / 10**0.5)) / 4
    torch.testing.assert_close(mnn_loss(e, batches), torch.tensor(expected))
    # minimising it moves x0 towards y0 (their cosine rises)
    e = e.clone().requires_grad_(True)
    mnn_loss(e, batches).backward()
    stepped = (e - 0.1 * e.grad).detach()
    c = stepped - stepped.mean(0)
    assert F.cosine_similarity(c[0], c[2], dim=0) > 0.8
    # one batch only: no pairs, a zero loss that still has a graph
    single = mnn_loss(e, torch.zeros(5, dtype=torch.long))
    assert single.item() == 0.0 and single.requires_grad


def test_gradient_reversal_reaches_the_encoder_with_flipped_sign():
    """The DAB discriminator's loss trains the discriminator, and the encoder against it."""
    import copy

    m = _model(use_batch_labels=False, num_batch_labels=2, do_dab=True)
    plain = copy.deepcopy(m)
    plain.grad_reverse_discriminator.reverse_grad = False  # the same network without the GRL
    g = torch.tensor([[35, 3, 4, 7], [35, 5, 6, 8], [35, 9, 2, 1]])
    v = torch.tensor([[-2.0, 1, 2, 3], [-2.0, 3, 4, 1], [-2.0, 2, 2, 5]])
    y = torch.tensor([0, 1, 1])
    for model in (m, plain):
        out = model(g, v, g.eq(37))
        F.cross_entropy(out["dab_output"], y).backward()
    enc, enc_plain = m.encoder.embedding.weight.grad, plain.encoder.embedding.weight.grad
    assert enc.abs().sum() > 0
    torch.testing.assert_close(enc, -enc_plain)  # encoder: flipped
    disc = m.grad_reverse_discriminator.out_layer.weight.grad
    torch.testing.assert_close(disc, plain.grad_reverse_discriminator.out_layer.weight.grad)


def test_dsbn_normalises_each_batch_with_its_own_statistics():
    from omicformer.scgpt.module import DomainSpecificBatchNorm1d

    bn = DomainSpecificBatchNorm1d(2, num_domains=2, eps=1e-8).train()
    a = torch.tensor([[[1.0, 3.0], [2.0, 2.0]]])  # (B=1, D=2, L=2): feature 0 = 1, 3
    b = torch.tensor([[[10.0, 30.0], [0.0, 4.0]]])
    out = bn(a, 0)
    # batch statistics of domain 0 only: feature 0 mean 2, biased var 1 -> (-1, 1)
    torch.testing.assert_close(out[0, 0], torch.tensor([-1.0, 1.0]), atol=1e-4, rtol=0)
    bn(b, 1)
    # running means move 10% of the way from 0 to each domain's own batch mean
    torch.testing.assert_close(bn.bns[0].running_mean, torch.tensor([0.2, 0.2]))
    torch.testing.assert_close(bn.bns[1].running_mean, torch.tensor([2.0, 0.2]))


def test_gene_mean_cell_embedding_leaves_out_cls_and_padding():
    """``gene-mean``: the mean output of positions 1.. that are not padding, written out per cell;
    padding a cell further leaves its embedding unchanged (the official avg-pool does not)."""
    m = _model(cell_emb_style="gene-mean")
    torch.manual_seed(1)
    genes = torch.tensor([[36, 3, 5, 7, 37, 37], [36, 2, 4, 6, 8, 9]])  # <cls>=36, <pad>=37
    values = torch.rand(2, 6) * 5
    pad = genes == 37
    with torch.no_grad():
        out = m._encode(genes, values, pad)
        got = m.get_cell_embedding(out, values, pad)
        for i in range(2):
            keep = [j for j in range(1, 6) if not pad[i, j]]
            torch.testing.assert_close(got[i], out[i, keep].mean(0))
        short = m._encode(genes[:1, :4], values[:1, :4], pad[:1, :4])  # the same cell, no pads
        torch.testing.assert_close(m.get_cell_embedding(short, values[:1, :4]), got[:1])
        full = m(genes, values, pad)["cell_emb"]  # forward passes its padding mask on
    torch.testing.assert_close(full, got)
    official = _model(cell_emb_style="avg-pool")
    with torch.no_grad():
        avg = official.get_cell_embedding(out, values)
    torch.testing.assert_close(avg, out.mean(1))  # every position, <cls> and padding included
    assert not torch.allclose(avg[0], got[0])
    with pytest.raises(ValueError, match="gene-mean"):
        _model(cell_emb_style="mean")


def test_set_dropout_sets_every_rate():
    from omicformer.scgpt.module._transformer import MultiheadSelfAttention

    module = _model(do_dab=True, use_batch_labels=True, num_batch_labels=2)
    module.set_dropout(0.3)
    rates = [m.p for m in module.modules() if isinstance(m, nn.Dropout)]
    rates += [m.dropout for m in module.modules() if isinstance(m, MultiheadSelfAttention)]
    assert rates and set(rates) == {0.3} and module.config.dropout == 0.3
    with pytest.raises(ValueError, match="dropout"):
        module.set_dropout(1.0)


def test_a_training_forward_leaves_no_autograd_graph_on_the_module():
    import copy

    m = _model(do_mvc=True).train()
    g = torch.tensor([[35, 3, 4, 5, 37]])
    v = torch.tensor([[-2.0, 1, 2, 3, -2]])
    out = m(g, v, g.eq(37), MVC=True)
    (out["mlm_output"].sum() + out["mvc_output"].sum()).backward()
    m._encode(g, v, g.eq(37)).sum().backward()  # as the classifier's training step
    kept = [name for name, x in vars(m).items() if torch.is_tensor(x) and x.grad_fn is not None]
    assert kept == []
    twin = copy.deepcopy(m)  # a tensor with a graph cannot be deep-copied
    for (k, a), (_, b) in zip(twin.state_dict().items(), m.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)


def _cells(n=5, length=7):
    g = torch.randint(0, 30, (n, length), generator=torch.Generator().manual_seed(1))
    v = torch.rand(n, length, generator=torch.Generator().manual_seed(2)) * 5
    return g, v


def test_forward_takes_the_official_arguments_in_their_order():
    # official TransformerModel.forward(src, values, src_key_padding_mask, batch_labels=None,
    # CLS=False, CCE=False, MVC=False, ECS=False, do_sample=False): a positional port of
    # official code asks for the same heads
    m = _model(do_mvc=True)
    g, v = _cells()
    out = m(g, v, None, None, False, False, True)
    assert "mvc_output" in out and "loss_ecs" not in out and "loss_cce" not in out
    out = m(g, v, None, None, True, False, False, True)
    assert "cls_output" in out and "loss_ecs" in out and "mvc_output" not in out


def test_cce_is_the_official_simcse_objective():
    # official: cell2 from a second _encode; Similarity(temp=0.5) = CosineSimilarity(dim=-1)
    # / 0.5 of cell1[:, None] and cell2[None]; CrossEntropyLoss against arange(batch)
    m = _model()
    g, v = _cells()
    out = m(g, v, None, CCE=True)
    cell = out["cell_emb"]  # eval, no dropout: the second pass gives the same embedding
    sim = nn.CosineSimilarity(dim=-1)(cell.unsqueeze(1), cell.unsqueeze(0)) / 0.5
    expected = nn.CrossEntropyLoss()(sim, torch.arange(cell.shape[0]))
    torch.testing.assert_close(out["loss_cce"], expected)
    # in training the two passes differ by dropout and the loss trains the encoder
    m = TransformerModel(dataclasses.replace(m.config, dropout=0.3)).train()
    out = m(g, v, None, CCE=True)
    out["loss_cce"].backward()
    assert m.encoder.embedding.weight.grad.abs().sum() > 0


def test_do_sample_draws_the_official_bernoulli_mask():
    from torch.distributions import Bernoulli

    m = _model(explicit_zero_prob=True, do_mvc=True)
    g, v = _cells()
    plain = m(g, v, None, MVC=True)
    torch.manual_seed(5)
    sampled = m(g, v, None, MVC=True, do_sample=True)
    torch.manual_seed(5)  # official: Bernoulli(probs=zero_probs).sample() * pred, mlm then mvc
    mlm = Bernoulli(probs=plain["mlm_zero_probs"]).sample() * plain["mlm_output"]
    mvc = Bernoulli(probs=plain["mvc_zero_probs"]).sample() * plain["mvc_output"]
    torch.testing.assert_close(sampled["mlm_output"], mlm)
    torch.testing.assert_close(sampled["mvc_output"], mvc)
    assert (sampled["mlm_output"] == 0).any() and (sampled["mlm_output"] != 0).any()
    without = _model()  # no zero-probability head: do_sample changes nothing, as official
    torch.testing.assert_close(without(g, v, None, do_sample=True)["mlm_output"],
                               without(g, v, None)["mlm_output"])  # fmt: skip


def test_batch_labels_for_a_model_without_batch_layers_are_refused():
    # official _check_batch_labels: a ValueError, not batch labels silently ignored
    g, v = _cells()
    with pytest.raises(ValueError, match="without batch-dependent layers"):
        _model()(g, v, None, torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="without batch-dependent layers"):
        _model(do_dab=True, num_batch_labels=2)._encode(
            g, v, None, torch.zeros(5, dtype=torch.long)
        )
    out = _model(use_batch_labels=True, num_batch_labels=2)(g, v, None, torch.zeros(5).long())
    assert out["cell_emb"].shape == (5, 16)
