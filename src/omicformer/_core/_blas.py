"""One BLAS thread for small dense problems on the CPU.

NumPy and SciPy multiply matrices with a BLAS library (OpenBLAS in their wheels) that starts
one thread per core. For small products the threads cost more than they save: a class-weighted
``LogisticRegression`` (lbfgs) on 1,600 cells x 128 features and 8 classes, the size of
the annotation probe's cross-validation fits, took 2.4 s with two OpenBLAS threads and 0.17 s
with one, in the same 252 iterations (x86_64, 2 cores, scikit-learn 1.9.1; ``threadpoolctl``
limit on the ``"blas"`` API only). ``scgpt.tl.annotate`` with a reference of 2,638 PBMC 3k
cells went from 337 s to 224 s, the same labels (confidences within 0.0012: with more cells
the two thread counts round differently in the last bits, which lbfgs carries on); with a
reference of 490 cells the time hardly changed (169 and 168 s, the same output); from 10,552
reference cells (PBMC 3k four times, one classifier) 207 s -> 150 s, with 2,594 -> 2,592 of
the 2,638 query cells right.
:func:`one_blas_thread` is for such work whose size is bounded; work that grows with the
data keeps every thread.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any


def one_blas_thread() -> AbstractContextManager[Any]:
    """A context manager that runs its block with one BLAS thread (``threadpoolctl``).

    Only the BLAS libraries are limited (OpenMP pools and torch's threads are not). Results
    can differ from those with more threads in the last bits (module docstring), and no
    longer depend on the machine's BLAS thread count.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")
