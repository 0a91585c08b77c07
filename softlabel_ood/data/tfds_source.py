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
  into one data_dir corrupts it. Prepare once with `python -m softlabel_ood.data.prepare_tfds
  <name>:<version> --data_dir=<dir>` (`prepare_tfds`: what `tfds build` does, which needs
  apache_beam with tensorflow-datasets 4.9.10).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator, Mapping

import numpy as np

from softlabel_ood.data import images as image_lib
from softlabel_ood.data import prepare_tfds, quiet_tensorflow
from softlabel_ood.data.sources import DatasetError, Source, subset_indices

_READ_BATCH = 1024  # encoded examples per host batch while reading; only affects speed


def _hide_gpus_from_tensorflow(tf) -> None:
    # With a GPU build of TensorFlow, tf.data would otherwise reserve GPU memory that JAX needs.
    # A RuntimeError means TensorFlow was initialised earlier: its device choice is fixed then.
    with contextlib.suppress(RuntimeError):
        tf.config.set_visible_devices([], "GPU")


@contextlib.contextmanager
def _without_unprepared_notice():
    """tfds warns "Variant folder ... has no dataset_info.json" before it fails on a set that is
    not prepared; the error raised here says so in one line, with the command that fixes it."""
    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Variant folder ")

    logger = logging.getLogger("absl")
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def _encoded_batches(ds, tfds) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    ds = ds.map(lambda ex: (ex["image"], ex["label"])).batch(_READ_BATCH)
    yield from tfds.as_numpy(ds)


def _where(data_dir: str | None) -> str:
    return data_dir or "the default tfds data_dir"


@dataclasses.dataclass(frozen=True)
class TfdsSource(Source):
    """A TensorFlow Datasets dataset at a pinned version (a run names exactly the data it saw)."""

    tfds_name: str
    version: str
    # our split name -> tfds split expression
    splits: Mapping[str, str] = dataclasses.field(
        default_factory=lambda: {"train": "train", "test": "test"})

    @property
    def versioned_name(self) -> str:
        return f"{self.tfds_name}:{self.version}"

    def load(self, name: str, split: str, *, shape: tuple[int, int, int],
             num_examples: int | None, rng: np.random.Generator, path: str | None,
             data_dir: str | None, download: bool) -> tuple[np.ndarray, np.ndarray]:
        """Reads one split -> (uint8 images [N, *shape], int32 labels [N])."""
        ds = self._open(name, split, data_dir, download)
        tf, tfds = quiet_tensorflow.import_tensorflow_datasets()  # already imported by _open

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
                f"{name}/{split}: reading tfds dataset {self.versioned_name} from "
                f"{_where(data_dir)} failed: {message}") from e
        if read != len(labels):
            raise DatasetError(f"{name}/{split}: tfds dataset {self.versioned_name} announced "
                               f"{total} examples but yielded fewer; its files look incomplete")
        return images, labels

    def check_available(self, name: str, split: str, *, path: str | None,
                        data_dir: str | None) -> None:
        """Raises DatasetError (with the command that prepares it) unless the split can be read.

        The split is opened as `load` opens it, without reading a record: a missing set is found
        before any training, not when predictions are written after the last epoch.
        """
        self._open(name, split, data_dir, download=False)

    def _open(self, name: str, split: str, data_dir: str | None, download: bool):
        if split not in self.splits:
            raise DatasetError(
                f"{name}: no split {split!r} (available: {', '.join(self.splits)})")
        tf, tfds = quiet_tensorflow.import_tensorflow_datasets()
        _hide_gpus_from_tensorflow(tf)
        tfds_split = self.splits[split]
        try:
            with _without_unprepared_notice():
                return tfds.load(
                    self.versioned_name, split=tfds_split, data_dir=data_dir,
                    download=download, shuffle_files=False,
                    decoders={"image": tfds.decode.SkipDecoding()})
        except (AssertionError, KeyError, ValueError, OSError,
                tfds.core.DatasetNotFoundError) as e:
            # tfds reports "not prepared" as an AssertionError, or as a KeyError for a version
            # folder without files (an interrupted `tfds build`); name what is missing and the
            # fix.
            text = str(e).strip()
            first_sentence = text.splitlines()[0].split(". ")[0] if text else type(e).__name__
            build = prepare_tfds.command(self.versioned_name, data_dir)
            raise DatasetError(
                f"{name}/{split}: tfds dataset {self.versioned_name} split {tfds_split!r} is not "
                f"available in {_where(data_dir)} ({first_sentence}); prepare it once with "
                f"`{build}`") from e


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
