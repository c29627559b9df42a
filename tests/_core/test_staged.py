"""staged_folder: a model folder is replaced whole or not at all."""

import errno
import os
import signal

import pytest

from omicformer._core import _staged
from omicformer._core._staged import staged_folder


def _save(path, files, *, error=None, stale=()):
    """Write ``files`` ({name: text}) through staged_folder; raise ``error`` after them."""
    with staged_folder(path, stale=stale) as stage:
        for name, text in files.items():
            (stage / name).write_text(text)
        if error is not None:
            raise error


def _contents(folder):
    return {p.name: p.read_text() for p in sorted(folder.iterdir())}


@pytest.fixture
def saved(tmp_path):
    """A folder holding an old model (weights, config, an AnnData) and a user's own file."""
    folder = tmp_path / "model"
    folder.mkdir()
    for name, text in {"weights": "old w", "config": "old c", "adata.h5ad": "old a",
                       "notes.txt": "mine"}.items():  # fmt: skip
        (folder / name).write_text(text)
    return folder


def test_success_moves_the_new_files_in_and_the_stale_ones_out(saved):
    with staged_folder(saved, stale=["weights", "config", "adata.h5ad", "absent"]) as stage:
        assert stage.parent == saved and stage.name.startswith(".")
        assert list(stage.iterdir()) == []
        (stage / "weights").write_text("new w")
        (stage / "config").write_text("new c")
        (stage / "member_0").mkdir()
        (stage / "member_0" / "weights").write_text("new m")
    # the old AnnData is gone (stale), the user's file stays, nothing hidden is left
    assert sorted(p.name for p in saved.iterdir()) == ["config", "member_0", "notes.txt",
                                                      "weights"]  # fmt: skip
    assert (saved / "weights").read_text() == "new w"
    assert (saved / "member_0" / "weights").read_text() == "new m"
    assert (saved / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"),
                                   KeyboardInterrupt()])  # fmt: skip
def test_a_failed_write_leaves_the_old_folder_as_it_was(saved, error):
    before = _contents(saved)
    with pytest.raises(type(error)):
        _save(saved, {"weights": "half"}, error=error, stale=["weights", "adata.h5ad"])
    assert _contents(saved) == before  # no hidden folder left either


def test_a_failed_first_save_leaves_no_folder(tmp_path):
    full = OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OSError, match="No space"):
        _save(tmp_path / "a" / "b", {"weights": "half"}, error=full)
    assert list(tmp_path.iterdir()) == []
    _save(tmp_path / "a" / "b", {"weights": "w"})
    assert _contents(tmp_path / "a" / "b") == {"weights": "w"}


def test_a_failed_move_in_puts_the_old_files_back(saved, monkeypatch):
    before = _contents(saved)
    real, calls = os.replace, []

    def failing(src, dst):
        calls.append(dst)
        if len(calls) == 4:  # 2 old entries moved out, 1 new moved in, then a failure
            raise OSError(errno.EIO, "Input/output error")
        real(src, dst)

    monkeypatch.setattr(_staged.os, "replace", failing)
    with pytest.raises(OSError, match="Input/output"):
        _save(saved, {"config": "new c", "weights": "new w"})
    assert len(calls) == 4 + 3  # the failure, then the 3 entries moved back
    assert _contents(saved) == before


def test_ctrl_c_while_moving_in_waits_until_the_model_is_whole(saved, monkeypatch):
    real, calls = os.replace, []

    def interrupted(src, dst):
        calls.append(dst)
        if len(calls) == 1:
            signal.raise_signal(signal.SIGINT)  # the user presses Ctrl-C mid-swap
        real(src, dst)

    monkeypatch.setattr(_staged.os, "replace", interrupted)
    try:
        _save(saved, {"config": "new c", "weights": "new w"})
    except BaseException as err:  # a KeyboardInterrupt must not end pytest
        caught = err
    assert isinstance(caught, KeyboardInterrupt)  # delivered, after the swap
    assert len(calls) == 4
    assert _contents(saved) == {"adata.h5ad": "old a", "config": "new c", "notes.txt": "mine",
                                "weights": "new w"}  # fmt: skip
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"), staged_folder(tmp_path / "f"):
        pass


def test_a_failed_first_save_through_dot_dot_removes_the_folders_it_made(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OSError, match="No space"):
        _save("new/../m", {"w": "half"}, error=OSError(errno.ENOSPC, "No space left on device"))
    assert list(tmp_path.iterdir()) == []  # "new" too, made to reach "new/../m"


def test_ctrl_c_while_cleaning_up_waits_until_nothing_is_left(saved, monkeypatch):
    # a second Ctrl-C while a failed save removed its stage left the stage behind
    real = _staged.shutil.rmtree

    def interrupted(folder, *args, **kwargs):
        signal.raise_signal(signal.SIGINT)
        real(folder, *args, **kwargs)

    before = _contents(saved)
    monkeypatch.setattr(_staged.shutil, "rmtree", interrupted)
    try:
        _save(saved, {"weights": "half"}, error=OSError(errno.ENOSPC, "No space left on device"))
    except BaseException as err:  # a KeyboardInterrupt must not end pytest
        caught = err
    assert isinstance(caught, KeyboardInterrupt)
    assert _contents(saved) == before


def test_the_hidden_folders_of_dead_saves_on_this_host_are_removed(saved):
    import socket
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    host = socket.gethostname()
    left = [f".omicformer-saving-{host}-{dead}-ab_c1", f".omicformer-replaced-{host}-{dead}-x2"]
    kept = [f".omicformer-saving-{host}-{os.getpid()}-live",  # a save running now
            f".omicformer-saving-other-host-{dead}-abc",  # another machine's, maybe running
            ".omicformer-saving-mine"]  # not named as ours  # fmt: skip
    for name in left + kept:
        (saved / name).mkdir()
        (saved / name / "weights").write_text("partial")
    _save(saved, {"weights": "new w"})
    hidden = sorted(p.name for p in saved.iterdir() if p.name.startswith("."))
    assert hidden == sorted(kept)


def test_ctrl_c_while_the_stage_is_made_leaves_nothing(tmp_path, monkeypatch):
    real = _staged.tempfile.mkdtemp

    def interrupted(*args, **kwargs):
        signal.raise_signal(signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(_staged.tempfile, "mkdtemp", interrupted)
    try:
        _save(tmp_path / "new" / "m", {"weights": "w"})
    except BaseException as err:  # a KeyboardInterrupt must not end pytest
        caught = err
    assert isinstance(caught, KeyboardInterrupt)
    assert list(tmp_path.iterdir()) == []  # the stage and the folders made for it went


def test_model_entries_tell_a_model_from_files_of_the_users_own(tmp_path):
    from omicformer._core._io import model_entries

    (tmp_path / "run").mkdir()  # a script's output folder: its own args.json and config.json
    for name in ("args.json", "config.json", "vocab.txt", "notes.txt"):
        (tmp_path / "run" / name).write_text("{}")
    assert model_entries(tmp_path / "run") == []
    (tmp_path / "run" / "best_model.pt").write_text("")  # now an official scGPT folder
    assert sorted(model_entries(tmp_path / "run")) == ["args.json", "best_model.pt"]
    (tmp_path / "run" / "best_model.pt").unlink()
    (tmp_path / "run" / "model.safetensors").write_text("")  # our scGPT save beside them
    (tmp_path / "run" / "omicformer_config.json").write_text('{"model": "ScGPT"}')
    assert sorted(model_entries(tmp_path / "run")) == ["model.safetensors",
                                                       "omicformer_config.json"]  # fmt: skip
    (tmp_path / "run" / "omicformer_config.json").write_text('{"model": "DNABert"}')  # ours
    assert sorted(model_entries(tmp_path / "run")) == [
        "config.json", "model.safetensors", "omicformer_config.json", "vocab.txt"]  # fmt: skip
