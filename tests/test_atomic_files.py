"""Atomic files and directories: a kill or a full disk leaves the old version whole; leftovers of
killed processes are removed by the next write; a killed process leaves no workdir locked."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from softlabel_ood import cli_errors
from softlabel_ood.workdir import atomic_files, predictions, run_dir
from softlabel_ood.workdir import lock as workdir_lock
from softlabel_ood.workdir.predictions import Split
from tests.train_helpers import REPO


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _splits(n_ood: int, names=("svhn", "noise")) -> dict[str, Split]:
    rng = np.random.default_rng(n_ood)

    def split(role, n):
        labels = np.full(n, -1) if role == "ood_test" else rng.integers(0, 3, n)
        return Split(role=role, logits=rng.normal(size=(n, 3)).astype(np.float32),
                     labels=labels.astype(np.int32))

    return {"id_test": split("id_test", 4), **{name: split("ood_test", n_ood) for name in names}}


def _write(directory, splits):
    predictions.write(directory, splits, num_classes=3, run={"method": "ce"})


def test_a_file_is_fsynced_before_its_rename(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(
        f"/proc/self/fd/{fd}")), real_fsync(fd)))
    atomic_files.write_text_atomically(tmp_path / "a.txt", "new")
    assert (tmp_path / "a.txt").read_text() == "new"
    # The data went to disk under the temporary name, before the rename made it visible.
    assert any(os.path.basename(p).startswith(".a.txt.tmp-") for p in synced), synced


def test_a_full_disk_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "report.md"
    path.write_text("old")

    def write(f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    with pytest.raises(OSError, match="No space left"):
        atomic_files.write_atomically(path, write)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]


def test_temporaries_of_dead_processes_are_removed_by_the_next_write(tmp_path):
    dead, alive = _dead_pid(), os.getppid()
    (tmp_path / f".a.txt.tmp-{dead}").write_text("left by a killed process")
    (tmp_path / f".a.txt.tmp-{alive}").write_text("another process is writing")
    (tmp_path / f".predictions.tmp-{dead}").mkdir()
    (tmp_path / f".predictions.tmp-{dead}" / "x.npz").write_text("half")
    atomic_files.write_text_atomically(tmp_path / "a.txt", "new")
    _write(tmp_path / "predictions", _splits(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == \
        [f".a.txt.tmp-{alive}", "a.txt", "predictions"]


def test_a_directory_is_replaced_as_a_whole_and_files_of_dropped_splits_go(tmp_path):
    directory = tmp_path / "predictions"
    _write(directory, _splits(2, names=("svhn", "noise")))
    (directory / "head.npz").write_bytes(b"a file another version of the writer added")
    _write(directory, _splits(5, names=("svhn",)))
    assert sorted(p.name for p in directory.iterdir()) == \
        ["id_test.npz", "manifest.json", "svhn.npz"]
    assert predictions.read(directory).splits["svhn"].logits.shape == (5, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions"]


def test_a_file_where_a_directory_is_switched_in_is_refused_and_kept(tmp_path):
    # The exchange would have swapped the user's file out and deleted it with the old side.
    path = tmp_path / "report"
    path.write_text("mine")
    with pytest.raises(cli_errors.UserError, match=r"report is a file, not a directory"), \
            atomic_files.replacing_directory(path) as new:
        (new / "a.txt").write_text("new")
    assert path.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_without_an_atomic_exchange_the_switch_still_replaces_the_directory(tmp_path,
                                                                             monkeypatch):
    monkeypatch.setattr(atomic_files, "_exchange", lambda a, b: False)
    directory = tmp_path / "predictions"
    _write(directory, _splits(2))
    _write(directory, _splits(6))
    assert predictions.read(directory).splits["noise"].logits.shape == (6, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions"]


def test_a_directory_set_aside_by_a_killed_switch_is_put_back(tmp_path):
    # Without an atomic exchange the switch is two renames; a kill between them leaves the
    # old directory under its aside name and none under the real one.
    directory = tmp_path / "predictions"
    _write(directory, _splits(2))
    aside = tmp_path / f".predictions.old-{_dead_pid()}"
    directory.rename(aside)
    atomic_files.remove_stale_temporaries(directory)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions"]
    predictions.validate(directory)


def test_a_full_disk_during_a_predictions_write_leaves_the_old_directory(tmp_path, monkeypatch,
                                                                          capsys):
    directory = tmp_path / "predictions"
    _write(directory, _splits(2))
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    calls = []
    real_savez = np.savez

    def savez_until_full(f, **arrays):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f.name))
        real_savez(f, **arrays)

    monkeypatch.setattr(np, "savez", savez_until_full)
    with pytest.raises(SystemExit) as exit_info:
        cli_errors.exit_on_user_error(lambda: _write(directory, _splits(9)))()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: ")
    assert err.rstrip().endswith(": No space left on device")
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before
    predictions.validate(directory)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions"]


_SLOW_WRITER = textwrap.dedent("""
    import pathlib, sys, time
    import numpy as np
    sys.path.insert(0, {repo!r})
    from softlabel_ood.workdir import predictions
    from tests.test_atomic_files import _splits
    real_savez = np.savez
    def slow_savez(f, **arrays):
        real_savez(f, **arrays)
        pathlib.Path({marker!r}).touch()  # one new file is written: the parent kills us now
        time.sleep(60)
    np.savez = slow_savez
    predictions.write({directory!r}, _splits(7), num_classes=3, run={{"method": "ce"}})
""")


def test_sigkill_during_a_predictions_write_leaves_the_old_directory(tmp_path):
    directory = tmp_path / "predictions"
    _write(directory, _splits(2))
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    marker = tmp_path / "one_file_written"
    child = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER.format(
        repo=str(REPO), marker=str(marker), directory=str(directory))])
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert child.poll() is None, "the writer ended before its first file"
        assert time.monotonic() < deadline, "the writer did not start"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    # The old directory is whole and valid; the killed writer's half directory is beside it.
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before
    predictions.validate(directory)
    assert f".predictions.tmp-{child.pid}" in os.listdir(tmp_path)
    # The next write removes it.
    _write(directory, _splits(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one_file_written", "predictions"]
    assert predictions.read(directory).splits["svhn"].logits.shape == (3, 3)


def test_a_killed_process_leaves_no_workdir_locked(tmp_path):
    workdir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]); "
         "from softlabel_ood.workdir import lock as workdir_lock\n"
         "with workdir_lock.hold(sys.argv[2]):\n"
         "    print('locked', flush=True); time.sleep(60)", str(REPO), str(workdir)],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(workdir_lock.WorkdirError,
                       match=rf"in use by another process \(pid {holder.pid}\)"), \
            workdir_lock.hold(workdir):
        pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    # The killed holder's lock file is left, empty; the next holder reuses it and leaves it.
    assert (workdir / run_dir.LOCK).read_bytes() == b""
    with workdir_lock.hold(workdir):
        pass
    assert (workdir / run_dir.LOCK).read_bytes() == b""


def test_a_lock_leaves_the_workdir_as_it_found_it(tmp_path):
    fresh, older = tmp_path / "fresh", tmp_path / "older"
    with workdir_lock.hold(fresh):
        (fresh / "output").write_text("x")
        assert (fresh / run_dir.LOCK).exists()
    assert sorted(p.name for p in fresh.iterdir()) == ["output"]  # the lock it made is gone
    older.mkdir()
    (older / run_dir.LOCK).write_text("4242\n")  # as earlier versions wrote it
    with pytest.raises(RuntimeError), workdir_lock.hold(older):
        raise RuntimeError("a refusal")
    assert (older / run_dir.LOCK).read_text() == "4242\n"
    with pytest.raises(RuntimeError), workdir_lock.hold(tmp_path / "new"):
        raise RuntimeError("a refusal")
    assert not (tmp_path / "new").exists()


def test_a_lock_file_that_its_holder_removed_meanwhile_is_not_the_one_locked(tmp_path,
                                                                             monkeypatch):
    import fcntl

    workdir = tmp_path / "run"
    workdir.mkdir()
    lock_file = workdir / run_dir.LOCK
    lock_file.touch()  # held by a process that is about to finish
    real_flock, locked = fcntl.flock, []

    def finishing_holder(fd, operation):
        if not locked:
            lock_file.unlink()  # the holder finishes between this open and this flock
        locked.append(os.fstat(fd).st_ino)
        return real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", finishing_holder)
    with workdir_lock.hold(workdir):
        assert len(locked) == 2  # a second time, on a new file
        assert locked[1] == lock_file.stat().st_ino
        other = os.open(lock_file, os.O_RDWR)
        with pytest.raises(BlockingIOError):
            real_flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(other)
    assert not lock_file.exists()  # this holder made it
