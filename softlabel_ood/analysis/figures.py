"""The report's figures, as matplotlib `Figure` objects.

Figures are built with `matplotlib.figure.Figure` rather than pyplot, so that no global figure
state or interactive backend is involved: `save` renders PNG files with the Agg canvas, and a
notebook displays the same objects inline. Metric values are plotted in percent; error bars are
the sample standard deviation (ddof = 1) over seeds, absent for a single seed, and cut at 0 and
100: a metric in percent cannot leave that range, and a bar drawn past it would suggest it can.

Only numpy, matplotlib and the package's scoring side are imported, so that the figures work with
the `core` extra alone (a notebook in Colab).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib
import numpy as np
from etils import epath
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from softlabel_ood import scoring
from softlabel_ood.analysis import claims, metric_stats
from softlabel_ood.analysis.metric_stats import MetricTable
from softlabel_ood.analysis.results import RunInfo
from softlabel_ood.scoring import metric_records
from softlabel_ood.workdir import atomic_files, predictions, run_dir


def _new_figure(rows: int, cols: int, *, width: float = 3.6, height: float = 3.0):
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def clipped_error(means, stds, *, low: float = 0.0, high: float = 100.0) -> np.ndarray:
    """Error bar extents [2, n] (below, above) of mean ± std, cut at `low` and `high`."""
    means = np.asarray(means, dtype=float)
    stds = np.nan_to_num(np.asarray(stds, dtype=float))  # one seed: no bar
    return np.stack([np.minimum(stds, np.maximum(means - low, 0.0)),
                     np.minimum(stds, np.maximum(high - means, 0.0))])


# Ten scores share a panel: a colour of tab10, a marker and a line style tell each apart (the
# colours alone pair up: pink and purple, olive and grey). Dashed scores read the features.
_SCORE_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "<", "h")
_FEATURE_READERS = (*scoring.FEATURE_SCORES, *scoring.HEAD_SCORES)


def score_style(score: str) -> dict:
    """The colour, marker and line style of `score`, the same in every α-sweep figure."""
    known = list(scoring.ALL_SCORES)
    i = known.index(score) if score in known else sum(map(ord, score))
    return {"color": f"C{i % 10}", "marker": _SCORE_MARKERS[i % len(_SCORE_MARKERS)],
            "linestyle": "--" if score in _FEATURE_READERS else "-"}


_SWEEP_COLORMAP = matplotlib.colormaps["viridis"]


def sweep_colors(n: int) -> list:
    """n colours for curves listed by increasing α, from viridis's dark end to near its light
    end (its last yellow fades on white), so that the sweep's order reads as colour order."""
    return [_SWEEP_COLORMAP(0.9 * i / max(n - 1, 1)) for i in range(n)]


def _errorbar(ax, xs, stats: Sequence[metric_stats.Stat], label: str, **style) -> None:
    keep = [i for i, s in enumerate(stats) if s.n]
    x = [xs[i] for i in keep]
    y = [100 * stats[i].mean for i in keep]
    err = clipped_error(y, [100 * stats[i].std for i in keep])
    ax.errorbar(x, y, yerr=err, **({"marker": "o"} | style), markersize=5, linewidth=1.2,
                elinewidth=0.8, capsize=2.5, label=label)


def _sweep_title(what: str, sweep: Sequence[tuple[float, Sequence[RunInfo]]],
                 dataset: str | None) -> str:
    """`what` on `dataset` (else the one in the runs' predictions), with the seeds."""
    if dataset is None:
        dataset = dataset_of(run for _, group in sweep for run in group)
    seeds = sorted({run.seed for _, group in sweep for run in group})
    where = f" on {dataset}" if dataset else ""
    return (f"{what}{where}; mean ± std over {len(seeds)} seed{'s' * (len(seeds) != 1)} "
            f"({', '.join(map(str, seeds))})")


def dataset_of(runs) -> str:
    """The ID dataset recorded in the first readable predictions manifest of `runs`, else ""
    (runs whose directory is not at hand: a report read without its runs/)."""
    for run in runs:
        if run.directory:
            try:
                return str(predictions.read_manifest(
                    run_dir.predictions_path(epath.Path(run.directory)))["run"].get("dataset", ""))
            except (predictions.PredictionsError, OSError):
                continue
    return ""


def alpha_sweep(table: MetricTable, sweep: Sequence[tuple[float, Sequence[RunInfo]]], *,
                metric: str, scores: Sequence[str], oods: Sequence[str] | None = None,
                dataset: str | None = None) -> Figure:
    """`metric` against α: one panel for the mean over OOD sets and one per OOD set.

    The title names the ID dataset (`dataset`, else the one in the runs' predictions) and the
    seeds the error bars are taken over.
    """
    oods = list(table.ood_sets if oods is None else oods)
    panels = [None, *oods]
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = _new_figure(rows, cols)
    alphas = [a for a, _ in sweep]
    for ax, ood in zip(axes.flat, panels, strict=False):
        for score in scores:
            if ood is None:
                stats = [metric_stats.ood_mean_stat(table, g, score, metric) for _, g in sweep]
            else:
                stats = [metric_stats.ood_stat(table, g, score, metric, ood) for _, g in sweep]
            _errorbar(ax, alphas, stats, score, **score_style(score))
        ax.set_title("mean over OOD sets" if ood is None else ood)
        ax.set_xlabel("α (label smoothing)")
        ax.set_ylabel(f"{metric_records.label(metric)} (%)")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", title="score")
    label = metric_records.label(metric)
    fig.suptitle(_sweep_title(f"{label} against α", sweep, dataset))
    return fig


def id_sweep(table: MetricTable, sweep: Sequence[tuple[float, Sequence[RunInfo]]], *,
             dataset: str | None = None) -> Figure:
    """Accuracy and ECE on the ID test set against α, titled as `alpha_sweep`."""
    fig, axes = _new_figure(1, 2)
    alphas = [a for a, _ in sweep]
    for ax, metric in zip(axes.flat, ("accuracy", "ece"), strict=True):
        _errorbar(ax, alphas, [metric_stats.id_stat(table, g, metric) for _, g in sweep], metric)
        ax.set_xlabel("α (label smoothing)")
        ax.set_ylabel(f"{metric_records.label(metric)} (%)")
        ax.set_title(f"ID test {metric_records.label(metric)}")
        ax.grid(alpha=0.3)
    fig.suptitle(_sweep_title("Accuracy and ECE against α", sweep, dataset))
    return fig


def claim_differences(claim_results: Sequence[claims.ClaimResult], *,
                      quantity: str = "msp AUROC (mean over OOD sets)") -> Figure:
    """Each claim's paired comparisons: the per-seed differences as dots, their mean as a
    diamond, and the noise threshold as a grey band around 0.

    One row per comparison (claim 2 has two), labelled with the sign the claim expects and, on
    the right, the claim's verdict. A difference counts when its mean lies beyond the band on the
    claimed side with every dot on that side. Values in points (percent).
    """
    rows = [(c, label, p, want) for c in claim_results for label, p, want in c.comparisons]
    fig, axes = _new_figure(1, 1, width=7.5, height=0.8 * max(len(rows), 1) + 1.4)
    ax = axes[0, 0]
    for y, (c, _, p, _) in enumerate(rows):
        first = y == 0
        if not math.isnan(p.threshold):
            band = 100 * p.threshold
            ax.fill_betweenx([y - 0.35, y + 0.35], -band, band, color="0.85",
                             label="noise threshold" if first else None)
        values = [100 * d for _, d in p.differences]
        ax.scatter(values, [y] * len(values), s=20, color="tab:blue", zorder=3,
                   label="one seed" if first else None)
        if p.n:
            ax.scatter([100 * p.mean], [y], s=90, marker="D", facecolor="none",
                       edgecolor="black", zorder=4, label="mean" if first else None)
        ax.annotate(f"claim {c.number}: {c.verdict}", (1.02, y),
                    xycoords=("axes fraction", "data"), va="center", fontsize="small")
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [f"{label}\n(claimed {'> 0' if want > 0 else '< 0'})"
                                     for _, label, _, want in rows], fontsize="small")
    ax.set_ylim(len(rows) - 0.5, -0.5)  # the first claim on top
    ax.set_xlabel(f"a − b, paired by seed: {quantity}, points")
    ax.grid(axis="x", alpha=0.3)
    if rows:
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=3,
                   fontsize="small", frameon=False)
    fig.suptitle("The claims: per-seed differences, their mean and the noise threshold")
    return fig


def family_entropy(points: Sequence[tuple[str, float, float]], *, dataset: str = "") -> Figure:
    """Each run as a point (method, mean ID-test softmax entropy in nats, msp AUROC in %): one
    colour per method in the order first given, the ce runs as black stars."""
    fig, axes = _new_figure(1, 1, width=6.0, height=4.2)
    ax = axes[0, 0]
    order = list(dict.fromkeys(method for method, _, _ in points if method != "ce"))
    colors = {m: matplotlib.colormaps["tab10"](i % 10) for i, m in enumerate(order)}
    for method in ["ce", *order]:
        xs = [x for m, x, _ in points if m == method]
        ys = [y for m, _, y in points if m == method]
        if not xs:
            continue
        style = ({"marker": "*", "s": 160, "color": "black", "zorder": 4} if method == "ce" else
                 {"marker": "o", "s": 36, "color": colors[method], "alpha": 0.85, "zorder": 3})
        ax.scatter(xs, ys, label=method, **style)
    ax.set_xlabel("mean softmax entropy on the ID test set (nats)")
    ax.set_ylabel("msp AUROC (%), mean over OOD sets")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    fig.suptitle("How soft each model became, and its OOD detection"
                 + (f" ({dataset})" if dataset else ""))
    return fig


def id_ood_msp(preds: predictions.Predictions, ood: str) -> tuple[np.ndarray, np.ndarray]:
    """MSP on the ID test split and on the OOD split `ood`."""
    if ood not in preds.splits:
        raise predictions.PredictionsError(f"{preds.directory}: no split named {ood!r}")
    return (scoring.logit_scores(preds.splits[preds.id_test_name].logits)["msp"],
            scoring.logit_scores(preds.splits[ood].logits)["msp"])


def msp_histograms(panels: Sequence[tuple[str, predictions.Predictions]], ood: str) -> Figure:
    """Histograms of MSP on the ID test set and on one OOD set, one panel per run.

    The density axis is logarithmic, and each panel's limits run from half its smallest non-empty
    bin to twice its largest: a confident model piles most ID examples into the last bin, and on
    a linear axis the OOD examples spread over the other bins would be too flat to see.
    """
    cols = min(4, max(1, len(panels)))
    fig, axes = _new_figure(math.ceil(max(1, len(panels)) / cols), cols, height=2.8)
    for ax, (label, preds) in zip(axes.flat, panels, strict=False):
        id_scores, ood_scores = id_ood_msp(preds, ood)
        bins = np.linspace(1.0 / preds.num_classes, 1.0, 31)
        heights = []
        for scores_, name in ((id_scores, f"ID ({preds.id_test_name})"), (ood_scores,
                                                                         f"OOD ({ood})")):
            counts, _, _ = ax.hist(scores_, bins=bins, density=True, alpha=0.6, label=name)
            heights.append(counts)
        ax.set_yscale("log")
        positive = np.concatenate(heights)
        positive = positive[positive > 0]
        if positive.size:
            ax.set_ylim(positive.min() / 2, positive.max() * 2)
        ax.set_title(label)
        ax.set_xlabel("MSP")
        ax.set_ylabel("density (log scale)")
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize="small")
    return fig


def roc_points(id_scores: np.ndarray, ood_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at every distinct threshold, ID positive, from (0, 0) to (1, 1).

    The points of scikit-learn's `roc_curve(y, s, drop_intermediate=False)`: tied scores form
    one point. Written with numpy so that the figures do not need scikit-learn.
    """
    scores_ = np.concatenate([id_scores, ood_scores])
    is_id = np.concatenate([np.ones(len(id_scores)), np.zeros(len(ood_scores))])
    order = np.argsort(-scores_, kind="stable")
    scores_, is_id = scores_[order], is_id[order]
    # The last index of each run of equal scores: a threshold accepts all of a tie or none.
    last = np.r_[np.flatnonzero(np.diff(scores_)), len(scores_) - 1]
    tp = np.r_[0, np.cumsum(is_id)[last]]
    fp = np.r_[0, np.cumsum(1 - is_id)[last]]
    return fp / max(len(ood_scores), 1), tp / max(len(id_scores), 1)


TPR95_LABEL = "TPR = 95%: FPR95 is read here"


def roc_curves(groups: Sequence[tuple[str, Sequence[tuple[str, predictions.Predictions]]]],
               ood: str, *, sweeps: Sequence[str] = ()) -> Figure:
    """MSP ROC curves, ID test positive and `ood` negative; one panel per group of runs.

    The legend gives each curve's AUROC (the area under these points, which equals the
    Mann-Whitney AUROC of docs/scores_and_metrics.md) and names the dashed line at TPR = 95%,
    where FPR95 is read: in the legend, placed where the curves leave room, a label is never
    drawn under a curve. The panels titled in `sweeps` list their curves by increasing α and
    take `sweep_colors`.
    """
    fig, axes = _new_figure(1, max(1, len(groups)), width=4.2, height=3.8)
    for ax, (title, curves) in zip(axes.flat, groups, strict=False):
        colors = sweep_colors(len(curves)) if title in sweeps else [None] * len(curves)
        for (label, preds), color in zip(curves, colors, strict=True):
            fpr, tpr = roc_points(*id_ood_msp(preds, ood))
            auroc = np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)  # trapezoids
            ax.plot(100 * fpr, 100 * tpr, color=color, label=f"{label} ({100 * auroc:.1f})")
        ax.plot([0, 100], [0, 100], color="grey", linestyle=":", linewidth=1)
        ax.axhline(95, color="grey", linewidth=0.8, linestyle="--", label=TPR95_LABEL)
        ax.set_title(title)
        ax.set_xlabel("OOD accepted, FPR (%)")
        ax.set_ylabel("ID accepted, TPR (%)")
        ax.legend(loc="best", fontsize="small", title="run (AUROC %)", title_fontsize="small")
    fig.suptitle(f"MSP ROC curves: ID test set against {ood}")
    return fig


def risk_coverage(curves: Sequence[tuple[str, predictions.Predictions, float]]) -> Figure:
    """Risk-coverage curves on the ID test set, msp and pnorm side by side: one curve per
    (label, predictions, pnorm's p), listed by increasing α and coloured by `sweep_colors`, the
    legend giving each curve's AURC (%).

    The ID test examples are accepted by decreasing score; the selective risk at a coverage is
    the error rate among those accepted (tied scores accepted together).
    """
    fig, axes = _new_figure(1, 2, width=4.2, height=3.8)
    for ax, score in zip(axes.flat, ("msp", "pnorm"), strict=True):
        for (label, preds, p), color in zip(curves, sweep_colors(len(curves)), strict=True):
            split = preds.splits[preds.id_test_name]
            values = (scoring.logit_scores(split.logits)["msp"] if score == "msp"
                      else scoring.pnorm(split.logits, p))
            correct = scoring.predicted_class(split.logits) == split.labels
            aurc = scoring.selective_metrics(values[None], correct[None])["aurc"][0]
            coverage, risk = scoring.selective.risk_coverage(values, correct)
            ax.plot(100 * np.r_[0, coverage], 100 * np.r_[risk[0], risk], drawstyle="steps-pre",
                    color=color, label=f"{label} ({100 * aurc:.2f})")
        ax.set_title(score)
        ax.set_xlabel("coverage: ID test examples accepted (%)")
        ax.set_ylabel("selective risk: error rate among them (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", title="run (AURC %)", title_fontsize="small")
    fig.suptitle("Risk-coverage curves on the ID test set")
    return fig


def save(fig: Figure, path: epath.PathLike, *, dpi: int = 120) -> None:
    """Writes `fig` as PNG (local path or bucket)."""
    atomic_files.write_atomically(path, lambda f: fig.savefig(f, format="png", dpi=dpi))
