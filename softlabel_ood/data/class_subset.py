"""A kind of source that keeps some classes of another source: a labelled dataset cut into an
in-distribution part and a held-out part (fashion_mnist6 and fashion_mnist_heldout).

Each split is the wrapped source's split with only the examples of the kept classes, in the
source's order, each label renumbered to its class's position in `classes`: classes (0, ..., 5)
keep their labels, classes (6, 7, 8, 9) become 0..3, so a subset is a dataset of its own with
labels in [0, len(classes)). Files, paths and tfds are the wrapped source's business; a seeded
subset (`num_examples`) is drawn among the kept examples, so a cap never leaves fewer than it
asks for while enough examples of the classes exist.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from softlabel_ood.data.sources import DatasetError, Source, subset_indices


@dataclasses.dataclass(frozen=True)
class ClassSubset(Source):
    """The examples of `classes` of `source`, labels renumbered to their position in `classes`."""

    source: Source
    classes: tuple[int, ...]

    def __post_init__(self):
        if not self.classes or len(set(self.classes)) != len(self.classes) or \
                any(int(c) != c or c < 0 for c in self.classes):
            raise ValueError(f"classes must be distinct labels >= 0, got {self.classes}")

    # Paths mean what they mean to the wrapped source (an IDX folder for fashion_mnist's).
    @property
    def path_hint(self) -> str | None:
        return self.source.path_hint

    @property
    def path_required(self) -> bool:
        return self.source.path_required

    @property
    def installed_note(self) -> str:
        return self.source.installed_note

    def load(self, name: str, split: str, *, shape: tuple[int, int, int],
             num_examples: int | None, rng: np.random.Generator, path: str | None,
             data_dir: str | None, download: bool) -> tuple[np.ndarray, np.ndarray]:
        # The whole split, then the classes, then the subset: a cap counts kept examples only.
        images, labels = self.source.load(
            name, split, shape=shape, num_examples=None, rng=rng, path=path, data_dir=data_dir,
            download=download)
        if labels is None:
            raise DatasetError(f"{name}/{split}: the source has no labels to choose classes "
                               f"{list(self.classes)} by")
        images, labels = keep_classes(images, labels, self.classes)
        if not len(labels):
            raise DatasetError(f"{name}/{split}: no example of classes {list(self.classes)}")
        keep = subset_indices(len(labels), num_examples, rng)
        return images[keep], labels[keep]

    def check_available(self, name: str, split: str, *, path: str | None,
                        data_dir: str | None) -> None:
        self.source.check_available(name, split, path=path, data_dir=data_dir)


def keep_classes(images: np.ndarray, labels: np.ndarray, classes: tuple[int, ...]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The examples whose label is in `classes`, in order; labels -> positions in `classes`."""
    labels = np.asarray(labels)
    renumbered = np.full(labels.shape, -1, np.int32)
    for position, label in enumerate(classes):
        renumbered[labels == label] = position
    kept = renumbered >= 0
    return images[kept], renumbered[kept]
