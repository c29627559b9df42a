"""Sequence-classification tasks on real DNA, and a k-mer baseline to compare DNABERT against.

Every builder is a pure function returning a :class:`pandas.DataFrame` with columns
``sequence`` (upper-case ``ACGTN``), ``label`` (int), ``split`` (``"train"``, ``"valid"``,
``"test"``) and provenance columns saying where each window comes from. Splits are drawn by
*source* (a dm3 upstream region, a 50 kb block of ce2 chrX, a gene locus), never by window, so no
sequence is shared between splits. The same ``random_state`` gives the same region and block
splits in every builder.

Tasks follow DNABERT's fine-tuning benchmarks (Ji et al., *DNABERT: pre-trained Bidirectional
Encoder Representations from Transformers model for DNA-language in genome*, Bioinformatics
37:2112-2120, 2021) on data that ships with omicformer (:mod:`omicformer.datasets`).
"""

from ._baseline import classification_metrics, kmer_baseline
from ._common import SPLICE_LABELS, SPLITS  # noqa: F401  (constants, importable as before)
from ._promoter import promoter_task
from ._splice import splice_site_task
from ._tfbs import hnf4a_real_check, tfbs_task

__all__ = [
    "classification_metrics",
    "hnf4a_real_check",
    "kmer_baseline",
    "promoter_task",
    "splice_site_task",
    "tfbs_task",
]
