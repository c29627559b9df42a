"""DNABERT's ``vocab.txt``: write it, read it, and check a vocabulary is the official one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ._kmers import K_RANGE, N_SPECIAL, check_k, kmer_vocab


def write_vocab_txt(path: str | Path, k: int) -> Path:
    """Write the official ``vocab.txt`` (one token per line, line number = id) for ``k``.

    Parameters
    ----------
    path
        File to write (replaced if it exists).
    k
        k-mer size, 3 to 6: the tokens are :func:`kmer_vocab`'s.

    Returns
    -------
    ``path``, as a :class:`~pathlib.Path`.

    Examples
    --------
    >>> from omicformer.dnabert import pp
    >>> pp.write_vocab_txt("vocab.txt", k=6)  # doctest: +SKIP
    """
    path = Path(path)
    path.write_text("\n".join(kmer_vocab(k)) + "\n")
    return path


def read_vocab_txt(path: str | Path) -> list[str]:
    """Read a ``vocab.txt`` (one token per line) into a list ordered by id.

    Parameters
    ----------
    path
        A DNABERT model folder's ``vocab.txt``. Blank lines are skipped and each line's
        surrounding whitespace removed.

    Returns
    -------
    The tokens; ``tokens[i]`` has id ``i``.

    Examples
    --------
    >>> from omicformer.dnabert import pp
    >>> tokens = pp.read_vocab_txt("DNA_bert_6/vocab.txt")  # doctest: +SKIP
    """
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


def k_from_vocab(tokens: Sequence[str], *, k: int | None = None, source: str = "vocab") -> int:
    """Infer k from a vocabulary and check it is exactly the official DNABERT vocabulary.

    Parameters
    ----------
    tokens
        Tokens in id order (e.g. from :func:`read_vocab_txt`).
    k
        Expected k (e.g. from the checkpoint's metadata); ``None`` infers it from the size.
    source
        Name of the file, used in error messages.

    Returns
    -------
    The k-mer size; ``ValueError`` if the vocabulary fits no k, or not the given one.

    Examples
    --------
    >>> from omicformer.dnabert import pp
    >>> pp.k_from_vocab(pp.kmer_vocab(4))
    4
    """
    sizes = {N_SPECIAL + 4**kk: kk for kk in K_RANGE}
    inferred = sizes.get(len(tokens))
    if inferred is None:
        msg = (
            f"{source} has {len(tokens)} tokens, which fits no DNABERT k-mer size; expected "
            f"5 + 4**k tokens ({', '.join(f'{n} for k={kk}' for n, kk in sizes.items())})."
        )
        raise ValueError(msg)
    if k is not None and check_k(k) != inferred:
        msg = (
            f"{source} has {len(tokens)} tokens (a k={inferred} vocabulary) but the checkpoint "
            f"declares k={k}; the vocabulary does not fit its k."
        )
        raise ValueError(msg)
    expected = kmer_vocab(inferred)
    if list(tokens) != expected:
        first = next(i for i, (a, b) in enumerate(zip(tokens, expected, strict=True)) if a != b)
        msg = (
            f"{source} is not the official DNABERT k={inferred} vocabulary: token {first} is "
            f"{tokens[first]!r}, expected {expected[first]!r} ([PAD] [UNK] [CLS] [SEP] [MASK] then "
            "k-mers in itertools.product('ATCG') order)."
        )
        raise ValueError(msg)
    return inferred
