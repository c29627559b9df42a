"""Lightning training plans for DNABERT."""

from ._plan import DNABertTrainingPlan

__all__ = ["DNABertTrainingPlan"]
