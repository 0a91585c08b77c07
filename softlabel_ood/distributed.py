"""Multi-process JAX: every process runs the same command; only process 0 writes files."""

from __future__ import annotations

import jax
from absl import flags, logging
from jax.experimental import multihost_utils

_MULTIHOST = flags.DEFINE_bool(
    "multihost", False,
    "Call jax.distributed.initialize() before anything else. On TPU VMs and SLURM/GPU clusters "
    "JAX finds the coordinator itself; elsewhere give the three flags below.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")


def initialize_from_flags() -> None:
    if _MULTIHOST.value or _COORDINATOR.value:
        jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                                   num_processes=_NUM_PROCESSES.value,
                                   process_id=_PROCESS_ID.value)


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
