"""A run's directory as other code reads it: stored config, DONE marker, finished model."""

from __future__ import annotations

import json
import shutil

import pytest

from softlabel_ood import models, predict, train
from softlabel_ood.data import datasets
from softlabel_ood.training import runs_axis, saved_models
from softlabel_ood.workdir import run_dir, saved_runs
from tests.train_helpers import refusal, tiny_digits_config

TEACHER_ROLE = "config.kd.teacher_workdir"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished digits run (10 classes), trained for one short epoch."""
    workdir = tmp_path_factory.mktemp("runs") / "ce"
    train.train_and_evaluate(tiny_digits_config("ce", num_epochs=1), str(workdir))
    return workdir


@pytest.fixture(scope="module")
def mesh():
    return runs_axis.data_mesh()


# ---- config.json


def test_the_config_round_trips_without_its_grid(tmp_path):
    config = tiny_digits_config("ls", label_smoothing=0.25, ood_datasets=("gaussian", "blobs"))
    assert "grid" in config
    saved_runs.write_config(tmp_path, config)
    stored = json.loads((tmp_path / run_dir.CONFIG).read_text())
    assert "grid" not in stored
    assert stored["ood_datasets"] == ["gaussian", "blobs"]
    back = saved_runs.read_config(tmp_path)
    # JSON lists come back as the tuples that config files use (and flags can override).
    assert back.ood_datasets == ("gaussian", "blobs")
    assert back.label_smoothing == 0.25
    assert saved_runs.config_to_dict(back) == saved_runs.config_to_dict(config)
    # Written through a temporary name: nothing but the file is left beside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == [run_dir.CONFIG]


def test_a_config_of_an_earlier_version_gets_every_dataset_path_where_predict_reads_it(tmp_path):
    data = saved_runs.config_to_dict(tiny_digits_config("ce"))
    data["dataset_paths"] = {"lsun_crop": "/data/LSUN"}
    (tmp_path / run_dir.CONFIG).write_text(json.dumps(data))
    assert dict(saved_runs.read_config(tmp_path).dataset_paths) == {"lsun_crop": "/data/LSUN"}
    paths = predict.read_stored_config(tmp_path).dataset_paths
    assert paths.lsun_crop == "/data/LSUN"
    assert paths.cifar10 == ""
    assert sorted(paths) == sorted(datasets.NAMES)


def test_a_missing_or_broken_config_is_refused(tmp_path):
    with pytest.raises(saved_runs.RunError, match=r"config\.json: missing; .* is not a run "):
        saved_runs.read_config(tmp_path)
    (tmp_path / run_dir.CONFIG).write_text("{not json")
    with pytest.raises(saved_runs.RunError, match=r"config\.json: not valid JSON"):
        saved_runs.read_config(tmp_path)
    (tmp_path / run_dir.CONFIG).write_text('{"dataset_paths": ["/data"]}')
    with pytest.raises(saved_runs.RunError, match=r"config\.json: field 'dataset_paths' is "
                                                  r"\['/data'\], expected an object"):
        saved_runs.read_config(tmp_path)


# ---- DONE


def test_mark_finished_writes_the_done_marker(tmp_path):
    assert not saved_runs.is_finished(tmp_path)
    saved_runs.mark_finished(tmp_path)
    assert saved_runs.is_finished(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [run_dir.DONE]
    assert not saved_runs.is_finished(tmp_path / "elsewhere")


# ---- load_finished_model


def test_a_finished_run_loads_with_its_classes(finished_run, mesh):
    assert saved_models.stored_num_outputs(finished_run) == 10
    model, variables, config = saved_models.load_finished_model(
        str(finished_run), mesh, role=TEACHER_ROLE, dataset="digits")
    assert config.dataset == "digits"
    kernel, bias = models.classifier_head(variables["params"])
    assert bias.shape == (10,)
    assert kernel.shape[1] == 10
    assert model.num_classes == 10


def test_a_teacher_that_does_not_exist_or_has_not_finished_is_refused(tmp_path, capsys):
    config = tiny_digits_config("kd", **{"kd.teacher_workdir": str(tmp_path / "none")})
    line = refusal(capsys, lambda: train.train_and_evaluate(config, str(tmp_path / "run")))
    assert line == f"error: config.kd.teacher_workdir: {tmp_path / 'none'} does not exist"
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    saved_runs.write_config(unfinished, tiny_digits_config("ce"))
    config.kd.teacher_workdir = str(unfinished)
    line = refusal(capsys, lambda: train.train_and_evaluate(config, str(tmp_path / "run")))
    assert line.endswith("has not finished training (no DONE file)")
    assert not (tmp_path / "run").exists()


def test_a_teacher_of_another_dataset_is_refused_before_any_data(tmp_path, capsys):
    other = tmp_path / "fm_teacher"
    other.mkdir()
    saved_runs.write_config(other, tiny_digits_config("ce", dataset="fashion_mnist"))
    saved_runs.mark_finished(other)
    config = tiny_digits_config("kd", **{"kd.teacher_workdir": str(other)})
    line = refusal(capsys, lambda: train.train_and_evaluate(config, str(tmp_path / "student")))
    assert line == (f"error: {TEACHER_ROLE}: {other} was trained on 'fashion_mnist', this run "
                    f"uses 'digits'")
    assert not (tmp_path / "student").exists()


def test_a_teacher_with_another_number_of_outputs_is_refused_before_any_data(
        finished_run, tmp_path, capsys):
    # Its config.json says cifar100 (100 classes), its checkpoint holds the 10 outputs it was
    # trained with: the checkpoint decides.
    teacher = tmp_path / "teacher"
    shutil.copytree(finished_run, teacher)
    stored = json.loads((teacher / run_dir.CONFIG).read_text())
    stored["dataset"] = "cifar100"
    (teacher / run_dir.CONFIG).write_text(json.dumps(stored))
    config = tiny_digits_config("kd", dataset="cifar100",
                                **{"kd.teacher_workdir": str(teacher)})
    line = refusal(capsys, lambda: train.train_and_evaluate(config, str(tmp_path / "student")))
    assert line == (f"error: {TEACHER_ROLE}: {teacher} holds a model with 10 outputs, this "
                    f"run's dataset 'cifar100' has 100 classes")
    assert not (tmp_path / "student").exists()
