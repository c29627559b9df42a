"""k-mer vocabulary and vectorised tokenisation, token-for-token equal to official DNABERT.

DNABERT (Ji et al., Bioinformatics 2021) reads DNA as overlapping k-mers with stride 1. The
vocabulary is ``[PAD] [UNK] [CLS] [SEP] [MASK]`` followed by all ``4**k`` k-mers in
``itertools.product("ATCG", repeat=k)`` order (base order A, T, C, G). Because of that order a
k-mer's id is ``5 + sum(code(b_j) * 4**(k-1-j))`` with ``A=0, T=1, C=2, G=3``, which lets us
tokenise a whole batch with a handful of numpy operations instead of a dict lookup per k-mer.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

import numpy as np

from .._core._checks import check_int
from .._core._deprecation import renamed_kwargs

SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(5)
N_SPECIAL = len(SPECIAL_TOKENS)
BASES = "ATCG"  # official DNABERT base order (not ACGT)
IUPAC_AMBIGUOUS = "NRYSWKMBDHV"
K_RANGE = (3, 4, 5, 6)
MAX_TOKENS = 512  # BERT positions: [CLS] + 510 k-mers + [SEP]

# byte -> 0..3 for A/T/C/G, 4 for N/IUPAC (k-mer becomes [UNK]), 255 for anything else
_CODE = np.full(256, 255, dtype=np.uint8)
for _i, _b in enumerate(BASES):
    _CODE[ord(_b)] = _CODE[ord(_b.lower())] = _i
for _b in IUPAC_AMBIGUOUS:
    _CODE[ord(_b)] = _CODE[ord(_b.lower())] = 4
_UNKNOWN_CODE, _INVALID_CODE = 4, 255

_SINGLE_STRING = "sequences must be a list of strings, not a single string; wrap it: [seq]."
_COMPLEMENT = str.maketrans("ACGTRYSWKMBDHVNacgtryswkmbdhvn", "TGCAYRSWMKVHDBNtgcayrswmkvhdbn")


def check_k(k: int) -> int:
    """Return ``k`` if it is a supported k-mer size (3..6), else raise ``ValueError``."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or int(k) not in K_RANGE:
        msg = f"k={k!r} is not supported; DNABERT uses k-mers of size 3, 4, 5 or 6."
        raise ValueError(msg)
    return int(k)


def vocab_size(k: int) -> int:
    """Number of tokens for k-mer size ``k``: ``5 + 4**k`` (69, 261, 1029, 4101).

    Parameters
    ----------
    k
        k-mer size, 3 to 6.

    Returns
    -------
    The 5 special tokens plus every k-mer of ``ACGT``.

    Examples
    --------
    >>> from omicformer.dnabert import pp
    >>> pp.vocab_size(6)
    4101
    """
    return N_SPECIAL + 4 ** check_k(k)


def kmer_vocab(k: int) -> list[str]:
    """Official DNABERT vocabulary for k-mer size ``k``, in id order.

    Parameters
    ----------
    k
        k-mer size, 3 to 6.

    Returns
    -------
    ``[PAD] [UNK] [CLS] [SEP] [MASK]`` followed by all k-mers in ``itertools.product("ATCG")``
    order, so ``vocab[i]`` is the token with id ``i``.

    Examples
    --------
    >>> from omicformer.dnabert import pp
    >>> pp.kmer_vocab(3)[:7]
    ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'AAA', 'AAT']
    """
    k = check_k(k)
    return [*SPECIAL_TOKENS, *("".join(p) for p in itertools.product(BASES, repeat=k))]


def seq2kmer(seq: str, k: int) -> str:
    """Space-separated overlapping k-mers with stride 1, exactly as DNABERT's ``seq2kmer``.

    Parameters
    ----------
    seq
        A DNA string (not checked, as the official function; shorter than ``k`` gives ``""``).
    k
        k-mer length, 3 to 6.

    Returns
    -------
    The ``len(seq) - k + 1`` k-mers joined by single spaces.

    Examples
    --------
    >>> from omicformer.dnabert import pp
    >>> pp.seq2kmer("ATCGGA", 3)
    'ATC TCG CGG GGA'
    """
    k = check_k(k)
    return " ".join(seq[x : x + k] for x in range(len(seq) + 1 - k))


def reverse_complement(seq: str) -> str:
    """Reverse complement of a DNA sequence (IUPAC codes and lower case preserved).

    Parameters
    ----------
    seq
        Bases; ``N`` and the other IUPAC codes are complemented (``R`` <-> ``Y``), other
        characters kept.

    Returns
    -------
    The complementary strand, read 5' to 3'.

    Examples
    --------
    >>> from omicformer.dnabert import pp
    >>> pp.reverse_complement("AACGTn")
    'nACGTT'
    """
    return seq.translate(_COMPLEMENT)[::-1]


def _names(sequences: Sequence[str], names: Sequence[str] | None) -> Sequence[str]:
    return names if names is not None else [f"#{i}" for i in range(len(sequences))]


def _listed(
    sequences: Sequence[str], names: Sequence[str] | None
) -> tuple[list[str], Sequence[str] | None]:
    """``sequences`` as a list read by position, and their names.

    A pandas Series gives its values in order and, unless ``names`` is given, its index as
    names (a Series indexed by label would otherwise be read by label, not position). ``names``
    of another length than ``sequences`` is a ``ValueError``.
    """
    if isinstance(sequences, str):
        raise TypeError(_SINGLE_STRING)
    if names is None and hasattr(sequences, "iloc"):
        names = [str(label) for label in sequences.index]
    sequences = list(sequences)
    if names is not None and len(names) != len(sequences):
        msg = (
            f"names has {len(names)} entries but there are {len(sequences)} sequences; give "
            "one name per sequence."
        )
        raise ValueError(msg)
    return sequences, names


def check_strings(
    sequences: Sequence[object], names: Sequence[str] | None = None, *, what: str = "Sequence"
) -> None:
    """Raise ``ValueError`` naming the first entry that is not a ``str`` (NaN, None, a number).

    Parameters
    ----------
    sequences
        The entries, read by position.
    names
        Their names in the message (default ``#0``, ``#1``, ...).
    what
        How the message calls an entry, e.g. ``"train_df['sequence'] at index"``.
    """
    other = next((i for i, s in enumerate(sequences) if not isinstance(s, str)), None)
    if other is not None:
        value = sequences[other]
        msg = (
            f"{what} {_names(sequences, names)[other]!r} is {value!r} "
            f"({type(value).__name__}), not a DNA string; drop missing sequences (NaN/None) "
            "or pass every sequence as a str."
        )
        raise ValueError(msg)


def check_sequences(
    sequences: Sequence[str], k: int, *, names: Sequence[str] | None = None
) -> np.ndarray:
    """Validate sequences for k-mer tokenisation and return their lengths.

    Raises ``ValueError`` naming the first entry that is not a string (NaN, None, a number),
    the sequence and 0-based position of the first character outside A/C/G/T/N/IUPAC (either
    case), or the first sequence shorter than ``k``. Sequences
    are named by ``names``, else by a pandas Series' index, else ``#0``, ``#1``, ...

    Parameters
    ----------
    sequences
        DNA strings (a list, a pandas Series, any iterable; not a single string).
    k
        k-mer length, 3 to 6.
    names
        Names of the sequences in messages, one per sequence.

    Returns
    -------
    ``int64`` array of the sequences' lengths in bases.

    Examples
    --------
    >>> from omicformer.dnabert import pp
    >>> pp.check_sequences(["ACGTN", "acgtr"], k=3)
    array([5, 5])
    """
    k = check_k(k)
    sequences, names = _listed(sequences, names)
    check_strings(sequences, names)
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    joined = np.frombuffer("".join(sequences).encode("ascii", errors="replace"), dtype=np.uint8)
    bad = np.flatnonzero(_CODE[joined] == _INVALID_CODE)
    if bad.size:
        starts = np.concatenate([[0], np.cumsum(lengths)])
        i = int(np.searchsorted(starts, bad[0], side="right") - 1)
        pos = int(bad[0] - starts[i])
        msg = (
            f"Sequence {_names(sequences, names)[i]!r} has invalid character "
            f"{sequences[i][pos]!r} at position {pos} (0-based); only A, C, G, T, N and IUPAC "
            "ambiguity codes (R Y S W K M B D H V), upper or lower case, are accepted."
        )
        if ":" in sequences[i] or "-" in sequences[i]:  # "chr1:100-600": a region, it seems
            msg += " Regions ('chr1:100-600') are fetched from a genome: pass fasta=GENOME."
        raise ValueError(msg)
    short = np.flatnonzero(lengths < k)
    if short.size:
        i = int(short[0])
        msg = (
            f"Sequence {_names(sequences, names)[i]!r} has {lengths[i]} bases, shorter than "
            f"k={k}; every sequence needs at least k bases to form one k-mer."
        )
        raise ValueError(msg)
    return lengths


def warn_without_known_kmer(
    sequences: Sequence[str], k: int, names: Sequence[str] | None = None
) -> None:
    """Warn naming the sequences in which every k-mer holds an N or IUPAC base.

    Each of their k-mers is ``[UNK]``, so a model reads none of their bases.
    """
    from .._core._warnings import warn_user

    sequences, names = _listed(sequences, names)
    known = re.compile(f"[ACGTacgt]{{{k}}}")
    blind = [i for i, s in enumerate(sequences) if known.search(s) is None]
    if blind:
        shown = [str(_names(sequences, names)[i]) for i in blind[:5]]
        warn_user(
            f"{len(blind)} of {len(sequences)} sequences (e.g. {', '.join(shown)}) have no "
            f"{k}-mer of A/C/G/T only (N or IUPAC bases everywhere): every token is [UNK], so "
            "their outputs carry no sequence information."
        )


def _kmer_ids(codes: np.ndarray, k: int) -> np.ndarray:
    """Token ids of all k-mer windows along the last axis of a code array (int16).

    ``codes`` holds 0..3 for A/T/C/G and 4 for N/IUPAC; any k-mer touching a code >= 4
    (including row padding) becomes ``[UNK]``.
    """
    m = codes.shape[-1] - k + 1
    value = np.zeros((*codes.shape[:-1], m), dtype=np.int16)  # 4**6 + 5 fits in int16
    unknown = np.zeros(value.shape, dtype=bool)
    for j in range(k):  # base-4 number of each window, A,T,C,G = 0,1,2,3
        window = codes[..., j : j + m]
        value *= 4
        value += window & 3
        unknown |= window > 3
    value += N_SPECIAL
    value[unknown] = UNK_ID
    return value


def _code_matrix(sequences: Sequence[str], lengths: np.ndarray, width: int) -> np.ndarray:
    """``(n, width)`` uint8 codes, rows right-padded with an out-of-alphabet code."""
    flat = _CODE[np.frombuffer("".join(sequences).encode("ascii"), dtype=np.uint8)]
    if lengths.size and (lengths == width).all():
        return flat.reshape(len(lengths), width)
    codes = np.full((len(lengths), width), _UNKNOWN_CODE + 1, dtype=np.uint8)
    codes[np.arange(width)[None, :] < lengths[:, None]] = flat  # row-major = concatenation
    return codes


def encode_kmers(
    sequences: Sequence[str], k: int, *, names: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of all overlapping k-mers of a batch, without special tokens.

    Returns ``(ids, n_kmers)``: the ids of every sequence concatenated (int64) and the number
    of k-mers per sequence (``len(seq) - k + 1``). k-mers containing N or another IUPAC code
    map to ``[UNK]``; lower-case bases are read as upper case.

    Parameters
    ----------
    sequences
        DNA strings, checked as :func:`check_sequences` checks them.
    k
        k-mer length, 3 to 6.
    names
        Names of the sequences in error messages.

    Returns
    -------
    ids
        The k-mer token ids of every sequence, concatenated (int64).
    n_kmers
        The number of k-mers of each sequence.

    Examples
    --------
    >>> from omicformer.dnabert import pp
    >>> pp.encode_kmers(["ACGTA", "NAAA"], k=3)
    (array([16, 50, 57,  1,  5]), array([3, 2]))
    """
    sequences, names = _listed(sequences, names)  # read once: a generator is not re-read
    lengths = check_sequences(sequences, k, names=names)
    if not lengths.size:  # no sequences: no k-mers, like tokenize([]) gives no rows
        return np.zeros(0, dtype=np.int64), lengths - k + 1
    codes = _CODE[np.frombuffer("".join(sequences).encode("ascii"), dtype=np.uint8)]
    ids = _kmer_ids(codes, k)  # over the concatenation; cross-boundary k-mers dropped below
    n_kmers = lengths - k + 1
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    first = np.concatenate([[0], np.cumsum(n_kmers)[:-1]])
    keep = np.repeat(starts - first, n_kmers) + np.arange(int(n_kmers.sum()))
    return ids[keep].astype(np.int64), n_kmers


@renamed_kwargs(max_length="max_len")
def tokenize(
    sequences: Sequence[str],
    k: int = 6,
    *,
    max_len: int = MAX_TOKENS,
    truncation: bool = False,
    names: Sequence[str] | None = None,
    dtype: type = np.int64,
) -> dict[str, np.ndarray]:
    """Tokenise DNA sequences into padded DNABERT inputs ``[CLS] k-mers [SEP] [PAD]...``.

    Vectorised over the whole batch (numpy), and equal token-for-token to official DNABERT
    ``seq2kmer`` followed by its ``vocab.txt`` lookup (upper-case input).

    Parameters
    ----------
    sequences
        DNA strings (A/C/G/T, N and IUPAC codes; lower-case soft-masked bases accepted).
    k
        k-mer size, 3 to 6.
    max_len
        Maximum number of tokens including ``[CLS]`` and ``[SEP]`` (BERT: 512, i.e. 510 k-mers).
    truncation
        Keep the first ``max_len - 2`` k-mers of longer sequences instead of raising. For
        whole long sequences use :func:`split_windows` (the models do this for you).
    names
        Sequence names for error messages (default: a pandas Series' index, else ``#0``, ...).
    dtype
        Integer dtype of ``input_ids`` (``np.int16`` halves memory for large datasets); one
        too small for the ids of ``k`` (up to ``4 + 4**k``, e.g. ``np.int8``, or ``np.uint8``
        for k >= 4) is a ``ValueError``.

    Returns
    -------
    ``{"input_ids": (n, L), "attention_mask": (n, L) int64}`` padded to the longest.

    Examples
    --------
    >>> from omicformer.dnabert import pp
    >>> pp.tokenize(["ATCGGA"], k=3)["input_ids"]
    array([[ 2, 11, 32, 52, 65,  3]])

    References
    ----------
    Ji Y, Zhou Z, Liu H, Davuluri RV (2021). DNABERT: pre-trained Bidirectional Encoder
    Representations from Transformers model for DNA-language in genome. Bioinformatics 37(15).
    """
    k = check_k(k)
    cap = check_int("max_len", max_len, minimum=3, hint="[CLS], one k-mer and [SEP]") - 2
    top = N_SPECIAL + 4**k - 1
    out_type = np.dtype(dtype)
    if out_type.kind not in "iu" or np.iinfo(out_type).max < top:
        msg = (
            f"dtype={out_type.name} cannot hold the token ids of k={k} (0 to {top}); use an "
            "integer type such as np.int16 or np.int64."
        )
        raise ValueError(msg)
    sequences, names = _listed(sequences, names)
    lengths = check_sequences(sequences, k, names=names)
    n_kmers = lengths - k + 1
    too_long = np.flatnonzero(n_kmers > cap)
    if too_long.size:
        if not truncation:
            i = int(too_long[0])
            msg = (
                f"Sequence {_names(sequences, names)[i]!r} gives {n_kmers[i]} k-mers, more "
                f"than the {cap} that fit in max_len={max_len} tokens (at most "
                f"{cap + k - 1} bp for k={k}); split it with pp.split_windows or pass "
                "truncation=True."
            )
            raise ValueError(msg)
        sequences = [s[: cap + k - 1] for s in sequences]
        lengths = np.minimum(lengths, cap + k - 1)
        n_kmers = lengths - k + 1
    n, width = len(lengths), int(lengths.max(initial=k))
    ids = _kmer_ids(_code_matrix(sequences, lengths, width), k)  # (n, width - k + 1) int16
    ragged = not (n_kmers == ids.shape[1]).all()
    if ragged:
        ids[np.arange(ids.shape[1])[None, :] >= n_kmers[:, None]] = PAD_ID
    input_ids = np.empty((n, ids.shape[1] + 2), dtype=ids.dtype)
    input_ids[:, 0] = CLS_ID
    input_ids[:, 1:-1] = ids
    input_ids[:, -1] = PAD_ID
    input_ids[np.arange(n), n_kmers + 1] = SEP_ID
    if ragged:
        attention_mask = np.arange(input_ids.shape[1])[None, :] < (n_kmers + 2)[:, None]
        attention_mask = attention_mask.astype(np.int64)
    else:
        attention_mask = np.ones(input_ids.shape, dtype=np.int64)
    input_ids = input_ids.astype(out_type, copy=False)
    return {"input_ids": input_ids, "attention_mask": attention_mask}
