"""Preprocessing for DNABERT: k-mers, vocabularies, genomic regions and sequences.

All coordinates are 0-based half-open ``[start, end)`` like BED and CREsted. See
:func:`tokenize` for the k-mer scheme of DNABERT (Ji et al., Bioinformatics 2021).
"""

from __future__ import annotations

from ._genome import Genome, cache_dir, fetch_sequences
from ._kmers import (
    MAX_TOKENS,
    SPECIAL_TOKENS,
    check_sequences,
    encode_kmers,
    kmer_vocab,
    reverse_complement,
    seq2kmer,
    tokenize,
    vocab_size,
)
from ._regions import Region, parse_region, parse_regions
from ._vocab_files import k_from_vocab, read_vocab_txt, write_vocab_txt
from ._windows import split_windows, window_starts

__all__ = [
    "MAX_TOKENS",
    "SPECIAL_TOKENS",
    "Genome",
    "Region",
    "cache_dir",
    "check_sequences",
    "encode_kmers",
    "fetch_sequences",
    "k_from_vocab",
    "kmer_vocab",
    "parse_region",
    "parse_regions",
    "read_vocab_txt",
    "reverse_complement",
    "seq2kmer",
    "split_windows",
    "tokenize",
    "vocab_size",
    "window_starts",
    "write_vocab_txt",
]
