"""A run killed with SIGKILL and started again ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from softlabel_ood.workdir import predictions
from tests.train_helpers import REPO

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


# 0: one step per call (the CPU default); 5: calls of up to 5 steps, cut at the checkpoints
# every 8 steps, so the kill that follows the first checkpoint lands inside a call.
@pytest.mark.parametrize("steps_per_call", [0, 5])
def test_sigkill_then_resume_is_bitwise_identical(tmp_path, steps_per_call):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    subprocess.run(_train_command(whole, steps_per_call), cwd=REPO, check=True,
                   capture_output=True)

    proc = subprocess.Popen(_train_command(resumed, steps_per_call), cwd=REPO,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not _checkpoint_steps(resumed) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _checkpoint_steps(resumed)
    assert killed_at, "the run ended before its first checkpoint"
    assert killed_at[-1] < 12 * 8, "the run finished before it could be killed"
    assert not (resumed / "DONE").exists()

    subprocess.run(_train_command(resumed, steps_per_call), cwd=REPO, check=True,
                   capture_output=True)
    a = predictions.read(whole / "predictions")
    b = predictions.read(resumed / "predictions")
    assert list(a.splits) == list(b.splits)
    for name in a.splits:
        np.testing.assert_array_equal(a.splits[name].logits, b.splits[name].logits, err_msg=name)
        np.testing.assert_array_equal(a.splits[name].features, b.splits[name].features)
    # The metrics log reads as one run: the resumed run rewound what the killed one logged late.
    assert (whole / "metrics.jsonl").read_text().count("\n") == \
        (resumed / "metrics.jsonl").read_text().count("\n")
