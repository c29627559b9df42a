"""Initialisations of the default DNABERT, each checked against a value computed by hand.

compositional_kmer_init / use_compositional_embeddings: k-mer rows are sums of
position-nucleotide vectors; sinusoidal_position_init: row dot products depend on distance only;
random position offsets: every position but [CLS] shifted by one drawn offset.
"""

import numpy as np
import pytest
import torch

from omicformer.dnabert import pp
from omicformer.dnabert.module import (
    MLM,
    CompositionalKmerEmbedding,
    RandomOffsetPositionEmbedding,
    bert_config,
    build_bert,
    compositional_kmer_init,
    merge_compositional_embeddings,
    remove_random_position_offsets,
    sinusoidal_position_init,
    use_compositional_embeddings,
    use_random_position_offsets,
)


def _small_mlm(k: int, **kw):
    config = bert_config(k, n_layers=1, d_model=16, n_heads=2, max_len=32, **kw)
    return build_bert(config, MLM, seed=0)


@pytest.mark.parametrize("k", [3, 6])
def test_kmer_rows_are_sums_of_position_base_vectors(k):
    model = _small_mlm(k)
    emb = model.bert.embeddings.word_embeddings
    P = compositional_kmer_init(emb, k, generator=torch.Generator().manual_seed(1))
    assert P.shape == (k, 4, 16)
    vocab = pp.kmer_vocab(k)  # the official vocab.txt order, specials first
    rng = np.random.default_rng(0)
    picks = ["A" * k, "G" * k, "ATCG"[:k] if k <= 4 else "ACGTTG", *rng.choice(vocab[5:], 20)]
    for kmer in picks:
        by_hand = sum(P[j, "ATCG".index(base)] for j, base in enumerate(kmer))
        torch.testing.assert_close(emb.weight[vocab.index(kmer)], by_hand)
    # the tied MLM decoder sees the same rows
    assert model.cls.predictions.decoder.weight.data_ptr() == emb.weight.data_ptr()


def test_specials_scale_and_reproducibility():
    k = 6
    emb = torch.nn.Embedding(5 + 4**k, 32, padding_idx=0)
    P = compositional_kmer_init(emb, k, std=0.05, generator=torch.Generator().manual_seed(3))
    w = emb.weight.detach()
    assert torch.count_nonzero(w[0]) == 0  # [PAD] row stays zero (padding_idx)
    # specials are independent draws, not sums of the position vectors
    sums = P.sum(0)  # any k-mer row is a sum of one vector per position; specials are not
    for i in range(1, 5):
        assert not any(torch.allclose(w[i], sums[b]) for b in range(4))
    assert abs(float(w[5:].std()) - 0.05) < 0.005  # every row about N(0, std^2)
    emb2 = torch.nn.Embedding(5 + 4**k, 32, padding_idx=0)
    compositional_kmer_init(emb2, k, std=0.05, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(emb.weight, emb2.weight)


def test_tied_decoder_scores_factorise_over_positions():
    """With compositional rows the k-mer softmax is a product of per-position base softmaxes."""
    k = 4
    emb = torch.nn.Embedding(5 + 4**k, 8)
    P = compositional_kmer_init(emb, k, std=1.0, generator=torch.Generator().manual_seed(0))
    h = torch.randn(8, generator=torch.Generator().manual_seed(1))
    log_p = torch.log_softmax(emb.weight[5:] @ h, dim=0)  # over the 4**k k-mers
    base_log_p = torch.log_softmax(P @ h, dim=1)  # (k, 4): per-position base distributions
    for kmer in ["AAAA", "GATC", "TTGC", "CCCG"]:
        i = pp.kmer_vocab(k).index(kmer) - 5
        expected = sum(base_log_p[j, "ATCG".index(b)] for j, b in enumerate(kmer))
        torch.testing.assert_close(log_p[i], expected, rtol=1e-5, atol=1e-5)


def test_rejects_wrong_vocabulary():
    with pytest.raises(ValueError, match="k=6"):
        compositional_kmer_init(torch.nn.Embedding(5 + 4**5, 8), 6)


def test_sinusoidal_positions_depend_on_distance_only():
    pos = torch.nn.Embedding(64, 16)
    w = sinusoidal_position_init(pos, std=0.05).detach().double()
    assert abs(float(w.std()) - 0.05) < 1e-6
    # by hand: unscaled rows [sin(p f_i), cos(p f_i)], f_i = 10000 ** (-2i / 16)
    f = 10_000.0 ** (-np.arange(0, 16, 2) / 16)
    row = np.empty(16)
    row[0::2], row[1::2] = np.sin(5 * f), np.cos(5 * f)
    ratio = float(w[5, 1] / row[1])
    np.testing.assert_allclose(w[5].numpy(), ratio * row, rtol=1e-5, atol=1e-8)
    for d in (1, 3, 7):  # <w_p, w_{p+d}> = ratio^2 * sum_i cos(d f_i), whatever p
        expected = ratio**2 * np.cos(d * f).sum()
        for p in (0, 10, 40):
            assert abs(float(w[p] @ w[p + d]) - expected) < 1e-6 * abs(ratio**2) * 8
    with pytest.raises(ValueError, match="even"):
        sinusoidal_position_init(torch.nn.Embedding(8, 5))


def test_compositional_training_embeddings_merge_to_plain_bert():
    k = 3
    model = _small_mlm(k)
    keys = set(model.state_dict())
    comp = use_compositional_embeddings(model, k, generator=torch.Generator().manual_seed(0))
    assert isinstance(model.bert.embeddings.word_embeddings, CompositionalKmerEmbedding)
    vocab = pp.kmer_vocab(k)
    W = comp.weight.detach()
    for kmer in ["AAA", "TCG", "GGA"]:  # k-mer rows start as sums of position-base vectors
        by_hand = sum(comp.P[j, "ATCG".index(b)] for j, b in enumerate(kmer)).detach()
        torch.testing.assert_close(W[vocab.index(kmer)], by_hand)
    ids = torch.as_tensor(pp.tokenize(["ACGTACGTTGCA", "TTTTGGGGCCCC"], k)["input_ids"])
    model.eval()
    # the decoder is tied: logits of a hidden state h are h @ W.T + bias
    h = torch.randn(2, 16)
    torch.testing.assert_close(
        model.cls.predictions.decoder(h), h @ W.T + model.cls.predictions.bias
    )
    # one optimisation step moves P (shared by every k-mer) and R
    model.train()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert comp.P.grad.abs().sum() > 0 and comp.R.grad.abs().sum() > 0
    with torch.no_grad():
        comp.P.add_(0.1 * torch.randn_like(comp.P))
        comp.R.add_(0.01 * torch.randn_like(comp.R))
    model.eval()
    before = model(input_ids=ids).logits
    plain = merge_compositional_embeddings(model)
    after = model(input_ids=ids).logits
    torch.testing.assert_close(after, before)
    assert model.cls.predictions.decoder.weight.data_ptr() == plain.weight.data_ptr()
    assert set(model.state_dict()) == keys
    # a fresh BertForMaskedLM loading the merged weights computes the same
    fresh = _small_mlm(k).eval()
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(fresh(input_ids=ids).logits, before)
    with pytest.raises(TypeError):
        merge_compositional_embeddings(model)


def test_random_position_offsets_shift_all_but_cls():
    emb = torch.nn.Embedding(32, 4)
    wrapped = RandomOffsetPositionEmbedding(emb)
    ids = torch.arange(10)[None, :]  # as BertEmbeddings passes them: (1, T)
    wrapped.eval()
    torch.testing.assert_close(wrapped(ids), emb(ids))
    wrapped.train()
    seen = set()
    for seed in range(200):
        torch.manual_seed(seed)
        out = wrapped(ids)
        torch.manual_seed(seed)
        offset = int(torch.randint(0, 32 - 1 - 9 + 1, ()))  # room = 32 - 1 - max position
        by_hand = torch.cat([emb.weight[:1], emb.weight[1 + offset : 10 + offset]])[None]
        torch.testing.assert_close(out, by_hand)
        seen.add(offset)
    assert seen == set(range(23))  # every offset 0..22 occurs; position 31 is reachable
    full = torch.arange(32)[None, :]
    torch.testing.assert_close(wrapped(full), emb(full))  # no room: unchanged


def test_random_position_offsets_in_a_bert():
    k = 3
    # no dropout, so that train mode differs from eval mode by the offsets alone; set in the
    # config: transformers 4.48's SDPA attention reads its dropout from the config at
    # construction (setting the nn.Dropout modules' p after it leaves attention dropout on)
    model = _small_mlm(k, dropout=0.0, attention_dropout=0.0)
    keys = set(model.state_dict())
    ids = torch.as_tensor(pp.tokenize(["ACGTACGTTGCA"], k)["input_ids"])
    model.eval()
    plain = model(input_ids=ids).logits
    use_random_position_offsets(model)
    wrapper = model.bert.embeddings.position_embeddings
    assert isinstance(wrapper, RandomOffsetPositionEmbedding)
    torch.testing.assert_close(model(input_ids=ids).logits, plain)  # eval: unchanged
    captured = []
    wrapper.embedding.register_forward_hook(lambda mod, inp, out: captured.append(inp[0]))
    model.train()
    torch.manual_seed(5)
    shifted = model(input_ids=ids).logits
    used = captured[-1]
    assert used[0, 0] == 0 and (used[0, 1:] - used[0, 1]).tolist() == list(range(ids.shape[1] - 1))
    assert used[0, 1] > 1  # seed 5 draws a real offset (position 1 would be no shift)
    assert not torch.allclose(shifted, plain)
    remove_random_position_offsets(model)
    assert set(model.state_dict()) == keys
    model.eval()
    # the same positions through the default position ids (an explicit, non-contiguous
    # position_ids argument reads as packed sequences in transformers >= 5.25)
    model.bert.embeddings.position_ids[:, : used.shape[1]] = used[0]
    torch.testing.assert_close(model(input_ids=ids).logits, shifted)
