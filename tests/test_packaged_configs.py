"""Config files ship inside the package; `configs/<file>.py` finds them from any directory."""

from __future__ import annotations

import fnmatch
import os
import subprocess
import sys

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

from softlabel_ood import configs
from tests.train_helpers import REPO

FAMILIES = ("digits", "fashion_mnist", "fashion_mnist_split", "cifar10", "cifar100")


@pytest.fixture
def empty_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("family", FAMILIES)
def test_a_configs_path_that_does_not_exist_names_the_packaged_file(family, empty_cwd):
    packaged = REPO / "softlabel_ood" / "configs" / f"{family}.py"
    assert packaged.is_file()
    assert configs.resolve(f"configs/{family}.py") == str(packaged)
    assert configs.resolve(f"configs/{family}.py:kd") == f"{packaged}:kd"
    assert configs.resolve(f"some/where/configs/{family}.py:ls") == f"{packaged}:ls"


def test_an_existing_file_wins(empty_cwd):
    (empty_cwd / "configs").mkdir()
    (empty_cwd / "configs" / "digits.py").write_text("def get_config(arg=None): ...\n")
    assert configs.resolve("configs/digits.py:ls") == "configs/digits.py:ls"


@pytest.mark.parametrize("spec", ["configs/imagenet.py", "mine/digits.py", "digits.py",
                                  "configs/__init__.py.txt", ""])
def test_other_missing_paths_are_left_for_the_command_to_report(spec, empty_cwd):
    assert configs.resolve(spec) == spec


def test_resolve_argv_rewrites_only_the_config_flag(empty_cwd):
    packaged = str(REPO / "softlabel_ood" / "configs" / "cifar10.py")
    argv = ["prog", "--config=configs/cifar10.py:oe", "--config.num_epochs=3",
            "--workdir=configs/cifar10.py"]
    assert configs.resolve_argv(argv) == [
        "prog", f"--config={packaged}:oe", "--config.num_epochs=3", "--workdir=configs/cifar10.py"]
    assert configs.resolve_argv(["prog", "--config", "configs/cifar10.py"]) == \
        ["prog", "--config", packaged]


def test_the_train_command_reads_a_packaged_config_from_an_empty_directory(empty_cwd):
    # A bad override is refused after the config file was loaded: the one-line error names the
    # field, which it could only do with the packaged digits config in hand.
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-m", "softlabel_ood.train", "--config=configs/digits.py:ls",
         "--config.label_smoothing=1.5", f"--workdir={empty_cwd / 'run'}"],
        cwd=empty_cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: config.label_smoothing: 1.5 is not allowed; expected a number in (0, 1)")
    assert sorted(p.name for p in empty_cwd.iterdir()) == []  # nothing written


def test_the_wheel_takes_the_configs_package():
    # setuptools' package discovery takes the directories with an __init__.py whose dotted
    # names match the `include` patterns.
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    assert any(fnmatch.fnmatchcase("softlabel_ood.configs", pattern) for pattern in include)
    assert (REPO / "softlabel_ood" / "configs" / "__init__.py").is_file()


@pytest.mark.parametrize("family", FAMILIES)
def test_the_clones_configs_directory_reads_the_packaged_file(family):
    import importlib

    spec = importlib.util.spec_from_file_location(f"clone_{family}",
                                                  REPO / "configs" / f"{family}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    packaged = importlib.import_module(f"softlabel_ood.configs.{family}")
    assert module.get_config().to_dict() == packaged.get_config().to_dict()
