"""Input and output handling shared by the ``omicformer`` subcommands.

An error the user can fix ends a command with one line, ``omicformer <cmd>: error: <what is
wrong and how to fix it>``, on stderr and exit status 1 (``SystemExit(message)``), never a
traceback. The checks run before any expensive work (reading the input, loading a model).
"""

from __future__ import annotations

import dis
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

#: Exceptions that the library raises on bad arguments or files (its own validation).
USER_ERRORS = (
    ValueError,
    KeyError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
)
_PACKAGE = Path(__file__).resolve().parent
_RAISE = dis.opmap["RAISE_VARARGS"]


def fail(prog: str, message: str) -> NoReturn:
    """End the command with ``<prog>: error: <message>`` (exit status 1)."""
    raise SystemExit(f"{prog}: error: {message}")


def raised_by_omicformer(err: BaseException) -> bool:
    """Whether ``err`` comes from a ``raise`` statement in omicformer's own code.

    Those are the library's checks of its arguments and files, worded for users. A
    ``KeyError`` of a dict look-up, or any error raised inside numpy, torch, h5py..., is an
    internal error and keeps its traceback.
    """
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    try:
        in_package = Path(code.co_filename).resolve().is_relative_to(_PACKAGE)
    except OSError:  # pragma: no cover - a frame without a real file
        return False
    return (
        in_package
        and 0 <= tb.tb_lasti < len(code.co_code)
        and (code.co_code[tb.tb_lasti] == _RAISE)
    )


def message_of(err: BaseException) -> str:
    """The text of ``err`` (a ``KeyError``'s without the quotes ``str`` adds)."""
    if isinstance(err, KeyError) and len(err.args) == 1 and isinstance(err.args[0], str):
        return err.args[0]
    return str(err)


def has_suffix(path: str, suffixes: Sequence[str]) -> bool:
    """Whether ``path`` ends with one of ``suffixes`` (case-insensitive)."""
    return path.lower().endswith(tuple(suffixes))


def check_input(prog: str, path: str, suffixes: Sequence[str], what: str = "input") -> None:
    """``path`` is an existing file whose name ends with one of ``suffixes``."""
    p = Path(path)
    if not p.exists():
        fail(prog, f"{what} file {path!r} does not exist.")
    if p.is_dir():
        fail(prog, f"{what} {path!r} is a folder; pass a file.")
    if suffixes and not has_suffix(path, suffixes):
        fail(prog, f"cannot read {path!r}: expected {' or '.join(suffixes)}.")


def check_model(prog: str, model: str, default: str = "default") -> None:
    """``--model`` is ``default`` or an existing folder (its contents are checked on loading)."""
    if model != default and not Path(model).expanduser().is_dir():
        fail(
            prog,
            f"--model {model!r} is neither {default!r} nor an existing folder; pass "
            f"{default!r} or the folder of a model.",
        )


def read_data(prog: str, path: str, backed: bool = False) -> Any:
    """Read an ``.h5ad`` (optionally backed) or ``.h5mu`` file checked by :func:`check_input`."""
    try:
        if has_suffix(path, (".h5mu",)):
            try:
                import mudata
            except ImportError:
                fail(prog, f"reading {path!r} needs the mudata package: pip install mudata.")
            return mudata.read_h5mu(path)
        import anndata as ad

        return ad.read_h5ad(path, backed="r" if backed else None)
    except OSError as err:  # h5py: not an HDF5 file, truncated, not readable
        kind = ".h5mu" if has_suffix(path, (".h5mu",)) else ".h5ad"
        fail(prog, f"cannot read {path!r}: not a valid, readable {kind} file ({err}).")
