"""Worker processes: how many, and a grid trained by two of them equals one trained in-process."""

from __future__ import annotations

import multiprocessing
import os
import re
import signal

import jax
import numpy as np
import pytest

from softlabel_ood import reproduce
from softlabel_ood.configs import grid
from softlabel_ood.experiment import workers
from softlabel_ood.workdir import predictions
from tests.train_helpers import tiny_digits_config


def _grid(value):
    g = tiny_digits_config().grid
    g.workers = value
    return g


def test_worker_count_by_platform_and_its_refusals(monkeypatch):
    monkeypatch.setattr(workers.os, "cpu_count", lambda: 8)
    assert workers.count(_grid(0)) == workers.AUTO_WORKERS_CPU == 2
    # Populations of several runs already keep the cores busy in one process.
    assert workers.count(_grid(0), population_size=4) == 1
    assert workers.count(_grid(3), population_size=4) == 3
    assert workers.count(_grid(3)) == 3
    monkeypatch.setattr(workers.os, "cpu_count", lambda: 1)
    assert workers.count(_grid(0)) == 1  # never more processes than cores by default
    with pytest.raises(grid.GridError, match=r"^config\.grid\.workers: -1 must be >= 0"):
        workers.count(_grid(-1))

    monkeypatch.setattr(workers.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert workers.count(_grid(0)) == 1  # one process owns an accelerator's memory
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    assert workers.count(_grid(0)) == 1
    with pytest.raises(grid.GridError, match=r"^config\.grid\.workers: 2 worker processes "
                                             r"cannot share a grid across 2 JAX processes"):
        workers.count(_grid(2))


def _run(tmp_path, name, worker_count):
    config = tiny_digits_config(num_epochs=1, ood_datasets=("gaussian",))
    config.grid.seeds = (0,)
    config.grid.runs = [
        grid.run_spec("ce", "ce"),
        grid.run_spec("diverges", "ls", label_smoothing=0.1, learning_rate=1e6),
        grid.run_spec("kd_ce", "kd", teacher="ce"),
        grid.run_spec("ls", "ls", label_smoothing=0.2),
    ]
    config.grid.workers = worker_count
    with pytest.raises(reproduce.RunsFailedError) as failure:
        reproduce.run_grid(config, str(tmp_path / name))
    return str(failure.value)


def test_two_workers_train_a_grid_bitwise_as_one_process_does(tmp_path, capsys):
    """ce, a run that diverges, a kd student of ce (which must wait for its teacher) and ls:
    the same predictions, bit for bit, and the same failure, named the same way."""
    alone = _run(tmp_path, "alone", 1)
    capsys.readouterr()
    two = _run(tmp_path, "two", 2)
    err = capsys.readouterr().err
    assert two == alone
    assert two.startswith("1 of 4 runs did not finish: diverges_seed0 failed: ")
    # Numbered in the order the runs end, whichever worker ends them: 1, 2, 3, 4.
    lines = re.findall(r"^\[(\d+)/4\] (\S+) \((\w+)\): (trained in|failed: )", err, re.M)
    assert [int(k) for k, *_ in lines] == [1, 2, 3, 4]
    assert sorted((run, method, what) for _, run, method, what in lines) == [
        ("ce_seed0", "ce", "trained in"), ("diverges_seed0", "ls", "failed: "),
        ("kd_ce_seed0", "kd", "trained in"), ("ls_seed0", "ls", "trained in")]
    assert lines[0][1] in ("ce_seed0", "diverges_seed0")  # the two started first
    assert [run for _, run, *_ in lines].index("kd_ce_seed0") > [
        run for _, run, *_ in lines].index("ce_seed0")  # the student waits for its teacher
    for run in ("ce_seed0", "kd_ce_seed0", "ls_seed0"):
        a = predictions.read(tmp_path / "alone" / "runs" / run / "predictions")
        b = predictions.read(tmp_path / "two" / "runs" / run / "predictions")
        assert a.splits.keys() == b.splits.keys()
        for split in a.splits:
            np.testing.assert_array_equal(a.splits[split].logits, b.splits[split].logits,
                                          err_msg=f"{run} {split}")
            np.testing.assert_array_equal(a.splits[split].features, b.splits[split].features,
                                          err_msg=f"{run} {split}")


def test_a_worker_ignores_ctrl_c_from_its_start(tmp_path):
    """A SIGINT that reaches a worker while it is still starting (importing JAX, before its
    initializer runs) ends nothing: the worker trains its population as if none came."""
    config = tiny_digits_config(num_epochs=1, ood_datasets=("gaussian",))
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # a terminal's parent
    try:
        with workers.Pool(2) as pool:
            pool.start(0, [config], [str(tmp_path / "run")], config.grid)
            started = multiprocessing.active_children()
            assert started, "the pool spawned no worker"
            for worker in started:
                os.kill(worker.pid, signal.SIGINT)
            [(population, failures, _)] = list(pool.finished())
    finally:
        signal.signal(signal.SIGINT, previous)
    assert (population, failures) == (0, [None])
    assert predictions.read(tmp_path / "run" / "predictions").splits


def _interrupted_while_its_workers_start(config, workdir) -> None:
    with workers.Pool(2) as pool:
        pool.start(0, [config], [workdir], config.grid)
        for worker in multiprocessing.active_children():
            os.kill(worker.pid, signal.SIGINT)  # what a terminal sends every process
        raise KeyboardInterrupt  # and the parent's own


def test_a_worker_still_starting_when_the_parent_is_interrupted_trains_nothing(tmp_path):
    """Ctrl-C while the workers start: the parent stops, and the population it had handed to a
    worker that was still importing is never begun (its SIGINT was ignored then)."""
    config = tiny_digits_config(num_epochs=1, ood_datasets=("gaussian",))
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            _interrupted_while_its_workers_start(config, str(tmp_path / "run"))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert not (tmp_path / "run").exists()
