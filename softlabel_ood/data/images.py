"""Decoding and shape conversion of uint8 images, shared by every source.

Conversions, applied per image when its shape differs from the requested (H, W, C):
- size, method "resize" (the default): scale with PIL bilinear so that the image covers the target
  (the shorter side becomes the target side; the longer side is truncated to an integer, as
  torchvision's `Resize(int)` does), then center crop. For a square target this is exactly the OE
  reference's `Resize(32)` + `CenterCrop(32)` on PIL images (PIL >= 7 bilinear antialiases when
  it shrinks).
- size, method "crop": center crop without scaling when the image is at least as large as the
  target (LSUN/TinyImageNet "crop" sets of the ODIN release are crops, some 36x36 with a dark
  border that the crop removes); smaller images fall back to "resize".
- channels: gray -> RGB repeats the channel; RGB -> gray is the ITU-R 601-2 luma
  L = 0.299 R + 0.587 G + 0.114 B, computed bit for bit as PIL's `convert("L")` does.
"""

from __future__ import annotations

import io
from collections.abc import Iterable

import numpy as np
from PIL import Image

RESIZE = "resize"
CROP = "crop"


def decode(encoded: bytes) -> np.ndarray:
    """PNG/JPEG/... bytes -> uint8 [H, W, 1] for grayscale files, [H, W, 3] for everything else."""
    with Image.open(io.BytesIO(encoded)) as image:
        return from_pil(image)


def read_image_file(path) -> np.ndarray:
    """An image file -> uint8 [H, W, 1] (grayscale) or [H, W, 3] (any other mode)."""
    with Image.open(path) as image:
        return from_pil(image)


def from_pil(image: Image.Image) -> np.ndarray:
    if image.mode == "L":
        return np.asarray(image, np.uint8)[:, :, None]
    # Palette, RGBA, CMYK, 16-bit gray, ...: RGB is the one representation every one of them has.
    return np.asarray(image.convert("RGB"), np.uint8)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """uint8 [..., 3] -> uint8 [..., 1], ITU-R 601-2 luma exactly as PIL's convert("L")."""
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    # PIL's fixed-point weights: 0.299, 0.587, 0.114 scaled by 2**16, rounded half up.
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)[..., None]


def convert_channels(image: np.ndarray, channels: int) -> np.ndarray:
    have = image.shape[-1]
    if have == channels:
        return image
    if have == 1 and channels == 3:
        return np.repeat(image, 3, axis=-1)
    if have == 3 and channels == 1:
        return luminance(image)
    raise ValueError(f"cannot convert {have} channels to {channels}")


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    pil = Image.fromarray(image[:, :, 0] if image.shape[-1] == 1 else image)
    out = np.asarray(pil.resize((width, height), Image.Resampling.BILINEAR), np.uint8)
    return out[:, :, None] if out.ndim == 2 else out


def _center_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    # round() as torchvision's CenterCrop does, so odd margins split the same way.
    top = round((image.shape[0] - height) / 2)
    left = round((image.shape[1] - width) / 2)
    return image[top:top + height, left:left + width]


def fit(image: np.ndarray, shape: tuple[int, int, int], method: str = RESIZE) -> np.ndarray:
    """One uint8 [h, w, c] image -> uint8 `shape` (see the module docstring for the rules)."""
    height, width, channels = shape
    # Shrinking to one channel first makes the resize cheaper; growing to three channels last
    # does the same. The result is the same either way up to rounding.
    if channels == 1:
        image = convert_channels(image, 1)
    h, w = image.shape[:2]
    if (h, w) != (height, width):
        if not (method == CROP and h >= height and w >= width):
            # Integer arithmetic decides which side is the covering one, as torchvision does.
            if height * w >= width * h:
                new_h, new_w = height, max(width, (w * height) // h)
            else:
                new_h, new_w = max(height, (h * width) // w), width
            image = _resize(image, new_h, new_w)
        image = _center_crop(image, height, width)
    return convert_channels(image, channels)


def fit_all(images: Iterable[np.ndarray], count: int, shape: tuple[int, int, int],
            method: str = RESIZE) -> np.ndarray:
    """`count` images of any sizes -> one uint8 [count, *shape] array, converted one at a time.

    Preallocated so that peak memory is the output plus one source image.
    """
    out = np.empty((count, *shape), np.uint8)
    filled = 0
    for image in images:
        out[filled] = fit(image, shape, method)
        filled += 1
    if filled != count:
        raise ValueError(f"expected {count} images, got {filled}")
    return out


def fit_array(images: np.ndarray, shape: tuple[int, int, int], method: str = RESIZE) -> np.ndarray:
    """uint8 [N, h, w, c] -> uint8 [N, *shape]; no copy when the shape already matches."""
    if images.shape[1:] == tuple(shape):
        return np.asarray(images)
    if images.shape[1:3] == tuple(shape[:2]):
        return convert_channels(np.asarray(images), shape[2])
    return fit_all(iter(images), images.shape[0], shape, method)
