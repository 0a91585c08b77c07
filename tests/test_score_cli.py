"""`python -m softlabel_ood.score` end to end, and the metrics files it writes."""

from __future__ import annotations

import csv
import dataclasses
import glob
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from softlabel_ood import scoring
from softlabel_ood.workdir import predictions
from softlabel_ood.workdir.predictions import Split

REPO = pathlib.Path(__file__).resolve().parents[1]
K = 4


def run_score(*args: str, env: dict | None = None):
    return subprocess.run([sys.executable, "-m", "softlabel_ood.score", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})})


def make_run(run_dir: pathlib.Path, seed: int, features: bool) -> dict[str, Split]:
    rng = np.random.default_rng(seed)

    def split(role, n, shift):
        labels = rng.integers(0, K, n) if role != "ood_test" else np.full(n, -1)
        logits = rng.normal(size=(n, K)) + shift * np.eye(K)[np.maximum(labels, 0)]
        # Quantized logits make tied scores, as saturated or constant inputs do.
        return Split(role, np.round(logits, 1).astype(np.float32), labels.astype(np.int32),
                     rng.normal(size=(n, 3)).astype(np.float32) if features else None)

    splits = {"digits_test": split("id_test", 40, 3.0), "gaussian": split("ood_test", 25, 0.0),
              "blobs": split("ood_test", 9, 1.0)}
    if not features:
        predictions.write(run_dir / "predictions", splits, num_classes=K, run={"seed": seed})
        return splits
    # With features, also the head and ODIN arrays (format v3: log(K p) for the scores p); on
    # the train split the pair (1000, 0.0014) has the highest mean, so the selection rule picks it.
    splits["digits_train"] = split("id_train", 60, 3.0)
    splits = {name: dataclasses.replace(sp, odin_log_ratio=np.log(K * rng.uniform(
        0.3, 0.7 + 0.1 * (name == "digits_train") * np.arange(3), (len(sp.labels), 3))).astype(
        np.float32)) for name, sp in splits.items()}
    head = predictions.Head(rng.normal(size=(3, K)).astype(np.float32),
                            rng.normal(size=K).astype(np.float32))
    predictions.write(run_dir / "predictions", splits, num_classes=K, run={"seed": seed},
                      head=head, odin_pairs=ODIN_PAIRS)
    return splits


ODIN_PAIRS = ((1.0, 0.0), (1000.0, 0.0), (1000.0, 0.0014))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {"ce": (root / "ce", make_run(root / "ce", 0, features=True)),
            "ls_0.1": (root / "ls_0.1", make_run(root / "ls_0.1", 1, features=False))}


@pytest.fixture(scope="module")
def scored(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "metrics"
    result = run_score(runs["ce"][0], runs["ls_0.1"][0], f"--out={out}", "--knn_k=5")
    return result, out


def test_cli_writes_metrics_csv_and_md(scored, runs):
    result, out = scored
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["metrics.csv", "metrics.md"]
    with open(out / "metrics.csv", newline="") as f:
        lines = list(csv.reader(f))
    assert lines[0] == ["run", "score", "ood", "metric", "value"]
    rows = scoring.read_metrics_csv(out / "metrics.csv")
    # Per run: accuracy and ece, 4 selective metrics per score, then scores x OOD splits x 8.
    assert len(rows) == (2 + 10 * 4 + 10 * 2 * 8) + (2 + 5 * 4 + 5 * 2 * 8)
    assert rows[0] == scoring.MetricRow("ce", "", "", "accuracy", rows[0].value)
    assert all(0.0 <= r.value <= 1.0 for r in rows)
    values = {(r.run, r.score, r.ood, r.metric): r.value for r in rows}
    assert {s for (run, s, _, _) in values if run == "ls_0.1"} == {
        "", *scoring.LOGIT_SCORES, "pnorm"}

    # The command's numbers are the library's numbers on the same arrays.
    for run, (_, splits) in runs.items():
        logits = splits["digits_test"].logits
        id_values = scoring.id_metrics(logits, splits["digits_test"].labels)
        assert values[(run, "", "", "accuracy")] == id_values["accuracy"]
        assert values[(run, "", "", "ece")] == pytest.approx(id_values["ece"], abs=1e-12)
        for ood in ("gaussian", "blobs"):
            expected = scoring.pair_metrics(
                scoring.logit_scores(logits)["energy"],
                scoring.logit_scores(splits[ood].logits)["energy"])
            for metric, value in expected.items():
                assert values[(run, "energy", ood, metric)] == pytest.approx(value, abs=1e-12)

    # Feature scores of the run with features match the library's scores.
    ce = runs["ce"][1]
    train = ce["digits_train"]
    knn_id = scoring.knn(ce["digits_test"].features, train.features, 5)
    knn_ood = scoring.knn(ce["blobs"].features, train.features, 5)
    assert values[("ce", "knn", "blobs", "auroc")] == pytest.approx(
        scoring.pair_metrics(knn_id, knn_ood)["auroc"], abs=1e-12)
    # Head-aware scores from the saved head, and ODIN at the pair the rule picks.
    preds = predictions.read(runs["ce"][0] / "predictions")
    head = (train.features, preds.head.kernel, preds.head.bias)
    for score, fn in (("react", scoring.react), ("vim", scoring.vim)):
        expected = scoring.pair_metrics(fn(ce["digits_test"].features, *head),
                                        fn(ce["gaussian"].features, *head))
        for metric, value in expected.items():
            assert values[("ce", score, "gaussian", metric)] == pytest.approx(value, abs=1e-12)
    expected = scoring.pair_metrics(ce["digits_test"].odin_log_ratio[:, 2],
                                    ce["blobs"].odin_log_ratio[:, 2])
    assert values[("ce", "odin", "blobs", "auroc")] == pytest.approx(expected["auroc"], abs=1e-12)
    assert "ce: odin T = 1000, ε = 0.0014 (chosen by the rule" in result.stderr


def test_cli_metrics_md_and_skipped_feature_scores(scored):
    result, out = scored
    text = (out / "metrics.md").read_text()
    assert "## ce" in text
    assert "## ls_0.1" in text
    assert "| ood | auroc | aupr_in | aupr_out | fpr95 | tnr95 | fpr95_ood_positive | " \
           "detection_acc | fpr95_oe |" in text
    ls_part = text.split("## ls_0.1")[1]
    assert "### mahalanobis\n\nskipped: the predictions have no id_train split" in ls_part
    assert "### knn\n\nskipped: the predictions have no id_train split" in ls_part
    assert "### vim\n\nskipped: the predictions have no id_train split" in ls_part
    assert "### odin\n\nskipped: the predictions hold no ODIN scores" in ls_part
    assert "### odin\n\nT = 1000, ε = 0.0014 (chosen by the rule" in text.split("## ls_0.1")[0]
    assert "ls_0.1: knn skipped: the predictions have no id_train split" in result.stderr
    rows = scoring.read_metrics_csv(out / "metrics.csv")
    auroc = next(r.value for r in rows if (r.run, r.score, r.ood, r.metric)
                 == ("ce", "msp", "gaussian", "auroc"))
    assert f"| gaussian | {100 * auroc:.2f} |" in text.split("## ce")[1].split("### max_logit")[0]


def test_cli_bad_run_directories_exit_2_and_leave_out_alone(runs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.csv").write_text("old\n")
    broken = tmp_path / "broken"
    (broken / "predictions").mkdir(parents=True)
    (broken / "predictions" / "manifest.json").write_text('{"format": "v0"}')
    twin = tmp_path / "other" / "ce"
    make_run(twin, 2, features=False)
    cases = [
        ([tmp_path / "missing"], f"error: {tmp_path / 'missing'}: no such run directory"),
        ([broken], f"error: {broken / 'predictions' / 'manifest.json'}: field 'format' is "
                   "'v0', expected one of 'softlabel_ood.predictions/v1', "
                   "'softlabel_ood.predictions/v2'"),
        ([runs["ce"][0], twin], f"error: {twin}: another run directory has the same base "
                                "name 'ce'"),
    ]
    for run_dirs, message in cases:
        result = run_score(*run_dirs, f"--out={out}")
        assert result.returncode == 2
        # One line: bad directories are found before any progress is shown.
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("error: ")
        assert message in line
        assert sorted(p.name for p in out.iterdir()) == ["metrics.csv"]
        assert (out / "metrics.csv").read_text() == "old\n"
    assert not (tmp_path / "never").exists()
    assert run_score(tmp_path / "missing", f"--out={tmp_path / 'never'}").returncode == 2
    assert not (tmp_path / "never").exists()


def test_a_grids_workdir_or_runs_folder_is_refused_with_the_glob_of_its_runs(tmp_path):
    workdir = tmp_path / "grid"
    make_run(workdir / "runs" / "ce_seed0", 0, features=False)
    (workdir / "runs" / "ls_0.1_seed0").mkdir()  # a run that has started: config.json only
    (workdir / "runs" / "ls_0.1_seed0" / "config.json").write_text("{}")
    (workdir / "report").mkdir()
    out = tmp_path / "out"
    for given, runs_folder in ((workdir, workdir / "runs"), (workdir / "runs", workdir / "runs")):
        result = run_score(given, f"--out={out}")
        assert result.returncode == 2
        assert result.stderr.splitlines() == [
            f"error: {given / 'predictions'}: no such predictions directory; {runs_folder} "
            f"holds run directories: give them as {runs_folder}/*"]
        assert not out.exists()
    # A directory that holds no runs keeps the plain line.
    (tmp_path / "empty").mkdir()
    result = run_score(tmp_path / "empty", f"--out={out}")
    assert result.stderr.splitlines() == [
        f"error: {tmp_path / 'empty' / 'predictions'}: no such predictions directory"]
    # The glob names the run directories, as the shell expands it.
    assert sorted(glob.glob(f"{workdir / 'runs'}/*")) == [
        str(workdir / "runs" / "ce_seed0"), str(workdir / "runs" / "ls_0.1_seed0")]


def test_metrics_files_round_trip(tmp_path):
    rows = [scoring.MetricRow("a", "", "", "accuracy", 0.9),
            scoring.MetricRow("a", "msp", "svhn", "auroc", 1 / 3)]
    scoring.write_metrics(rows, tmp_path / "m")
    assert scoring.read_metrics_csv(tmp_path / "m" / "metrics.csv") == rows
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["metrics.csv", "metrics.md"]
    (tmp_path / "bad.csv").write_text("run,score,metric,value\n")
    with pytest.raises(scoring.ScoringError, match="header"):
        scoring.read_metrics_csv(tmp_path / "bad.csv")


def test_run_names_are_directory_base_names(tmp_path):
    assert scoring.run_name(tmp_path / "runs" / "ls_0.1") == "ls_0.1"
    assert scoring.run_name(f"{tmp_path}/runs/ls_0.1/") == "ls_0.1"


def test_many_runs_scored_together_equal_each_run_scored_alone(tmp_path):
    # 5 runs with features (9 scores each) and 1 without (4 scores): 49 (run, score) groups,
    # which the batched metrics pad to a bucket of 52, so padding between runs is exercised.
    dirs = [tmp_path / f"run{i}" for i in range(6)]
    for i, d in enumerate(dirs):
        make_run(d, seed=10 + i, features=i < 5)
    together = {(r.run, r.score, r.ood, r.metric): r.value
                for r in scoring.score_runs_report(dirs, knn_k=5).rows}
    alone = {(r.run, r.score, r.ood, r.metric): r.value
             for d in dirs for r in scoring.score_runs_report([d], knn_k=5).rows}
    assert together.keys() == alone.keys()
    for key, value in alone.items():
        assert together[key] == pytest.approx(value, abs=1e-12), key


def test_a_second_call_loads_every_program_from_the_cache_and_writes_the_same_bytes(
        runs, tmp_path):
    env = {"SOFTLABEL_OOD_COMPILATION_CACHE": str(tmp_path / "cache")}
    args = [runs["ce"][0], runs["ls_0.1"][0], "--knn_k=5"]
    first = run_score(*args, f"--out={tmp_path / 'a'}", env=env)
    assert first.returncode == 0, first.stderr
    entries = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert entries, "the first call wrote no cache entries"
    second = run_score(*args, f"--out={tmp_path / 'b'}", env=env)
    assert second.returncode == 0, second.stderr
    # Entries are written only on a miss: every program of the second call came from the cache.
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == entries
    for name in ("metrics.csv", "metrics.md"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_v1_run_directories_are_scored_without_head_scores(tmp_path):
    make_run(tmp_path / "old", seed=3, features=True)
    directory = tmp_path / "old" / "predictions"
    manifest = json.loads((directory / "manifest.json").read_text())
    for key in ("head", "odin"):
        manifest.pop(key)
    manifest["format"] = "softlabel_ood.predictions/v1"
    (directory / "manifest.json").write_text(json.dumps(manifest))
    report = scoring.score_runs_report([tmp_path / "old"], knn_k=5)
    assert {r.score for r in report.rows if r.score} == {
        *scoring.LOGIT_SCORES, *scoring.POSTHOC_SCORES, *scoring.FEATURE_SCORES}
    assert report.skipped["old"]["react"] == \
        "skipped: the predictions have no classifier head (format v1)"


def test_the_knn_k_of_each_run_is_stated(tmp_path):
    # 60 id_train examples: the default rule's k is 1; a given k is capped at 60.
    make_run(tmp_path / "run", seed=6, features=True)
    report = scoring.score_runs_report([tmp_path / "run"])
    assert report.notes["run"]["knn"] == (
        "k = 1 (Sun et al.'s k = 50 for 50,000 train examples, scaled to the 60 id_train "
        "examples: one per 1,000, at least 1)")
    train = predictions.read(tmp_path / "run" / "predictions").splits["digits_train"]
    test = predictions.read(tmp_path / "run" / "predictions").splits["digits_test"]
    blobs = predictions.read(tmp_path / "run" / "predictions").splits["blobs"]
    rows = {(r.score, r.ood, r.metric): r.value for r in report.rows}
    expected = scoring.pair_metrics(scoring.knn(test.features, train.features, 1),
                                    scoring.knn(blobs.features, train.features, 1))
    assert rows[("knn", "blobs", "auroc")] == pytest.approx(expected["auroc"], abs=1e-12)
    report = scoring.score_runs_report([tmp_path / "run"], knn_k=100)
    assert report.notes["run"]["knn"] == "k = 60 (as given; 100 capped at the id_train size)"
    scoring.write_metrics(report.rows, tmp_path / "out", notes=report.notes)
    knn_table = (tmp_path / "out" / "metrics.md").read_text().split("### knn")[1]
    assert knn_table.lstrip().startswith("k = 60 (as given")


def test_odin_selection_fixed_from_the_run_config_and_from_the_command_line(tmp_path):
    splits = make_run(tmp_path / "run", seed=7, features=True)
    # On id_train, (1000, 0) now has the highest mean: the rule takes it, "fixed" (1000, 0.0014).
    train = splits["digits_train"]
    splits["digits_train"] = dataclasses.replace(
        train, odin_log_ratio=np.minimum(train.odin_log_ratio * [1, 2, 1], np.log(K)).astype(
            np.float32))
    predictions.write(tmp_path / "run" / "predictions", splits, num_classes=K, run={},
                      odin_pairs=ODIN_PAIRS)

    def odin_auroc(column):
        return scoring.pair_metrics(splits["digits_test"].odin_log_ratio[:, column],
                                    splits["gaussian"].odin_log_ratio[:, column])["auroc"]

    assert odin_auroc(1) != odin_auroc(2)
    (tmp_path / "run" / "config.json").write_text(json.dumps({"odin_selection": "fixed"}))
    report = scoring.score_runs_report([tmp_path / "run"], knn_k=5)
    assert report.notes["run"]["odin"] == "T = 1000, ε = 0.0014 (fixed: OpenOOD's default pair)"
    rows = {(r.score, r.ood, r.metric): r.value for r in report.rows}
    assert rows[("odin", "gaussian", "auroc")] == pytest.approx(odin_auroc(2), abs=1e-12)
    # --odin_selection replaces the stored choice.
    result = run_score(tmp_path / "run", f"--out={tmp_path / 'm'}", "--odin_selection=id_train")
    assert result.returncode == 0, result.stderr
    assert "run: odin T = 1000, ε = 0 (chosen by the rule" in result.stderr
    rows = {(r.score, r.ood, r.metric): r.value
            for r in scoring.read_metrics_csv(tmp_path / "m" / "metrics.csv")}
    assert rows[("odin", "gaussian", "auroc")] == pytest.approx(odin_auroc(1), abs=1e-12)
    # Runs saved without the fixed pair skip odin under "fixed", and say why.
    (tmp_path / "run" / "config.json").write_text(json.dumps({}))
    predictions.write(tmp_path / "run" / "predictions",
                      {n: dataclasses.replace(sp, odin_log_ratio=sp.odin_log_ratio[:, :2])
                       for n, sp in splits.items()}, num_classes=K, run={},
                      odin_pairs=ODIN_PAIRS[:2])
    report = scoring.score_runs_report([tmp_path / "run"], knn_k=5, odin_selection="fixed")
    assert report.skipped["run"]["odin"] == (
        "skipped: odin_selection is fixed, but the predictions hold no pair (T = 1000, "
        "ε = 0.0014)")
    with pytest.raises(scoring.ScoringError, match="odin_selection is 'best', expected one of"):
        scoring.score_runs_report([tmp_path / "run"], odin_selection="best")


def test_v2_run_directories_score_odin_from_their_saved_scores(tmp_path):
    # Format v2 saved the ODIN scores p themselves, in float32, as `odin`: they are still read,
    # and the pair and the metrics come from them as before.
    make_run(tmp_path / "old", seed=5, features=True)
    directory = tmp_path / "old" / "predictions"
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["format"] = "softlabel_ood.predictions/v2"
    (directory / "manifest.json").write_text(json.dumps(manifest))
    saved = {}
    for path in directory.glob("*.npz"):
        with np.load(path) as npz:
            arrays = dict(npz)
        if "odin_log_ratio" in arrays:
            # Quantised to 0.01, so the v2 scores tie where the log-ratios did not.
            p = np.round(np.exp(arrays.pop("odin_log_ratio").astype(np.float64)) / K, 2)
            arrays["odin"] = saved[path.stem] = p.astype(np.float32)
        np.savez(path, **arrays)
    rows = {(r.score, r.ood, r.metric): r.value
            for r in scoring.score_runs_report([tmp_path / "old"], knn_k=5).rows}
    means = saved["digits_train"].astype(np.float64).mean(0)
    column = 1 + int(np.argmax(means[1:]))  # the largest T, then the highest mean
    expected = scoring.pair_metrics(saved["digits_test"][:, column], saved["blobs"][:, column])
    for metric, value in expected.items():
        assert rows[("odin", "blobs", metric)] == pytest.approx(value, abs=1e-12), metric


def test_group_means_from_the_run_config_and_from_the_command_line(tmp_path):
    make_run(tmp_path / "run", seed=4, features=False)
    (tmp_path / "run" / "config.json").write_text(json.dumps(
        {"ood_groups": {"near": ["blobs"], "far": ["gaussian", "blobs"], "none": []}}))
    result = run_score(tmp_path / "run", f"--out={tmp_path / 'a'}")
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "a" / "metrics.md").read_text()
    rows = {(r.score, r.ood, r.metric): r.value
            for r in scoring.read_metrics_csv(tmp_path / "a" / "metrics.csv")}
    msp = text.split("### msp")[1].split("###")[0]
    assert f"| mean (near) | {100 * rows[('msp', 'blobs', 'auroc')]:.2f} |" in msp
    far = (rows[("msp", "gaussian", "auroc")] + rows[("msp", "blobs", "auroc")]) / 2
    assert f"| mean (far) | {100 * far:.2f} |" in msp
    assert "mean (none)" not in text  # a group with no sets is no group
    # --groups replaces the stored groups.
    result = run_score(tmp_path / "run", f"--out={tmp_path / 'b'}", "--groups=all=blobs,gaussian")
    text = (tmp_path / "b" / "metrics.md").read_text()
    assert "| mean (all) |" in text
    assert "mean (near)" not in text
    result = run_score(tmp_path / "run", f"--out={tmp_path / 'c'}", "--groups=near")
    assert result.returncode == 2
    assert "--groups: 'near' is not <group>=<OOD set>" in result.stderr


# Refusals, in process: exit code 2, one line on stderr, --out left as it was.


@pytest.fixture(autouse=True)
def _restore_jax_platforms(monkeypatch):
    # score.main sets JAX_PLATFORMS for its process; in process it must not outlive the test
    # (subprocesses of later tests inherit the environment).
    monkeypatch.setenv("JAX_PLATFORMS", os.environ.get("JAX_PLATFORMS", "cpu"))


def _score_refusal(capsys, *args) -> str:
    from softlabel_ood import score
    assert score.main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    # Progress lines may come first (a refusal found while reading); then one error line.
    assert "Traceback" not in err
    assert err.count("error:") == 1, err
    return err.strip().splitlines()[-1]


def test_out_that_is_a_file_or_under_a_file_is_refused(runs, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert _score_refusal(capsys, runs["ce"][0], f"--out={tmp_path / 'file'}") == \
        f"error: --out: {tmp_path / 'file'} is a file, not a directory"
    assert _score_refusal(capsys, runs["ce"][0], f"--out={tmp_path / 'file' / 'm'}") == \
        f"error: --out: {tmp_path / 'file' / 'm'} is under {tmp_path / 'file'}, which is a file"
    assert (tmp_path / "file").read_text() == "x"


def test_an_unwritable_out_is_refused_before_scoring(runs, tmp_path, capsys, monkeypatch):
    # Tests may run as root, for whom every directory is writable: the check is what is tested.
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    assert _score_refusal(capsys, runs["ce"][0], f"--out={tmp_path / 'm'}") == \
        f"error: --out: {tmp_path} is not writable"


def test_a_full_out_keeps_the_old_metrics(runs, tmp_path, capsys, monkeypatch):
    # The disk fills while the new files are flushed (tests/test_faults.py fills a real one).
    import errno

    out = tmp_path / "m"
    out.mkdir()
    (out / "metrics.csv").write_text("old")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    assert _score_refusal(capsys, runs["ce"][0], f"--out={out}") == \
        f"error: {out}: No space left on device"
    assert (out / "metrics.csv").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary left


def test_an_out_that_holds_other_files_is_refused_before_scoring(runs, tmp_path, capsys):
    # score replaces --out as a whole: a file it did not write there would go with the old one.
    out = tmp_path / "m"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / ".metrics.csv.tmp-1").write_text("a killed per-file write of an earlier version")
    assert _score_refusal(capsys, runs["ce"][0], f"--out={out}") == \
        f"error: --out: {out} holds 'notes.txt', which score does not write (it replaces the " \
        f"directory as a whole); give a directory of its own"
    assert (out / "notes.txt").read_text() == "mine"


def test_an_out_that_is_or_holds_the_current_directory_is_refused(runs, tmp_path, capsys,
                                                                  monkeypatch):
    # Replacing it would leave the shell in a deleted directory.
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    for out in (".", ".."):
        assert _score_refusal(capsys, runs["ce"][0], f"--out={out}") == \
            f"error: --out: {out} is the current directory or holds it, which score would " \
            f"replace as a whole; give a directory of its own"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here"]


def test_an_unknown_platform_is_refused(runs, tmp_path, capsys, monkeypatch):
    import jax
    monkeypatch.setattr(jax, "devices", lambda: (_ for _ in ()).throw(
        RuntimeError("Unable to initialize backend 'foo'")))
    assert _score_refusal(capsys, runs["ce"][0], f"--out={tmp_path / 'm'}", "--platform=foo") \
        == "error: --platform: 'foo' cannot start here (Unable to initialize backend 'foo')"
    assert not (tmp_path / "m").exists()


def _without_head_or_odin(run_dir: pathlib.Path) -> dict[str, Split]:
    """A run with features but neither head nor ODIN arrays (as format v1 has)."""
    splits = {name: dataclasses.replace(split, odin_log_ratio=None)
              for name, split in make_run(run_dir, 0, features=True).items()}
    predictions.write(run_dir / "predictions", splits, num_classes=K, run={})
    return splits


def test_feature_widths_that_differ_between_splits_are_refused(runs, tmp_path, capsys):
    splits = _without_head_or_odin(tmp_path / "r")
    with pytest.raises(predictions.PredictionsError,
                       match=r"split 'gaussian': field 'features' has 5 columns, but split "
                             r"'digits_test' has 3"):
        predictions.write(tmp_path / "w", {**splits, "gaussian": Split(
            "ood_test", splits["gaussian"].logits, splits["gaussian"].labels,
            np.zeros((25, 5), np.float32))}, num_classes=K, run={})
    # Written by another tool: refused when read.
    np.savez(tmp_path / "r" / "predictions" / "gaussian.npz", logits=splits["gaussian"].logits,
             labels=splits["gaussian"].labels, features=np.zeros((25, 5), np.float32))
    assert _score_refusal(capsys, tmp_path / "r", f"--out={tmp_path / 'm'}") == \
        f"error: {tmp_path / 'r' / 'predictions' / 'gaussian.npz'}: field 'features' has 5 " \
        f"columns, but split 'digits_test' has 3"


def test_one_file_listed_under_two_split_names_is_refused(tmp_path, capsys):
    import json
    make_run(tmp_path / "r", 0, features=False)
    path = tmp_path / "r" / "predictions" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["splits"]["blobs"]["file"] = "gaussian.npz"
    manifest["splits"]["blobs"]["num_examples"] = 25
    path.write_text(json.dumps(manifest))
    assert _score_refusal(capsys, tmp_path / "r", f"--out={tmp_path / 'm'}") == \
        f"error: {path}: field 'splits.blobs.file' is 'gaussian.npz', the file of split " \
        f"'gaussian' too"


@pytest.mark.parametrize(("rows", "classes", "message"), [
    (4, range(4), "has 4 rows; the feature scores need every one of the 4 classes and at least "
                  "5 rows"),
    (12, [0, 1, 2], "has 12 rows and no example of class 3; the feature scores need"),
])
def test_an_id_train_split_too_small_for_the_feature_scores_is_refused(
        tmp_path, capsys, rows, classes, message):
    splits = _without_head_or_odin(tmp_path / "r")
    labels = np.resize(np.asarray(list(classes), np.int32), rows)
    splits["digits_train"] = Split("id_train", splits["digits_train"].logits[:rows], labels,
                                   splits["digits_train"].features[:rows])
    predictions.write(tmp_path / "r" / "predictions", splits, num_classes=K, run={})
    line = _score_refusal(capsys, tmp_path / "r", f"--out={tmp_path / 'm'}")
    assert line.startswith(f"error: {tmp_path / 'r' / 'predictions' / 'digits_train.npz'}: "
                           f"id_train split {message}"), line
    assert not (tmp_path / "m").exists()


def test_selective_rows_for_every_score_and_pnorm_with_the_run_configs_p(tmp_path):
    splits = make_run(tmp_path / "run", seed=3, features=True)
    test = splits["digits_test"]
    correct = scoring.predicted_class(test.logits) == test.labels
    assert 0 < correct.sum() < len(correct)

    def rows_of(report):
        return {(r.score, r.ood, r.metric): r.value for r in report.rows}

    rows = rows_of(scoring.score_runs_report([tmp_path / "run"], knn_k=5))
    knn = scoring.knn(test.features, splits["digits_train"].features, 5)
    for score, values in [("msp", scoring.logit_scores(test.logits)["msp"]), ("knn", knn),
                          ("pnorm", scoring.pnorm(test.logits, 2.0))]:
        expected = scoring.selective_metrics(values[None], correct[None])
        for metric in scoring.SELECTIVE_METRICS:
            assert rows[(score, "", metric)] == pytest.approx(expected[metric][0], abs=1e-12)
    # Every computed score has its four selective rows.
    assert {s for s, o, _ in rows if s and not o} == {s for s, o, _ in rows if o}
    # pnorm's p from config.json, and from the caller, which replaces it.
    (tmp_path / "run" / "config.json").write_text(json.dumps({"pnorm_p": 5}))
    report = scoring.score_runs_report([tmp_path / "run"], knn_k=5)
    assert report.notes["run"]["pnorm"] == "p = 5"
    expected = scoring.pair_metrics(scoring.pnorm(test.logits, 5),
                                    scoring.pnorm(splits["gaussian"].logits, 5))
    assert rows_of(report)[("pnorm", "gaussian", "auroc")] == pytest.approx(expected["auroc"],
                                                                            abs=1e-12)
    assert scoring.score_runs_report([tmp_path / "run"], knn_k=5, pnorm_p=2).notes["run"][
        "pnorm"] == "p = 2"
    (tmp_path / "run" / "config.json").write_text(json.dumps({"pnorm_p": 0.5}))
    with pytest.raises(scoring.ScoringError, match=r"config.json: pnorm_p: must be a finite"):
        scoring.score_runs_report([tmp_path / "run"], knn_k=5)
