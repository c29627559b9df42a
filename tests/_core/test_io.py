"""Model folders (safetensors + JSON): damaged files are named, not raised from a parser."""

from __future__ import annotations

import pytest
import torch

from omicformer._core._io import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    load_model_config,
    load_model_dir,
    save_model_dir,
)


@pytest.fixture
def folder(tmp_path):
    """A tiny model folder: one 2x3 weight and a config."""
    return save_model_dir(tmp_path / "m", {"w": torch.ones(2, 3)}, {"model": "Tiny", "k": 3})


def test_a_sound_folder_loads(folder):
    state, config = load_model_dir(folder)
    assert torch.equal(state["w"], torch.ones(2, 3))
    assert config["model"] == "Tiny" and config["k"] == 3


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"model": "Tiny", oops}', r"is not valid JSON"),
        ("", r"is not valid JSON"),
        ("[1, 2]", r"must hold one JSON object .*not a list"),
        ('"Tiny"', r"must hold one JSON object .*not a str"),
    ],
)
def test_a_damaged_config_names_the_file(folder, text, match):
    (folder / CONFIG_NAME).write_text(text)
    for load in (load_model_config, load_model_dir):
        with pytest.raises(ValueError, match=rf"{CONFIG_NAME}.*{match}"):
            load(folder)


@pytest.mark.parametrize("content", [b"", b"garbage", b"\x10\x00\x00\x00\x00\x00\x00\x00{"])
def test_damaged_weights_name_the_file(folder, content):
    (folder / WEIGHTS_NAME).write_bytes(content)
    with pytest.raises(ValueError, match=rf"{WEIGHTS_NAME} could not be read as safetensors"):
        load_model_dir(folder)
