"""The predictions format: round trips, atomic writes, and every validation error's message."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest

from softlabel_ood.workdir import predictions, trained_steps
from softlabel_ood.workdir.predictions import PredictionsError, Split

K = 3


def _splits(features: bool = True) -> dict[str, Split]:
    rng = np.random.default_rng(0)

    def split(role, n):
        labels = (np.full(n, -1) if role == "ood_test" else rng.integers(0, K, n)).astype(np.int32)
        return Split(role=role, logits=rng.normal(size=(n, K)).astype(np.float32), labels=labels,
                     features=rng.normal(size=(n, 2)).astype(np.float32) if features else None)

    return {"cifar_test": split("id_test", 4), "cifar_train": split("id_train", 5),
            "svhn": split("ood_test", 3), "noise": split("ood_test", 2)}


@pytest.fixture
def pred_dir(tmp_path):
    directory = tmp_path / "run" / "predictions"
    predictions.write(directory, _splits(), num_classes=K, run={"method": "ls", "alpha": 0.1})
    return directory


def test_round_trip_keeps_arrays_order_and_run(pred_dir):
    preds = predictions.read(pred_dir)
    assert preds.num_classes == K
    assert preds.run == {"method": "ls", "alpha": 0.1}
    assert list(preds.splits) == ["cifar_test", "cifar_train", "svhn", "noise"]
    assert preds.names("ood_test") == ["svhn", "noise"]
    assert preds.id_test_name == "cifar_test"
    assert preds.directory == pred_dir
    for name, split in _splits().items():
        got = preds.splits[name]
        assert got.role == split.role
        for field in ("logits", "labels", "features"):
            np.testing.assert_array_equal(getattr(got, field), getattr(split, field))
            assert getattr(got, field).dtype == getattr(split, field).dtype
    manifest = json.loads((pred_dir / "manifest.json").read_text())
    assert manifest["format"] == predictions.FORMAT
    assert manifest["splits"]["svhn"] == {"file": "svhn.npz", "role": "ood_test",
                                          "num_examples": 3}


def test_features_are_optional_and_can_be_skipped_on_read(tmp_path, pred_dir):
    assert predictions.read(pred_dir, features=False).splits["svhn"].features is None
    predictions.write(tmp_path / "p", _splits(features=False), num_classes=K, run={})
    assert predictions.read(tmp_path / "p").splits["svhn"].features is None
    predictions.validate(tmp_path / "p")


def test_write_leaves_no_temporary_files(pred_dir):
    assert sorted(p.name for p in pred_dir.iterdir()) == [
        "cifar_test.npz", "cifar_train.npz", "manifest.json", "noise.npz", "svhn.npz"]


def test_invalid_splits_are_rejected_before_anything_is_written(tmp_path):
    splits = _splits()
    splits["svhn"] = Split("ood_test", splits["svhn"].logits.astype(np.float64),
                           splits["svhn"].labels)
    with pytest.raises(PredictionsError, match="split 'svhn': field 'logits' has dtype float64"):
        predictions.write(tmp_path / "p", splits, num_classes=K, run={})
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize(("change", "message"), [
    (lambda s: s.pop("cifar_test"), "exactly one id_test split, found 0"),
    (lambda s: s.update(other=Split("id_test", s["cifar_test"].logits, s["cifar_test"].labels)),
     "exactly one id_test split, found 2 (cifar_test, other)"),
    (lambda s: s.update(svhn=Split("test", s["svhn"].logits, s["svhn"].labels)),
     "split 'svhn': field 'role' is 'test', expected one of id_test, ood_test, id_train"),
    (lambda s: s.update(bad=Split("ood_test", np.zeros((0, K), np.float32),
                                  np.zeros(0, np.int32))),
     "split 'bad': field 'logits' is empty"),
    (lambda s: s.update({"a/b": s["svhn"]}), "split name 'a/b' is not a plain file-name stem"),
])
def test_write_rejects_bad_splits(tmp_path, change, message):
    splits = _splits()
    change(splits)
    with pytest.raises(PredictionsError, match=re.escape(message)):
        predictions.write(tmp_path / "p", splits, num_classes=K, run={})


def test_write_rejects_unserializable_run_and_bad_num_classes(tmp_path):
    with pytest.raises(PredictionsError, match="run: not JSON-serializable"):
        predictions.write(tmp_path / "p", _splits(), num_classes=K, run={"x": object()})
    with pytest.raises(PredictionsError, match="field 'num_classes' is 0"):
        predictions.write(tmp_path / "p", _splits(), num_classes=0, run={})


def _rewrite_npz(path, **changes):
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays.update(changes)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)


def _edit_manifest(directory, edit):
    manifest = json.loads((directory / "manifest.json").read_text())
    edit(manifest)
    (directory / "manifest.json").write_text(json.dumps(manifest))


# Each case breaks a valid directory in one way; the message names the file and the field.
FILE_CASES = {
    "missing manifest": (lambda d: (d / "manifest.json").unlink(),
                         "manifest.json: missing"),
    "not json": (lambda d: (d / "manifest.json").write_text("{"),
                 "manifest.json: not valid JSON"),
    "wrong format": (lambda d: _edit_manifest(d, lambda m: m.update(format="v0")),
                     "manifest.json: field 'format' is 'v0', expected one of "
                     "'softlabel_ood.predictions/v1', 'softlabel_ood.predictions/v2', "
                     "'softlabel_ood.predictions/v3'"),
    "bad num_classes": (lambda d: _edit_manifest(d, lambda m: m.update(num_classes="3")),
                        "manifest.json: field 'num_classes' is '3'"),
    "missing split file": (lambda d: (d / "svhn.npz").unlink(),
                           "svhn.npz: missing (listed in the manifest)"),
    "not an npz": (lambda d: (d / "svhn.npz").write_bytes(b"garbage"),
                   "svhn.npz: not a readable .npz file"),
    "missing field": (lambda d: _rewrite_npz(d / "svhn.npz", labels=None),
                      "svhn.npz: field 'labels' is missing"),
    "logits dtype": (lambda d: _rewrite_npz(d / "svhn.npz", logits=np.zeros((3, K))),
                     "svhn.npz: field 'logits' has dtype float64, expected float32"),
    "labels dtype": (lambda d: _rewrite_npz(d / "svhn.npz", labels=np.full(3, -1)),
                     "svhn.npz: field 'labels' has dtype int64, expected int32"),
    "features dtype": (lambda d: _rewrite_npz(d / "svhn.npz", features=np.zeros((3, 2))),
                       "svhn.npz: field 'features' has dtype float64, expected float32"),
    "logits shape": (lambda d: _rewrite_npz(d / "svhn.npz", logits=np.zeros(3, np.float32)),
                     "svhn.npz: field 'logits' has shape (3,), expected 2 dimensions"),
    "lengths differ": (lambda d: _rewrite_npz(d / "svhn.npz", labels=np.full(2, -1, np.int32)),
                       "svhn.npz: field 'labels' has 2 entries, but 'logits' has 3 rows"),
    "features length": (lambda d: _rewrite_npz(d / "svhn.npz",
                                               features=np.zeros((4, 2), np.float32)),
                        "svhn.npz: field 'features' has 4 rows, but 'logits' has 3"),
    "columns": (lambda d: _rewrite_npz(d / "svhn.npz", logits=np.zeros((3, 4), np.float32)),
                "svhn.npz: field 'logits' has 4 columns, expected num_classes = 3"),
    "num_examples": (lambda d: _edit_manifest(
        d, lambda m: m["splits"]["svhn"].update(num_examples=5)),
        "svhn.npz: field 'logits' has 3 rows, but the manifest's num_examples is 5"),
    "nan logits": (lambda d: _rewrite_npz(d / "svhn.npz", logits=np.full((3, K), np.nan,
                                                                         np.float32)),
                   "svhn.npz: field 'logits' has 9 NaN or Inf values"),
    "inf features": (lambda d: _rewrite_npz(d / "svhn.npz", features=np.array(
        [[np.inf, 0], [0, 0], [0, 0]], np.float32)),
        "svhn.npz: field 'features' has 1 NaN or Inf values"),
    "label out of range": (lambda d: _rewrite_npz(d / "cifar_test.npz",
                                                  labels=np.array([0, 1, 3, 0], np.int32)),
                           "cifar_test.npz: field 'labels' has value 3 outside [0, 3) in a "
                           "id_test split"),
    "negative train label": (lambda d: _rewrite_npz(
        d / "cifar_train.npz", labels=np.array([0, -1, 0, 0, 0], np.int32)),
        "cifar_train.npz: field 'labels' has value -1 outside [0, 3)"),
    "ood labels": (lambda d: _rewrite_npz(d / "svhn.npz", labels=np.array([-1, 2, -1], np.int32)),
                   "svhn.npz: field 'labels' must be -1 everywhere in an ood_test split, "
                   "found 2"),
    "empty split": (lambda d: (_rewrite_npz(d / "svhn.npz", logits=np.zeros((0, K), np.float32),
                                            labels=np.zeros(0, np.int32),
                                            features=np.zeros((0, 2), np.float32)),
                               _edit_manifest(d, lambda m: m["splits"]["svhn"].update(
                                   num_examples=0))),
                    "svhn.npz: field 'logits' is empty (0 examples)"),
    "no id_test": (lambda d: _edit_manifest(
        d, lambda m: m["splits"]["cifar_test"].update(role="ood_test")),
        "manifest.json: field 'splits' must have exactly one id_test split, found 0"),
    "two id_test": (lambda d: _edit_manifest(
        d, lambda m: m["splits"]["svhn"].update(role="id_test")),
        "manifest.json: field 'splits' must have exactly one id_test split, found 2"),
    "unknown role": (lambda d: _edit_manifest(
        d, lambda m: m["splits"]["svhn"].update(role="ood")),
        "manifest.json: field 'splits.svhn.role' is 'ood', expected one of"),
    "file outside": (lambda d: _edit_manifest(
        d, lambda m: m["splits"]["svhn"].update(file="../svhn.npz")),
        "manifest.json: field 'splits.svhn.file' is '../svhn.npz'"),
    "missing entry field": (lambda d: _edit_manifest(
        d, lambda m: m["splits"]["svhn"].pop("num_examples")),
        "manifest.json: field 'splits.svhn.num_examples' is None"),
}


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_validation_errors_name_the_file_and_field(pred_dir, case):
    breaks, message = FILE_CASES[case]
    breaks(pred_dir)
    with pytest.raises(PredictionsError) as error:
        predictions.validate(pred_dir)
    text = str(error.value)
    assert message in text
    assert "\n" not in text


PAIRS = ((1.0, 0.0), (1000.0, 0.0014))


def _v3_splits() -> dict[str, Split]:
    rng = np.random.default_rng(1)
    return {name: dataclasses.replace(split, odin_log_ratio=rng.uniform(
        0, np.log(K), (len(split.labels), len(PAIRS))).astype(np.float32))
        for name, split in _splits().items()}


def _head() -> predictions.Head:
    rng = np.random.default_rng(2)
    return predictions.Head(rng.normal(size=(2, K)).astype(np.float32),
                            rng.normal(size=K).astype(np.float32))


@pytest.fixture
def v3_dir(tmp_path):
    directory = tmp_path / "run" / "predictions"
    predictions.write(directory, _v3_splits(), num_classes=K, run={}, head=_head(),
                      odin_pairs=PAIRS)
    return directory


def as_v2(directory):
    """Rewrites a v3 directory as format v2 wrote it: the ODIN scores themselves, as `odin`."""
    _edit_manifest(directory, lambda m: m.update(format="softlabel_ood.predictions/v2"))
    for path in directory.glob("*.npz"):
        with np.load(path) as npz:
            arrays = dict(npz)
        if "odin_log_ratio" in arrays:
            arrays["odin"] = (np.exp(arrays.pop("odin_log_ratio").astype(np.float64)) / K
                              ).astype(np.float32)
        np.savez(path, **arrays)


def test_v3_round_trip_with_head_and_odin(v3_dir):
    manifest = json.loads((v3_dir / "manifest.json").read_text())
    assert manifest["format"] == "softlabel_ood.predictions/v3"
    assert manifest["head"] == {"file": "head.npz"}
    assert manifest["odin"] == {"pairs": [[1.0, 0.0], [1000.0, 0.0014]]}
    with np.load(v3_dir / "svhn.npz") as npz:
        assert sorted(npz.files) == ["features", "labels", "logits", "odin_log_ratio"]
    preds = predictions.read(v3_dir)
    assert preds.odin_pairs == PAIRS
    np.testing.assert_array_equal(preds.head.kernel, _head().kernel)
    np.testing.assert_array_equal(preds.head.bias, _head().bias)
    for name, split in _v3_splits().items():
        got = preds.splits[name]
        np.testing.assert_array_equal(got.odin_log_ratio, split.odin_log_ratio)
        assert got.odin is None
        # The scores themselves: p = exp(log(K p)) / K; the ranking values are the log-ratios.
        np.testing.assert_allclose(got.odin_max_softmax(),
                                   np.exp(split.odin_log_ratio.astype(np.float64)) / K)
        np.testing.assert_array_equal(got.odin_ranking(), split.odin_log_ratio)
    assert sorted(p.name for p in v3_dir.iterdir()) == sorted(
        ["manifest.json", "head.npz", *(f"{n}.npz" for n in _splits())])


def test_v2_directories_are_still_read(v3_dir):
    as_v2(v3_dir)
    preds = predictions.read(v3_dir)
    assert preds.odin_pairs == PAIRS
    for name, split in _v3_splits().items():
        got = preds.splits[name]
        assert got.odin_log_ratio is None
        expected = (np.exp(split.odin_log_ratio.astype(np.float64)) / K).astype(np.float32)
        np.testing.assert_array_equal(got.odin, expected)
        np.testing.assert_array_equal(got.odin_max_softmax(), expected)
        np.testing.assert_array_equal(got.odin_ranking(), expected)
    from softlabel_ood.scoring import odin_selection
    assert odin_selection.choose_from_directory(v3_dir) == odin_selection.choose_for(preds)


def test_v1_directories_are_still_read(pred_dir):
    # A v1 manifest as v1 wrote it: the same fields, no head and no ODIN arrays.
    _edit_manifest(pred_dir, lambda m: m.update(format="softlabel_ood.predictions/v1"))
    preds = predictions.read(pred_dir)
    assert preds.head is None
    assert preds.odin_pairs == ()
    assert all(split.odin is None and split.odin_log_ratio is None
               for split in preds.splits.values())
    np.testing.assert_array_equal(preds.splits["svhn"].logits, _splits()["svhn"].logits)


V3_CASES = {
    "kernel dtype": (lambda d: _rewrite_npz(d / "head.npz", kernel=np.zeros((2, K))),
                     "head.npz: field 'kernel' has dtype float64, expected float32"),
    "kernel columns": (lambda d: _rewrite_npz(d / "head.npz",
                                              kernel=np.zeros((2, K + 1), np.float32)),
                       "head.npz: field 'kernel' has shape (2, 4), expected [D, num_classes = 3]"),
    "bias length": (lambda d: _rewrite_npz(d / "head.npz", bias=np.zeros(2, np.float32)),
                    "head.npz: field 'bias' has 2 entries, expected num_classes = 3"),
    "nan kernel": (lambda d: _rewrite_npz(d / "head.npz", kernel=np.full((2, K), np.nan,
                                                                         np.float32)),
                   "head.npz: field 'kernel' has 6 NaN or Inf values"),
    "head vs features": (lambda d: _rewrite_npz(d / "head.npz",
                                                kernel=np.zeros((5, K), np.float32)),
                         "cifar_test.npz: field 'features' has 2 columns, but the head's kernel "
                         "has 5 rows"),
    "missing head file": (lambda d: (d / "head.npz").unlink(),
                          "head.npz: missing (listed in the manifest)"),
    "head outside": (lambda d: _edit_manifest(d, lambda m: m["head"].update(file="../h.npz")),
                     "manifest.json: field 'head.file' is '../h.npz'"),
    "missing odin": (lambda d: _rewrite_npz(d / "svhn.npz", odin_log_ratio=None),
                     "svhn.npz: field 'odin_log_ratio' is missing (the manifest lists 2 ODIN "
                     "pairs)"),
    "odin shape": (lambda d: _rewrite_npz(d / "svhn.npz",
                                          odin_log_ratio=np.full((3, 1), 0.5, np.float32)),
                   "svhn.npz: field 'odin_log_ratio' has shape (3, 1), expected (3, 2)"),
    "odin dtype": (lambda d: _rewrite_npz(d / "svhn.npz", odin_log_ratio=np.full((3, 2), 0.5)),
                   "svhn.npz: field 'odin_log_ratio' has dtype float64, expected float32"),
    "odin above log K": (lambda d: _rewrite_npz(d / "svhn.npz", odin_log_ratio=np.full(
        (3, 2), 1.2, np.float32)), "svhn.npz: field 'odin_log_ratio' has values outside [0, "
                                   "log K = 1.09861]"),
    "odin negative": (lambda d: _rewrite_npz(d / "svhn.npz", odin_log_ratio=np.full(
        (3, 2), -1e-6, np.float32)), "svhn.npz: field 'odin_log_ratio' has values outside [0,"),
    "v2 odin in v3": (lambda d: _rewrite_npz(d / "svhn.npz", odin_log_ratio=None,
                                             odin=np.full((3, 2), 0.5, np.float32)),
                      "svhn.npz: field 'odin_log_ratio' is missing"),
    "odin pair": (lambda d: _edit_manifest(d, lambda m: m["odin"].update(pairs=[[0, 0.1]])),
                  "manifest.json: field 'odin.pairs' has entry [0, 0.1], expected "
                  "[temperature > 0, epsilon >= 0]"),
    "odin pairs": (lambda d: _edit_manifest(d, lambda m: m.update(odin={"pairs": []})),
                   "manifest.json: field 'odin.pairs' is [], expected a non-empty list"),
}


@pytest.mark.parametrize("case", list(V3_CASES))
def test_v3_validation_errors_name_the_file_and_field(v3_dir, case):
    breaks, message = V3_CASES[case]
    breaks(v3_dir)
    with pytest.raises(PredictionsError) as error:
        predictions.validate(v3_dir)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


V2_CASES = {
    "missing odin": (lambda d: _rewrite_npz(d / "svhn.npz", odin=None),
                     "svhn.npz: field 'odin' is missing (the manifest lists 2 ODIN pairs)"),
    "odin range": (lambda d: _rewrite_npz(d / "svhn.npz", odin=np.full((3, 2), 1.5, np.float32)),
                   "svhn.npz: field 'odin' has values outside (0, 1]"),
    "odin shape": (lambda d: _rewrite_npz(d / "svhn.npz", odin=np.full((3, 1), 0.5, np.float32)),
                   "svhn.npz: field 'odin' has shape (3, 1), expected (3, 2)"),
}


@pytest.mark.parametrize("case", list(V2_CASES))
def test_v2_validation_errors_name_the_file_and_field(v3_dir, case):
    as_v2(v3_dir)
    breaks, message = V2_CASES[case]
    breaks(v3_dir)
    with pytest.raises(PredictionsError) as error:
        predictions.validate(v3_dir)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"odin_pairs": PAIRS}, "split 'cifar_test': field 'odin_log_ratio' is missing"),
    ({"head": predictions.Head(np.zeros((3, K), np.float32), np.zeros(K, np.float32))},
     "split 'cifar_test': field 'features' has 2 columns, but the head's kernel has 3 rows"),
    ({"head": predictions.Head(np.zeros((2, K), np.float32), np.zeros(K))},
     "head: field 'bias' has dtype float64"),
    ({"odin_pairs": ((1.0, -0.1),)}, "odin_pairs: field 'odin.pairs' has entry (1.0, -0.1)"),
])
def test_write_rejects_bad_v3_arrays_and_writes_nothing(tmp_path, kwargs, message):
    with pytest.raises(PredictionsError, match=re.escape(message)):
        predictions.write(tmp_path / "p", _splits(), num_classes=K, run={}, **kwargs)
    assert not (tmp_path / "p").exists()


def test_write_refuses_a_split_whose_file_is_the_heads_and_writes_nothing(tmp_path):
    splits = _splits()
    splits["head"] = splits.pop("noise")
    head = predictions.Head(np.zeros((2, K), np.float32), np.zeros(K, np.float32))
    with pytest.raises(PredictionsError,
                       match=re.escape("split 'head': its file would be the head's (head.npz)")):
        predictions.write(tmp_path / "p", splits, num_classes=K, run={}, head=head)
    assert not (tmp_path / "p").exists()
    predictions.write(tmp_path / "p", splits, num_classes=K, run={})  # no head: no clash
    assert (tmp_path / "p" / "head.npz").exists()


def test_write_rejects_odin_arrays_without_pairs(tmp_path):
    with pytest.raises(PredictionsError, match="the manifest lists no ODIN pairs"):
        predictions.write(tmp_path / "p", _v3_splits(), num_classes=K, run={})


def test_write_refuses_format_v2_odin_scores(tmp_path):
    splits = {name: dataclasses.replace(split, odin=np.full((len(split.labels), 2), 0.5,
                                                            np.float32))
              for name, split in _splits().items()}
    with pytest.raises(PredictionsError, match=r"field 'odin' .* is read, never written"):
        predictions.write(tmp_path / "p", splits, num_classes=K, run={}, odin_pairs=PAIRS)
    assert not (tmp_path / "p").exists()


def test_missing_directory(tmp_path):
    with pytest.raises(PredictionsError, match="no such predictions directory"):
        predictions.read(tmp_path / "nowhere")


# The manifest's checkpoint: the step the predictions come from and the run's number of steps.


def test_checkpoint_round_trips_and_old_manifests_read_without_it(tmp_path, pred_dir):
    predictions.write(tmp_path / "p", _splits(), num_classes=K, run={},
                      checkpoint=trained_steps.Checkpoint(step=9000, total_steps=42000))
    manifest = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert manifest["checkpoint"] == {"step": 9000, "total_steps": 42000}
    assert manifest["format"] == predictions.FORMAT  # an optional key: no new format
    got = predictions.read(tmp_path / "p").checkpoint
    assert (got.step, got.total_steps, got.finished) == (9000, 42000, False)
    assert predictions.read(pred_dir).checkpoint is None  # written without one


@pytest.mark.parametrize(("record", "message"), [
    ({"step": 5, "total_steps": 4}, r"'checkpoint\.step' is 5, expected an integer in \[0, "
                                    r"total_steps = 4\]"),
    ({"step": -1, "total_steps": 4}, r"'checkpoint\.step' is -1"),
    ({"step": 2.0, "total_steps": 4}, r"'checkpoint\.step' is 2\.0"),
    ({"step": True, "total_steps": 4}, r"'checkpoint\.step' is True"),
    ({"step": 0, "total_steps": 0}, r"'checkpoint\.total_steps' is 0, expected an integer >= 1"),
    ({"step": 0}, r"'checkpoint\.total_steps' is None"),
    ({"step": 1, "total_steps": 4, "epoch": 1}, r"'checkpoint' has unknown key 'epoch'"),
    ([1, 4], r"'checkpoint' is \[1, 4\], expected an object"),
])
def test_bad_checkpoints_are_refused_on_write_and_read(tmp_path, pred_dir, record, message):
    with pytest.raises(PredictionsError, match=f"^checkpoint: field {message}"):
        predictions.write(tmp_path / "p", _splits(), num_classes=K, run={}, checkpoint=record)
    assert not (tmp_path / "p").exists()
    path = pred_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["checkpoint"] = record
    path.write_text(json.dumps(manifest))
    with pytest.raises(PredictionsError, match=f"^{re.escape(str(path))}: field {message}"):
        predictions.read_manifest(pred_dir)


@pytest.mark.parametrize(("record", "done", "expected"), [
    ({"step": 16, "total_steps": 16}, False, (False, (16, 16))),  # finished, DONE not yet written
    ({"step": 12, "total_steps": 16}, True, (True, (12, 16))),  # predict --allow_unfinished
    ({"step": 0, "total_steps": 16}, False, (True, (0, 16))),
    (None, True, (False, None)),  # written before the record: DONE says finished
    (None, False, (True, None)),  # ... and without DONE nobody knows
])
def test_which_predictions_count_as_unfinished(record, done, expected):
    manifest = {} if record is None else {"checkpoint": record}
    unfinished, checkpoint = trained_steps.unfinished(manifest, done=done)
    assert (unfinished, checkpoint and (checkpoint.step, checkpoint.total_steps)) == expected
