"""A model's outputs saved elsewhere (a PyTorch or Keras model's logits), as predictions splits.

`import_outputs` and `scoring.score_outputs` read them through here: arrays in, the Splits and
Head of the predictions format (DESIGN.md §5) out, with every check made before any array's
data is read, where that can be: dtypes and shapes from the .npy headers, then the values (NaN,
inf, labels in [0, K)). Each problem is one line naming the file (or argument) and the array.

    id_test, id_train   .npz with `logits` [N, K] and `labels` [N]; optionally `features` [N, D]
    an OOD split        .npz with `logits` (and optionally `features`), or .npy of logits alone
    the head            .npz with `kernel` [D, K] and `bias` [K]: logits = features @ kernel + bias

Logits and features of any float dtype are stored as float32, labels of any integer dtype as
int32. Numpy only: no JAX, no training side.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import zipfile
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from softlabel_ood.cli_errors import UserError
from softlabel_ood.workdir import predictions

ID_TEST = "id_test"
ID_TRAIN = "id_train"
# Split names an OOD set may not take: the ID splits' and the roles' names, and the head's file.
RESERVED_NAMES = (*predictions.ROLES, pathlib.Path(predictions.HEAD_FILE).stem)
# Size bounds, checked from the headers: example indices are int32 (as in training), no
# classifier has a million classes or a penultimate layer that wide, and an array that would
# take more than 32 GiB as float32 is a mistake (images saved as features, say) or cannot be
# scored on one host.
MAX_ROWS = 2**31 - 1
MAX_COLUMNS = 2**20
MAX_ARRAY_BYTES = 2**35


class OutputsError(UserError):
    """Arrays that cannot be imported as a model's outputs."""


@dataclasses.dataclass(frozen=True)
class Array:
    """One array before its data is read: its dtype and shape, and how to read it."""

    where: str  # how an error names it: "<file>: array 'logits'", or an argument's name
    dtype: np.dtype
    shape: tuple[int, ...]
    load: Callable[[], np.ndarray]


@dataclasses.dataclass(frozen=True)
class SplitArrays:
    name: str
    role: str  # one of predictions.ROLES
    logits: Array
    labels: Array | None = None  # required for the ID splits, ignored for OOD ones
    features: Array | None = None


def in_memory(where: str, array) -> Array:
    """An array given in Python (numpy, or anything np.asarray takes)."""
    array = np.asarray(array)
    return Array(where, array.dtype, array.shape, lambda: array)


# ---------------------------------------------------------------------------------------------
# Files: their arrays' headers, without the data.


def _reason(error: Exception) -> str:
    """An exception's first line, or its type's name when it has no message."""
    return str(error).splitlines()[0] if str(error).strip() else type(error).__name__


def _header(file, where: str) -> tuple[np.dtype, tuple[int, ...]]:
    try:
        version = np.lib.format.read_magic(file)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) \
            else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(file)
    except (ValueError, OSError, EOFError) as e:
        raise OutputsError(f"{where} is not a readable .npy array ({_reason(e)})") \
            from None
    if dtype.hasobject:
        raise OutputsError(f"{where} holds Python objects (a pickle), which are never loaded; "
                           "save numeric arrays")
    return dtype, tuple(shape)


def _read_npy(path: pathlib.Path, where: str, member: str | None = None) -> np.ndarray:
    try:
        if member is None:
            return np.load(path, allow_pickle=False)
        with np.load(path, allow_pickle=False) as npz:
            return npz[member]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise OutputsError(f"{where} cannot be read ({_reason(e)})") from None


def file_arrays(path: os.PathLike | str) -> dict[str, Array]:
    """{name: Array} of an .npz file, or {"logits": Array} of an .npy file; OutputsError for
    another kind of file, a missing one, or an array that holds Python objects."""
    path = pathlib.Path(os.fspath(path))
    if path.suffix not in (".npz", ".npy"):
        raise OutputsError(f"{path}: neither .npz nor .npy (save arrays with np.savez or np.save)")
    if not path.is_file():
        raise OutputsError(f"{path}: no such file")
    if path.suffix == ".npy":
        where = f"{path}: array 'logits'"
        with open(path, "rb") as f:
            dtype, shape = _header(f, where)
        return {"logits": Array(where, dtype, shape, lambda: _read_npy(path, where))}
    arrays = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                name = member.removesuffix(".npy")
                where = f"{path}: array '{name}'"
                with archive.open(member) as f:
                    dtype, shape = _header(f, where)
                arrays[name] = Array(where, dtype, shape,
                                     lambda where=where, name=name: _read_npy(path, where, name))
    except (zipfile.BadZipFile, OSError) as e:
        raise OutputsError(f"{path}: not a readable .npz file ({_reason(e)})") \
            from None
    return arrays


def split_from_file(name: str, role: str, path: os.PathLike | str) -> SplitArrays:
    """The arrays of one split's file (the module docstring says which it holds)."""
    arrays = file_arrays(path)
    if "logits" not in arrays:
        raise OutputsError(f"{path}: array 'logits' is missing (it holds "
                           f"{', '.join(map(repr, arrays)) or 'no array'})")
    if role != "ood_test" and "labels" not in arrays:
        raise OutputsError(f"{path}: array 'labels' is missing (the {role} split needs the "
                           "class of each example)")
    return SplitArrays(name, role, arrays["logits"],
                       arrays.get("labels") if role != "ood_test" else None,
                       arrays.get("features"))


def head_from_file(path: os.PathLike | str) -> tuple[Array, Array]:
    """(kernel, bias) of a head's .npz file."""
    if pathlib.Path(os.fspath(path)).suffix != ".npz":
        raise OutputsError(f"{path}: not an .npz (the head is an .npz with arrays 'kernel' and "
                           "'bias')")
    arrays = file_arrays(path)
    for key in ("kernel", "bias"):
        if key not in arrays:
            raise OutputsError(f"{path}: array '{key}' is missing")
    return arrays["kernel"], arrays["bias"]


def sha256(path: os.PathLike | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Checks of dtypes and shapes (no data read), then of values.


def _check_kind(array: Array, kind: str, ndim: int, what: str) -> None:
    kinds = {"float": "f", "integer": "iu"}[kind]
    if array.dtype.kind not in kinds:
        raise OutputsError(f"{array.where} has dtype {array.dtype}, expected {kind}s ({what})")
    if len(array.shape) != ndim:
        raise OutputsError(f"{array.where} has shape {array.shape}, expected {ndim} "
                           f"dimension{'s' * (ndim > 1)} ({what})")
    rows = array.shape[0]
    if rows == 0:
        raise OutputsError(f"{array.where} is empty (0 rows)")
    if rows > MAX_ROWS or (ndim == 2 and array.shape[1] > MAX_COLUMNS):
        raise OutputsError(f"{array.where} has shape {array.shape}, beyond the bounds of "
                           f"{MAX_ROWS:,} rows and {MAX_COLUMNS:,} columns")
    if np.prod(array.shape, dtype=np.float64) * 4 > MAX_ARRAY_BYTES:
        raise OutputsError(f"{array.where} has shape {array.shape}, more than "
                           f"{MAX_ARRAY_BYTES // 2**30} GiB as float32")


def _check_split_shapes(split: SplitArrays) -> None:
    _check_kind(split.logits, "float", 2, "logits [N, K]")
    rows = split.logits.shape[0]
    if split.logits.shape[1] < 2:
        raise OutputsError(f"{split.logits.where} has shape {split.logits.shape}: a classifier "
                           "has at least 2 classes (logits [N, K], not scores [N, 1])")
    if split.role != "ood_test":
        if split.labels is None:
            raise OutputsError(f"{split.logits.where}: the {split.role} split needs labels")
        _check_kind(split.labels, "integer", 1, "class indices [N]")
        if split.labels.shape[0] != rows:
            raise OutputsError(f"{split.labels.where} has {split.labels.shape[0]} entries, but "
                               f"the logits have {rows} rows")
    if split.features is not None:
        _check_kind(split.features, "float", 2, "features [N, D]")
        if split.features.shape[0] != rows:
            raise OutputsError(f"{split.features.where} has {split.features.shape[0]} rows, but "
                               f"the logits have {rows}")


def check_names(names: Sequence[str], where: Callable[[str], str]) -> None:
    """OOD split names: distinct, plain file-name stems, none of RESERVED_NAMES."""
    seen = set()
    for name in names:
        if name in seen:
            raise OutputsError(f"{where(name)}: split name {name!r} is given twice")
        if name in RESERVED_NAMES:
            raise OutputsError(f"{where(name)}: split name {name!r} is reserved (the names "
                               f"{', '.join(RESERVED_NAMES)} are the ID splits' and roles')")
        try:
            predictions.check_split_name(name, where(name))
        except predictions.PredictionsError as e:
            raise OutputsError(str(e)) from None
        seen.add(name)


def check_shapes(splits: Sequence[SplitArrays], head: tuple[Array, Array] | None) -> int:
    """The number of classes K, once every split's arrays have the dtypes and shapes of the
    format and agree with each other and the head (one K, one feature width D)."""
    for split in splits:
        _check_split_shapes(split)
    first = splits[0]
    num_classes = first.logits.shape[1]
    for split in splits[1:]:
        if split.logits.shape[1] != num_classes:
            raise OutputsError(f"{split.logits.where} has {split.logits.shape[1]} columns "
                               f"(classes), but {first.logits.where} has {num_classes}")
    with_features = [s.features for s in splits if s.features is not None]
    for features in with_features[1:]:
        if features.shape[1] != with_features[0].shape[1]:
            raise OutputsError(f"{features.where} has {features.shape[1]} columns, but "
                               f"{with_features[0].where} has {with_features[0].shape[1]}")
    if head is not None:
        kernel, bias = head
        _check_kind(kernel, "float", 2, "kernel [D, K]")
        _check_kind(bias, "float", 1, "bias [K]")
        width = with_features[0].shape[1] if with_features else kernel.shape[0]
        if kernel.shape != (width, num_classes):
            raise OutputsError(f"{kernel.where} has shape {kernel.shape}, expected "
                               f"[D = {width} (the features' width), K = {num_classes}]")
        if bias.shape != (num_classes,):
            raise OutputsError(f"{bias.where} has shape {bias.shape}, expected [K = "
                               f"{num_classes}]")
    return num_classes


def _float32(array: Array) -> np.ndarray:
    values = array.load()
    with np.errstate(over="ignore"):
        out = values.astype(np.float32, order="C")  # as the format's writer saves them
    if not np.isfinite(out).all():
        bad = int(out.size - np.count_nonzero(np.isfinite(out)))
        beyond = " (or beyond float32's range)" if np.isfinite(values).all() else ""
        raise OutputsError(f"{array.where} has {bad} NaN or infinite values{beyond}")
    return out


def _labels(array: Array, num_classes: int) -> np.ndarray:
    values = array.load()
    outside = (values < 0) | (values >= num_classes)
    if outside.any():
        raise OutputsError(f"{array.where} has value {int(values[outside][0])} outside "
                           f"[0, K = {num_classes})")
    return values.astype(np.int32, order="C")


def load_split(split: SplitArrays, num_classes: int) -> predictions.Split:
    """The split's data, checked (finite, labels in [0, K)), in the format's dtypes."""
    logits = _float32(split.logits)
    if split.role == "ood_test":
        labels = np.full(logits.shape[0], -1, np.int32)
    else:
        labels = _labels(split.labels, num_classes)
    features = None if split.features is None else _float32(split.features)
    return predictions.Split(split.role, logits, labels, features)


def load(splits: Sequence[SplitArrays], head: tuple[Array, Array] | None
         ) -> tuple[int, dict[str, predictions.Split], predictions.Head | None]:
    """(K, {name: Split}, Head or None): `check_shapes`, then every array's data read and
    checked, in the order given."""
    num_classes = check_shapes(splits, head)
    loaded = {split.name: load_split(split, num_classes) for split in splits}
    return num_classes, loaded, None if head is None else predictions.Head(*map(_float32, head))


def imported_record(splits: Mapping[str, os.PathLike | str],
                    head: os.PathLike | str | None) -> dict:
    """The manifest's `run.imported` block: each source file's name and SHA-256."""
    record = {"splits": {name: {"file": os.fspath(path), "sha256": sha256(path)}
                         for name, path in splits.items()}}
    if head is not None:
        record["head"] = {"file": os.fspath(head), "sha256": sha256(head)}
    return record
