"""Scores and OOD detection metrics from saved predictions (DESIGN.md §6).

Imports numpy and jax only, so results can be scored on a laptop with nothing else installed.
Definitions: `scores` (the scores) and `metrics` (the metrics) module docstrings, and
docs/scores_and_metrics.md.
"""

from softlabel_ood.scoring import groups, odin_selection, selective
from softlabel_ood.scoring.head_scores import HEAD_SCORES, react, vim
from softlabel_ood.scoring.metrics import (
    ECE_BINS,
    ID_METRICS,
    METRICS,
    ScoringError,
    accuracy,
    calibration_metrics,
    ece,
    id_metrics,
    ood_metrics,
    pair_metrics,
)
from softlabel_ood.scoring.metrics_files import CSV_HEADER, read_metrics_csv, write_metrics
from softlabel_ood.scoring.runs import (
    ALL_SCORES,
    MetricRow,
    ScoreReport,
    run_name,
    score_predictions,
    score_runs_report,
)
from softlabel_ood.scoring.scores import (
    FEATURE_SCORES,
    LOGIT_SCORES,
    POSTHOC_SCORES,
    default_knn_k,
    knn,
    logit_scores,
    mahalanobis,
    pnorm,
    predicted_class,
)
from softlabel_ood.scoring.selective import SELECTIVE_METRICS, selective_metrics

__all__ = [
    "ALL_SCORES",
    "CSV_HEADER",
    "ECE_BINS",
    "FEATURE_SCORES",
    "HEAD_SCORES",
    "ID_METRICS",
    "LOGIT_SCORES",
    "METRICS",
    "POSTHOC_SCORES",
    "SELECTIVE_METRICS",
    "MetricRow",
    "ScoreReport",
    "ScoringError",
    "accuracy",
    "calibration_metrics",
    "default_knn_k",
    "ece",
    "groups",
    "id_metrics",
    "knn",
    "logit_scores",
    "mahalanobis",
    "odin_selection",
    "ood_metrics",
    "pair_metrics",
    "pnorm",
    "predicted_class",
    "react",
    "read_metrics_csv",
    "run_name",
    "score_predictions",
    "score_runs_report",
    "selective",
    "selective_metrics",
    "vim",
    "write_metrics",
]
