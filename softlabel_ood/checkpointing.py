"""Orbax checkpoints of a TrainState in `<workdir>/checkpoints`, and read-only access to another
run's model (a KD teacher, or the run that OE fine-tuning starts from)."""

from __future__ import annotations

import hashlib
import os

import jax
import orbax.checkpoint as ocp
from etils import epath

from softlabel_ood import train_step

MAX_TO_KEEP = 3


def _saved_tree(state: train_step.TrainState) -> dict:
    # The optimizer and apply function are rebuilt from the config; only arrays are saved.
    return {"step": state.step, "params": state.params, "batch_stats": state.batch_stats,
            "opt_state": state.opt_state}


def _abstract(tree):
    # Shapes, dtypes and shardings of `tree`: orbax restores each array straight onto its devices.
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpoints:
    """The checkpoints of one run.

    Saving is asynchronous: `save` returns once the arrays are copied off the devices, and the
    files are written in the background while training goes on (at a checkpoint every 100 steps,
    a synchronous save would cost the digits runs a third of their step time). Orbax writes each
    checkpoint under a temporary name and renames it when complete, so a killed process leaves
    no partial checkpoint that `latest_step` could return; `close` waits for the last write.
    """

    def __init__(self, directory: epath.PathLike, *, read_only: bool = False):
        # Orbax accepts absolute paths only; a workdir given relative to the current directory
        # is made absolute here (a bucket path such as gs://... already is).
        directory = str(directory)
        self.directory = epath.Path(directory if "://" in directory else os.path.abspath(directory))
        if read_only:
            options = ocp.CheckpointManagerOptions(
                read_only=True, create=False, max_to_keep=None, save_interval_steps=0,
                enable_async_checkpointing=False)
        else:
            options = ocp.CheckpointManagerOptions(
                max_to_keep=MAX_TO_KEEP, create=True, enable_async_checkpointing=True,
                cleanup_tmp_directories=True,
                # The runs of a population save the same steps at the same time; with several
                # processes their barriers must not share names ("commit of step 4").
                multiprocessing_options=ocp.options.MultiprocessingOptions(
                    barrier_sync_key_prefix=hashlib.sha1(
                        str(self.directory).encode()).hexdigest()[:16]))
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def drop_after(self, step: int) -> None:
        """Deletes the checkpoints past `step`: a population rewinding a run that saved a step
        the others did not (see `train_loop._initial_states`) writes them again, identical."""
        for later in self._manager.all_steps():
            if later > step:
                self._manager.delete(later)

    def save(self, state: train_step.TrainState) -> None:
        step = int(jax.device_get(state.step))
        if self._manager.latest_step() != step:
            self._manager.save(step, args=ocp.args.StandardSave(_saved_tree(state)))

    def restore(self, like: train_step.TrainState, step: int | None = None
                ) -> train_step.TrainState:
        """The checkpoint at `step` (default: the latest), shaped and sharded like `like`."""
        target = _abstract(_saved_tree(like))
        tree = self._manager.restore(self._step(step), args=ocp.args.StandardRestore(target))
        return like.replace(**tree)

    def restore_variables(self, like: dict, step: int | None = None) -> dict:
        """Only {"params", "batch_stats"} of a checkpoint, shaped and sharded like `like`.

        What a teacher, a fine-tuning start or `predict` needs. The optimizer state is not read,
        so checkpoints whose optimizer state has another layout (those written before the
        learning rate became a runtime value) still serve.
        """
        target = _abstract({"params": like["params"], "batch_stats": like["batch_stats"]})
        return self._manager.restore(self._step(step), args=ocp.args.PyTreeRestore(
            item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
            partial_restore=True))

    def _step(self, step: int | None) -> int:
        step = self._manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{self.directory}: no checkpoint to restore")
        return step

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
