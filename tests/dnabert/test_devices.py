"""What only a GPU shows: the caller's DNABERT model stays where the caller keeps it.

Skipped without CUDA (as on CI); on a GPU machine ``pytest tests/dnabert/test_devices.py``.
"""

from __future__ import annotations

import pytest
import torch

from omicformer.dnabert.model import DNABert

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_embedding_on_the_gpu_leaves_the_model_on_the_cpu(tiny, make_seqs):
    model = DNABert(k=3, **tiny)
    model.module.train()
    seqs = make_seqs(6, 50)
    z = model.embed(seqs, device="cuda", progress=False)
    assert {p.device.type for p in model.module.parameters()} == {"cpu"}
    assert model.module.training
    cpu = model.embed(seqs, device="cpu", progress=False)
    cos = (z * cpu).sum(1) / ((z**2).sum(1) * (cpu**2).sum(1)) ** 0.5
    assert cos.min() > 0.99  # fp16 autocast on the GPU against float32 on the CPU
