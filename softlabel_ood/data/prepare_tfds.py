"""Prepares TensorFlow Datasets sets once, before any run reads them: what `tfds build` does.

    python -m softlabel_ood.data.prepare_tfds cifar10:3.0.2 cifar100:3.0.2 --data_dir=$TFDS_DIR

The runs never download (`tfds_source`), so every tfds set must be prepared beforehand. With the
pinned tensorflow-datasets 4.9.10, `tfds build` stops with `No module named 'apache_beam'`: its
command line imports Apache Beam for a format converter, whatever it builds. apache-beam is not in
the `tfds` extra because it does not install with constraints.txt (pip backtracks to releases
that build from source, and that build fails). The sets the configs read are not Beam datasets,
so `tfds.builder(name, data_dir=...).download_and_prepare()`, which is what `tfds build` calls,
prepares them without it. Where apache_beam is installed, `tfds build` gives the same files.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from softlabel_ood import cli_errors
from softlabel_ood.data import quiet_tensorflow

COMMAND = "python -m softlabel_ood.data.prepare_tfds"


class PrepareError(cli_errors.UserError):
    """A tfds name that no builder knows."""


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
        print(f"preparing {name} in {builder.data_dir}", file=sys.stderr, flush=True)
        builder.download_and_prepare()


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
