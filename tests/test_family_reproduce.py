"""`reproduce --grid=family` on the digits config end to end: one seed, one short epoch."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import special, stats

from softlabel_ood.configs import grid
from softlabel_ood.workdir import predictions, run_dir, saved_runs
from tests.train_helpers import run_module

SHORT = ("--config.num_epochs=1", "--config.num_train_examples=256", "--config.batch_size=32",
         "--config.num_ood_examples=64", "--config.grid.seeds=(0,)", "--config.odin_pairs=()")


@pytest.fixture(scope="module")
def family_workdir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("family") / "work"
    result = run_module("softlabel_ood.reproduce", "--config=configs/digits.py", "--grid=family",
                        f"--workdir={workdir}", *SHORT, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def test_every_family_entry_trains_with_its_setting(family_workdir):
    entries = grid.family_grid(seeds=(0,)).runs
    assert sorted(p.name for p in (family_workdir / "runs").iterdir()) == sorted(
        f"{e['name']}_seed0" for e in entries)
    for entry in entries:
        config = saved_runs.read_config(family_workdir / "runs" / f"{entry['name']}_seed0")
        assert config.method == entry["method"]
        assert config.num_epochs == 1
        for field, value in entry["overrides"].items():
            node = config
            for part in field.split("."):
                node = node[part]
            assert node == value, (entry["name"], field)


def test_the_report_has_the_family_table_summary_lines_and_figure(family_workdir):
    out = family_workdir / "report"
    text = (out / "report.md").read_text()
    assert text.startswith("# The soft-label family and OOD detection on digits\n")
    summary = text.split("## Summary")[1].split("\n## ")[0]
    for method in grid.FAMILY_METHODS:
        line = next(line for line in summary.splitlines() if line.startswith(f"- **{method}**: "))
        # One seed decides nothing: every verdict of the line is inconclusive.
        entries = [e["name"] for e in grid.family_grid(seeds=(0,)).runs if e["method"] == method]
        assert [f"`{name}`" in line for name in entries] == [True] * len(entries)
        assert line.count("**inconclusive") == 3 * len(entries)
    section = text.split("## The soft-label family")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    labels = [row.split(" | ")[0].split("`")[1] for row in rows]
    assert labels[:len(grid.family_grid(seeds=(0,)).runs)] == [
        e["name"] for e in grid.family_grid(seeds=(0,)).runs]
    assert "![family_entropy.png](family_entropy.png)" in section
    assert (out / "family_entropy.png").stat().st_size > 1000


def test_the_recorded_entropy_is_each_run_s_softmax_entropy(family_workdir):
    record = json.loads((family_workdir / "report" / "runs.json").read_text())["report"]
    runs = sorted(p.name for p in (family_workdir / "runs").iterdir())
    assert sorted(record["id_entropy"]) == runs
    for run in runs:
        preds = predictions.read(run_dir.predictions_path(family_workdir / "runs" / run),
                                 features=False)
        p = special.softmax(preds.splits[preds.id_test_name].logits.astype(np.float64), axis=1)
        expected = float(np.mean(stats.entropy(p, axis=1)))
        assert record["id_entropy"][run] == pytest.approx(expected, rel=1e-9)
        assert 0 < expected < math.log(10)


def test_an_unknown_grid_is_refused_in_one_line_before_anything_is_written(tmp_path):
    result = run_module("softlabel_ood.reproduce", "--config=configs/digits.py", "--grid=soft",
                        f"--workdir={tmp_path / 'work'}", timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --grid=soft: value should be one of <paper|family>"]
    assert not (tmp_path / "work").exists()
