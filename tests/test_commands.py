"""The train and predict commands: one-line errors with exit code 2, and predict's overrides."""

from __future__ import annotations

import numpy as np
import pytest

from softlabel_ood import predictions, train
from tests.train_helpers import run_module, tiny_digits_config


@pytest.mark.parametrize(("flag", "message"), [
    ("--config.label_smoothing=1.5", "error: config.label_smoothing: 1.5 is outside [0, 1)"),
    ("--config.dataset=imagenet", "error: config.dataset: unknown dataset 'imagenet'"),
    ("--config.kd.teacher_workdir=/nonexistent/teacher",
     "error: config.kd.teacher_workdir: /nonexistent/teacher does not exist"),
])
def test_train_rejects_bad_input_with_one_line(flag, message, tmp_path):
    method = "kd" if "teacher" in flag else "ce"
    result = run_module("softlabel_ood.train", f"--config=configs/digits.py:{method}", flag,
                        f"--workdir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == message or \
        result.stderr.strip().splitlines()[-1].startswith(message)


def test_predict_rejects_a_directory_that_is_not_a_run(tmp_path):
    result = run_module("softlabel_ood.predict", f"--workdir={tmp_path}")
    assert result.returncode != 0
    assert f"{tmp_path}/config.json: missing" in result.stderr


def test_predict_rewrites_predictions_with_more_ood_sets(tmp_path):
    workdir = tmp_path / "run"
    train.train_and_evaluate(tiny_digits_config("ce", num_epochs=1), str(workdir))
    before = predictions.read(workdir / "predictions")
    result = run_module("softlabel_ood.predict", f"--workdir={workdir}",
                        "--config.ood_datasets=('gaussian','uniform','blobs')")
    assert result.returncode == 0, result.stderr[-2000:]
    after = predictions.read(workdir / "predictions")
    assert [n for n, s in after.splits.items() if s.role == "ood_test"] == \
        ["gaussian", "uniform", "blobs"]
    # Same checkpoint, same model: the ID outputs do not change.
    np.testing.assert_allclose(after.splits["digits_test"].logits,
                               before.splits["digits_test"].logits, rtol=1e-6, atol=1e-6)
