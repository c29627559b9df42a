"""Training of scGPT: Lightning plan, dataset and collate for generative pretraining.

The loop itself is the shared runner, :func:`omicformer._core._train.run_training`.
"""

from ..._core._train import HistoryCallback  # noqa: F401  (its home before the shared runner)
from ._data import CellDataset, GenerativeCollator, GroupedBatchSampler
from ._plan import GenerativeTrainingPlan

__all__ = ["CellDataset", "GenerativeCollator", "GenerativeTrainingPlan", "GroupedBatchSampler"]
