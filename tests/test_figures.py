"""The report's figures, read back from their matplotlib artists."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import to_hex
from sklearn import metrics as sk_metrics

from softlabel_ood.analysis import figures, metric_stats, results
from softlabel_ood.scoring import MetricRow
from softlabel_ood.workdir import predictions

# AUROC of three seeds per grid entry: ce close to 1, ls0.1 in the middle, ls0.2 close to 0, so
# that mean ± std leaves [0, 1] at both ends.
AUROC = {"ce": (0.97, 0.99, 1.0), "ls0.1": (0.6, 0.7, 0.8), "ls0.2": (0.05, 0.0, 0.01)}
ALPHAS = {"ce": 0.0, "ls0.1": 0.1, "ls0.2": 0.2}


def _runs_and_table(directory=""):
    runs, rows = [], []
    for name, values in AUROC.items():
        for seed, value in enumerate(values):
            run = f"{name}_seed{seed}"
            runs.append(results.RunInfo(run=run, entry=name, seed=seed,
                                        method="ce" if name == "ce" else "ls",
                                        strength=ALPHAS[name], directory=directory))
            rows += [MetricRow(run, "msp", "noise", "auroc", value),
                     MetricRow(run, "", "", "accuracy", 0.9), MetricRow(run, "", "", "ece", 0.1)]
    return runs, metric_stats.MetricTable(rows)


def _bar_extents(ax):
    """(x, lower end, upper end) of each error bar of the panel's first line."""
    container = ax.containers[0]
    segments = container.lines[2][0].get_segments()
    return [(seg[0][0], seg[0][1], seg[1][1]) for seg in segments]


def test_alpha_sweep_error_bars_are_cut_at_0_and_100():
    runs, table = _runs_and_table()
    fig = figures.alpha_sweep(table, results.ls_sweep(runs), metric="auroc", scores=["msp"],
                              dataset="digits")
    for ax in fig.axes[:2]:  # the mean over OOD sets, and the one OOD set
        extents = _bar_extents(ax)
        assert [x for x, _, _ in extents] == [0.0, 0.1, 0.2]
        for (x, low, high), name in zip(extents, AUROC, strict=True):
            values = 100 * np.array(AUROC[name])
            mean, std = values.mean(), values.std(ddof=1)
            assert ALPHAS[name] == x
            assert low == pytest.approx(max(mean - std, 0.0))
            assert high == pytest.approx(min(mean + std, 100.0))
    # The cuts are the point: without them these bars would reach 101.5 and -1.6.
    (_, _, ce_high), _, (_, ls02_low, _) = _bar_extents(fig.axes[0])
    assert ce_high == 100.0
    assert ls02_low == 0.0


def test_alpha_sweep_titles_name_the_dataset_and_the_seeds(tmp_path):
    runs, table = _runs_and_table()
    fig = figures.alpha_sweep(table, results.ls_sweep(runs), metric="auroc", scores=["msp"],
                              dataset="digits")
    assert fig.get_suptitle() == "AUROC against α on digits; mean ± std over 3 seeds (0, 1, 2)"
    # Without `dataset`, the runs' predictions name it.
    run_dir = tmp_path / "run"
    splits = {"toy_test": predictions.Split("id_test", np.eye(3, dtype=np.float32),
                                            np.arange(3, dtype=np.int32))}
    predictions.write(run_dir / "predictions", splits, num_classes=3,
                      run={"dataset": "fashion_mnist"})
    runs, table = _runs_and_table(directory=str(run_dir))
    fig = figures.id_sweep(table, results.ls_sweep(runs))
    assert fig.get_suptitle() == ("Accuracy and ECE against α on fashion_mnist; mean ± std over "
                                  "3 seeds (0, 1, 2)")


def _predictions(tmp_path, id_logits, ood_logits):
    k = id_logits.shape[1]
    splits = {"toy_test": predictions.Split("id_test", id_logits.astype(np.float32),
                                            np.zeros(len(id_logits), np.int32)),
              "noise": predictions.Split("ood_test", ood_logits.astype(np.float32),
                                         np.full(len(ood_logits), -1, np.int32))}
    predictions.write(tmp_path / "predictions", splits, num_classes=k, run={})
    return predictions.read(tmp_path / "predictions")


def test_msp_histograms_show_a_thin_ood_tail(tmp_path):
    rng = np.random.default_rng(0)
    # A confident model: every ID example and 990 of 1000 OOD examples in the last bin, the
    # other 10 OOD examples spread thinly over the lower bins.
    id_logits = np.stack([np.full(2000, 12.0), np.zeros(2000)], axis=1)
    ood_top = np.r_[np.full(990, 12.0), rng.uniform(0.0, 3.0, 10)]
    ood_logits = np.stack([ood_top, np.zeros(1000)], axis=1)
    fig = figures.msp_histograms([("ce", _predictions(tmp_path, id_logits, ood_logits))], "noise")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    bars = [p for p in ax.patches if p.get_height() > 0]
    heights = np.array([p.get_height() for p in bars])
    assert heights.max() / heights.min() > 500  # on a linear axis the tail would be invisible
    bottom, top = ax.get_ylim()
    to_axes = ax.transAxes.inverted()
    for p in bars:  # every non-empty bin rises visibly above the bottom of its panel
        _, y = to_axes.transform(ax.transData.transform((p.get_x(), p.get_height())))
        assert 0.05 < y <= 1.0
    assert bottom < heights.min()
    assert top > heights.max()


def test_roc_points_are_scikit_learns_with_ties():
    rng = np.random.default_rng(1)
    id_scores = rng.integers(0, 8, 300).astype(float)  # many ties, inside and across the sets
    ood_scores = rng.integers(0, 6, 200).astype(float)
    fpr, tpr = figures.roc_points(id_scores, ood_scores)
    y = np.r_[np.ones(300), np.zeros(200)]
    sk_fpr, sk_tpr, _ = sk_metrics.roc_curve(y, np.r_[id_scores, ood_scores],
                                             drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)


def test_roc_figure_labels_the_95_percent_tpr_line(tmp_path):
    rng = np.random.default_rng(2)
    id_logits = rng.normal(size=(400, 3))
    id_logits[:, 0] += 3.0
    ood_logits = rng.normal(size=(300, 3))
    preds = _predictions(tmp_path, id_logits, ood_logits)
    fig = figures.roc_curves([("runs", [("ce", preds)])], "noise")
    ax = fig.axes[0]
    horizontal = [line for line in ax.get_lines() if set(line.get_ydata()) == {95}]
    assert len(horizontal) == 1
    # The line is named in the legend, not by a text drawn on the curves.
    assert len(ax.texts) == 0
    legend = ax.get_legend()
    # The legend's AUROC is scikit-learn's.
    id_msp, ood_msp = figures.id_ood_msp(preds, "noise")
    auroc = sk_metrics.roc_auc_score(np.r_[np.ones(400), np.zeros(300)], np.r_[id_msp, ood_msp])
    assert [t.get_text() for t in legend.get_texts()] == [f"ce ({100 * auroc:.1f})",
                                                           "TPR = 95%: FPR95 is read here"]
    handle = legend.legend_handles[1]
    assert (handle.get_linestyle(), handle.get_color()) == ("--", horizontal[0].get_color())
    # ... and the legend covers no point of the curve, rendered.
    fig.canvas.draw()
    box = legend.get_window_extent()
    curve = ax.get_lines()[0]
    x, y = ax.transData.transform(curve.get_xydata()).T
    assert not np.any((box.x0 <= x) & (x <= box.x1) & (box.y0 <= y) & (y <= box.y1))


def _lightness(rgba):
    """CIE L* of an sRGB colour: an ordering of colours independent of matplotlib's maps."""
    c = np.asarray(rgba[:3])
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    y = linear @ [0.2126, 0.7152, 0.0722]
    return 116 * np.cbrt(y) - 16 if y > 216 / 24389 else y * 24389 / 27


def test_sweep_curves_grow_lighter_with_alpha_and_other_panels_keep_the_cycle(tmp_path):
    rng = np.random.default_rng(3)
    runs = []
    for i in range(6):
        id_logits = rng.normal(size=(50, 3))
        id_logits[:, 0] += 3.0 - 0.4 * i
        runs.append(_predictions(tmp_path / f"r{i}", id_logits, rng.normal(size=(40, 3))))
    sweep = [(f"α = {0.1 * i:g}", p) for i, p in enumerate(runs)]
    fig = figures.roc_curves([("sweep", sweep), ("others", sweep[:3])], "noise",
                             sweeps=("sweep",))
    lightness = [_lightness(line.get_color()) for line in fig.axes[0].get_lines()[:6]]
    assert np.all(np.diff(lightness) > 5)  # the α order reads as an order of colours
    others = [to_hex(line.get_color()) for line in fig.axes[1].get_lines()[:3]]
    assert others == ["#1f77b4", "#ff7f0e", "#2ca02c"]  # tab10, matplotlib's default cycle
    fig = figures.risk_coverage([(label, p, 2.0) for label, p in sweep])
    for ax in fig.axes:
        lightness = [_lightness(line.get_color()) for line in ax.get_lines()]
        assert np.all(np.diff(lightness) > 5)


def test_alpha_sweep_tells_ten_scores_apart_by_colour_marker_and_line():
    runs, table = _runs_and_table()
    scores = ["msp", "max_logit", "energy", "entropy", "pnorm", "mahalanobis", "knn", "react",
              "vim", "odin"]
    rows = [MetricRow(r.run, score, "noise", "auroc", 0.5) for r in runs for score in scores]
    table = metric_stats.MetricTable(rows)
    fig = figures.alpha_sweep(table, results.ls_sweep(runs), metric="auroc", scores=scores,
                              dataset="digits")
    lines = [c.lines[0] for c in fig.axes[0].containers]
    assert len(lines) == 10
    assert len({line.get_color() for line in lines}) == 10
    assert len({line.get_marker() for line in lines}) == 10
    # The scores that read the features (Mahalanobis, kNN, ReAct, ViM) are dashed.
    dashed = [s for s, line in zip(scores, lines, strict=True) if line.get_linestyle() == "--"]
    assert dashed == ["mahalanobis", "knn", "react", "vim"]


def test_claims_figure_shows_each_seeds_difference_its_mean_and_the_noise_band():
    from softlabel_ood.analysis import claims, decision_statistics

    # Two comparisons with differences worked by hand: (2, 4, 9) points, mean 5, sample std
    # sqrt(13) = 3.61; (-1, -0.2) points, mean -0.6, std 0.57. Both stds exceed the 0.5-point
    # minimum, so each is its comparison's noise threshold.
    rules = claims.ClaimRules()
    first = decision_statistics.compare_paired({0: 0.52, 1: 0.54, 2: 0.59},
                                               {0: 0.50, 1: 0.50, 2: 0.50}, rules)
    second = decision_statistics.compare_paired({0: 0.49, 1: 0.498}, {0: 0.50, 1: 0.50}, rules)
    results_ = [claims.ClaimResult(1, "", claims.SUPPORTED, "", (), comparisons=(
                    ("a − b", first, +1),)),
                claims.ClaimResult(2, "", claims.INCONCLUSIVE, "", (), comparisons=(
                    ("c − d", second, -1),))]
    fig = figures.claim_differences(results_)
    ax = fig.axes[0]
    dots, means = ax.collections[1::3], ax.collections[2::3]
    np.testing.assert_allclose(dots[0].get_offsets(), [[2, 0], [4, 0], [9, 0]], atol=1e-9)
    np.testing.assert_allclose(dots[1].get_offsets(), [[-1, 1], [-0.2, 1]], atol=1e-9)
    np.testing.assert_allclose(means[0].get_offsets(), [[5, 0]], atol=1e-9)
    np.testing.assert_allclose(means[1].get_offsets(), [[-0.6, 1]], atol=1e-9)
    bands = ax.collections[0::3]
    for band, threshold in zip(bands, (np.sqrt(13), np.std([-1, -0.2], ddof=1)), strict=True):
        x = band.get_paths()[0].vertices[:, 0]
        assert x.min() == pytest.approx(-threshold)
        assert x.max() == pytest.approx(threshold)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a − b\n(claimed > 0)",
                                                            "c − d\n(claimed < 0)"]
    assert [t.get_text() for t in ax.texts] == ["claim 1: supported", "claim 2: inconclusive"]
