"""Worker processes that train a grid's populations side by side on one machine.

XLA's CPU backend does not keep every core busy with the small convolutional models of the
offline grids, so on CPU `reproduce` trains populations in `config.grid.workers` processes at
once (README, Performance: on 2 cores two processes train small_cnn at the Fashion-MNIST shapes
at 1.25x the images/s of one). On an accelerator one process owns the device's memory, and with
several JAX processes (multi-host) every process must train the same runs, so there the default
is one, and more are refused.

Each worker is a fresh (spawned) Python process that calls
`population_job.train_and_evaluate_population`, the function `reproduce` calls itself with one
worker: a run's files and numbers are those of the run trained in the parent. Workers take the
parent's compilation cache and die with it (Linux: PR_SET_PDEATHSIG), so a killed `reproduce` leaves
no run training on, holding its workdir's lock. Ctrl-C stops them as it stops training in the
parent: a worker ignores SIGINT except while it trains (from its spawn on: a traceback of a worker
still starting would break the pool), when the first one (the terminal's, sent to every process
of the command, or the parent's, passed on) interrupts its training once its checkpoint writes
complete; a population that no worker has begun when the parent is interrupted is never begun.

`Pool(1)` trains in the calling process, exactly as before workers existed; `Pool(n)` keeps n
workers for its lifetime.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence

import jax
import ml_collections

from softlabel_ood.configs import grid as grid_lib
from softlabel_ood.experiment import populations
from softlabel_ood.training import population_job

# config.grid.workers = 0 (automatic) on CPU: processes, at most one per core. Two are measured
# (2 cores); more cores may take more, set by the field.
AUTO_WORKERS_CPU = 2
_PR_SET_PDEATHSIG = 1

Outcome = tuple[int, list[str | None], float]  # (population id, each run's failure, seconds)
_interrupted = None  # in a worker: the parent's Pool._interrupted event


def count(grid: ml_collections.ConfigDict, population_size: int = 1) -> int:
    """Worker processes for `grid`: config.grid.workers, or the platform's default for 0: on a
    CPU, 2 when every run trains alone (each process keeps about one core busy with a small
    model), 1 when populations of several runs already run side by side on the cores."""
    value = int(grid.get("workers", 0))
    if value < 0:
        raise grid_lib.GridError(f"config.grid.workers: {value} must be >= 0 (0 = automatic)")
    if value > 1 and jax.process_count() > 1:
        raise grid_lib.GridError(
            f"config.grid.workers: {value} worker processes cannot share a grid across "
            f"{jax.process_count()} JAX processes; use 1 (or 0, automatic)")
    if value:
        return value
    if jax.process_count() > 1 or jax.default_backend() != "cpu" or population_size > 1:
        return 1
    return max(1, min(AUTO_WORKERS_CPU, os.cpu_count() or 1))


def train(configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str],
          grid: ml_collections.ConfigDict) -> list[str | None]:
    """Trains one population on its mesh; each run's failure as text, or None."""
    failures = population_job.train_and_evaluate_population(
        configs, workdirs, mesh=populations.mesh(grid, len(configs)))
    return [None if f is None else str(f) for f in failures]


class Pool:
    """Trains populations, at most `size` at a time; `size` 1 in the calling process."""

    def __init__(self, size: int):
        self.size = size
        self._running: dict[concurrent.futures.Future, tuple[int, float]] = {}
        self._done: list[Outcome] = []  # outcomes of in-process training, not yet collected
        self._executor = None
        if size > 1:
            context = multiprocessing.get_context("spawn")
            # Set on Ctrl-C: a worker that has not begun its population yet (still starting,
            # SIGINT ignored) then does not begin it.
            self._interrupted = context.Event()
            self._executor = concurrent.futures.ProcessPoolExecutor(
                max_workers=size, mp_context=context, initializer=_start_worker,
                initargs=(os.getpid(), jax.config.jax_compilation_cache_dir,
                          self._interrupted))

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, exc_type, *exc_info) -> None:
        if self._executor is not None:
            if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
                self._interrupted.set()  # before the signals: _train_in_worker's order
                for worker in multiprocessing.active_children():  # the pool's workers
                    os.kill(worker.pid, signal.SIGINT)  # a second one is ignored there
            # On an error, populations not started are dropped; those training finish.
            self._executor.shutdown(wait=True, cancel_futures=exc_type is not None)

    @property
    def busy(self) -> bool:
        return bool(self._running or self._done)

    @property
    def full(self) -> bool:
        # An outcome not yet collected holds its slot: in-process training reports each
        # population before the next starts.
        return len(self._running) + len(self._done) >= self.size

    def start(self, population: int, configs, workdirs, grid) -> None:
        """Starts training population number `population` (an id the outcome carries back)."""
        started = time.monotonic()
        if self._executor is None:
            failures = train(configs, workdirs, grid)
            self._done.append((population, failures, time.monotonic() - started))
        else:
            # Only a submit that may spawn a worker (fewer than `size` alive) ignores a Ctrl-C,
            # for the milliseconds of the spawn; one made as a run ends must not lose it.
            spawns = len(multiprocessing.active_children()) < self.size
            with _spawned_ignoring_sigint() if spawns else contextlib.nullcontext():
                future = self._executor.submit(_train_in_worker, list(configs),
                                               list(workdirs), grid)
            self._running[future] = (population, started)

    def finished(self) -> Iterator[Outcome]:
        """Waits until at least one population is done; yields every finished one's outcome.

        An error raised while training (not a run's failure, which is part of the outcome) is
        raised here.
        """
        if not self._done:
            if not self._running:
                raise RuntimeError("no population is training")
            done, _ = concurrent.futures.wait(
                self._running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                population, started = self._running.pop(future)
                self._done.append((population, future.result(), time.monotonic() - started))
        while self._done:
            yield self._done.pop(0)


@contextlib.contextmanager
def _spawned_ignoring_sigint() -> Iterator[None]:
    """Workers spawned in the block (the executor spawns them on submit) start with SIGINT
    ignored, as a process inherits an ignored signal: a Ctrl-C while one still imports JAX,
    before its initializer, would end it with a traceback and break the pool. The parent ignores
    SIGINT for the few milliseconds of the spawn."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can be set only there; workers are started from there
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _train_in_worker(configs, workdirs, grid) -> list[str | None]:
    """`train`, interrupted by the first SIGINT that arrives while it runs (as Ctrl-C interrupts
    it in the parent: the checkpoint writes in flight complete), not by a second one."""
    signal.signal(signal.SIGINT, _interrupt_once)
    try:
        # After the handler: a Ctrl-C the parent passed on before it was set is seen here.
        if _interrupted is not None and _interrupted.is_set():
            raise KeyboardInterrupt
        return train(configs, workdirs, grid)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _interrupt_once(signum, frame):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def _start_worker(parent_pid: int, compilation_cache_dir: str | None, interrupted) -> None:
    global _interrupted
    _interrupted = interrupted
    # Already ignored since the spawn (_spawned_ignoring_sigint); set again, as the parent may
    # have started it from another thread. Between populations the parent ends it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    from absl import logging

    from softlabel_ood import progress
    from softlabel_ood.training import compilation_cache, distributed

    if compilation_cache_dir:  # the parent's cache, if it has one
        compilation_cache.enable(compilation_cache_dir)
    logging.set_verbosity(logging.WARNING)
    distributed.quiet_library_logs()
    # Several processes share the terminal: live bars would overwrite each other's lines.
    progress.use_lines()


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)
