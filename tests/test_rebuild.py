"""A report written again from its own directory (metrics.csv, runs.json), without the runs."""

from __future__ import annotations

import json
import shutil

import pytest

from softlabel_ood.analysis import rebuild, report, results
from softlabel_ood.workdir import run_dir, saved_runs
from tests.report_helpers import paper_runs, report_rows, write_predictions
from tests.test_claims import PAPER_LIKE
from tests.test_report import _markdown_tables, _odin_predictions, _sections
from tests.train_helpers import REPO, run_module

COMMITTED = REPO / "docs" / "results"


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """A reproduce workdir whose runs hold predictions with ODIN scores, and its report."""
    root = tmp_path_factory.mktemp("grid")
    runs = paper_runs(seeds=(0, 1), workdir=root)
    for r in runs:  # the second seed's id_train means make the rule choose ε = 0
        _odin_predictions(root / "runs" / r.run, [0.5, 0.35, 0.6] if r.seed == 0 else
                          [0.5, 0.7, 0.6])
    rows = report_rows(runs, PAPER_LIKE, scores=("msp", "energy", "odin"))
    report.write_report(rows, root / "report", runs=runs,
                        groups={"near": ("patches",), "far": ("noise",)})
    return root / "report"


def _before_environment(text: str) -> str:
    return text[:text.index("## Environment")]


def test_a_report_rebuilt_without_its_runs_is_the_same_report(original, tmp_path):
    alone = tmp_path / "report"  # the report directory, with no runs/ beside it
    shutil.copytree(original, alone)
    rebuild.rebuild_report(alone, tmp_path / "new")
    new = tmp_path / "new"
    assert (new / "metrics.csv").read_bytes() == (original / "metrics.csv").read_bytes()
    old_text, new_text = (original / "report.md").read_text(), (new / "report.md").read_text()
    assert _before_environment(new_text) == _before_environment(old_text)
    # What only the runs gave, carried by runs.json: groups, dataset, the ODIN pair of each run.
    assert "AUROC near ↑ | AUROC far ↑" in new_text
    assert "| `ce_seed0` | 1000 | 0.0014 | 35.00, 60.00 |" in new_text
    assert "| `ce_seed1` | 1000 | 0 | 70.00, 60.00 |" in new_text
    assert results.read_report_record(new / "runs.json") == \
        results.read_report_record(original / "runs.json")
    # The environment stays the one that scored the runs; the report says it was rebuilt.
    assert results.read_environment(new / "runs.json") == \
        results.read_environment(original / "runs.json")
    assert "rebuilt from that report's metrics.csv and runs.json" in new_text
    assert new_text.split("## Environment")[1].split("| |")[1] == \
        old_text.split("## Environment")[1].split("| |")[1]
    # Figures from the metrics are drawn again (the same pixels: the dataset came along); those
    # from predictions are kept.
    for name in ("claims.png", "alpha_sweep_auroc.png", "alpha_sweep_id.png",
                 "msp_histograms.png", "roc_curves.png"):
        assert (new / name).read_bytes() == (original / name).read_bytes(), name


@pytest.mark.parametrize(("family", "dataset", "groups"), [
    ("digits", "digits", {"far": ("gaussian", "rademacher", "blobs", "uniform"),
                          "near": ("flower_patches",)}),
    ("fashion_mnist", "fashion_mnist", {}),
])
def test_the_committed_reports_rebuild_with_byte_identical_metrics(family, dataset, groups,
                                                                   tmp_path):
    source = COMMITTED / family
    old_text = (source / "report.md").read_text()
    rebuild.rebuild_report(source, tmp_path / family)
    new = tmp_path / family
    assert (new / "metrics.csv").read_bytes() == (source / "metrics.csv").read_bytes()
    # Written before runs.json held the report record: it came from the old report.md.
    record = results.read_report_record(new / "runs.json")
    assert record.title == f"Soft labels and OOD detection on {dataset}: reproduction report"
    assert record.dataset == dataset
    assert record.ood_groups == groups
    assert len(record.odin_pairs) == 36
    assert {(c.temperature, c.epsilon) for c in record.odin_pairs.values()} == {(1000.0, 0.004)}
    text = (new / "report.md").read_text()
    assert _sections(text)[0] == "Summary"
    assert "Unfinished runs" not in text  # every run finished: nothing named, nothing recorded
    assert "unfinished" not in json.loads((new / "runs.json").read_text())["report"]
    assert "Every one of the 36 runs chose T = 1000, ε = 0.004" in text
    assert max(len(row) for table in _markdown_tables(text) for row in table) <= 12
    # The same verdicts as the committed report, read from its claims table.
    for n in (1, 2, 3):
        old_row = next(line for line in old_text.splitlines() if line.startswith(f"| {n} | "))
        assert old_row in text.splitlines()


def test_the_rebuild_command_refuses_to_overwrite_its_source(original, tmp_path):
    result = run_module("softlabel_ood.analysis.rebuild", str(original), f"--out={original}",
                        timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"error: --out={original}: is the report directory itself")
    missing = run_module("softlabel_ood.analysis.rebuild", str(tmp_path), "--out=x", timeout=300)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path}: a report directory holds metrics.csv and runs.json; this one lacks "
        f"metrics.csv and runs.json")
    assert not (REPO / "x").exists()


def test_unfinished_runs_are_named_in_the_summary_and_kept_by_a_rebuild(tmp_path):
    runs = paper_runs(seeds=(0, 1), workdir=tmp_path)
    for r in runs:
        write_predictions(tmp_path / "runs" / r.run, seed=r.seed, method=r.method)
        saved_runs.mark_finished(tmp_path / "runs" / r.run)

    def record(run, checkpoint):
        path = tmp_path / "runs" / run / "predictions" / "manifest.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "checkpoint": checkpoint}))

    record("ls0.1_seed1", {"step": 12, "total_steps": 16})  # predict --allow_unfinished
    record("ce_seed1", {"step": 16, "total_steps": 16})  # finished, DONE not yet written
    (tmp_path / "runs" / "ce_seed1" / run_dir.DONE).unlink()
    (tmp_path / "runs" / "kd_ce_seed0" / run_dir.DONE).unlink()  # no record: unknown
    report.write_report(report_rows(runs, PAPER_LIKE), tmp_path / "report", runs=runs)

    line = ("**Unfinished runs**: `kd_ce_seed0` (step unknown), `ls0.1_seed1` (step 12 of 16). "
            "Their predictions are not, or not known to be, of the finished models, and the "
            "verdicts and tables below use them as they are.")
    text = (tmp_path / "report" / "report.md").read_text()
    assert text.split("## Summary\n\n", 1)[1].startswith(line + "\n\nVerdicts of the paper's")
    assert json.loads((tmp_path / "report" / "runs.json").read_text())["report"]["unfinished"] \
        == {"kd_ce_seed0": None, "ls0.1_seed1": {"step": 12, "total_steps": 16}}
    metrics_md = (tmp_path / "report" / "metrics.md").read_text()
    assert metrics_md.count("**Not the finished model's metrics**") == 2
    assert "## ls0.1_seed1\n\n**Not the finished model's metrics**: unfinished run: " \
        "predictions from step 12 of 16.\n" in metrics_md

    # Without the runs, the record in runs.json names them again.
    alone = tmp_path / "alone" / "report"
    shutil.copytree(tmp_path / "report", alone)
    rebuild.rebuild_report(alone, tmp_path / "new")
    rebuilt = (tmp_path / "new" / "report.md").read_text()
    assert line in rebuilt.split("## Claims")[0]
    assert (tmp_path / "new" / "metrics.md").read_text() == metrics_md
