"""Orbax checkpoints of a TrainState in `<workdir>/checkpoints`, and read-only access to another
run's model (a KD teacher, or the run that OE fine-tuning starts from)."""

from __future__ import annotations

import contextlib
import hashlib
import logging as std_logging
import os
import re
import signal
import sys
import threading
from typing import NamedTuple

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from softlabel_ood.cli_errors import UserError
from softlabel_ood.training import train_step

MAX_TO_KEEP = 3
# The name orbax's CheckpointManager gives the single item of each step's directory.
_ITEM = "default"


class DamagedCheckpointError(UserError):
    """No checkpoint of the run reads back."""


class CheckpointWriteError(UserError):
    """A checkpoint could not be written (a full disk, no permission)."""


# The suffix of the temporary name orbax writes a checkpoint under before renaming it.
_PARTIAL = ".orbax-checkpoint-tmp"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {line[:160]}{'...' if len(line) > 160 else ''}"


@contextlib.contextmanager
def _without_read_only_notice():
    """Orbax warns "Given directory is read only" each time a manager opens read-only, which
    here is every KD teacher and every predict: expected, so not shown."""
    def keep(record: std_logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Given directory is read only")

    logger = std_logging.getLogger("absl")
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def _is_orbax_coroutine(obj) -> bool:
    code = getattr(obj, "cr_code", None)
    return f"{os.sep}orbax{os.sep}" in getattr(code, "co_filename", "")


def _quiet_orbax_echoes() -> None:
    """Silences the echoes of a failed read or write, whose failure the caller handles.

    When one array of a checkpoint cannot be read or written, orbax raises and closes its
    asyncio loop while tensorstore still completes the other operations; their callbacks then
    meet the closed loop and are reported as unraisable `RuntimeError('Event loop is closed')`
    tracebacks and "Future exception was never retrieved" log lines, and orbax's unfinished
    coroutines as "Exception ignored in <coroutine ...>" at exit, after the command's one line.
    Only those messages are dropped; every other report goes through as before.
    """
    if getattr(sys.unraisablehook, "_softlabel_ood_quiet", False):
        return
    previous = sys.unraisablehook

    def hook(unraisable):
        if isinstance(unraisable.exc_value, RuntimeError) and \
                str(unraisable.exc_value) == "Event loop is closed":
            return
        if _is_orbax_coroutine(unraisable.object):
            return
        previous(unraisable)

    hook._softlabel_ood_quiet = True
    sys.unraisablehook = hook
    std_logging.getLogger("asyncio").addFilter(
        lambda record: "exception was never retrieved" not in record.getMessage())


@contextlib.contextmanager
def _interrupts_deferred():
    """Ctrl-C (SIGINT) during the block takes effect when it ends. A save interrupted in orbax's
    synchronous part would leave a partial checkpoint instead of the one it was starting; let
    through, it completes in the background and `close` waits for it."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is None:
        yield  # only the main thread may set a handler; None: a handler Python did not set
        return
    received = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            signal.raise_signal(signal.SIGINT)  # to the handler that was there before


def has_checkpoint(directory: epath.PathLike) -> bool:
    """Whether `directory` holds a committed checkpoint (orbax names them by their step)."""
    return latest_saved_step(directory) is not None


def latest_saved_step(directory: epath.PathLike) -> int | None:
    """The step of the latest committed checkpoint in `directory`, read from the names alone
    (a checkpoint being written has a temporary name until it is complete); None if none."""
    directory = epath.Path(directory)
    if not directory.is_dir():
        return None
    return max((int(p.name) for p in directory.iterdir() if p.name.isdigit()), default=None)


def _saved_tree(state: train_step.TrainState) -> dict:
    # The optimizer and apply function are rebuilt from the config; only arrays are saved.
    return {"step": state.step, "params": state.params, "batch_stats": state.batch_stats,
            "opt_state": state.opt_state}


def _abstract(tree):
    # Shapes, dtypes and shardings of `tree`: orbax restores each array straight onto its devices.
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _layout(tree) -> dict[tuple[str, ...], tuple[int, ...]]:
    """{key path: shape} of the arrays of `tree` (a state, or a checkpoint's metadata, where
    namedtuples are dicts: keys are compared by name)."""
    def name(key) -> str:
        for attribute in ("key", "name", "idx"):
            if hasattr(key, attribute):
                return str(getattr(key, attribute))
        return str(key)

    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {tuple(map(name, path)): tuple(leaf.shape) for path, leaf in flat}


def _write_reason(error: BaseException) -> str:
    """Why a write failed, in a few words: the operating system's reason when orbax gives it."""
    text = str(error)
    code = re.search(r"os_error_code='(\d+)'", text)
    if code:
        return os.strerror(int(code.group(1)))
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return _first_line(error)


class ReadableModel(NamedTuple):
    """A model restored for predictions, and the later checkpoints that did not read back."""

    variables: dict  # {"params", "batch_stats"}
    step: int  # the step of the checkpoint it comes from
    unreadable: list[tuple[int, str]]  # (step, why) of each later checkpoint, newest first


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
        # A failed background write is logged by orbax's threads with tracebacks before the
        # manager raises it again in `save` or `close`, which report it in one line.
        self._log_filter = lambda record: not (record.levelno >= std_logging.ERROR and
                                               f"{os.sep}orbax{os.sep}" in record.pathname)
        if not read_only:
            std_logging.getLogger("absl").addFilter(self._log_filter)
        _quiet_orbax_echoes()
        self._options = options
        self._manager = self._open_manager()

    def _open_manager(self) -> ocp.CheckpointManager:
        with _without_read_only_notice():
            return ocp.CheckpointManager(self.directory, options=self._options)

    def _reopen(self) -> None:
        # A manager fixes how it reads steps (one unnamed item or several) from the first step
        # directory it reads; one whose item directory is missing would leave it reading every
        # other step wrong. A fresh manager reads the next step on its own terms.
        self._manager.close()
        self._manager = self._open_manager()

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
        """Starts writing `state`; CheckpointWriteError if an earlier write failed."""
        step = int(jax.device_get(state.step))
        if self._manager.latest_step() != step:
            try:
                with _interrupts_deferred():
                    self._manager.save(step, args=ocp.args.StandardSave(_saved_tree(state)))
            except Exception as e:  # an earlier background write's failure, raised again here
                raise self._write_failure(e) from None

    def _write_failure(self, error: BaseException) -> CheckpointWriteError:
        """The one-line error of a failed write, once its partial files are removed."""
        partial = sorted(p.name for p in self.directory.iterdir() if _PARTIAL in p.name) \
            if self.directory.exists() else []
        for name in partial:
            (self.directory / name).rmtree(missing_ok=True)
        where = self.directory / partial[0].split(".")[0] if partial else self.directory
        latest = self._manager.latest_step()
        return CheckpointWriteError(
            f"{where}: checkpoint not written ({_write_reason(error)}); its partial files are "
            f"removed, and the run resumes from step {latest or 0} when started again")

    def restore(self, like: train_step.TrainState, step: int | None = None
                ) -> train_step.TrainState:
        """The checkpoint at `step`, shaped and sharded like `like`.

        Without `step`: the latest checkpoint that reads back. One that does not (a truncated
        or damaged file) is reported and the one before it is tried. If none reads, the latest
        one's error is raised as it was when its model arrays read (its optimizer state has
        another layout), and as a DamagedCheckpointError when they do not either.
        """
        target = _abstract(_saved_tree(like))
        if step is not None:
            return like.replace(**self._manager.restore(
                step, args=ocp.args.StandardRestore(target)))
        steps = sorted(self._manager.all_steps(), reverse=True)
        if not steps:
            raise DamagedCheckpointError(f"{self.directory}: no checkpoint to restore")
        failures = []
        for s in steps:
            try:
                tree = self._manager.restore(s, args=ocp.args.StandardRestore(target))
            except Exception as e:  # orbax and tensorstore raise many types for a bad file
                failures.append((s, e))
                self._reopen()
                continue
            if failures:
                why = self._why(*failures[0])  # before the rename, which moves its folder
                self._set_aside([f for f, _ in failures])
                logging.warning("%s: checkpoint %s does not read back (%s); set aside as "
                                "damaged-<step>, resuming from the checkpoint of step %d",
                                self.directory, ", ".join(str(f) for f, _ in failures), why, s)
            return like.replace(**tree)
        latest, error = failures[0]
        # A fresh manager: this one has bound the item to the full-state handler by now. (Not a
        # read-only one, which orbax announces with a warning line.)
        reader = Checkpoints(self.directory)
        try:
            reader.restore_variables(like.variables, latest)
            same_layout = reader.stored_layout(latest) == _layout(target)
        except Exception:  # any failure to read the model arrays means damaged files
            raise DamagedCheckpointError(
                f"{self.directory}: no checkpoint reads back (step {latest}: "
                f"{self._why(latest, error)}); the run cannot resume. Move the checkpoints away to "
                f"train again from step 0") from None
        finally:
            reader.close()
        if same_layout:  # this version's optimizer state, yet it does not read: a damaged file
            raise DamagedCheckpointError(
                f"{self.directory / str(latest)}: its optimizer state does not read back "
                f"({_first_line(error)}); the run cannot resume from it, but predict can still "
                f"write its predictions. Move the checkpoints away to train again from step 0")
        raise error

    def _set_aside(self, steps: list[int]) -> None:
        # Renamed rather than deleted (the files may matter to someone), under a name that orbax
        # does not read as a step, so that the next save of that step is not skipped.
        for step in steps:
            (self.directory / str(step)).rename(self.directory / f"damaged-{step}")
        self._reopen()

    def restore_variables(self, like: dict, step: int | None = None) -> dict:
        """Only {"params", "batch_stats"} of a checkpoint, shaped and sharded like `like` (a
        `TrainState.variables`).

        What a teacher, a fine-tuning start or `predict` needs. The optimizer state is not read,
        so checkpoints whose optimizer state has another layout (those written before the
        learning rate became a runtime value) still serve.
        """
        step = self._step(step)
        try:
            return self._read_model(like, step)
        except Exception as e:  # orbax and tensorstore raise many types for a bad file
            raise self._model_error(step, self._why(step, e)) from None

    def restore_readable_variables(self, like: dict) -> ReadableModel:
        """The model of the latest checkpoint whose model reads back (`restore_variables`), for
        predictions. Later checkpoints that do not read back are tried first and listed, and
        left as they are: this reader changes no file of the run (the next `train` sets them
        aside). The latest's DamagedCheckpointError when none reads back."""
        unreadable = []
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                return ReadableModel(self._read_model(like, step), step, unreadable)
            except Exception as e:  # orbax and tensorstore raise many types for a bad file
                unreadable.append((step, self._why(step, e)))
                self._reopen()
        if not unreadable:
            raise DamagedCheckpointError(f"{self.directory}: no checkpoint to restore")
        raise self._model_error(*unreadable[0])

    def _read_model(self, like: dict, step: int) -> dict:
        target = _abstract(like)
        return self._manager.restore(step, args=ocp.args.PyTreeRestore(
            item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
            partial_restore=True))

    def _model_error(self, step: int, why: str) -> DamagedCheckpointError:
        return DamagedCheckpointError(
            f"{self.directory / str(step)}: its model does not read back ({why})")

    def _why(self, step: int, error: BaseException) -> str:
        """Why the checkpoint of `step` does not read back, in a few words."""
        if not (self.directory / str(step) / _ITEM).is_dir():
            return f"its folder {_ITEM}/ is missing"
        return _first_line(error)

    def stored_shapes(self, step: int | None = None) -> dict:
        """The shape of every array of a checkpoint, read from its metadata: no array is read.

        What a checkpoint holds, whatever the config beside it says (a teacher's output size)."""
        return jax.tree.map(lambda leaf: tuple(leaf.shape), self._metadata(self._step(step)))

    def stored_layout(self, step: int | None = None) -> dict[tuple[str, ...], tuple[int, ...]]:
        """{key path: shape} of every array of a checkpoint, from its metadata (`_layout`)."""
        return _layout(self._metadata(self._step(step)))

    def _metadata(self, step: int):
        try:
            return ocp.PyTreeCheckpointHandler().metadata(
                self.directory / str(step) / _ITEM).tree
        except Exception as e:  # a damaged _METADATA raises json, unicode or orbax errors
            raise DamagedCheckpointError(f"{self.directory / str(step)}: its metadata does not "
                                         f"read back ({_first_line(e)})") from None

    def _step(self, step: int | None) -> int:
        step = self._manager.latest_step() if step is None else step
        if step is None:
            raise DamagedCheckpointError(f"{self.directory}: no checkpoint to restore")
        return step

    def close(self) -> None:
        """Waits for the last write; CheckpointWriteError if it failed."""
        failure = None
        try:
            self._manager.wait_until_finished()
        except Exception as e:  # a background write's failure, raised again here
            failure = e
        try:
            self._manager.close()
        except Exception:
            if failure is None:
                raise
        finally:
            std_logging.getLogger("absl").removeFilter(self._log_filter)
        if failure is not None:
            raise self._write_failure(failure) from None
