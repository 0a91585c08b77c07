"""Batched, jitted scoring against a per-pair scikit-learn loop computing the same metrics.

    python benchmarks/scoring.py [--runs=10] [--ood_splits=6] [--examples=10000] [--classes=100]

A grid of runs, each with an ID test split and several OOD splits of synthetic logits, is scored
twice in one process, both after a warm-up: by `softlabel_ood.scoring.score_predictions` (all
(run, score, OOD split) pairs in one batched computation) and by a loop that computes the same
scores with numpy and the same metrics with scikit-learn, one pair at a time, as DESIGN.md §6
defines them. It prints both times (best of --repeats), their ratio, and the largest difference
between the two sets of results, and exits with status 1 when that exceeds --tolerance. A second
comparison times the OOD metrics alone, both sides given the same float64 score arrays.

One OOD split per run repeats a handful of logit rows many times (as constant or near-constant
images do), so the comparison covers heavily tied scores as well as continuous ones.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sklearn import metrics as sk

from softlabel_ood import predictions, scoring


def make_runs(num_runs, num_ood, num_examples, num_classes, seed=0):
    """Synthetic runs: ID logits peak at the label, OOD logits are flatter; one OOD split tied."""
    rng = np.random.default_rng(seed)
    runs = []
    for r in range(num_runs):
        labels = rng.integers(0, num_classes, num_examples).astype(np.int32)
        id_logits = rng.normal(size=(num_examples, num_classes)) * 2.0
        # Mostly correct, with a confidence that varies from run to run.
        correct = rng.random(num_examples) < 0.9
        targets = np.where(correct, labels, rng.integers(0, num_classes, num_examples))
        id_logits[np.arange(num_examples), targets] += rng.uniform(2.0, 8.0) + rng.normal(
            size=num_examples)
        splits = {"id_test": predictions.Split("id_test", id_logits.astype(np.float32), labels)}
        for o in range(num_ood):
            ood = rng.normal(size=(num_examples, num_classes)) * rng.uniform(1.5, 3.0)
            if o == 0:  # heavy ties: 20 distinct rows
                ood = ood[rng.integers(0, 20, num_examples)]
            splits[f"ood_{o}"] = predictions.Split(
                "ood_test", ood.astype(np.float32), np.full(num_examples, -1, np.int32))
        runs.append((f"run_{r}", predictions.Predictions(
            num_classes=num_classes, run={}, splits=splits, directory=None)))
    return runs


def numpy_scores(logits):
    logits = logits.astype(np.float64)
    top = logits.max(axis=1)
    shifted = logits - top[:, None]
    e = np.exp(shifted)
    z = e.sum(axis=1)
    log_z = np.log(z)
    return {"msp": 1.0 / z, "max_logit": top, "energy": top + log_z,
            "entropy": (e * shifted).sum(axis=1) / z - log_z}, logits.argmax(axis=1)


def numpy_ece(confidence, correct, num_bins=15):
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    total = 0.0
    for lo, hi in itertools.pairwise(edges):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return total


def sklearn_pair(id_scores, ood_scores):
    y = np.concatenate([np.ones(len(id_scores)), np.zeros(len(ood_scores))])
    s = np.concatenate([id_scores, ood_scores])
    fpr, tpr, _ = sk.roc_curve(y, s, drop_intermediate=False)
    fpr_o, tpr_o, _ = sk.roc_curve(1 - y, -s, drop_intermediate=False)
    fpr95 = fpr[np.argmax(tpr >= 0.95)]
    return {"auroc": sk.roc_auc_score(y, s), "aupr_in": sk.average_precision_score(y, s),
            "aupr_out": sk.average_precision_score(1 - y, -s), "fpr95": fpr95,
            "tnr95": 1.0 - fpr95, "fpr95_ood_positive": fpr_o[np.argmax(tpr_o >= 0.95)],
            "detection_acc": np.max(0.5 * (tpr + 1.0 - fpr))}


def sklearn_loop(runs):
    results = {}
    for name, preds in runs:
        values = {}
        for split_name, split in preds.splits.items():
            values[split_name], predicted = numpy_scores(split.logits)
            if split.role == "id_test":
                correct = (predicted == split.labels).astype(np.float64)
                results[(name, "", "", "accuracy")] = correct.mean()
                results[(name, "", "", "ece")] = numpy_ece(values[split_name]["msp"], correct)
        id_name = preds.id_test_name
        for score in scoring.LOGIT_SCORES:
            for ood in preds.names("ood_test"):
                pair = sklearn_pair(values[id_name][score], values[ood][score])
                for metric, value in pair.items():
                    results[(name, score, ood, metric)] = float(value)
    return results


def score_arrays(runs):
    """ID [G, P] and OOD [G, O, N] score arrays of every (run, logit score), from numpy."""
    id_rows, ood_rows = [], []
    for _, preds in runs:
        values = {name: numpy_scores(split.logits)[0] for name, split in preds.splits.items()}
        for score in scoring.LOGIT_SCORES:
            id_rows.append(values[preds.id_test_name][score])
            ood_rows.append([values[o][score] for o in preds.names("ood_test")])
    return np.stack(id_rows), np.array(ood_rows)


def sklearn_metrics_only(id_scores, ood_scores):
    return {(g, o, m): float(v) for g in range(id_scores.shape[0])
            for o in range(ood_scores.shape[1])
            for m, v in sklearn_pair(id_scores[g], ood_scores[g, o]).items()}


def ours_metrics_only(id_scores, ood_scores):
    out = scoring.ood_metrics(id_scores, ood_scores)
    return {(g, o, m): float(out[m][g, o]) for g in range(id_scores.shape[0])
            for o in range(ood_scores.shape[1]) for m in scoring.METRICS}


def compare(title, ours_fn, sklearn_fn, repeats, tolerance):
    ours_fn()  # warm-up: compiles for these shapes
    sklearn_fn()  # warm-up: first-call costs
    ours_time, ours_result = best_time(ours_fn, repeats)
    sk_time, sk_result = best_time(sklearn_fn, repeats)
    print(f"{title}")
    print(f"  softlabel_ood.scoring (batched, jitted): {ours_time:8.3f} s")
    print(f"  per-pair numpy + scikit-learn loop:      {sk_time:8.3f} s")
    print(f"  speed-up: {sk_time / ours_time:.1f}x")
    if ours_result.keys() != sk_result.keys():
        print("  FAIL: the two computations produced different sets of results")
        return False
    worst = max(sk_result, key=lambda k: abs(ours_result[k] - sk_result[k]))
    diff = abs(ours_result[worst] - sk_result[worst])
    print(f"  largest difference over {len(sk_result)} values: {diff:.3g} (at {worst})")
    if diff > tolerance:
        print(f"  FAIL: difference above tolerance {tolerance}")
        return False
    print(f"  results identical to within {tolerance}")
    return True


def ours(runs):
    rows = scoring.score_predictions(runs).rows
    return {(r.run, r.score, r.ood, r.metric): r.value for r in rows}


def best_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--ood_splits", type=int, default=6)
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tolerance", type=float, default=1e-6)
    args = parser.parse_args(argv)

    runs = make_runs(args.runs, args.ood_splits, args.examples, args.classes)
    pairs = args.runs * len(scoring.LOGIT_SCORES) * args.ood_splits
    print(f"{args.runs} runs x {len(scoring.LOGIT_SCORES)} logit scores x {args.ood_splits} OOD "
          f"splits = {pairs} pairs; {args.examples} ID and {args.examples} OOD examples per "
          f"split, K = {args.classes}; JAX on {jax.devices()[0].platform}")

    ok = compare("From logits (scores, accuracy, ECE and the OOD metrics of every pair):",
                 lambda: ours(runs), lambda: sklearn_loop(runs), args.repeats, args.tolerance)
    id_scores, ood_scores = score_arrays(runs)
    ok &= compare("OOD metrics alone, on the same float64 score arrays:",
                  lambda: ours_metrics_only(id_scores, ood_scores),
                  lambda: sklearn_metrics_only(id_scores, ood_scores), args.repeats,
                  args.tolerance)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
