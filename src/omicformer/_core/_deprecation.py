"""Renamed parameters keep working for one release, with a ``FutureWarning``."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

#: The release in which deprecated names stop working.
REMOVED_IN = "0.3"


def warn_renamed(where: str, old: str, new: str, *, stacklevel: int = 3) -> None:
    """Warn that ``where``'s ``old`` is deprecated in favour of ``new``."""
    msg = (
        f"{where}: {old!r} is deprecated and will be removed in omicformer {REMOVED_IN}; "
        f"use {new!r} instead."
    )
    warnings.warn(msg, FutureWarning, stacklevel=stacklevel)


def _called_name(fn: Callable[..., Any], args: tuple[Any, ...]) -> str:
    """``fn``'s name as its caller wrote it.

    A method is named by the caller's class (``ScGPT.train``, not the mixin
    ``GenerativeTrainingMixin.train`` that defines it), a function by its qualified name.
    """
    qualname = fn.__qualname__
    is_method = "." in qualname and qualname.split(".")[-2] != "<locals>"
    if is_method and args:
        cls = type(args[0])
        if getattr(cls, fn.__name__, None) is not None:
            return f"{cls.__name__}.{fn.__name__}"
    return qualname


def renamed_kwargs(**renames: str | tuple[str, Callable[[Any], Any]]) -> Callable[[F], F]:
    """Accept old keyword names of a function, warning and mapping them to the new ones.

    ``renames`` maps an old keyword to the new keyword, or to ``(new, convert)`` when the value
    changes meaning (e.g. ``train_size=("validation_size", lambda v: 1 - v)``; such an old
    keyword given as ``None``, scvi-tools' "the default", leaves the new one's default). The
    new name ``"**"`` merges an old ``dict`` argument into ``**kwargs`` (e.g.
    ``trainer_kwargs``). Passing both the old and the new name is a ``TypeError``.
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            name = _called_name(fn, args)
            for old, spec in renames.items():
                if old not in kwargs:
                    continue
                new, convert = (spec, None) if isinstance(spec, str) else spec
                value = kwargs.pop(old)
                if new == "**":
                    warn_renamed(name, f"{old}=dict(...)", "keyword arguments")
                    clash = sorted(set(value or {}) & set(kwargs))
                    if clash:
                        msg = f"{name}() got {clash} both in {old} and as keywords."
                        raise TypeError(msg)
                    kwargs.update(value or {})
                    continue
                if new in kwargs:
                    msg = f"{name}() got both {old!r} (deprecated) and {new!r}."
                    raise TypeError(msg)
                warn_renamed(name, old, new)
                if convert is not None and value is None:  # scvi-tools' None: the default
                    continue
                kwargs[new] = value if convert is None else convert(value)
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def formerly_positional(*names: str) -> Callable[[F], F]:
    """Accept the old call ``f(first, a, b)`` of a function now called ``f(first, *, a=, b=)``.

    When ``names[0]`` is not passed by keyword and more than one positional argument is, the
    positional arguments after the first are mapped to ``names`` in order, with a warning.
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if len(args) > 1 and names[0] not in kwargs:
                extra = args[1:]
                if len(extra) > len(names):
                    msg = f"{fn.__qualname__}() takes 1 positional argument, got {len(args)}."
                    raise TypeError(msg)
                warnings.warn(
                    f"{fn.__qualname__}: passing {', '.join(names[: len(extra)])} by position is "
                    f"deprecated and will stop working in omicformer {REMOVED_IN}; pass "
                    f"{', '.join(f'{n}=' for n in names[: len(extra)])} by keyword.",
                    FutureWarning,
                    stacklevel=2,
                )
                clash = [n for n in names[: len(extra)] if n in kwargs]
                if clash:
                    msg = f"{fn.__qualname__}() got {clash} both by position and by keyword."
                    raise TypeError(msg)
                kwargs.update(zip(names, extra, strict=False))
                args = args[:1]
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
