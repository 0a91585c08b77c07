"""One process at a time in a workdir: an advisory lock that dies with its process.

`fcntl.flock` is held by the open file, and the kernel releases it when the process exits in any
way (SIGKILL included), so a killed run never leaves the workdir locked. The lock file is empty,
and a command leaves it as it found it: one that it created is removed when it is done (a
killed process leaves it, and the next command reuses it), one that was there stays untouched.
So a refused command changes nothing in the workdir. Who holds a lock is read from the kernel
(`/proc/locks`, Linux), for the error message only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib

from softlabel_ood.cli_errors import UserError
from softlabel_ood.workdir import run_dir


class WorkdirError(UserError):
    """The workdir is not a directory, or another process is working in it."""


def check_workdir(workdir) -> None:
    """WorkdirError unless `workdir` names a directory, or a path where one can be made.

    An empty --workdir would be the current directory, which a run would fill with its files.
    """
    if not os.fspath(workdir).strip():
        raise WorkdirError("--workdir: empty; give the run's directory (created if missing)")
    if "://" in os.fspath(workdir):
        # The predictions, the lock and the atomic renames need a file system: a bucket URL
        # would have them written under a local folder named "gs:".
        raise WorkdirError(f"--workdir: {os.fspath(workdir)} is a bucket URL; give a local "
                           f"directory (or a gcsfuse mount) and copy it to the bucket afterwards "
                           f"(gcloud storage cp -r)")
    path = pathlib.Path(os.fspath(workdir))
    if path.exists() and not path.is_dir():
        raise WorkdirError(f"--workdir: {path} is a file, not a directory")


@contextlib.contextmanager
def hold(workdir, *, enabled: bool = True):
    """Creates `workdir` if missing and holds its lock; WorkdirError if another process has it.

    The lock file and the workdir are removed again when this call created them and, for the
    workdir, nothing else was written in it (a refusal after the data loaded), so that a
    refused start leaves nothing behind.
    """
    check_workdir(workdir)
    path = pathlib.Path(os.fspath(workdir))
    if not enabled:
        yield
        return
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    fd, created_lock = _lock(path)
    try:
        yield
    finally:
        if created_lock:
            # Removed while still held: a process that opened this file meanwhile finds it
            # gone once it gets the lock, and starts again on a new one (`_lock`).
            (path / run_dir.LOCK).unlink(missing_ok=True)
        os.close(fd)  # releases the lock
        if created and not any(path.iterdir()):
            path.rmdir()


def _lock(path: pathlib.Path) -> tuple[int, bool]:
    """(descriptor, whether this call created the file) of `path`'s lock file, locked."""
    lock_path = path / run_dir.LOCK
    while True:
        try:
            fd, created = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
        except FileExistsError:
            try:
                fd, created = os.open(lock_path, os.O_RDWR), False
            except FileNotFoundError:
                continue  # removed by its holder in between
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(os.fstat(fd))
            if created:
                lock_path.unlink(missing_ok=True)
            os.close(fd)
            raise WorkdirError(f"{path}: in use by another process"
                               f"{f' (pid {holder})' if holder else ''}; wait for it to finish "
                               f"or stop it") from None
        try:
            now, held = os.stat(lock_path), os.fstat(fd)
            still_there = (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)
        except FileNotFoundError:
            still_there = False
        if still_there:
            return fd, created
        os.close(fd)  # the holder removed this file when it was done: lock the next one


def _holder(status: os.stat_result) -> int | None:
    """The pid of the process that holds the flock on the file of `status`, from /proc/locks
    (lines like `1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`), or None."""
    device = f"{os.major(status.st_dev):02x}:{os.minor(status.st_dev):02x}:{status.st_ino}"
    try:
        with open("/proc/locks") as locks:
            for line in locks:
                fields = line.split()
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == device:
                    return int(fields[4]) or None  # 0: a process of another namespace
    except (OSError, ValueError):
        pass
    return None
