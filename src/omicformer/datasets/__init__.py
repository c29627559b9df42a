"""Datasets for omicformer (no network access needed).

Single-cell RNA loaders live in ``omicformer.datasets._scrna`` and ``_scrna_pypi``, DNA sequence
loaders in ``omicformer.datasets._dna`` (real data bundled with the package), Perturb-seq helpers
in ``omicformer.datasets._perturb`` (a seeded simulation in the GEARS layout) and
``_perturb_readers`` (readers of GEARS / scPerturb files); all are re-exported here.
"""

from __future__ import annotations

from ._dna import *  # noqa: F403
from ._dna import __all__ as _dna_all
from ._perturb import *  # noqa: F403
from ._perturb import __all__ as _perturb_all
from ._perturb_readers import *  # noqa: F403
from ._perturb_readers import __all__ as _readers_all
from ._scrna import *  # noqa: F403
from ._scrna import __all__ as _scrna_all
from ._scrna_pypi import *  # noqa: F403
from ._scrna_pypi import __all__ as _pypi_all

__all__ = [*_scrna_all, *_pypi_all, *_dna_all, *_perturb_all, *_readers_all]
