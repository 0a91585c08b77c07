"""Batched, jitted scoring against a per-pair numpy / scikit-learn loop computing the same metrics.

    python benchmarks/scoring.py [--runs=10] [--ood_splits=6] [--examples=10000] [--classes=100]
                                 [--feature_dim=128] [--train_examples=5000]

A grid of runs, each with an ID test split, an ID train split and several OOD splits of synthetic
logits, features, a classifier head and ODIN scores (predictions format v2), is scored twice in
one process, both after a warm-up: by `softlabel_ood.scoring.score_predictions` (every score,
and all (run, score, OOD split) pairs in one batched metrics computation) and by a loop that
computes the same scores with numpy (logit scores, mahalanobis, knn, react, vim, the ODIN pair
chosen by the same rule, pnorm) and the same metrics with scikit-learn and a transcription of
the OE code's FPR, one pair at a time, and the selective-classification metrics one (run, score)
at a time, as DESIGN.md §6 and docs/scores_and_metrics.md define them. It
prints both times (best of --repeats), their ratio, and the largest difference between the two
sets of results, and exits with status 1 when that exceeds --tolerance. Two more comparisons
time the OOD metrics alone and the selective-classification metrics alone, both sides given the
same float64 score arrays. --feature_dim=0
leaves features, head and ODIN scores out (logit scores only).

One OOD split per run repeats a handful of logit rows many times (as constant or near-constant
images do), so the comparison covers heavily tied scores as well as continuous ones.

    python benchmarks/scoring.py --end_to_end [--runs=10] ...   (logit scores unless --feature_dim)

writes the runs as predictions directories in a temporary directory and times the command
instead: `python -m softlabel_ood.score` on the first run and on all runs, a fresh process each
(best of --repeats), once with an empty persistent compilation cache (a new one each time) and
once with the cache its first call filled, against the loop reading the same directories in
this process (after a warm-up, so without its imports). It prints the three times, the two
ratios (loop / score), the time of a process that only starts JAX, and the largest difference
between the command's metrics.csv and the loop's numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sklearn import metrics as sk

from softlabel_ood import scoring
from softlabel_ood.workdir import predictions

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ODIN_PAIRS = ((1.0, 0.0), (1000.0, 0.0), (1000.0, 0.0014), (1000.0, 0.004))
KNN_K = 50  # Sun et al.'s CIFAR k, given to both computations


def make_runs(num_runs, num_ood, num_examples, num_classes, feature_dim=0, train_examples=0,
              seed=0):
    """Synthetic runs: ID logits peak at the label, OOD logits are flatter; one OOD split tied.

    With feature_dim > 0, every split also has features (the logits' source through a random
    head), ODIN scores, and there is an id_train split.
    """
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
        head = None
        if feature_dim:
            train_labels = rng.integers(0, num_classes, train_examples).astype(np.int32)
            splits["id_train"] = predictions.Split(
                "id_train", np.zeros((train_examples, num_classes), np.float32), train_labels)
            head = predictions.Head(
                rng.normal(0, 1 / np.sqrt(feature_dim), (feature_dim, num_classes)).astype(
                    np.float32), rng.normal(0, 0.1, num_classes).astype(np.float32))
            means = rng.normal(size=(num_classes, feature_dim))
            for name, split in list(splits.items()):
                n = len(split.labels)
                shift = means[np.maximum(split.labels, 0)] * (split.role != "ood_test")
                features = np.maximum(rng.normal(size=(n, feature_dim)) + shift, 0).astype(
                    np.float32)
                odin = rng.uniform(1 / num_classes, 1.0, (n, len(ODIN_PAIRS))).astype(np.float32)
                splits[name] = predictions.Split(
                    split.role, (features @ head.kernel + head.bias).astype(np.float32),
                    split.labels, features, odin)
        runs.append((f"run_{r}", predictions.Predictions(
            num_classes=num_classes, run={}, splits=splits, directory=None, head=head,
            odin_pairs=ODIN_PAIRS if feature_dim else ())))
    return runs


def numpy_feature_scores(features, train, train_labels, num_classes, kernel, bias, knn_k):
    """mahalanobis, knn, react and vim from their definitions, in numpy float64."""
    f, g = features.astype(np.float64), train.astype(np.float64)
    w, b = kernel.astype(np.float64), bias.astype(np.float64)
    present = np.unique(train_labels)
    means = np.stack([g[train_labels == c].mean(0) for c in present])
    centered = g - means[np.searchsorted(present, train_labels)]
    precision = np.linalg.pinv(centered.T @ centered / len(g), hermitian=True)
    # (f - mu)^T P (f - mu) expanded, so that no [N, classes, D] array is formed.
    squared = (np.einsum("nd,de,ne->n", f, precision, f)[:, None]
               - 2 * f @ precision @ means.T
               + np.einsum("cd,de,ce->c", means, precision, means)[None])
    mahalanobis = -np.maximum(squared, 0.0).min(1)
    # knn's similarities in float32, as the definition computes them (ample for a rank).
    z = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    zt = train / np.maximum(np.linalg.norm(train, axis=1, keepdims=True), 1e-12)
    k = min(knn_k, len(g))
    knn = np.sort(z @ zt.T, axis=1)[:, -k].astype(np.float64) - 1.0
    clip = np.percentile(g.reshape(-1), 90)
    react = logsumexp(np.minimum(f, clip) @ w + b)
    origin = -np.linalg.pinv(w.T) @ b
    eigenvalues, eigenvectors = np.linalg.eigh((g - origin).T @ (g - origin) / len(g))
    residual = eigenvectors[:, np.argsort(-eigenvalues)[scoring.head_scores.vim_dimension(
        f.shape[1]):]]
    alpha = (g @ w + b).max(1).mean() / np.linalg.norm((g - origin) @ residual, axis=1).mean()
    vim = logsumexp(f @ w + b) - alpha * np.linalg.norm((f - origin) @ residual, axis=1)
    return {"mahalanobis": mahalanobis, "knn": knn, "react": react, "vim": vim}


def logsumexp(x):
    top = x.max(1)
    return top + np.log(np.exp(x - top[:, None]).sum(1))


def numpy_odin_column(pairs, train_odin):
    """The selection rule: the largest T, then the ε with the highest mean id_train score."""
    top = max(t for t, _ in pairs)
    candidates = sorted((e, i) for i, (t, e) in enumerate(pairs) if t == top)
    return max(candidates, key=lambda c: (train_odin[:, c[1]].mean(), -c[0]))[1]


def numpy_scores(logits):
    logits = logits.astype(np.float64)
    top = logits.max(axis=1)
    shifted = logits - top[:, None]
    e = np.exp(shifted)
    z = e.sum(axis=1)
    log_z = np.log(z)
    centred = logits - logits.mean(axis=1, keepdims=True)
    pnorm = centred.max(axis=1) / np.linalg.norm(centred, axis=1)  # p = 2, the default
    return {"msp": 1.0 / z, "max_logit": top, "energy": top + log_z,
            "entropy": (e * shifted).sum(axis=1) / z - log_z, "pnorm": pnorm}, \
        logits.argmax(axis=1)


def numpy_selective(scores, correct):
    """aurc, eaurc, error_auroc and error_fpr95 of one score, from their definitions."""
    order = np.argsort(-scores, kind="stable")
    s, errors = scores[order], ~correct[order]
    n = len(s)
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]  # first index of each tie block
    sizes = np.diff(np.r_[starts, n])
    errors_before = np.r_[0, np.cumsum(errors)][starts]
    block_errors = np.add.reduceat(errors.astype(np.int64), starts)
    c = np.repeat(starts, sizes)
    j = np.arange(n) - c + 1
    risk = (np.repeat(errors_before, sizes) + j * np.repeat(block_errors / sizes, sizes)) / (c + j)
    aurc = risk.mean()
    r = errors.mean()
    fpr, tpr, _ = sk.roc_curve(correct, scores, drop_intermediate=False)
    return {"aurc": aurc, "eaurc": aurc - (r + (1 - r) * np.log(1 - r)),
            "error_auroc": sk.roc_auc_score(correct, scores),
            "error_fpr95": fpr[np.argmax(tpr >= 0.95)]}


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
            "detection_acc": np.max(0.5 * (tpr + 1.0 - fpr)),
            "fpr95_oe": oe_fpr_at_recall(1 - y, -s)}


def oe_fpr_at_recall(y_true, y_score, recall_level=0.95):
    """The Outlier Exposure code's fpr_and_fdr_at_recall (utils/display_results.py), as it
    computes FPR: OOD positive, anomaly score -s."""
    y_true = y_true == 1
    order = np.argsort(y_score, kind="mergesort")[::-1]
    y_score, y_true = y_score[order], y_true[order]
    threshold_idxs = np.r_[np.where(np.diff(y_score))[0], y_true.size - 1]
    tps = np.cumsum(y_true, dtype=np.float64)[threshold_idxs]
    fps = 1 + threshold_idxs - tps
    recall = tps / tps[-1]
    last_ind = tps.searchsorted(tps[-1])
    sl = slice(last_ind, None, -1)
    recall, fps = np.r_[recall[sl], 1], np.r_[fps[sl], 0]
    return fps[np.argmin(np.abs(recall - recall_level))] / np.sum(np.logical_not(y_true))


def sklearn_loop(runs):
    results = {}
    for name, preds in runs:
        values = {}
        for split_name, split in preds.splits.items():
            values[split_name], predicted = numpy_scores(split.logits)
            if split.role == "id_test":
                correct = predicted == split.labels
                results[(name, "", "", "accuracy")] = correct.mean()
                results[(name, "", "", "ece")] = numpy_ece(values[split_name]["msp"],
                                                           correct.astype(np.float64))
        id_name = preds.id_test_name
        evaluated = [id_name, *preds.names("ood_test")]
        score_names = [*scoring.LOGIT_SCORES, *scoring.POSTHOC_SCORES]
        if preds.head is not None:
            train = preds.splits[preds.names("id_train")[0]]
            column = numpy_odin_column(preds.odin_pairs, train.odin)
            for split_name in evaluated:
                split = preds.splits[split_name]
                values[split_name].update(numpy_feature_scores(
                    split.features, train.features, train.labels, preds.num_classes,
                    preds.head.kernel, preds.head.bias, KNN_K))
                values[split_name]["odin"] = split.odin[:, column].astype(np.float64)
            score_names += ["mahalanobis", "knn", "react", "vim", "odin"]
        for score in score_names:
            for metric, value in numpy_selective(values[id_name][score], correct).items():
                results[(name, score, "", metric)] = float(value)
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


def correctness(runs):
    """Each run's ID test correctness, repeated for its logit scores (the rows of score_arrays)."""
    rows = []
    for _, preds in runs:
        split = preds.splits[preds.id_test_name]
        rows += [split.logits.argmax(axis=1) == split.labels] * len(scoring.LOGIT_SCORES)
    return np.stack(rows)


def ours_selective_only(id_scores, correct):
    out = scoring.selective_metrics(id_scores, correct)
    return {(g, m): float(out[m][g]) for g in range(len(id_scores))
            for m in scoring.SELECTIVE_METRICS}


def numpy_selective_only(id_scores, correct):
    return {(g, m): float(v) for g in range(len(id_scores))
            for m, v in numpy_selective(id_scores[g], correct[g]).items()}


def sklearn_metrics_only(id_scores, ood_scores):
    return {(g, o, m): float(v) for g in range(id_scores.shape[0])
            for o in range(ood_scores.shape[1])
            for m, v in sklearn_pair(id_scores[g], ood_scores[g, o]).items()}


def ours_metrics_only(id_scores, ood_scores):
    out = scoring.ood_metrics(id_scores, ood_scores)
    return {(g, o, m): float(out[m][g, o]) for g in range(id_scores.shape[0])
            for o in range(ood_scores.shape[1]) for m in scoring.METRICS}


def compare(title, ours_fn, sklearn_fn, repeats, tolerance, knn_tolerance=None):
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
    ok = True
    # knn's similarities are float32 by definition, so two float32 products (XLA's and numpy's)
    # may order a near-tie differently: its metrics get their own, looser tolerance.
    parts = [("", [k for k in sk_result if k[1:2] != ("knn",)], tolerance)]
    if knn_tolerance is not None:
        parts.append((" (knn)", [k for k in sk_result if k[1:2] == ("knn",)], knn_tolerance))
    for label, keys, limit in parts:
        if not keys:
            continue
        worst = max(keys, key=lambda k: abs(ours_result[k] - sk_result[k]))
        diff = abs(ours_result[worst] - sk_result[worst])
        print(f"  largest difference over {len(keys)} values{label}: {diff:.3g} (at {worst})")
        if diff > limit:
            print(f"  FAIL: difference above tolerance {limit}")
            ok = False
        else:
            print(f"  results identical to within {limit}")
    return ok


def ours(runs):
    rows = scoring.score_predictions(runs, knn_k=KNN_K).rows
    return {(r.run, r.score, r.ood, r.metric): r.value for r in rows}


def best_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def write_runs(runs, root) -> list[str]:
    """Each run as a predictions directory `root/<name>/predictions`; returns the run dirs."""
    dirs = []
    for name, preds in runs:
        dirs.append(os.path.join(root, name))
        # ODIN scores are written as the current format's log-ratios, log(K p).
        splits = {s: dataclasses.replace(split, odin=None, odin_log_ratio=np.log(
            preds.num_classes * split.odin)) if split.odin is not None else split
            for s, split in preds.splits.items()}
        predictions.write(os.path.join(dirs[-1], "predictions"), splits,
                          num_classes=preds.num_classes, run={}, head=preds.head,
                          odin_pairs=preds.odin_pairs)
    return dirs


def score_process(run_dirs, out, cache) -> tuple[float, dict]:
    """Seconds of one `python -m softlabel_ood.score` process from start to exit, compiling into
    and loading from the persistent compilation cache `cache`; and its metrics.csv."""
    env = {**os.environ, "SOFTLABEL_OOD_COMPILATION_CACHE": cache}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "softlabel_ood.score", *run_dirs,
                             f"--out={out}", f"--knn_k={KNN_K}"], cwd=REPO, env=env,
                            capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"score failed: {result.stderr[-2000:]}")
    rows = scoring.read_metrics_csv(os.path.join(out, "metrics.csv"))
    return seconds, {(r.run, r.score, r.ood, r.metric): r.value for r in rows}


def read_and_loop(run_dirs):
    """The reference loop on the same predictions directories, read as score reads them."""
    runs = []
    for d in run_dirs:
        preds = predictions.read(os.path.join(d, "predictions"))
        splits = {s: dataclasses.replace(split, odin=split.odin_max_softmax())
                  for s, split in preds.splits.items()}
        runs.append((os.path.basename(d), dataclasses.replace(preds, splits=splits)))
    return sklearn_loop(runs)


def import_floor() -> float:
    """Seconds of a process that only imports JAX and starts its CPU backend: the least any
    JAX command costs here."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import jax; jax.devices()"], check=True,
                   env={**os.environ, "JAX_PLATFORMS": "cpu"})
    return time.perf_counter() - start


def end_to_end(runs, repeats, tolerance, root) -> bool:
    """One run, then all runs: `score` in fresh processes with an empty compilation cache
    (a new one each time) and with the cache its first call filled, against the loop."""
    dirs = write_runs(runs, os.path.join(root, "runs"))
    print(f"  a process that only imports jax and starts its CPU backend: {import_floor():.3f} s")
    ok = True
    cases = [("1 run", dirs[:1])] + ([(f"{len(dirs)} runs", dirs)] if len(dirs) > 1 else [])
    for label, subset in cases:
        out = os.path.join(root, "out")
        cold = [score_process(subset, out, os.path.join(root, f"cache_{label}_{i}"))[0]
                for i in range(repeats)]
        warm_cache = os.path.join(root, f"cache_{label}_0")
        warm = [score_process(subset, out, warm_cache) for _ in range(repeats)]
        read_and_loop(subset)  # warm-up: first-call costs
        loop_time, loop_result = best_time(lambda s=subset: read_and_loop(s), repeats)
        print(f"{label}: python -m softlabel_ood.score, a fresh process each, best of {repeats}")
        print(f"  empty compilation cache: {min(cold):8.3f} s  (all: "
              f"{', '.join(f'{t:.2f}' for t in cold)})")
        print(f"  compilation cache filled: {min(t for t, _ in warm):7.3f} s  (all: "
              f"{', '.join(f'{t:.2f}' for t, _ in warm)})")
        print(f"  per-pair numpy + scikit-learn loop, reading the same directories: "
              f"{loop_time:.3f} s")
        print(f"  ratio (loop / score): {loop_time / min(cold):.2f}x cold, "
              f"{loop_time / min(t for t, _ in warm):.2f}x warm")
        result = warm[-1][1]
        if result.keys() != loop_result.keys():
            print("  FAIL: metrics.csv and the loop hold different sets of results")
            ok = False
            continue
        diff = max(abs(result[k] - loop_result[k]) for k in loop_result)
        print(f"  largest difference over {len(result)} values of metrics.csv: {diff:.3g}")
        if diff > tolerance:
            print(f"  FAIL: difference above tolerance {tolerance}")
            ok = False
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--ood_splits", type=int, default=6)
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--feature_dim", type=int, default=None,
                        help="default 128, or 0 (logit scores only) with --end_to_end")
    parser.add_argument("--train_examples", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tolerance", type=float, default=1e-6)
    parser.add_argument("--knn_tolerance", type=float, default=1e-4)
    parser.add_argument("--end_to_end", action="store_true",
                        help="time `python -m softlabel_ood.score` in fresh processes instead")
    args = parser.parse_args(argv)
    if args.feature_dim is None:
        args.feature_dim = 0 if args.end_to_end else 128

    runs = make_runs(args.runs, args.ood_splits, args.examples, args.classes, args.feature_dim,
                     args.train_examples)
    num_scores = len(scoring.ALL_SCORES) if args.feature_dim else (
        len(scoring.LOGIT_SCORES) + len(scoring.POSTHOC_SCORES))
    pairs = args.runs * num_scores * args.ood_splits
    train_examples = args.train_examples if args.feature_dim else 0
    print(f"{args.runs} runs x {num_scores} scores x {args.ood_splits} OOD splits = {pairs} "
          f"pairs; {args.examples} ID and {args.examples} OOD examples per split, K = "
          f"{args.classes}, D = {args.feature_dim}, {train_examples} id_train examples; JAX on "
          f"{jax.devices()[0].platform}")
    if args.end_to_end:
        with tempfile.TemporaryDirectory() as root:
            return 0 if end_to_end(runs, args.repeats, args.tolerance, root) else 1

    ok = compare("Every score, accuracy, ECE and the OOD metrics of every pair:",
                 lambda: ours(runs), lambda: sklearn_loop(runs), args.repeats, args.tolerance,
                 args.knn_tolerance)
    id_scores, ood_scores = score_arrays(runs)
    ok &= compare("OOD metrics alone, on the same float64 score arrays:",
                  lambda: ours_metrics_only(id_scores, ood_scores),
                  lambda: sklearn_metrics_only(id_scores, ood_scores), args.repeats,
                  args.tolerance)
    correct = correctness(runs)
    ok &= compare("Selective-classification metrics alone, on the same float64 score arrays:",
                  lambda: ours_selective_only(id_scores, correct),
                  lambda: numpy_selective_only(id_scores, correct), args.repeats,
                  args.tolerance)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
