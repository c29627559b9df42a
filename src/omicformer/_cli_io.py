"""Input and output handling shared by the ``omicformer`` subcommands.

An error the user can fix ends a command with one line, ``omicformer <cmd>: error: <what is
wrong and how to fix it>``, on stderr and exit status 1 (``SystemExit(message)``), never a
traceback. The checks run before any expensive work (reading the input, loading a model).

Outputs: a new file, in a folder that is created if missing (as ``demo --out`` is). An existing
file, the input itself included (an in-place update), is replaced only with ``--overwrite``, as
:func:`omicformer.scgpt.pp.concat_h5ad` (file to file, too) replaces one only with
``overwrite=True``. The result is written under a temporary name in the same folder and renamed
when complete, as the library's ``out_file=`` outputs are, so the old file (or the input) is
never left half-written.
"""

from __future__ import annotations

import argparse
import contextlib
import dis
import os
import sys
from collections.abc import Callable, Sequence
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


def results_to_stdout() -> contextlib.AbstractContextManager:
    """Inside: what the library prints goes to stderr, so that stdout holds the results.

    Lightning's training progress bar (Rich) and messages draw on stdout, where a pipeline
    reads a command's result line (``omicformer scgpt annotate ... > log``).
    """
    return contextlib.redirect_stdout(sys.stderr)


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


def add_overwrite(parser: argparse.ArgumentParser) -> None:
    """The ``--overwrite`` option of a command that writes a file."""
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output file; with the input file as output, write the result "
        "into it (in place). The file is replaced only once the result is complete.",
    )


def check_output(
    prog: str,
    path: str,
    suffixes: Sequence[str],
    *,
    inputs: Sequence[str] = (),
    overwrite: bool = False,
) -> None:
    """``path`` is a valid output: its suffix, and an existing file only with ``overwrite``.

    ``inputs``: the files the command reads; writing into one of them (in place) also needs
    ``overwrite``. Nothing is created here (see :func:`make_output_folder`).
    """
    suffixes = tuple(suffixes)
    if not has_suffix(path, suffixes):
        fail(prog, f"output {path!r} must end with one of {suffixes}.")
    p = Path(path)
    try:
        is_dir, exists = p.is_dir(), p.exists()
    except OSError as err:  # e.g. a name longer than the file system takes
        fail(prog, f"output {path!r} cannot be used: {err.strerror}.")
    if is_dir:
        fail(prog, f"output {path!r} is a folder; pass a file name.")
    if exists and not overwrite:
        if any(Path(i).exists() and os.path.samefile(p, i) for i in inputs):
            fail(
                prog,
                f"output {path!r} is the input file; pass --overwrite to write the result into "
                "it in place, or choose a new output file.",
            )
        fail(prog, f"output {path!r} exists; pass --overwrite to replace it, or choose a new name.")


def check_key_added(prog: str, key: str, output: str) -> None:
    """``--key-added`` can name an element of the output file (no ``"/"``), before any work."""
    from ._core._checks import check_file_key

    try:
        check_file_key(key, "--key-added", f"output {output!r}")
    except ValueError as err:
        fail(prog, str(err).replace("--key-added=", "--key-added "))


def make_output_folder(prog: str, path: str) -> None:
    """Create the folder of output ``path`` if missing (after the checks, before the work)."""
    folder = Path(path).parent
    for above in (folder, *folder.parents):
        if above.exists():
            if not above.is_dir():
                fail(prog, f"cannot write output {path!r}: {str(above)!r} is a file, not a folder.")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        fail(prog, f"cannot create the folder {str(folder)!r} of output {path!r}: {err.strerror}.")
    if not os.access(folder, os.W_OK):
        fail(prog, f"cannot write output {path!r}: the folder {str(folder)!r} is not writable.")


def write_atomic(path: str, write: Callable[[str], Any]) -> None:
    """``write(tmp)`` a file under a temporary name next to ``path``, then rename it to ``path``.

    An existing ``path`` (even the input being read) is replaced only by a complete file; on
    error the temporary file is removed and ``path`` is left as it was. A symbolic link is
    written through: the file it points to is replaced, and the link stays.
    """
    from ._core._tmpnames import temporary_beside, write_target

    p = write_target(path)
    tmp = temporary_beside(p, suffix=p.suffix)
    try:
        write(str(tmp))
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
    except Exception as err:  # an HDF5 file that holds no AnnData: the reader fails on its keys
        kind = "MuData (.h5mu)" if has_suffix(path, (".h5mu",)) else "AnnData (.h5ad)"
        first = str(err).splitlines()[0] if str(err) else ""
        fail(prog, f"cannot read {path!r} as {kind}: {type(err).__name__}: {first}")
