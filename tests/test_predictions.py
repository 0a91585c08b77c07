"""The predictions format: round trips, atomic writes, and every validation error's message."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from softlabel_ood import predictions
from softlabel_ood.predictions import PredictionsError, Split

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
                     "manifest.json: field 'format' is 'v0', expected "
                     "'softlabel_ood.predictions/v1'"),
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


def test_missing_directory(tmp_path):
    with pytest.raises(PredictionsError, match="no such predictions directory"):
        predictions.read(tmp_path / "nowhere")
