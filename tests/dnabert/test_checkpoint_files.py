"""DNABert model folders: official and saved checkpoints, save/load round trips, damaged files."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from omicformer.dnabert import pp
from omicformer.dnabert.model import DNABert, _defaults, default_model_path, resolve_model


def _logits(module, seqs, k):
    batch = pp.tokenize(seqs, k=k)
    with torch.no_grad():
        return module.eval()(
            input_ids=torch.as_tensor(batch["input_ids"]),
            attention_mask=torch.as_tensor(batch["attention_mask"]),
        ).logits


def test_load_official_folder(tmp_path, seqs, official_folder):
    reference = official_folder(tmp_path / "DNA_bert_3", k=3)
    model = DNABert.from_pretrained(tmp_path / "DNA_bert_3")
    assert model.k == 3
    assert model.task == "mlm"
    assert model.window_size == 64 - 2 + 2
    torch.testing.assert_close(_logits(model.module, seqs[:4], 3), _logits(reference, seqs[:4], 3))
    emb = model.embed(seqs[:3], device="cpu", progress=False)
    assert emb.shape == (3, 32)
    assert np.isfinite(emb).all()


def test_folder_warnings_point_at_the_users_line_through_resolve_model(tmp_path, official_folder):
    # the tl functions open model= folders through resolve_model, two frames deeper
    official_folder(tmp_path / "nv", k=3)
    (tmp_path / "nv" / "vocab.txt").unlink()  # official config.json alone: k from vocab_size
    with pytest.warns(UserWarning, match=r"has no vocab.txt; assuming .* k=3") as record:
        assert resolve_model(tmp_path / "nv").k == 3
    assert [w.filename for w in record if "vocab.txt" in str(w.message)] == [__file__]


def test_fine_tuning_an_official_folder_starts_from_its_pooler(tmp_path, seqs, official_folder,
                                                             fit_kw):  # fmt: skip
    # DNABERT's fork builds BertForMaskedLM with a pooler, so official folders hold
    # bert.pooler.*; the official fine-tuning (BertForSequenceClassification.from_pretrained)
    # starts the classifier's pooler from it
    from transformers import BertForSequenceClassification

    official_folder(tmp_path / "DNA_bert_3", k=3, legacy_names=False)
    saved = torch.load(tmp_path / "DNA_bert_3" / "pytorch_model.bin", weights_only=True)
    official = BertForSequenceClassification.from_pretrained(tmp_path / "DNA_bert_3")
    torch.testing.assert_close(official.bert.pooler.dense.weight, saved["bert.pooler.dense.weight"])
    model = DNABert.from_pretrained(tmp_path / "DNA_bert_3")
    assert not any(p.requires_grad for p in model.module.bert.pooler.parameters())  # MLM: unused
    again = DNABert.load(model.save(tmp_path / "ours"))  # kept by our save too
    for m in (model, again):
        m.finetune(seqs[:8], [0, 1] * 4, max_steps=1, lr=0.0, weight_decay=0.0, batch_size=4,
                   random_state=0, **fit_kw)  # fmt: skip
        for name in ("weight", "bias"):
            torch.testing.assert_close(getattr(m.module.bert.pooler.dense, name),
                                       saved[f"bert.pooler.dense.{name}"], rtol=0, atol=0)  # fmt: skip
        assert all(p.requires_grad for p in m.module.bert.pooler.parameters())


def test_save_is_hf_compatible_and_roundtrips(tmp_path, seqs, official_folder):
    from transformers import BertForMaskedLM

    official_folder(tmp_path / "official", k=3, legacy_names=False)
    model = DNABert.from_pretrained(tmp_path / "official")
    out = model.save(tmp_path / "ours")
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "vocab.txt", "omicformer_config.json"} <= files
    assert pp.read_vocab_txt(out / "vocab.txt") == pp.kmer_vocab(3)
    meta = json.loads((out / "omicformer_config.json").read_text())
    assert meta["k"] == 3
    assert meta["task"] == "mlm"
    again = DNABert.load(out)
    torch.testing.assert_close(_logits(again.module, seqs, 3), _logits(model.module, seqs, 3))
    hf = BertForMaskedLM.from_pretrained(out).eval()
    torch.testing.assert_close(_logits(hf, seqs, 3), _logits(model.module, seqs, 3))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save(out)


def test_finetuned_roundtrip_identical_outputs(tmp_path, finetuned, labelled):
    seqs, _ = labelled
    path = finetuned.save(tmp_path / "clf")
    loaded = DNABert.from_pretrained(path)
    assert loaded.task == "classification"
    assert loaded.labels_ == finetuned.labels_ == ["at", "gc"]
    assert loaded.history.keys() == finetuned.history.keys()
    for key, frame in finetuned.history.items():
        pd.testing.assert_frame_equal(loaded.history[key], frame)
    kw = {"device": "cpu", "progress": False}
    np.testing.assert_array_equal(loaded.predict(seqs, **kw), finetuned.predict(seqs, **kw))
    np.testing.assert_array_equal(loaded.embed(seqs, **kw), finetuned.embed(seqs, **kw))


def test_checkpoint_vocab_must_fit_k(tmp_path, tiny, official_folder):
    official_folder(tmp_path / "bad", k=3, vocab_k=4)
    with pytest.raises(ValueError, match="does not fit its k"):
        DNABert.from_pretrained(tmp_path / "bad")
    official_folder(tmp_path / "meta", k=3)
    (tmp_path / "meta" / "vocab.txt").write_text("[PAD]\n[UNK]\nAAA\n")
    with pytest.raises(ValueError, match="fits no DNABERT k-mer size"):
        DNABert.from_pretrained(tmp_path / "meta")
    ours = DNABert(k=3, **tiny).save(tmp_path / "ours")
    meta = json.loads((ours / "omicformer_config.json").read_text())
    (ours / "omicformer_config.json").write_text(json.dumps({**meta, "k": 5}))
    with pytest.raises(ValueError, match="does not fit its k"):
        DNABert.from_pretrained(ours)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DNABert.from_pretrained(tmp_path / "nowhere")


def test_default_model_path(tmp_path, monkeypatch, tiny):
    assert _defaults.DATA_DIR.parts[-2:] == ("dnabert", "_data")
    monkeypatch.setattr(_defaults, "DATA_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="scripts/"):
        default_model_path("mlm")
    with pytest.raises(FileNotFoundError, match="not in this installation"):
        resolve_model("default", "promoter")
    with pytest.raises(ValueError, match="task"):
        default_model_path("splice")
    DNABert(k=3, **tiny).save(tmp_path / "default_mlm")
    assert default_model_path("mlm") == tmp_path / "default_mlm"
    assert resolve_model("default").k == 3


def test_save_only_on_rank_zero(tmp_path, tiny, monkeypatch):
    from lightning.pytorch.utilities import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", 1)
    DNABert(k=3, **tiny).save(tmp_path / "rank1")
    assert not (tmp_path / "rank1").exists()


def test_half_save_and_label_names(tmp_path, tiny, fit_kw, labelled):
    seqs, labels = labelled
    model = DNABert(k=3, **tiny)
    ints = [int(x == "gc") for x in labels]
    model.finetune(seqs, ints, label_names=["background", "promoter"], max_steps=1, **fit_kw)
    assert model.labels_ == ["background", "promoter"]
    assert model.config.id2label == {0: "background", 1: "promoter"}
    full, half = model.save(tmp_path / "full"), model.save(tmp_path / "half", half=True)
    size = lambda p: (p / "model.safetensors").stat().st_size  # noqa: E731
    assert size(half) < 0.6 * size(full)
    loaded = DNABert.load(half)
    assert loaded.labels_ == ["background", "promoter"]
    assert next(loaded.module.parameters()).dtype == torch.float32
    kw = {"device": "cpu", "progress": False}
    np.testing.assert_allclose(loaded.predict(seqs, **kw), model.predict(seqs, **kw), atol=1e-2)
    with pytest.raises(ValueError, match="not in label_names"):
        model.finetune(seqs, labels, label_names=["gc", "x"], max_steps=1, **fit_kw)


def test_official_classification_folder(tmp_path, seqs):
    from transformers import BertConfig, BertForSequenceClassification

    path = tmp_path / "ft"
    path.mkdir()
    config = {
        "architectures": ["BertForSequenceClassification"],
        "vocab_size": 69,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 64,
        "num_labels": 3,
    }
    (path / "config.json").write_text(json.dumps(config))
    pp.write_vocab_txt(path / "vocab.txt", 3)
    torch.manual_seed(0)
    reference = BertForSequenceClassification(BertConfig(**config)).eval()
    torch.save(reference.state_dict(), path / "pytorch_model.bin")
    model = DNABert.from_pretrained(path)
    assert model.task == "classification"
    assert len(model.labels_) == 3
    probs = model.predict(seqs[:3], device="cpu", progress=False)
    expected = torch.softmax(_logits(reference, seqs[:3], 3), -1).numpy()
    np.testing.assert_allclose(probs, expected, rtol=1e-4, atol=1e-6)


def test_finetune_pooling_kept_through_save(tmp_path, tiny, fit_kw, labelled):
    seqs, labels = labelled
    kw = {"device": "cpu", "progress": False}
    official = DNABert(k=3, **tiny)
    official.finetune(seqs, labels, max_steps=1, **fit_kw)
    assert official.config.classifier_pooling == "cls"  # no say in the config: official [CLS]
    model = DNABert(k=3, **tiny)
    model.module.config.classifier_pooling = "mean"  # an MLM that recommends mean pooling
    model.finetune(seqs, labels, max_epochs=2, batch_size=8, lr=3e-3, **fit_kw)
    assert model.config.classifier_pooling == "mean"
    path = model.save(tmp_path / "mean")
    raw = json.loads((path / "config.json").read_text())
    assert raw["architectures"] == ["BertForSequenceClassification"]  # weight layout unchanged
    assert raw["classifier_pooling"] == "mean"
    loaded = DNABert.load(path)
    probs = model.predict(seqs, **kw)
    np.testing.assert_array_equal(loaded.predict(seqs, **kw), probs)
    # the same weights read through the [CLS] pooler give other probabilities
    model.finetune(seqs, labels, pooling="cls", max_steps=1, lr=1e-12, **fit_kw)
    assert model.config.classifier_pooling == "cls"
    assert not np.allclose(model.predict(seqs, **kw), probs, atol=1e-3)
    with pytest.raises(ValueError, match="pooling='max'"):
        model.finetune(seqs, labels, pooling="max", max_steps=1, **fit_kw)


# ---------------------------------------------------------------- damaged model folders
def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"hidden_size": -5}, r"'hidden_size' must be an integer >= 1, got -5"),
        ({"max_position_embeddings": 3.7}, r"'max_position_embeddings' must be .*got 3\.7"),
        ({"num_hidden_layers": None}, r"'num_hidden_layers' must be an integer >= 1, got None"),
        ({"num_attention_heads": True}, r"'num_attention_heads' must be .*got True"),
        ({"vocab_size": "abc"}, r"'vocab_size' must be an integer >= 1, got 'abc'"),
    ],
)
def test_bad_integer_in_config_json_names_file_and_field(tmp_path, official_folder, changes, match):
    official_folder(tmp_path / "m", k=3)
    _edit_json(tmp_path / "m" / "config.json", **changes)
    with pytest.raises(ValueError, match=r"config\.json: " + match):
        DNABert.load(tmp_path / "m")


@pytest.mark.parametrize(
    ("text", "match"), [("{oops", "is not valid JSON"), ("[1]", "must hold one JSON object")]
)
def test_damaged_config_json_is_named(tmp_path, official_folder, text, match):
    official_folder(tmp_path / "m", k=3)
    (tmp_path / "m" / "config.json").write_text(text)
    with pytest.raises(ValueError, match=rf"config\.json {match}"):
        DNABert.load(tmp_path / "m")


def test_unknown_task_in_saved_metadata_is_named(tmp_path, tiny):
    DNABert(k=3, **tiny).save(tmp_path / "m")
    _edit_json(tmp_path / "m" / "omicformer_config.json", task="promoter")
    with pytest.raises(ValueError, match=r"omicformer_config\.json: 'task' must be 'mlm' or"):
        DNABert.load(tmp_path / "m")


@pytest.mark.parametrize("content", [b"", b"not a torch file"])
def test_damaged_pytorch_model_bin_is_named(tmp_path, official_folder, content):
    official_folder(tmp_path / "m", k=3)
    (tmp_path / "m" / "pytorch_model.bin").write_bytes(content)
    with pytest.raises(ValueError, match=r"pytorch_model\.bin could not be read as PyTorch"):
        DNABert.load(tmp_path / "m")


def test_weights_of_another_shape_than_config_json_are_named(tmp_path, official_folder):
    official_folder(tmp_path / "m", k=3)
    state = torch.load(tmp_path / "m" / "pytorch_model.bin", weights_only=True)
    key = next(k for k in state if k.endswith("word_embeddings.weight"))
    state[key] = state[key][:, :16].clone()  # config.json says hidden_size 32
    torch.save(state, tmp_path / "m" / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"word_embeddings\.weight: file \(69, 16\) vs config"):
        DNABert.load(tmp_path / "m")


def test_save_refuses_to_overwrite_an_official_folder(tmp_path, official_folder):
    official_folder(tmp_path / "DNA_bert_3", k=3)
    before = {p.name: p.read_bytes() for p in (tmp_path / "DNA_bert_3").iterdir()}
    model = DNABert.load(tmp_path / "DNA_bert_3")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save(tmp_path / "DNA_bert_3")
    after = {p.name: p.read_bytes() for p in (tmp_path / "DNA_bert_3").iterdir()}
    assert after == before
    model.save(tmp_path / "DNA_bert_3", overwrite=True)
    assert DNABert.load(tmp_path / "DNA_bert_3").k == 3


def test_a_failed_save_over_an_official_folder_leaves_it_as_it_was(
    tmp_path, tiny, official_folder, weights_write_fails
):
    # written in place, a full disk part-way left a damaged model.safetensors beside the
    # official weights, and loading reads it first
    import errno

    official_folder(tmp_path / "DNA_bert_3", k=3)
    before = {p.name: p.read_bytes() for p in (tmp_path / "DNA_bert_3").iterdir()}
    weights_write_fails("model.safetensors", OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(OSError, match="No space left"):
        DNABert(k=4, **tiny).save(tmp_path / "DNA_bert_3", overwrite=True)
    assert {p.name: p.read_bytes() for p in (tmp_path / "DNA_bert_3").iterdir()} == before
    assert DNABert.load(tmp_path / "DNA_bert_3").k == 3


def test_saved_folder_has_the_official_layout(tmp_path, tiny):
    """As zhihan1996/DNA_bert_k: config.json of a BertForMaskedLM, vocab.txt, the official
    special_tokens_map.json, and 512-token tokenizer_config.json (do_lower_case false: the
    official DNATokenizer never lower-cases, and a lower-cased k-mer would be [UNK])."""
    path = DNABert(k=4, **{**tiny, "max_len": 512}).save(tmp_path / "m")
    raw = json.loads((path / "config.json").read_text())
    assert raw["architectures"] == ["BertForMaskedLM"]
    assert raw["vocab_size"] == 261
    assert raw["max_position_embeddings"] == 512
    assert raw["type_vocab_size"] == 2
    assert raw["hidden_act"] == "gelu"
    specials = json.loads((path / "special_tokens_map.json").read_text())
    assert specials == {
        "unk_token": "[UNK]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
    }
    tokenizer = json.loads((path / "tokenizer_config.json").read_text())
    assert tokenizer["max_len"] == 512
    assert tokenizer["do_lower_case"] is False
    lines = (path / "vocab.txt").read_text().splitlines()
    assert lines[:6] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "AAAA"]
    assert len(lines) == 261
