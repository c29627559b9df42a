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
