"""A score is its record and its function: proved on a score registered at run time, with a
parameter no other score has, that `score` computes, notes and writes like the built-in ones.
Nothing else in the package names it."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from softlabel_ood import score, scoring
from softlabel_ood.scoring import score_functions, score_records
from softlabel_ood.workdir import predictions
from softlabel_ood.workdir.predictions import Split

TOY_Q = score_records.Parameter(
    "toy_q", "the power q of the toy_power score", type=float, default=2.0,
    problem=lambda v: None if isinstance(v, float | int) and math.isfinite(v) and v > 0 else
    f"toy_q: must be a finite number > 0, got {v!r}")
TOY = score_records.Score("toy_power", "sum of the softmax probabilities to the power q",
                          ("logits",), "toy_power", parameters=(TOY_Q,))


def toy_power(run, toy_q):
    def power(logits):
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        return ((p / p.sum(axis=1, keepdims=True)) ** toy_q).sum(axis=1)
    return {s: power(run.logits(s).astype(np.float64)) for s in run.evaluated}, f"q = {toy_q:g}"


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(score_records.BY_NAME, TOY.name, TOY)
    monkeypatch.setitem(score_functions.FUNCTIONS, TOY.function, toy_power)
    # score.main sets JAX_PLATFORMS for its process; it must not outlive the test.
    monkeypatch.setenv("JAX_PLATFORMS", os.environ.get("JAX_PLATFORMS", "cpu"))


def _run(directory, seed=0):
    rng = np.random.default_rng(seed)

    def split(role, n, shift):
        labels = rng.integers(0, 3, n) if role != "ood_test" else np.full(n, -1)
        logits = rng.normal(size=(n, 3)) + shift * np.eye(3)[np.maximum(labels, 0)]
        return Split(role, logits.astype(np.float32), labels.astype(np.int32))

    splits = {"toy_test": split("id_test", 30, 2.0), "noise": split("ood_test", 20, 0.0),
              "near": split("ood_test", 15, 1.0)}
    predictions.write(directory / "predictions", splits, num_classes=3, run={})
    return splits


def _numpy_toy(logits, q):
    p = np.exp(logits.astype(np.float64))
    p /= p.sum(axis=1, keepdims=True)
    return (p ** q).sum(axis=1)


def test_a_registered_score_is_scored_noted_and_written_with_its_parameter(toy, tmp_path,
                                                                           capsys):
    splits = _run(tmp_path / "run")
    assert score.main([str(tmp_path / "run"), f"--out={tmp_path / 'm'}", "--toy_q=3"]) == 0
    err = capsys.readouterr().err
    assert "run: toy_power q = 3\n" in err
    text = (tmp_path / "m" / "metrics.md").read_text()
    assert "### toy_power\n\nq = 3\n" in text
    assert text.index("### odin") < text.index("### toy_power")  # registration order
    rows = {(r.score, r.ood, r.metric): r.value
            for r in scoring.read_metrics_csv(tmp_path / "m" / "metrics.csv")}
    id_scores = _numpy_toy(splits["toy_test"].logits, 3)
    for ood in ("noise", "near"):
        ood_scores = _numpy_toy(splits[ood].logits, 3)
        y = np.r_[np.ones(len(id_scores)), np.zeros(len(ood_scores))]
        s = np.r_[id_scores, ood_scores]
        assert rows[("toy_power", ood, "auroc")] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert rows[("toy_power", ood, "aupr_in")] == pytest.approx(
            average_precision_score(y, s), abs=1e-12)
    correct = splits["toy_test"].logits.argmax(1) == splits["toy_test"].labels
    if 0 < correct.sum() < len(correct):
        assert rows[("toy_power", "", "error_auroc")] == pytest.approx(
            roc_auc_score(correct, id_scores), abs=1e-12)
    # Without the flag, the record's default; and it differs from q = 3.
    report = scoring.score_runs_report([tmp_path / "run"])
    assert report.notes["run"]["toy_power"] == "q = 2"
    assert {(r.score, r.ood, r.metric): r.value for r in report.rows}[
        ("toy_power", "noise", "auroc")] != rows[("toy_power", "noise", "auroc")]


def test_a_bad_value_of_the_registered_parameter_is_refused_in_one_line(toy, tmp_path, capsys):
    _run(tmp_path / "run")
    assert score.main([str(tmp_path / "run"), f"--out={tmp_path / 'm'}", "--toy_q=-1"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --toy_q: must be a finite number > 0, got -1.0"]
    assert not (tmp_path / "m").exists()
    with pytest.raises(scoring.ScoringError, match=r"^toy_q: must be a finite number > 0"):
        scoring.score_runs_report([tmp_path / "run"], toy_q=0)


def test_a_score_whose_input_a_run_lacks_is_skipped_with_the_reason(monkeypatch, tmp_path):
    # The same function, declared as reading the classifier head, which these predictions lack.
    monkeypatch.setitem(score_records.BY_NAME, "toy_power", score_records.Score(
        "toy_power", TOY.summary, ("logits", "head"), "toy_power", parameters=(TOY_Q,)))
    monkeypatch.setitem(score_functions.FUNCTIONS, "toy_power", toy_power)
    _run(tmp_path / "run")
    report = scoring.score_runs_report([tmp_path / "run"])
    assert report.skipped["run"]["toy_power"] == \
        "skipped: the predictions have no classifier head (format v1)"
    assert not any(r.score == "toy_power" for r in report.rows)


def test_the_built_in_records_give_the_flags_fields_and_order():
    from softlabel_ood.configs import config_validation
    assert scoring.ALL_SCORES == ("msp", "max_logit", "energy", "entropy", "pnorm",
                                  "mahalanobis", "knn", "react", "vim", "odin")
    assert list(score_records.parameters()) == ["knn_k", "odin_selection", "pnorm_p"]
    assert list(score_records.config_parameters()) == ["odin_selection", "pnorm_p"]
    rules = config_validation.fields()
    assert [rules["pnorm_p"].ok(v) for v in (1, 2.5, 0.5, float("inf"), True)] == \
        [True, True, False, False, False]
    assert "knn_k" not in rules  # a flag only
    assert {"odin_selection", "pnorm_p"} <= config_validation.EVALUATION_FIELDS
