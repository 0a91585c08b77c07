"""softlabel_ood.data.class_subset: some classes of another source, on hand-made arrays."""

from __future__ import annotations

import numpy as np
import pytest

from softlabel_ood.configs import config_validation, fashion_mnist_split
from softlabel_ood.data import datasets
from softlabel_ood.data.class_subset import ClassSubset
from softlabel_ood.data.sources import DatasetError, Source

# Image i is filled with the value i, so a row's first pixel names the source row it came from.
LABELS = np.array([3, 0, 7, 1, 3, 9, 0, 2, 8, 1], np.int32)
IMAGES = np.arange(10, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 1), np.uint8)


class FixedArrays(Source):
    """A source of fixed arrays that records the requests it was given."""

    path_hint = "a folder of arrays"

    def __init__(self, labels: np.ndarray | None = LABELS):
        self.labels = labels
        self.requests = []

    def load(self, name, split, *, shape, num_examples, rng, path, data_dir, download):
        self.requests.append((name, split, num_examples, path, data_dir))
        return IMAGES, self.labels

    def check_available(self, name, split, *, path, data_dir):
        self.requests.append(("available", name, split, path, data_dir))


def _load(subset: ClassSubset, num_examples=None, seed=0):
    return subset.load("toy", "test", shape=(2, 2, 1), num_examples=num_examples,
                       rng=np.random.default_rng(seed), path="/p", data_dir="/d", download=False)


def test_the_kept_classes_come_in_the_sources_order_renumbered_by_position():
    source = FixedArrays()
    images, labels = _load(ClassSubset(source, (0, 1, 3)))
    assert images[:, 0, 0, 0].tolist() == [0, 1, 3, 4, 6, 9]
    assert labels.tolist() == [2, 0, 1, 2, 0, 1]
    assert labels.dtype == np.int32
    # The wrapped source is asked for the whole split, at the same path and data_dir.
    assert source.requests == [("toy", "test", None, "/p", "/d")]
    # Position in `classes`, not sorted order: (9, 7) makes 9 the class 0.
    images, labels = _load(ClassSubset(source, (9, 7)))
    assert images[:, 0, 0, 0].tolist() == [2, 5]
    assert labels.tolist() == [1, 0]
    # Leading classes in their own order keep their labels.
    images, labels = _load(ClassSubset(source, (0, 1, 2, 3)))
    assert labels.tolist() == LABELS[LABELS < 4].tolist()


def test_a_cap_draws_a_seeded_sorted_subset_of_the_kept_examples():
    subset = ClassSubset(FixedArrays(), (0, 1, 3))
    images, labels = _load(subset, num_examples=4, seed=5)
    rows = images[:, 0, 0, 0].tolist()
    assert len(rows) == 4
    assert rows == sorted(rows)
    assert set(rows) <= {0, 1, 3, 4, 6, 9}  # never an example of another class
    np.testing.assert_array_equal(labels, [{3: 2, 0: 0, 1: 1}[v] for v in LABELS[rows]])
    np.testing.assert_array_equal(images, _load(subset, num_examples=4, seed=5)[0])
    assert len(_load(subset, num_examples=100)[1]) == 6  # a cap, not a size


def test_paths_and_availability_are_the_wrapped_sources():
    source = FixedArrays()
    subset = ClassSubset(source, (1,))
    assert subset.path_hint == "a folder of arrays"
    assert subset.path_required is False
    subset.check_available("toy", "train", path="/p", data_dir=None)
    assert source.requests == [("available", "toy", "train", "/p", None)]


def test_unlabelled_sources_missing_classes_and_bad_classes_are_refused():
    with pytest.raises(DatasetError, match=r"^toy/test: the source has no labels to choose "
                       r"classes \[0\] by$"):
        _load(ClassSubset(FixedArrays(labels=None), (0,)))
    with pytest.raises(DatasetError, match=r"^toy/test: no example of classes \[4, 5\]$"):
        _load(ClassSubset(FixedArrays(), (4, 5)))
    for classes in ((), (1, 1), (-1,), (0.5,)):
        with pytest.raises(ValueError, match="classes must be distinct labels >= 0"):
            ClassSubset(FixedArrays(), classes)


@pytest.mark.parametrize(("a", "b", "shared"), [
    ("fashion_mnist", "fashion_mnist_heldout", True),  # the held-out classes are its own images
    ("fashion_mnist6", "fashion_mnist", True),
    ("fashion_mnist6", "fashion_mnist_heldout", False),  # disjoint classes of one source
    ("digits", "digits28", True),  # one source at two sizes
    ("fashion_mnist", "mnist", False),
    ("flower_patches", "china_patches", False),
    ("gaussian", "gaussian", True),
])
def test_datasets_share_examples_when_one_source_has_classes_in_common(a, b, shared):
    assert datasets.share_examples(a, b) is shared
    assert datasets.share_examples(b, a) is shared


def test_the_split_family_keeps_its_near_ood_set_and_refuses_it_beside_the_whole_dataset():
    config = fashion_mnist_split.get_config("ce")
    config_validation.check(config)
    config.dataset = "fashion_mnist"
    with pytest.raises(config_validation.ConfigError, match=r"\('fashion_mnist_heldout' shares "
                       r"them\)"):
        config_validation.check(config)
