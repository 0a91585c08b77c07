"""Sources read from local files: array files, image folders, and IDX (MNIST-format) files.

Array files (`.npy`, `.npz`): uint8 images [N, H, W, C], [N, H, W] (grayscale) or [N, C, H, W]
with C in {1, 3} (transposed to NHWC). A `.npz` holds the images under `images` (or `x`, or as its
only array) and optionally int32-convertible labels under `labels` (or `y`). `.npy` files are
memory-mapped, so a seeded subset of the 300K Random Images file (uint8 [300000, 32, 32, 3], 900 MB)
reads only the rows it keeps.

Image folders: every file below the folder (recursively) whose extension is one of
`IMAGE_EXTENSIONS`, in sorted relative-path order; no labels. This reads the extracted ODIN
release archives (LSUN, LSUN_resize, Imagenet, Imagenet_resize, iSUN) as they unpack.

IDX: `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]` in one folder, as MNIST and
Fashion-MNIST ship them (Debian's dataset-fashion-mnist installs them under
/usr/share/datasets/fashion-mnist).
"""

from __future__ import annotations

import gzip
import pathlib

import numpy as np

from softlabel_ood.data_sources import images as image_lib
from softlabel_ood.data_sources.common import DatasetError, subset_indices

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".webp", ".tif", ".tiff")
_IMAGE_KEYS = ("images", "x")
_LABEL_KEYS = ("labels", "y")


def load_path(name: str, split: str, path: str, *, shape: tuple[int, int, int],
              num_examples: int | None, rng: np.random.Generator,
              method: str = image_lib.RESIZE) -> tuple[np.ndarray, np.ndarray | None]:
    """A .npy/.npz file or an image folder -> (uint8 images [N, *shape], labels or None)."""
    p = pathlib.Path(path).expanduser()
    if not p.exists():
        raise DatasetError(f"{name}/{split}: path {p} does not exist")
    try:
        if p.is_dir():
            return _load_folder(name, split, p, shape, num_examples, rng, method)
        if p.suffix in (".npy", ".npz"):
            images, labels = _open_array_file(name, split, p)
            keep = subset_indices(images.shape[0], num_examples, rng)
            # Taking a subset of a memory-mapped array reads only the kept rows; np.array then
            # copies into memory, so training never pages from the file.
            chosen = images if len(keep) == images.shape[0] else images[keep]
            return (image_lib.fit_array(np.array(chosen), shape, method),
                    None if labels is None else labels[keep])
    except (OSError, ValueError, EOFError) as e:
        if isinstance(e, DatasetError):
            raise
        raise DatasetError(f"{name}/{split}: cannot read {p}: {e}") from e
    raise DatasetError(
        f"{name}/{split}: {p} is neither a folder of images nor a .npy/.npz file")


def _as_nhwc(name: str, split: str, path: pathlib.Path, images: np.ndarray) -> np.ndarray:
    if images.dtype != np.uint8:
        raise DatasetError(
            f"{name}/{split}: {path} holds {images.dtype} images; expected uint8 pixels 0..255")
    if images.ndim == 3:
        return images[..., None]
    if images.ndim == 4 and images.shape[-1] in (1, 3):
        return images
    if images.ndim == 4 and images.shape[1] in (1, 3):
        return images.transpose(0, 2, 3, 1)
    raise DatasetError(
        f"{name}/{split}: {path} holds an array of shape {images.shape}; expected "
        "[N, H, W, C], [N, H, W] or [N, C, H, W] with C in (1, 3)")


def _open_array_file(name, split, path):
    if path.suffix == ".npy":
        return _as_nhwc(name, split, path, np.load(path, mmap_mode="r")), None
    with np.load(path) as archive:
        keys = list(archive.keys())
        image_key = next((k for k in _IMAGE_KEYS if k in keys), keys[0] if len(keys) == 1 else None)
        if image_key is None:
            raise DatasetError(
                f"{name}/{split}: {path} has arrays {keys}; expected one named 'images' or 'x'")
        label_key = next((k for k in _LABEL_KEYS if k in keys), None)
        images = _as_nhwc(name, split, path, archive[image_key])
        labels = None if label_key is None else archive[label_key].reshape(-1)
    if labels is not None and labels.shape[0] != images.shape[0]:
        raise DatasetError(
            f"{name}/{split}: {path} has {images.shape[0]} images but {labels.shape[0]} labels")
    return images, labels


def _load_folder(name, split, folder, shape, num_examples, rng, method):
    files = sorted(
        f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
    if not files:
        raise DatasetError(
            f"{name}/{split}: folder {folder} holds no image files "
            f"({', '.join(IMAGE_EXTENSIONS)})")
    keep = subset_indices(len(files), num_examples, rng)
    images = image_lib.fit_all(
        (image_lib.read_image_file(files[i]) for i in keep), len(keep), shape, method)
    return images, None


# ---------------------------------------------------------------------------------------------
# IDX files

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


def load_idx(name: str, split: str, folder: str | pathlib.Path, *,
             shape: tuple[int, int, int], num_examples: int | None,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-format IDX files in `folder` -> (uint8 images [N, *shape], int32 labels [N])."""
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
