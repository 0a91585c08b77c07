"""Ctrl-C in `predict` and `prepare_tfds`: one line that says what the command left, exit code
130, no traceback (DESIGN.md §4); `train` and `reproduce` are tested in test_train_resume.py and
test_interruption.py. The interrupt is raised where each command spends its time (reading a
dataset, downloading one): for `predict` in a subprocess that runs it as `python -m` does."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from softlabel_ood.data import prepare_tfds
from softlabel_ood.workdir import run_dir
from tests.train_helpers import REPO, snapshot


def _run_interrupted(module: str, patch: str, *args: str) -> subprocess.CompletedProcess:
    """`python -m module args` with `patch` (Python) run first: it makes a function the command
    calls raise KeyboardInterrupt, as Ctrl-C would while that function runs."""
    program = "\n".join([
        "import runpy, sys", patch, f"sys.argv = [{module!r}, *{list(args)!r}]",
        f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"])
    return subprocess.run([sys.executable, "-c", program], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_predict_interrupted_while_reading_data_keeps_the_predictions(finished_tiny_run,
                                                                      tmp_path):
    workdir = tmp_path / "ce"
    shutil.copytree(finished_tiny_run, workdir)
    predictions = run_dir.predictions_path(workdir)
    before = snapshot(workdir)
    result = _run_interrupted(
        "softlabel_ood.predict",
        "from softlabel_ood.data import run_data\n"
        "def interrupted(*args, **kwargs): raise KeyboardInterrupt\n"
        "run_data.load_id = interrupted",
        f"--workdir={workdir}")
    assert result.returncode == 130, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"interrupted; {predictions} is whole, the old predictions or the new (never a mix), "
        f"and the same command writes them again")
    assert snapshot(workdir) == before


def test_prepare_tfds_interrupted_removes_the_set_it_was_preparing(tmp_path, monkeypatch,
                                                                  capsys):
    data_dir = tmp_path / "tfds"

    def interrupted(name, builder):
        (builder.data_path / "partial.tfrecord").parent.mkdir(parents=True)
        (builder.data_path / "partial.tfrecord").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_tfds, "_download_and_prepare", interrupted)
    monkeypatch.setattr(prepare_tfds, "check_reachable", lambda name, builder: None)
    with pytest.raises(SystemExit) as stopped:
        prepare_tfds.main(["mnist:3.0.1", f"--data_dir={data_dir}"])
    assert stopped.value.code == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "interrupted; the set it was preparing is removed (those it finished stay), and the "
        "same command prepares the rest")
    assert not data_dir.exists()
