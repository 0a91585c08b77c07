"""The CIFAR-10 config runs end to end on tfds mock data (the real loading code, fake images)."""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from softlabel_ood import train
from softlabel_ood.workdir import predictions
from tests.train_helpers import with_groups_of_its_sets


def test_cifar10_config_runs_a_few_steps_on_mock_data(tmp_path):
    from softlabel_ood.configs import cifar10

    config = cifar10.get_config("ce")
    config.model = "wrn10_1"  # the real protocol's model family at its smallest depth and width
    config.num_epochs = 1
    config.batch_size = 16
    config.eval_batch_size = 32
    config.num_ood_examples = 32
    config.ood_datasets = ("gaussian", "svhn", "cifar100")
    with_groups_of_its_sets(config)
    with tfds.testing.mock_data(num_examples=48):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    preds = predictions.read(tmp_path / "run" / "predictions")
    assert preds.num_classes == 10
    assert {name: s.role for name, s in preds.splits.items()} == {
        "cifar10_test": "id_test", "cifar10_train": "id_train", "gaussian": "ood_test",
        "svhn": "ood_test", "cifar100": "ood_test"}
    assert preds.splits["cifar10_train"].logits.shape == (48, 10)
    assert preds.splits["svhn"].logits.shape[0] == 32  # capped at num_ood_examples
    assert (preds.splits["cifar100"].labels == -1).all()


def test_cifar10_oe_reads_outliers_and_ood_sets_from_local_files(tmp_path):
    from softlabel_ood.configs import cifar10

    rng = np.random.default_rng(0)
    # 300K Random Images ships as one uint8 [N, 32, 32, 3] .npy; LSUN (crop) as a folder of images.
    np.save(tmp_path / "300K_random_images.npy", rng.integers(0, 256, (40, 32, 32, 3), np.uint8))
    lsun = tmp_path / "LSUN_C" / "test"
    lsun.mkdir(parents=True)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (36, 36, 3), np.uint8)).save(lsun / f"{i}.jpg")

    config = cifar10.get_config("oe")
    config.model = "wrn10_1"
    config.num_epochs = 1
    config.batch_size = 16
    config.oe.batch_size = 8
    config.eval_batch_size = 32
    config.ood_datasets = ("lsun_crop",)
    with_groups_of_its_sets(config)
    config.dataset_paths.random_300k = str(tmp_path / "300K_random_images.npy")
    config.dataset_paths.lsun_crop = str(tmp_path / "LSUN_C")
    with tfds.testing.mock_data(num_examples=32):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    preds = predictions.read(tmp_path / "run" / "predictions")
    assert preds.run["oe_dataset"] == "random_300k"
    assert preds.splits["lsun_crop"].logits.shape == (6, 10)
