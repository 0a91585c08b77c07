"""The train and predict commands: one-line errors with exit code 2, and predict's overrides."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from softlabel_ood import predict, train
from softlabel_ood.configs import config_validation
from softlabel_ood.workdir import predictions, saved_runs
from tests.train_helpers import REPO, run_module, tiny_digits_config


def test_train_rejects_bad_input_with_one_line_from_the_command_line(tmp_path):
    # The in-process tests (test_config_validation) cover each field; this one runs the command.
    result = run_module("softlabel_ood.train", "--config=configs/digits.py:ce",
                        "--config.model=vgg16", f"--workdir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: config.model: 'vgg16' is not allowed; expected wrn<depth>_<width> (depth 6n + 4), "
        "resnet18, resnet34 or small_cnn"]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("module", ["softlabel_ood.train", "softlabel_ood.predict",
                                    "softlabel_ood.reproduce"])
def test_help_prints_the_usage_and_the_config_fields(module):
    result = run_module(module, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(("Trains one run", "Runs a trained model", "Runs a config"))
    assert "--workdir" in result.stdout
    assert "--multihost: Call jax.distributed.initialize()" in result.stdout
    assert "--config.ood_datasets=" in result.stdout
    assert "--config.eval_batch_size=500  an integer in [1, 2147483647]" in result.stdout
    # Without a config the values are the base protocol's, and the help says so.
    assert "Values shown: the base protocol's defaults (`config_base.base_config`: CIFAR-10" in \
        result.stdout
    fields = {line.split("=")[0].strip() for line in result.stdout.splitlines()
              if line.startswith("  --config.")}
    # train and reproduce list every field; predict exactly those it may change.
    if module == "softlabel_ood.predict":
        per_name = {"dataset_paths": "dataset_paths.<name>", "ood_groups": "ood_groups.<group>"}
        assert fields == {f"--config.{per_name.get(name, name)}"
                          for name in config_validation.EVALUATION_FIELDS}
    else:
        assert "--config.label_smoothing" in fields


def test_help_names_the_config_it_shows():
    result = run_module("softlabel_ood.train", "--help", "--config=configs/digits.py:ls")
    assert result.returncode == 0, result.stderr
    assert "Values shown: those of --config=configs/digits.py:ls." in result.stdout
    assert "  --config.label_smoothing=0.3  " in result.stdout
    assert "  --config.dataset='digits'  " in result.stdout


def test_the_readme_names_every_field_predict_may_change():
    # predict --help lists config_validation.EVALUATION_FIELDS (test above); the README the same.
    readme = (REPO / "README.md").read_text()
    row = next(line for line in readme.splitlines()
               if line.startswith("| `python -m softlabel_ood.predict"))
    named = set(re.findall(r"`([a-z_]+)`", row))
    assert named >= config_validation.EVALUATION_FIELDS
    assert len(config_validation.EVALUATION_FIELDS) == 9


def test_the_readme_stays_short():
    assert len((REPO / "README.md").read_text().splitlines()) <= 180


def test_predict_rejects_a_directory_that_is_not_a_run(tmp_path):
    result = run_module("softlabel_ood.predict", f"--workdir={tmp_path}")
    assert result.returncode != 0
    assert f"{tmp_path}/config.json: missing" in result.stderr


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("predict") / "run"
    train.train_and_evaluate(tiny_digits_config("ce", num_epochs=1), str(workdir))
    return workdir


def _ood_names(workdir) -> list[str]:
    preds = predictions.read(workdir / "predictions")
    return [n for n, s in preds.splits.items() if s.role == "ood_test"]


def test_predict_adds_ood_sets_by_default_and_replaces_them_on_request(finished_run):
    before = predictions.read(finished_run / "predictions")
    assert _ood_names(finished_run) == ["flower_patches", "gaussian"]
    result = run_module("softlabel_ood.predict", f"--workdir={finished_run}",
                        "--config.ood_datasets=('uniform','gaussian')")
    assert result.returncode == 0, result.stderr[-2000:]
    assert _ood_names(finished_run) == ["flower_patches", "gaussian", "uniform"]
    after = predictions.read(finished_run / "predictions")
    # Same checkpoint, same model: the ID outputs do not change.
    np.testing.assert_allclose(after.splits["digits_test"].logits,
                               before.splits["digits_test"].logits, rtol=1e-6, atol=1e-6)
    result = run_module("softlabel_ood.predict", f"--workdir={finished_run}", "--replace_ood",
                        "--config.ood_datasets=('blobs',)")
    assert result.returncode == 0, result.stderr[-2000:]
    assert _ood_names(finished_run) == ["blobs"]
    # The replaced sets' files went with the old directory; nothing is left beside it.
    assert sorted(p.name for p in (finished_run / "predictions").iterdir()) == \
        ["blobs.npz", "digits_test.npz", "digits_train.npz", "head.npz", "manifest.json"]
    assert not [p for p in finished_run.iterdir() if p.name.startswith(".predictions")]


def test_predict_refuses_to_change_what_defines_the_trained_run(finished_run):
    manifest = (finished_run / "predictions" / "manifest.json").read_bytes()
    result = run_module("softlabel_ood.predict", f"--workdir={finished_run}",
                        "--config.label_smoothing=0.3")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: config.label_smoothing: defines the trained run and cannot change in predict "
        "(only data_dir, dataset_paths, eval_batch_size, num_ood_examples, odin_pairs, "
        "odin_selection, ood_datasets, ood_groups, pnorm_p can); "
        "train a new run for another value"]
    assert (finished_run / "predictions" / "manifest.json").read_bytes() == manifest


def test_predict_overrides_follow_the_stored_run(finished_run):
    stored = saved_runs.read_config(finished_run)
    requested = saved_runs.read_config(finished_run)
    requested.seed = 4
    with pytest.raises(config_validation.ConfigError, match=r"config.seed: defines the trained"):
        predict.config_with_overrides(stored, requested, finished_run, replace_ood=False)
    requested = saved_runs.read_config(finished_run)
    requested.eval_batch_size = 7
    requested.ood_datasets = ("uniform",)
    config = predict.config_with_overrides(stored, requested, finished_run, replace_ood=True)
    assert (config.eval_batch_size, config.ood_datasets) == (7, ("uniform",))


def test_predict_records_the_evaluation_fields_it_changes_and_score_reads_them(
        finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    held = _ood_names(run)[0]  # (other tests change the shared run's sets)
    result = run_module("softlabel_ood.predict", f"--workdir={run}", "--config.pnorm_p=3",
                        f"--config.ood_groups.near=('{held}',)")
    assert result.returncode == 0, result.stderr[-2000:]
    config = saved_runs.read_config(run)
    assert (config.pnorm_p, tuple(config.ood_groups.near)) == (3, (held,))
    assert config.seed == saved_runs.read_config(finished_run).seed  # the trained run's own
    result = run_module("softlabel_ood.score", str(run), f"--out={tmp_path / 'scored'}")
    assert result.returncode == 0, result.stderr[-2000:]
    text = (tmp_path / "scored" / "metrics.md").read_text()
    assert "p = 3" in text
    assert "| mean (near) |" in text


def test_predict_replacing_ood_sets_takes_them_out_of_the_groups(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    with saved_runs.read_config(run).unlocked() as config:
        config.ood_groups = {"near": ("flower_patches",), "far": ("flower_patches", "gaussian")}
        saved_runs.write_config(run, config)
    result = run_module("softlabel_ood.predict", f"--workdir={run}", "--replace_ood",
                        "--config.ood_datasets=('gaussian','blobs')")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("config.")]
    assert lines == [  # config.json keeps its fields in name order
        "config.ood_groups.far: flower_patches left out with the OOD sets --replace_ood "
        "replaced; the group is now ('gaussian',)",
        "config.ood_groups.near: flower_patches left out with the OOD sets --replace_ood "
        "replaced; the group named no other set and is now ()"]
    config = saved_runs.read_config(run)
    assert tuple(config.ood_datasets) == ("gaussian", "blobs")
    assert {g: tuple(names) for g, names in config.ood_groups.items()} == {
        "far": ("gaussian",), "near": ()}  # () is no group
    result = run_module("softlabel_ood.score", str(run), f"--out={tmp_path / 'scored'}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| mean (far) |" in (tmp_path / "scored" / "metrics.md").read_text()
