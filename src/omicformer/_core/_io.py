"""Model folders: safetensors weights + JSON config, shared by every omicformer model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "omicformer_config.json"


def save_model_dir(
    path: str | Path,
    state_dict: dict[str, torch.Tensor],
    config: dict[str, Any],
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``state_dict`` as safetensors and ``config`` as JSON into folder ``path``."""
    from safetensors.torch import save_file

    path = Path(path)
    if (path / WEIGHTS_NAME).exists() and not overwrite:
        msg = f"{path} already holds a saved model; pass overwrite=True to replace it."
        raise FileExistsError(msg)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    save_file(tensors, str(path / WEIGHTS_NAME))
    (path / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True))
    return path


def load_model_dir(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a folder written by :func:`save_model_dir`."""
    from safetensors.torch import load_file

    config = load_model_config(path)
    return load_file(str(Path(path) / WEIGHTS_NAME)), config


def load_model_config(path: str | Path) -> dict[str, Any]:
    """The JSON config of a folder written by :func:`save_model_dir` (weights not read)."""
    path = Path(path)
    missing = [n for n in (WEIGHTS_NAME, CONFIG_NAME) if not (path / n).exists()]
    if missing:
        msg = f"{path} is not an omicformer model folder: missing {missing}."
        raise FileNotFoundError(msg)
    return json.loads((path / CONFIG_NAME).read_text())


def is_model_dir(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by :func:`save_model_dir`."""
    path = Path(path)
    return (path / WEIGHTS_NAME).exists() and (path / CONFIG_NAME).exists()
