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
