"""Sources read from a local array file or image folder (`path` required).

Array files (`.npy`, `.npz`): uint8 images [N, H, W, C], [N, H, W] (grayscale) or [N, C, H, W]
with C in {1, 3} (transposed to NHWC). A `.npz` holds the images under `images` (or `x`, or as its
only array) and optionally int32-convertible labels under `labels` (or `y`). `.npy` files are
memory-mapped, so a seeded subset of the 300K Random Images file (uint8 [300000, 32, 32, 3], 900 MB)
reads only the rows it keeps.

Image folders: every file below the folder (recursively) whose extension is one of
`IMAGE_EXTENSIONS`, in sorted relative-path order; no labels. This reads the extracted ODIN
release archives (LSUN, LSUN_resize, Imagenet, Imagenet_resize, iSUN) as they unpack.

One path serves any split; the split's name then only labels the result and seeds its subset.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib

import numpy as np

from softlabel_ood.data import images as image_lib
from softlabel_ood.data.sources import DatasetError, Source, subset_indices

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".webp", ".tif", ".tiff")
_IMAGE_KEYS = ("images", "x")
_LABEL_KEYS = ("labels", "y")


@dataclasses.dataclass(frozen=True)
class LocalFiles(Source):
    """A .npy/.npz file or image folder that the user points `dataset_paths.<name>` at."""

    conversion: str  # images.RESIZE or images.CROP, for images whose size differs from the target
    # What the path should point at, e.g. which release archive, extracted. field(): required,
    # where the bare annotation would take Source's None as its default.
    path_hint: str = dataclasses.field()
    path_required = True

    def load(self, name: str, split: str, *, shape: tuple[int, int, int],
             num_examples: int | None, rng: np.random.Generator, path: str | None,
             data_dir: str | None, download: bool) -> tuple[np.ndarray, np.ndarray | None]:
        return load_path(name, split, path, shape=shape, num_examples=num_examples, rng=rng,
                         method=self.conversion)

    def check_available(self, name: str, split: str, *, path: str | None,
                        data_dir: str | None) -> None:
        check_path(name, split, path)


def check_path(name: str, split: str, path: str) -> None:
    """DatasetError unless `path` is a folder holding image files, or a .npy file of uint8
    images in an allowed layout, or a .npz file with an images array; no image is read (a
    .npy file's header is, a .npz file's list of arrays, a folder's file names)."""
    p = pathlib.Path(path).expanduser()
    with _read_errors(name, split, p):
        if p.is_dir():
            _image_files(name, split, p)
        elif p.suffix == ".npy":
            _open_array_file(name, split, p)  # memory-mapped: only the header is read
        elif p.suffix == ".npz":
            with np.load(p) as archive:
                _archive_keys(name, split, p, list(archive.keys()))
        else:
            raise _neither(name, split, p)


def load_path(name: str, split: str, path: str, *, shape: tuple[int, int, int],
              num_examples: int | None, rng: np.random.Generator,
              method: str = image_lib.RESIZE) -> tuple[np.ndarray, np.ndarray | None]:
    """A .npy/.npz file or an image folder -> (uint8 images [N, *shape], labels or None)."""
    p = pathlib.Path(path).expanduser()
    if not p.exists():
        raise DatasetError(f"{name}/{split}: path {p} does not exist")
    with _read_errors(name, split, p):
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
    raise _neither(name, split, p)


@contextlib.contextmanager
def _read_errors(name: str, split: str, path: pathlib.Path):
    """A file that does not read (damaged, pickled objects, not an image) -> DatasetError."""
    try:
        yield
    except (OSError, ValueError, EOFError) as e:
        if isinstance(e, DatasetError):
            raise
        raise DatasetError(f"{name}/{split}: cannot read {path}: {e}") from e


def _neither(name: str, split: str, path: pathlib.Path) -> DatasetError:
    return DatasetError(
        f"{name}/{split}: {path} is neither a folder of images nor a .npy/.npz file")


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
        image_key, label_key = _archive_keys(name, split, path, list(archive.keys()))
        images = _as_nhwc(name, split, path, archive[image_key])
        labels = None if label_key is None else archive[label_key].reshape(-1)
    if labels is not None and labels.shape[0] != images.shape[0]:
        raise DatasetError(
            f"{name}/{split}: {path} has {images.shape[0]} images but {labels.shape[0]} labels")
    return images, labels


def _archive_keys(name, split, path, keys) -> tuple[str, str | None]:
    """The names of a .npz file's images and labels (None: no labels)."""
    image_key = next((k for k in _IMAGE_KEYS if k in keys), keys[0] if len(keys) == 1 else None)
    if image_key is None:
        raise DatasetError(
            f"{name}/{split}: {path} has arrays {keys}; expected one named 'images' or 'x'")
    return image_key, next((k for k in _LABEL_KEYS if k in keys), None)


def _image_files(name, split, folder) -> list[pathlib.Path]:
    files = sorted(
        f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
    if not files:
        raise DatasetError(
            f"{name}/{split}: folder {folder} holds no image files "
            f"({', '.join(IMAGE_EXTENSIONS)})")
    return files


def _load_folder(name, split, folder, shape, num_examples, rng, method):
    files = _image_files(name, split, folder)
    keep = subset_indices(len(files), num_examples, rng)
    images = image_lib.fit_all(
        (image_lib.read_image_file(files[i]) for i in keep), len(keep), shape, method)
    return images, None
