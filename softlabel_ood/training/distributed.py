"""Multi-process JAX: every process runs the same command; only process 0 writes files."""

from __future__ import annotations

import jax
from absl import flags, logging
from jax.experimental import multihost_utils

FLAG_NAMES = ("multihost", "coordinator_address", "num_processes", "process_id")


def define_flags() -> None:
    """The multi-process flags; each command's `__main__` defines them, never an import."""
    flags.DEFINE_bool(
        "multihost", False,
        "Call jax.distributed.initialize() before anything else. On TPU VMs and SLURM/GPU "
        "clusters JAX finds the coordinator itself; elsewhere give the three flags below.")
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
    flags.DEFINE_integer("num_processes", None, "Number of processes.")
    flags.DEFINE_integer("process_id", None, "This process's index.")


def initialize_from_flags() -> None:
    f = flags.FLAGS
    if f.multihost or f.coordinator_address:
        jax.distributed.initialize(coordinator_address=f.coordinator_address,
                                   num_processes=f.num_processes, process_id=f.process_id)


def quiet_library_logs() -> None:
    """Orbax and JAX log every checkpoint step at INFO; progress bars say what matters.

    `--verbosity=0` (absl's flag) brings the INFO lines back.
    """
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


def wait_for_all(name: str) -> None:
    """Every process waits here until all have arrived: what process 0 wrote before is then
    there for the others to read."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def is_writer() -> bool:
    return jax.process_index() == 0
