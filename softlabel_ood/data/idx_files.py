"""MNIST-format IDX files, and the kind of source that reads them when a path is given and a
TensorFlow Datasets dataset otherwise (fashion_mnist, mnist).

IDX: `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]` in one folder, as MNIST and
Fashion-MNIST ship them (Debian's dataset-fashion-mnist installs them under
/usr/share/datasets/fashion-mnist). The files hold the same images as tfds, in their original order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import pathlib

import numpy as np

from softlabel_ood.data import images as image_lib
from softlabel_ood.data.sources import DatasetError, Source, subset_indices
from softlabel_ood.data.tfds_source import TfdsSource


@dataclasses.dataclass(frozen=True)
class IdxFilesOrTfds(Source):
    """IDX files when `dataset_paths.<name>` names their folder, else the tfds dataset."""

    tfds: TfdsSource
    # How a system package installs the files, named when they or tfds fail ("" when none does).
    installed_note: str = ""
    path_hint = "a folder of MNIST-format IDX files"

    def load(self, name: str, split: str, *, shape: tuple[int, int, int],
             num_examples: int | None, rng: np.random.Generator, path: str | None,
             data_dir: str | None, download: bool) -> tuple[np.ndarray, np.ndarray]:
        if path is not None:
            with self._suggest_installing():
                return load_idx(name, split, path, shape=shape, num_examples=num_examples,
                                rng=rng)
        with self._suggest_idx_files(name):
            return self.tfds.load(name, split, shape=shape, num_examples=num_examples, rng=rng,
                                  path=None, data_dir=data_dir, download=download)

    def check_available(self, name: str, split: str, *, path: str | None,
                        data_dir: str | None) -> None:
        if path is not None:
            # Looked up, not read: a folder without the split's files fails before any training.
            with self._suggest_installing():
                idx_files(name, split, path)
            return
        with self._suggest_idx_files(name):
            self.tfds.check_available(name, split, path=None, data_dir=data_dir)

    @contextlib.contextmanager
    def _suggest_idx_files(self, name: str):
        """A tfds error also names the way out that needs no tfds."""
        try:
            yield
        except DatasetError as e:
            note = f" ({self.installed_note})" if self.installed_note else ""
            raise DatasetError(f"{e}; or set dataset_paths.{name} to a folder of IDX files (path= "
                               f"of datasets.load){note}") from e

    @contextlib.contextmanager
    def _suggest_installing(self):
        """An error about the IDX files also says how the system package installs them."""
        try:
            yield
        except DatasetError as e:
            if not self.installed_note:
                raise
            raise DatasetError(f"{e} ({self.installed_note})") from e


_IDX_PREFIX = {"train": "train", "test": "t10k"}


def _find_idx(folder: pathlib.Path, prefix: str, kind: str) -> pathlib.Path | None:
    for suffix in (".gz", ""):
        candidate = folder / f"{prefix}-{kind}-ubyte{suffix}"
        if candidate.is_file():
            return candidate
    return None


def read_idx(path: str | pathlib.Path) -> np.ndarray:
    """One IDX file (optionally gzipped) of unsigned bytes -> its uint8 array."""
    path = pathlib.Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    # Header: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then
    # one big-endian uint32 per dimension.
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(data) - offset != expected:
        raise ValueError(f"{path}: header says {dims} ({expected} bytes), file holds "
                         f"{len(data) - offset}")
    return np.frombuffer(data, np.uint8, offset=offset).reshape(dims)


def idx_files(name: str, split: str, folder: str | pathlib.Path
              ) -> tuple[pathlib.Path, pathlib.Path]:
    """The (images, labels) IDX files of `split` in `folder`; DatasetError if one is missing."""
    folder = pathlib.Path(folder).expanduser()
    if split not in _IDX_PREFIX:
        raise DatasetError(f"{name}: no split {split!r} in IDX files (available: train, test)")
    prefix = _IDX_PREFIX[split]
    image_file = _find_idx(folder, prefix, "images-idx3")
    label_file = _find_idx(folder, prefix, "labels-idx1")
    if image_file is None or label_file is None:
        raise DatasetError(
            f"{name}/{split}: IDX files {prefix}-images-idx3-ubyte[.gz] and "
            f"{prefix}-labels-idx1-ubyte[.gz] not found in {folder}")
    return image_file, label_file


def load_idx(name: str, split: str, folder: str | pathlib.Path, *,
             shape: tuple[int, int, int], num_examples: int | None,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-format IDX files in `folder` -> (uint8 images [N, *shape], int32 labels [N])."""
    folder = pathlib.Path(folder).expanduser()
    image_file, label_file = idx_files(name, split, folder)
    try:
        images, labels = read_idx(image_file), read_idx(label_file)
    except (OSError, ValueError, EOFError) as e:
        raise DatasetError(f"{name}/{split}: cannot read IDX files in {folder}: {e}") from e
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise DatasetError(
            f"{name}/{split}: {image_file} {images.shape} and {label_file} {labels.shape} "
            "are not [N, H, W] images with [N] labels")
    keep = subset_indices(images.shape[0], num_examples, rng)
    return (image_lib.fit_array(images[keep][..., None], shape),
            labels[keep].astype(np.int32))
