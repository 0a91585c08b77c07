"""report.write_report and results.load on hand-made metrics and tiny predictions directories."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from softlabel_ood import scoring
from softlabel_ood.analysis import report, report_inputs, report_tables, results
from softlabel_ood.analysis.tables import MAX_TABLE_COLUMNS, md_table
from softlabel_ood.scoring import MetricRow
from softlabel_ood.workdir import predictions
from tests.report_helpers import OODS, metric_rows, paper_runs, report_rows, write_predictions
from tests.test_claims import PAPER_LIKE

SEEDS = (0, 1)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A reproduce workdir: runs/ with tiny predictions, report/ written from hand-made metrics."""
    root = tmp_path_factory.mktemp("grid")
    runs = paper_runs(seeds=SEEDS, workdir=root)
    for r in runs:
        write_predictions(root / "runs" / r.run, seed=r.seed, method=r.method)
    report.write_report(report_rows(runs, PAPER_LIKE), root / "report", runs=runs)
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
    expected = sorted(report_rows(runs, PAPER_LIKE), key=dataclasses.astuple)
    got = sorted(scoring.read_metrics_csv(str(workdir / "report" / "metrics.csv")),
                 key=dataclasses.astuple)
    assert [(r.run, r.score, r.ood, r.metric) for r in got] == \
        [(r.run, r.score, r.ood, r.metric) for r in expected]
    assert [r.value for r in got] == pytest.approx([r.value for r in expected])


def test_report_tables_print_percent_mean_and_std(workdir):
    text = (workdir / "report" / "report.md").read_text()
    for heading in ("## Summary", "## Claims", "## Table 1. Label-smoothing sweep",
                    "### Table 1, OOD set `noise`", "### Table 1, OOD set `patches`",
                    "## Table 2. Teachers and students", "## Table 3. All runs", "## Figures",
                    "## Definitions", "## Runs", "## Environment"):
        assert heading in text
    lines = text.splitlines()
    # Seeds 0 and 1 differ by 0.002, so std = 0.002 / sqrt(2) = 0.14 points.
    # α = 0: accuracy 89.9, ECE 4.9; msp AUROC 94.9, FPR95 5.1, AUPR-out 93.9; energy + 1 point.
    # Table 1 is one table per metric, a column per score; the AUROC one leads with accuracy, ECE.
    assert "| α | accuracy ↑ | ECE ↓ | `msp` | `energy` |" in lines
    assert "| 0 | 89.90 ± 0.14 | 4.90 ± 0.14 | 94.90 ± 0.14 | 95.90 ± 0.14 |" in lines
    assert "| 0 | 5.10 ± 0.14 | 4.10 ± 0.14 |" in lines  # FPR95
    assert "| 0 | 93.90 ± 0.14 | 94.90 ± 0.14 |" in lines  # AUPR-out
    # Per OOD set: noise is 2 points above the mean over OOD sets (AUROC 87.9 at α = 0.3).
    noise = text[text.index("### Table 1, OOD set `noise`"):]
    assert "| 0.3 | 87.90 ± 0.14 | 88.90 ± 0.14 |" in noise.splitlines()
    assert "| 0.3 | 12.10 ± 0.14 | 11.10 ± 0.14 |" in noise.splitlines()
    # Table 2: the oe teacher, its kd student and its kd_incorrect student, side by side. oe's
    # noise AUROC, 1.008 and 1.010 by the seeds, is cut to 1: with patches' 0.968 and 0.970,
    # 98.45 ± 0.07 (std 0.001 / sqrt(2)), FPR95 1.55 ± 0.07.
    assert ("| oe (`oe`) | 89.90 ± 0.14 | 98.45 ± 0.07 | 1.55 ± 0.07 | 89.90 ± 0.14 | "
            "96.90 ± 0.14 | 3.10 ± 0.14 | 89.90 ± 0.14 | 95.90 ± 0.14 | 4.10 ± 0.14 |") in lines
    assert any(line.startswith("| ls (α = 0.3; `ls0.3`) |") and line.endswith("| – | – | – |")
               for line in lines)
    assert "| `kdi_oe` (kd_incorrect) | 89.90 ± 0.14 |" in text
    for n in (1, 2, 3):
        assert f"### Claim {n}: supported" in text
        assert f"| {n} | supported | supported |" in text  # paired and independent verdicts
    assert "**paired by seed**" in text
    # The histogram and ROC figures use the OOD set that is hardest for the ce run.
    assert "MSP on the ID test set and on patches" in text


def test_summary_states_each_verdict_with_its_numbers(workdir):
    text = (workdir / "report" / "report.md").read_text()
    summary = text[text.index("## Summary"):text.index("## Claims")]
    # PAPER_LIKE: A(0) − A(0.3) = 95 − 86 = 9 points; kd-from-oe − kd-from-ce = 97 − 94;
    # kd-from-ls − kd-from-ce = 88 − 94; kdi-from-oe − ls0.3 = 96 − 86. metric_rows moves every
    # entry by the same per-seed offset, so each seed's difference is the same (std 0) and the
    # noise threshold is the 0.5-point minimum.
    assert ("- **Claim 1** (label smoothing hurts softmax-based detection as α grows, accuracy "
            "kept): **supported**: ce (α = 0) − ls (α = 0.3) = +9.00 ± 0.00 points (noise "
            "threshold 0.50, seeds ++); Spearman ρ(α, A) = -1.00 (supported needs ≤ -0.8); no "
            "α > 0 has a lower accuracy than α = 0") in summary
    assert ("kd-from-oe − kd-from-ce = +3.00 ± 0.00 points (noise threshold 0.50, seeds ++); "
            "kd-from-ls − kd-from-ce = -6.00 ± 0.00 points (noise threshold 0.50, seeds −−).") \
        in summary
    assert ("kd_incorrect-from-oe − ls (α = 0.3) = +10.00 ± 0.00 points (noise threshold 0.50, "
            "seeds ++).") in summary
    # The claims figure and the α sweep follow the verdicts, before any other section.
    assert summary.index("![claims.png](claims.png)") < summary.index(
        "![alpha_sweep_auroc.png](alpha_sweep_auroc.png)")
    assert (workdir / "report" / "claims.png").read_bytes()[:4] == b"\x89PNG"


def _sections(text: str) -> list[str]:
    return [line[3:] for line in text.splitlines() if line.startswith("## ")]


def _markdown_tables(text: str) -> list[list[list[str]]]:
    """Every markdown table of `text`, as rows of cells (the separator row left out)."""
    tables, current = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|") and line.endswith("|"):
            cells = [c.strip() for c in line[1:-1].split("|")]
            if not all(set(c) <= {"-", ":"} and c for c in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def test_report_opens_with_its_answers_and_keeps_every_table_narrow(tmp_path):
    # Every score the project computes and two OOD groups: Table 1's AUROC table has 14 columns,
    # and the per-score tables 8.
    runs = paper_runs(seeds=SEEDS, workdir=tmp_path)
    for r in runs:
        write_predictions(tmp_path / "runs" / r.run, seed=r.seed, method=r.method)
    rows = metric_rows(runs, PAPER_LIKE, scores=scoring.ALL_SCORES)
    report.write_report(rows, tmp_path / "report", runs=runs,
                        groups={"near": ("patches",), "far": ("noise",)})
    text = (tmp_path / "report" / "report.md").read_text()
    assert text.startswith("# Soft labels and OOD detection")
    assert _sections(text) == ["Summary", "Claims", "Table 1. Label-smoothing sweep",
                               "Table 1b. Selective classification",
                               "Table 2. Teachers and students", "Table 3. All runs", "Figures",
                               "Definitions", "Runs", "Environment"]
    assert [s for s in report.SECTIONS if s in _sections(text)] == _sections(text)
    tables = _markdown_tables(text)
    assert len(tables) > 20
    widths = [len(row) for table in tables for row in table]
    assert max(widths) == MAX_TABLE_COLUMNS
    assert all(len(set(len(row) for row in table)) == 1 for table in tables)
    # Table 1's AUROC table (3 + 11 columns) is cut after 12, repeating α.
    header = ["α", "accuracy ↑", "ECE ↓", *(f"`{s}`" for s in scoring.ALL_SCORES)]
    headers = [table[0] for table in tables]
    cut = headers.index(header[:MAX_TABLE_COLUMNS])
    assert headers[cut + 1] == ["α", *header[MAX_TABLE_COLUMNS:]]


def test_a_wide_table_is_cut_into_tables_that_repeat_the_row_labels():
    header = ["name", *(f"c{i}" for i in range(25))]
    rows = [["a", *(str(i) for i in range(25))], ["b", *(str(-i) for i in range(25))]]
    tables = _markdown_tables(md_table(header, rows))
    assert [len(t[0]) for t in tables] == [12, 12, 4]  # 11 + 11 + 3 columns after "name"
    assert [t[1][0] for t in tables] == ["a", "a", "a"]
    assert [c for t in tables for c in t[0][1:]] == header[1:]  # each column once, in order
    assert [c for t in tables for c in t[2][1:]] == rows[1][1:]


def test_report_without_predictions_and_with_one_seed(tmp_path):
    runs = paper_runs(seeds=(0,))
    report.write_report(metric_rows(runs, PAPER_LIKE), tmp_path, runs=runs)
    text = (tmp_path / "report.md").read_text()
    assert not (tmp_path / "msp_histograms.png").exists()
    assert "msp_histograms" not in text
    assert "| 0 | 89.80 | 4.80 | 94.80 | 5.20 | 93.80 |" in text  # one seed: no ±
    assert text.count(": inconclusive") == 5  # the three claims, S1 and S2


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
    assert (by_run["ls0.1_seed1"].entry, by_run["ls0.1_seed1"].seed) == ("ls0.1", 1)
    assert from_runs.table.value("ce_seed0", "auroc", "msp", "noise") is not None
    with pytest.raises(FileNotFoundError):
        results.load(workdir / "missing")


def _odin_predictions(run_dir, train_scores) -> None:
    """Predictions with ODIN scores; id_train's mean score per pair is `train_scores`."""
    write_predictions(run_dir, seed=0, method="ce")
    directory = run_dir / "predictions"
    preds = predictions.read(directory)
    rng = np.random.default_rng(0)
    k = preds.num_classes
    splits = {name: dataclasses.replace(split, odin_log_ratio=np.log(
        k * rng.uniform(0.4, 0.6, (len(split.labels), 3))).astype(np.float32))
        for name, split in preds.splits.items()}
    train = splits["toy_test"].logits.shape[0]
    splits["toy_train"] = predictions.Split(
        "id_train", splits["toy_test"].logits, np.zeros(train, np.int32),
        odin_log_ratio=np.log(k * np.tile(np.float32(train_scores), (train, 1))))
    predictions.write(directory, splits, num_classes=preds.num_classes, run=preds.run,
                      odin_pairs=((1.0, 0.0), (1000.0, 0.0), (1000.0, 0.0014)))


def test_report_states_the_odin_pair_of_each_run(tmp_path):
    # At T = 1000 the id_train means are 0.35 (ε = 0) and 0.6 (ε = 0.0014): the rule takes 0.0014;
    # the second run's means make it take ε = 0.
    _odin_predictions(tmp_path / "ce_seed0", [0.5, 0.35, 0.6])
    _odin_predictions(tmp_path / "ce_seed1", [0.5, 0.7, 0.6])
    runs = [results.RunInfo(run=f"ce_seed{s}", entry="ce", seed=s, method="ce", strength=0.0,
                            directory=str(tmp_path / f"ce_seed{s}")) for s in (0, 1)]
    choices = report_inputs.odin_choices(runs)
    text = report_tables.odin_pairs_markdown(choices)
    assert "| `ce_seed0` | 1000 | 0.0014 | 35.00, 60.00 |" in text
    assert "| `ce_seed1` | 1000 | 0 | 70.00, 60.00 |" in text
    assert "the largest configured temperature T" in text
    assert "Every run's rule" not in text  # one run took ε = 0
    # Every run with the same pair: one line instead of the table; and that pair is the largest
    # ε of the grid for every run, which the report says.
    one = report_tables.odin_pairs_markdown(report_inputs.odin_choices(runs[:1]))
    assert "Every one of the 1 runs chose T = 1000, ε = 0.0014" in one
    assert "Every run's rule chose the largest ε offered (0.0014)" in one
    assert "|" not in one
    # With odin_selection = "fixed" the pair is OpenOOD's, and that line goes.
    (tmp_path / "ce_seed0" / "config.json").write_text(json.dumps({"odin_selection": "fixed"}))
    fixed = report_tables.odin_pairs_markdown(report_inputs.odin_choices(runs[:1]))
    assert "chose T = 1000, ε = 0.0014" in fixed
    assert "Every run's rule" not in fixed
    # The knn score's k follows the id_train split's size (24 examples: k = 1).
    assert report_inputs.knn_k_text(runs) == "k = 1"


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
