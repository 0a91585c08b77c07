"""Small MNIST-format IDX files, written by tests for the IDX readers."""

from __future__ import annotations

import gzip
import pathlib

import numpy as np


def write_idx(path: pathlib.Path, array: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def write_idx_folder(folder: pathlib.Path, rng, gz: bool = True, counts=(12, 5)) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, count in zip(("train", "t10k"), counts, strict=True):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        # Every class as often as the count allows, so a model trained on them sees all ten.
        labels = rng.permutation(np.arange(count) % 10).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, gz)
        arrays[prefix] = (images, labels)
    return arrays
