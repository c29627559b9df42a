"""Gene vocabulary in the official scGPT ``vocab.json`` format (a flat ``{token: id}`` object)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from .._core._checks import json_int

PAD_TOKEN = "<pad>"
CLS_TOKEN = "<cls>"
EOC_TOKEN = "<eoc>"
SPECIAL_TOKENS = (PAD_TOKEN, CLS_TOKEN, EOC_TOKEN)


class GeneVocab:
    """Mapping between gene symbols (and special tokens) and integer token ids.

    Reading follows the official loader: tokens keep their ids from ``vocab.json`` and the
    special tokens ``<pad>``, ``<cls>``, ``<eoc>`` are appended at the end when missing.

    Parameters
    ----------
    stoi
        Token -> id, ids ``0 .. n-1`` each used once (as in an official ``vocab.json``);
        anything else raises ``ValueError`` naming the offending token.
    """

    def __init__(self, stoi: Mapping[str, int]):
        ids = sorted(stoi.values())
        if ids != list(range(len(ids))):
            seen: dict[int, str] = {}
            shared = next(((seen[i], tok, i) for tok, i in stoi.items()
                           if seen.setdefault(i, tok) != tok), None)  # fmt: skip
            negative = [(tok, i) for tok, i in stoi.items() if i < 0]
            if negative:
                why = f"token {negative[0][0]!r} has id {negative[0][1]}"
            elif shared is not None:
                why = f"tokens {shared[0]!r} and {shared[1]!r} share id {shared[2]}"
            else:
                why = f"id {min(set(range(len(ids))) - set(ids))} is not used"
            msg = f"vocab ids must be the contiguous integers 0..n-1, each once: {why}."
            raise ValueError(msg)
        self._itos = [""] * len(ids)
        for tok, i in stoi.items():
            self._itos[i] = tok
        for tok in SPECIAL_TOKENS:
            if tok not in stoi:
                self._itos.append(tok)
        self._stoi = {tok: i for i, tok in enumerate(self._itos)}
        self._folded_cache: dict[str, int] | None = None

    @classmethod
    def from_genes(cls, genes: Iterable[str]) -> GeneVocab:
        """Vocabulary of ``genes`` (in order) followed by the special tokens.

        Parameters
        ----------
        genes
            Gene symbols; a repeated one keeps its first id. Tokens are strings, as in
            ``vocab.json``: other values (e.g. integer gene IDs) are stored as ``str(gene)``,
            which :meth:`lookup` matches.

        Returns
        -------
        The vocabulary.

        Raises
        ------
        TypeError
            ``genes`` is a single string; wrap it: ``[gene]``.
        """
        _check_not_str(genes)
        genes = list(dict.fromkeys(map(str, genes)))
        return cls({g: i for i, g in enumerate(genes)})

    @classmethod
    def from_file(cls, path: str | Path) -> GeneVocab:
        """Read an official ``vocab.json``.

        Parameters
        ----------
        path
            The file: a flat JSON object ``{gene: id}`` with integer ids.

        Returns
        -------
        The vocabulary; ``<pad>``, ``<cls>`` and ``<eoc>`` are appended when missing.

        Raises
        ------
        ValueError
            The file is not JSON, not a flat object, or has ids that are not integers.
        """
        path = Path(path)
        try:
            stoi = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            msg = (
                f"{path} is not valid JSON; expected a flat {{gene: id}} object (scGPT vocab.json)."
            )
            raise ValueError(msg) from err
        if not isinstance(stoi, dict):
            msg = f"{path} must hold a flat JSON object {{gene: id}}."
            raise ValueError(msg)
        ids = {str(k): json_int(v) for k, v in stoi.items()}
        bad = [f"{k!r}: {stoi[k]!r}" for k, i in ids.items() if i is None]
        if bad:
            msg = (
                f"{path}: token ids must be integers; fix these entries of the {{gene: id}} "
                f"object: {', '.join(bad[:5])}{f' and {len(bad) - 5} more' if len(bad) > 5 else ''}."
            )
            raise ValueError(msg)
        try:
            return cls({k: i for k, i in ids.items() if i is not None})
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    def save_json(self, path: str | Path) -> None:
        """Write the official ``vocab.json`` format.

        Parameters
        ----------
        path
            File to write (replaced if it exists): ``{token: id}``, special tokens included.
        """
        Path(path).write_text(json.dumps(self._stoi, indent=2))

    def to_dict(self) -> dict[str, int]:
        """``{token: id}``."""
        return dict(self._stoi)

    def __len__(self) -> int:
        return len(self._itos)

    def __contains__(self, token: object) -> bool:
        return token in self._stoi

    def __getitem__(self, token: str) -> int:
        return self._stoi[token]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GeneVocab) and other._itos == self._itos

    def __repr__(self) -> str:
        return f"GeneVocab({len(self)} tokens)"

    @property
    def pad_id(self) -> int:
        """Id of ``<pad>``."""
        return self._stoi[PAD_TOKEN]

    @property
    def cls_id(self) -> int:
        """Id of ``<cls>``."""
        return self._stoi[CLS_TOKEN]

    def lookup(self, genes: Iterable[str], *, ignore_case: bool = False) -> np.ndarray:
        """Token ids of ``genes``; ``-1`` where a gene is not in the vocabulary.

        With ``ignore_case=True``, a gene that is not a token as written is matched to the
        token that is the same in upper case (``"Cd3e"`` and ``"cd3e"`` to ``"CD3E"``,
        ``"C2ORF15"`` to ``"C2orf15"``), unless several tokens are (then it stays ``-1``).
        Gene symbols of one species are unique regardless of case (the official census
        vocabulary has no two tokens that differ only in case), and a mouse symbol in upper
        case is, for most genes, its human ortholog's.

        Parameters
        ----------
        genes
            Gene symbols (any iterable of strings; other values are read as ``str``).
        ignore_case
            Also match genes whose case differs from the token's, as above.

        Returns
        -------
        ``int64`` array of token ids, one per gene, ``-1`` where none matches.

        Raises
        ------
        TypeError
            ``genes`` is a single string; wrap it: ``[gene]``.
        """
        _check_not_str(genes)
        get = self._stoi.get
        if not ignore_case:
            return np.fromiter((get(str(g), -1) for g in genes), dtype=np.int64)
        folded = self._folded()
        return np.fromiter(
            (i if (i := get(s, -1)) >= 0 else folded.get(s.upper(), -1) for s in map(str, genes)),
            dtype=np.int64,
        )

    def _folded(self) -> dict[str, int]:
        """``{token in upper case: id}`` of the gene tokens no other token folds onto."""
        if self._folded_cache is None:
            folded: dict[str, int] = {}
            clashes: set[str] = set()
            for tok, i in self._stoi.items():
                if tok in SPECIAL_TOKENS:
                    continue
                key = tok.upper()
                if key in folded:
                    clashes.add(key)
                folded[key] = i
            self._folded_cache = {k: v for k, v in folded.items() if k not in clashes}
        return self._folded_cache

    def genes(self) -> list[str]:
        """All tokens in id order."""
        return list(self._itos)


def _check_not_str(genes: object) -> None:
    """A ``TypeError`` for a single gene where a list of genes is expected."""
    if isinstance(genes, str | bytes):
        msg = (
            f"genes must be a list of gene symbols, not the single string {genes!r}; "
            "wrap it: [gene]."
        )
        raise TypeError(msg)
