"""Small configs and subprocess helpers shared by the training-side tests."""

from __future__ import annotations

import hashlib
import os
import pathlib
import signal
import subprocess
import sys

import ml_collections

REPO = pathlib.Path(__file__).resolve().parents[1]


def tiny_digits_config(method: str = "ce", /, **overrides) -> ml_collections.ConfigDict:
    """The digits config cut down to 2 short epochs: seconds per run on a CPU."""
    from softlabel_ood.configs import digits

    config = digits.get_config(method)
    config.num_epochs = 2
    config.num_train_examples = 256
    config.batch_size = 32
    config.num_ood_examples = 64
    config.ood_datasets = ("flower_patches", "gaussian")
    config.oe.batch_size = 32
    config.checkpoint_every_steps = 4
    config.checkpoint_min_seconds = 0.0  # a checkpoint at every multiple: tests count on them
    config.log_every_steps = 4
    for name, value in overrides.items():
        target = config
        *parents, leaf = name.split(".")
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    given = {name.split(".")[1] for name in overrides if name.startswith("ood_groups.")}
    return with_groups_of_its_sets(config, keep=given)


def with_groups_of_its_sets(config: ml_collections.ConfigDict,
                            keep=()) -> ml_collections.ConfigDict:
    """The family's OOD groups (those not in `keep`) cut to the sets the config evaluates: a
    group may name only those."""
    for group, names in config.ood_groups.items():
        if group not in keep:
            config.ood_groups[group] = tuple(n for n in names if n in config.ood_datasets)
    return config


def sigint_as_in_a_terminal() -> None:
    """A child's SIGINT at its default, as a terminal leaves it: pytest started in the background
    of a non-interactive shell inherits it ignored, and Python then never raises
    KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_module(module: str, *args: str, env: dict | None = None, **kwargs):
    """`python -m module args...` from the repository root, output captured."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, **kwargs)


def run_processes(module: str, *args: str, processes: int, devices_each: int,
                  timeout: int = 600) -> list[str]:
    """`python -m module args...` as `processes` JAX processes on localhost with `devices_each`
    fake CPU devices each; asserts that all exit 0 and returns their combined outputs."""
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices_each}"}
    procs = [subprocess.Popen(
        [sys.executable, "-m", module, *args, f"--coordinator_address=localhost:{port}",
         f"--num_processes={processes}", f"--process_id={i}"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(processes)]
    outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]
    return outputs


def refusal(capsys, call) -> str:
    """Runs `call` as a command would; returns its one stderr line after checking exit code 2."""
    import pytest

    from softlabel_ood import cli_errors

    with pytest.raises(SystemExit) as exit_info:
        cli_errors.exit_on_user_error(call)()
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == "", out  # no progress line before the refusal, on either stream
    assert err.count("\n") == 1, err
    assert err.endswith("\n")
    assert err.startswith("error: ")
    return err.strip()


def one_step_program(model, config, mesh, teacher_model=None):
    """`step(state, hparams, batch, teacher_variables) -> (state, metrics)` of one run: the
    train program with R = 1 and one host-fed step per call."""
    import jax
    import numpy as np
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from softlabel_ood.training import runs_axis
    from softlabel_ood.training import train_step as ts

    program = ts.make_train_program(model, config, mesh, runs=1, steps_per_call=1,
                                    teacher_model=teacher_model)
    feed_sharding = NamedSharding(mesh, P(runs_axis.RUNS_AXIS, None, runs_axis.DATA_AXIS))

    def step(state, hp, batch, teacher_variables):
        feed = {k: jax.device_put(np.asarray(v)[None, None], feed_sharding)
                for k, v in batch.items()}
        teachers = None if teacher_variables is None else runs_axis.stack([teacher_variables],
                                                                          mesh)
        states, metrics = program(runs_axis.stack([state], mesh), runs_axis.stack([hp], mesh),
                                  teachers, {}, feed, np.int32(0), np.int32(1))
        return runs_axis.member(states, 0, mesh), {k: v[0, 0] for k, v in metrics.items()}

    return step


def snapshot(*paths) -> dict[str, str | None]:
    """Every file and directory under `paths`, with a hash of each file's bytes (None for a path
    that does not exist): equal snapshots mean that nothing was written, removed or changed."""
    state = {}
    for root in map(pathlib.Path, paths):
        if not root.exists():
            state[str(root)] = None
            continue
        for path in sorted([root, *root.rglob("*")]):
            state[str(path)] = (hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file()
                                else "directory")
    return state
