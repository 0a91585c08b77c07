"""A method is one record in `methods` and one loss in `training/method_losses`: everything else
(the hyperparameters, the config check, the predictions manifest, the report) asks the record."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from softlabel_ood import methods, train
from softlabel_ood.analysis import report
from softlabel_ood.analysis.results import RunInfo
from softlabel_ood.configs import config_validation
from softlabel_ood.training import method_losses, run_model, soft_labels, train_step
from softlabel_ood.workdir import predictions, saved_runs
from tests.train_helpers import tiny_digits_config

traced_shapes = []  # the logits' shapes each time the toy loss is traced into a program


def toward_class_zero(hp, logits, labels, outlier_logits, teacher_logits):
    """A loss no method has: mass α moved from the true class to class 0."""
    traced_shapes.append(logits.shape)
    k = logits.shape[-1]
    targets = ((1 - hp.label_smoothing) * soft_labels.one_hot(labels, k)
               + hp.label_smoothing * soft_labels.one_hot(jnp.zeros_like(labels), k))
    return jnp.mean(soft_labels.cross_entropy(logits, targets))


@pytest.fixture
def toy_method(monkeypatch):
    monkeypatch.setitem(methods.BY_NAME, "toy", methods.Method(
        "toy", "mass α on class 0", loss="toward_class_zero", reads=("label_smoothing",)))
    monkeypatch.setitem(method_losses.LOSSES, "toward_class_zero", toward_class_zero)


def test_a_new_method_trains_is_recorded_and_is_reported(toy_method, tmp_path):
    config = tiny_digits_config("toy", label_smoothing=0.25)
    # The record says the method reads α: it reaches the step, and the config check accepts it.
    hp = run_model.hyperparams(config, num_train_examples=256)
    assert float(hp.label_smoothing) == 0.25
    assert float(hp.kd_weight) == methods.NEUTRAL["kd.weight"]
    assert run_model.step_config(config).loss == "toward_class_zero"
    traced_shapes.clear()
    train.train_and_evaluate(config, str(tmp_path))
    assert set(traced_shapes) == {(config.batch_size, 10)}  # the train program traced it
    assert saved_runs.is_finished(tmp_path)
    manifest = predictions.read_manifest(tmp_path / "predictions")
    assert manifest["run"]["method"] == "toy"
    assert manifest["run"]["alpha"] == 0.25
    logits = predictions.read(tmp_path / "predictions").splits["digits_test"].logits
    assert np.isfinite(logits).all()
    run = RunInfo(run="toy_seed0", name="toy", seed=0, method="toy", alpha=0.25)
    assert "| `toy` | toy | 0.25 |" in report.runs_markdown([run])


def test_a_field_the_new_method_does_not_read_is_refused(monkeypatch):
    monkeypatch.setitem(methods.BY_NAME, "toy", methods.Method(
        "toy", "cross-entropy under another name", loss="cross_entropy"))
    config = tiny_digits_config("toy", label_smoothing=0.25)
    with pytest.raises(config_validation.ConfigError,
                       match=r"label_smoothing.*ignored by method toy"):
        config_validation.check(config)
    config.label_smoothing = 0.0
    config_validation.check(config)
    # Its loss is shared with ce and ls: one compiled program for all three.
    assert run_model.step_config(config) == run_model.step_config(tiny_digits_config("ce"))


def test_a_method_without_its_loss_is_refused_at_the_step(monkeypatch):
    monkeypatch.setitem(methods.BY_NAME, "toy", methods.Method("toy", "no loss", loss="missing"))
    with pytest.raises(ValueError, match="loss 'missing'"):
        train_step.StepConfig.for_method("toy", num_classes=2, mean=(0.5,), std=(0.25,))


def test_every_method_names_a_loss_and_every_field_it_reads_is_a_config_field():
    for method in methods.BY_NAME.values():
        assert method.loss in method_losses.LOSSES, method.name
        for field in method.reads:
            assert field in config_validation.FIELDS, (method.name, field)
