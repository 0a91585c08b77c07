"""Shared test set-up.

JAX and TensorFlow both start thread pools sized to the machine; on a 2-core CI machine that is
plenty, and the tests keep their models and data tiny so that the whole suite stays fast.
"""

import os

import pytest

# Keep TensorFlow (used by tfds) quiet and off any accelerator; JAX owns the devices.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

# One persistent compilation cache for the whole session, outside the home directory: the
# commands that tests start as subprocesses share their compiled programs, and nothing is left
# in ~/.cache. A test that is about the cache sets its own.
import tempfile

os.environ.setdefault("SOFTLABEL_OOD_COMPILATION_CACHE",
                      tempfile.mkdtemp(prefix="softlabel_ood_test_jax_cache_"))



@pytest.fixture(scope="session")
def finished_tiny_run(tmp_path_factory):
    """A finished run of `tiny_digits_config("ce", num_epochs=1)`: checkpoints at steps 4 and 8,
    predictions with ODIN arrays. Shared: a test copies it before changing anything."""
    from softlabel_ood import train
    from tests.train_helpers import tiny_digits_config

    workdir = tmp_path_factory.mktemp("finished") / "ce"
    train.train_and_evaluate(tiny_digits_config("ce", num_epochs=1), str(workdir))
    return workdir
