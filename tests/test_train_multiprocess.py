"""Two JAX processes on localhost train the same run as one process does."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from softlabel_ood.workdir import predictions
from tests.train_helpers import REPO

ARGS = [
    "--config=configs/digits.py", "--config.num_epochs=2", "--config.num_train_examples=256",
    "--config.batch_size=32", "--config.eval_batch_size=64", "--config.num_ood_examples=64",
    "--config.ood_datasets=('gaussian',)", "--config.ood_groups.near=()",
    "--config.ood_groups.far=('gaussian',)", "--config.checkpoint_every_steps=8",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


# The training set on the devices (the default), and fed from the host.
@pytest.mark.parametrize("device_data_max_mb", [2048, 0])
def test_two_processes_match_one_process(tmp_path, device_data_max_mb):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    one, two = tmp_path / "one", tmp_path / "two"
    args = [*ARGS, f"--config.device_data_max_mb={device_data_max_mb}"]
    subprocess.run([sys.executable, "-m", "softlabel_ood.train", *args, f"--workdir={one}"],
                   cwd=REPO, env=env, check=True, capture_output=True)
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "softlabel_ood.train", *args, f"--workdir={two}",
             f"--coordinator_address=localhost:{port}", "--num_processes=2",
             f"--process_id={i}"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]
    a = predictions.read(one / "predictions")
    b = predictions.read(two / "predictions")
    for name in a.splits:
        # The two processes reduce the global batch in another order: equal up to float rounding.
        np.testing.assert_allclose(a.splits[name].logits, b.splits[name].logits,
                                   rtol=1e-4, atol=1e-4, err_msg=name)
        np.testing.assert_array_equal(a.splits[name].labels, b.splits[name].labels)
