"""Populations: how a grid is cut into them, and runs trained together equal runs trained alone."""

from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from etils import epath

from softlabel_ood import reproduce
from softlabel_ood.configs import grid
from softlabel_ood.data import run_data
from softlabel_ood.experiment import populations
from softlabel_ood.training import checkpointing, run_start, runs_axis, train_loop, train_step
from softlabel_ood.workdir import predictions
from tests.jax_processes import run_on_devices
from tests.train_helpers import REPO, run_module, run_processes, tiny_digits_config

spec = grid.run_spec
# A run's batch split over several devices sums its gradients and BatchNorm statistics in another
# order than on one device: after one step the parameters agree to float32 rounding (STEP_ATOL,
# absolute, for parameters of order 0.1-1). Runs of a population on one device, or with whole
# runs per device, compute exactly what they compute alone: those agree bit for bit.
STEP_ATOL = 1e-6


def _planned(runs, seeds, tmp_path, **grid_fields):
    config = tiny_digits_config()
    config.grid.runs, config.grid.seeds = runs, seeds
    for key, value in grid_fields.items():
        config.grid[key] = value
    planned = reproduce.planned_runs(config, tmp_path)
    return [c for _, c in planned], [info.run for info, _ in planned], \
        [info.directory for info, _ in planned]


def test_a_grid_is_cut_into_stages_and_families(tmp_path):
    runs = [spec("ce", "ce"), spec("ls0.1", "ls", label_smoothing=0.1), spec("oe", "oe"),
            spec("kd_ce", "kd", teacher="ce"), spec("kd_oe", "kd", teacher="oe"),
            spec("kdi", "kd_incorrect", teacher="ce", label_smoothing=0.3),
            spec("ft", "oe", init_from="ce"), spec("kd_ft", "kd", teacher="ft")]
    configs, names, dirs = _planned(runs, (0, 1), tmp_path)
    assert populations.stages(configs, dirs)[:8] == [0, 0, 0, 1, 1, 1, 1, 2]
    groups = [[names[i] for i in group] for group in populations.form(configs, dirs, 12)]
    assert groups == [
        ["ce_seed0", "ls0.1_seed0", "ce_seed1", "ls0.1_seed1"],  # ce is ls with α = 0
        ["oe_seed0", "oe_seed1"],
        ["kd_ce_seed0", "kd_oe_seed0", "kd_ce_seed1", "kd_oe_seed1"],
        ["kdi_seed0", "kdi_seed1"],
        ["ft_seed0", "ft_seed1"],  # OE fine-tuning waits for ce
        ["kd_ft_seed0", "kd_ft_seed1"],
    ]
    # One at a time keeps the grid's own order, seed by seed.
    assert [names[g[0]] for g in populations.form(configs, dirs, 1)] == names


def test_large_families_are_cut_into_near_equal_populations(tmp_path):
    runs = [spec("ce", "ce")] + [spec(f"ls{a}", "ls", label_smoothing=a) for a in (.1, .2, .3, .4)]
    configs, _, dirs = _planned(runs, (0, 1, 2), tmp_path)  # 15 runs of one family
    assert [len(g) for g in populations.form(configs, dirs, 4)] == [4, 4, 4, 3]
    assert [len(g) for g in populations.form(configs, dirs, 12)] == [8, 7]
    assert sorted(i for g in populations.form(configs, dirs, 12) for i in g) == list(range(15))


def test_runs_that_differ_in_shapes_or_steps_never_share_a_population(tmp_path):
    runs = [spec("ce", "ce"), spec("ce_b", "ce", batch_size=64), spec("ce_e", "ce", num_epochs=3),
            spec("ce_m", "ce", model="wrn16_2"), spec("ls", "ls", label_smoothing=0.1)]
    configs, names, dirs = _planned(runs, (0,), tmp_path)
    groups = [[names[i] for i in g] for g in populations.form(configs, dirs, 12)]
    assert groups == [["ce_seed0", "ls_seed0"], ["ce_b_seed0"], ["ce_e_seed0"], ["ce_m_seed0"]]


def test_runs_go_over_devices_first(tmp_path):
    assert populations.run_devices(0, 12, 8) == 4  # the most that divide 12 runs and 8 devices
    assert populations.run_devices(0, 16, 8) == 8  # whole runs on every device
    assert populations.run_devices(1, 12, 8) == 1  # an explicit 1: every batch over 8 devices
    assert populations.run_devices(8, 12, 8) == 4
    assert populations.run_devices(0, 3, 8) == 1
    runs = [spec("ce", "ce")] + [spec(f"ls{a}", "ls", label_smoothing=a) for a in (.1, .2)]
    configs, _, dirs = _planned(runs, (0, 1, 2, 3, 4, 5), tmp_path)  # 18 runs of one program
    # 2 runs per device on 4 devices: populations of 8 in whole multiples of 4, the rest last.
    assert [len(g) for g in populations.form(configs, dirs, 8, unit=4)] == [8, 8, 2]
    assert [len(g) for g in populations.form(configs, dirs, 8)] == [6, 6, 6]
    with pytest.raises(grid.GridError, match=r"config\.grid\.max_population: -1"):
        _planned([spec("ce", "ce")], (0,), tmp_path, max_population=-1)
    with pytest.raises(grid.GridError, match=r"config\.grid\.run_devices: -1"):
        _planned([spec("ce", "ce")], (0,), tmp_path, run_devices=-1)


# ---- training


def _members(root, configs):
    return [run_start.Member(c, epath.Path(root) / f"run{i}") for i, c in enumerate(configs)]


def _leaves(state):
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state))]


def _configs():
    return [tiny_digits_config("ce", seed=0), tiny_digits_config("ls", seed=1, label_smoothing=0.2),
            tiny_digits_config("ls", seed=0, label_smoothing=0.1, learning_rate=0.1)]


def test_one_step_together_equals_one_step_alone_bitwise(tmp_path):
    configs = [c for c in _configs()]
    for c in configs:  # one step: 32 examples, batch 32, one epoch
        c.num_train_examples, c.num_epochs = 32, 1
    data = run_data.load_training(configs[0])
    mesh = runs_axis.data_mesh()
    together = train_loop.train_population(_members(tmp_path / "pop", configs), data, mesh)
    for i, config in enumerate(configs):
        alone = train_loop.train(config, tmp_path / f"alone{i}", data, mesh)
        assert int(alone.step) == int(together[i].step) == 1
        for a, b in zip(_leaves(alone), _leaves(together[i]), strict=True):
            np.testing.assert_array_equal(a, b)


def test_runs_trained_together_log_what_runs_trained_alone_log(tmp_path):
    configs = _configs()
    data = run_data.load_training(configs[0])
    mesh = runs_axis.data_mesh()
    together = train_loop.train_population(_members(tmp_path / "pop", configs), data, mesh)
    for i, config in enumerate(configs):
        train_loop.train(config, tmp_path / f"alone{i}", data, mesh)
        # Each run writes its own files: the same records as alone, the same losses.
        records = [json.loads(line) for line in
                   (tmp_path / "pop" / f"run{i}" / "metrics.jsonl").read_text().splitlines()]
        reference = [json.loads(line) for line in
                     (tmp_path / f"alone{i}" / "metrics.jsonl").read_text().splitlines()]
        assert [sorted(r) for r in records] == [sorted(r) for r in reference]
        for r, ref in zip(records, reference, strict=True):
            assert r["step"] == ref["step"]
            for key in ("train_loss", "train_accuracy", "train_learning_rate", "test_accuracy"):
                assert r.get(key) == ref.get(key), (i, r["step"], key)
    # The three runs really differ: seeds, α and learning rates give each its own trajectory.
    assert not np.allclose(_leaves(together[0])[1], _leaves(together[1])[1])


def test_a_diverging_run_stops_alone(tmp_path, capsys):
    configs = _configs()
    configs[1].learning_rate = 1e6
    data = run_data.load_training(configs[0])
    mesh = runs_axis.data_mesh()
    results = train_loop.train_population(_members(tmp_path, configs), data, mesh)
    assert isinstance(results[1], train_loop.TrainingDivergedError)
    assert "run1" in capsys.readouterr().err
    assert not isinstance(results[0], Exception)
    assert not isinstance(results[2], Exception)
    assert int(results[0].step) == int(results[2].step) == 16
    # The diverged run's checkpoints stop at its last finite step.
    saved = checkpointing.Checkpoints(tmp_path / "run1" / "checkpoints", read_only=True)
    assert (saved.latest_step() or 0) < 16


@pytest.mark.parametrize("population", [1, 2])
def test_training_stops_once_every_run_has_diverged(tmp_path, monkeypatch, population):
    # 20 epochs of 8 steps, 160 in all: a loop that went on after the divergence would make
    # 160 calls of one step on CPU.
    configs = [tiny_digits_config("ce", seed=s, learning_rate=1e30, num_epochs=20)
               for s in range(population)]
    calls = []

    def counting(make):
        def counted(*args, **kwargs):
            run_steps = make(*args, **kwargs)
            return lambda *a: calls.append(1) or run_steps(*a)
        return counted

    monkeypatch.setattr(train_step, "make_train_program",
                        counting(train_step.make_train_program))
    data = run_data.load_training(configs[0])
    results = train_loop.train_population(_members(tmp_path, configs), data,
                                          runs_axis.data_mesh())
    assert all(isinstance(r, train_loop.TrainingDivergedError) for r in results)
    # The loss is first read at step 4 (a log and a checkpoint step, log_every_steps = 4) or
    # at the end of the first call if that is longer; the calls then in flight end it.
    assert 1 <= len(calls) <= 1 + train_loop.MAX_CALLS_IN_FLIGHT + 1


class _Killed(Exception):
    pass


def test_a_population_killed_between_its_runs_checkpoints_resumes_bitwise(tmp_path, monkeypatch):
    """A kill can land after some runs saved a step and before the others did: every run then
    resumes from the last step all of them saved, and ends bitwise where an uninterrupted
    population ends."""
    configs = _configs()
    data = run_data.load_training(configs[0])
    mesh = runs_axis.data_mesh()
    whole = train_loop.train_population(_members(tmp_path / "whole", configs), data, mesh)

    saves = []
    original = checkpointing.Checkpoints.save

    def save_then_die(self, state):
        original(self, state)
        saves.append(self.directory)
        if len(saves) == 3 * 2 + 1:  # steps 4 and 8 saved by all, step 12 by the first run only
            raise _Killed

    monkeypatch.setattr(checkpointing.Checkpoints, "save", save_then_die)
    with pytest.raises(_Killed):
        train_loop.train_population(_members(tmp_path / "resumed", configs), data, mesh)
    monkeypatch.undo()
    first = checkpointing.Checkpoints(tmp_path / "resumed" / "run0" / "checkpoints",
                                      read_only=True)
    assert first.latest_step() == 12
    resumed = train_loop.train_population(_members(tmp_path / "resumed", configs), data, mesh)
    for a, b in zip(whole, resumed, strict=True):
        for x, y in zip(_leaves(a), _leaves(b), strict=True):
            np.testing.assert_array_equal(x, y)
    logged = (tmp_path / "resumed" / "run0" / "metrics.jsonl").read_text()
    assert logged == (tmp_path / "whole" / "run0" / "metrics.jsonl").read_text()


SHARDED_SCRIPT = """
import json
import numpy as np, jax
from etils import epath
import tempfile
from softlabel_ood.data import run_data
from softlabel_ood.training import run_start, runs_axis, train_loop
from tests.train_helpers import tiny_digits_config
configs = [tiny_digits_config("ce", seed=s, num_epochs=1, num_train_examples=32)
           for s in (0, 1, 2, 3)]
data = run_data.load_training(configs[0])
root = epath.Path(tempfile.mkdtemp())
finals = {}
for runs in (1, 4):
    members = [run_start.Member(c, root / f"{runs}" / f"r{i}") for i, c in enumerate(configs)]
    states = train_loop.train_population(members, data, runs_axis.population_mesh(runs))
    finals[runs] = [[np.asarray(x) for x in jax.tree.leaves(jax.device_get(s))] for s in states]
alone = train_loop.train(configs[3], root / "alone", data, runs_axis.data_mesh())
finals["alone"] = [[np.asarray(x) for x in jax.tree.leaves(jax.device_get(alone))]]
worst = 0.0
for key in (4, "alone"):
    pairs = zip(finals[1][-len(finals[key]):], finals[key])
    worst = max(worst, max(float(np.max(np.abs(a - b))) for p, q in pairs for a, b in zip(p, q)))
print(json.dumps({"worst": worst}))
"""


def test_a_population_spread_over_runs_and_data_devices_agrees():
    """4 runs on 8 devices: each run's batch over 8 devices (runs axis 1), or whole runs on
    pairs of devices (runs axis 4); and the last run alone on 8 devices."""
    assert run_on_devices(SHARDED_SCRIPT, devices=8)["worst"] < STEP_ATOL


RUNS_OVER_DEVICES_SCRIPT = """
import json
import tempfile
import jax, numpy as np
from etils import epath
from softlabel_ood.training import population_job, runs_axis
from softlabel_ood.workdir import predictions
from tests.train_helpers import tiny_digits_config
configs = [tiny_digits_config(m, seed=s, num_epochs=1, **({"label_smoothing": 0.1 * s} if
                                                            m == "ls" else {}))
           for s, m in enumerate(["ce", "ls"] * 4)]
for c in configs:
    c.odin_pairs = ((1.0, 0.0), (1000.0, 0.001))
root = epath.Path(tempfile.mkdtemp())
together = [root / f"pop{i}" for i in range(8)]
assert population_job.train_and_evaluate_population(configs, together,
                                                    mesh=runs_axis.population_mesh(8)) == [None] * 8
one_device = runs_axis.data_mesh(jax.devices()[:1])
different = []
for i, c in enumerate(configs):
    assert population_job.train_and_evaluate_population([c], [root / f"alone{i}"],
                                                        mesh=one_device) == [None]
    a = predictions.read(together[i] / "predictions")
    b = predictions.read(root / f"alone{i}" / "predictions")
    for name, split in a.splits.items():
        for field in ("logits", "features", "odin"):
            if not np.array_equal(getattr(split, field), getattr(b.splits[name], field)):
                different.append(f"run {i} {name} {field}")
print(json.dumps({"different": different}))
"""


def test_runs_over_devices_predict_bitwise_what_runs_alone_on_one_device_predict():
    """8 runs of one population on 8 devices, one whole run per device, against each run
    trained alone on one device: the same predictions, bit for bit."""
    assert run_on_devices(RUNS_OVER_DEVICES_SCRIPT, devices=8)["different"] == []


GRID_CONFIG = """
from softlabel_ood.configs import grid
from tests.train_helpers import REPO, run_module, run_processes, tiny_digits_config

def get_config():
    c = tiny_digits_config(num_epochs=1, eval_batch_size=64, ood_datasets=("gaussian",))
    c.grid.seeds = (0, 1)
    c.grid.runs = [grid.run_spec("ce", "ce"), grid.run_spec("ls", "ls", label_smoothing=0.2)]
    c.grid.max_population = 4
    return c
"""


def test_two_processes_train_a_population_as_one_process_does(tmp_path):
    """4 runs: one process with one device, against 2 processes with 2 devices each and whole
    runs on pairs of devices (mesh runs=2 × data=2, the data axis across the processes)."""
    (tmp_path / "grid_config.py").write_text(GRID_CONFIG)
    args = [f"--config={tmp_path / 'grid_config.py'}"]
    one = run_module("softlabel_ood.reproduce", *args, f"--workdir={tmp_path / 'one'}",
                     timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    outputs = run_processes(
        "softlabel_ood.reproduce", *args, f"--workdir={tmp_path / 'two'}",
        "--config.grid.run_devices=2", processes=2, devices_each=2)
    assert "ls_seed1 (ls): trained" in outputs[0]
    assert "together with 3 more" in outputs[0]
    for run in ("ce_seed0", "ls_seed0", "ce_seed1", "ls_seed1"):
        a = predictions.read(tmp_path / "one" / "runs" / run / "predictions")
        b = predictions.read(tmp_path / "two" / "runs" / run / "predictions")
        for name in a.splits:
            np.testing.assert_allclose(a.splits[name].logits, b.splits[name].logits,
                                       rtol=1e-4, atol=1e-4, err_msg=f"{run} {name}")


KILL_GRID_CONFIG = """
from softlabel_ood.configs import grid
from tests.train_helpers import tiny_digits_config

def get_config():
    c = tiny_digits_config(num_epochs=12, checkpoint_every_steps=8, log_every_steps=8,
                           ood_datasets=("gaussian",))
    c.grid.seeds = (0,)
    c.grid.runs = [grid.run_spec("ce", "ce"), grid.run_spec("ls", "ls", label_smoothing=0.2)]
    c.grid.max_population = 2
    c.grid.workers = 2  # the population trains in a worker process, which dies with reproduce
    return c
"""


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state, parent, ...), or None."""
    try:
        return (pathlib.Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # no such process (any more)
        return None


def _children(pid: int) -> list[int]:
    """Process ids whose parent is `pid` (Linux /proc)."""
    return [int(p.name) for p in pathlib.Path("/proc").glob("[0-9]*")
            if (fields := _stat(int(p.name))) and int(fields[1]) == pid]


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"  # a zombie has ended, unreaped


def test_a_population_killed_with_sigkill_resumes_bitwise(tmp_path):
    """`reproduce` killed after a population's first checkpoint, then run again, ends with the
    predictions of an uninterrupted `reproduce`, bit for bit."""
    (tmp_path / "grid_config.py").write_text(KILL_GRID_CONFIG)
    command = [sys.executable, "-m", "softlabel_ood.reproduce",
               f"--config={tmp_path / 'grid_config.py'}"]
    subprocess.run([*command, f"--workdir={tmp_path / 'whole'}"], cwd=REPO, check=True,
                   capture_output=True)
    resumed = tmp_path / "resumed"
    proc = subprocess.Popen([*command, f"--workdir={resumed}"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = resumed / "runs" / "ls_seed0" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (
            checkpoints.exists() and any(p.name.isdigit() for p in checkpoints.iterdir())):
        time.sleep(0.02)
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # The worker training the population dies with reproduce, releasing the workdir.
    assert workers
    deadline = time.time() + 30
    while time.time() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in workers)
    saved = sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
    assert saved, "the population ended before its first checkpoint"
    assert saved[-1] < 12 * 8, "the population finished before it could be killed"

    subprocess.run([*command, f"--workdir={resumed}"], cwd=REPO, check=True, capture_output=True)
    for run in ("ce_seed0", "ls_seed0"):
        a = predictions.read(tmp_path / "whole" / "runs" / run / "predictions")
        b = predictions.read(resumed / "runs" / run / "predictions")
        for name in a.splits:
            np.testing.assert_array_equal(a.splits[name].logits, b.splits[name].logits,
                                          err_msg=f"{run} {name}")
