"""Deprecated names: renamed keywords (``_core._deprecation``) and the moved sampler."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from omicformer._core._deprecation import renamed_kwargs
from omicformer.dnabert.model import DNABert
from omicformer.scgpt.model import ScGPT


def test_renamed_kwargs():
    @renamed_kwargs(old="new", frac=("rest", lambda v: 1 - v), opts="**")
    def f(new=0, rest=0.0, **kw):
        return new, rest, kw

    with pytest.warns(FutureWarning, match="'old' is deprecated.*'new'"):
        assert f(old=3) == (3, 0.0, {})
    with pytest.warns(FutureWarning, match="'frac'"):
        assert f(frac=0.25) == (0, 0.75, {})
    with pytest.warns(FutureWarning, match="'frac'"):  # scvi-tools' None: the default
        assert f(frac=None) == (0, 0.0, {})  # was TypeError: 1 - None
    with pytest.warns(FutureWarning, match="opts"):
        assert f(opts={"a": 1}) == (0, 0.0, {"a": 1})
    with pytest.raises(TypeError, match="both"):
        f(old=1, new=2)
    with pytest.warns(FutureWarning, match="'hidden_size' is deprecated.*'d_model'"):
        model = DNABert(k=3, n_layers=1, hidden_size=16, n_heads=2, max_length=40)
    assert model.config.hidden_size == 16 and model.max_len == 40
    with pytest.warns(FutureWarning, match="max_length"):
        assert model.max_length == 40


def test_renamed_kwargs_names_the_callers_class():
    """A deprecated keyword of an inherited method is named as called (ScGPT.train, not the mixin)."""

    class Mixin:
        @renamed_kwargs(old="new")
        def fit(self, new=0):
            return new

    class Model(Mixin):
        pass

    with pytest.warns(FutureWarning, match=r"^Model\.fit: 'old' is deprecated"):
        assert Model().fit(old=2) == 2
    with pytest.raises(TypeError, match=r"^Model\.fit\(\) got both"):
        Model().fit(old=1, new=2)
    adata = ad.AnnData(sp.csr_matrix(np.ones((4, 5), np.float32)),
                       var=pd.DataFrame(index=[f"G{i}" for i in range(5)]))  # fmt: skip
    ScGPT.setup_anndata(adata)
    model = ScGPT(adata, d_model=8, n_layers=1, n_heads=2)
    with pytest.raises(TypeError, match=r"^ScGPT\.train\(\) got both 'train_size'"):
        model.train(train_size=0.9, validation_size=0.1)


def test_grouped_batch_sampler_warning_names_an_importable_replacement():
    """The deprecation warning names where EpochBatchSampler lives (not scgpt.train)."""
    import importlib
    import re

    from omicformer.scgpt.train import GroupedBatchSampler

    groups = np.array([0, 0, 1, 1])
    with pytest.warns(FutureWarning, match="GroupedBatchSampler") as record:
        old = GroupedBatchSampler(groups, batch_size=2, seed=3)
    path = re.search(r"use '([\w.]+)", str(record[0].message)).group(1)
    module, name = path.rsplit(".", 1)
    new_cls = getattr(importlib.import_module(module), name)
    new = new_cls(len(groups), 2, groups=groups, seed=3)
    assert list(new) == list(old)
