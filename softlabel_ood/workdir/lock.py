"""One process at a time in a workdir: an advisory lock that dies with its process.

`fcntl.flock` is held by the open file, and the kernel releases it when the process exits in any
way (SIGKILL included), so a killed run never leaves the workdir locked; the lock file itself
stays and is reused. It records the holder's pid for the error message only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib

from softlabel_ood.cli_errors import UserError

LOCK_FILE = ".lock"


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

    A workdir that this call created and that holds nothing but the lock file when the block
    fails (a refusal after the data loaded) is removed again, so that a refused start leaves
    nothing behind.
    """
    check_workdir(workdir)
    path = pathlib.Path(os.fspath(workdir))
    if not enabled:
        yield
        return
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    lock_path = path / LOCK_FILE
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise WorkdirError(f"{path}: in use by another process (pid {holder}); wait for it "
                               f"to finish or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        except BaseException:
            if created and [p.name for p in path.iterdir()] == [LOCK_FILE]:
                lock_path.unlink()
                path.rmdir()
            raise
    finally:
        os.close(fd)  # releases the lock
