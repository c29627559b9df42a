import json
import re
import traceback

import numpy as np
import pytest
import torch

from omicformer.scgpt import tl
from omicformer.scgpt.checkpoint import load_official, rename_official_keys


@pytest.mark.parametrize("flash_keys", ["Wqkv", "_impl", "torch"])
def test_load_official_key_styles(tmp_path, official, flash_keys):
    ref, vocab = official.write_checkpoint(tmp_path, flash_keys=flash_keys)
    module, gv, report = load_official(tmp_path)
    assert len(gv) == len(vocab) == 55
    assert gv["<pad>"] == 52 and gv["<cls>"] == 53 and gv["<eoc>"] == 54  # appended at the end
    assert not module.training
    ours = module.state_dict()
    for k, v in ref.state_dict().items():
        if k.startswith(("encoder.", "value_encoder.", "transformer_encoder.")):
            torch.testing.assert_close(ours[k], v, rtol=0, atol=0)
    assert "flag_encoder.weight" in report["loaded"]  # generative flag embedding kept
    assert any(k.startswith("grad_reverse_discriminator") for k in report["skipped"])
    assert module.cls_decoder.out_layer.out_features == 7


def test_load_official_leaves_the_users_torch_draws_alone_and_fills_the_same(
    tmp_path, official, monkeypatch
):
    official.write_checkpoint(tmp_path)
    state = torch.load(tmp_path / "best_model.pt", weights_only=True)
    torch.save(
        {k: v for k, v in state.items() if not k.startswith("decoder.")},
        tmp_path / "best_model.pt",
    )  # without the expression decoder
    loaded = []
    for user_seed in (1, 2):
        torch.manual_seed(user_seed)
        expected = torch.rand(3)
        torch.manual_seed(user_seed)
        cuda_seeds = []
        monkeypatch.setattr(torch.cuda, "manual_seed_all", cuda_seeds.append)
        module, _, report = load_official(tmp_path)
        monkeypatch.undo()
        assert cuda_seeds == []  # the user's GPU streams are not reseeded either
        torch.testing.assert_close(torch.rand(3), expected, rtol=0, atol=0)
        loaded.append((module.state_dict(), report["missing"]))
    (first, missing), (second, _) = loaded
    assert missing and all(k.startswith("decoder.") for k in missing)
    # the weights the checkpoint lacks are initialised the same way on every load
    for k in missing:
        torch.testing.assert_close(first[k], second[k], rtol=0, atol=0)


def test_rename_rules():
    s = {
        "module.transformer_encoder.layers.0.self_attn.Wqkv.weight": 1,
        "transformer_encoder.layers.1.self_attn._impl.Wqkv.bias": 2,
        "transformer_encoder.layers.1.self_attn._impl.out_proj.weight": 3,
    }
    assert set(rename_official_keys(s)) == {
        "transformer_encoder.layers.0.self_attn.in_proj_weight",
        "transformer_encoder.layers.1.self_attn.in_proj_bias",
        "transformer_encoder.layers.1.self_attn.out_proj.weight",
    }
    # a Lightning module's state dict (the model as self.model): every key under "model."
    lightning = {f"model.{k}": v for k, v in s.items()}
    assert rename_official_keys(lightning) == rename_official_keys(s)
    mixed = {**s, "model.extra": 4}  # not every key: "model." is part of a name
    assert "model.extra" in rename_official_keys(mixed)


@pytest.mark.parametrize("pad_to_max", [True, False])
def test_embeddings_equal_official(official_ckpt, official, continuous_adata_factory, pad_to_max):
    path, ref, vocab = official_ckpt
    adata = continuous_adata_factory(40)
    X = adata.X.toarray()[:, :50]  # official embed_data first drops genes not in the vocab
    gene_ids = np.arange(50)
    np.random.seed(0)
    expected = official.embed(ref, X, gene_ids, vocab, max_len=60, pad_to_max=pad_to_max)
    tl.embed(adata, model=str(path), batch_size=7, max_len=60, device="cpu", progress=False)
    got = adata.obsm["X_scgpt"]
    assert got.shape == (40, 32) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(got, expected, atol=2e-5)
    assert adata.uns["scgpt"]["X_scgpt"]["n_genes_matched"] == 50


def _corrupt(path, **edits):
    for name, fn in edits.items():
        fn(path / name)


def test_missing_file_and_shape_mismatch(tmp_path, official, continuous_adata_factory):
    adata = continuous_adata_factory(5)
    official.write_checkpoint(tmp_path / "a")
    (tmp_path / "a" / "vocab.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"vocab\.json"):
        tl.embed(adata, model=str(tmp_path / "a"), device="cpu")
    official.write_checkpoint(tmp_path / "b")
    args = json.loads((tmp_path / "b" / "args.json").read_text())
    args["embsize"] = 64
    (tmp_path / "b" / "args.json").write_text(json.dumps(args))
    with pytest.raises(ValueError, match="shape mismatches"):
        tl.embed(adata, model=str(tmp_path / "b"), device="cpu")
    official.write_checkpoint(tmp_path / "c")
    state = torch.load(tmp_path / "c" / "best_model.pt", weights_only=True)
    del state["value_encoder.linear1.weight"]
    torch.save(state, tmp_path / "c" / "best_model.pt")
    with pytest.raises(ValueError, match=r"missing weights \['value_encoder.linear1.weight'\]"):
        tl.embed(adata, model=str(tmp_path / "c"), device="cpu")
    assert "X_scgpt" not in adata.obsm and "scgpt" not in adata.uns


def _edit_args(path, **changes):
    args = json.loads((path / "args.json").read_text())
    args.update(changes)
    (path / "args.json").write_text(json.dumps(args))


@pytest.mark.parametrize(
    ("text", "changes", "match"),
    [
        ('{\n  "embsize": 32,\n  oops\n}', {}, r"is not valid JSON \(line 3\): Expecting"),
        ("[1, 2]", {}, r"must hold one JSON object of settings .*not a list"),
        (None, {"embsize": "sixteen"}, r": 'embsize' must be an integer >= 1, got 'sixteen'"),
        (None, {"nlayers": None}, r": 'nlayers' must be an integer >= 1, got None"),
        (None, {"nlayers": 1.5}, r": 'nlayers' must be an integer >= 1, got 1.5"),
        (None, {"dropout": "high"}, r": 'dropout' must be a number, got 'high'"),
        (None, {"pre_norm": "false"}, r": 'pre_norm' must be true or false, got 'false'"),
        (None, {"pre_norm": 1}, r": 'pre_norm' must be true or false, got 1"),
        (None, {"n_bins": 1}, r": 'n_bins' must be an integer >= 2, got 1"),
        (None, {"nheads": None, "nhead": None}, r"'nheads' must be an integer >= 1, got None"),
    ],
)
def test_bad_args_json_names_the_file_and_key(tmp_path, official, text, changes, match):
    official.write_checkpoint(tmp_path)
    if text is not None:
        (tmp_path / "args.json").write_text(text)
    if changes:
        _edit_args(tmp_path, **changes)
    with pytest.raises(ValueError, match=rf"^args\.json of {re.escape(str(tmp_path))}.*{match}"):
        load_official(tmp_path)


def test_category_weights_need_n_bins_in_args(tmp_path, official):
    official.write_checkpoint(tmp_path)
    args = json.loads((tmp_path / "args.json").read_text())
    del args["n_bins"]
    (tmp_path / "args.json").write_text(json.dumps(args))
    state = torch.load(tmp_path / "best_model.pt", weights_only=True)
    state["value_encoder.embedding.weight"] = torch.randn(53, 32)
    torch.save(state, tmp_path / "best_model.pt")
    with pytest.raises(ValueError, match=r"args\.json of .* has no 'n_bins'.*\"n_bins\": 51"):
        load_official(tmp_path)


def test_args_without_nheads_is_an_error_not_eight_heads(tmp_path, official):
    # the head count cannot be read from the weights (in_proj has one shape for any count);
    # the official embed_data reads args["nheads"] (a KeyError without it)
    official.write_checkpoint(tmp_path)  # 4 heads
    args = json.loads((tmp_path / "args.json").read_text())
    del args["nheads"]
    (tmp_path / "args.json").write_text(json.dumps(args))
    with pytest.raises(ValueError, match=r"has no 'nheads'.*\"nheads\": 8"):
        load_official(tmp_path)


def test_category_style_pad_value_and_bins_checked(tmp_path, official):
    official.write_checkpoint(tmp_path)
    state = torch.load(tmp_path / "best_model.pt", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("value_encoder.")}
    state["value_encoder.embedding.weight"] = torch.randn(53, 32)  # 51 bins + pad + mask
    state["value_encoder.enc_norm.weight"] = torch.ones(32)
    state["value_encoder.enc_norm.bias"] = torch.zeros(32)
    torch.save(state, tmp_path / "best_model.pt")
    args = json.loads((tmp_path / "args.json").read_text())
    del args["pad_value"], args["mask_value"]
    (tmp_path / "args.json").write_text(json.dumps(args))
    module, _, _ = load_official(tmp_path)
    # the official tutorials' category style: pad with bin n_bins, mask with n_bins + 1
    assert module.config.pad_value == 51 and module.config.mask_value == 52
    _edit_args(tmp_path, pad_value=-2)
    with pytest.raises(ValueError, match=r"pad_value=-2 is no bin .* \(0 to 52\)"):
        load_official(tmp_path)
    _edit_args(tmp_path, pad_value=51, n_bins=30)
    with pytest.raises(ValueError, match=r"n_bins=30, but .* has 53 rows .* \"n_bins\": 51"):
        load_official(tmp_path)


def test_both_names_of_one_attention_weight_are_an_error(tmp_path, official):
    official.write_checkpoint(tmp_path)  # Wqkv names
    state = torch.load(tmp_path / "best_model.pt", weights_only=True)
    key = "transformer_encoder.layers.0.self_attn.Wqkv.weight"
    state[key.replace("Wqkv.", "in_proj_")] = torch.zeros_like(state[key])
    torch.save(state, tmp_path / "best_model.pt")
    with pytest.raises(ValueError, match=r"holds both .*Wqkv.weight.* and .*in_proj_weight"):
        load_official(tmp_path)


def test_official_folder_embeds_with_51_bins_whatever_args_says(
    official_ckpt, official, continuous_adata_factory, tmp_path, monkeypatch
):
    # embed_data's DataCollator bins with n_bins=51; args.json's n_bins is not read there
    import shutil

    path, ref, vocab = official_ckpt
    other = tmp_path / "ck"
    shutil.copytree(path, other)
    _edit_args(other, n_bins=101)
    adata = continuous_adata_factory(40)
    X = adata.X.toarray()[:, :50]
    np.random.seed(0)
    expected = official.embed(ref, X, np.arange(50), vocab, max_len=60, pad_to_max=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # and "~" is the home folder
    tl.embed(adata, model="~/ck", batch_size=7, max_len=60, device="cpu", progress=False)
    np.testing.assert_allclose(adata.obsm["X_scgpt"], expected, atol=2e-5)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"garbage", r"could not be read as PyTorch weights: it is not a file written by torch"),
        (b"", r"could not be read as PyTorch weights: the file is empty or cut short"),
        ("cut", r"could not be read as PyTorch weights: PytorchStreamReader failed"),
        ([1, 2, 3], r"holds a list, not the model's weights"),
        ({}, r"holds an empty dict, not the model's weights"),
        ({"model": "state", "epoch": 3}, r"holds a dict whose entries \['epoch', 'model'\] are"),
    ],
)
def test_unreadable_best_model_pt_is_named(tmp_path, official, content, match):
    official.write_checkpoint(tmp_path)
    file = tmp_path / "best_model.pt"
    if content == "cut":
        file.write_bytes(file.read_bytes()[:1000])
    elif isinstance(content, bytes):
        file.write_bytes(content)
    else:
        torch.save(content, file)
    with pytest.raises(
        ValueError, match=rf"^best_model\.pt of {re.escape(str(tmp_path))} {match}"
    ) as err:
        load_official(tmp_path)
    shown = "".join(traceback.format_exception(err.value))  # with chained errors, as printed
    assert "weights_only" not in shown  # torch's advice to load with weights_only=False


def test_best_model_pt_holding_a_wrapped_state_dict_loads(tmp_path, official):
    ref, _ = official.write_checkpoint(tmp_path)
    state = torch.load(tmp_path / "best_model.pt", weights_only=True)
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "best_model.pt")
    module, _, _ = load_official(tmp_path)
    torch.testing.assert_close(module.encoder.embedding.weight, ref.encoder.embedding.weight)
    torch.save({"state_dict": state, "model_state_dict": state}, tmp_path / "best_model.pt")
    with pytest.raises(ValueError, match=r"entries \['model_state_dict', 'state_dict'\] are not"):
        load_official(tmp_path)


def test_a_file_of_the_checkpoint_is_not_its_folder(tmp_path, official, continuous_adata_factory):
    official.write_checkpoint(tmp_path)
    file = tmp_path / "args.json"
    with pytest.raises(FileNotFoundError, match=rf"^{re.escape(str(file))} is a file; pass the"):
        load_official(file)
    with pytest.raises(
        FileNotFoundError, match=r"args\.json' is a file; pass the checkpoint folder"
    ):
        tl.embed(continuous_adata_factory(5), model=str(file), device="cpu")


@pytest.mark.parametrize(
    ("nlayers", "match"),
    [
        (1, r"args\.json has nlayers=1 but best_model\.pt holds 2 transformer layers \(set "
         r"\"nlayers\": 2\).*no place for \['transformer_encoder\.layers\.1\."),
        (0, r"'nlayers' must be an integer >= 1, got 0"),
        (3, r"args\.json has nlayers=3 but best_model\.pt holds 2 transformer layers.*missing"),
    ],
)  # fmt: skip
def test_args_nlayers_other_than_the_weights_layers(tmp_path, official, nlayers, match):
    official.write_checkpoint(tmp_path, nlayers=2)
    _edit_args(tmp_path, nlayers=nlayers)
    for task in ("embed", "pretrain"):
        with pytest.raises(ValueError, match=match):
            load_official(tmp_path, task=task)


def test_unused_weights_of_needed_parts_are_an_error_optional_extras_skipped(tmp_path, official):
    official.write_checkpoint(tmp_path)
    state = torch.load(tmp_path / "best_model.pt", weights_only=True)
    state["decoder.fc.9.weight"] = torch.randn(3, 3)  # not needed to embed: skipped
    torch.save(state, tmp_path / "best_model.pt")
    report = load_official(tmp_path, task="embed")[2]
    assert "decoder.fc.9.weight" in report["skipped"]
    assert "grad_reverse_discriminator._decoder.0.weight" in report["skipped"]
    with pytest.raises(ValueError, match=r"no place for \['decoder\.fc\.9\.weight'\]"):
        load_official(tmp_path, task="pretrain")
    state["value_encoder.extra.weight"] = torch.randn(3, 3)
    torch.save(state, tmp_path / "best_model.pt")
    with pytest.raises(ValueError, match=r"no place for \['value_encoder\.extra\.weight'\]"):
        load_official(tmp_path, task="embed")
