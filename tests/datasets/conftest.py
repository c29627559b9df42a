"""Dataset test fixtures."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest


@pytest.fixture(scope="session")
def lognorm() -> Callable[[np.ndarray], np.ndarray]:
    """scanpy's ``normalize_total(target_sum=1e4)`` + ``log1p``, written out."""

    def _lognorm(counts: np.ndarray) -> np.ndarray:
        counts = np.asarray(counts, dtype=np.float64)
        return np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e4)

    return _lognorm
