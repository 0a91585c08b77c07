"""results: which run is which, the LS sweep, runs.json, loading."""

from __future__ import annotations

import json

import pytest

from softlabel_ood.analysis import results
from softlabel_ood.configs import grid


def _run(name, seed=0, method="ce", alpha=0.0, teacher="", init_from=""):
    return results.RunInfo(run=grid.run_dir_name(name, seed), entry=name, seed=seed,
                           method=method, strength=alpha, teacher=teacher, init_from=init_from)


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
