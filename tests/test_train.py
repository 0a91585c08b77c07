"""End-to-end runs of train.train_and_evaluate on the embedded digits data, one per method."""

from __future__ import annotations

import json
import re

import jax
import numpy as np
import pytest

from softlabel_ood import cli_errors, methods, train
from softlabel_ood.analysis import results
from softlabel_ood.configs import config_validation
from softlabel_ood.data import datasets
from softlabel_ood.training import runs_axis, saved_models, train_loop
from softlabel_ood.workdir import predictions, saved_runs
from tests.train_helpers import tiny_digits_config


@pytest.fixture(scope="module")
def ce_teacher(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("runs") / "ce"
    train.train_and_evaluate(tiny_digits_config("ce"), str(workdir))
    return workdir


def _check_run(workdir, config, *, min_accuracy=0.3):
    assert saved_runs.is_finished(workdir)
    preds = predictions.read(workdir / "predictions")
    assert preds.num_classes == 10
    roles = {name: split.role for name, split in preds.splits.items()}
    assert roles == {"digits_test": "id_test", "digits_train": "id_train",
                     "flower_patches": "ood_test", "gaussian": "ood_test"}
    assert len(preds.splits["digits_train"].labels) == config.num_train_examples
    assert len(preds.splits["gaussian"].labels) == config.num_ood_examples
    assert all(split.features is not None for split in preds.splits.values())
    # The head and the ODIN arrays travel with the predictions (format v3).
    assert preds.odin_pairs == tuple(config.odin_pairs)
    for split in preds.splits.values():
        np.testing.assert_allclose(split.features @ preds.head.kernel + preds.head.bias,
                                   split.logits, rtol=1e-4, atol=1e-4)
        msp = np.exp(split.logits - split.logits.max(1, keepdims=True))
        msp = (msp / msp.sum(1, keepdims=True)).max(1)
        np.testing.assert_allclose(
            split.odin_max_softmax()[:, preds.odin_pairs.index((1.0, 0.0))], msp, rtol=1e-6)
    assert preds.run["method"] == config.method
    # Two short epochs on digits already classify better than chance (10%).
    test = preds.splits["digits_test"]
    assert np.mean(test.logits.argmax(1) == test.labels) > min_accuracy
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    steps = [line["step"] for line in lines if "train_loss" in line]
    assert steps == sorted(steps)
    assert steps[-1] == 2 * (config.num_train_examples // 32)
    assert [line["epoch"] for line in lines if "test_accuracy" in line] == [1, 2]
    stored = saved_runs.read_config(workdir)
    assert stored.method == config.method
    assert "grid" not in stored
    return preds


def test_ce_run_writes_valid_predictions(ce_teacher):
    _check_run(ce_teacher, tiny_digits_config("ce"))
    assert any((ce_teacher / "tensorboard").iterdir())


@pytest.mark.parametrize(("method", "extra"), [
    ("ls", {"label_smoothing": 0.2}),
    ("oe", {}),
    ("kd", {}),
    ("kd_incorrect", {"label_smoothing": 0.3}),
])
def test_every_method_trains_end_to_end(method, extra, ce_teacher, tmp_path):
    if method.startswith("kd"):
        extra = {**extra, "kd.teacher_workdir": str(ce_teacher)}
    config = tiny_digits_config(method, **extra)
    train.train_and_evaluate(config, str(tmp_path / method))
    # A student of a two-epoch teacher learns from soft targets that are still nearly uniform, so
    # only a student that follows its teacher is asked for, not a good one.
    preds = _check_run(tmp_path / method, config, min_accuracy=0.0 if method == "kd" else 0.3)
    if method == "kd":
        teacher = predictions.read(ce_teacher / "predictions").splits["digits_test"].logits
        student = preds.splits["digits_test"].logits
        assert np.mean(teacher.argmax(1) == student.argmax(1)) > 0.3
    if method == "ls":
        assert preds.run["alpha"] == 0.2


def test_oe_fine_tuning_starts_from_the_finished_run(ce_teacher, tmp_path):
    config = tiny_digits_config("oe", num_epochs=1, **{"oe.finetune_from": str(ce_teacher)})
    # The OE schedule never goes below 1e-6 (its absolute floor), so the weights move by ~1e-6.
    config.learning_rate = 1e-9
    train.train_and_evaluate(config, str(tmp_path / "oe_ft"))
    mesh = runs_axis.data_mesh()
    _, ours, _ = saved_models.load_finished_model(str(tmp_path / "oe_ft"), mesh, role="test",
                                                dataset="digits")
    _, theirs, _ = saved_models.load_finished_model(str(ce_teacher), mesh, role="test",
                                                  dataset="digits")
    # BatchNorm statistics move (the outliers share the forward pass); the weights must not.
    pairs = zip(jax.tree.leaves(ours["params"]), jax.tree.leaves(theirs["params"]), strict=True)
    for a, b in pairs:
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_a_second_run_in_the_process_traces_no_program(ce_teacher, tmp_path):
    """A grid trains many runs per process: its programs (init, steps, evaluation, ODIN) are
    traced once, and a run with another seed and learning rate reuses them all."""
    traced = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/jaxpr_trace_duration":
            traced.append(kwargs.get("fun_name"))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        train.train_and_evaluate(tiny_digits_config("ce", seed=5, learning_rate=0.07),
                                 str(tmp_path / "again"))
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert saved_runs.is_finished(tmp_path / "again")
    assert traced == []


def test_running_again_resumes_and_only_rewrites_predictions(ce_teacher):
    before = predictions.read(ce_teacher / "predictions").splits["digits_test"].logits
    lines_before = (ce_teacher / "metrics.jsonl").read_text()
    train.train_and_evaluate(tiny_digits_config("ce"), str(ce_teacher))
    after = predictions.read(ce_teacher / "predictions").splits["digits_test"].logits
    np.testing.assert_array_equal(before, after)
    assert (ce_teacher / "metrics.jsonl").read_text() == lines_before


def test_a_missing_ood_set_stops_the_run_before_training(tmp_path):
    config = tiny_digits_config("ce", ood_datasets=("gaussian", "lsun_crop"))
    config.dataset_paths.lsun_crop = str(tmp_path / "LSUN_C")
    with pytest.raises(datasets.DatasetError, match=r"lsun_crop/test: .* does not exist"):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_resuming_with_another_training_config_is_rejected(ce_teacher):
    config = tiny_digits_config("ce", learning_rate=0.5)
    with pytest.raises(config_validation.ConfigError, match="other values of learning_rate"):
        train.train_and_evaluate(config, str(ce_teacher))


def test_a_diverging_run_stops_with_a_clear_error_before_checkpointing_it(tmp_path):
    config = tiny_digits_config("ce", learning_rate=1e30)
    with pytest.raises(train.TrainingDivergedError,
                       match=r"method ce loss is \S+ at step \d+ \(the bound is 10000\)"):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    # No checkpoint holds the diverged weights, and the run is not marked finished.
    assert not saved_runs.is_finished(tmp_path / "run")
    assert not [p for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit()]


def test_a_relative_workdir_works(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train.train_and_evaluate(tiny_digits_config("ce", num_epochs=1), "relative/run")
    assert saved_runs.is_finished(tmp_path / "relative" / "run")


def test_a_loss_beyond_the_bound_stops_the_run_with_exit_2_and_writes_no_predictions(tmp_path,
                                                                                   capsys):
    # lr = 1e4 does not reach NaN at once: the loss grows to 1e16 and more, accuracy at chance.
    workdir = tmp_path / "run"
    config = tiny_digits_config("ls", learning_rate=1e4, label_smoothing=0.1)
    with pytest.raises(SystemExit) as exit_info:
        cli_errors.exit_on_user_error(lambda: train.train_and_evaluate(config, str(workdir)))()
    assert exit_info.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.fullmatch(r"error: training diverged: method ls loss is \S+ at step \d+ \(the bound "
                        r"is 10000\); lower config.learning_rate or check the data", line), line
    bad = float(line.split(" loss is ")[1].split()[0])
    assert not bad <= train_loop.MAX_LOSS
    assert not saved_runs.is_finished(workdir)
    assert not (workdir / "predictions").exists()


def test_the_run_summary_round_trips_from_predict_output(ce_teacher, tmp_path):
    # OE fine-tuning of the ce run: the summary names its starting point, and results reads it
    # back as the run it was fine-tuned from (the report's fine-tuned column, the α = 0 row).
    finetuned = tmp_path / "oe_tune_seed0"
    config = tiny_digits_config("oe", num_epochs=1, **{"oe.finetune_from": str(ce_teacher)})
    train.train_and_evaluate(config, str(finetuned))
    summary = predictions.RunSummary.from_json(
        json.loads((finetuned / "predictions" / "manifest.json").read_text())["run"])
    read = {"alpha": 0.0, "oe_weight": 0.5, "kd_temperature": None, "kd_weight": None}
    # Every other method's hyperparameters, at the value recorded for a method that does not
    # read them.
    others = {h.key: h.unread_value() for h in methods.hyperparameters().values()
              if h.key not in read}
    assert summary.to_json() == {
        "dataset": "digits", "model": "small_cnn", "method": "oe", "teacher": "",
        "oe_dataset": "china_patches", "finetune_from": str(ce_teacher), "num_epochs": 1,
        "seed": 0, **read, **others}
    ce_summary = predictions.RunSummary.from_json(predictions.read(ce_teacher / "predictions").run)
    assert (ce_summary.method, ce_summary.teacher, ce_summary.value("kd.weight"),
            ce_summary.value("oe.weight"), ce_summary.finetune_from) == ("ce", "", None, None, "")
    runs = results.runs_from_directories([finetuned, ce_teacher])
    assert [(r.entry, r.method, r.init_from, r.teacher) for r in runs] == \
        [("oe_tune", "oe", ce_teacher.name, ""), ("ce", "ce", "", "")]
