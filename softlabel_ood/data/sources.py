"""Types and helpers shared by every source: the interface of a kind of source, the in-memory
dataset, the error, seeded subsets."""

from __future__ import annotations

import abc
import dataclasses
import zlib

import numpy as np

from softlabel_ood.cli_errors import UserError


class DatasetError(UserError):
    """A dataset cannot be loaded; the message is one line naming the dataset, split and path."""


@dataclasses.dataclass(frozen=True)
class ArrayDataset:
    """A whole split in host memory: uint8 NHWC images and int32 labels (-1 where unlabeled)."""

    images: np.ndarray  # uint8 [N, H, W, C]
    labels: np.ndarray  # int32 [N]
    name: str
    split: str

    def __post_init__(self):
        # Checked here once so that the input pipeline and the training step can rely on it.
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"{self.name}/{self.split}: images must be uint8 [N, H, W, C], got "
                f"{self.images.dtype} {self.images.shape}")
        if self.labels.dtype != np.int32 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(
                f"{self.name}/{self.split}: labels must be int32 [{self.images.shape[0]}], got "
                f"{self.labels.dtype} {self.labels.shape}")

    def __len__(self) -> int:
        return int(self.images.shape[0])


class Source(abc.ABC):
    """One kind of source, as a dataset name's record in `datasets` holds it.

    `datasets.load` and `datasets.check_available` check the split, image shape, num_examples, seed
    and whether a path is allowed (`path_hint`) or needed (`path_required`), then call the record's
    source; a source sees only requests that passed those checks.
    """

    # What `dataset_paths.<name>` should point at, for messages; None: the source reads no local
    # files, and a given path is refused rather than silently ignored.
    path_hint: str | None = None
    path_required: bool = False  # local-file sources have no data without a path
    # How to install the files a path names, for messages about a missing one ("" when no
    # package installs them).
    installed_note: str = ""

    @abc.abstractmethod
    def load(self, name: str, split: str, *, shape: tuple[int, int, int],
             num_examples: int | None, rng: np.random.Generator, path: str | None,
             data_dir: str | None, download: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """One split -> (uint8 images [N, *shape], labels [N] or None for unlabeled sources).

        `num_examples`: the size of generated sets, a cap (seeded subset from `rng`) for the rest.
        Every random choice comes from `rng`, in a fixed order, so a call is reproducible.
        """

    def check_available(self, name: str, split: str, *, path: str | None,
                        data_dir: str | None) -> None:
        """Raises DatasetError unless `load` can find its data; reads nothing.

        A given path has already been found to exist.
        """
        return  # the default: generated or shipped data is always there


def source_rng(seed: int, name: str, split: str) -> np.random.Generator:
    """The generator behind every random choice a source makes (subsets, noise, patches).

    Seeded with (seed, crc32(name), crc32(split)) so that two sources, or the two splits of one
    source, never share a random stream under the same seed, and the draw does not depend on the
    Python process (crc32, unlike `hash`, is not salted per process).
    """
    return np.random.default_rng(
        [seed, zlib.crc32(name.encode("utf-8")), zlib.crc32(split.encode("utf-8"))])


def subset_indices(total: int, num_examples: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of a uniformly drawn subset of `num_examples` out of `total`.

    `num_examples` is a cap: None, or a number >= total, keeps everything. Sorting keeps the
    source's own order, so a subset of a subset-free load is a subsequence of it.
    """
    if num_examples is None or num_examples >= total:
        return np.arange(total)
    return np.sort(rng.choice(total, size=num_examples, replace=False))


def int32_labels(labels: np.ndarray | None, count: int) -> np.ndarray:
    """Labels as int32, or -1 for every example when the source has none."""
    if labels is None:
        return np.full((count,), -1, np.int32)
    return np.asarray(labels).astype(np.int32, copy=False).reshape(count)
