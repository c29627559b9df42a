"""DNABERT tools for AnnData/MuData: region embeddings into ``varm``, predictions into ``var``."""

from __future__ import annotations

from ._tools._embed_regions import embed_regions
from ._tools._predict import predict

__all__ = ["embed_regions", "predict"]
