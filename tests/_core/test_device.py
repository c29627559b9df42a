"""Device choice and inference precision."""

from __future__ import annotations

import contextlib

import pytest
import torch

from omicformer._core._device import inference_autocast, resolve_device


def test_inference_on_cuda_is_fp16_autocast_as_the_official_embed_data(monkeypatch):
    # official embed_data: torch.cuda.amp.autocast(enabled=True), whose dtype is float16 (also
    # on GPUs with bf16)
    seen = []

    @contextlib.contextmanager
    def recording(device_type, dtype=None, **kwargs):
        seen.append((device_type, dtype))
        yield

    monkeypatch.setattr(torch, "autocast", recording)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    with inference_autocast(torch.device("cuda", 0)):
        pass
    with inference_autocast(torch.device("cpu")):
        pass
    with inference_autocast(torch.device("cuda", 0), enabled=False):
        pass
    assert seen == [("cuda", torch.float16)]


def test_resolve_device_on_this_machine():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_resolve_device_refuses_mps_where_it_is_missing(monkeypatch):
    # was torch's "PyTorch is not linked with support for mps" at the first tensor moved
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match="Apple MPS is not available; use device='cpu'"):
        resolve_device("mps")
