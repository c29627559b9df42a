"""Dense matrices in ``pp.concat_h5ad``: copied in blocks within ``max_loaded_elems``."""

import tracemalloc
import warnings

import anndata as ad
import numpy as np
import pandas as pd

from omicformer.scgpt import pp


def test_outer_join_blocks_count_the_output_genes(tmp_path):
    # 2,000 cells of 20 genes joined with cells of 2,000 genes: blocks sized by the input's 20
    # genes were widened to 2,000 (1,000 rows x 2,000 genes = 8 MB against a limit of 80 kB)
    narrow = ad.AnnData(
        np.ones((2000, 20), np.float32), var=pd.DataFrame(index=[f"G{i}" for i in range(20)])
    )
    wide = ad.AnnData(
        np.full((10, 2000), 2, np.float32),
        var=pd.DataFrame(index=[f"G{i}" for i in range(2000)]),
    )
    wide.obs_names = [f"w{i}" for i in range(10)]
    narrow.write_h5ad(tmp_path / "narrow.h5ad")
    wide.write_h5ad(tmp_path / "wide.h5ad")
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the files' genes differ: said, not tested here
            pp.concat_h5ad([tmp_path / "narrow.h5ad", tmp_path / "wide.h5ad"],
                           tmp_path / "out.h5ad", join="outer", max_loaded_elems=20_000)  # fmt: skip
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4_000_000, peak  # 17 MB before (the widened blocks alone 8 MB); 1.8 MB
    out = ad.read_h5ad(tmp_path / "out.h5ad")
    assert out.shape == (2010, 2000)
    shared = out.var_names.isin(narrow.var_names)
    assert shared.sum() == 20
    assert out.X[:2000, shared].min() == 1 and out.X[:2000, ~shared].max() == 0  # zeros: absent
    assert out.X[2000:].min() == 2
