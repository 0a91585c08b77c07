"""The predictions directory, format v3 (DESIGN.md §5): write, read and validate.

A run's outputs on every split live in `<run_dir>/predictions/`:

    manifest.json    {"format": FORMAT, "num_classes": K, "splits": {name: {"file", "role",
                      "num_examples"}}, "run": {...}, optionally "head": {"file": "head.npz"},
                      "odin": {"pairs": [[T, eps], ...]} and "checkpoint": {"step": S,
                      "total_steps": T} (the model's step, the run's steps: trained_steps)}
    <name>.npz       logits float32 [N, K], labels int32 [N] (-1 for OOD splits),
                     optionally features float32 [N, D]; odin_log_ratio float32 [N, P] when
                     the manifest lists P ODIN pairs (column p: log(K · the ODIN score of pair
                     p), which ranks exactly as the score; softlabel_ood/training/odin.py)
    head.npz         kernel float32 [D, K] and bias float32 [K] of the final dense layer:
                     logits = features @ kernel + bias (up to float32 rounding)

Directories in format v2 (the ODIN arrays saved as `odin`, the ODIN scores themselves in float32)
and v1 (no head, no ODIN arrays) are read as well. `Split.odin_ranking` and
`Split.odin_max_softmax` give either format's ODIN arrays in one form.

This module needs numpy only, so predictions can be inspected and scored on a machine that has
neither flax nor tensorflow. Every problem is reported as a `PredictionsError` whose message is
one line naming the file and the field at fault.

Writes never leave half a directory behind: the new directory is written beside the old one and
switched in one rename, and a reader takes every file from the version it opened (`_Version`),
so it sees either the previous directory or the new one, whole.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import stat
import zipfile
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO, TypeVar

import numpy as np

from softlabel_ood.cli_errors import UserError
from softlabel_ood.workdir import atomic_files, run_summary, trained_steps
from softlabel_ood.workdir.run_dir import MANIFEST
from softlabel_ood.workdir.run_summary import RunSummary

ROLES = ("id_test", "ood_test", "id_train")
FORMAT = "softlabel_ood.predictions/v3"
FORMAT_V2 = "softlabel_ood.predictions/v2"
FORMAT_V1 = "softlabel_ood.predictions/v1"
READABLE_FORMATS = (FORMAT_V1, FORMAT_V2, FORMAT)
HEAD_FILE = "head.npz"


class PredictionsError(UserError):
    """A predictions directory, or splits about to be written, break the format."""


@dataclasses.dataclass(frozen=True)
class Split:
    role: str  # one of ROLES
    logits: np.ndarray  # float32 [N, K]
    labels: np.ndarray  # int32 [N]; -1 for ood_test
    features: np.ndarray | None = None  # float32 [N, D]
    # float32 [N, P]: the ODIN scores themselves, as format v2 saved them (read, never written).
    odin: np.ndarray | None = None
    # float32 [N, P], one column per (T, eps) pair: log(K · ODIN score), written since format v3.
    odin_log_ratio: np.ndarray | None = None

    def odin_ranking(self) -> np.ndarray | None:
        """float64 [N, P] that order exactly as the ODIN scores: the log-ratios (v3) or the
        scores (v2). Their values are for ranking only."""
        saved = self.odin_log_ratio if self.odin_log_ratio is not None else self.odin
        return None if saved is None else saved.astype(np.float64)

    def odin_max_softmax(self) -> np.ndarray | None:
        """float64 [N, P]: the ODIN scores (the max softmax at temperature T), from either
        format."""
        num_classes = self.logits.shape[1]
        if self.odin_log_ratio is not None:
            return odin_max_softmax(ODIN_FIELD, self.odin_log_ratio, num_classes)
        return None if self.odin is None else odin_max_softmax(ODIN_V2_FIELD, self.odin,
                                                                num_classes)


def odin_max_softmax(field: str, saved: np.ndarray, num_classes: int) -> np.ndarray:
    """float64 ODIN scores from a split's saved ODIN array `field` (ODIN_FIELD: p = exp(.) / K;
    ODIN_V2_FIELD: p itself)."""
    saved = saved.astype(np.float64)
    return np.exp(saved) / num_classes if field == ODIN_FIELD else saved


@dataclasses.dataclass(frozen=True)
class Head:
    """The final dense layer: logits = features @ kernel + bias."""

    kernel: np.ndarray  # float32 [D, K]
    bias: np.ndarray  # float32 [K]


@dataclasses.dataclass(frozen=True)
class Predictions:
    num_classes: int
    run: dict
    splits: dict[str, Split]  # insertion order = manifest order
    directory: pathlib.Path
    head: Head | None = None
    odin_pairs: tuple[tuple[float, float], ...] = ()  # (temperature, epsilon) per odin column
    # The checkpoint the predictions come from; None in manifests written before it was recorded.
    checkpoint: trained_steps.Checkpoint | None = None

    def names(self, role: str) -> list[str]:
        """The names of the splits with `role`, in manifest order."""
        return [name for name, split in self.splits.items() if split.role == role]

    @property
    def id_test_name(self) -> str:
        return self.names("id_test")[0]


def _path(directory) -> pathlib.Path:
    # os.fspath accepts str, pathlib and etils.epath local paths alike.
    return pathlib.Path(os.fspath(directory))


def _check_run(where: str, run: Mapping) -> None:
    if (problem := run_summary.problem(run)) is not None:
        raise PredictionsError(f"{where}: {problem}")


def check_run_matches_config(manifest_path, run: Mapping, config: Mapping,
                             config_path) -> None:
    """PredictionsError unless the manifest's `run` agrees with the run's stored config
    (`config.json` as JSON data) on every field that both record: predictions that do not
    are another run's, or were edited. A config too old to summarise is not compared."""
    try:
        expected = RunSummary.from_config(run_summary.AttributeView(config)).to_json()
    except (KeyError, TypeError, ValueError):
        return
    for key, value in expected.items():
        if key in run and run[key] != value:
            raise PredictionsError(
                f"{manifest_path}: field 'run.{key}' is {run[key]!r}, but {config_path} says "
                f"{value!r}; these predictions are not this run's (predict rewrites them)")


# ---------------------------------------------------------------------------------------------
# Validation shared by write (in memory) and read (from files).


def check_split_name(name: Any, where: str) -> None:
    """PredictionsError unless `name` can name a split (and its file, `<name>.npz`)."""
    if not isinstance(name, str) or not name or name.startswith(".") or "/" in name \
            or "\\" in name or name != name.strip():
        raise PredictionsError(f"{where}: split name {name!r} is not a plain file-name stem")


def _check_array(where: str, field: str, array: Any, dtype, ndim: int) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise PredictionsError(f"{where}: field '{field}' is not an array")
    if array.dtype != dtype:
        raise PredictionsError(
            f"{where}: field '{field}' has dtype {array.dtype}, expected {np.dtype(dtype)}")
    if array.ndim != ndim:
        raise PredictionsError(
            f"{where}: field '{field}' has shape {array.shape}, expected {ndim} dimensions")
    return array


def _check_finite(where: str, field: str, array: np.ndarray) -> None:
    if not np.isfinite(array).all():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise PredictionsError(f"{where}: field '{field}' has {bad} NaN or Inf values")


def _check_split(where: str, role: str, logits, labels, features, num_classes: int,
                 num_examples: int | None = None) -> None:
    """Checks one split's arrays; `where` names the file (or the in-memory split) at fault."""
    if role not in ROLES:
        raise PredictionsError(f"{where}: field 'role' is {role!r}, expected one of "
                               f"{', '.join(ROLES)}")
    logits = _check_array(where, "logits", logits, np.float32, 2)
    labels = _check_array(where, "labels", labels, np.int32, 1)
    n = logits.shape[0]
    if n == 0:
        raise PredictionsError(f"{where}: field 'logits' is empty (0 examples)")
    if logits.shape[1] != num_classes:
        raise PredictionsError(f"{where}: field 'logits' has {logits.shape[1]} columns, "
                               f"expected num_classes = {num_classes}")
    if labels.shape[0] != n:
        raise PredictionsError(f"{where}: field 'labels' has {labels.shape[0]} entries, "
                               f"but 'logits' has {n} rows")
    if num_examples is not None and n != num_examples:
        raise PredictionsError(f"{where}: field 'logits' has {n} rows, but the manifest's "
                               f"num_examples is {num_examples}")
    _check_finite(where, "logits", logits)
    if role == "ood_test":
        if (labels != -1).any():
            raise PredictionsError(
                f"{where}: field 'labels' must be -1 everywhere in an ood_test split, "
                f"found {int(labels[labels != -1][0])}")
    elif labels.min() < 0 or labels.max() >= num_classes:
        bad = labels[(labels < 0) | (labels >= num_classes)][0]
        raise PredictionsError(f"{where}: field 'labels' has value {int(bad)} outside "
                               f"[0, {num_classes}) in a {role} split")
    if features is not None:
        features = _check_array(where, "features", features, np.float32, 2)
        if features.shape[0] != n:
            raise PredictionsError(f"{where}: field 'features' has {features.shape[0]} rows, "
                                   f"but 'logits' has {n}")
        _check_finite(where, "features", features)


def _check_feature_widths(features: Mapping[str, np.ndarray | None], where) -> None:
    """Feature-based scores compare rows across splits: every split's features have one width."""
    widths = {name: f.shape[1] for name, f in features.items() if f is not None}
    if len(set(widths.values())) > 1:
        first, *others = widths
        other = next(n for n in others if widths[n] != widths[first])
        raise PredictionsError(f"{where(other)}: field 'features' has {widths[other]} columns, "
                               f"but split '{first}' has {widths[first]}")


def _check_roles(where: str, roles: Mapping[str, str]) -> None:
    for name, role in roles.items():
        if role not in ROLES:
            raise PredictionsError(f"{where}: field 'splits.{name}.role' is {role!r}, "
                                   f"expected one of {', '.join(ROLES)}")
    id_tests = [name for name, role in roles.items() if role == "id_test"]
    if len(id_tests) != 1:
        raise PredictionsError(f"{where}: field 'splits' must have exactly one id_test split, "
                               f"found {len(id_tests)}"
                               + (f" ({', '.join(id_tests)})" if id_tests else ""))


def _check_num_classes(where: str, num_classes: Any) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer) \
            or num_classes < 1:
        raise PredictionsError(
            f"{where}: field 'num_classes' is {num_classes!r}, expected a positive integer")
    return int(num_classes)


def _check_head(where: str, kernel, bias, num_classes: int) -> None:
    kernel = _check_array(where, "kernel", kernel, np.float32, 2)
    bias = _check_array(where, "bias", bias, np.float32, 1)
    if kernel.shape[1] != num_classes or kernel.shape[0] == 0:
        raise PredictionsError(f"{where}: field 'kernel' has shape {kernel.shape}, expected "
                               f"[D, num_classes = {num_classes}] with D > 0")
    if bias.shape[0] != num_classes:
        raise PredictionsError(f"{where}: field 'bias' has {bias.shape[0]} entries, expected "
                               f"num_classes = {num_classes}")
    _check_finite(where, "kernel", kernel)
    _check_finite(where, "bias", bias)


def _check_head_matches_features(where: str, features, feature_dim: int) -> None:
    if features is not None and features.shape[1] != feature_dim:
        raise PredictionsError(f"{where}: field 'features' has {features.shape[1]} columns, but "
                               f"the head's kernel has {feature_dim} rows")


# The splits' ODIN arrays, named as the Split fields that hold them.
ODIN_FIELD = "odin_log_ratio"  # format v3
ODIN_V2_FIELD = "odin"


def _check_odin_pairs(where: str, pairs: Any) -> tuple[tuple[float, float], ...]:
    """[[T, eps], ...] with T > 0 and eps >= 0, finite and distinct."""
    def number(x):
        return isinstance(x, int | float | np.floating | np.integer) and not isinstance(x, bool)

    if not isinstance(pairs, list | tuple) or not pairs:
        raise PredictionsError(f"{where}: field 'odin.pairs' is {pairs!r}, expected a non-empty "
                               "list of [temperature, epsilon]")
    out = []
    for pair in pairs:
        if not isinstance(pair, list | tuple) or len(pair) != 2 or not all(map(number, pair)) \
                or not np.isfinite(pair).all() or pair[0] <= 0 or pair[1] < 0:
            raise PredictionsError(f"{where}: field 'odin.pairs' has entry {pair!r}, expected "
                                   "[temperature > 0, epsilon >= 0]")
        out.append((float(pair[0]), float(pair[1])))
    if len(set(out)) != len(out):
        raise PredictionsError(f"{where}: field 'odin.pairs' lists a pair twice")
    return tuple(out)


def _check_odin(where: str, field: str, odin, num_pairs: int, num_examples: int,
                num_classes: int) -> None:
    """The ODIN arrays: `odin_log_ratio` (v3) or `odin` (v2), one column per pair."""
    if num_pairs == 0:
        if odin is not None:
            raise PredictionsError(f"{where}: field '{field}' is present, but the manifest lists "
                                   "no ODIN pairs")
        return
    if odin is None:
        raise PredictionsError(f"{where}: field '{field}' is missing (the manifest lists "
                               f"{num_pairs} ODIN pairs)")
    odin = _check_array(where, field, odin, np.float32, 2)
    if odin.shape != (num_examples, num_pairs):
        raise PredictionsError(f"{where}: field '{field}' has shape {odin.shape}, expected "
                               f"({num_examples}, {num_pairs}): one column per ODIN pair")
    _check_finite(where, field, odin)
    if field == ODIN_V2_FIELD:
        if not ((odin > 0) & (odin <= 1)).all():
            raise PredictionsError(f"{where}: field 'odin' has values outside (0, 1] (ODIN "
                                   "scores are softmax probabilities)")
    # log(K p) for a max softmax p in [1/K, 1]; float32 rounding may pass log K by a few ulp.
    elif not ((odin >= 0) & (odin <= np.log(num_classes) * (1 + 1e-6))).all():
        raise PredictionsError(f"{where}: field '{field}' has values outside [0, log K = "
                               f"{np.log(num_classes):.6g}] (log(K · max softmax))")


def _checkpoint_record(where: str, record) -> dict | None:
    """The manifest's `checkpoint` (`trained_steps`) as JSON data, validated; None for none."""
    if isinstance(record, trained_steps.Checkpoint):
        record = record.to_json()
    return None if record is None else trained_steps.check(where, record,
                                                           PredictionsError).to_json()


# ---------------------------------------------------------------------------------------------
# Writing.


def check_replaceable(directory) -> None:
    """PredictionsError unless `write(directory)` may replace what is there: nothing, or a
    predictions directory (one with a manifest, or empty). Checked before a run trains."""
    directory = _path(directory)
    atomic_files.refuse_file(directory, "a predictions directory")
    if directory.is_dir() and not (directory / MANIFEST).exists() and any(directory.iterdir()):
        raise PredictionsError(f"{directory}: not a predictions directory (no {MANIFEST}), "
                               f"which the predictions replace as a whole; move it elsewhere")


def write(directory, splits: Mapping[str, Split], *, num_classes: int,
          run: RunSummary | Mapping, head: Head | None = None, odin_pairs=(),
          checkpoint: trained_steps.Checkpoint | Mapping | None = None) -> None:
    """Writes `splits` to `directory` (`<run_dir>/predictions`), validating them first.

    `head` is the final dense layer (written to head.npz); `odin_pairs` the (temperature,
    epsilon) of each column of the splits' `odin` arrays; `checkpoint` the step of the model and
    the run's number of steps (`trained_steps`). Nothing is written when a split is invalid.
    The new directory replaces the old one as a whole (`atomic_files.replacing_directory`):
    files of splits no longer written go with it.
    """
    directory = _path(directory)
    check_replaceable(directory)
    num_classes = _check_num_classes("num_classes", num_classes)
    if not splits:
        raise PredictionsError("splits: no splits to write")
    odin_pairs = _check_odin_pairs("odin_pairs", list(odin_pairs)) if len(odin_pairs) else ()
    if head is not None:
        head = Head(np.asarray(head.kernel), np.asarray(head.bias))
        _check_head("head", head.kernel, head.bias, num_classes)
    arrays = _checked_arrays(splits, num_classes, len(odin_pairs), head)
    manifest_text = _manifest_text(splits, arrays, num_classes=num_classes, run=run, head=head,
                                   odin_pairs=odin_pairs, checkpoint=checkpoint)

    # The whole directory is written beside the old one and switched in one rename: a reader,
    # a killed process or a full disk sees the old set of files or the new one, never a mix.
    with atomic_files.replacing_directory(directory) as new:
        for name, fields in arrays.items():
            with open(new / f"{name}.npz", "wb") as f:
                np.savez(f, **fields)
        if head is not None:
            with open(new / HEAD_FILE, "wb") as f:
                np.savez(f, kernel=head.kernel, bias=head.bias)
        (new / MANIFEST).write_text(manifest_text)


def _checked_arrays(splits: Mapping[str, Split], num_classes: int, num_odin_pairs: int,
                    head: Head | None) -> dict[str, dict[str, np.ndarray]]:
    """{split: {field: array}} of the fields written, each split checked on its own and all of
    them together (roles, feature widths)."""
    arrays = {}
    for name, split in splits.items():
        check_split_name(name, f"split {name!r}")
        if head is not None and f"{name}.npz" == HEAD_FILE:
            raise PredictionsError(f"split {name!r}: its file would be the head's ({HEAD_FILE})")
        where = f"split '{name}'"
        logits = np.asarray(split.logits)
        labels = np.asarray(split.labels)
        features = None if split.features is None else np.asarray(split.features)
        _check_split(where, split.role, logits, labels, features, num_classes)
        if split.odin is not None:
            raise PredictionsError(f"{where}: field 'odin' (format v2's ODIN scores) is read, "
                                   f"never written; give the log-ratios as '{ODIN_FIELD}'")
        odin = None if split.odin_log_ratio is None else np.asarray(split.odin_log_ratio)
        _check_odin(where, ODIN_FIELD, odin, num_odin_pairs, logits.shape[0], num_classes)
        if head is not None:
            _check_head_matches_features(where, features, head.kernel.shape[0])
        arrays[name] = {"logits": logits, "labels": labels}
        if features is not None:
            arrays[name]["features"] = features
        if odin is not None:
            arrays[name][ODIN_FIELD] = odin
    _check_roles("splits", {name: split.role for name, split in splits.items()})
    _check_feature_widths({name: fields.get("features") for name, fields in arrays.items()},
                          lambda name: f"split '{name}'")
    return arrays


def _manifest_text(splits: Mapping[str, Split], arrays: Mapping[str, Mapping[str, np.ndarray]],
                   *, num_classes: int, run: RunSummary | Mapping, head: Head | None,
                   odin_pairs, checkpoint: trained_steps.Checkpoint | Mapping | None) -> str:
    """manifest.json's text (section 5), its run block checked."""
    manifest = {
        "format": FORMAT,
        "num_classes": num_classes,
        "splits": {name: {"file": f"{name}.npz", "role": split.role,
                          "num_examples": int(arrays[name]["logits"].shape[0])}
                   for name, split in splits.items()},
        "run": run.to_json() if isinstance(run, RunSummary) else dict(run),
    }
    if head is not None:
        manifest["head"] = {"file": HEAD_FILE}
    if odin_pairs:
        manifest["odin"] = {"pairs": [list(pair) for pair in odin_pairs]}
    if checkpoint is not None:
        manifest[trained_steps.FIELD] = _checkpoint_record("checkpoint", checkpoint)
    try:
        manifest_text = json.dumps(manifest, indent=2)
    except (TypeError, ValueError) as e:
        raise PredictionsError(f"run: not JSON-serializable ({e})") from None
    _check_run("run", manifest["run"])
    return manifest_text


# ---------------------------------------------------------------------------------------------
# Reading.


# Where a directory can be opened and files opened relative to it (Linux, macOS, BSD): a reader
# then holds the version it opened, whatever a writer switches in meanwhile.
_DIRECTORY_FDS = hasattr(os, "O_DIRECTORY") and os.open in os.supports_dir_fd
# Reads of a directory that writers replace faster than it is read end after this many tries.
_MAX_READS = 20


class _Version:
    """The files of one version of a predictions directory, as it was when opened.

    A writer switches a whole new directory in by one rename and then deletes the old one
    (`atomic_files.replacing_directory`), so a reader that opened the manifest and then a split
    by path could take them from two versions. Here the directory is opened once and every file
    relative to that descriptor: all come from the version opened, or are missing because its
    writer deleted them since, which `switched` tells from a damaged directory. Where the
    platform has no directory descriptors (Windows), files are opened by path and `switched`
    (the path's directory no longer the one opened) is asked after every read.
    """

    def __init__(self, directory: pathlib.Path):
        self.directory = directory
        self._fd = None
        try:
            if _DIRECTORY_FDS:
                self._fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
                status = os.fstat(self._fd)
            else:
                status = os.stat(directory)
        except (FileNotFoundError, NotADirectoryError):
            status = None
        if status is None or not stat.S_ISDIR(status.st_mode):
            raise PredictionsError(f"{directory}: no such predictions directory")
        self._identity = (status.st_dev, status.st_ino)

    def open(self, name: str) -> BinaryIO | None:
        """The file `name` of this version, open for reading; None when it is not a file."""
        try:
            if self._fd is None:
                if not (self.directory / name).is_file():  # Windows opens no directory
                    return None
                file = open(self.directory / name, "rb")  # noqa: SIM115 (returned open)
            else:
                file = os.fdopen(os.open(name, os.O_RDONLY, dir_fd=self._fd), "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            file.close()
            return None
        return file

    def switched(self) -> bool:
        """Whether the path names another directory now (or none) than the one opened."""
        try:
            status = os.stat(self.directory)
        except OSError:
            return True
        return (status.st_dev, status.st_ino) != self._identity

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)


_T = TypeVar("_T")


def _one_version(directory, read: Callable[[_Version], _T]) -> _T:
    """`read` of one version of `directory`, read again when a writer switched another in while
    it read: what it found missing or inconsistent then was the writer's doing."""
    directory = _path(directory)
    for attempt in range(_MAX_READS):
        version = _Version(directory)
        try:
            result = read(version)
        except PredictionsError:
            if attempt + 1 < _MAX_READS and version.switched():
                continue
            raise
        finally:
            version.close()
        if _DIRECTORY_FDS or not version.switched():
            return result
    raise PredictionsError(f"{directory}: rewritten {_MAX_READS} times while it was read; read "
                           "it again once its writer is done")


def read_manifest(directory) -> dict:
    """The validated manifest of `directory`, without reading the array files."""
    return _one_version(directory, _read_manifest)


def _read_manifest(version: _Version) -> dict:
    path = version.directory / MANIFEST
    file = version.open(MANIFEST)
    if file is None:
        raise PredictionsError(f"{path}: missing (no predictions manifest)")
    with file:
        text = file.read()
    try:
        manifest = json.loads(text.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PredictionsError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise PredictionsError(f"{path}: expected a JSON object at the top level")
    if manifest.get("format") not in READABLE_FORMATS:
        raise PredictionsError(f"{path}: field 'format' is {manifest.get('format')!r}, "
                               f"expected one of {', '.join(map(repr, READABLE_FORMATS))}")
    _check_num_classes(str(path), manifest.get("num_classes"))
    splits = manifest.get("splits")
    if not isinstance(splits, dict) or not splits:
        raise PredictionsError(f"{path}: field 'splits' must be a non-empty object")
    for name, entry in splits.items():
        check_split_name(name, f"{path}: field 'splits'")
        if not isinstance(entry, dict):
            raise PredictionsError(f"{path}: field 'splits.{name}' must be an object")
        for key, kind in (("file", str), ("role", str), ("num_examples", int)):
            value = entry.get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise PredictionsError(f"{path}: field 'splits.{name}.{key}' is {value!r}, "
                                       f"expected a {kind.__name__}")
        file = entry["file"]
        if pathlib.PurePath(file).name != file or file.startswith("."):
            raise PredictionsError(f"{path}: field 'splits.{name}.file' is {file!r}, "
                                   f"expected a file name inside the predictions directory")
    _check_roles(str(path), {name: entry["role"] for name, entry in splits.items()})
    files: dict[str, str] = {}
    for name, entry in splits.items():
        if entry["file"] in files:
            raise PredictionsError(f"{path}: field 'splits.{name}.file' is {entry['file']!r}, "
                                   f"the file of split '{files[entry['file']]}' too")
        files[entry["file"]] = name
    run = manifest.get("run", {})
    if not isinstance(run, dict):
        raise PredictionsError(f"{path}: field 'run' must be an object")
    _check_run(str(path), run)
    _checkpoint_record(str(path), manifest.get(trained_steps.FIELD))
    if manifest["format"] == FORMAT_V1:
        # v1 knew neither the head nor ODIN arrays; anything under those names is not ours.
        return {k: v for k, v in manifest.items() if k not in ("head", "odin")}
    if "head" in manifest:
        head = manifest["head"]
        file = head.get("file") if isinstance(head, dict) else None
        if not isinstance(file, str) or pathlib.PurePath(file).name != file \
                or file.startswith("."):
            raise PredictionsError(f"{path}: field 'head.file' is {file!r}, expected a file "
                                   "name inside the predictions directory")
    if "odin" in manifest:
        odin = manifest["odin"]
        _check_odin_pairs(str(path), odin.get("pairs") if isinstance(odin, dict) else odin)
    return manifest


def _load_npz(version: _Version, name: str, with_features: bool,
              required=("logits", "labels"), optional=()) -> dict[str, np.ndarray]:
    path = version.directory / name
    file = version.open(name)
    if file is None:
        raise PredictionsError(f"{path}: missing (listed in the manifest)")
    try:
        # Every array is read inside the block: none is left to read lazily from the file.
        with file, np.load(file, allow_pickle=False) as npz:
            keys = [*required, *optional] + (["features"] if with_features else [])
            for key in required:
                if key not in npz.files:
                    raise PredictionsError(f"{path}: field '{key}' is missing")
            return {key: npz[key] for key in keys if key in npz.files}
    except PredictionsError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise PredictionsError(f"{path}: not a readable .npz file ({message})") from None


def read(directory, *, features: bool = True) -> Predictions:
    """Reads and validates `directory` (`<run_dir>/predictions`).

    With `features=False` the feature arrays are neither loaded nor checked, which saves memory
    when only logit-based scores are wanted. Every file comes from one version of the directory,
    however often a writer replaces it meanwhile (`_Version`).
    """
    return _one_version(directory, lambda version: _read(version, features))


def _read(version: _Version, features: bool) -> Predictions:
    directory = version.directory
    manifest = _read_manifest(version)
    num_classes = int(manifest["num_classes"])
    head = None
    if "head" in manifest:
        path = directory / manifest["head"]["file"]
        arrays = _load_npz(version, manifest["head"]["file"], False, required=("kernel", "bias"),
                           optional=())
        _check_head(str(path), arrays["kernel"], arrays["bias"], num_classes)
        head = Head(arrays["kernel"], arrays["bias"])
    odin_pairs = ()
    if "odin" in manifest:
        odin_pairs = _check_odin_pairs(str(directory / MANIFEST), manifest["odin"]["pairs"])
    odin_field = ODIN_V2_FIELD if manifest["format"] == FORMAT_V2 else ODIN_FIELD
    splits = {}
    for name, entry in manifest["splits"].items():
        path = directory / entry["file"]
        # ODIN arrays are read whether or not the manifest lists pairs: a column per pair.
        arrays = _load_npz(version, entry["file"], features, optional=(odin_field,)
                           if manifest["format"] != FORMAT_V1 else ())
        _check_split(str(path), entry["role"], arrays["logits"], arrays["labels"],
                     arrays.get("features"), num_classes, entry["num_examples"])
        _check_odin(str(path), odin_field, arrays.get(odin_field), len(odin_pairs),
                    entry["num_examples"], num_classes)
        if head is not None:
            _check_head_matches_features(str(path), arrays.get("features"),
                                         head.kernel.shape[0])
        # The arrays' names are the Split fields' names.
        splits[name] = Split(role=entry["role"], logits=arrays["logits"],
                             labels=arrays["labels"], features=arrays.get("features"),
                             **{odin_field: arrays.get(odin_field)})
    _check_feature_widths({name: split.features for name, split in splits.items()},
                          lambda name: str(directory / manifest["splits"][name]["file"]))
    checkpoint = manifest.get(trained_steps.FIELD)
    return Predictions(num_classes=num_classes, run=manifest.get("run", {}), splits=splits,
                       directory=directory, head=head, odin_pairs=odin_pairs,
                       checkpoint=checkpoint and trained_steps.Checkpoint(**checkpoint))


def validate(directory) -> None:
    """Raises PredictionsError when `directory` does not hold valid v1, v2 or v3 predictions."""
    read(directory, features=True)

