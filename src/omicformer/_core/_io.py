"""Files shared by every omicformer model: model folders (safetensors + JSON), chunked ``.npy`` output."""

from __future__ import annotations

import errno
import json
import mmap
import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._tmpnames import temporary_beside, write_target

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "omicformer_config.json"
#: Distributions whose versions a saved model records (``config["versions"]``).
VERSIONED = ("omicformer", "torch", "lightning", "anndata", "scvi-tools", "numpy", "scipy")


def environment_versions() -> dict[str, str | None]:
    """Versions of Python and of the libraries a model was trained and saved with.

    Returns
    -------
    ``{"python": ..., "omicformer": ..., "torch": ..., "lightning": ..., "anndata": ...,
    "scvi-tools": ..., "numpy": ..., "scipy": ...}`` (``None`` for one not installed).
    """
    versions: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def check_folder_path(path: Path) -> None:
    """``FileExistsError`` when ``path`` is a file: a model is saved as a folder."""
    if path.exists() and not path.is_dir():
        msg = f"{path} is a file; a model is saved as a folder: give a folder path (new or not)."
        raise FileExistsError(msg)


def save_model_dir(
    path: str | Path, state_dict: dict[str, torch.Tensor], config: dict[str, Any]
) -> Path:
    """Write ``state_dict`` as safetensors and ``config`` as JSON into folder ``path``.

    The files are written as they are, into the new, empty folder of a staged save
    (``_core._staged.staged_folder`` checks and replaces the destination).
    The config gains ``"versions"`` (:func:`environment_versions`) unless it has them.
    """
    from safetensors.torch import save_file

    path = Path(path).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    save_file(tensors, str(path / WEIGHTS_NAME))
    config = {**config, "versions": config.get("versions") or environment_versions()}
    (path / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True))
    return path


def load_model_dir(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a folder written by :func:`save_model_dir`."""
    from safetensors.torch import load_file

    config = load_model_config(path)
    file = Path(path).expanduser() / WEIGHTS_NAME
    try:
        state = load_file(str(file))
    except Exception as err:  # safetensors: SafetensorError (header too small, bad JSON, ...)
        msg = (
            f"{file} could not be read as safetensors weights ({err}); the file is damaged or "
            "incomplete: copy it again, or save the model again."
        )
        raise ValueError(msg) from err
    return state, config


def load_model_config(path: str | Path) -> dict[str, Any]:
    """The JSON config of a folder written by :func:`save_model_dir` (weights not read)."""
    path = Path(path).expanduser()
    missing = [n for n in (WEIGHTS_NAME, CONFIG_NAME) if not (path / n).exists()]
    if missing:
        msg = f"{path} is not an omicformer model folder: missing {missing}."
        raise FileNotFoundError(msg)
    file = path / CONFIG_NAME
    try:
        config = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        msg = (
            f"{file} is not valid JSON ({err}); the folder is damaged: copy it again, or save "
            "the model again."
        )
        raise ValueError(msg) from err
    if not isinstance(config, dict):
        msg = (
            f"{file} must hold one JSON object (the model's settings), not a "
            f"{type(config).__name__}; copy the folder again, or save the model again."
        )
        raise ValueError(msg)
    return config


def shape_mismatches(
    state: dict[str, torch.Tensor], own: dict[str, torch.Tensor], config: str
) -> list[str]:
    """The weights of ``state`` whose shapes differ from the module's own (``own``).

    One ``"key: file (shape) vs <config> (shape)"`` each; ``config`` names what describes the
    module's shapes (``"config.json"``).
    """
    return [
        f"{k}: file {tuple(v.shape)} vs {config} {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and own[k].shape != v.shape
    ]


#: The files of each kind of model folder, and the files that mark that kind: ours (scGPT,
#: the ensemble's list), an official scGPT folder, a Hugging Face (DNABERT) folder, ours or not.
MODEL_KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "scgpt": ((WEIGHTS_NAME, CONFIG_NAME, "vocab.json", "adata.h5ad", "probe.safetensors"),
              (WEIGHTS_NAME, CONFIG_NAME)),
    "ensemble": (("ensemble.json",), ("ensemble.json",)),
    "official scgpt": (("best_model.pt", "args.json", "vocab.json"), ("best_model.pt",)),
    "hugging face": (("config.json", WEIGHTS_NAME, "pytorch_model.bin", "vocab.txt", CONFIG_NAME,
                      "tokenizer_config.json", "special_tokens_map.json"),
                     (WEIGHTS_NAME, "pytorch_model.bin")),
}  # fmt: skip
#: The files that mark a folder as holding a model, of any kind.
MODEL_MARKERS = tuple(dict.fromkeys(m for _, marks in MODEL_KINDS.values() for m in marks))


def model_entries(path: str | Path) -> list[str]:
    """The entries of the model saved in folder ``path``, of any kind; ``[]`` if it holds none.

    A kind of model is there when one of its marking files is (a Hugging Face folder: weights
    beside a ``config.json``; :data:`MODEL_KINDS`). Its entries are the files of the kinds
    found, and the member folders an ``ensemble.json`` lists; any other file of the folder
    (an ``args.json`` or ``config.json`` of the user's own, without weights) is not the model's.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        return []

    def has(name: str) -> bool:
        return os.path.lexists(path / name)

    saved = _saved_model(path)  # "DNABert", a scGPT class, None (not ours)
    found = {kind: any(has(m) for m in marks) for kind, (_, marks) in MODEL_KINDS.items()}
    found["scgpt"] = found["scgpt"] and saved != "DNABert"
    # weights beside a config.json, but not our scGPT weights beside a file of the user's
    found["hugging face"] = (found["hugging face"] and has("config.json")
                             and (has("pytorch_model.bin") or saved in (None, "DNABert")))  # fmt: skip
    names: list[str] = []
    for kind, (files, _) in MODEL_KINDS.items():
        if found[kind]:
            names += [n for n in files if has(n) and n not in names]
    return names + _ensemble_members(path) if names else []


def _saved_model(path: Path) -> str | None:
    """The class an ``omicformer_config.json`` in ``path`` names (``None``: none, damaged)."""
    try:
        model = json.loads((path / CONFIG_NAME).read_text()).get("model")
    except (OSError, ValueError, AttributeError):
        return None
    return model if isinstance(model, str) else None


def _ensemble_members(path: Path) -> list[str]:
    """The member folders an ``ensemble.json`` in ``path`` lists (none if it is damaged)."""
    try:
        members = json.loads((path / "ensemble.json").read_text()).get("members", [])
    except (OSError, ValueError, AttributeError):  # none, or damaged: only the list goes
        return []
    members = members if isinstance(members, list) else []
    return [m for m in members if isinstance(m, str) and m.startswith("member_")
            and os.sep not in m and (path / m).is_dir()]  # fmt: skip


def is_model_dir(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by :func:`save_model_dir`."""
    path = Path(path).expanduser()
    return (path / WEIGHTS_NAME).exists() and (path / CONFIG_NAME).exists()


# ---------------------------------------------------------------------------- .npy output
class NpyChunkWriter:
    """Write an ``(n, ...)`` array into a ``.npy`` file chunk by chunk, all or nothing.

    The array lives in a memory map (:func:`numpy.lib.format.open_memmap`) of a temporary file
    in the destination folder, whose disk space is reserved up front (``posix_fallocate``: a
    full disk fails at once with ``ENOSPC`` instead of crashing later on a page write). On
    success the file is flushed and renamed (:func:`os.replace`, atomic) to ``path``; on any
    error the temporary file is removed and ``path`` is left as it was.

    Parameters
    ----------
    path
        Destination ``.npy`` file; its folder must exist.
    shape, dtype
        Shape and dtype of the array.

    Examples
    --------
    >>> with NpyChunkWriter("emb.npy", (n_obs, 512)) as out:  # doctest: +SKIP
    ...     for rows, values in chunks:
    ...         out[rows] = values
    """

    def __init__(
        self, path: str | os.PathLike[str], shape: tuple[int, ...], dtype: Any = np.float32
    ) -> None:
        self.path = write_target(check_npy_path(path))  # a link is written through
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self.tmp_path = temporary_beside(self.path)
        self.array: np.memmap | None = None

    def __enter__(self) -> np.memmap:
        try:
            self.array = np.lib.format.open_memmap(
                self.tmp_path, mode="w+", dtype=self.dtype, shape=self.shape
            )
            _reserve(self.tmp_path)
        except BaseException:
            self._discard()
            raise
        return self.array

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._discard()
            return
        try:
            self.array.flush()
            self.array = None  # close the map before the rename
            os.replace(self.tmp_path, self.path)
        except BaseException:
            self._discard()
            raise

    def release(self) -> None:
        """Write the rows stored so far to disk and drop them from memory.

        Pages of a file memory map that were written stay resident (and count in the
        process's RSS) until the map is closed; flushing and ``madvise(MADV_DONTNEED)`` after
        each chunk keeps the memory of an embedding run independent of the output's size.
        """
        if self.array is None:
            return
        self.array.flush()
        mm = getattr(self.array, "_mmap", None)
        if mm is not None and hasattr(mmap, "MADV_DONTNEED"):
            mm.madvise(mmap.MADV_DONTNEED)

    def _discard(self) -> None:
        self.array = None
        self.tmp_path.unlink(missing_ok=True)


def check_npy_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as a :class:`~pathlib.Path` if it names a ``.npy`` file in an existing folder."""
    path = Path(path).expanduser()
    if path.suffix != ".npy":
        msg = f"out_file={str(path)!r} must end in .npy (a NumPy array file)."
        raise ValueError(msg)
    return check_out_path(path)


def check_out_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as a :class:`~pathlib.Path` if it is a valid ``out_file``.

    A ``.npy`` file, or a new AnnData file (``.h5ad``, or a ``.zarr`` store) whose ``obsm``
    receives the result; in an existing folder. An existing ``.npy``/``.h5ad`` file or zarr
    store there is replaced when the result is complete; any other folder is refused.
    """
    from ._obsm_out import OUT_SUFFIXES, is_zarr_store

    path = Path(path).expanduser()
    if path.suffix not in OUT_SUFFIXES:
        kinds = "; ".join(f"{k}: {v}" for k, v in OUT_SUFFIXES.items())
        msg = f"out_file={str(path)!r} must end in .npy, .h5ad or .zarr ({kinds})."
        raise ValueError(msg)
    if not path.parent.is_dir():
        msg = f"out_file={str(path)!r}: the folder {str(path.parent)!r} does not exist."
        raise FileNotFoundError(msg)
    if path.is_dir() and not (path.suffix == ".zarr" and is_zarr_store(path)):
        msg = f"out_file={str(path)!r} is a folder" + (
            " that is not a zarr store; choose a new name." if path.suffix == ".zarr" else "."
        )
        raise IsADirectoryError(msg)
    if path.suffix == ".zarr" and path.exists() and not path.is_dir():
        msg = f"out_file={str(path)!r} is a file, not a zarr store (a folder)."
        raise FileExistsError(msg)
    return path


def check_not_input(adata: Any, out_file: str | os.PathLike[str] | None) -> None:
    """``ValueError`` if ``out_file`` is the file a backed ``adata`` is read from.

    The output replaces whatever has its name once complete: writing over the input would
    swap the user's data for the result.
    """
    if out_file is None or not getattr(adata, "isbacked", False):
        return

    def resolved(path: str | os.PathLike[str]) -> str:  # "~", "..", links: the file itself
        return os.path.realpath(os.path.expanduser(os.fspath(path)))

    if resolved(adata.filename) == resolved(out_file):
        msg = (
            f"out_file={os.fspath(out_file)!r} is the file adata is read from; choose a new path "
            "(the result goes into a new file)."
        )
        raise ValueError(msg)


def _reserve(path: Path) -> None:
    """Allocate the file's blocks now, so that a full disk raises ``ENOSPC`` here."""
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        # file systems without fallocate (EOPNOTSUPP, EINVAL): the space is taken on write
    finally:
        os.close(fd)


class ChunkOutput:
    """Where a result of ``shape`` goes chunk by chunk: memory, or a file (``out_file``).

    Use as a context manager: ``write(rows, values)`` per chunk, then :meth:`result` after the
    block. With a ``.npy`` ``out_file`` the rows go to a :class:`NpyChunkWriter`, with
    ``.h5ad``/``.zarr`` to ``obsm[key]`` of a new AnnData file
    (:class:`~omicformer._core._obsm_out.AnnDataChunkWriter`, which needs ``obs_names``); the
    file appears only when the block ends without error. Otherwise an in-memory array.

    Parameters
    ----------
    shape, dtype
        Shape and dtype of the whole result.
    out_file
        ``None`` (memory), a ``.npy``, ``.h5ad`` or ``.zarr`` path (checked here, before any
        work).
    obs_names, key
        Cell names and ``obsm`` key of an ``.h5ad``/``.zarr`` output.
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        out_file: str | os.PathLike[str] | None = None,
        dtype: Any = np.float32,
        *,
        obs_names: Any = None,
        key: str = "X_scgpt",
    ) -> None:
        self.shape, self.dtype = tuple(int(n) for n in shape), np.dtype(dtype)
        self.writer: Any = None
        self.array: Any = None
        if out_file is None:
            return
        path = check_out_path(out_file)
        if path.suffix == ".npy":
            self.writer = NpyChunkWriter(path, shape, dtype)
        else:
            from ._obsm_out import AnnDataChunkWriter

            if obs_names is None:
                obs_names = [str(i) for i in range(self.shape[0])]
            self.writer = AnnDataChunkWriter(path, self.shape, dtype, obs_names, key)

    @property
    def to_file(self) -> bool:
        """Whether the result goes to a file."""
        return self.writer is not None

    def __enter__(self) -> ChunkOutput:
        if self.writer is None:
            self.array = np.zeros(self.shape, dtype=self.dtype)
        else:
            self.array = self.writer.__enter__()
        return self

    def write(self, rows: np.ndarray, values: np.ndarray) -> None:
        """Store ``values`` at ``rows`` (with a file: on disk, not kept in memory)."""
        self.array[rows] = values
        if self.writer is not None:
            self.writer.release()

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.writer is not None:
            self.array = None
            self.writer.__exit__(exc_type, exc, tb)

    def result(self) -> Any:
        """The array: in memory, or the finished file's, read-only.

        A memory map for ``.npy`` and ``.h5ad``, a :class:`zarr.Array` for ``.zarr``.
        """
        if self.writer is None:
            return self.array
        if isinstance(self.writer, NpyChunkWriter):
            return np.load(self.writer.path, mmap_mode="r")
        return self.writer.result()
