"""The report's figures, as matplotlib `Figure` objects.

Figures are built with `matplotlib.figure.Figure` rather than pyplot, so that no global figure
state or interactive backend is involved: `save` renders PNG files with the Agg canvas, and a
notebook displays the same objects inline. Metric values are plotted in percent; error bars are
the sample standard deviation (ddof = 1) over seeds, absent for a single seed.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from etils import epath
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn import metrics as sk_metrics

from softlabel_ood import predictions, results, scoring
from softlabel_ood.results import MetricTable, RunInfo


def _new_figure(rows: int, cols: int, *, width: float = 3.6, height: float = 3.0):
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def _errorbar(ax, xs, stats: Sequence[results.Stat], label: str) -> None:
    keep = [i for i, s in enumerate(stats) if s.n]
    x = [xs[i] for i in keep]
    y = [100 * stats[i].mean for i in keep]
    err = [0.0 if math.isnan(stats[i].std) else 100 * stats[i].std for i in keep]
    ax.errorbar(x, y, yerr=err, marker="o", markersize=3, capsize=3, label=label)


def alpha_sweep(table: MetricTable, sweep: Sequence[tuple[float, Sequence[RunInfo]]], *,
                metric: str, scores: Sequence[str], oods: Sequence[str] | None = None) -> Figure:
    """`metric` against α: one panel for the mean over OOD sets and one per OOD set."""
    oods = list(table.ood_sets if oods is None else oods)
    panels = [None, *oods]
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = _new_figure(rows, cols)
    alphas = [a for a, _ in sweep]
    for ax, ood in zip(axes.flat, panels, strict=False):
        for score in scores:
            if ood is None:
                stats = [results.ood_mean_stat(table, g, score, metric) for _, g in sweep]
            else:
                stats = [results.ood_stat(table, g, score, metric, ood) for _, g in sweep]
            _errorbar(ax, alphas, stats, score)
        ax.set_title("mean over OOD sets" if ood is None else ood)
        ax.set_xlabel("α (label smoothing)")
        ax.set_ylabel(f"{results.METRIC_LABELS.get(metric, metric)} (%)")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", title="score")
    return fig


def id_sweep(table: MetricTable, sweep: Sequence[tuple[float, Sequence[RunInfo]]]) -> Figure:
    """Accuracy and ECE on the ID test set against α."""
    fig, axes = _new_figure(1, 2)
    alphas = [a for a, _ in sweep]
    for ax, metric in zip(axes.flat, ("accuracy", "ece"), strict=True):
        _errorbar(ax, alphas, [results.id_stat(table, g, metric) for _, g in sweep], metric)
        ax.set_xlabel("α (label smoothing)")
        ax.set_ylabel(f"{results.METRIC_LABELS[metric]} (%)")
        ax.set_title(f"ID test {results.METRIC_LABELS[metric]}")
        ax.grid(alpha=0.3)
    return fig


def id_ood_msp(preds: predictions.Predictions, ood: str) -> tuple[np.ndarray, np.ndarray]:
    """MSP on the ID test split and on the OOD split `ood`."""
    if ood not in preds.splits:
        raise predictions.PredictionsError(f"{preds.directory}: no split named {ood!r}")
    return (scoring.logit_scores(preds.splits[preds.id_test_name].logits)["msp"],
            scoring.logit_scores(preds.splits[ood].logits)["msp"])


def msp_histograms(panels: Sequence[tuple[str, predictions.Predictions]], ood: str) -> Figure:
    """Histograms of MSP on the ID test set and on one OOD set, one panel per run."""
    cols = min(4, max(1, len(panels)))
    fig, axes = _new_figure(math.ceil(max(1, len(panels)) / cols), cols, height=2.8)
    for ax, (label, preds) in zip(axes.flat, panels, strict=False):
        id_scores, ood_scores = id_ood_msp(preds, ood)
        bins = np.linspace(1.0 / preds.num_classes, 1.0, 31)
        ax.hist(id_scores, bins=bins, density=True, alpha=0.6, label=f"ID ({preds.id_test_name})")
        ax.hist(ood_scores, bins=bins, density=True, alpha=0.6, label=f"OOD ({ood})")
        ax.set_title(label)
        ax.set_xlabel("MSP")
        ax.set_ylabel("density")
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize="small")
    return fig


def roc_curves(groups: Sequence[tuple[str, Sequence[tuple[str, predictions.Predictions]]]],
               ood: str) -> Figure:
    """MSP ROC curves, ID test positive and `ood` negative; one panel per group of runs."""
    fig, axes = _new_figure(1, max(1, len(groups)), width=4.2, height=3.8)
    for ax, (title, curves) in zip(axes.flat, groups, strict=False):
        for label, preds in curves:
            id_scores, ood_scores = id_ood_msp(preds, ood)
            y = np.concatenate([np.ones(len(id_scores)), np.zeros(len(ood_scores))])
            fpr, tpr, _ = sk_metrics.roc_curve(y, np.concatenate([id_scores, ood_scores]),
                                               drop_intermediate=False)
            auroc = sk_metrics.roc_auc_score(y, np.concatenate([id_scores, ood_scores]))
            ax.plot(100 * fpr, 100 * tpr, label=f"{label} ({100 * auroc:.1f})")
        ax.plot([0, 100], [0, 100], color="grey", linestyle=":", linewidth=1)
        ax.axhline(95, color="grey", linewidth=0.5)
        ax.set_title(title)
        ax.set_xlabel("OOD accepted, FPR (%)")
        ax.set_ylabel("ID accepted, TPR (%)")
        ax.legend(fontsize="small", title="run (AUROC %)", title_fontsize="small")
    fig.suptitle(f"MSP ROC curves: ID test set against {ood}")
    return fig


def save(fig: Figure, path: epath.PathLike, *, dpi: int = 120) -> None:
    """Writes `fig` as PNG (local path or bucket)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    epath.Path(path).write_bytes(buffer.getvalue())
