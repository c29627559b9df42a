"""Training of scGPT: Lightning plans, datasets and collates (pretraining, classification, integration, perturbation).

The loop itself is the shared runner, :func:`omicformer._core._train.run_training`.
"""

from ..._core._callbacks import HistoryCallback  # noqa: F401  (its home before the shared runner)
from ._classify import ClassificationCollator, ClassifierTrainingPlan, LabelledCellDataset
from ._data import CellCollator, CellDataset, GenerativeCollator, GroupedBatchSampler
from ._init import init_gene_embeddings_pca, pca_gene_loadings
from ._integrate import IntegrationTrainingPlan, MaskedValueCollator
from ._perturb import (
    CovariancePrior,
    PerturbationCollator,
    PerturbationDataset,
    PerturbationTrainingPlan,
)
from ._plan import GenerativeTrainingPlan

__all__ = [
    "CellCollator",
    "CellDataset",
    "ClassificationCollator",
    "ClassifierTrainingPlan",
    "CovariancePrior",
    "GenerativeCollator",
    "GenerativeTrainingPlan",
    "GroupedBatchSampler",
    "IntegrationTrainingPlan",
    "LabelledCellDataset",
    "MaskedValueCollator",
    "PerturbationCollator",
    "PerturbationDataset",
    "PerturbationTrainingPlan",
    "init_gene_embeddings_pca",
    "pca_gene_loadings",
]
