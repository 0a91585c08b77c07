"""softlabel_ood.training.checkpointing: full restores, and model-only restores of other layouts."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import logging as absl_logging

from softlabel_ood import cli_errors, train
from softlabel_ood.training import checkpointing, run_model, runs_axis, train_step
from softlabel_ood.workdir import run_dir, saved_runs
from tests.train_helpers import tiny_digits_config


def _state(seed: int) -> train_step.TrainState:
    config = tiny_digits_config("ce", seed=seed)
    return run_model.create_state(config, run_model.create_model(config), runs_axis.data_mesh())


def test_full_restore_equals_what_was_saved(tmp_path):
    saved = _state(0).replace(step=jnp.int32(7))
    ckpts = checkpointing.Checkpoints(tmp_path / "checkpoints")
    ckpts.save(saved)
    ckpts.close()
    reader = checkpointing.Checkpoints(tmp_path / "checkpoints", read_only=True)
    restored = reader.restore(_state(1))
    reader.close()
    assert int(restored.step) == 7
    for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(restored), strict=True):
        np.testing.assert_array_equal(a, b)


def test_opening_read_only_logs_no_warning_and_other_warnings_still_show(tmp_path, caplog):
    ckpts = checkpointing.Checkpoints(tmp_path / "checkpoints")
    ckpts.save(_state(0))
    ckpts.close()
    with caplog.at_level(logging.WARNING):
        checkpointing.Checkpoints(tmp_path / "checkpoints", read_only=True).close()
        absl_logging.warning("Given directory is read only=after the open")
    assert [r.getMessage() for r in caplog.records] == [
        "Given directory is read only=after the open"]


def test_model_variables_restore_from_another_optimizer_layout(tmp_path):
    # A checkpoint whose optimizer state has another structure (as those written before the
    # learning rate became an argument of the step): its model still serves as a teacher.
    state = _state(0)
    other = state.replace(step=jnp.int32(3), opt_state={"old_schedule_count": jnp.int32(3)})
    ckpts = checkpointing.Checkpoints(tmp_path / "checkpoints")
    ckpts.save(other)
    ckpts.close()
    reader = checkpointing.Checkpoints(tmp_path / "checkpoints", read_only=True)
    variables = reader.restore_variables(_state(1).variables)
    reader.close()
    assert set(variables) == {"params", "batch_stats"}
    for a, b in zip(jax.tree.leaves(state.variables), jax.tree.leaves(variables), strict=True):
        np.testing.assert_array_equal(a, b)


def test_resuming_another_optimizer_layout_is_refused_with_one_line(tmp_path):
    config = tiny_digits_config("ce")
    workdir = tmp_path / "run"
    workdir.mkdir()
    saved_runs.write_config(workdir, config)
    other = _state(0).replace(step=jnp.int32(3), opt_state={"old_schedule_count": jnp.int32(3)})
    ckpts = checkpointing.Checkpoints(workdir / "checkpoints")
    ckpts.save(other)
    ckpts.close()
    with pytest.raises(saved_runs.RunError, match=r"cannot be resumed; train in a new workdir"):
        train.train_and_evaluate(config, str(workdir))


def _damage(step_dir):
    # Truncate every array file of the checkpoint, as a full disk or a torn copy would.
    for path in step_dir.rglob("*"):
        if path.is_file() and path.parent.name == "d":
            path.write_bytes(path.read_bytes()[:10])


def test_a_damaged_latest_checkpoint_is_set_aside_and_the_previous_one_resumed(tmp_path):
    ckpts = checkpointing.Checkpoints(tmp_path / "checkpoints")
    for step in (3, 5):
        ckpts.save(_state(step).replace(step=jnp.int32(step)))
    ckpts.close()
    _damage(tmp_path / "checkpoints" / "5")
    ckpts = checkpointing.Checkpoints(tmp_path / "checkpoints")
    restored = ckpts.restore(_state(0))
    ckpts.close()
    assert int(restored.step) == 3
    for a, b in zip(jax.tree.leaves(_state(3).params), jax.tree.leaves(restored.params),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["3", "damaged-5"]


def test_a_run_whose_every_checkpoint_is_damaged_is_refused_not_retrained(tmp_path, capsys):
    config = tiny_digits_config("ce", num_epochs=1)
    workdir = tmp_path / "run"
    train.train_and_evaluate(config, str(workdir))
    (workdir / run_dir.DONE).unlink()
    before = (workdir / "predictions" / "manifest.json").read_bytes()
    for step_dir in (workdir / "checkpoints").iterdir():
        _damage(step_dir)
    with pytest.raises(SystemExit) as exit_info:
        cli_errors.exit_on_user_error(lambda: train.train_and_evaluate(config, str(workdir)))()
    assert exit_info.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"error: {workdir / 'checkpoints'}: no checkpoint reads back (step 8:")
    assert line.endswith("the run cannot resume. Move the checkpoints away to train again from "
                         "step 0")
    assert (workdir / "predictions" / "manifest.json").read_bytes() == before
    assert not saved_runs.is_finished(workdir)
