r"""A model's saved outputs as a run directory: `python -m softlabel_ood.import_outputs`.

    python -m softlabel_ood.import_outputs --out=<run_dir> --id_test=<file> \
        --ood <name>=<file> [--ood ...] [--id_train=<file>] [--head=<file>] \
        [--ood_groups='near=a;far=b,c'] [--dataset=<name>] [--model=<name>] [--seed=<k>]

Each file is an .npz holding `logits` [N, K] (and `labels` [N] for the ID splits; optionally
`features` [N, D]) or, for an OOD split, an .npy of the logits alone; the head's .npz holds
`kernel` [D, K] and `bias` [K] (`workdir/imported_outputs.py`). Writes `<run_dir>/predictions/`
in the current format (DESIGN.md §5), its manifest's `run.imported` naming each source file
with its SHA-256, and `<run_dir>/config.json` with the OOD groups, so that `score`, the report
and the notebook read the directory as a trained run's. The ID splits are named `id_test` and
`id_train`.

Every file's arrays are checked (dtypes, shapes, one K and one feature width, the head's shape,
the size bounds) from their headers before any data is read, then their values (NaN, inf,
labels in [0, K)); a problem ends the command with exit code 2 and one line naming the file and
array, before anything is written. The run directory is written beside the old one and switched
in as a whole by one rename; `<run_dir>` may hold only what an import writes.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

from softlabel_ood import cli_errors
from softlabel_ood.configs import grid
from softlabel_ood.workdir import atomic_files, imported_outputs, predictions, run_dir, run_summary
from softlabel_ood.workdir.imported_outputs import ID_TEST, ID_TRAIN, OutputsError


def _parse(argv):
    parser = cli_errors.ArgumentParser(
        prog="python -m softlabel_ood.import_outputs",
        description="Write a model's saved logits (and features, head) as a run directory that "
                    "`score` reads.")
    parser.add_argument("--out", required=True, help="the run directory to write")
    parser.add_argument("--id_test", required=True,
                        help=".npz with logits [N, K] and labels [N] (optionally features [N, D])")
    parser.add_argument("--ood", action="append", default=[], metavar="NAME=FILE",
                        help="an OOD split: .npz with logits (optionally features) or .npy of "
                             "logits; repeat for each OOD set")
    parser.add_argument("--id_train", default=None,
                        help="ID training split, as --id_test: the feature scores need it")
    parser.add_argument("--head", default=None,
                        help=".npz with kernel [D, K] and bias [K]: react and vim need it")
    parser.add_argument("--ood_groups", default=None,
                        help="groups of OOD sets whose means score shows, e.g. "
                             "'near=cifar100;far=svhn,textures'")
    parser.add_argument("--dataset", default="", help="the ID dataset's name, for the record")
    parser.add_argument("--model", default="", help="the model's name, for the record")
    parser.add_argument("--seed", type=int, default=None,
                        help="the model's seed (default: k of an --out named <name>_seed<k>, "
                             "else 0); reports pair runs by seed")
    return parser.parse_args(argv)


def _check_out(out: str) -> None:
    """--out may be written as a whole: a local directory holding nothing but an import's files."""
    if not out.strip():
        raise OutputsError("--out: empty (it would be the current directory)")
    if "://" in out:
        raise OutputsError(f"--out: {out} is a bucket URL; import into a local directory, "
                           "then copy it")
    atomic_files.refuse_file(out, "a run directory")
    existing = os.path.dirname(os.path.abspath(out))  # where the new directory is made
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise OutputsError(f"--out: {existing} is not a writable directory")
    foreign = atomic_files.foreign_entry(
        out, lambda name: name in (run_dir.CONFIG, run_dir.PREDICTIONS))
    if foreign is not None:
        raise OutputsError(f"--out: {out} holds {foreign!r}, which an import does not write "
                           "(it replaces the directory as a whole); choose a new directory")


def _ood_sources(entries: Sequence[str]) -> dict[str, str]:
    sources = {}
    for entry in entries:
        name, sep, path = entry.partition("=")
        if not sep or not name or not path:
            raise OutputsError(f"--ood: {entry!r} is not <name>=<file>")
        imported_outputs.check_names([*sources, name], lambda n: f"--ood {n}")
        sources[name] = path
    return sources


def _seed(args) -> int:
    if args.seed is not None:
        if args.seed < 0:
            raise OutputsError(f"--seed: {args.seed} is negative")
        return args.seed
    base = os.path.basename(os.path.abspath(args.out))
    name = grid.grid_name(base)
    return int(base[len(name) + len("_seed"):]) if name != base else 0


def _groups(text: str | None, oods: Sequence[str], out: str) -> dict[str, tuple[str, ...]]:
    if text is None:
        return {}
    # Imported here: the scoring package loads JAX, which an import without groups never needs.
    from softlabel_ood.scoring import groups as groups_lib
    from softlabel_ood.scoring.metrics import ScoringError

    try:
        found = groups_lib.parse_groups(text)
        groups_lib.check_groups(found, dict.fromkeys(oods, "ood_test"),
                                run=os.path.basename(os.path.abspath(out)), where="--ood_groups")
    except ScoringError as e:
        raise OutputsError(str(e).replace("--groups:", "--ood_groups:", 1)) from None
    return found


def import_outputs(args) -> list[str]:
    """Checks every input, then writes the run directory; returns the splits' names."""
    _check_out(args.out)
    oods = _ood_sources(args.ood)
    paths = {ID_TEST: args.id_test, **({ID_TRAIN: args.id_train} if args.id_train else {}),
             **oods}
    roles = {ID_TEST: "id_test", ID_TRAIN: "id_train"}
    splits = [imported_outputs.split_from_file(name, roles.get(name, "ood_test"), path)
              for name, path in paths.items()]
    head = None if args.head is None else imported_outputs.head_from_file(args.head)
    imported_outputs.check_shapes(splits, head)
    groups = _groups(args.ood_groups, list(oods), args.out)
    seed = _seed(args)
    num_classes, loaded, head_arrays = imported_outputs.load(splits, head)
    run = {**run_summary.RunSummary.from_json(
        {"dataset": args.dataset, "model": args.model, "seed": seed}).to_json(),
        run_summary.IMPORTED: imported_outputs.imported_record(paths, args.head)}
    config = {"ood_groups": {name: list(members) for name, members in groups.items()}}
    with atomic_files.replacing_directory(args.out) as new:
        predictions.write(run_dir.predictions_path(new), loaded, num_classes=num_classes, run=run,
                          head=head_arrays)
        run_dir.config_path(new).write_text(json.dumps(config, indent=2) + "\n")
    return list(loaded)


@cli_errors.exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    names = import_outputs(args)
    print(f"wrote {run_dir.predictions_path(args.out)} (splits {', '.join(names)}); score it "
          f"with python -m softlabel_ood.score {args.out} --out=<dir>", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
