"""Training of scGPT: Lightning plan, dataset and collate for generative pretraining.

The loop itself is the shared runner, :func:`omicformer._core._train.run_training`.
"""

from ..._core._train import EpochBatchSampler, HistoryCallback
from ._data import CellDataset, GenerativeCollator, GroupedBatchSampler
from ._plan import GenerativeTrainingPlan

__all__ = [
    "CellDataset",
    "EpochBatchSampler",
    "GenerativeCollator",
    "GenerativeTrainingPlan",
    "GroupedBatchSampler",
    "HistoryCallback",
]
