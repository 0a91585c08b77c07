"""Hand-made grids, metrics and predictions for the report, claims and notebook tests."""

from __future__ import annotations

import dataclasses

import numpy as np

from softlabel_ood.analysis import results
from softlabel_ood.configs import grid
from softlabel_ood.scoring import MetricRow
from softlabel_ood.workdir import predictions

OODS = ("noise", "patches")
SEEDS = (0, 1, 2)


def paper_runs(seeds=SEEDS, ls_alphas=(0.1, 0.2, 0.3), workdir=None) -> list[results.RunInfo]:
    """RunInfo of `grid.paper_grid` (kd from ls0.3, kd_incorrect with α = 0.3) for `seeds`."""
    g = grid.paper_grid(ls_alphas=ls_alphas, kd_ls_alpha=0.3, incorrect_alpha=0.3, seeds=seeds)
    runs = []
    for seed in g.seeds:
        for spec in g.runs:
            run = grid.run_dir_name(spec["name"], seed)
            runs.append(results.RunInfo(
                run=run, entry=spec["name"], seed=seed, method=spec["method"],
                strength=float(spec["overrides"].get("label_smoothing", 0.0)),
                teacher=spec["teacher"], init_from=spec["init_from"],
                directory=str(workdir / "runs" / run) if workdir else ""))
    return runs


def metric_rows(runs, auroc: dict[str, float], accuracy: dict[str, float] | None = None, *,
                spread: float = 0.002, scores=("msp", "energy")) -> list[MetricRow]:
    """Rows whose seed mean of the mean-over-OOD-sets AUROC of grid entry `name` is auroc[name].

    Seeds differ by ±`spread` around the mean (std = `spread` for 3 seeds); OOD set `noise` is
    0.02 above and `patches` 0.02 below the mean. Other metrics follow from AUROC.
    """
    accuracy = accuracy or {}
    rows = []
    for r in runs:
        offset = spread * (r.seed - 1)
        acc = accuracy.get(r.entry, 0.9) + offset
        rows += [MetricRow(r.run, "", "", "accuracy", acc),
                 MetricRow(r.run, "", "", "ece", 0.05 + offset)]
        for score in scores:
            shift = 0.0 if score == "msp" else 0.01
            for ood, delta in zip(OODS, (0.02, -0.02), strict=True):
                a = auroc[r.entry] + offset + delta + shift
                rows += [MetricRow(r.run, score, ood, "auroc", a),
                         MetricRow(r.run, score, ood, "fpr95", 1 - a),
                         MetricRow(r.run, score, ood, "aupr_out", a - 0.01)]
    return rows


def report_rows(runs, auroc: dict[str, float], **options) -> list[MetricRow]:
    """`metric_rows` cut to [0, 1], as metrics.csv holds fractions (DESIGN.md §6) and is checked
    on read: oe's noise set passes 1 there (AUROC 0.99 + 0.02)."""
    return [dataclasses.replace(r, value=min(max(r.value, 0.0), 1.0))
            for r in metric_rows(runs, auroc, **options)]


def write_predictions(run_dir, *, seed: int, method: str, separation: float = 2.0,
                      num_classes: int = 3, n: int = 24) -> None:
    """A tiny predictions directory: ID logits peak on the label, OOD logits flatter."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n).astype(np.int32)
    id_logits = rng.normal(size=(n, num_classes)).astype(np.float32)
    id_logits[np.arange(n), labels] += separation
    splits = {"toy_test": predictions.Split("id_test", id_logits, labels)}
    for ood in OODS:
        logits = rng.normal(scale=0.5, size=(n, num_classes)).astype(np.float32)
        splits[ood] = predictions.Split("ood_test", logits, np.full(n, -1, np.int32))
    predictions.write(run_dir / "predictions", splits, num_classes=num_classes,
                      run={"dataset": "toy", "method": method, "seed": seed})
