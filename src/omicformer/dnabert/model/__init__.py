"""DNABERT model classes (scvi-tools style): :class:`DNABert` and the shipped defaults."""

from ._checkpoint import read_checkpoint, write_checkpoint
from ._defaults import default_model_path, resolve_model
from ._dnabert import DNABert

__all__ = ["DNABert", "default_model_path", "read_checkpoint", "resolve_model", "write_checkpoint"]
