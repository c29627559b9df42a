"""The DNABERT models shipped inside the package, and resolving ``model=`` arguments."""

from __future__ import annotations

import os
from pathlib import Path

from ._dnabert import DNABert

DATA_DIR = Path(__file__).resolve().parent.parent / "_data"
TASKS = ("mlm", "promoter")


def default_model_path(task: str = "mlm") -> Path:
    """Folder of the small DNABERT shipped with omicformer.

    Parameters
    ----------
    task
        ``"mlm"``: the k=6 model pretrained with span masking on the bundled C. elegans
        chrX (for embeddings); ``"promoter"``: the same model fine-tuned on bundled
        D. melanogaster promoter windows (for :func:`omicformer.dnabert.tl.predict`).

    Returns
    -------
    ``omicformer/dnabert/_data/default_<task>/``, a folder written by :meth:`DNABert.save`.

    Examples
    --------
    >>> from omicformer.dnabert.model import DNABert, default_model_path
    >>> model = DNABert.from_pretrained(default_model_path("mlm"))  # doctest: +SKIP
    """
    if task not in TASKS:
        msg = f"task={task!r} must be one of {TASKS}."
        raise ValueError(msg)
    path = DATA_DIR / f"default_{task}"
    if not (path / "config.json").is_file():
        msg = (
            f"The shipped default DNABERT model for task {task!r} is not in this installation "
            f"({path} is missing). It is built by the repository's DNABERT training script in "
            "scripts/ (DNABert.pretrain / finetune, then save to that folder). Meanwhile pass "
            "model=PATH to an official DNABERT folder (e.g. zhihan1996/DNA_bert_6) or a "
            "DNABert.save() folder, or a DNABert object."
        )
        raise FileNotFoundError(msg)
    return path


def resolve_model(model: DNABert | str | os.PathLike[str], task: str = "mlm") -> DNABert:
    """``"default"`` -> the shipped model for ``task``; a path -> loaded; a DNABert -> itself.

    Parameters
    ----------
    model
        ``"default"``, a model folder (official DNABERT or :meth:`DNABert.save`), or a
        :class:`DNABert`.
    task
        Which shipped model ``"default"`` means: ``"mlm"`` (the pretrained k=6 model) or
        ``"promoter"`` (the promoter classifier).

    Returns
    -------
    The model; a :class:`DNABert` passed in is returned as it is.
    """
    if isinstance(model, DNABert):
        return model
    if isinstance(model, str) and model == "default":
        return DNABert.from_pretrained(default_model_path(task))
    if isinstance(model, str | os.PathLike):
        return DNABert.from_pretrained(model)
    msg = f"model must be 'default', a model folder path or a DNABert, not {type(model).__name__}."
    raise TypeError(msg)
