"""results: which run is which, metric lookups, mean ± std over seeds, runs.json."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from softlabel_ood import grid, results
from softlabel_ood.scoring import MetricRow


def _run(name, seed=0, method="ce", alpha=0.0, teacher="", init_from=""):
    return results.RunInfo(run=grid.run_dir_name(name, seed), name=name, seed=seed,
                           method=method, alpha=alpha, teacher=teacher, init_from=init_from)


def test_means_use_the_ood_sets_common_to_all_runs():
    rows = [MetricRow("a", "msp", "x", "auroc", 0.9), MetricRow("a", "msp", "y", "auroc", 0.7),
            MetricRow("b", "msp", "x", "auroc", 0.6)]
    table = results.MetricTable(rows)
    assert table.ood_sets == ["x"]
    assert table.all_ood_sets == ["x", "y"]
    assert table.ood_mean("a", "msp", "auroc") == pytest.approx(0.9)
    assert table.ood_mean("a", "energy", "auroc") is None


def test_stat_is_the_mean_and_sample_std_over_seeds():
    values = (0.2, 0.5, 0.9)
    s = results.Stat(values)
    assert s.n == 3
    assert s.mean == pytest.approx(np.mean(values))
    # ddof = 1: sqrt(((-0.333)² + (-0.033)² + 0.367²) / 2)
    assert s.std == pytest.approx(math.sqrt((0.1111111 + 0.0011111 + 0.1344444) / 2), rel=1e-5)
    assert math.isnan(results.Stat((0.4,)).std)
    assert math.isnan(results.Stat(()).mean)


def test_stat_skips_runs_without_the_metric_and_by_seed_keys_by_seed():
    runs = [_run("ls0.1", seed, "ls", 0.1) for seed in (0, 1, 2)]
    rows = [MetricRow("ls0.1_seed0", "", "", "accuracy", 0.8),
            MetricRow("ls0.1_seed2", "", "", "accuracy", 0.6)]
    table = results.MetricTable(rows)
    assert results.id_stat(table, runs, "accuracy").values == (0.8, 0.6)
    assert results.by_seed(runs, lambda run: table.value(run, "accuracy")) == {0: 0.8, 2: 0.6}


def test_format_stat():
    assert results.format_stat(results.Stat(())) == "–"
    assert results.format_stat(results.Stat((0.5,))) == "50.00"
    assert results.format_stat(results.Stat((0.5, 0.7))) == "60.00 ± 14.14"


def test_the_ls_sweep_starts_at_plain_ce_and_skips_other_ce_runs():
    runs = [_run("ce", s) for s in (0, 1)]
    runs += [_run("ls0.3", s, "ls", 0.3) for s in (0, 1)]
    runs += [_run("ls0.1", s, "ls", 0.1) for s in (0, 1)]
    # Neither a fine-tuned ce run nor a ce run with a teacher is the α = 0 point.
    runs += [_run("ce_ft", 0, init_from="ce"), _run("kd_ce", 0, "kd", teacher="ce")]
    runs += [_run("ls0.1_again", 0, "ls", 0.1)]
    sweep = results.ls_sweep(runs)
    assert [alpha for alpha, _ in sweep] == [0.0, 0.1, 0.3]
    assert [[r.run for r in group] for _, group in sweep] == [
        ["ce_seed0", "ce_seed1"], ["ls0.1_seed0", "ls0.1_seed1"], ["ls0.3_seed0", "ls0.3_seed1"]]


def test_runs_json_round_trips_and_reads_the_list_of_earlier_reports(tmp_path):
    runs = [_run("ce", 0), _run("kd_ce", 1, "kd", teacher="ce")]
    path = tmp_path / results.RUNS_FILE
    results.write_runs_json(runs, path, environment={"jax": "0.0"})
    data = json.loads(path.read_text())
    assert data["environment"] == {"jax": "0.0"}
    assert results.read_runs_json(path) == runs
    path.write_text(json.dumps(data["runs"]))
    assert results.read_runs_json(path) == runs


def test_load_refuses_a_path_without_runs(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        results.load(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=r"holds neither runs\.json nor run directories"):
        results.load(tmp_path)
