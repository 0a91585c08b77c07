"""The soft-label family in the report: Summary lines, section, table, entropy and figure."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from scipy import stats

from softlabel_ood.analysis import family_report, figures, rebuild, report, report_inputs, results
from softlabel_ood.workdir import predictions, run_dir
from tests.report_helpers import write_predictions
from tests.test_family_claims import GROUPS, family_rows, family_runs
from tests.test_report import _sections


def test_mean_softmax_entropy_is_the_hand_worked_value():
    # Uniform over 4 classes: ln 4. Logits (0, ln 3): p = (1/4, 3/4).
    assert report_inputs.mean_softmax_entropy(np.zeros((3, 4), np.float32)) == \
        pytest.approx(math.log(4))
    assert report_inputs.mean_softmax_entropy(np.array([[0.0, math.log(3.0)]])) == \
        pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))
    # Large logits, where exp overflows in float32, against scipy on the softmax.
    logits = np.random.default_rng(0).normal(scale=40.0, size=(50, 10)).astype(np.float32)
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    assert report_inputs.mean_softmax_entropy(logits) == pytest.approx(
        np.mean(stats.entropy(p, axis=1)), rel=1e-9, abs=1e-12)


def test_id_entropies_read_the_id_test_split_of_each_run_at_hand(tmp_path):
    runs = [r for r in family_runs(seeds=(0,), workdir=tmp_path) if r.entry in ("ce", "mixup1")]
    for r in runs:
        write_predictions(tmp_path / "runs" / r.run, seed=7 if r.entry == "ce" else 8,
                          method=r.method)
    runs.append(results.RunInfo(run="gone_seed0", entry="gone", seed=0, method="ce",
                                strength=0.0, directory=str(tmp_path / "runs" / "gone_seed0")))
    found = report_inputs.id_entropies(runs)
    assert set(found) == {"ce_seed0", "mixup1_seed0"}
    for run, value in found.items():
        split = run_dir.predictions_path(tmp_path / "runs" / run) / "toy_test.npz"
        logits = np.load(split)["logits"].astype(np.float64)
        p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        assert value == pytest.approx(np.mean(stats.entropy(p, axis=1)), rel=1e-9)
        assert (predictions.read(split.parent).splits["toy_test"].role == "id_test")


def test_the_figure_has_one_point_per_run_one_colour_per_method_and_ce_marked():
    points = [("ce", 0.1, 95.0), ("ce", 0.12, 94.0), ("ls", 0.5, 90.0), ("mixup", 0.4, 92.0),
              ("mixup", 0.45, 91.0), ("ls", 0.9, 85.0)]
    fig = figures.family_entropy(points)
    ax = fig.axes[0]
    drawn = {c.get_label(): c for c in ax.collections}
    assert {label: len(c.get_offsets()) for label, c in drawn.items()} == \
        {"ce": 2, "ls": 2, "mixup": 2}
    assert np.allclose(drawn["ls"].get_offsets(), [[0.5, 90.0], [0.9, 85.0]])
    assert tuple(drawn["ce"].get_facecolor()[0][:3]) == (0.0, 0.0, 0.0)
    assert not np.allclose(drawn["ls"].get_facecolor()[0], drawn["mixup"].get_facecolor()[0])


ENTROPY = {f"{entry}_seed{seed}": 0.1 * i + 0.01 * seed
           for i, entry in enumerate(["ce", "ls0.1", "ls0.3", "mixup0.2", "mixup1", "cutmix1",
                                      "cutmix1_prob1"]) for seed in (0, 1, 2)}


@pytest.fixture(scope="module")
def family_report_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("family") / "report"
    runs = family_runs()
    report.write_report(family_rows(runs), out, runs=runs, groups=GROUPS, entropy=ENTROPY,
                        title="The soft-label family and OOD detection on toy")
    return out


def test_the_report_gives_one_summary_line_per_method_and_the_family_section(family_report_dir):
    text = (family_report_dir / "report.md").read_text()
    sections = _sections(text)
    assert sections.index("The soft-label family") == sections.index("Claims") + 1
    summary = text.split("## Summary")[1].split("\n## ")[0]
    lines = [line for line in summary.splitlines() if line.startswith("- **") and
             line.split("**")[1] in ("ls", "mixup", "cutmix")]
    assert [line.split("**")[1] for line in lines] == ["ls", "mixup", "cutmix"]
    assert lines[0].startswith(
        "- **ls**: `ls0.1` (α = 0.1): F1 **supported (near supported, far supported)** (msp "
        "AUROC ce − m = +5.00 ± 0.00 points (noise threshold 0.50, seeds +++)), F2 "
        "**supported**, F3 **supported**; `ls0.3` (α = 0.3): F1 **supported (near supported, "
        "far inconclusive)**")
    assert "`mixup1` (a = 1): F1 **not supported (near not supported, far not supported)**" \
        in lines[1]
    # mixup0.2's AUROC falls 5 points, but its accuracy 3: the line says why F1 fails.
    assert ("`mixup0.2` (a = 0.2): F1 **not supported (near not supported, far not supported)** "
            "(msp AUROC ce − m = +5.00 ± 0.00 points (noise threshold 0.50, seeds +++); "
            "accuracy 3.00 points below ce's, more than 1), F2") in lines[1]
    assert "`cutmix1_prob1` (a = 1): F1 **inconclusive" in lines[2]
    assert "F2 **supported**, F3 **not supported**." in lines[2]
    assert "![family_entropy.png](family_entropy.png)" in \
        text.split("## The soft-label family")[1].split("\n## ")[0]
    assert (family_report_dir / family_report.FIGURE).stat().st_size > 0


def test_the_family_table_has_a_row_per_entry_with_its_numbers(family_report_dir):
    section = (family_report_dir / "report.md").read_text().split(
        "## The soft-label family")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    labels = [row.split(" | ")[0] for row in rows]
    assert labels[:7] == ["| `ce`", "| `ls0.1` (α = 0.1)", "| `ls0.3` (α = 0.3)",
                          "| `mixup0.2` (a = 0.2)", "| `mixup1` (a = 1)", "| `cutmix1` (a = 1)",
                          "| `cutmix1_prob1` (a = 1)"]
    # 14 columns, cut in two tables that repeat the entry: ce's first row, by hand: accuracy
    # 90 ± 0.2, entropy 0.00/0.01/0.02 -> 0.010 ± 0.010, msp AUROC 95 (noise 96, patches 94).
    ce = rows[0].split(" | ")
    assert ce[1:6] == ["90.00 ± 0.20", "0.010 ± 0.010", "95.00 ± 0.20", "94.00 ± 0.20",
                       "96.00 ± 0.20"]
    mixup = next(row for row in rows if row.startswith("| `mixup0.2`") and "F" not in row[:3])
    assert mixup.split(" | ")[1] == "87.00 ± 0.20"
    assert rows[7] == "| `ce` | (reference) | (reference) |"  # F2 and F3, cut off


def test_runs_json_keeps_the_entropy_and_a_rebuild_writes_the_same_report(family_report_dir,
                                                                         tmp_path):
    record = json.loads((family_report_dir / "runs.json").read_text())["report"]
    assert record["id_entropy"] == ENTROPY
    alone = tmp_path / "report"
    shutil.copytree(family_report_dir, alone)
    rebuild.rebuild_report(alone, tmp_path / "new")
    old, new = ((d / "report.md").read_text() for d in (family_report_dir, tmp_path / "new"))
    assert new[:new.index("## Environment")] == old[:old.index("## Environment")]
    assert (tmp_path / "new" / family_report.FIGURE).exists()


def test_a_paper_report_has_no_family_section_and_no_entropy(tmp_path):
    from tests.report_helpers import paper_runs, report_rows
    from tests.test_claims import PAPER_LIKE

    runs = paper_runs()
    report.write_report(report_rows(runs, PAPER_LIKE), tmp_path / "r", runs=runs)
    assert "The soft-label family" not in (tmp_path / "r" / "report.md").read_text()
    assert "id_entropy" not in json.loads((tmp_path / "r" / "runs.json").read_text())["report"]
    assert not (tmp_path / "r" / family_report.FIGURE).exists()


@pytest.mark.parametrize("name", ["digits_family", "fashion_mnist_split_family"])
def test_the_committed_family_reports_rebuild_to_themselves(name, tmp_path):
    from tests.train_helpers import REPO

    source = REPO / "docs" / "results" / name
    rebuild.rebuild_report(source, tmp_path / "new")
    assert (tmp_path / "new" / "metrics.csv").read_bytes() == (source / "metrics.csv").read_bytes()
    old, new = ((d / "report.md").read_text() for d in (source, tmp_path / "new"))
    assert new[:new.index("## Environment")] == old[:old.index("## Environment")]
    summary = new.split("## Summary")[1].split("\n## ")[0]
    paper = ("- **Claim", "- **S", "- **By")
    methods_ = [line.split("**")[1] for line in summary.splitlines()
                if line.startswith("- **") and not line.startswith(paper)]
    assert methods_ == ["ls", "mixup", "cutmix", "logitnorm", "focal", "confidence_penalty"]
    # The figure is drawn again from runs.json's entropies and metrics.csv alone.
    assert (tmp_path / "new" / family_report.FIGURE).stat().st_size > 1000
