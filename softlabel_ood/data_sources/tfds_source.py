"""TensorFlow Datasets sources, read into numpy arrays.

How a split is read, and why this way:
`tfds.load(f"{name}:{version}", split=..., shuffle_files=False, download=False,
decoders={"image": tfds.decode.SkipDecoding()})`, batched into encoded bytes and labels with
`tfds.as_numpy`, then decoded and converted here with PIL, one image at a time.
- `batch_size=-1` (the whole split as one tensor) is avoided: it materialises every decoded image
  inside TensorFlow, and with tfds 4.9.10 + TF 2.21 it aborts the process under
  `tfds.testing.mock_data` (std::length_error), which is how the tests exercise these sources.
- `tfds.data_source` is avoided: it needs ArrayRecord files, and `tfds build` writes TFRecord
  by default, so many prepared data directories could not be read.
- Skipping tfds decoding lets a seeded subset (`num_examples`) decode only the images it keeps,
  which matters for Places365 (256x256 JPEGs), and sends every source through the same PIL
  resize as the local files.
- `shuffle_files=False` makes the order deterministic; `download=False` by default because the
  loader may run on every host of a multi-host job at once, and preparing a dataset concurrently
  into one data_dir corrupts it. Prepare once with `tfds build <name>:<version> --data_dir=<dir>`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping

import numpy as np

from softlabel_ood.data_sources import images as image_lib
from softlabel_ood.data_sources.common import DatasetError, subset_indices

_READ_BATCH = 1024  # encoded examples per host batch while reading; only affects speed


@dataclasses.dataclass(frozen=True)
class TfdsSource:
    tfds_name: str
    version: str
    splits: Mapping[str, str]  # our split name -> tfds split expression

    @property
    def versioned_name(self) -> str:
        return f"{self.tfds_name}:{self.version}"


# Versions are pinned so that a run names exactly the data it saw; they are the versions that
# tensorflow-datasets 4.9.x builds.
SOURCES: Mapping[str, TfdsSource] = {
    "cifar10": TfdsSource("cifar10", "3.0.2", {"train": "train", "test": "test"}),
    "cifar100": TfdsSource("cifar100", "3.0.2", {"train": "train", "test": "test"}),
    "svhn": TfdsSource("svhn_cropped", "3.1.0", {"train": "train", "test": "test"}),
    # The OE reference reads every image of dtd/images (5,640) as its Textures OOD set.
    "textures": TfdsSource("dtd", "3.0.1", {"test": "train+validation+test"}),
    # The OE reference uses an unpublished subset of the Places365 test images; the labelled
    # validation split (36,500 images) is the closest public, fixed choice.
    "places365": TfdsSource(
        "places365_small", "2.1.0", {"train": "train", "test": "validation"}),
    "fashion_mnist": TfdsSource("fashion_mnist", "3.0.1", {"train": "train", "test": "test"}),
    "mnist": TfdsSource("mnist", "3.0.1", {"train": "train", "test": "test"}),
}


def _hide_gpus_from_tensorflow(tf) -> None:
    # With a GPU build of TensorFlow, tf.data would otherwise reserve GPU memory that JAX needs.
    # A RuntimeError means TensorFlow was initialised earlier: its device choice is fixed then.
    with contextlib.suppress(RuntimeError):
        tf.config.set_visible_devices([], "GPU")


def _encoded_batches(ds, tfds) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    ds = ds.map(lambda ex: (ex["image"], ex["label"])).batch(_READ_BATCH)
    yield from tfds.as_numpy(ds)


def check_prepared(source: TfdsSource, name: str, split: str, *, data_dir: str | None) -> None:
    """Raises DatasetError (with the `tfds build` command) unless the split can be read.

    The split is opened as `load` opens it, without reading a record: a missing set is found
    before any training, not when predictions are written after the last epoch.
    """
    _open(source, name, split, data_dir, download=False)


def _where(data_dir: str | None) -> str:
    return data_dir or "the default tfds data_dir"


def _open(source: TfdsSource, name: str, split: str, data_dir: str | None, download: bool):
    if split not in source.splits:
        raise DatasetError(
            f"{name}: no split {split!r} (available: {', '.join(source.splits)})")
    import tensorflow as tf  # imported here: importing TensorFlow costs seconds
    import tensorflow_datasets as tfds

    _hide_gpus_from_tensorflow(tf)
    tfds_split = source.splits[split]
    try:
        return tfds.load(
            source.versioned_name, split=tfds_split, data_dir=data_dir, download=download,
            shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()})
    except (AssertionError, ValueError, OSError, tfds.core.DatasetNotFoundError) as e:
        # tfds reports "not prepared" as an AssertionError; name what is missing and the fix.
        text = str(e).strip()
        first_sentence = text.splitlines()[0].split(". ")[0] if text else type(e).__name__
        build = f"tfds build {source.versioned_name}" + (
            f" --data_dir={data_dir}" if data_dir else "")
        raise DatasetError(
            f"{name}/{split}: tfds dataset {source.versioned_name} split {tfds_split!r} is not "
            f"available in {_where(data_dir)} ({first_sentence}); prepare it once with "
            f"`{build}`") from e


def load(source: TfdsSource, name: str, split: str, *, shape: tuple[int, int, int],
         num_examples: int | None, rng: np.random.Generator, data_dir: str | None,
         download: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Reads one split -> (uint8 images [N, *shape], int32 labels [N])."""
    ds = _open(source, name, split, data_dir, download)
    import tensorflow as tf  # already imported by _open
    import tensorflow_datasets as tfds

    try:
        total = int(ds.cardinality())
        if total < 0:  # unknown length: count once (cheap, nothing is decoded)
            total = sum(len(labels) for _, labels in _encoded_batches(ds, tfds))
        keep = np.zeros(total, bool)
        keep[subset_indices(total, num_examples, rng)] = True
        images, labels, read = _read_selected(_encoded_batches(ds, tfds), keep, shape)
    except tf.errors.OpError as e:
        message = e.message.splitlines()[0] if e.message else type(e).__name__
        raise DatasetError(
            f"{name}/{split}: reading tfds dataset {source.versioned_name} from {_where(data_dir)} "
            f"failed: {message}") from e
    if read != len(labels):
        raise DatasetError(f"{name}/{split}: tfds dataset {source.versioned_name} announced "
                           f"{total} examples but yielded fewer; its files look incomplete")
    return images, labels


def _read_selected(batches, keep: np.ndarray, shape) -> tuple[np.ndarray, np.ndarray, int]:
    """Decodes and converts only the kept examples, straight into the output array.

    Returns (images, labels, number of kept examples actually read)."""
    count = int(keep.sum())
    images = np.empty((count, *shape), np.uint8)
    labels = np.empty((count,), np.int32)
    start = filled = 0
    for image_bytes, label in batches:
        chosen = np.flatnonzero(keep[start:start + len(image_bytes)])
        start += len(image_bytes)
        for i in chosen:
            images[filled] = image_lib.fit(image_lib.decode(image_bytes[i]), shape)
            labels[filled] = label[i]
            filled += 1
    return images, labels, filled
