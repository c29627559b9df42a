"""k-mer-count logistic regression baseline and classification metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from numpy.typing import ArrayLike
    from scipy.sparse import csr_matrix

from .._kmers import check_strings
from ._common import (
    _CODE,
)


def _kmer_matrix(sequences: Sequence[str], k: int) -> csr_matrix:
    """Sparse (n, 4**k) matrix of k-mer frequencies (ACGT order; k-mers with N skipped)."""
    from scipy.sparse import csr_matrix

    powers = 4 ** np.arange(k - 1, -1, -1)
    indptr, indices, data = [0], [], []
    for seq in sequences:
        codes = _CODE[np.frombuffer(str(seq).encode("ascii"), dtype=np.uint8)]
        if len(codes) >= k:
            win = np.lib.stride_tricks.sliding_window_view(codes, k)
            idx = (win[(win >= 0).all(axis=1)] * powers).sum(axis=1)
            uniq, counts = np.unique(idx, return_counts=True)
            indices.append(uniq)
            data.append(counts / max(counts.sum(), 1))
            indptr.append(indptr[-1] + len(uniq))
        else:
            indptr.append(indptr[-1])
    data = np.concatenate(data) if data else np.zeros(0)
    indices = np.concatenate(indices) if indices else np.zeros(0, dtype=np.int64)
    return csr_matrix((data, indices, indptr), shape=(len(sequences), 4**k))


def _sequences(frame: pd.DataFrame, name: str) -> list[str]:
    """The ``sequence`` column of ``frame`` as strings; NaN/None is refused by its index."""
    sequences = frame["sequence"].tolist()
    check_strings(sequences, list(frame.index), what=f"{name}['sequence'] at index")
    return sequences


def _require_sklearn() -> None:
    try:
        import sklearn  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the environment
        msg = "The k-mer baseline and metrics need scikit-learn: pip install scikit-learn"
        raise ImportError(msg) from err


def _choose_c(x, y, groups, max_iter: int) -> float:
    """C in ``10**-5 .. 10**0`` with the best 3-fold log-loss (folds grouped when possible)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.model_selection import GroupKFold, StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    if groups is not None and pd.Series(groups).nunique() >= 3:
        folds = GroupKFold(3).split(x, y, groups=groups)
    else:
        folds = StratifiedKFold(3, shuffle=True, random_state=0).split(x, y)
    grid = np.logspace(-5, 0, 6)
    loss = np.zeros(len(grid))
    for train, held in folds:
        scaler = StandardScaler(with_mean=False).fit(x[train])
        xt, xh = scaler.transform(x[train]), scaler.transform(x[held])
        model = LogisticRegression(max_iter=max_iter, warm_start=True)
        for i, c in enumerate(grid):  # increasing C: each fit starts from the previous one
            model.set_params(C=c).fit(xt, y[train])
            loss[i] += log_loss(y[held], model.predict_proba(xh), labels=model.classes_)
    return float(grid[int(np.argmin(loss))])


def kmer_baseline(
    train_df: pd.DataFrame,
    test_df: pd.DataFrame,
    k: int = 6,
    *,
    C: float | None = None,
    max_iter: int = 2000,
) -> np.ndarray:
    """k-mer-count logistic regression: the classic baseline for DNA sequence classifiers.

    Each sequence becomes its normalised k-mer frequency vector (``4**k`` features, k-mers with
    ``N`` skipped); features are scaled to unit variance on the training set and fed to an
    L2-regularised :class:`sklearn.linear_model.LogisticRegression`. Only ``train_df`` is used
    for fitting and for choosing ``C``.

    Parameters
    ----------
    train_df, test_df
        Frames with ``sequence`` and (for ``train_df``) integer ``label`` columns, e.g. two
        splits of :func:`promoter_task`. A sequence that is not a string (NaN, None) is a
        ``ValueError`` naming its index.
    k
        k-mer length (1-8).
    C
        Inverse regularisation strength. ``None`` (default) picks it from
        ``10**-5 ... 10**0`` by 3-fold cross-validated log-loss on ``train_df``, with folds
        grouped by its ``group`` column when present (so related windows share a fold).
    max_iter
        Solver iterations.

    Returns
    -------
    For two classes, the probability of the larger label (shape ``(n_test,)``); otherwise a
    ``(n_test, n_classes)`` matrix with columns in sorted label order.

    Examples
    --------
    >>> from omicformer.dnabert.tasks import promoter_task, kmer_baseline, classification_metrics
    >>> df = promoter_task()
    >>> prob = kmer_baseline(df[df.split == "train"], df[df.split == "test"], k=6)
    >>> classification_metrics(df[df.split == "test"].label, prob)["mcc"] > 0.4
    True
    """
    _require_sklearn()
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if not 1 <= k <= 8:
        msg = f"k must be between 1 and 8 for the k-mer baseline, got {k}."
        raise ValueError(msg)
    y = np.asarray(train_df["label"])
    if len(np.unique(y)) < 2:
        msg = f"train_df needs at least two classes in 'label', got {np.unique(y).tolist()}."
        raise ValueError(msg)
    train, test = _sequences(train_df, "train_df"), _sequences(test_df, "test_df")
    x = _kmer_matrix(train, k)
    groups = train_df["group"] if "group" in train_df else None
    C = _choose_c(x, y, groups, max_iter) if C is None else C
    clf = make_pipeline(StandardScaler(with_mean=False), LogisticRegression(C=C, max_iter=max_iter))
    clf.fit(x, y)
    prob = clf.predict_proba(_kmer_matrix(test, k))
    return prob[:, 1] if prob.shape[1] == 2 else prob


def classification_metrics(
    y_true: ArrayLike, prob: ArrayLike, *, threshold: float = 0.5
) -> dict[str, float]:
    """MCC, F1, AUROC and accuracy, the metrics DNABERT reports.

    Parameters
    ----------
    y_true
        True labels: ``0``/``1`` (or booleans), class indices ``0..n_classes-1``, or any two
        (or ``n_classes``) labels, e.g. strings, taken in sorted order as
        :func:`kmer_baseline` does.
    prob
        Binary: probability of the positive class (``1``, else the larger of the two labels),
        shape ``(n,)`` (or ``(n, 2)``).
        Multi-class: ``(n, n_classes)`` probabilities, columns in sorted label order; then
        predictions are the arg-max, F1 is macro-averaged and AUROC is one-vs-rest macro.
    threshold
        Decision threshold for the binary case.

    Returns
    -------
    Dict with ``mcc``, ``f1``, ``auroc``, ``accuracy`` and ``n``.

    Examples
    --------
    >>> classification_metrics([0, 1, 1, 0], [0.2, 0.9, 0.6, 0.4])["auroc"]
    1.0
    """
    _require_sklearn()
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef, roc_auc_score

    y = np.asarray(y_true)
    p = np.asarray(prob, dtype=float)
    if p.ndim == 2 and p.shape[1] == 2:
        p = p[:, 1]
    if len(p) != len(y):
        msg = f"prob has {len(p)} rows but y_true has {len(y)} labels."
        raise ValueError(msg)
    classes = np.unique(y)
    n_classes = 2 if p.ndim == 1 else p.shape[1]
    indices = classes.dtype.kind in "biu" and set(classes.tolist()) <= set(range(n_classes))
    if indices:  # labels are the column indices (0/1 for a binary prob)
        classes = np.arange(n_classes)
    elif len(classes) != n_classes:
        msg = (
            f"y_true holds the labels {classes.tolist()[:10]}, which are neither class indices "
            f"0..{n_classes - 1} nor {n_classes} labels to match the {n_classes} classes of prob."
        )
        raise ValueError(msg)
    if p.ndim == 1:
        pred = classes[(p >= threshold).astype(int)]
        f1 = f1_score(y, pred, pos_label=classes[1])
        auroc = roc_auc_score(y, p) if len(np.unique(y)) == 2 else float("nan")
    else:
        pred = classes[p.argmax(axis=1)]
        f1 = f1_score(y, pred, average="macro")
        auroc = (
            roc_auc_score(y, p, multi_class="ovr", labels=classes)
            if len(np.unique(y)) == p.shape[1]
            else float("nan")
        )
    return {
        "mcc": float(matthews_corrcoef(y, pred)),
        "f1": float(f1),
        "auroc": float(auroc),
        "accuracy": float(accuracy_score(y, pred)),
        "n": len(y),
    }
