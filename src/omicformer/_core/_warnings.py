"""Warnings that point at the user's line, however deep in the package they are raised."""

from __future__ import annotations

import os
import sys
import warnings
from types import FrameType

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _in_package(frame: FrameType) -> bool:
    return os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE)


def _decorator(frame: FrameType) -> bool:
    """A frame of a decorator's wrapper (``torch.no_grad``, ``contextlib``): not the user's."""
    name = os.path.basename(frame.f_code.co_filename)
    return name in ("contextlib.py", "_contextlib.py")


def warn_caller(message: str, category: type[Warning] = UserWarning) -> None:
    """:func:`warnings.warn` attributed to the first calling frame outside omicformer.

    A fixed ``stacklevel`` is right for one call path only; the same check reached from a
    ``tl`` function, a model class or a helper would point into the package. The wrappers of
    decorators such as ``torch.no_grad`` (``contextlib``) are skipped too.
    """
    frame, level = sys._getframe(1), 2
    while frame is not None and (_in_package(frame) or _decorator(frame)):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """:func:`warnings.warn` attributed to the line that called into omicformer.

    For warnings raised where other libraries call omicformer back (a Lightning callback
    inside ``train``): the frame that called the outermost omicformer frame of the stack is
    the user's. Outside any omicformer call, the direct caller.
    """
    frame, level, outer = sys._getframe(1), 1, None
    while frame is not None:
        if _in_package(frame):
            outer = level
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=outer + 2 if outer else 2)
