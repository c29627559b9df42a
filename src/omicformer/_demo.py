"""``omicformer demo``: the README quickstart on bundled data."""

from __future__ import annotations

from pathlib import Path


def knn_accuracy(X, labels, k: int = 15, random_state: int = 0) -> float:
    """5-fold cross-validated ``k``-nearest-neighbour label accuracy of an embedding.

    Folds are stratified by label and shuffled with ``random_state``; scikit-learn's
    :class:`~sklearn.neighbors.KNeighborsClassifier` (Euclidean, uniform weights).
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=random_state)
    return float(cross_val_score(KNeighborsClassifier(k), X, labels, cv=cv).mean())


def run_demo(out: str | Path, device: str = "auto") -> dict[str, float]:
    """Embed ``pbmc68k_reduced`` with the default scGPT, write the h5ad, a UMAP PNG and scores."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scanpy as sc

    from . import datasets, scgpt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    adata = datasets.pbmc68k_reduced()
    scgpt.tl.embed(adata, model="default", device=device)
    sc.pp.neighbors(adata, use_rep="X_scgpt")
    sc.tl.umap(adata, random_state=0)
    fig = sc.pl.umap(adata, color="bulk_labels", title="scGPT (default) — pbmc68k_reduced",
                     show=False, return_fig=True)  # fmt: skip
    fig.savefig(out / "scgpt_umap.png", dpi=120, bbox_inches="tight")
    plt.close(fig)

    pca = adata.copy()
    sc.pp.pca(pca, n_comps=50, random_state=0)
    labels = adata.obs["bulk_labels"].astype(str).to_numpy()
    scores = {
        "knn_accuracy_scgpt": knn_accuracy(adata.obsm["X_scgpt"], labels),
        "knn_accuracy_pca": knn_accuracy(pca.obsm["X_pca"], labels),
    }
    adata.write_h5ad(out / "pbmc68k_scgpt.h5ad")
    (out / "scores.json").write_text(json.dumps(scores, indent=2))
    print(f"omicformer demo: wrote {out}/scgpt_umap.png, pbmc68k_scgpt.h5ad, scores.json")
    print("pbmc68k_reduced bulk_labels, 5-fold cross-validated 15-nearest-neighbour accuracy:")
    for k, v in scores.items():
        print(f"  {k}: {v:.3f}")
    ratio = scores["knn_accuracy_scgpt"] / scores["knn_accuracy_pca"]
    verdict = "above" if ratio > 1 else "not above"
    print(f"  default scGPT / PCA-50: {ratio:.3f} ({verdict} PCA on this data)")
    return scores
