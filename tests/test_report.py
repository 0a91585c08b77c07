"""report.write_report and results.load on hand-made metrics and tiny predictions directories."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from softlabel_ood import scoring
from softlabel_ood.analysis import report, results
from softlabel_ood.scoring import MetricRow
from softlabel_ood.workdir import predictions
from tests.report_helpers import OODS, metric_rows, paper_runs, write_predictions
from tests.test_claims import PAPER_LIKE

SEEDS = (0, 1)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A reproduce workdir: runs/ with tiny predictions, report/ written from hand-made metrics."""
    root = tmp_path_factory.mktemp("grid")
    runs = paper_runs(seeds=SEEDS, workdir=root)
    for r in runs:
        write_predictions(root / "runs" / r.run, seed=r.seed, method=r.method)
    report.write_report(metric_rows(runs, PAPER_LIKE), root / "report", runs=runs)
    return root


def test_report_files(workdir):
    names = {p.name for p in (workdir / "report").iterdir()}
    assert {"report.md", "metrics.csv", "metrics.md", "runs.json", "alpha_sweep_auroc.png",
            "alpha_sweep_fpr95.png", "alpha_sweep_aupr_out.png", "alpha_sweep_id.png",
            "msp_histograms.png", "roc_curves.png"} <= names
    for name in names:
        if name.endswith(".png"):
            assert (workdir / "report" / name).read_bytes()[:4] == b"\x89PNG"


def test_metrics_csv_holds_the_fractions(workdir):
    runs = paper_runs(seeds=SEEDS, workdir=workdir)
    expected = sorted(metric_rows(runs, PAPER_LIKE), key=dataclasses.astuple)
    got = sorted(scoring.read_metrics_csv(str(workdir / "report" / "metrics.csv")),
                 key=dataclasses.astuple)
    assert [(r.run, r.score, r.ood, r.metric) for r in got] == \
        [(r.run, r.score, r.ood, r.metric) for r in expected]
    assert [r.value for r in got] == pytest.approx([r.value for r in expected])


def test_report_tables_print_percent_mean_and_std(workdir):
    text = (workdir / "report" / "report.md").read_text()
    for heading in ("## Definitions", "## Runs", "## Table 1. Label-smoothing sweep",
                    "### Table 1, OOD set `noise`", "### Table 1, OOD set `patches`",
                    "## Table 2. Teachers and students", "## Table 3. All runs", "## Figures",
                    "## Claims"):
        assert heading in text
    lines = text.splitlines()
    # Seeds 0 and 1 differ by 0.002, so std = 0.002 / sqrt(2) = 0.14 points.
    # α = 0: accuracy 89.9, ECE 4.9; msp AUROC 94.9, FPR95 5.1, AUPR-out 93.9; energy + 1 point.
    row = ("| 0 | 89.90 ± 0.14 | 4.90 ± 0.14 | 94.90 ± 0.14 | 5.10 ± 0.14 | 93.90 ± 0.14 | "
           "95.90 ± 0.14 | 4.10 ± 0.14 | 94.90 ± 0.14 |")
    assert row in lines
    # Per OOD set: noise is 2 points above the mean over OOD sets.
    assert "| 0.3 | 87.90 ± 0.14 | 12.10 ± 0.14 | 86.90 ± 0.14 | 88.90 ± 0.14 | 11.10 ± 0.14 | " \
           "87.90 ± 0.14 |" in lines
    # Table 2: the oe teacher, its kd student and its kd_incorrect student, side by side.
    assert ("| oe (`oe`) | 89.90 ± 0.14 | 98.90 ± 0.14 | 1.10 ± 0.14 | 89.90 ± 0.14 | "
            "96.90 ± 0.14 | 3.10 ± 0.14 | 89.90 ± 0.14 | 95.90 ± 0.14 | 4.10 ± 0.14 |") in lines
    assert any(line.startswith("| ls (α = 0.3; `ls0.3`) |") and line.endswith("| – | – | – |")
               for line in lines)
    assert "| `kdi_oe` | kd_incorrect |" in text
    for n in (1, 2, 3):
        assert f"### Claim {n}: supported" in text
        assert f"| {n} | supported | supported |" in text  # paired and independent verdicts
    assert "**paired by seed**" in text
    # The histogram and ROC figures use the OOD set that is hardest for the ce run.
    assert "MSP on the ID test set and on patches" in text


def test_report_without_predictions_and_with_one_seed(tmp_path):
    runs = paper_runs(seeds=(0,))
    report.write_report(metric_rows(runs, PAPER_LIKE), tmp_path, runs=runs)
    text = (tmp_path / "report.md").read_text()
    assert not (tmp_path / "msp_histograms.png").exists()
    assert "msp_histograms" not in text
    assert "| 0 | 89.80 | 4.80 | 94.80 | 5.20 | 93.80 |" in text  # one seed: no ±
    assert text.count(": inconclusive") == 3


def test_unknown_run_in_metrics_is_an_error(tmp_path):
    runs = paper_runs(seeds=(0,))
    rows = [*metric_rows(runs, PAPER_LIKE), MetricRow("stray_seed0", "", "", "accuracy", 0.5)]
    with pytest.raises(ValueError, match="stray_seed0"):
        report.write_report(rows, tmp_path, runs=runs)


def test_load_a_workdir_a_report_dir_and_a_runs_dir(workdir):
    from_workdir = results.load(workdir)
    assert len(from_workdir.runs) == len(paper_runs(seeds=SEEDS))
    assert all(r.directory for r in from_workdir.runs)
    assert from_workdir.table.ood_sets == list(OODS)
    from_report = results.load(workdir / "report")
    assert from_report.runs == from_workdir.runs
    # A runs directory without a report: run names from the directories, metrics computed.
    from_runs = results.load(workdir / "runs")
    by_run = {r.run: r for r in from_runs.runs}
    assert (by_run["ls0.1_seed1"].name, by_run["ls0.1_seed1"].seed) == ("ls0.1", 1)
    assert from_runs.table.value("ce_seed0", "auroc", "msp", "noise") is not None
    with pytest.raises(FileNotFoundError):
        results.load(workdir / "missing")


def test_report_states_the_odin_pair_of_each_run(tmp_path):
    write_predictions(tmp_path / "ce_seed0", seed=0, method="ce")
    directory = tmp_path / "ce_seed0" / "predictions"
    preds = predictions.read(directory)
    rng = np.random.default_rng(0)
    k = preds.num_classes
    splits = {name: dataclasses.replace(split, odin_log_ratio=np.log(
        k * rng.uniform(0.4, 0.6, (len(split.labels), 3))).astype(np.float32))
        for name, split in preds.splits.items()}
    train = splits["toy_test"].logits.shape[0]
    splits["toy_train"] = predictions.Split(
        "id_train", splits["toy_test"].logits, np.zeros(train, np.int32),
        odin_log_ratio=np.log(k * np.tile(np.float32([0.5, 0.35, 0.6]), (train, 1))))
    predictions.write(directory, splits, num_classes=preds.num_classes, run=preds.run,
                      odin_pairs=((1.0, 0.0), (1000.0, 0.0), (1000.0, 0.0014)))
    runs = [results.RunInfo(run="ce_seed0", name="ce", seed=0, method="ce", alpha=0.0,
                            directory=str(tmp_path / "ce_seed0"))]
    text = report.odin_pairs_markdown(runs)
    assert "| `ce_seed0` | 1000 | 0.0014 | 35.00, 60.00 |" in text
    assert "the largest configured temperature T" in text
    # The rule took the largest ε of the grid (0 or 0.0014) for every run: the report says so.
    assert "Every run's rule chose the largest ε offered (0.0014)" in text
    # With odin_selection = "fixed" the pair is OpenOOD's, and the line goes.
    (tmp_path / "ce_seed0" / "config.json").write_text(json.dumps({"odin_selection": "fixed"}))
    text = report.odin_pairs_markdown(runs)
    assert "| `ce_seed0` | 1000 | 0.0014 | 35.00, 60.00 |" in text
    assert "Every run's rule" not in text
    # The knn score's k follows the id_train split's size (24 examples: k = 1).
    assert report.knn_k_text(runs) == "k = 1"


def test_report_groups_and_claim_1_for_every_score(tmp_path):
    runs = paper_runs(seeds=SEEDS)
    report.write_report(metric_rows(runs, PAPER_LIKE), tmp_path, runs=runs,
                        groups={"near": ("patches",), "far": ("noise", "absent")})
    text = (tmp_path / "report.md").read_text()
    lines = text.splitlines()
    # Per score: the α sweep with AUROC per group. msp at α = 0: 94.9 over both sets, patches
    # (near) 2 points below, noise (far) 2 above; energy 1 point higher throughout.
    assert "### Table 1, score `energy`" in text
    assert "| α | accuracy ↑ | ECE ↓ | AUROC ↑ | FPR95 ↓ | AUPR-out ↑ | AUROC near ↑ | " \
           "AUROC far ↑ |" in lines
    assert "| 0 | 89.90 ± 0.14 | 4.90 ± 0.14 | 94.90 ± 0.14 | 5.10 ± 0.14 | 93.90 ± 0.14 | " \
           "92.90 ± 0.14 | 96.90 ± 0.14 |" in lines
    assert "| 0 | 89.90 ± 0.14 | 4.90 ± 0.14 | 95.90 ± 0.14 | 4.10 ± 0.14 | 94.90 ± 0.14 | " \
           "93.90 ± 0.14 | 97.90 ± 0.14 |" in lines
    # Claim 1 decided for each score by the same rule: both fall by 9 points from α = 0 to 0.3.
    assert "### Claim 1 for every score" in text
    assert "| `msp` | supported | supported | -1.000 | 9.00 ± 0.00 |" in lines
    assert "| `energy` | supported | supported | -1.000 | 9.00 ± 0.00 |" in lines
    # metrics.md shows the group means beside the overall mean.
    md = (tmp_path / "metrics.md").read_text()
    assert "| mean (near) | " in md
    assert "| mean (far) | " in md


def test_group_means_by_hand():
    assert scoring.groups.group_means({"a": 0.5, "b": 0.7, "c": 0.1},
                                      {"g": ("a", "b", "x"), "h": ("x",)}) == {"g": 0.6}
    assert scoring.groups.parse_groups("near=cifar100; far=svhn,textures") == {
        "near": ("cifar100",), "far": ("svhn", "textures")}
    with pytest.raises(scoring.ScoringError, match="--groups: 'near' is not"):
        scoring.groups.parse_groups("near")
