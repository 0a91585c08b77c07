"""Files and directories written under a temporary name and renamed into place, so that a reader
sees the old version or the new one, never half of one; a killed process or a full disk leaves the
old version intact.

Temporary names are `.<name>.tmp-<pid>` beside the target. The next write of the same target
removes those whose process is gone (same host), so that a killed process's leftovers do not
accumulate. Data is fsynced before the rename, so that after a crash of the machine the new name
never points at unwritten blocks.

Standard library only: the predictions format and the scoring module use it and must load with
numpy and jax alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import pathlib
import shutil
from collections.abc import Callable, Iterator
from typing import BinaryIO

from softlabel_ood.cli_errors import UserError

_TMP_INFIX = ".tmp-"
_OLD_INFIX = ".old-"


def _path(path: os.PathLike | str) -> pathlib.Path:
    return pathlib.Path(os.fspath(path))


def _temporary(path: pathlib.Path) -> pathlib.Path:
    return path.with_name(f".{path.name}{_TMP_INFIX}{os.getpid()}")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def remove_stale_temporaries(path: os.PathLike | str) -> None:
    """Removes the temporaries of `path` that processes no longer running left behind.

    A directory that a killed `replacing_directory` had renamed aside (`.<name>.old-<pid>`, on
    file systems without an atomic exchange) is put back if `path` is missing.
    """
    path = _path(path)
    if not path.parent.is_dir():
        return
    for entry in sorted(path.parent.iterdir()):
        for infix in (_TMP_INFIX, _OLD_INFIX):
            prefix = f".{path.name}{infix}"
            pid = entry.name[len(prefix):]
            if not (entry.name.startswith(prefix) and pid.isdigit()) or _process_alive(int(pid)):
                continue
            if infix == _OLD_INFIX and not path.exists():
                os.rename(entry, path)
            else:
                _remove(entry)


def _remove(path: pathlib.Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fsync_directory(directory: pathlib.Path) -> None:
    # Makes the rename itself durable. Some file systems refuse to open or sync a directory.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _is_remote(path: os.PathLike | str) -> bool:
    return "://" in os.fspath(path)


@contextlib.contextmanager
def naming(path: os.PathLike | str) -> Iterator[None]:
    """An OSError raised without a file name (a full disk met by a write, a flush or an fsync)
    is raised again naming `path`, so that its one-line report says where."""
    try:
        yield
    except OSError as e:
        if e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror, os.fspath(path)) from e
        raise


def write_atomically(path: os.PathLike | str, write: Callable[[BinaryIO], object]) -> None:
    """Calls `write` on a temporary file beside `path`, fsyncs it, then renames it to `path`.

    A bucket path (gs://...) is uploaded whole instead: an object store replaces an object
    atomically, and has no rename.
    """
    if _is_remote(path):
        import io

        from etils import epath  # only for bucket paths, so that local use needs no etils
        buffer = io.BytesIO()
        write(buffer)
        epath.Path(path).write_bytes(buffer.getvalue())
        return
    path = _path(path)
    remove_stale_temporaries(path)
    tmp = _temporary(path)
    try:
        with naming(path), open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # replaces an existing file, atomically on POSIX
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_directory(path.parent)


def write_text_atomically(path: os.PathLike | str, text: str) -> None:
    write_atomically(path, lambda f: f.write(text.encode("utf-8")))


# ---------------------------------------------------------------------------------------------
# Whole directories.

_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: pathlib.Path, b: pathlib.Path) -> bool:
    """Swaps two paths in one atomic step (Linux renameat2); False where that is unsupported."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd = -100
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # the file system cannot
        return False
    raise OSError(err, os.strerror(err), os.fspath(b))


class NotADirectoryToReplace(UserError):
    """A file (or a link, a device) stands where a command switches in a directory."""


def refuse_file(path: os.PathLike | str, directory: str = "a directory") -> None:
    """NotADirectoryToReplace if `path` exists and is not a directory: `replacing_directory`
    would exchange the user's file for `directory` and delete it with the old one."""
    path = _path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryToReplace(f"{path} is a file, not {directory}, which is written "
                                     f"there as a whole; move the file elsewhere")


def foreign_entry(path: os.PathLike | str, owns: Callable[[str], bool]) -> str | None:
    """The name of the first entry of the directory `path` that `owns` does not claim, or None
    (also when `path` does not exist): what `replacing_directory(path)` would take away with
    the old directory although its writer did not write it. Temporaries of claimed names
    (`.<name>.tmp-<pid>`, of earlier per-file writes) are the writer's too."""
    path = _path(path)
    if not path.is_dir():
        return None
    for entry in sorted(path.iterdir()):
        name = entry.name
        stem, infix, pid = name[1:].rpartition(_TMP_INFIX)
        if owns(name) or (name.startswith(".") and infix and pid.isdigit() and owns(stem)):
            continue
        return name
    return None


def is_own_temporary(path: os.PathLike | str) -> bool:
    """Whether `path` is a temporary name of this process (`.<name>.tmp-<pid>`): a directory
    that `replacing_directory` is filling, whose files are switched in with it as a whole."""
    name = _path(path).name
    return name.startswith(".") and name.endswith(f"{_TMP_INFIX}{os.getpid()}")


@contextlib.contextmanager
def replacing_directory(path: os.PathLike | str) -> Iterator[pathlib.Path]:
    """Yields an empty temporary directory to fill; on success it replaces `path` as a whole.

    Every file of the new directory (whatever its name) arrives together, and every file of the
    old one leaves together: on Linux the two directories are exchanged in one atomic rename
    (renameat2 RENAME_EXCHANGE). Where the file system lacks it, the old directory is renamed
    aside and the new one renamed into place, two renames microseconds apart. If the block fails
    (a full disk, an exception, a kill) `path` is left as it was. A write error that names no
    file (a full disk met while writing) is reported as one of `path`. A file at `path` is refused
    (`refuse_file`): the exchange would delete it.
    """
    path = _path(path)
    refuse_file(path)
    remove_stale_temporaries(path)
    tmp = _temporary(path)
    _remove(tmp)
    try:
        with naming(path):
            tmp.mkdir(parents=True)
            yield tmp
            for entry in tmp.iterdir():
                if entry.is_file():
                    with open(entry, "rb") as f:
                        os.fsync(f.fileno())
            _fsync_directory(tmp)
            if not path.exists():
                os.rename(tmp, path)
            elif _exchange(tmp, path):
                pass  # tmp now holds the old directory, removed below
            else:
                aside = path.with_name(f".{path.name}{_OLD_INFIX}{os.getpid()}")
                os.rename(path, aside)
                os.rename(tmp, path)
                os.rename(aside, tmp)
            _fsync_directory(path.parent)
    finally:
        _remove(tmp)
