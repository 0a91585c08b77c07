"""A run killed with SIGKILL, or stopped with Ctrl-C (SIGINT), and started again ends exactly where
an uninterrupted run ends."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from softlabel_ood.workdir import predictions
from tests.train_helpers import REPO, sigint_as_in_a_terminal

ARGS = [
    "--config=configs/digits.py", "--config.num_epochs=12", "--config.num_train_examples=256",
    "--config.batch_size=32", "--config.num_ood_examples=64",
    "--config.ood_datasets=('flower_patches','gaussian')", "--config.ood_groups.far=('gaussian',)",
    "--config.checkpoint_every_steps=8", "--config.checkpoint_min_seconds=0",
    "--config.log_every_steps=8",
]


def _train_command(workdir, steps_per_call):
    return [sys.executable, "-m", "softlabel_ood.train", *ARGS,
            f"--config.steps_per_call={steps_per_call}", f"--workdir={workdir}"]


def _checkpoint_steps(workdir):
    ckpt = workdir / "checkpoints"
    return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) if ckpt.exists() else []


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """steps_per_call -> the workdir of the run trained without a stop (trained once each)."""
    runs = {}

    def run(steps_per_call):
        if steps_per_call not in runs:
            workdir = tmp_path_factory.mktemp("whole") / "run"
            subprocess.run(_train_command(workdir, steps_per_call), cwd=REPO, check=True,
                           capture_output=True)
            runs[steps_per_call] = workdir
        return runs[steps_per_call]

    return run


def _stop_after_first_checkpoint(workdir, steps_per_call, stop_signal) -> tuple[int, str]:
    """Starts the run, sends `stop_signal` once it saved its first checkpoint; (exit code,
    stderr)."""
    proc = subprocess.Popen(_train_command(workdir, steps_per_call), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_as_in_a_terminal)
    deadline = time.time() + 300
    while not _checkpoint_steps(workdir) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(stop_signal)
    stderr = proc.communicate(timeout=300)[1]
    stopped_at = _checkpoint_steps(workdir)
    assert stopped_at, "the run ended before its first checkpoint"
    assert stopped_at[-1] < 12 * 8, "the run finished before it could be stopped"
    assert not (workdir / "DONE").exists()
    return proc.returncode, stderr


# 0: one step per call (the CPU default); 5: calls of up to 5 steps, cut at the checkpoints
# every 8 steps, so the kill that follows the first checkpoint lands inside a call.
@pytest.mark.parametrize("steps_per_call", [0, 5])
def test_sigkill_then_resume_is_bitwise_identical(tmp_path, steps_per_call, uninterrupted):
    whole, resumed = uninterrupted(steps_per_call), tmp_path / "resumed"
    _stop_after_first_checkpoint(resumed, steps_per_call, signal.SIGKILL)
    subprocess.run(_train_command(resumed, steps_per_call), cwd=REPO, check=True,
                   capture_output=True)
    _assert_same_run(whole, resumed)


def test_ctrl_c_is_one_line_naming_the_step_the_next_run_resumes_from(tmp_path, uninterrupted):
    whole, resumed = uninterrupted(0), tmp_path / "resumed"
    code, stderr = _stop_after_first_checkpoint(resumed, 0, signal.SIGINT)
    assert code == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    last = [line for line in stderr.splitlines() if line.strip()][-1]
    match = re.fullmatch(r"interrupted at step (\d+); the next run resumes from step (\d+)", last)
    assert match, stderr[-3000:]
    reached, resume = map(int, match.groups())
    # The checkpoint being written when the signal came is complete: the latest on disk, and
    # nothing half-written beside it.
    assert resume == _checkpoint_steps(resumed)[-1]
    assert resume <= reached < 12 * 8
    assert [p.name for p in (resumed / "checkpoints").iterdir() if not p.name.isdigit()] == []
    rerun = subprocess.run(_train_command(resumed, 0), cwd=REPO, check=True,
                           capture_output=True, text=True)
    assert f"resuming from step {resume} of 96" in rerun.stdout
    _assert_same_run(whole, resumed)


def _assert_same_run(whole, resumed) -> None:
    a = predictions.read(whole / "predictions")
    b = predictions.read(resumed / "predictions")
    assert list(a.splits) == list(b.splits)
    for name in a.splits:
        np.testing.assert_array_equal(a.splits[name].logits, b.splits[name].logits, err_msg=name)
        np.testing.assert_array_equal(a.splits[name].features, b.splits[name].features)
    # The metrics log reads as one run: the resumed run rewound what the killed one logged late.
    assert (whole / "metrics.jsonl").read_text().count("\n") == \
        (resumed / "metrics.jsonl").read_text().count("\n")
