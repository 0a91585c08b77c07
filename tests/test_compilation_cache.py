"""The persistent compilation cache: a second process loads what the first one compiled."""

from __future__ import annotations

import numpy as np

from softlabel_ood.training import compilation_cache
from softlabel_ood.workdir import predictions
from tests.train_helpers import run_module

ARGS = ["--config=configs/digits.py", "--config.num_epochs=1", "--config.num_train_examples=128",
        "--config.batch_size=32", "--config.num_ood_examples=32",
        "--config.ood_datasets=('gaussian',)", "--config.ood_groups.near=()",
        "--config.ood_groups.far=('gaussian',)"]


def test_directory_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(compilation_cache.ENV, str(tmp_path / "cache"))
    assert compilation_cache.directory() == str(tmp_path / "cache")
    for off in ("off", "0", "", "OFF"):
        monkeypatch.setenv(compilation_cache.ENV, off)
        assert compilation_cache.directory() is None
    monkeypatch.delenv(compilation_cache.ENV)
    assert compilation_cache.directory().endswith("softlabel_ood/jax")


def test_a_second_process_compiles_nothing_and_gets_the_same_bits(tmp_path):
    cache = tmp_path / "cache"
    env = {compilation_cache.ENV: str(cache)}
    first = run_module("softlabel_ood.train", *ARGS, f"--workdir={tmp_path / 'a'}", env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    entries = sorted(p.name for p in cache.iterdir())
    assert entries, "the first process wrote no cache entries"
    second = run_module("softlabel_ood.train", *ARGS, f"--workdir={tmp_path / 'b'}", env=env)
    assert second.returncode == 0, second.stderr[-2000:]
    # Entries are written only on a miss: every program of the second run came from the cache.
    assert sorted(p.name for p in cache.iterdir()) == entries
    a = predictions.read(tmp_path / "a" / "predictions")
    b = predictions.read(tmp_path / "b" / "predictions")
    for name in a.splits:
        np.testing.assert_array_equal(a.splits[name].logits, b.splits[name].logits)


def test_off_writes_no_cache(tmp_path):
    home = tmp_path / "home"
    result = run_module("softlabel_ood.train", *ARGS, f"--workdir={tmp_path / 'a'}",
                        env={compilation_cache.ENV: "off", "HOME": str(home)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert not (home / ".cache" / "softlabel_ood").exists()
