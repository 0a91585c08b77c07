"""`python -m softlabel_ood.import_outputs`: a model's saved arrays as a run directory that `score`
reads, and every kind of bad input refused in one line naming the file and array, with nothing
written."""

from __future__ import annotations

import csv
import json
import os
import pathlib
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from softlabel_ood import import_outputs, scoring
from softlabel_ood.workdir import predictions, run_dir, trained_steps
from tests.train_helpers import REPO, refusal, snapshot

K, D = 4, 6


def _split(rng, n, shift, *, labels=True, features=True):
    y = rng.integers(0, K, n)
    # Logits saved in float64 and labels in int64, as a PyTorch model's .numpy() gives them;
    # quantized so that scores tie.
    arrays = {"logits": np.round(rng.normal(size=(n, K)) + shift * np.eye(K)[y], 1)}
    if labels:
        arrays["labels"] = y
    if features:
        arrays["features"] = rng.normal(size=(n, D)) + shift * np.eye(K, D)[y]
    return arrays


@pytest.fixture
def sources(tmp_path):
    """Files of one model: ID test and train with features, two OOD sets (.npz with features,
    .npy of logits), the head."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "saved"
    folder.mkdir()
    np.savez(folder / "test.npz", **_split(rng, 60, 2.0))
    np.savez(folder / "train.npz", **_split(rng, 80, 2.0))
    np.savez(folder / "svhn.npz", **_split(rng, 30, 0.5, labels=False))
    np.save(folder / "noise.npy", _split(rng, 20, 0.0, labels=False)["logits"])
    np.savez(folder / "head.npz", kernel=rng.normal(size=(D, K)), bias=rng.normal(size=K))
    return folder


def _argv(sources, out, **extra):
    argv = [f"--out={out}", f"--id_test={sources / 'test.npz'}",
            f"--id_train={sources / 'train.npz'}", "--ood", f"svhn={sources / 'svhn.npz'}",
            "--ood", f"noise={sources / 'noise.npy'}", f"--head={sources / 'head.npz'}"]
    return argv + [f"--{k}={v}" for k, v in extra.items()]


def _arrays(path):
    with np.load(path) as f:
        return dict(f)


def test_the_run_directory_holds_the_arrays_in_the_format_with_their_sources(sources, tmp_path,
                                                                           capsys):
    out = tmp_path / "runs" / "mine_seed3"
    assert import_outputs.main(_argv(sources, out, ood_groups="far=svhn,noise")) == 0
    assert "wrote" in capsys.readouterr().err
    preds = predictions.read(run_dir.predictions_path(out))  # validated as train's output is
    assert list(preds.splits) == ["id_test", "id_train", "svhn", "noise"]
    assert [s.role for s in preds.splits.values()] == ["id_test", "id_train", "ood_test",
                                                       "ood_test"]
    test = _arrays(sources / "test.npz")
    np.testing.assert_array_equal(preds.splits["id_test"].logits,
                                  test["logits"].astype(np.float32))
    assert preds.splits["id_test"].labels.dtype == np.int32
    np.testing.assert_array_equal(preds.splits["id_test"].labels, test["labels"])
    np.testing.assert_array_equal(preds.splits["noise"].labels, -1)
    assert preds.splits["noise"].features is None
    assert preds.splits["svhn"].features.shape == (30, D)
    np.testing.assert_array_equal(preds.head.kernel,
                                  _arrays(sources / "head.npz")["kernel"].astype(np.float32))
    # The run block: seed from --out's name, and each source file with its SHA-256.
    import hashlib
    manifest = predictions.read_manifest(run_dir.predictions_path(out))
    assert manifest["run"]["seed"] == 3
    imported = manifest["run"]["imported"]
    assert imported["splits"]["noise"] == {
        "file": str(sources / "noise.npy"),
        "sha256": hashlib.sha256((sources / "noise.npy").read_bytes()).hexdigest()}
    assert imported["head"]["file"] == str(sources / "head.npz")
    # The groups where score reads them; imported outputs count as the finished model's.
    assert run_dir.read_config(out) == {"ood_groups": {"far": ["svhn", "noise"]}}
    assert trained_steps.unfinished(manifest, done=False) == (False, None)


def test_score_reads_it_unchanged_with_groups_and_every_feature_and_head_score(sources,
                                                                              tmp_path):
    out = tmp_path / "runs" / "mine"
    import_outputs.main(_argv(sources, out, ood_groups="near=svhn;far=noise"))
    scored = tmp_path / "scores"
    done = subprocess.run([sys.executable, "-m", "softlabel_ood.score", str(out),
                           f"--out={scored}"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert done.returncode == 0, done.stderr
    with open(scored / "metrics.csv", newline="") as f:
        rows = list(csv.reader(f))[1:]
    scores_done = {r[1] for r in rows if r[1]}
    # noise has no features: the feature and head scores are skipped, one stderr line each.
    assert scores_done == {"msp", "max_logit", "energy", "entropy", "pnorm"}
    skipped = [line for line in done.stderr.splitlines() if " skipped: " in line]
    assert sorted(line.split()[1] for line in skipped) == ["knn", "mahalanobis", "odin", "react",
                                                            "vim"]
    assert "unfinished" not in done.stderr
    assert "steps unknown" not in done.stderr
    assert "mean (near)" in (scored / "metrics.md").read_text()
    # With features on every split the four feature and head scores run.
    np.savez(sources / "noise.npz", **_split(np.random.default_rng(1), 20, 0.0, labels=False))
    argv = [a.replace("noise.npy", "noise.npz") for a in _argv(sources, out)]
    import_outputs.main(argv)
    report = scoring.score_runs_report([out])
    assert {r.score for r in report.rows if r.score} == {
        "msp", "max_logit", "energy", "entropy", "pnorm", "mahalanobis", "knn", "react", "vim"}
    assert list(report.skipped["mine"]) == ["odin"]
    assert report.unfinished == {}


def test_it_replaces_an_earlier_import_as_a_whole_and_nothing_else(sources, tmp_path, capsys):
    out = tmp_path / "mine"
    import_outputs.main(_argv(sources, out, ood_groups="far=noise"))
    argv = [f"--out={out}", f"--id_test={sources / 'test.npz'}",
            "--ood", f"svhn={sources / 'svhn.npz'}"]
    import_outputs.main(argv)
    assert sorted(p.name for p in (out / "predictions").iterdir()) == [
        "id_test.npz", "manifest.json", "svhn.npz"]
    assert run_dir.read_config(out) == {"ood_groups": {}}
    # A trained run's directory (checkpoints, metrics) is not the import's to replace.
    (out / "checkpoints").mkdir()
    before = snapshot(out)
    capsys.readouterr()
    assert refusal(capsys, lambda: import_outputs.main(argv)) == (
        f"error: --out: {out} holds 'checkpoints', which an import does not write (it replaces "
        "the directory as a whole); choose a new directory")
    assert snapshot(out) == before


# ---------------------------------------------------------------------------------------------
# Bad input: exit code 2, one line naming the file and the array, nothing written.


def _npy_header_only(path, shape, descr="<f4"):
    """An .npy file whose header claims `shape` (no data: the bounds are checked first)."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": descr, "fortran_order": False, "shape": shape})


def _bad_cases(s: pathlib.Path):
    """name -> (what to change in the files and flags, the line expected after `error: `)."""
    rng = np.random.default_rng(5)

    def save(name, **arrays):
        np.savez(s / name, **arrays)
        return s / name

    def ood(name, **arrays):  # the svhn split's file replaced
        return {"--ood": f"svhn={save(name, **arrays)}"}

    test = _split(rng, 60, 2.0)
    return {
        "classes differ": (lambda: ood('k.npz', logits=np.ones((5, K + 1))),
                           f"{s / 'k.npz'}: array 'logits' has {K + 1} columns (classes), but "
                           f"{s / 'test.npz'}: array 'logits' has {K}"),
        "label outside": (lambda: {"--id_test": save('l.npz', **{**test, "labels": np.r_[
            test["labels"][:-1], K]})},
                          f"{s / 'l.npz'}: array 'labels' has value {K} outside [0, K = {K})"),
        "negative label": (lambda: {"--id_train": save('l.npz', **{**test, "labels": np.r_[
            -1, test["labels"][1:]]})},
                           f"{s / 'l.npz'}: array 'labels' has value -1 outside [0, K = {K})"),
        "float labels": (lambda: {"--id_test": save('l.npz', **{
            **test, "labels": test["labels"].astype(float)})},
                         f"{s / 'l.npz'}: array 'labels' has dtype float64, expected integers "
                         "(class indices [N])"),
        "nan logits": (lambda: {"--id_test": save('n.npz', **{
            **test, "logits": np.where(np.eye(60, K, dtype=bool), np.nan, test["logits"])})},
                       f"{s / 'n.npz'}: array 'logits' has {K} NaN or infinite values"),
        "inf features": (lambda: ood('n.npz', logits=np.ones((5, K)),
                                              features=np.full((5, D), np.inf)),
                         f"{s / 'n.npz'}: array 'features' has {5 * D} NaN or infinite values"),
        "beyond float32": (lambda: ood('n.npz', logits=np.full((5, K), 1e300)),
                           f"{s / 'n.npz'}: array 'logits' has {5 * K} NaN or infinite values "
                           "(or beyond float32's range)"),
        "empty split": (lambda: ood('e.npz', logits=np.zeros((0, K))),
                        f"{s / 'e.npz'}: array 'logits' is empty (0 rows)"),
        "feature widths": (lambda: ood('w.npz', logits=np.ones((5, K)),
                                                features=np.ones((5, D + 1))),
                           f"{s / 'w.npz'}: array 'features' has {D + 1} columns, but "
                           f"{s / 'test.npz'}: array 'features' has {D}"),
        "head kernel": (lambda: {"--head": save('h.npz', kernel=np.ones((D, K + 1)),
                                                bias=np.ones(K))},
                        f"{s / 'h.npz'}: array 'kernel' has shape ({D}, {K + 1}), expected "
                        f"[D = {D} (the features' width), K = {K}]"),
        "head bias": (lambda: {"--head": save('h.npz', kernel=np.ones((D, K)), bias=np.ones(2))},
                      f"{s / 'h.npz'}: array 'bias' has shape (2,), expected [K = {K}]"),
        "duplicate name": (lambda: {"--ood": f"noise={s / 'svhn.npz'}"},
                           "--ood noise: split name 'noise' is given twice"),
        "role name": (lambda: {"--ood": f"id_train={s / 'svhn.npz'}"},
                      "--ood id_train: split name 'id_train' is reserved (the names id_test, "
                      "ood_test, id_train, head are the ID splits' and roles')"),
        "head name": (lambda: {"--ood": f"head={s / 'svhn.npz'}"},
                      "--ood head: split name 'head' is reserved (the names id_test, ood_test, "
                      "id_train, head are the ID splits' and roles')"),
        "not npz or npy": (lambda: {"--ood": f"svhn={s / 'svhn.pt'}"},
                           f"{s / 'svhn.pt'}: neither .npz nor .npy (save arrays with np.savez "
                           "or np.save)"),
        "pickle inside": (lambda: {"--id_test": save('p.npz', **{
            **test, "labels": np.array(list(test["labels"]), dtype=object)})},
                          f"{s / 'p.npz'}: array 'labels' holds Python objects (a pickle), which "
                          "are never loaded; save numeric arrays"),
        "npy for an ID split": (lambda: {"--id_test": str(s / "noise.npy")},
                                f"{s / 'noise.npy'}: array 'labels' is missing (the id_test "
                                "split needs the class of each example)"),
        "too many rows": (lambda: _npy_header_only(s / "big.npy", (2**31, K))
                          or {"--ood": f"svhn={s / 'big.npy'}"},
                          f"{s / 'big.npy'}: array 'logits' has shape ({2**31}, {K}), beyond the "
                          "bounds of 2,147,483,647 rows and 1,048,576 columns"),
        "too many bytes": (lambda: _npy_header_only(s / "big.npy", (2**30, 9))
                           or {"--ood": f"svhn={s / 'big.npy'}"},
                           f"{s / 'big.npy'}: array 'logits' has shape ({2**30}, 9), more than "
                           "32 GiB as float32"),
        "scores not logits": (lambda: ood('c.npz', logits=np.ones((5, 1))),
                              f"{s / 'c.npz'}: array 'logits' has shape (5, 1): a classifier "
                              "has at least 2 classes (logits [N, K], not scores [N, 1])"),
    }


CASES = list(_bad_cases(pathlib.Path("/")))


def _with(argv, changes):
    """argv with each flag of `changes` given its new value (--ood: the svhn entry)."""
    out = list(argv)
    for flag, value in changes.items():
        if flag == "--ood":
            out[out.index("--ood") + 1] = value
        else:
            i = next(i for i, a in enumerate(out) if a.startswith(f"{flag}="))
            out[i] = f"{flag}={value}"
    return out


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_refused_in_one_line_naming_file_and_array(case, sources, tmp_path, capsys):
    change, expected = _bad_cases(sources)[case]
    out = tmp_path / "runs" / "mine"
    before = snapshot(tmp_path / "runs")
    argv = _with(_argv(sources, out), change())
    assert refusal(capsys, lambda: import_outputs.main(argv)) == f"error: {expected}"
    assert snapshot(tmp_path / "runs") == before


def test_an_earlier_import_is_left_as_it_was_by_a_refused_one(sources, tmp_path, capsys):
    out = tmp_path / "mine"
    import_outputs.main(_argv(sources, out))
    before = snapshot(out)
    np.savez(sources / "bad.npz", logits=np.full((5, K), np.nan))
    capsys.readouterr()
    argv = _with(_argv(sources, out), {"--ood": f"svhn={sources / 'bad.npz'}"})
    assert refusal(capsys, lambda: import_outputs.main(argv)).startswith(
        f"error: {sources / 'bad.npz'}: array 'logits' has {5 * K} NaN")
    assert snapshot(out) == before


def test_a_damaged_npz_and_bad_flags_are_refused_in_one_line(sources, tmp_path, capsys):
    (sources / "cut.npz").write_bytes((sources / "svhn.npz").read_bytes()[:100])
    out = tmp_path / "mine"
    for change, expected in [
            ({"--ood": f"svhn={sources / 'cut.npz'}"}, f"{sources / 'cut.npz'}: not a readable "
             ".npz file (File is not a zip file)"),
            ({"--ood": "svhn"}, "--ood: 'svhn' is not <name>=<file>"),
            ({"--ood": f"svhn={sources / 'none.npz'}"}, f"{sources / 'none.npz'}: no such file"),
            ({"--ood_groups": "far=svhn,cifar"}, "--ood_groups: group 'far' names 'cifar', "
             "which the predictions of run mine do not hold (OOD sets: svhn, noise)"),
            ({"--head": str(sources / "noise.npy")}, f"{sources / 'noise.npy'}: not an .npz (the "
             "head is an .npz with arrays 'kernel' and 'bias')"),
            ({"--out": sources / "test.npz" / "mine"}, f"--out: {sources / 'test.npz'} is not a "
             "writable directory")]:
        argv = _with(_argv(sources, out, ood_groups="far=svhn"), change)
        assert refusal(capsys, lambda argv=argv: import_outputs.main(argv)) == f"error: {expected}"
    assert not out.exists()
    assert zipfile.is_zipfile(sources / "svhn.npz")


def test_a_malformed_imported_block_is_refused_on_read(sources, tmp_path):
    out = tmp_path / "mine"
    import_outputs.main(_argv(sources, out))
    manifest_path = run_dir.predictions_path(out) / run_dir.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["run"]["imported"]["splits"]["svhn"]["sha256"] = "not a digest"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(predictions.PredictionsError, match=r"field 'run.imported.splits.svhn' "
                       r"is .*expected \{\"file\": <name>, \"sha256\": <64 hex digits>\}"):
        predictions.read_manifest(run_dir.predictions_path(out))


def test_predict_and_a_teacher_refuse_imported_outputs_in_one_line(sources, tmp_path, capsys):
    from softlabel_ood import predict
    from softlabel_ood.workdir import saved_runs

    out = tmp_path / "mine"
    import_outputs.main(_argv(sources, out))
    capsys.readouterr()
    expected = (f"error: {out}: holds imported outputs (import_outputs), not a run trained here: "
                "there is no model to predict with, teach or fine-tune")
    assert refusal(capsys, lambda: predict._stored_config_from_argv(
        ["predict", f"--workdir={out}"])) == expected
    assert refusal(capsys, lambda: saved_runs.read_config(out)) == expected


def test_train_refuses_to_write_over_imported_outputs(sources, tmp_path, capsys):
    from softlabel_ood import train
    from tests.train_helpers import tiny_digits_config

    out = tmp_path / "mine"
    import_outputs.main(_argv(sources, out))
    capsys.readouterr()
    before = snapshot(out)
    assert refusal(capsys, lambda: train.train_and_evaluate(tiny_digits_config("ce"), str(out))) \
        == (f"error: {out}: holds imported outputs (import_outputs), not a run trained here: "
            "there is no model to predict with, teach or fine-tune")
    assert snapshot(out) == before


def test_compressed_files_and_other_dtypes_and_orders_are_stored_in_the_formats(tmp_path):
    rng = np.random.default_rng(2)
    logits, labels = rng.normal(size=(30, K)).astype(">f4"), rng.integers(0, K, 30).astype(">u2")
    ood = np.asfortranarray(rng.normal(size=(12, K)).astype(np.float16))
    np.savez_compressed(tmp_path / "test.npz", logits=logits, labels=labels)
    np.save(tmp_path / "ood.npy", ood)
    import_outputs.main([f"--out={tmp_path / 'mine'}", f"--id_test={tmp_path / 'test.npz'}",
                         "--ood", f"ood={tmp_path / 'ood.npy'}"])
    preds = predictions.read(run_dir.predictions_path(tmp_path / "mine"))
    np.testing.assert_array_equal(preds.splits["id_test"].logits, logits.astype(np.float32))
    np.testing.assert_array_equal(preds.splits["id_test"].labels, labels.astype(np.int32))
    np.testing.assert_array_equal(preds.splits["ood"].logits, ood.astype(np.float32))
    assert preds.splits["ood"].logits.flags["C_CONTIGUOUS"]
