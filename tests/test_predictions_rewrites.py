"""A reader of a predictions directory that another process rewrites gets one version whole:
never the manifest of one version beside a split file of another, never a file missing."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from softlabel_ood.workdir import predictions
from tests.train_helpers import REPO

K = 3
SPLITS = ("toy_test", "toy_train", "gaussian", "uniform")


def _rows(version: int) -> int:
    return 5 + 37 * (version % 11)  # each version its own size, as the audit's 360 and 100


def _write(directory, version: int) -> None:
    """Version `version`: every split has _rows(version) rows whose logits all equal it."""
    n = _rows(version)
    labels = np.arange(n, dtype=np.int32) % K
    splits = {name: predictions.Split(
        role={"toy_test": "id_test", "toy_train": "id_train"}.get(name, "ood_test"),
        logits=np.full((n, K), version, np.float32),
        labels=labels if name.startswith("toy") else np.full(n, -1, np.int32))
        for name in SPLITS}
    predictions.write(directory, splits, num_classes=K,
                      run={"dataset": "toy", "method": "ce", "seed": version})


def _version_of(read: predictions.Predictions) -> int:
    """The one version every file of `read` comes from (AssertionError for a mix)."""
    version = read.run["seed"]
    for name, split in read.splits.items():
        assert split.logits.shape == (_rows(version), K), (name, version)
        assert (split.logits == version).all(), (name, version)
    return version


_WRITER = """
import pathlib, sys
sys.path.insert(0, {repo!r})
from tests.test_predictions_rewrites import _write
directory, stop = pathlib.Path({directory!r}), pathlib.Path({stop!r})
version = 1
while not stop.exists():
    _write(directory, version)
    version += 1
"""


def test_reads_during_rewrites_by_another_process_each_see_one_version(tmp_path):
    directory, stop = tmp_path / "run" / "predictions", tmp_path / "stop"
    _write(directory, 0)
    writer = subprocess.Popen([sys.executable, "-c", _WRITER.format(
        repo=str(REPO), directory=str(directory), stop=str(stop))])
    failures, seen = [], set()
    try:
        deadline = time.monotonic() + 60
        while len(seen) < 3:  # the writer has started and switched versions in
            assert writer.poll() is None, "the writer failed"
            assert time.monotonic() < deadline, "the writer switched no version in"
            seen.add(predictions.read(directory).run["seed"])
        start = time.monotonic()
        for _ in range(400):
            try:
                seen.add(_version_of(predictions.read(directory)))
            except (predictions.PredictionsError, AssertionError) as e:
                failures.append(str(e))
        elapsed = time.monotonic() - start
    finally:
        stop.touch()
        writer.wait(timeout=60)
    assert writer.returncode == 0
    assert failures == []
    assert len(seen) > 10, sorted(seen)  # the reads met many rewrites
    assert elapsed < 30, elapsed  # 400 small reads: a few seconds, retries included


@pytest.mark.parametrize("directory_fds", [True, False], ids=["directory_fd", "by_path"])
def test_a_rewrite_between_the_manifest_and_a_split_is_read_again(tmp_path, monkeypatch,
                                                                  directory_fds):
    # The rewrite lands exactly between the two reads of the audit's failures. With directory
    # descriptors the old version's split was deleted under the reader; by path (where the
    # platform has none) the new one's would be read beside the old manifest.
    monkeypatch.setattr(predictions, "_DIRECTORY_FDS", directory_fds)
    directory = tmp_path / "predictions"
    _write(directory, 1)
    opened = []
    real_open = predictions._Version.open

    def open_then_rewrite(version, name):
        opened.append(name)
        if name == "gaussian.npz" and len(opened) == 4:  # in the first read
            _write(directory, 2)
        return real_open(version, name)

    monkeypatch.setattr(predictions._Version, "open", open_then_rewrite)
    assert _version_of(predictions.read(directory)) == 2
    assert opened.count("manifest.json") == 2  # read again, once


def test_a_file_missing_from_a_directory_that_no_writer_replaced_is_reported(tmp_path):
    directory = tmp_path / "predictions"
    _write(directory, 1)
    (directory / "uniform.npz").unlink()
    with pytest.raises(predictions.PredictionsError,
                       match=r"uniform\.npz: missing \(listed in the manifest\)$"):
        predictions.read(directory)
