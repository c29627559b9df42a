"""The omicformer cache folder, shared by the bundled data sets and the DNABERT FASTA reader."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$OMICFORMER_CACHE_DIR``, else ``$XDG_CACHE_HOME/omicformer``, else ``~/.cache/omicformer``.

    An empty variable counts as unset (as the XDG base directory specification says), so
    the folder is never a relative path in the working directory.
    """
    if os.environ.get("OMICFORMER_CACHE_DIR"):
        return Path(os.environ["OMICFORMER_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "omicformer"
