"""Several imported models with several seeds: scored together, reported with mean ± std over
each name's seeds, and two models compared by the claims' paired rule, as
docs/scores_and_metrics.md ("Your own models") shows; checked against scikit-learn."""

from __future__ import annotations

import re

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from softlabel_ood import import_outputs, score
from softlabel_ood.analysis import metric_stats, rebuild, results
from tests.train_helpers import REPO

K = 4
SEEDS = (0, 1, 2)
SHIFT = {"ce": 2.5, "ls": 1.5}  # ls's ID logits are less peaked: its msp AUROC is lower


def _doc_snippet() -> str:
    text = (REPO / "docs" / "scores_and_metrics.md").read_text()
    section = text.split("## Your own models\n", 1)[1]
    return re.findall(r"```python\n(.*?)```", section, re.S)[0]


def _msp(logits):
    z = logits.astype(np.float32).astype(np.float64)
    e = np.exp(z - z.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).max(1)


@pytest.fixture
def imported(tmp_path):
    """mine/runs/<model>_seed<k> for two models and three seeds, scored into mine/report; and
    each run's msp AUROC averaged over its two OOD sets, by scikit-learn."""
    expected = {}
    for model, shift in SHIFT.items():
        for seed in SEEDS:
            rng = np.random.default_rng(100 * seed + int(10 * shift))
            labels = rng.integers(0, K, 200)
            test = rng.normal(size=(200, K)) + shift * np.eye(K)[labels]
            oods = {"svhn": rng.normal(size=(150, K)) + 0.5 * np.eye(K)[rng.integers(0, K, 150)],
                    "noise": rng.normal(size=(80, K))}
            stem = tmp_path / f"{model}{seed}"
            np.savez(f"{stem}_test.npz", logits=test, labels=labels)
            for name, logits in oods.items():
                np.save(f"{stem}_{name}.npy", logits)
            import_outputs.main([f"--out={tmp_path / 'mine' / 'runs' / f'{model}_seed{seed}'}",
                                 f"--id_test={stem}_test.npz", "--ood", f"svhn={stem}_svhn.npy",
                                 "--ood", f"noise={stem}_noise.npy"])
            expected[(model, seed)] = np.mean([roc_auc_score(
                np.r_[np.ones(200), np.zeros(len(o))], np.r_[_msp(test), _msp(o)])
                for o in oods.values()])
    runs = sorted(str(p) for p in (tmp_path / "mine" / "runs").iterdir())
    assert score.main([*runs, f"--out={tmp_path / 'mine' / 'report'}"]) == 0
    return tmp_path, expected


def test_two_models_compared_by_the_paired_rule_as_the_docs_show(imported, monkeypatch, capsys):
    tmp_path, expected = imported
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(_doc_snippet(), "scores_and_metrics.md", "exec"), namespace)
    paired = namespace["paired"]
    differences = [expected[("ls", s)] - expected[("ce", s)] for s in SEEDS]
    assert [seed for seed, _ in paired.differences] == list(SEEDS)
    np.testing.assert_allclose([d for _, d in paired.differences], differences, atol=1e-12)
    assert paired.threshold == pytest.approx(max(0.005, np.std(differences, ddof=1)))
    assert all(d < -paired.threshold for d in differences)  # as built: ls below ce
    assert paired.direction == -1
    assert paired.text() in capsys.readouterr().out


def test_the_report_shows_each_name_as_mean_and_std_over_its_seeds_and_rebuilds(imported,
                                                                                monkeypatch):
    tmp_path, expected = imported
    monkeypatch.chdir(tmp_path)
    exec(compile(_doc_snippet(), "scores_and_metrics.md", "exec"), {})
    loaded = results.load(tmp_path / "mine")  # now from the report's runs.json
    assert {(r.entry, r.seed) for r in loaded.runs} == set(expected)
    text = (tmp_path / "mine" / "report" / "report.md").read_text()
    for model in SHIFT:
        values = [expected[(model, s)] for s in SEEDS]
        cell = metric_stats.format_stat(metric_stats.Stat(tuple(values)))
        row = next(line for line in text.splitlines() if line.startswith(f"| `{model}` |"))
        assert row.split(" | ")[3] == cell  # the msp AUROC column of Table 3
    assert "## Claims" not in text  # the paper's claims and sweep tables ask of its methods
    assert "## Table 1" not in text
    assert "None of the paper's claims applies: the runs are imported outputs" in text
    # Figures drawn from the predictions show the user's entries, for want of the paper's.
    assert {"msp_histograms.png", "roc_curves.png"} <= {
        p.name for p in (tmp_path / "mine" / "report").iterdir()}
    # The report is written again from its own files, as any report is.
    rebuild.rebuild_report(tmp_path / "mine" / "report", tmp_path / "rebuilt")
    assert (tmp_path / "rebuilt" / "metrics.csv").read_bytes() == \
        (tmp_path / "mine" / "report" / "metrics.csv").read_bytes()
