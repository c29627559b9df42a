"""What only a GPU shows: the caller's model stays where the caller keeps it.

Skipped without CUDA (as on CI); on a GPU machine ``pytest tests/scgpt/test_devices.py``.
"""

from __future__ import annotations

import copy

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from omicformer.scgpt import tl
from omicformer.scgpt.model import ScGPT

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _cells(n: int, seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    X = rng.poisson(1.0, size=(n, 40)).astype(np.float32)
    X[X.sum(1) == 0, 0] = 1
    return ad.AnnData(sp.csr_matrix(X), obs=pd.DataFrame(index=[f"c{i}" for i in range(n)]),
                      var=pd.DataFrame(index=[f"G{i}" for i in range(40)]))  # fmt: skip


@pytest.fixture
def model() -> ScGPT:
    a = _cells(4, seed=9)
    ScGPT.setup_anndata(a)
    return ScGPT(a, d_model=32, n_layers=1, n_heads=2, dropout=0.0, random_state=0)


def _where(m: ScGPT) -> set[str]:
    return {p.device.type for p in m.module.parameters()}


def test_embedding_on_the_gpu_leaves_the_model_on_the_cpu(model):
    adata = _cells(20)
    model.module.train()
    tl.embed(adata, model, device="cuda", progress=False)
    assert _where(model) == {"cpu"} and model.module.training
    z = model.get_latent_representation(adata, device="cuda", progress=False)
    assert _where(model) == {"cpu"}
    cpu = model.get_latent_representation(adata, device="cpu", progress=False)
    cos = np.sum(z * cpu, 1) / (np.linalg.norm(z, axis=1) * np.linalg.norm(cpu, axis=1))
    assert cos.min() > 0.99  # fp16 autocast on the GPU against float32 on the CPU


def test_embedding_on_the_gpu_leaves_a_gpu_model_on_the_gpu(model):
    model.module.cuda()
    tl.embed(_cells(8), model, device="cpu", progress=False)
    assert _where(model) == {"cuda"}


def test_fold_standardisation_with_the_head_on_the_gpu_and_statistics_on_the_cpu(model):
    from omicformer.scgpt.module import ClsDecoder
    from omicformer.scgpt.train import ClassifierTrainingPlan

    module = copy.deepcopy(model.module)
    module.cls_decoder = ClsDecoder(32, 3, nlayers=3)
    mean, var = torch.full((32,), 4.0), torch.full((32,), 2.0)
    plan = ClassifierTrainingPlan(module, input_stats=(mean, var))
    emb = 5.0 + 0.1 * torch.randn(16, 32)
    with torch.no_grad():
        expected = copy.deepcopy(module.cls_decoder).eval()(
            (emb - mean) / torch.sqrt(var.mean() + 1e-5)
        )
    module.cls_decoder.cuda()  # as after a fit that stopped before the trainer moved it back
    plan.fold_standardisation()
    with torch.no_grad():
        got = module.cls_decoder.eval()(emb.cuda()).cpu()
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
