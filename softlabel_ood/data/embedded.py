"""Sets built from data that ships inside scikit-learn, so they load with no network and no files.

- digits: `sklearn.datasets.load_digits()`, 1,797 8x8 grayscale handwritten digits (values 0..16,
  scaled to pixels p = round(v * 255 / 16)). Fixed split in scikit-learn's order: the first 1,347
  images are "train", the last 450 are "test" (every class has 41-48 test images).
- digits28: the same images and split, upsampled to 28x28x1 (PIL bilinear): handwritten digits
  as an OOD set for 28x28 ID data such as Fashion-MNIST.
- china_patches / flower_patches: square crops of scikit-learn's two sample photographs
  (china.jpg and flower.jpg, 427x640 RGB), each of side s drawn uniformly in [T, 4T] pixels
  (T = the target side, capped by the photo), at a uniform position, resized to the target with
  PIL bilinear. china_patches is the outlier-exposure auxiliary set, flower_patches a natural-image
  OOD test set; they are disjoint by construction because they come from different photographs.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from softlabel_ood.data import images as image_lib
from softlabel_ood.data.sources import DatasetError, Source, subset_indices

DIGITS_TRAIN_SIZE = 1347  # of 1,797; the remaining 450 are the test split
PATCH_MAX_SCALE = 4


@dataclasses.dataclass(frozen=True)
class Digits(Source):
    """scikit-learn's digits: the fixed split, converted to the asked shape, then the subset."""

    def load(self, name: str, split: str, *, shape: tuple[int, int, int],
             num_examples: int | None, rng: np.random.Generator, path: str | None,
             data_dir: str | None, download: bool) -> tuple[np.ndarray, np.ndarray]:
        images, labels = load_digits(name, split, shape)
        keep = subset_indices(len(labels), num_examples, rng)
        return images[keep], labels[keep]


@dataclasses.dataclass(frozen=True)
class PhotoPatches(Source):
    """`default_count` (or num_examples) random crops of one of scikit-learn's sample photos."""

    photo_file: str  # "china.jpg" or "flower.jpg"
    default_count: int

    def load(self, name: str, split: str, *, shape: tuple[int, int, int],
             num_examples: int | None, rng: np.random.Generator, path: str | None,
             data_dir: str | None, download: bool) -> tuple[np.ndarray, None]:
        count = num_examples or self.default_count
        return load_patches(name, self.photo_file, count, shape, rng), None


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    pixels = np.rint(data.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return pixels, data.target.astype(np.int32)


def load_digits(name: str, split: str, shape: tuple[int, int, int]
                ) -> tuple[np.ndarray, np.ndarray]:
    """digits / digits28 -> (uint8 images [N, *shape], int32 labels [N])."""
    pixels, labels = _digits()
    if split == "train":
        part = slice(0, DIGITS_TRAIN_SIZE)
    elif split == "test":
        part = slice(DIGITS_TRAIN_SIZE, None)
    else:
        raise DatasetError(f"{name}: no split {split!r} (available: train, test)")
    return image_lib.fit_array(pixels[part], shape), labels[part].copy()


def photo(file_name: str) -> np.ndarray:
    """One of scikit-learn's sample photographs, uint8 [427, 640, 3]."""
    from sklearn.datasets import load_sample_image

    return load_sample_image(file_name)


def load_patches(name: str, photo_file: str, num_examples: int, shape: tuple[int, int, int],
                 rng: np.random.Generator) -> np.ndarray:
    """`num_examples` random square-ish crops of the photo -> uint8 [N, *shape]."""
    source = photo(photo_file)
    photo_h, photo_w = source.shape[:2]
    height, width = shape[:2]
    max_scale = min(PATCH_MAX_SCALE, photo_h / height, photo_w / width)
    if max_scale < 1:
        raise DatasetError(
            f"{name}: patches of {height}x{width} do not fit in the {photo_h}x{photo_w} photo")
    out = np.empty((num_examples, *shape), np.uint8)
    for i in range(num_examples):
        # The crop keeps the target's aspect ratio, so the resize below never distorts.
        scale = rng.uniform(1.0, max_scale)
        crop_h = min(photo_h, round(height * scale))
        crop_w = min(photo_w, round(width * scale))
        top = int(rng.integers(0, photo_h - crop_h + 1))
        left = int(rng.integers(0, photo_w - crop_w + 1))
        out[i] = image_lib.fit(source[top:top + crop_h, left:left + crop_w], shape)
    return out
