"""Every config file provides the fields of DESIGN.md §8 for every method, and runs."""

from __future__ import annotations

import importlib
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from softlabel_ood import methods, train
from softlabel_ood.configs import config_validation
from softlabel_ood.data import datasets
from softlabel_ood.workdir import predictions
from tests import idx_files
from tests.train_helpers import REPO

FAMILIES = ("digits", "fashion_mnist", "fashion_mnist_split", "cifar10", "cifar100")
REQUIRED = (
    "dataset", "ood_datasets", "oe_dataset", "model", "method", "label_smoothing",
    "kd.teacher_workdir", "kd.temperature", "kd.weight", "oe.weight", "oe.batch_size",
    "num_epochs", "batch_size", "learning_rate", "weight_decay", "seed",
    "checkpoint_every_steps", "checkpoint_min_seconds",
)


def _family(name):
    return importlib.import_module(f"softlabel_ood.configs.{name}")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", [*methods.names(), None])
def test_config_has_every_field_and_passes_validation(family, method):
    config = _family(family).get_config(method)
    for field in REQUIRED:
        target = config
        for part in field.split("."):
            assert part in target, f"configs/{family}.py lacks {field}"
            target = target[part]
    assert config.method == (method or "ce")
    if method in ("kd", "kd_incorrect"):
        config.kd.teacher_workdir = "/some/teacher"  # the one field a user must always give
    config_validation.check(config)


@pytest.mark.parametrize("family", FAMILIES)
def test_grid_lists_teachers_before_students(family):
    g = _family(family).get_config().grid
    seen = set()
    for run in g.runs:
        assert run["teacher"] in seen | {""}, run
        assert run["init_from"] in seen | {""}, run
        seen.add(run["name"])
    assert len(seen) == len(g.runs)
    # The paper grid trains every method of the paper.
    assert {r["method"] for r in g.runs} == {"ce", "ls", "oe", "kd", "kd_incorrect"}


def test_cifar_protocol_is_the_oe_reference():
    c = _family("cifar10").get_config("ce")
    assert (c.model, c.dropout_rate, c.optimizer, c.momentum, c.nesterov) == \
        ("wrn40_2", 0.3, "sgd", 0.9, True)
    assert (c.learning_rate, c.weight_decay, c.batch_size, c.num_epochs) == (0.1, 5e-4, 128, 100)
    assert (c.oe.weight, c.oe.batch_size, c.oe_dataset) == (0.5, 256, "random_300k")
    assert "cifar100" in c.ood_datasets
    assert "cifar10" in _family("cifar100").get_config("ce").ood_datasets
    finetune = _family("cifar10").get_config("oe_finetune")
    assert (finetune.method, finetune.num_epochs, finetune.learning_rate) == ("oe", 10, 0.001)


def test_unknown_method_argument_is_rejected():
    with pytest.raises(ValueError, match="unknown method 'no_such_method'"):
        _family("digits").get_config("no_such_method")


def test_fashion_mnist_config_trains_from_idx_files(tmp_path):
    idx_files.write_idx_folder(tmp_path / "fm", np.random.default_rng(0), counts=(64, 20))
    config = _family("fashion_mnist").get_config("ce")
    config.dataset_paths.fashion_mnist = str(tmp_path / "fm")
    config.num_epochs = 1
    config.batch_size = 16
    config.num_ood_examples = 16
    config.ood_datasets = ("digits28", "flower_patches")
    train.train_and_evaluate(config, str(tmp_path / "run"))
    preds = predictions.read(tmp_path / "run" / "predictions")
    assert preds.splits["fashion_mnist_test"].logits.shape == (20, 10)
    assert preds.splits["digits28"].logits.shape == (16, 10)


@pytest.mark.parametrize(("family", "field"), [("fashion_mnist", "fashion_mnist"),
                                               ("fashion_mnist_split", "fashion_mnist6")])
def test_fashion_mnist_without_its_idx_files_names_the_package_that_installs_them(
        family, field, tmp_path):
    # The family's default folder is Debian's; where the package is installed, a folder that is
    # missing in the same way stands in for it.
    folder = datasets.FASHION_MNIST_IDX_DIR
    args = [f"--config=configs/{family}.py", f"--workdir={tmp_path / 'run'}"]
    if pathlib.Path(folder).exists():
        folder = str(tmp_path / "fashion-mnist")
        args.append(f"--config.dataset_paths.{field}={folder}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    result = subprocess.run([sys.executable, "-m", "softlabel_ood.train", *args], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.splitlines() == [
        f"error: {field}/train: {folder} does not exist (config dataset_paths.{field}: a folder "
        "of MNIST-format IDX files; `apt-get install dataset-fashion-mnist` installs "
        "Fashion-MNIST's in /usr/share/datasets/fashion-mnist)"]
    assert not (tmp_path / "run").exists()


def test_fashion_mnist_split_is_fashion_mnist_with_held_out_classes_as_near_ood():
    split = _family("fashion_mnist_split").get_config()
    whole = _family("fashion_mnist").get_config()
    assert split.dataset == "fashion_mnist6"
    assert tuple(split.ood_datasets) == ("fashion_mnist_heldout", *whole.ood_datasets)
    assert tuple(split.ood_groups.near) == ("fashion_mnist_heldout",)
    assert tuple(split.ood_groups.far) == tuple(whole.ood_datasets)
    assert split.dataset_paths.fashion_mnist6 == whole.dataset_paths.fashion_mnist
    assert split.dataset_paths.fashion_mnist_heldout == whole.dataset_paths.fashion_mnist
    assert split.grid.to_dict() == whole.grid.to_dict()
    # Every other field is Fashion-MNIST's, for every argument: model, training, OE, the caps.
    family_fields = {"dataset", "ood_datasets", "ood_groups", "dataset_paths"}
    for arg in (None, "oe", "kd_incorrect", "oe_finetune"):
        a = _family("fashion_mnist_split").get_config(arg).to_dict()
        b = _family("fashion_mnist").get_config(arg).to_dict()
        assert {k: v for k, v in a.items() if k not in family_fields} == \
            {k: v for k, v in b.items() if k not in family_fields}, arg


def test_fashion_mnist_split_config_trains_and_predicts_from_idx_files(tmp_path):
    # Labels 0..9 in turn: of 64 training images 40 are of classes 0-5, of 20 test images 12
    # are ID test images and 8 the held-out near-OOD set.
    for prefix, count in (("train", 64), ("t10k", 20)):
        images = np.random.default_rng(count).integers(0, 256, (count, 28, 28), dtype=np.uint8)
        idx_files.write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", images, gz=True)
        idx_files.write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", np.arange(count) % 10,
                            gz=True)
    config = _family("fashion_mnist_split").get_config("ce")
    config.dataset_paths.fashion_mnist6 = config.dataset_paths.fashion_mnist_heldout = \
        str(tmp_path)
    config.num_epochs = 1
    config.batch_size = 16
    config.num_ood_examples = 16
    config.ood_datasets = ("fashion_mnist_heldout", "digits28")
    config.ood_groups.far = ("digits28",)
    config_validation.check(config)
    train.train_and_evaluate(config, str(tmp_path / "run"))
    preds = predictions.read(tmp_path / "run" / "predictions")
    assert preds.splits["fashion_mnist6_train"].logits.shape == (40, 6)
    assert preds.splits["fashion_mnist6_test"].logits.shape == (12, 6)
    np.testing.assert_array_equal(preds.splits["fashion_mnist6_test"].labels,
                                  np.tile(np.arange(6), 2))
    assert preds.splits["fashion_mnist_heldout"].logits.shape == (8, 6)
    assert (preds.splits["fashion_mnist_heldout"].labels == -1).all()
    assert preds.splits["digits28"].logits.shape == (16, 6)


def test_cifar_grids_have_three_seeds_and_offer_oe_finetuning():
    from softlabel_ood.configs import cifar10, cifar100

    for family in (cifar10, cifar100):
        plain, finetune = family.get_config(), family.get_config("finetune_grid")
        assert tuple(plain.grid.seeds) == tuple(finetune.grid.seeds) == (0, 1, 2)
        names = [r["name"] for r in plain.grid.runs]
        assert "oe" in names
        assert "oe_ft" not in names
        runs = {r["name"]: r for r in finetune.grid.runs}
        assert runs["oe_ft"]["init_from"] == "ce"
        assert runs["oe_ft"]["overrides"] == {"num_epochs": 10, "learning_rate": 0.001}
        assert runs["kd_oe_ft"]["teacher"] == runs["kdi_oe_ft"]["teacher"] == "oe_ft"
        assert finetune.method == "ce"
        assert finetune.num_epochs == plain.num_epochs


@pytest.mark.parametrize("family", FAMILIES)
def test_the_ls_argument_trains_the_grids_ls_teacher_not_ce(family):
    # `configs/<family>.py:ls` used to train with α = 0, bitwise the grid's ce run.
    from softlabel_ood.configs import config_base, grid

    assert config_base.METHOD_ALPHA == 0.3
    family_config = _family(family).get_config()
    spec = next(run for run in family_config.grid.runs if run["name"] == "ls0.3")
    grid_run = grid.run_config(family_config, spec, 0, "/unused").to_dict()
    by_argument = _family(family).get_config("ls")
    with by_argument.unlocked():
        del by_argument["grid"]
    assert config_validation.changed_fields(grid_run, by_argument.to_dict()) == []
    kdi = _family(family).get_config("kd_incorrect")
    assert (kdi.method, kdi.label_smoothing) == ("kd_incorrect", 0.3)
    assert _family(family).get_config("ce").label_smoothing == 0.0
