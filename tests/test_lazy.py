"""The import guard (``omicformer._lazy``): global random states kept, loaders otherwise as theirs."""

from __future__ import annotations

import copy
import importlib.machinery
import importlib.util
import pickle
import random
import sys

import numpy as np

from omicformer import _lazy


class _Drawing(importlib.machinery.SourceFileLoader):
    """A loader whose modules draw from the global generators, as jax's and Lightning's do."""

    def exec_module(self, module):
        random.random()
        np.random.rand()


def test_guarded_module_leaves_the_states_and_its_loader_copies(tmp_path):
    source = tmp_path / "drawing_mod.py"
    source.write_text("VALUE = 1\n")
    loader = _lazy._KeptStateLoader(_Drawing("drawing_mod", str(source)))
    random.seed(3)
    np.random.seed(3)
    expected = (random.random(), np.random.rand())
    random.seed(3)
    np.random.seed(3)
    spec = importlib.machinery.ModuleSpec("drawing_mod", loader, origin=str(source))
    loader.exec_module(importlib.util.module_from_spec(spec))
    assert (random.random(), np.random.rand()) == expected
    # delegated: the wrapped loader's own methods; copies and pickles (no endless __getattr__)
    assert loader.get_filename("drawing_mod") == str(source)
    for clone in (copy.copy(loader), copy.deepcopy(loader), pickle.loads(pickle.dumps(loader))):
        assert clone.get_filename("drawing_mod") == str(source)


def test_the_finder_wraps_only_the_listed_packages():
    finder = next(f for f in sys.meta_path if isinstance(f, _lazy._KeptStateFinder))
    assert finder.find_spec("json", None) is None  # others: the next finders, untouched
    spec = finder.find_spec("lightning", None)
    assert isinstance(spec.loader, _lazy._KeptStateLoader)


def test_a_guarded_import_keeps_the_cudnn_benchmark_flag(tmp_path):
    # scvi-tools' modules set torch.backends.cudnn.benchmark = True on import
    import torch

    class Setting(importlib.machinery.SourceFileLoader):
        def exec_module(self, module):
            torch.backends.cudnn.benchmark = True

    source = tmp_path / "setting_mod.py"
    source.write_text("")
    loader = _lazy._KeptStateLoader(Setting("setting_mod", str(source)))
    spec = importlib.machinery.ModuleSpec("setting_mod", loader, origin=str(source))
    before = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        loader.exec_module(importlib.util.module_from_spec(spec))
        assert torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cudnn.benchmark = before
