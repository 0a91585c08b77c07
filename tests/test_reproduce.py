"""The grid driver: validation, run order and configs, resume, and one real tiny grid end to end."""

from __future__ import annotations

import json
import pathlib
import textwrap

import pytest

from softlabel_ood import reproduce, scoring
from softlabel_ood.configs import grid
from softlabel_ood.data import datasets
from softlabel_ood.experiment import finished_runs
from softlabel_ood.training import population_job
from softlabel_ood.workdir import run_dir, saved_runs
from tests.report_helpers import write_predictions
from tests.train_helpers import (
    run_module,
    snapshot,
    tiny_digits_config,
    with_groups_of_its_sets,
)

spec = grid.run_spec


def _config(runs, seeds=(0,)):
    config = tiny_digits_config()
    config.grid.runs = runs
    config.grid.seeds = seeds
    # These tests replace the training function in this process: no worker processes, and no
    # probe timing real programs for a grid trained by the fake; runs alone, in the grid's order.
    config.grid.workers = 1
    config.grid.max_population = 1
    return config


@pytest.mark.parametrize(("runs", "message"), [
    ([spec("kd", "kd", teacher="ce"), spec("ce", "ce")],
     r"runs\[0\] \(kd\): teacher 'ce' must name a run listed before it"),
    ([spec("ce", "ce"), spec("ce", "ls")], "duplicate run name 'ce'"),
    ([spec("x", "sgd")], "unknown method 'sgd'"),
    ([spec("kd", "kd")], "method kd needs a teacher"),
    ([spec("ce", "ce", teacher="ce")], "method ce uses none"),
    ([spec("oe", "oe", init_from="ce")], "init_from 'ce' must name a run listed before it"),
    ([spec("ce", "ce", nope=1)], "'nope' is not a config field"),
    ([spec("ce", "ce", seed=3)], "overrides may not set seed"),
    ([{"name": "ce", "method": "ce", "extra": 1}], "unknown keys"),
    ([], "the grid has no runs"),
])
def test_bad_grids_are_rejected_before_training(runs, message):
    with pytest.raises(grid.GridError, match=message):
        grid.validate_grid(_config(runs))


def test_bad_seeds_and_override_types_are_rejected(tmp_path):
    with pytest.raises(grid.GridError, match="seeds"):
        grid.validate_grid(_config([spec("ce", "ce")], seeds=()))
    with pytest.raises(grid.GridError, match="overrides"):
        reproduce.planned_runs(_config([spec("ls", "ls", label_smoothing="big")]), tmp_path)


def test_missing_local_dataset_is_reported_before_training(tmp_path):
    config = _config([spec("ce", "ce")])
    config.ood_datasets = ("gaussian", "lsun_crop")
    with_groups_of_its_sets(config)
    config.dataset_paths.lsun_crop = str(tmp_path / "LSUN_C")
    with pytest.raises(datasets.DatasetError, match=r"config dataset_paths\.lsun_crop"):
        reproduce.planned_runs(config, tmp_path)


def test_unprepared_tfds_set_is_reported_before_training(tmp_path):
    config = _config([spec("ce", "ce")])
    config.ood_datasets = ("gaussian", "svhn")
    with_groups_of_its_sets(config)
    config.data_dir = str(tmp_path / "tfds")
    with pytest.raises(datasets.DatasetError,
                       match=r"svhn/test: .*`python -m softlabel_ood\.data\.prepare_tfds "
                             r"svhn_cropped:3\.1\.0 --data_dir=.*tfds`"):
        reproduce.planned_runs(config, tmp_path)
    assert not (tmp_path / "runs").exists()


def test_planned_runs_follow_the_grid_seed_by_seed(tmp_path):
    config = _config([spec("ce", "ce"), spec("ls0.2", "ls", label_smoothing=0.2),
                      spec("kdi", "kd_incorrect", teacher="ls0.2", label_smoothing=0.3),
                      spec("ft", "oe", init_from="ce")], seeds=(3, 5))
    planned = reproduce.planned_runs(config, tmp_path)
    assert [info.run for info, _ in planned] == [
        "ce_seed3", "ls0.2_seed3", "kdi_seed3", "ft_seed3",
        "ce_seed5", "ls0.2_seed5", "kdi_seed5", "ft_seed5"]
    by_run = {info.run: (info, c) for info, c in planned}
    info, c = by_run["kdi_seed5"]
    assert (c.method, c.seed, c.label_smoothing, info.strength) == ("kd_incorrect", 5, 0.3, 0.3)
    assert c.kd.teacher_workdir == str(tmp_path / "runs" / "ls0.2_seed5")
    assert "grid" not in c
    _, c = by_run["ft_seed3"]
    assert c.oe.finetune_from == str(tmp_path / "runs" / "ce_seed3")
    assert by_run["ce_seed3"][1].label_smoothing == 0.0
    assert by_run["ce_seed3"][1].kd.teacher_workdir == ""
    assert "grid" in config  # the family config itself is left alone


def _fake_training(calls):
    """Stands in for population_job.train_and_evaluate_population: records each run, writes its
    predictions and DONE."""

    def train_and_evaluate_population(configs, workdirs, *, mesh=None):
        for config, workdir in zip(configs, workdirs, strict=True):
            if config.kd.teacher_workdir:  # teachers are finished before their students start
                assert saved_runs.is_finished(config.kd.teacher_workdir)
            calls.append(pathlib.Path(workdir).name)
            pathlib.Path(workdir).mkdir(parents=True, exist_ok=True)
            write_predictions(pathlib.Path(workdir), seed=config.seed, method=config.method)
            saved_runs.mark_finished(workdir)
        return [None] * len(configs)

    return train_and_evaluate_population


def test_resume_trains_only_unfinished_runs(tmp_path, monkeypatch, capsys):
    config = _config([spec("ce", "ce"), spec("ls0.2", "ls", label_smoothing=0.2),
                      spec("kd_ce", "kd", teacher="ce")], seeds=(0, 1))
    calls = []
    monkeypatch.setattr(population_job, "train_and_evaluate_population", _fake_training(calls))
    reproduce.run_grid(config, str(tmp_path))
    assert calls == ["ce_seed0", "ls0.2_seed0", "kd_ce_seed0",
                     "ce_seed1", "ls0.2_seed1", "kd_ce_seed1"]
    report_dir = tmp_path / "report"
    assert {"report.md", "metrics.csv", "runs.json"} <= {p.name for p in report_dir.iterdir()}
    assert "[6/6] kd_ce_seed1 (kd): trained" in capsys.readouterr().err

    # An interrupted grid: one run never finished. Only that run is trained again.
    (tmp_path / "runs" / "kd_ce_seed1" / run_dir.DONE).unlink()
    calls.clear()
    reproduce.run_grid(config, str(tmp_path))
    assert calls == ["kd_ce_seed1"]
    assert "[1/6] ce_seed0 (ce): skipped, already finished" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_grid(tmp_path_factory):
    """The command line on a real 2-run grid (ce, then kd from it), 1 seed, 1 epoch."""
    root = tmp_path_factory.mktemp("reproduce")
    config_file = root / "tiny_grid.py"
    config_file.write_text(textwrap.dedent("""
        from softlabel_ood.configs import grid
        from tests.train_helpers import tiny_digits_config

        def get_config():
            c = tiny_digits_config()
            c.grid.seeds = (0,)
            c.grid.runs = [grid.run_spec("ce", "ce"), grid.run_spec("kd_ce", "kd", teacher="ce")]
            return c
    """))
    workdir = root / "work"
    result = run_module("softlabel_ood.reproduce", f"--config={config_file}",
                        f"--workdir={workdir}", "--config.num_epochs=1", timeout=500)
    assert result.returncode == 0, result.stderr[-3000:]
    return config_file, workdir, result


def test_reproduce_command_trains_scores_and_reports(tiny_grid):
    _, workdir, result = tiny_grid
    assert "[1/2] ce_seed0 (ce): trained" in result.stderr
    assert "[2/2] kd_ce_seed0 (kd): trained" in result.stderr
    for run in ("ce_seed0", "kd_ce_seed0"):
        assert saved_runs.is_finished(workdir / "runs" / run)
        assert saved_runs.read_config(workdir / "runs" / run).num_epochs == 1
    names = {p.name for p in (workdir / "report").iterdir()}
    assert {"report.md", "metrics.csv", "metrics.md", "runs.json", "msp_histograms.png",
            "roc_curves.png"} <= names
    rows = scoring.read_metrics_csv(str(workdir / "report" / "metrics.csv"))
    assert {r.run for r in rows} == {"ce_seed0", "kd_ce_seed0"}
    assert {r.ood for r in rows if r.ood} == {"flower_patches", "gaussian"}
    text = (workdir / "report" / "report.md").read_text()
    assert "## Table 2. Teachers and students" in text
    assert "| ce (`ce`) |" in text
    assert text.count(": inconclusive") == 5  # 1 seed and 2 runs decide no claim, S1 or S2


def test_second_invocation_trains_nothing(tiny_grid, monkeypatch):
    config_file, workdir, _ = tiny_grid
    # The first report says how the grid chose its population size: 2 worker processes on a CPU
    # with 2 cores or more, else the probe (R = 1 alone measured: no two runs share a program).
    text = (workdir / "report" / "report.md").read_text()
    assert ("| population size | 1 run per population: 2 worker processes" in text or
            "| population size | 1 run(s) per device, measured on the 1 run(s) of ce_seed0's"
            in text)
    stamps = {p: p.stat().st_mtime_ns for p in (workdir / "runs").glob("*/predictions/*")}

    def no_training(configs, workdirs, **kwargs):
        raise AssertionError(f"{workdirs} were trained again")

    monkeypatch.setattr(population_job, "train_and_evaluate_population", no_training)
    module = {}
    exec(config_file.read_text(), module)
    config = module["get_config"]()
    config.num_epochs = 1
    config.grid.workers = 1  # the replaced training function lives in this process
    reproduce.run_grid(config, str(workdir))
    assert stamps == {p: p.stat().st_mtime_ns for p in (workdir / "runs").glob("*/predictions/*")}


def test_command_exits_2_with_one_line_on_a_bad_grid(tmp_path):
    config_file = tmp_path / "bad_grid.py"
    config_file.write_text(textwrap.dedent("""
        from softlabel_ood.configs import grid
        from tests.train_helpers import tiny_digits_config

        def get_config():
            c = tiny_digits_config()
            c.grid.runs = [grid.run_spec("kd", "kd", teacher="ce"), grid.run_spec("ce", "ce")]
            return c
    """))
    result = run_module("softlabel_ood.reproduce", f"--config={config_file}",
                        f"--workdir={tmp_path / 'work'}", timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: config.grid.runs[0] (kd): teacher 'ce' must name a run listed before it")
    assert not (tmp_path / "work").exists()


def test_a_failed_run_is_named_and_the_others_finish(tmp_path, monkeypatch, capsys):
    config = _config([spec("ce", "ce"), spec("ls0.2", "ls", label_smoothing=0.2),
                      spec("kd_ls", "kd", teacher="ls0.2"), spec("kd_ce", "kd", teacher="ce")],
                     seeds=(0,))
    calls = []
    fake = _fake_training(calls)

    def one_diverges(configs, workdirs, **kwargs):
        keep = [i for i, w in enumerate(workdirs) if pathlib.Path(w).name != "ls0.2_seed0"]
        fake([configs[i] for i in keep], [workdirs[i] for i in keep])
        return [None if i in keep else FloatingPointError("loss is nan at step 3")
                for i in range(len(configs))]

    monkeypatch.setattr(population_job, "train_and_evaluate_population", one_diverges)
    with pytest.raises(reproduce.RunsFailedError) as failure:
        reproduce.run_grid(config, str(tmp_path))
    assert str(failure.value) == (
        "2 of 4 runs did not finish: ls0.2_seed0 failed: loss is nan at step 3; "
        "kd_ls_seed0 not trained: ls0.2_seed0 failed")
    assert calls == ["ce_seed0", "kd_ce_seed0"]  # the student of the failed run never starts
    err = capsys.readouterr().err
    assert "[2/4] ls0.2_seed0 (ls): failed: loss is nan at step 3" in err
    rows = scoring.read_metrics_csv(str(tmp_path / "report" / "metrics.csv"))
    assert {r.run for r in rows} == {"ce_seed0", "kd_ce_seed0"}  # the finished runs are scored


@pytest.mark.parametrize(("override", "field", "source"), [
    ("--config.method=ls", "method", "its entry's method in config.grid.runs"),
    ("--config.kd.teacher_workdir=/x", "kd.teacher_workdir",
     "its entry's teacher in config.grid.runs"),
    ("--config.seed=3", "seed", "config.grid.seeds"),
])
def test_overrides_of_fields_the_grid_sets_are_refused(tmp_path, override, field, source):
    result = run_module("softlabel_ood.reproduce", "--config=configs/digits.py",
                        f"--workdir={tmp_path / 'work'}", override, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: config.{field}: the grid sets it for every run, from {source}; change the grid "
        f"instead (train runs one run with the values given)")
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("argument", ["ls", "mixup", "oe_finetune"])
def test_a_config_argument_naming_a_method_is_refused(tmp_path, argument):
    result = run_module("softlabel_ood.reproduce", f"--config=configs/digits.py:{argument}",
                        f"--workdir={tmp_path / 'work'}", timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: --config=configs/digits.py:{argument}: the grid sets each run's method, from "
        f"its entry in config.grid.runs, so ':{argument}' would be ignored; drop it (train runs "
        f"one run of {argument})")
    assert not (tmp_path / "work").exists()


def test_the_config_argument_that_selects_a_grid_is_taken():
    with pytest.raises(grid.GridError):
        grid.check_config_argument("configs/cifar10.py:ls", ("ls",))
    grid.check_config_argument("configs/cifar10.py:finetune_grid", ("ls", "oe_finetune"))
    grid.check_config_argument("C:/configs/digits.py", ("ls",))  # a drive letter is no argument


def test_finished_runs_trained_with_other_values_are_refused(tmp_path):
    grid_runs = [spec("ce", "ce"), spec("kd_ce", "kd", teacher="ce")]
    # The grid's runs as training leaves them: each with its config.json and DONE.
    for info, run_config in reproduce.planned_runs(_config(grid_runs), tmp_path / "work"):
        pathlib.Path(info.directory).mkdir(parents=True)
        saved_runs.write_config(info.directory, run_config)
        saved_runs.mark_finished(info.directory)

    config = _config(grid_runs)
    config.num_epochs = 3  # tiny_digits_config trained 2
    with pytest.raises(finished_runs.GridMismatchError) as refused:
        reproduce.planned_runs(config, tmp_path / "work")
    assert str(refused.value) == (
        f"{tmp_path / 'work' / 'runs' / 'ce_seed0' / 'config.json'}: finished run ce_seed0 was "
        f"trained with config.num_epochs = 2, the grid gives 3; use another --workdir for these "
        f"values, or give the run's")
    config = _config(grid_runs)
    config.kd.temperature = 2.0  # read by the kd student only
    with pytest.raises(finished_runs.GridMismatchError, match="finished run kd_ce_seed0 was "
                       r"trained with config\.kd\.temperature = 4\.0, the grid gives 2\.0"):
        reproduce.planned_runs(config, tmp_path / "work")

    # What never changes a trained model is not compared (DESIGN.md §8), nor what predict may
    # change afterwards, nor the path by which the grid, and so the teacher, is named.
    config = _config(grid_runs)
    config.steps_per_call, config.device_data_max_mb = 3, 0
    config.checkpoint_every_steps, config.checkpoint_min_seconds, config.log_every_steps = 7, 5, 9
    config.eval_batch_size, config.num_ood_examples, config.odin_pairs = 64, 32, ((1.0, 0.0),)
    (tmp_path / "elsewhere").symlink_to(tmp_path / "work")
    planned = reproduce.planned_runs(config, tmp_path / "elsewhere")
    assert planned[1][1].kd.teacher_workdir == str(tmp_path / "elsewhere" / "runs" / "ce_seed0")
    # A run that is not finished is not compared: its checkpoint binds it (run_start).
    (tmp_path / "work" / "runs" / "ce_seed0" / run_dir.DONE).unlink()
    (tmp_path / "work" / "runs" / "kd_ce_seed0" / run_dir.DONE).unlink()
    config = _config(grid_runs)
    config.num_epochs = 3
    assert len(reproduce.planned_runs(config, tmp_path / "work")) == 2


def test_the_command_refuses_a_grid_that_would_mix_before_training(tiny_grid):
    config_file, workdir, _ = tiny_grid
    before = snapshot(workdir / "runs" / "ce_seed0" / "predictions", workdir / "report")
    result = run_module("softlabel_ood.reproduce", f"--config={config_file}",
                        f"--workdir={workdir}", "--config.num_epochs=2", timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {workdir / 'runs' / 'ce_seed0' / 'config.json'}: finished run ce_seed0 was "
        f"trained with config.num_epochs = 1, the grid gives 2; use another --workdir for these "
        f"values, or give the run's")
    assert "[1/2]" not in result.stderr
    assert snapshot(workdir / "runs" / "ce_seed0" / "predictions", workdir / "report") == before


def test_predictions_of_an_unfinished_checkpoint_are_never_reported(tmp_path, monkeypatch):
    config = _config([spec("ce", "ce"), spec("ls0.2", "ls", label_smoothing=0.2),
                      spec("kd_ce", "kd", teacher="ce")])
    monkeypatch.setattr(population_job, "train_and_evaluate_population", _fake_training([]))
    reproduce.run_grid(config, str(tmp_path))
    # A finished run whose predictions were written again from an earlier checkpoint
    # (predict --allow_unfinished after its last checkpoint was lost).
    manifest = tmp_path / "runs" / "ls0.2_seed0" / "predictions" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()),
                                    "checkpoint": {"step": 12, "total_steps": 16}}))
    with pytest.raises(reproduce.RunsFailedError) as failure:
        reproduce.run_grid(config, str(tmp_path))
    assert str(failure.value) == ("1 of 3 runs did not finish: ls0.2_seed0 not reported: "
                                  "unfinished run: predictions from step 12 of 16")
    rows = scoring.read_metrics_csv(str(tmp_path / "report" / "metrics.csv"))
    assert {r.run for r in rows} == {"ce_seed0", "kd_ce_seed0"}
    text = (tmp_path / "report" / "report.md").read_text()
    assert "ls0.2_seed0" not in text
    assert "Unfinished runs" not in text
