"""Where a file written atomically (a temporary file beside it, then a rename) really goes."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

#: The longest file name most file systems take (bytes: ext4, XFS, APFS; NTFS in UTF-16 units).
NAME_MAX = 255


def write_target(path: str | os.PathLike[str]) -> Path:
    """``path``, or the file a symbolic link at ``path`` points to: a link is written through.

    A link that loops, or points into a folder that does not exist, is replaced itself.
    """
    path = Path(path)
    if not path.is_symlink():
        return path
    try:
        target = path.resolve()
    except (OSError, RuntimeError):  # a loop
        return path
    return target if target.parent.is_dir() else path


def temporary_beside(path: Path, kind: str = "tmp", suffix: str = "") -> Path:
    """A new name in ``path``'s folder, ``.{name}.{8 hex}.{kind}{suffix}``.

    Short (``.{8 hex}.{kind}{suffix}``) where the name would pass :data:`NAME_MAX` bytes: a file
    name the file system takes must not fail for its temporary one.
    """
    tag = uuid.uuid4().hex[:8]
    tmp = path.with_name(f".{path.name}.{tag}.{kind}{suffix}")
    if len(tmp.name.encode()) > NAME_MAX:
        tmp = path.with_name(f".{tag}.{kind}{suffix}")
    return tmp
