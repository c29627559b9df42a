"""Training of scGPT: Lightning plans, datasets and collates (pretraining, classification, integration).

The loop itself is the shared runner, :func:`omicformer._core._train.run_training`.
"""

from ..._core._train import HistoryCallback  # noqa: F401  (its home before the shared runner)
from ._classify import ClassificationCollator, ClassifierTrainingPlan, LabelledCellDataset
from ._data import CellCollator, CellDataset, GenerativeCollator, GroupedBatchSampler
from ._integrate import IntegrationTrainingPlan, MaskedValueCollator
from ._plan import GenerativeTrainingPlan

__all__ = [
    "CellCollator",
    "CellDataset",
    "ClassificationCollator",
    "ClassifierTrainingPlan",
    "GenerativeCollator",
    "GenerativeTrainingPlan",
    "GroupedBatchSampler",
    "IntegrationTrainingPlan",
    "LabelledCellDataset",
    "MaskedValueCollator",
]
