"""``one_blas_thread``: one BLAS thread inside the block, the previous count after it."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from omicformer._core._blas import one_blas_thread


def _blas_threads() -> list[int]:
    np.ones((2, 2)) @ np.ones((2, 2))  # NumPy's BLAS is loaded
    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


def test_one_blas_thread_inside_and_restored_after() -> None:
    before = _blas_threads()
    if not before:
        pytest.skip("no BLAS library that threadpoolctl can see")
    with one_blas_thread():
        assert _blas_threads() == [1] * len(before)
    assert _blas_threads() == before


def test_one_blas_thread_leaves_openmp_alone() -> None:
    openmp = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "openmp"]
    with one_blas_thread():
        inside = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "openmp"]
    assert inside == openmp
