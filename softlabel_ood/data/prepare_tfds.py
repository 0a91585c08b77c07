"""Prepares TensorFlow Datasets sets once, before any run reads them: what `tfds build` does.

    python -m softlabel_ood.data.prepare_tfds cifar10:3.0.2 cifar100:3.0.2 --data_dir=$TFDS_DIR

The runs never download (`tfds_source`), so every tfds set must be prepared beforehand. With the
pinned tensorflow-datasets 4.9.10, `tfds build` stops with `No module named 'apache_beam'`: its
command line imports Apache Beam for a format converter, whatever it builds. apache-beam is not in
the `tfds` extra because it does not install with constraints.txt (pip backtracks to releases
that build from source, and that build fails). The sets the configs read are not Beam datasets,
so `tfds.builder(name, data_dir=...).download_and_prepare()`, which is what `tfds build` calls,
prepares them without it. Where apache_beam is installed, `tfds build` gives the same files.

Preparing needs the network. Without it tfds retries each download for minutes and leaves empty
folders, so every set's download hosts are tried once, without retries, before the first
download starts, and a failed preparation removes what it created in the data directory (and
nothing that was there before); either ends the command in one line saying how to bring a data
directory prepared elsewhere (docs/reproduction.md).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import urllib.parse
from collections.abc import Iterator, Sequence

from softlabel_ood import cli_errors
from softlabel_ood.data import quiet_tensorflow

COMMAND = "python -m softlabel_ood.data.prepare_tfds"
# Seconds to wait for a download host to answer the check: a reachable one answers in far less.
CHECK_TIMEOUT_S = 10
# Where tfds writes while preparing a set: `<data_dir>/<name>/incomplete.*`,
# `<data_dir>/downloads/<name>/*.tmp.*`, `<data_dir>/downloads/extracted/<archive>`. Entries
# down to this depth are compared to find what a failed preparation created.
_CREATED_DEPTH = 3
COPY_HELP = "docs/reproduction.md, \"Preparing on a connected machine\""


class PrepareError(cli_errors.UserError):
    """A tfds name that no builder knows, or a set that cannot be downloaded here."""


def command(versioned_name: str, data_dir: str | None) -> str:
    """The command line that prepares one set (what a missing set's error message prints)."""
    return f"{COMMAND} {versioned_name}" + (f" --data_dir={data_dir}" if data_dir else "")


def prepare(names: Sequence[str], data_dir: str | None = None) -> None:
    """Downloads and prepares each `<name>:<version>` into `data_dir` (None: the tfds default);
    a set already prepared there is left as it is."""
    _, tfds = quiet_tensorflow.import_tensorflow_datasets()

    builders = []
    for name in names:  # every name checked before the first download starts
        try:
            builders.append(tfds.builder(name, data_dir=data_dir))
        except (tfds.core.DatasetNotFoundError, ValueError, AssertionError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise PrepareError(f"{name}: not a tfds dataset this tensorflow-datasets can build "
                               f"({first})") from e
    for name, builder in zip(names, builders, strict=True):
        if not builder.data_path.exists():  # else download_and_prepare reuses it
            check_reachable(name, builder)  # every set's hosts before the first download
    for name, builder in zip(names, builders, strict=True):
        print(f"preparing {name} in {builder.data_dir}", file=sys.stderr, flush=True)
        with _removed_on_failure(builder.data_dir_root):
            _download_and_prepare(name, builder)


def _offline(name: str, builder, what: str, error: BaseException) -> PrepareError:
    root = builder.data_dir_root
    return PrepareError(
        f"{name}: {what} ({type(error).__name__}), so it cannot be prepared here; run the same "
        f"command on a machine with network access, then copy its data directory over to "
        f"{root} (rsync -a, scp -r, or gcloud storage cp -r through a gs:// bucket: {COPY_HELP})")


def check_reachable(name: str, builder) -> None:
    """Asks each host that `builder` downloads from for one file's headers, once, without
    retries; PrepareError when one cannot be reached (no network, an unreachable proxy)."""
    import requests  # a dependency of tensorflow-datasets

    first_url_of_host = {}
    for url in builder.url_infos or {}:  # sets without a checksums file are not checked
        parts = urllib.parse.urlsplit(url)
        if parts.scheme in ("http", "https"):
            first_url_of_host.setdefault(parts.netloc, url)
    for host, url in first_url_of_host.items():
        try:
            requests.head(url, timeout=CHECK_TIMEOUT_S, allow_redirects=False).close()
        except (requests.ConnectionError, requests.Timeout) as e:
            raise _offline(name, builder, f"{host} cannot be reached", e) from None


def _download_and_prepare(name: str, builder) -> None:
    import requests

    try:
        builder.download_and_prepare()
    except requests.RequestException as e:  # the network went away after the check
        raise _offline(name, builder, "its download failed", e) from None


def _entries(root: str, depth: int) -> set[str]:
    """`root` and the paths under it down to `depth` levels (links not followed)."""
    if not os.path.lexists(root):
        return set()
    found, level = {root}, [root]
    for _ in range(depth):
        below = []
        for directory in level:
            if os.path.isdir(directory) and not os.path.islink(directory):
                with contextlib.suppress(OSError):
                    below += [entry.path for entry in os.scandir(directory)]
        found.update(below)
        level = below
    return found


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.remove(path)


INTERRUPTED_LINE = ("interrupted; the set it was preparing is removed (those it finished stay), "
                    "and the same command prepares the rest")


@contextlib.contextmanager
def _removed_on_failure(root) -> Iterator[None]:
    """On any failure (an interrupt too), removes the files and folders created under `root`
    since entry, `root` and its missing parents included: a half-prepared set's folders, partial
    downloads. What was there before stays. A bucket (gs://...) is left as it is."""
    root = os.fspath(root)
    local = "://" not in root
    first_missing = None  # the highest folder of `root`'s path that does not exist yet
    path = os.path.abspath(root)
    while local and not os.path.lexists(path):
        first_missing, path = path, os.path.dirname(path)
    before = _entries(root, _CREATED_DEPTH) if local else set()
    try:
        yield
    except BaseException:
        if first_missing is not None:
            _remove(first_missing)
        elif local:
            created = _entries(root, _CREATED_DEPTH) - before
            for path in sorted(created):
                if os.path.dirname(path) not in created:  # else it goes with its folder
                    _remove(path)
        raise


@cli_errors.exit_on_interrupt(lambda _: INTERRUPTED_LINE)
@cli_errors.exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    parser = cli_errors.ArgumentParser(
        prog=COMMAND, description="Download and prepare TensorFlow Datasets sets, as `tfds "
                                  "build` does, without Apache Beam.")
    parser.add_argument("names", nargs="+", metavar="name:version",
                        help="e.g. cifar10:3.0.2 (the versions the configs read: "
                             "softlabel_ood.data.datasets)")
    parser.add_argument("--data_dir", default=None,
                        help="tfds data directory (default: the tfds default, "
                             "~/tensorflow_datasets); the runs' --config.data_dir")
    args = parser.parse_args(argv)
    prepare(args.names, args.data_dir)


if __name__ == "__main__":
    main()
