"""A metric is one record (`scoring/metric_records.py`): metrics.md, the report's tables and the
figures read its label and direction there. Proved on a lower-is-better metric registered at run
time, which no file of the package names."""

from __future__ import annotations

import pytest

from softlabel_ood import scoring
from softlabel_ood.analysis import report_tables
from softlabel_ood.analysis.metric_stats import MetricTable
from softlabel_ood.analysis.results import RunInfo
from softlabel_ood.scoring import metric_records
from softlabel_ood.scoring.metrics_files import write_metrics

TOY = metric_records.Metric("toy_risk", "toy risk", "ood", higher_is_better=False)


@pytest.fixture
def toy_metric(monkeypatch):
    monkeypatch.setitem(metric_records.BY_NAME, TOY.name, TOY)


def _rows(run: str) -> list[scoring.MetricRow]:
    return [scoring.MetricRow(run, "", "", "accuracy", 0.9),
            scoring.MetricRow(run, "msp", "svhn", "auroc", 0.8),
            scoring.MetricRow(run, "msp", "svhn", "toy_risk", 0.125),
            scoring.MetricRow(run, "msp", "", "aurc", 0.05)]


def test_a_registered_lower_is_better_metric_is_printed_with_its_arrow(toy_metric, tmp_path):
    write_metrics(_rows("ce_seed0"), tmp_path / "out")
    text = (tmp_path / "out" / "metrics.md").read_text()
    assert "Lower is better for fpr95, fpr95_ood_positive, fpr95_oe and toy_risk, higher" in text
    assert "| ood | auroc | toy_risk |" in text  # after the built-ins, in the records' order
    assert "| svhn | 80.00 | 12.50 |" in text
    table = MetricTable(_rows("ce_seed0"))
    runs = [RunInfo(run="ce_seed0", entry="ce", seed=0, method="ce", strength=0.0)]
    header = report_tables.table3_markdown(table, runs, metric="toy_risk").splitlines()[0]
    assert header == "| run (method) | accuracy ↑ | ECE ↓ | msp toy risk ↓ |"
    assert "| `ce` (ce) | 90.00 | – | 12.50 |" in report_tables.table3_markdown(table, runs,
                                                                        metric="toy_risk")
    assert metric_records.header("toy_risk") == "toy risk ↓"
    assert metric_records.header("auroc") == "AUROC ↑"


def test_the_built_in_records_are_what_the_scoring_functions_compute():
    assert metric_records.names("ood") == scoring.METRICS
    assert scoring.ID_METRICS == ("accuracy", "ece")
    assert scoring.SELECTIVE_METRICS == ("aurc", "eaurc", "error_auroc", "error_fpr95")
    assert metric_records.lower_is_better("ood") == ("fpr95", "fpr95_ood_positive", "fpr95_oe")
    assert metric_records.lower_is_better("id") == ("ece",)
    assert metric_records.lower_is_better("selective") == ("aurc", "eaurc", "error_fpr95")
    with pytest.raises(ValueError, match="already registered"):
        metric_records.register(metric_records.BY_NAME["auroc"])
    with pytest.raises(ValueError, match="kind 'pair'"):
        metric_records.register(metric_records.Metric("x", "x", "pair", True))
