"""Argument checks shared by the public functions: clear ``ValueError`` before any work."""

from __future__ import annotations

from typing import Any

import numpy as np


def check_int(name: str, value: Any, minimum: int = 1, hint: str = "") -> int:
    """``value`` as an ``int``, or a ``ValueError`` naming ``name`` and what it must be.

    Parameters
    ----------
    name
        The argument's name, as the caller wrote it (``"n_runs"``).
    value
        What was passed. Python and NumPy integers are accepted; ``bool``, floats (even
        ``2.0``) and anything else are not.
    minimum
        The smallest value allowed.
    hint
        Text appended to the message in parentheses, e.g. what the smallest value means.

    Returns
    -------
    ``int(value)``.
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        extra = f" ({hint})" if hint else ""
        msg = f"{name}={value!r} must be an integer >= {minimum}{extra}."
        raise ValueError(msg)
    return int(value)


def check_seed(value: Any, name: str = "random_state") -> int:
    """``value`` as an ``int`` seed (``>= 0``), else a ``ValueError`` before any work.

    Every stochastic function takes an integer seed so that equal seeds give equal results;
    ``None`` (scikit-learn's "fresh randomness") is refused with the same message.
    """
    return check_int(name, value, minimum=0, hint="a seed; equal seeds give equal results")


def json_int(value: object) -> int | None:
    """``value`` read from JSON as an integer, or ``None`` when it is not one.

    Integers, whole floats (``3.0``) and strings of an integer (``"3"``) are integers;
    ``0.7``, ``"abc"``, ``null`` and ``true`` are not (``int()`` would truncate ``0.7`` to ``0``
    and accept ``true`` as ``1``).

    Parameters
    ----------
    value
        A value parsed by :func:`json.loads`.

    Returns
    -------
    The integer, or ``None``.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def config_int(value: object, field: str, source: str, minimum: int = 1, hint: str = "") -> int:
    """An integer setting read from a file, or a ``ValueError`` naming the file and the field.

    Parameters
    ----------
    value
        The value as read (:func:`json.loads`); accepted as :func:`json_int` accepts it.
    field
        The setting's name in the file (``"max_seq_len"``).
    source
        How the message names the file (``"args.json of scGPT_human"``).
    minimum
        The smallest value allowed.
    hint
        How to fix it; default: set it to the value the model was trained with.

    Returns
    -------
    The integer.
    """
    number = json_int(value)
    if number is None or number < minimum:
        fix = hint or "set it to the value the model was trained with"
        msg = f"{source}: {field!r} must be an integer >= {minimum}, got {value!r}; {fix}."
        raise ValueError(msg)
    return number


def config_bool(value: object, field: str, source: str) -> bool:
    """A JSON ``true``/``false`` setting read from a file; a ``ValueError`` naming both if not.

    ``bool()`` would read the string ``"false"`` (or ``0.5``) as ``True``.
    """
    if not isinstance(value, bool):
        msg = f"{source}: {field!r} must be true or false, got {value!r}; fix the file."
        raise ValueError(msg)
    return value


def check_file_key(key: object, name: str = "key_added", where: str = "an .h5ad file") -> None:
    """``ValueError`` if ``key`` cannot name an element of an ``.h5ad``/``.zarr`` file.

    HDF5 and zarr read ``"/"`` as the separator of nested groups: ``obsm["a/b"]`` fails to be
    created in an h5py group, or is written as a group ``a`` holding ``b`` that anndata cannot
    read back (and ``uns["a/b"]`` comes back as ``uns["a"]["b"]``). In memory such keys work;
    call this where the result goes to a file, before any work.

    Parameters
    ----------
    key
        The key (``obsm``, ``varm``, ``obs``/``var`` column prefix, ``uns``).
    name
        The argument's name, for the message.
    where
        The file the result goes to, for the message (``"out_file"``).
    """
    if isinstance(key, str) and "/" in key:
        msg = (
            f"{name}={key!r} contains '/', which the keys of {where} cannot hold (HDF5 and zarr "
            f"read it as nested groups); choose a key without '/', e.g. "
            f"{key.replace('/', '_')!r}."
        )
        raise ValueError(msg)


def warn_ignored(
    func: Any,
    given: dict[str, Any],
    why: str,
    fix: str = "To fine-tune with them, pass the pretrained model instead.",
) -> None:
    """Warn of the arguments in ``given`` that differ from ``func``'s defaults and do not apply.

    The defaults are read from ``func``'s signature, so the warning follows them. ``why`` says
    why the arguments do not apply (the start of the warning), e.g. "model is a trained
    classifier and labels the cells as it is"; ``fix`` ends it. The warning points at the
    user's line.
    """
    import inspect

    from ._warnings import warn_caller

    defaults = inspect.signature(func).parameters
    unused = [f"{k}={v!r}" for k, v in given.items() if v != defaults[k].default]
    if unused:
        warn_caller(
            f"{why}; {', '.join(unused)} only apply to fine-tuning and are ignored. {fix}".strip()
        )


def check_key(key: object, name: str = "key_added") -> str:
    """``key`` when it is a non-empty string (an ``obs``/``obsm``/``uns`` key), else ValueError.

    ``None``, ``""`` or a number would be written as a key that scanpy and anndata's writers
    cannot use (``None`` fails when the file is written, later).
    """
    if not isinstance(key, str) or not key:
        msg = f"{name}={key!r} must be a non-empty string (the key the results are stored under)."
        raise ValueError(msg)
    return key
