"""Named image sources -> in-memory arrays (uint8 NHWC images, int32 labels).

    ds = datasets.load("cifar10", "train")                     # ArrayDataset
    ood = datasets.load("svhn", "test", image_shape=(32, 32, 3), num_examples=2000)
    datasets.info("cifar10").mean                              # normalisation constants

Every source has a "train" and/or a "test" split. `image_shape` converts a source to the ID data's
(H, W, C) (resize + center crop, or center crop; gray <-> RGB; rules in
`data/images.py`); without it a source comes at `info(name).image_shape`.
`num_examples` draws a seeded subset (sorted, so the source's order is kept) when the source is
larger, and is the size of generated sets. All randomness comes from `seed` (with the name and
split mixed in), so a call returns the same arrays on every host.

Sources
-------
Each name is one record in `_DATASETS` below, a `DatasetInfo`: classes, default shape,
normalisation, augmentation, and its source, an instance of one kind of source in `data/`
(interface: `data/sources.py`). `load` and `check_available` check the request, then ask
the source; a new dataset is one new record.

TensorFlow Datasets (prepared beforehand with `python -m softlabel_ood.data.prepare_tfds`, never
downloaded by the commands; how they are read is explained in `data/tfds_source.py`):

| name          | tfds name:version     | "train" split | "test" split            | shape          |
|---------------|-----------------------|---------------|-------------------------|----------------|
| cifar10       | cifar10:3.0.2         | train 50,000  | test 10,000             | 32x32x3        |
| cifar100      | cifar100:3.0.2        | train 50,000  | test 10,000             | 32x32x3        |
| svhn          | svhn_cropped:3.1.0    | train 73,257  | test 26,032             | 32x32x3        |
| textures      | dtd:3.0.1             | -             | train+validation+test * | any -> 32x32x3 |
| places365     | places365_small:2.1.0 | train 1.8M    | validation 36,500       | 256 -> 32x32x3 |
| fashion_mnist | fashion_mnist:3.0.1   | train 60,000  | test 10,000             | 28x28x1        |
| mnist         | mnist:3.0.1           | train 60,000  | test 10,000             | 28x28x1        |
* all 5,640 DTD images, as the OE reference reads its Textures set (every file of dtd/images).
"shape" is the default `image_shape`; sources whose images vary or are large are converted to
32x32x3 unless another `image_shape` is asked for (converted from the original image, not twice).
The OE reference's SVHN models train on train+extra; "train" here is the 73,257-image train split.

fashion_mnist and mnist read MNIST-format IDX files (`data/idx_files.py`) instead when
`path` names a folder of them (Debian's dataset-fashion-mnist package installs Fashion-MNIST's in
`FASHION_MNIST_IDX_DIR`: the same 70,000 images as tfds, in the files' original order); without
`path` they come from tfds.

Class subsets (`data/class_subset.py`): Fashion-MNIST cut into an ID part and a held-out part,
read from the same IDX files (`path`) or tfds as fashion_mnist, in the same order:

| name                  | classes | "train" split | "test" split | labels                |
|-----------------------|---------|---------------|--------------|-----------------------|
| fashion_mnist6        | 0-5     | 36,000        | 6,000        | 0-5, as in the source |
| fashion_mnist_heldout | 6-9     | 24,000        | 4,000        | 0-3 (6-9 renumbered)  |
Classes 0-5 are T-shirt/top, trouser, pullover, dress, coat and sandal; 6-9 shirt, sneaker, bag
and ankle boot; each class has 6,000 training and 1,000 test images.
fashion_mnist_heldout is the near-OOD set of fashion_mnist6 (configs/fashion_mnist_split.py; an
OOD set is read from "test"): clothing photographed and processed alike, of classes the
classifier never sees. Its "train" split holds the held-out classes' training images, disjoint
from every image of fashion_mnist6; as an OE auxiliary set it would show the model the very
classes that its near-OOD test set holds, which the Outlier Exposure protocol avoids (auxiliary
data disjoint from the test OOD sets), so that family's OE reads china_patches.

Local files (`path` required: a .npy/.npz array file or a folder of images, see
`data/local_files.py`; no labels unless a .npz has them; one path serves any split, whose
name then only labels the result and seeds its subset):

| name                | what to point `path` at                                 | conversion  |
|---------------------|---------------------------------------------------------|-------------|
| lsun_crop           | LSUN.tar.gz of the ODIN release, extracted              | center crop |
| lsun_resize         | LSUN_resize.tar.gz of the ODIN release, extracted       | resize      |
| tinyimagenet_crop   | Imagenet.tar.gz of the ODIN release, extracted          | center crop |
| tinyimagenet_resize | Imagenet_resize.tar.gz of the ODIN release, extracted   | resize      |
| isun                | iSUN.tar.gz of the ODIN release, extracted              | resize      |
| random_300k         | 300K_random_images.npy of the OE release **             | resize      |
| local_images        | any array file or image folder                          | resize      |
** uint8 [300000, 32, 32, 3]; memory-mapped, so a subset reads only its rows.

Synthetic OOD sets (`data/synthetic.py`; generated in pixel space, 2,000 images unless
`num_examples` says otherwise): gaussian, rademacher, blobs, uniform.

Embedded sets (`data/embedded.py`; ship with scikit-learn):
digits (8x8x1, 1,347 train / 450 test), digits28 (the same at 28x28x1), china_patches (OE
auxiliary set, 10,000 patches by default) and flower_patches (OOD test set, 2,000 by default).

Normalisation constants (`DatasetInfo.mean` / `.std`, in [0, 1] pixel units; the ID dataset's
constants normalise every split a model sees, OOD sets included):
- cifar10, cifar100: mean (125.3, 123.0, 113.9) / 255, std (63.0, 62.1, 66.7) / 255, the values
  of the OE reference code, which uses the CIFAR-10 statistics for CIFAR-100 as well.
- svhn: mean 0, std 1: the OE reference trains SVHN on ToTensor() pixels without normalising.
- fashion_mnist: 0.2860 / 0.3530, computed over the 60,000 training images.
- fashion_mnist6: 0.2844 / 0.3542, computed over its 36,000 training images (classes 0-5 of the
  IDX files that Debian's dataset-fashion-mnist installs).
- mnist: 0.1307 / 0.3081, computed over the 60,000 training images (PyTorch's MNIST example).
- digits: 0.3058 / 0.3754 and digits28: 0.3059 / 0.3240, computed over their train splits.
- every other source is used only as OOD or auxiliary data: 0.5 / 0.5 (the [-1, 1] mapping), a
  placeholder that is never used to normalise.

Augmentation (`DatasetInfo.augment`, random crop with padding 4 + horizontal flip): True for
cifar10 and cifar100 (the OE reference protocol). False for svhn (the OE reference trains SVHN
without augmentation, and a flip turns digits into other shapes), for the 28x28 and 8x8 digit and
clothing sets (a 4-pixel shift is large at 8x8; the usual Fashion-MNIST baselines do not augment)
and for every OOD-only source.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from softlabel_ood.data import embedded, synthetic
from softlabel_ood.data import images as image_lib
from softlabel_ood.data.class_subset import ClassSubset
from softlabel_ood.data.idx_files import IdxFilesOrTfds
from softlabel_ood.data.local_files import LocalFiles
from softlabel_ood.data.sources import (
    ArrayDataset,
    DatasetError,
    Source,
    int32_labels,
    source_rng,
)
from softlabel_ood.data.tfds_source import TfdsSource

__all__ = [
    "FASHION_MNIST_IDX_DIR",
    "NAMES",
    "SPLITS",
    "ArrayDataset",
    "DatasetError",
    "DatasetInfo",
    "check_available",
    "info",
    "load",
]

SPLITS = ("train", "test")
FASHION_MNIST_IDX_DIR = "/usr/share/datasets/fashion-mnist"


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Everything about one dataset name; one record in `_DATASETS`."""

    num_classes: int  # 0 for unlabeled sources
    image_shape: tuple[int, int, int]  # (H, W, C) that `load` returns without image_shape
    mean: tuple[float, ...]  # per-channel normalisation constants in [0, 1] pixel units
    std: tuple[float, ...]
    augment: bool  # random crop (pad 4) + flip is appropriate for this ID dataset
    source: Source  # where the images come from (data/sources.py: the interface)


_CIFAR_MEAN = tuple(v / 255 for v in (125.3, 123.0, 113.9))
_CIFAR_STD = tuple(v / 255 for v in (63.0, 62.1, 66.7))
_RGB32 = (32, 32, 3)
_GRAY28 = (28, 28, 1)
# One source for fashion_mnist and its class subsets, which read the same files.
_FASHION_MNIST = IdxFilesOrTfds(
    TfdsSource("fashion_mnist", "3.0.1"),
    installed_note=f"`apt-get install dataset-fashion-mnist` installs Fashion-MNIST's in "
                   f"{FASHION_MNIST_IDX_DIR}")


def _ood_only(source: Source, num_classes: int = 0, shape=_RGB32) -> DatasetInfo:
    channels = shape[-1]
    return DatasetInfo(num_classes, shape, (0.5,) * channels, (0.5,) * channels, False, source)


def _odin_release(archive: str, conversion: str) -> DatasetInfo:
    return _ood_only(LocalFiles(conversion, f"the extracted {archive} of the ODIN release"))


# One record per name: classes, default shape, normalisation, augmentation, source (the module
# docstring says why each value). tfds versions are pinned so that a run names exactly the data it
# saw; they are the versions that tensorflow-datasets 4.9.x builds.
_DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo(10, _RGB32, _CIFAR_MEAN, _CIFAR_STD, True,
                           TfdsSource("cifar10", "3.0.2")),
    "cifar100": DatasetInfo(100, _RGB32, _CIFAR_MEAN, _CIFAR_STD, True,
                            TfdsSource("cifar100", "3.0.2")),
    "svhn": DatasetInfo(10, _RGB32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), False,
                        TfdsSource("svhn_cropped", "3.1.0")),
    # The OE reference reads every image of dtd/images (5,640) as its Textures OOD set.
    "textures": _ood_only(TfdsSource("dtd", "3.0.1", {"test": "train+validation+test"}), 47),
    # The OE reference uses an unpublished subset of the Places365 test images; the labelled
    # validation split (36,500 images) is the closest public, fixed choice.
    "places365": _ood_only(TfdsSource(
        "places365_small", "2.1.0", {"train": "train", "test": "validation"}), 365),
    "fashion_mnist": DatasetInfo(10, _GRAY28, (0.2860,), (0.3530,), False, _FASHION_MNIST),
    "fashion_mnist6": DatasetInfo(6, _GRAY28, (0.2844,), (0.3542,), False,
                                  ClassSubset(_FASHION_MNIST, (0, 1, 2, 3, 4, 5))),
    "fashion_mnist_heldout": _ood_only(ClassSubset(_FASHION_MNIST, (6, 7, 8, 9)), 4, _GRAY28),
    "mnist": DatasetInfo(10, _GRAY28, (0.1307,), (0.3081,), False,
                         IdxFilesOrTfds(TfdsSource("mnist", "3.0.1"))),
    "digits": DatasetInfo(10, (8, 8, 1), (0.3058,), (0.3754,), False, embedded.Digits()),
    "digits28": DatasetInfo(10, _GRAY28, (0.3059,), (0.3240,), False, embedded.Digits()),
    "china_patches": _ood_only(embedded.PhotoPatches("china.jpg", default_count=10_000)),
    "flower_patches": _ood_only(embedded.PhotoPatches("flower.jpg", default_count=2000)),
    "gaussian": _ood_only(synthetic.Noise(synthetic.gaussian)),
    "rademacher": _ood_only(synthetic.Noise(synthetic.rademacher)),
    "blobs": _ood_only(synthetic.Noise(synthetic.blobs)),
    "uniform": _ood_only(synthetic.Noise(synthetic.uniform)),
    "lsun_crop": _odin_release("LSUN.tar.gz", image_lib.CROP),
    "lsun_resize": _odin_release("LSUN_resize.tar.gz", image_lib.RESIZE),
    "tinyimagenet_crop": _odin_release("Imagenet.tar.gz", image_lib.CROP),
    "tinyimagenet_resize": _odin_release("Imagenet_resize.tar.gz", image_lib.RESIZE),
    "isun": _odin_release("iSUN.tar.gz", image_lib.RESIZE),
    "random_300k": _ood_only(LocalFiles(
        image_lib.RESIZE, "300K_random_images.npy of the Outlier Exposure release")),
    "local_images": _ood_only(LocalFiles(
        image_lib.RESIZE, "a .npy/.npz array file or a folder of images")),
}

NAMES: tuple[str, ...] = tuple(_DATASETS)


def info(name: str) -> DatasetInfo:
    """Classes, default shape, normalisation constants, augmentation flag and source of a name."""
    try:
        return _DATASETS[name]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r} (known: {', '.join(NAMES)})") from None


def share_examples(a: str, b: str) -> bool:
    """Whether datasets `a` and `b` can hold the same examples: one source, classes in common.

    So an OOD set is never drawn from the ID dataset's own images (fashion_mnist with
    fashion_mnist_heldout, digits with digits28), while fashion_mnist6 and fashion_mnist_heldout,
    disjoint classes of one source, are apart.
    """
    def source_and_classes(name):
        source = info(name).source
        if isinstance(source, ClassSubset):
            return source.source, set(source.classes)
        return source, None

    (source_a, classes_a), (source_b, classes_b) = source_and_classes(a), source_and_classes(b)
    if source_a != source_b:
        return False
    return classes_a is None or classes_b is None or bool(classes_a & classes_b)


def load(name: str, split: str, *, image_shape: tuple[int, int, int] | None = None,
         num_examples: int | None = None, seed: int = 0, path: str | None = None,
         data_dir: str | None = None, download: bool = False) -> ArrayDataset:
    """Loads one split of a named source into memory (see the module docstring).

    Args:
      name: one of NAMES.
      split: "train" or "test".
      image_shape: (H, W, C) to convert to, C in (1, 3); default `info(name).image_shape`.
      num_examples: size of generated sets; a cap (seeded subset) for all others.
      seed: seeds subsets and generated sets; the name and split are mixed in.
      path: file or folder of a local source (or IDX folder for fashion_mnist, its class
        subsets and mnist).
      data_dir: tfds data directory; None means tfds' default.
      download: let tfds download and prepare a missing dataset (off: see tfds_source.py).
    Raises:
      DatasetError: one line naming the dataset, split and what is missing.
    """
    source_info = info(name)
    _check_split(name, split)
    shape = _check_shape(name, source_info.image_shape if image_shape is None else image_shape)
    if num_examples is not None and (int(num_examples) != num_examples or num_examples < 1):
        raise DatasetError(f"{name}/{split}: num_examples must be a positive integer, "
                           f"got {num_examples!r}")
    if seed < 0:
        raise DatasetError(f"{name}/{split}: seed must be >= 0, got {seed}")
    path = path or None  # configs spell "no path" as ""
    _check_path(name, split, path, source_info.source)
    images, labels = source_info.source.load(
        name, split, shape=shape, num_examples=num_examples, rng=source_rng(seed, name, split),
        path=path, data_dir=data_dir or None, download=download)
    return ArrayDataset(
        images=np.ascontiguousarray(images), labels=int32_labels(labels, images.shape[0]),
        name=name, split=split)


def check_available(name: str, split: str, *, path: str | None = None,
                    data_dir: str | None = None) -> None:
    """Raises DatasetError unless `load(name, split, path=..., data_dir=...)` can find its data.

    Cheap (no image is read): tfds splits are opened, local files and folders opened (a .npy
    file's header, a .npz file's list of arrays, a folder's image file names). The commands
    call it for every set a run will read before its first step.
    """
    source = info(name).source
    _check_split(name, split)
    path = path or None
    _check_path(name, split, path, source)
    if path is not None and not os.path.exists(os.path.expanduser(path)):
        # Where a package installs the files, the line names it and what the path should hold.
        note = f": {source.path_hint}; {source.installed_note}" if source.installed_note else ""
        raise DatasetError(f"{name}/{split}: {path} does not exist (config "
                           f"dataset_paths.{name}{note})")
    source.check_available(name, split, path=path, data_dir=data_dir or None)


def _check_split(name: str, split: str) -> None:
    if split not in SPLITS:
        raise DatasetError(f"{name}: unknown split {split!r} (use one of {', '.join(SPLITS)})")


def _check_path(name: str, split: str, path: str | None, source: Source) -> None:
    """A path only for sources that read files, and always for those that read nothing else."""
    if path is not None and source.path_hint is None:
        raise DatasetError(f"{name}/{split}: this source reads no local files, but path={path} "
                           "was given")
    if path is None and source.path_required:
        raise DatasetError(f"{name}/{split}: no path given; point it (config "
                           f"dataset_paths.{name}) at {source.path_hint}")


def _check_shape(name, shape) -> tuple[int, int, int]:
    shape = tuple(int(d) for d in shape)
    if len(shape) != 3 or shape[0] < 1 or shape[1] < 1 or shape[2] not in (1, 3):
        raise DatasetError(f"{name}: image_shape must be (H, W, C) with C in (1, 3), "
                           f"got {shape}")
    return shape
