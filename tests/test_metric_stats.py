"""metric_stats: metric lookups, means over OOD sets, mean ± std over seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from softlabel_ood.analysis import metric_stats, results
from softlabel_ood.configs import grid
from softlabel_ood.scoring import MetricRow


def _run(name, seed=0, method="ce", alpha=0.0):
    return results.RunInfo(run=grid.run_dir_name(name, seed), entry=name, seed=seed,
                           method=method, strength=alpha)


def test_means_use_the_ood_sets_common_to_all_runs():
    rows = [MetricRow("a", "msp", "x", "auroc", 0.9), MetricRow("a", "msp", "y", "auroc", 0.7),
            MetricRow("b", "msp", "x", "auroc", 0.6)]
    table = metric_stats.MetricTable(rows)
    assert table.ood_sets == ["x"]
    assert table.all_ood_sets == ["x", "y"]
    assert table.ood_mean("a", "msp", "auroc") == pytest.approx(0.9)
    assert table.ood_mean("a", "energy", "auroc") is None


def test_stat_is_the_mean_and_sample_std_over_seeds():
    values = (0.2, 0.5, 0.9)
    s = metric_stats.Stat(values)
    assert s.n == 3
    assert s.mean == pytest.approx(np.mean(values))
    # ddof = 1: sqrt(((-0.333)² + (-0.033)² + 0.367²) / 2)
    assert s.std == pytest.approx(math.sqrt((0.1111111 + 0.0011111 + 0.1344444) / 2), rel=1e-5)
    assert math.isnan(metric_stats.Stat((0.4,)).std)
    assert math.isnan(metric_stats.Stat(()).mean)


def test_stat_skips_runs_without_the_metric_and_by_seed_keys_by_seed():
    runs = [_run("ls0.1", seed, "ls", 0.1) for seed in (0, 1, 2)]
    rows = [MetricRow("ls0.1_seed0", "", "", "accuracy", 0.8),
            MetricRow("ls0.1_seed2", "", "", "accuracy", 0.6)]
    table = metric_stats.MetricTable(rows)
    assert metric_stats.id_stat(table, runs, "accuracy").values == (0.8, 0.6)
    assert metric_stats.by_seed(runs, lambda run: table.value(run, "accuracy")) == {0: 0.8, 2: 0.6}


def test_format_stat():
    assert metric_stats.format_stat(metric_stats.Stat(())) == "–"
    assert metric_stats.format_stat(metric_stats.Stat((0.5,))) == "50.00"
    assert metric_stats.format_stat(metric_stats.Stat((0.5, 0.7))) == "60.00 ± 14.14"
