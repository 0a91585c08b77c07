"""The report's PNG figures: which runs each figure shows, their captions, and writing them
(`write_figures`). Drawing is `figures.py`'s; the claims figure and the α sweeps come from the
metrics, the MSP histograms, ROC and risk-coverage curves from the runs' predictions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from etils import epath

from softlabel_ood.analysis import (
    claims,
    family_claims,
    family_report,
    figures,
    metric_stats,
    results,
)
from softlabel_ood.analysis.metric_stats import MetricTable
from softlabel_ood.analysis.report_inputs import first_predictions, pnorm_p
from softlabel_ood.analysis.report_tables import OOD_METRICS
from softlabel_ood.analysis.results import RunInfo
from softlabel_ood.scoring import metric_records
from softlabel_ood.workdir import atomic_files

CLAIMS_FIGURE = "claims.png"
# Figures drawn from the runs' predictions: a report rebuilt without them keeps the earlier files.
PREDICTION_FIGURES = ("msp_histograms.png", "roc_curves.png", "risk_coverage.png")
ROC_SWEEP_PANEL = "LS sweep"  # the ROC panel of the α sweep, coloured in α's order


def default_focus_ood(table: MetricTable, runs: Sequence[RunInfo], score: str = "msp") -> str:
    """The OOD set on which the ce run (α = 0) has the lowest mean `score` AUROC: the hardest."""
    if not table.ood_sets:
        return ""
    sweep = dict(results.ls_sweep(runs))
    if 0.0 not in sweep:
        return table.ood_sets[0]
    means = {o: metric_stats.ood_stat(table, sweep[0.0], score, "auroc", o).mean
             for o in table.ood_sets}
    known = {o: m for o, m in means.items() if not math.isnan(m)}
    return min(known, key=known.get) if known else table.ood_sets[0]


def _kd_pair(runs: Sequence[RunInfo], teacher_method: str):
    """(student, teacher) entries of the first kd student of a `teacher_method` teacher, or
    (None, None)."""
    return next(((student, teacher) for student, teacher in results.students(runs, ("kd",))
                 if teacher[0].method == teacher_method), (None, None))


def _first_of(runs: Sequence[RunInfo], method: str):
    return next((g for g in results.group_by_name(runs).values() if g[0].method == method), None)


def histogram_panels(runs: Sequence[RunInfo]) -> list[tuple[str, list[RunInfo]]]:
    """ce, an ls run, oe and kd-from-oe: the ls run is the kd teacher's, else the largest α.
    Runs without those methods (imported outputs) show their first four entries instead."""
    sweep = results.ls_sweep(runs)
    _, ls = _kd_pair(runs, "ls")
    ls = ls or (sweep[-1][1] if sweep and sweep[-1][0] else None)
    ce = dict(sweep).get(0.0)
    panels = [("ce", ce), (f"ls α = {ls[0].strength:g}" if ls else "ls", ls),
              ("oe", _first_of(runs, "oe")), ("kd from oe", _kd_pair(runs, "oe")[0])]
    return [(label, group) for label, group in panels if group] or \
        list(results.group_by_name(runs).items())[:4]


def roc_groups(runs: Sequence[RunInfo]) -> list[tuple[str, list[tuple[str, list[RunInfo]]]]]:
    """Two panels: the LS sweep, and ce with every other entry of the grid."""
    sweep = results.ls_sweep(runs)
    in_sweep = {g[0].entry for _, g in sweep}
    ls_panel = [(f"α = {a:g}", g) for a, g in sweep]
    others = [(name, g) for name, g in results.group_by_name(runs).items() if name not in in_sweep]
    ce = dict(sweep).get(0.0)
    others = ([("ce", ce)] if ce else []) + others
    others_title = "teachers and students" if ls_panel else "runs"
    return [(title, panel) for title, panel in ((ROC_SWEEP_PANEL, ls_panel),
                                                (others_title, others)) if panel]


def write_figures(table: MetricTable, runs: Sequence[RunInfo], out_dir: epath.Path, *,
                  scores: Sequence[str], focus_ood: str, rules: claims.ClaimRules,
                  claim_results: Sequence[claims.ClaimResult], dataset: str,
                  entropy: Mapping[str, float] | None = None,
                  figures_from: epath.Path | None = None) -> list[tuple[str, str]]:
    """Writes the PNG files; returns (file name, caption) in report order. `entropy` (run ->
    mean ID-test softmax entropy) draws the soft-label family's figure when the runs hold one."""
    family = (write_family_figure(table, runs, out_dir, entropy or {}, dataset)
              if family_claims.applies(runs) else [])
    return (_write_claims_figure(claim_results, rules, out_dir)
            + _write_sweep_figures(table, runs, out_dir, scores=scores, dataset=dataset)
            + _write_prediction_figures(runs, out_dir, focus_ood, figures_from) + family)


def write_family_figure(table: MetricTable, runs: Sequence[RunInfo], out_dir: epath.Path,
                        entropy: Mapping[str, float], dataset: str) -> list[tuple[str, str]]:
    """The soft-label family's figure (`family_report.FIGURE`): ce and every family entry's
    runs, each at its mean ID-test entropy and msp AUROC; none without a point."""
    ce = dict(results.ls_sweep(runs)).get(0.0) or []
    points = []
    for group in [ce, *family_claims.entries(runs)]:
        for r in group:
            auroc = table.ood_mean(r.run, "msp", "auroc")
            if r.run in entropy and auroc is not None:
                points.append((r.method, entropy[r.run], 100 * auroc))
    if not points:
        return []
    figures.save(figures.family_entropy(points, dataset=dataset),
                 out_dir / family_report.FIGURE)
    return [(family_report.FIGURE, family_report.FIGURE_CAPTION)]


def _write_claims_figure(claim_results: Sequence[claims.ClaimResult], rules: claims.ClaimRules,
                         out_dir: epath.Path) -> list[tuple[str, str]]:
    if not any(c.comparisons for c in claim_results):
        return []
    quantity = (f"{rules.score} {metric_records.label(rules.metric)}"
                f" (mean over OOD sets)")
    figures.save(figures.claim_differences(claim_results, quantity=quantity),
                 out_dir / CLAIMS_FIGURE)
    return [(CLAIMS_FIGURE, f"The comparisons that decide the claims: for each, the "
                            f"per-seed differences a − b of {quantity} (dots, points), "
                            f"their mean (diamond) and the noise threshold (grey "
                            f"band around 0). Claim 1 also needs the rank correlation "
                            f"and the accuracy rule of the Summary.")]


def _write_sweep_figures(table: MetricTable, runs: Sequence[RunInfo], out_dir: epath.Path, *,
                         scores: Sequence[str], dataset: str) -> list[tuple[str, str]]:
    """Each OOD metric and the ID metrics against α; none for a sweep of one α."""
    sweep = results.ls_sweep(runs)
    if len(sweep) < 2:
        return []
    written = []
    for metric in OOD_METRICS:
        name = f"alpha_sweep_{metric}.png"
        figures.save(figures.alpha_sweep(table, sweep, metric=metric, scores=scores,
                                         dataset=dataset), out_dir / name)
        written.append((name, f"{metric_records.label(metric)} (%) against α, mean over "
                              f"OOD sets and per OOD set, one line per score; error bars: "
                              f"std over seeds."))
    figures.save(figures.id_sweep(table, sweep, dataset=dataset),
                 out_dir / "alpha_sweep_id.png")
    written.append(("alpha_sweep_id.png", "ID test accuracy and ECE (%) against α; error "
                                          "bars: std over seeds."))
    return written


def _prediction_captions(focus_ood: str) -> dict[str, str]:
    return {
        "msp_histograms.png": f"MSP on the ID test set and on {focus_ood} (normalised histograms, "
                              f"30 bins from 1/K to 1, log density axis), first seed of each run.",
        "roc_curves.png": f"ROC curves of MSP, ID test set positive and {focus_ood} negative, "
                          f"first seed of each run; the legend gives that seed's AUROC (%). The "
                          f"horizontal line marks TPR = 95%, where FPR95 is read.",
        "risk_coverage.png": "Risk-coverage curves on the ID test set over the LS sweep (α = 0 is "
                             "the ce run), msp and pnorm, first seed of each α; the legend gives "
                             "that seed's AURC (%).",
    }


def _draw_prediction_figures(runs: Sequence[RunInfo], focus_ood: str) -> dict:
    """{file name: figure} of the prediction figures whose runs' predictions are at hand."""
    loaded = {}  # grid name -> predictions of its first seed, read once

    def preds(group):
        if group and group[0].entry not in loaded:
            loaded[group[0].entry] = first_predictions(group)
        return loaded.get(group[0].entry) if group else None

    drawn = {}
    if focus_ood:
        panels = [(f"{label} (seed {g[0].seed})", preds(g))
                  for label, g in histogram_panels(runs)]
        panels = [(label, p) for label, p in panels if p is not None and focus_ood in p.splits]
        if panels:
            drawn["msp_histograms.png"] = figures.msp_histograms(panels, focus_ood)
        groups = []
        for title, members in roc_groups(runs):
            curves = [(label, preds(g)) for label, g in members]
            curves = [(label, p) for label, p in curves
                      if p is not None and focus_ood in p.splits]
            if curves:
                groups.append((title, curves))
        if groups:
            drawn["roc_curves.png"] = figures.roc_curves(groups, focus_ood,
                                                         sweeps=(ROC_SWEEP_PANEL,))
    curves = [(f"α = {a:g} (seed {g[0].seed})", preds(g), pnorm_p(g[0]))
              for a, g in results.ls_sweep(runs)]
    curves = [(label, p, q) for label, p, q in curves if p is not None]
    if len(curves) >= 2:
        drawn["risk_coverage.png"] = figures.risk_coverage(curves)
    return drawn


def _write_prediction_figures(runs: Sequence[RunInfo], out_dir: epath.Path, focus_ood: str,
                              figures_from: epath.Path | None) -> list[tuple[str, str]]:
    """The prediction figures drawn from the runs at hand, else copied from `figures_from`."""
    drawn = _draw_prediction_figures(runs, focus_ood)
    captions = _prediction_captions(focus_ood)
    written = []
    for name in PREDICTION_FIGURES:
        if name != "risk_coverage.png" and not focus_ood:
            continue
        if name in drawn:
            figures.save(drawn[name], out_dir / name)
        elif figures_from is not None and (figures_from / name).exists():
            if figures_from / name != out_dir / name:
                atomic_files.write_atomically(out_dir / name,
                                              lambda f, n=name: f.write((figures_from / n)
                                                                        .read_bytes()))
        else:
            continue
        written.append((name, captions[name]))
    return written
