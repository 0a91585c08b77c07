"""Toy data for input tests, and JAX scripts run on 8 fake CPU devices or as 2 processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
from jax.sharding import Mesh

from softlabel_ood.data.datasets import ArrayDataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def indexed_dataset(n: int, shape=(4, 4, 1), name="toy") -> ArrayDataset:
    """Every image holds its own index (mod 251), so a batch says which examples it carries."""
    images = (np.arange(n, dtype=np.uint32)[:, None, None, None] % 251 * np.ones(shape)
              ).astype(np.uint8)
    return ArrayDataset(images=images, labels=np.arange(n, dtype=np.int32), name=name,
                        split="train")


def one_device_mesh() -> Mesh:
    return Mesh(np.array(jax.devices()[:1]), ("data",))


def _env(devices: int) -> dict:
    return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
            "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO}


def run_on_devices(script: str, devices: int = 8) -> dict:
    """Runs `script` with `devices` fake CPU devices; returns the JSON of its last output line."""
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=_env(devices),
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_two_processes(script: str, devices_each: int = 2) -> list[dict]:
    """Runs `script` as processes 0 and 1 (argv: process id, coordinator port) on localhost."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i), str(port)], cwd=REPO,
                              env=_env(devices_each), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr[-2000:]
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    return outs


# Script pieces: the start of a process of a 2-process run (argv: process id, coordinator port),
# and a 40-example toy set whose images and labels hold each example's index, on a mesh of all
# devices.
DISTRIBUTED_START = """
import json, sys
import jax, numpy as np
jax.distributed.initialize(coordinator_address=f"localhost:{sys.argv[2]}", num_processes=2,
                           process_id=int(sys.argv[1]))
"""
TOY_DATA = """
import json
import jax, numpy as np
from softlabel_ood.data.datasets import ArrayDataset
from softlabel_ood.training import runs_axis
mesh = runs_axis.data_mesh()
n = 40
images = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
data = ArrayDataset(images, np.arange(n, dtype=np.int32), "toy", "train")
"""
