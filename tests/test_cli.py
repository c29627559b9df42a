import runpy
import subprocess
import sys
from pathlib import Path

import pytest

import omicformer


def test_python_m_omicformer_runs_the_cli(monkeypatch, capsys):
    # `python -m omicformer ...` is the `omicformer` console script
    monkeypatch.setattr(sys, "argv", ["omicformer", "--help"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_module("omicformer", run_name="__main__", alter_sys=True)
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: omicformer")
    assert "scgpt" in out and "dnabert" in out and "demo" in out


def test_python_m_omicformer_exit_status():
    src = str(Path(omicformer.__file__).parents[1])
    run = subprocess.run(
        [sys.executable, "-m", "omicformer", "scgpt"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": src, "PATH": ""},
        check=False,
    )
    assert run.returncode == 2  # argparse: a subcommand is required
    assert "usage: omicformer scgpt" in run.stderr


def test_ctrl_c_ends_a_command_with_one_line_and_status_130(monkeypatch, capsys, tmp_path):
    # a traceback (with Lightning's SystemExit chain) and status 1, the status of a fixable error
    import anndata as ad
    import numpy as np

    from omicformer.cli import main
    from omicformer.scgpt import tl

    ad.AnnData(np.ones((3, 2), dtype=np.float32)).write_h5ad(tmp_path / "in.h5ad")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tl, "embed", interrupted)
    argv = ["scgpt", "embed", str(tmp_path / "in.h5ad"), str(tmp_path / "out.h5ad")]
    try:
        status = main(argv)
    except KeyboardInterrupt:  # escaping, it would stop the test session
        pytest.fail("Ctrl-C escaped omicformer's main()")
    assert status == 130
    out, err = capsys.readouterr()
    assert (out, err) == ("", "omicformer scgpt embed: interrupted\n")
    assert not (tmp_path / "out.h5ad").exists()
