"""Scores and OOD detection metrics from saved predictions (DESIGN.md §6).

Imports numpy and jax only, so results can be scored on a laptop with nothing else installed.
Definitions: `score_records` (the scores), `scores` and `head_scores` (their computations),
`metric_records` and `metrics` (the metrics), and docs/scores_and_metrics.md; `score_outputs`
(`model_outputs`) scores any model's outputs given as arrays.

The names below are loaded when first used: `score_records` and `metric_records`, which the
config side reads, import neither numpy nor JAX, and importing them must not load the rest.
The lists of scores are read from the records at each use, so they include scores registered
at run time.
"""

import importlib

_FROM = {
    "head_scores": ("react", "vim"),
    "metrics": ("ECE_BINS", "ID_METRICS", "METRICS", "ScoringError", "accuracy",
                "calibration_metrics", "ece", "id_metrics", "ood_metrics", "pair_metrics"),
    "metrics_files": ("CSV_HEADER", "read_metrics_csv", "write_metrics"),
    "directory_reading": ("run_name",),
    "model_outputs": ("MetricRows", "score_outputs"),
    "pipeline": ("MetricRow", "ScoreReport", "score_predictions", "score_runs_report"),
    "scores": ("default_knn_k", "knn", "logit_scores", "mahalanobis", "pnorm",
               "predicted_class"),
    "selective": ("SELECTIVE_METRICS", "selective_metrics"),
}
_MODULE_OF = {name: module for module, names in _FROM.items() for name in names}
# The scores by what they read, from their records (`score_records`).
_SCORE_LISTS = {
    "ALL_SCORES": lambda r: r.names(),
    "LOGIT_SCORES": lambda r: r.fused("logit_scores"),
    "POSTHOC_SCORES": lambda r: tuple(s for s in r.reading("logits")
                                      if s not in r.fused("logit_scores")),
    "FEATURE_SCORES": lambda r: tuple(s for s in r.reading("id_train", "features")
                                      if s not in r.reading("head")),
    "HEAD_SCORES": lambda r: r.reading("head"),
}
_SUBMODULES = ("directory_reading", "float64", "groups", "head_scores", "metric_records",
               "metrics", "metrics_files", "model_outputs", "odin_selection", "pipeline",
               "score_functions", "score_records", "scores", "selective")

__all__ = sorted([*_MODULE_OF, *_SCORE_LISTS, "groups", "odin_selection", "selective"])


def __getattr__(name: str):
    if name in _SCORE_LISTS:
        return _SCORE_LISTS[name](importlib.import_module(f"{__name__}.score_records"))
    if name in _MODULE_OF:
        return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
