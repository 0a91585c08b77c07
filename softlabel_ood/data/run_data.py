"""The datasets of a run, as its config names them, each loaded once per process.

A grid's runs read the same sets (every run its ID splits and OOD sets, every OE run the same
outliers), so a set is loaded, converted and generated once per process and shared, read-only:
`reproduce` then pays for data once, not once per run.
"""

from __future__ import annotations

import dataclasses
import functools

import ml_collections
import numpy as np

from softlabel_ood import methods
from softlabel_ood.data import datasets

# Which examples a run sees never depends on its seed: every run of a grid trains on the same
# subset and is scored on the same OOD sets, so that runs differ only in what they set out to vary.
DATA_SEED = 0


def _load(config: ml_collections.ConfigDict, name: str, split: str, *,
          image_shape: tuple[int, int, int] | None = None,
          num_examples: int | None = None) -> datasets.ArrayDataset:
    return _load_once(name, split, config.dataset_paths.get(name) or None,
                      config.data_dir or None, image_shape and tuple(image_shape), num_examples)


# Enough for every set of a grid (ID train and test, OE outliers, ten OOD sets) twice over.
@functools.lru_cache(maxsize=32)
def _load_once(name: str, split: str, path: str | None, data_dir: str | None,
               image_shape: tuple[int, int, int] | None,
               num_examples: int | None) -> datasets.ArrayDataset:
    ds = datasets.load(name, split, path=path, data_dir=data_dir, seed=DATA_SEED,
                       image_shape=image_shape, num_examples=num_examples)
    for array in (ds.images, ds.labels):
        array.setflags(write=False)  # shared by every run of the process
    return ds


def with_every_dataset_path(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A stored run's config with a `dataset_paths` entry ("": the source's default) for every
    dataset name: runs of earlier versions name only the paths they set, and
    `--config.dataset_paths.<name>` overrides only a field that exists."""
    with config.unlocked():
        if "dataset_paths" not in config:
            config.dataset_paths = ml_collections.ConfigDict()
        for name in datasets.NAMES:
            if name not in config.dataset_paths:
                config.dataset_paths[name] = ""
    return config


def load_id(config: ml_collections.ConfigDict, split: str) -> datasets.ArrayDataset:
    cap = config.num_train_examples if split == "train" else 0
    return _load(config, config.dataset, split, num_examples=cap or None)


def load_outliers(config: ml_collections.ConfigDict) -> datasets.ArrayDataset:
    shape = datasets.info(config.dataset).image_shape
    outliers = _load(config, config.oe_dataset, "train", image_shape=shape)
    # Each step's outliers are a batch of an epoch's permutation of the set, as for the ID data.
    if config.oe.batch_size > len(outliers.labels):
        raise datasets.DatasetError(
            f"config.oe.batch_size: {config.oe.batch_size} is not allowed; expected at most the "
            f"{len(outliers.labels)} images of {config.oe_dataset}")
    return outliers


def load_ood(config: ml_collections.ConfigDict) -> dict[str, datasets.ArrayDataset]:
    """Every OOD test set, converted to the ID images' shape, labels set to -1."""
    shape = datasets.info(config.dataset).image_shape
    sets = {}
    for name in config.ood_datasets:
        ds = _load(config, name, "test", image_shape=shape, num_examples=config.num_ood_examples)
        sets[name] = datasets.ArrayDataset(images=ds.images, labels=np.full_like(ds.labels, -1),
                                           name=ds.name, split=ds.split)
    return sets


def used_sets(config: ml_collections.ConfigDict, *,
              training: bool = True) -> list[tuple[str, str, str]]:
    """(name, split, path) of every set that training (unless `training` is False: OE's
    outliers are read by training only) and the predictions of `config` read."""
    used = [(config.dataset, "train"), (config.dataset, "test")]
    if training and methods.needs_outliers(config.method):
        used.append((config.oe_dataset, "train"))
    used += [(name, "test") for name in config.ood_datasets]
    return [(name, split, config.dataset_paths.get(name) or "") for name, split in used]


def check_available(config: ml_collections.ConfigDict, *, training: bool = True) -> None:
    """Raises DatasetError naming the first set of the run that cannot be found (nothing is
    read), so that a missing OOD set stops a run before its first step, not after its last."""
    for name, split, path in used_sets(config, training=training):
        datasets.check_available(name, split, path=path, data_dir=config.data_dir or None)


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """What training reads, loaded once per run: `predict` reuses train and test afterwards."""

    train: datasets.ArrayDataset
    test: datasets.ArrayDataset
    outliers: datasets.ArrayDataset | None = None  # OE's auxiliary set


def load_training(config: ml_collections.ConfigDict) -> TrainingData:
    return TrainingData(train=load_id(config, "train"), test=load_id(config, "test"),
                        outliers=(load_outliers(config) if methods.needs_outliers(config.method)
                                  else None))
