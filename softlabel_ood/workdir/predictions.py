"""The predictions directory, format v3 (DESIGN.md §5): write, read and validate.

A run's outputs on every split live in `<run_dir>/predictions/`:

    manifest.json    {"format": FORMAT, "num_classes": K, "splits": {name: {"file", "role",
                      "num_examples"}}, "run": {...}, optionally "head": {"file": "head.npz"}
                      and "odin": {"pairs": [[T, eps], ...]}}
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
switched in one rename, so a reader sees either the previous directory or the new one, whole.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from softlabel_ood import methods
from softlabel_ood.cli_errors import UserError
from softlabel_ood.workdir import atomic_files

ROLES = ("id_test", "ood_test", "id_train")
FORMAT = "softlabel_ood.predictions/v3"
FORMAT_V2 = "softlabel_ood.predictions/v2"
FORMAT_V1 = "softlabel_ood.predictions/v1"
READABLE_FORMATS = (FORMAT_V1, FORMAT_V2, FORMAT)
MANIFEST = "manifest.json"
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

    def names(self, role: str) -> list[str]:
        """The names of the splits with `role`, in manifest order."""
        return [name for name, split in self.splits.items() if split.role == role]

    @property
    def id_test_name(self) -> str:
        return self.names("id_test")[0]


def _path(directory) -> pathlib.Path:
    # os.fspath accepts str, pathlib and etils.epath local paths alike.
    return pathlib.Path(os.fspath(directory))


# ---------------------------------------------------------------------------------------------
# The manifest's "run": what was trained, written and read through this one definition.


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """The manifest's `run` object. Fields a method does not read are empty ("" or None), so
    that a summary never shows a teacher or an OE weight that did not shape the model."""

    dataset: str = ""
    model: str = ""
    method: str = ""
    alpha: float = 0.0  # label_smoothing: α of ls, the incorrect-class mass of kd_incorrect
    teacher: str = ""  # kd.teacher_workdir (kd, kd_incorrect)
    kd_temperature: float | None = None  # kd, kd_incorrect
    kd_weight: float | None = None  # kd
    oe_dataset: str = ""  # oe
    oe_weight: float | None = None  # oe
    finetune_from: str = ""  # oe.finetune_from (oe fine-tuning)
    num_epochs: int = 0
    seed: int = 0

    @classmethod
    def from_config(cls, config) -> RunSummary:
        """From a resolved run config (an ml_collections.ConfigDict; read by attribute)."""
        method = config.method

        def used(field: str, value, unused):
            # A field the method does not read is recorded as unused, whatever its value.
            return value if methods.reads(method, field) else unused

        return cls(
            dataset=config.dataset, model=config.model, method=method,
            alpha=float(config.label_smoothing),
            teacher=used("kd.teacher_workdir", config.kd.teacher_workdir, ""),
            kd_temperature=used("kd.temperature", float(config.kd.temperature), None),
            kd_weight=used("kd.weight", float(config.kd.weight), None),
            oe_dataset=used("oe_dataset", config.oe_dataset, ""),
            oe_weight=used("oe.weight", float(config.oe.weight), None),
            finetune_from=used("oe.finetune_from", config.oe.finetune_from or "", ""),
            num_epochs=int(config.num_epochs), seed=int(config.seed))

    @classmethod
    def from_json(cls, data: Mapping) -> RunSummary:
        """From a manifest's `run` (older manifests lack some keys: they read as empty)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


# The summary's fields that record a config field which only some methods read (methods.reads),
# with the value they hold for the other methods.
_METHOD_FIELDS = {"alpha": ("label_smoothing", 0.0), "teacher": ("kd.teacher_workdir", ""),
                  "kd_temperature": ("kd.temperature", None), "kd_weight": ("kd.weight", None),
                  "oe_dataset": ("oe_dataset", ""), "oe_weight": ("oe.weight", None),
                  "finetune_from": ("oe.finetune_from", "")}


def _number(x) -> bool:
    return isinstance(x, int | float | np.floating | np.integer) and not isinstance(x, bool) \
        and bool(np.isfinite(x))


def _check_run(where: str, run: Mapping) -> None:
    """The manifest's `run` (a RunSummary; keys that older manifests lack read as empty): each
    value of its type and range, the method one of softlabel_ood.methods, and the fields that
    the method does not read empty, as `RunSummary.from_config` records them."""
    def refuse(key: str, expected: str):
        raise PredictionsError(f"{where}: field 'run.{key}' is {run[key]!r}, expected {expected}")

    rules = {
        "dataset": ("a string", lambda v: isinstance(v, str)),
        "model": ("a string", lambda v: isinstance(v, str)),
        "method": (f"one of {', '.join(methods.BY_NAME)} (or empty)",
                   lambda v: isinstance(v, str) and (v == "" or v in methods.BY_NAME)),
        "alpha": ("a number in [0, 1)", lambda v: _number(v) and 0 <= v < 1),
        "teacher": ("a string", lambda v: isinstance(v, str)),
        "kd_temperature": ("a number > 0 or null", lambda v: v is None or (_number(v) and v > 0)),
        "kd_weight": ("a number in [0, 1] or null",
                      lambda v: v is None or (_number(v) and 0 <= v <= 1)),
        "oe_dataset": ("a string", lambda v: isinstance(v, str)),
        "oe_weight": ("a number >= 0 or null", lambda v: v is None or (_number(v) and v >= 0)),
        "finetune_from": ("a string", lambda v: isinstance(v, str)),
        "num_epochs": ("an integer >= 0", lambda v: _is_count(v)),
        "seed": ("an integer >= 0", lambda v: _is_count(v)),
    }
    for key, (expected, ok) in rules.items():
        if key in run and not ok(run[key]):
            refuse(key, expected)
    method = run.get("method", "")
    for key, (field, empty) in _METHOD_FIELDS.items():
        if method and key in run and not methods.reads(method, field) and run[key] != empty:
            refuse(key, f"{empty!r}: method {method} does not read {field}")


class _AttributeView:
    """A config's JSON data read by attribute, as `RunSummary.from_config` reads a ConfigDict."""

    def __init__(self, data: Mapping):
        self._data = data

    def __getattr__(self, name: str):
        value = self._data[name]
        return _AttributeView(value) if isinstance(value, Mapping) else value


def _is_count(v) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 0


def check_run_matches_config(manifest_path, run: Mapping, config: Mapping,
                             config_path) -> None:
    """PredictionsError unless the manifest's `run` agrees with the run's stored config
    (`config.json` as JSON data) on every field that both record: predictions that do not
    are another run's, or were edited. A config too old to summarise is not compared."""
    try:
        expected = RunSummary.from_config(_AttributeView(config)).to_json()
    except (KeyError, TypeError, ValueError):
        return
    for key, value in expected.items():
        if key in run and run[key] != value:
            raise PredictionsError(
                f"{manifest_path}: field 'run.{key}' is {run[key]!r}, but {config_path} says "
                f"{value!r}; these predictions are not this run's (predict rewrites them)")


# ---------------------------------------------------------------------------------------------
# Validation shared by write (in memory) and read (from files).


def _check_name(name: Any, where: str) -> None:
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
          run: RunSummary | Mapping, head: Head | None = None, odin_pairs=()) -> None:
    """Writes `splits` to `directory` (`<run_dir>/predictions`), validating them first.

    `head` is the final dense layer (written to head.npz); `odin_pairs` the (temperature,
    epsilon) of each column of the splits' `odin` arrays. Nothing is written when a split is
    invalid. The new directory replaces the old one as a whole
    (`atomic_files.replacing_directory`): files of splits no longer written go with it.
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
    arrays = {}
    for name, split in splits.items():
        _check_name(name, f"split {name!r}")
        where = f"split '{name}'"
        logits = np.asarray(split.logits)
        labels = np.asarray(split.labels)
        features = None if split.features is None else np.asarray(split.features)
        _check_split(where, split.role, logits, labels, features, num_classes)
        if split.odin is not None:
            raise PredictionsError(f"{where}: field 'odin' (format v2's ODIN scores) is read, "
                                   f"never written; give the log-ratios as '{ODIN_FIELD}'")
        odin = None if split.odin_log_ratio is None else np.asarray(split.odin_log_ratio)
        _check_odin(where, ODIN_FIELD, odin, len(odin_pairs), logits.shape[0], num_classes)
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
    try:
        manifest_text = json.dumps(manifest, indent=2)
    except (TypeError, ValueError) as e:
        raise PredictionsError(f"run: not JSON-serializable ({e})") from None
    _check_run("run", manifest["run"])

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


# ---------------------------------------------------------------------------------------------
# Reading.


def read_manifest(directory) -> dict:
    """The validated manifest of `directory`, without reading the array files."""
    directory = _path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise PredictionsError(f"{directory}: no such predictions directory")
    if not path.is_file():
        raise PredictionsError(f"{path}: missing (no predictions manifest)")
    try:
        manifest = json.loads(path.read_text())
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
        _check_name(name, f"{path}: field 'splits'")
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


def _load_npz(path: pathlib.Path, with_features: bool,
              required=("logits", "labels"), optional=()) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise PredictionsError(f"{path}: missing (listed in the manifest)")
    try:
        with np.load(path, allow_pickle=False) as npz:
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
    when only logit-based scores are wanted.
    """
    directory = _path(directory)
    manifest = read_manifest(directory)
    num_classes = int(manifest["num_classes"])
    head = None
    if "head" in manifest:
        path = directory / manifest["head"]["file"]
        arrays = _load_npz(path, False, required=("kernel", "bias"), optional=())
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
        arrays = _load_npz(path, features, optional=(odin_field,)
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
    return Predictions(num_classes=num_classes, run=manifest.get("run", {}), splits=splits,
                       directory=directory, head=head, odin_pairs=odin_pairs)


def validate(directory) -> None:
    """Raises PredictionsError when `directory` does not hold valid v1, v2 or v3 predictions."""
    read(directory, features=True)

