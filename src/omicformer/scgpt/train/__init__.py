"""Training of scGPT: Lightning plan, dataset, collate and sampler for generative pretraining."""

from ._data import CellDataset, GenerativeCollator, GroupedBatchSampler
from ._plan import GenerativeTrainingPlan, HistoryCallback

__all__ = [
    "CellDataset",
    "GenerativeCollator",
    "GenerativeTrainingPlan",
    "GroupedBatchSampler",
    "HistoryCallback",
]
