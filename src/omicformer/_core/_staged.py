"""All-or-nothing saves of model folders: write everything aside, then move it in.

A model folder is several files (weights, config, vocabulary, an AnnData, an ensemble's
member folders). Written in place, a full disk or a Ctrl-C part-way leaves a folder that
mixes the old model with the new one, or has lost the old model. :func:`staged_folder`
gives the writer an empty folder inside the destination; only once everything is written
are the old model's entries moved aside and the new ones moved in (renames on one file
system: no data is written then, and Ctrl-C waits until they are done). On any failure
the destination is left as it was and nothing of the attempt remains.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ._io import check_folder_path

#: Prefixes of the hidden working folders inside a destination while a save runs; the
#: host and process id follow (``.omicformer-saving-<host>-<pid>-<random>``).
STAGE_PREFIX = ".omicformer-saving-"
TRASH_PREFIX = ".omicformer-replaced-"


@contextmanager
def staged_folder(path: str | os.PathLike[str], *, stale: Iterable[str] = ()) -> Iterator[Path]:
    """Yield an empty folder to write a model into; on success it replaces ``path``'s model.

    Parameters
    ----------
    path
        The destination folder (created if needed; ``~`` is expanded). Entries of it that
        the new model does not have and that are not in ``stale`` (a user's own files) stay.
    stale
        Names of entries of the destination that belong to the model being replaced and must
        go even where the new model has no entry of that name (e.g. an ``adata.h5ad`` saved
        with the old model). Names that do not exist are ignored.

    Raises
    ------
    FileExistsError
        ``path`` is a file.

    Notes
    -----
    Ctrl-C is held back while the staging folder is made, while the entries are moved and
    while a failed attempt is cleaned up, so none of them is left half done. A save killed
    outright (``SIGKILL``) leaves its hidden folders; the next save into the folder on the
    same machine removes them.
    """
    path = Path(path).expanduser()
    check_folder_path(path)
    created: list[Path] = []
    stage: Path | None = None
    done = False
    try:
        with _interrupts_deferred():  # a Ctrl-C here comes once the cleanup below can run
            created = _missing_folders(path)  # known before mkdir, should it fail part-way
            path.mkdir(parents=True, exist_ok=True)
            _remove_abandoned(path)
            tag = f"{socket.gethostname()}-{os.getpid()}-"
            stage = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX + tag, dir=path))
        yield stage
        with _interrupts_deferred():
            _move_in(stage, path, set(stale), tag)
            done = True
    finally:
        with _interrupts_deferred():
            if stage is not None:
                shutil.rmtree(stage, ignore_errors=True)
            if not done:
                for folder in created:  # the folders made for this save, if still empty
                    try:
                        folder.rmdir()
                    except FileNotFoundError:  # not made: mkdir failed before it
                        continue
                    except OSError:  # not empty: something else is in it now
                        break


def _missing_folders(path: Path) -> list[Path]:
    """The folders ``mkdir -p path`` makes, deepest first (``a`` of ``a/../m`` too)."""
    return [p for p in (path, *path.parents)
            if p.name not in ("", ".", "..") and not p.exists()]  # fmt: skip


def _remove_abandoned(path: Path) -> None:
    """Remove the hidden folders of saves into ``path`` by processes of this host now gone."""
    host = socket.gethostname()
    for entry in path.iterdir():
        for prefix in (STAGE_PREFIX, TRASH_PREFIX):
            rest = entry.name[len(prefix) :] if entry.name.startswith(prefix) else ""
            owner, _, pid = rest.rpartition("-")[0].rpartition("-")
            if owner == host and pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (on this host)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it runs, as another user
        return True
    return True


def _move_in(stage: Path, path: Path, stale: set[str], tag: str) -> None:
    """Move ``path``'s replaced entries to a trash folder, ``stage``'s in; undo on failure."""
    new = sorted(os.listdir(stage))
    old = sorted(n for n in stale.union(new) if os.path.lexists(path / n))
    trash = Path(tempfile.mkdtemp(prefix=TRASH_PREFIX + tag, dir=path))
    moved_out: list[str] = []
    moved_in: list[str] = []
    try:
        for name in old:
            os.replace(path / name, trash / name)
            moved_out.append(name)
        for name in new:
            os.replace(stage / name, path / name)
            moved_in.append(name)
    except BaseException:
        for name in reversed(moved_in):
            os.replace(path / name, stage / name)
        for name in reversed(moved_out):
            os.replace(trash / name, path / name)
        trash.rmdir()
        raise
    shutil.rmtree(trash, ignore_errors=True)


@contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) until the block ends, then deliver it; main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[tuple[int, Any]] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            if callable(previous):
                previous(*received[0])
            elif previous == signal.SIG_DFL:
                raise KeyboardInterrupt
