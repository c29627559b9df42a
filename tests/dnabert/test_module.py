import numpy as np
import pytest
import torch

from omicformer.dnabert import pp
from omicformer.dnabert.module import (
    MASK_LIST,
    SpanMaskingCollator,
    TokenDataset,
    bert_config,
    build_bert,
    classification_collate,
    classifier_pooling,
    span_mask_positions,
    span_mask_tokens,
)

# examples/run_pretrain.py of official DNABERT, literally (keys are the tokenizer's k as a str)
OFFICIAL_MASK_LIST = {"3": [-1, 1], "4": [-1, 1, 2], "5": [-2, -1, 1, 2], "6": [-2, -1, 1, 2, 3]}


def _official_mask_tokens(inputs, k, vocab_size, generator, mlm_probability=0.15):
    """Oracle: the official DNABERT per-row loop, written out from its description."""
    labels = inputs.clone()
    probability_matrix = torch.full(labels.shape, mlm_probability)
    special = torch.isin(labels, torch.tensor([2, 3]))  # [CLS], [SEP]
    probability_matrix.masked_fill_(special, 0.0)
    probability_matrix.masked_fill_(labels.eq(0), 0.0)  # [PAD]
    masked_indices = torch.bernoulli(probability_matrix, generator=generator).bool()
    for i in range(masked_indices.shape[0]):
        end = torch.where(probability_matrix[i] != 0)[0].tolist()[-1]
        centers = set(torch.where(masked_indices[i])[0].tolist())
        new_centers = set(centers)
        for center in centers:
            for offset in OFFICIAL_MASK_LIST[str(k)]:
                j = center + offset
                if 1 <= j <= end:
                    new_centers.add(j)
        masked_indices[i, sorted(new_centers)] = True
    labels[~masked_indices] = -100
    replaced = torch.bernoulli(torch.full(labels.shape, 0.8), generator=generator).bool()
    replaced &= masked_indices
    inputs = inputs.clone()
    inputs[replaced] = 4
    rand = torch.bernoulli(torch.full(labels.shape, 0.5), generator=generator).bool()
    rand &= masked_indices & ~replaced
    words = torch.randint(vocab_size, labels.shape, dtype=torch.long, generator=generator)
    inputs[rand] = words[rand]
    return inputs, labels


def _batch(k, n=16, seed=0, lengths=(20, 60, 130)):
    rng = np.random.default_rng(seed)
    seqs = ["".join(rng.choice(list("ACGT"), size=lengths[i % len(lengths)])) for i in range(n)]
    return seqs, torch.as_tensor(pp.tokenize(seqs, k=k)["input_ids"])


def _masks_equal_official(ids: torch.Tensor, k: int, seeds=range(5)) -> list:
    """``span_mask_tokens`` of ``ids`` for each seed, checked equal to the official loop's."""
    out = []
    for seed in seeds:
        ours = span_mask_tokens(
            ids, k, pp.vocab_size(k), generator=torch.Generator().manual_seed(seed)
        )
        ref = _official_mask_tokens(ids, k, pp.vocab_size(k), torch.Generator().manual_seed(seed))
        torch.testing.assert_close(ours[0], ref[0])
        torch.testing.assert_close(ours[1], ref[1])
        out.append(ours)
    return out


@pytest.mark.parametrize("k", [3, 4, 5, 6])
def test_span_masking_equals_official_loop(k):
    _, ids = _batch(k)
    _masks_equal_official(ids, k)


def test_mask_list_is_the_official_one():
    assert {str(k): list(v) for k, v in MASK_LIST.items()} == OFFICIAL_MASK_LIST


# Hand-computed spans (of the centres 1, 8, 18). Row: [CLS] at 0, 18 tokens at 1..18, [SEP] at 19; all tokens are [UNK]
# (excluded as centres here) except the k-mers at 1, 8 and 18, which with probability 1 are the
# only centres. Official: centre c masks c + MASK_LIST offsets within [1, end], end = 18.
HAND_SPANS = {
    3: ([1, 2], [7, 8, 9], [17, 18]),  # -1, +1: 0 is [CLS], 19 is past end
    4: ([1, 2, 3], [7, 8, 9, 10], [17, 18]),  # -1, +1, +2
    5: ([1, 2, 3], [6, 7, 8, 9, 10], [16, 17, 18]),  # -2, -1, +1, +2
    6: ([1, 2, 3, 4], [6, 7, 8, 9, 10, 11], [16, 17, 18]),  # -2, -1, +1, +2, +3
}


@pytest.mark.parametrize("k", [3, 4, 5, 6])
def test_span_offsets_and_edges_hand_computed(k):
    row = [2] + [1] * 18 + [3, 0, 0]  # [CLS] [UNK]x18 [SEP] [PAD] [PAD]
    for centre in (1, 8, 18):
        row[centre] = 5 + centre  # some k-mer
    ids = torch.tensor([row, row])
    for seed in range(3):
        masked = span_mask_positions(
            ids,
            k,
            mlm_probability=1.0,
            exclude_ids=(0, 1, 2, 3),
            generator=torch.Generator().manual_seed(seed),
        )
        for m in masked:
            assert m.nonzero().flatten().tolist() == [j for span in HAND_SPANS[k] for j in span]


@pytest.mark.parametrize("k", [3, 6])
def test_unk_kmers_are_ordinary_centres_as_official(k):
    """Official DNABERT zeroes the centre probability of [CLS]/[SEP] (its special-tokens mask)
    and [PAD] only: [UNK] k-mers (with N) are drawn and masked like any k-mer."""
    rng = np.random.default_rng(k)
    seqs = ["".join(rng.choice(list("ACGTNNNN"), size=n)) for n in (30, 70, 90) * 4]
    ids = torch.as_tensor(pp.tokenize(seqs, k=k)["input_ids"])
    assert (ids == 1).sum() > 100
    unk_masked = sum(int((labels == 1).sum()) for _, labels in _masks_equal_official(ids, k))
    assert unk_masked > 0
    # a centre alone (all else excluded) on the last k-mer, an [UNK]: masked, span clipped there
    row = torch.tensor([[2, 5, 5, 5, 5, 5, 5, 5, 1, 3, 0]])
    masked = span_mask_positions(row, k, mlm_probability=1.0, exclude_ids=(0, 2, 3, 5))
    assert masked[0].nonzero().flatten().tolist() == list(
        range(8 + min(OFFICIAL_MASK_LIST[str(k)]), 9)
    )


@pytest.mark.parametrize("k", [3, 4, 5, 6])
def test_no_masked_base_readable_from_unmasked_kmers(k):
    """Each masked k-mer contains a base that no unmasked real k-mer covers."""
    _, ids = _batch(k, n=32, seed=k)
    for seed in range(4):
        masked = span_mask_positions(ids, k, generator=torch.Generator().manual_seed(seed))
        assert masked.any()
        for row, m in zip(ids, masked, strict=True):
            real = np.flatnonzero((row > 4).numpy())  # k-mer positions 1..n
            assert not m[row <= 3].any()  # never [PAD]/[CLS]/[SEP]
            visible = set()
            for p in real[~m.numpy()[real]]:
                visible.update(range(p - 1, p - 1 + k))  # token p covers bases p-1 .. p+k-2
            for p in np.flatnonzero(m.numpy()):
                assert set(range(p - 1, p - 1 + k)) - visible, (k, p)


@pytest.mark.parametrize("k", [3, 6])
def test_span_shape_rate_and_80_10_10(k):
    _, ids = _batch(k, n=64, lengths=(400,))
    inputs, labels = span_mask_tokens(
        ids, k, pp.vocab_size(k), generator=torch.Generator().manual_seed(1)
    )
    masked = labels != -100
    assert torch.equal(labels[masked], ids[masked])
    frac_mask = (inputs[masked] == 4).float().mean().item()
    frac_same = (inputs[masked] == ids[masked]).float().mean().item()
    assert 0.75 < frac_mask < 0.85
    assert 0.06 < frac_same < 0.16  # 10% unchanged + random draws equal to the original
    # spans: every run of masked tokens away from the ends is >= k long; lone centres give k
    sparse = span_mask_positions(
        ids, k, mlm_probability=0.01, generator=torch.Generator().manual_seed(2)
    )
    run_lengths = []
    for row, m in zip(ids, sparse, strict=True):
        last = int(np.flatnonzero(row.numpy() > 4)[-1])
        edges = np.flatnonzero(np.diff(np.concatenate([[0], m.numpy().astype(int), [0]])))
        for start, stop in zip(edges[::2], edges[1::2], strict=True):
            if start > k and stop <= last - k:
                run_lengths.append(stop - start)
    assert min(run_lengths) == k
    # overall masked fraction is well above the centre rate (spans of k)
    assert masked[ids > 4].float().mean().item() > 0.15


def test_clipped_to_real_kmers_and_seeded():
    _, ids = _batch(6, n=8, lengths=(8, 30))
    for seed in range(10):
        masked = span_mask_positions(
            ids, 6, mlm_probability=0.5, generator=torch.Generator().manual_seed(seed)
        )
        assert not masked[:, 0].any()
        assert not masked[ids <= 3].any()
    a = span_mask_tokens(ids, 6, 4101, generator=torch.Generator().manual_seed(3))
    b = span_mask_tokens(ids, 6, 4101, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0])
    assert torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="k = 3, 4, 5, 6"):
        span_mask_positions(ids, 7)


def test_dataset_and_collators():
    out = pp.tokenize(["ACGTACGTAC", "ACGTAC"], k=3)
    ds = TokenDataset(out["input_ids"], labels=np.array([1, 0]))
    assert ds[1]["input_ids"].tolist() == out["input_ids"][1, :6].tolist()
    batch = classification_collate([ds[0], ds[1]])
    assert batch["input_ids"].shape == (2, 10)
    assert batch["attention_mask"].sum().item() == 16
    assert batch["labels"].tolist() == [1, 0]
    # a seeded (validation) collator: the masks are a function of (seed, first item)
    collator = SpanMaskingCollator(3, 69, seed=0)
    b1 = collator([ds[0], ds[1]])
    b2 = SpanMaskingCollator(3, 69, seed=0)([ds[0], ds[1]])
    assert torch.equal(b1["labels"], b2["labels"])
    assert set(b1) == {"input_ids", "attention_mask", "labels"}
    # a training collator draws from torch's global generator (reseeded per epoch/rank/worker)
    train = SpanMaskingCollator(3, 69, mlm_probability=0.5)
    torch.manual_seed(1)
    t1 = train([ds[0], ds[1]])
    torch.manual_seed(1)
    assert torch.equal(t1["labels"], train([ds[0], ds[1]])["labels"])
    assert not torch.equal(t1["labels"], train([ds[0], ds[1]])["labels"])
    with pytest.raises(ValueError, match="labels"):
        TokenDataset(out["input_ids"], labels=np.array([1]))


def test_build_bert_is_seeded_hf_model():
    from transformers import BertForMaskedLM, BertForSequenceClassification

    config = bert_config(3, n_layers=2, hidden_size=32, n_heads=2)
    assert config.vocab_size == 69
    a, b = build_bert(config, seed=0), build_bert(config, seed=0)
    assert isinstance(a, BertForMaskedLM)
    for (_, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y)
    config.num_labels = 3
    clf = build_bert(config, "classification", seed=0)
    assert isinstance(clf, BertForSequenceClassification)
    assert clf.config._attn_implementation == "sdpa"
    with pytest.raises(ValueError, match="divisible"):
        bert_config(3, hidden_size=30, n_heads=4)


def test_mean_pooling_classifier_by_hand():
    """pooler(mean of k-mer states) -> classifier, padding and [CLS]/[SEP] left out."""
    config = bert_config(3, n_layers=2, d_model=16, n_heads=2, max_len=32, num_labels=3)
    assert classifier_pooling(config) == "cls"  # official default
    config.classifier_pooling = "mean"
    model = build_bert(config, "classification", seed=0).eval()
    plain = build_bert(bert_config(3, n_layers=2, d_model=16, n_heads=2, max_len=32), "mlm")
    assert set(model.state_dict()) - {"classifier.weight", "classifier.bias"} >= {
        k for k in plain.state_dict() if k.startswith("bert.") and "pooler" not in k
    }
    batch = pp.tokenize(["ACGTTGCAAC", "GGATCCAT"], 3)  # 8 and 6 k-mers: the second is padded
    ids, mask = torch.as_tensor(batch["input_ids"]), torch.as_tensor(batch["attention_mask"])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
        for row in range(2):
            n = int(mask[row].sum())  # [CLS] + k-mers + [SEP]
            hidden = model.bert(input_ids=ids[row : row + 1, :n]).last_hidden_state[0]
            mean = hidden[1 : n - 1].mean(0)  # k-mers only
            pooled = torch.tanh(
                mean @ model.bert.pooler.dense.weight.T + model.bert.pooler.dense.bias
            )
            by_hand = pooled @ model.classifier.weight.T + model.classifier.bias
            torch.testing.assert_close(logits[row], by_hand, atol=1e-5, rtol=1e-5)
        out = model(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 2]))
        torch.testing.assert_close(
            out.loss, torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2]))
        )
    config.classifier_pooling = "max"
    with pytest.raises(ValueError, match="classifier_pooling"):
        build_bert(config, "classification")


# src/transformers/dnabert-config/bert-config-{k}/config.json of official DNABERT, literally
# (the same for k = 3..6 but vocab_size)
OFFICIAL_CONFIG = {
    "architectures": ["BertForMaskedLM"],
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "max_position_embeddings": 512,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "type_vocab_size": 2,
}
OFFICIAL_VOCAB_SIZE = {3: 69, 4: 261, 5: 1029, 6: 4101}


@pytest.mark.parametrize("k", [3, 4, 5, 6])
def test_bert_config_of_the_official_shape_is_the_official_config_json(k):
    config = bert_config(k, n_layers=12, d_model=768, n_heads=12).to_dict()
    expected = {**OFFICIAL_CONFIG, "vocab_size": OFFICIAL_VOCAB_SIZE[k]}
    for key, value in expected.items():
        if key != "architectures":
            assert config[key] == value, key
    assert config["layer_norm_eps"] == 1e-12  # BertConfig default, which official configs use


def test_no_weight_decay_on_biases_and_layer_norms_as_official():
    """Official run_pretrain.py / run_finetune.py: ``no_decay = ["bias", "LayerNorm.weight"]``,
    a parameter is in the no-decay group when any of them is a substring of its name."""
    from types import SimpleNamespace

    from omicformer.dnabert.train import DNABertTrainingPlan

    for task in ("mlm", "classification"):
        config = bert_config(3, n_layers=1, d_model=16, n_heads=2, max_len=16, num_labels=2)
        module = build_bert(config, task, seed=0)
        plan = DNABertTrainingPlan(module, task, weight_decay=0.01)
        plan._trainer = SimpleNamespace(estimated_stepping_batches=10)
        groups = plan.configure_optimizers()["optimizer"].param_groups
        no_decay = ["bias", "LayerNorm.weight"]
        named = dict(module.named_parameters())
        official = {
            0.01: [p for n, p in named.items() if not any(nd in n for nd in no_decay)],
            0.0: [p for n, p in named.items() if any(nd in n for nd in no_decay)],
        }
        assert [g["weight_decay"] for g in groups] == [0.01, 0.0]
        for group in groups:
            ours = {id(p) for p in group["params"]}
            assert ours == {id(p) for p in official[group["weight_decay"]]}


def test_new_and_loaded_models_are_in_eval_mode_as_from_pretrained_gives_them(
    tiny, official_folder, tmp_path
):
    # a model's module is used directly too (model.module(...)): dropout must be off, as
    # transformers' from_pretrained leaves it; training switches to train mode by itself
    from omicformer.dnabert.model import DNABert

    official_folder(tmp_path, k=3)
    for model in (DNABert(k=3, **tiny), DNABert.load(tmp_path)):
        assert not model.module.training
        ids = torch.tensor([[2, 10, 11, 12, 3]])
        with torch.no_grad():
            first, second = model.module(input_ids=ids).logits, model.module(input_ids=ids).logits
        assert torch.equal(first, second)
