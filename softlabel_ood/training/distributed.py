"""Multi-process JAX: every process runs the same command; only process 0 writes files."""

from __future__ import annotations

import jax
from absl import flags, logging
from jax.experimental import multihost_utils

from softlabel_ood.cli_errors import UserError

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


class DistributedFlagError(UserError):
    """Multi-process flags that no set of processes can use."""


def check_flags(multihost: bool, coordinator_address: str | None, num_processes: int | None,
                process_id: int | None) -> None:
    """DistributedFlagError for a process count or index out of range, or one given without
    --multihost or --coordinator_address, which would ignore it."""
    if num_processes is not None and num_processes < 1:
        raise DistributedFlagError(f"--num_processes: {num_processes} is not allowed; expected "
                                   f"an integer >= 1")
    if process_id is not None and (process_id < 0 or (
            num_processes is not None and process_id >= num_processes)):
        allowed = (f"an integer in [0, {num_processes - 1}] (--num_processes={num_processes})"
                   if num_processes is not None else "an integer >= 0")
        raise DistributedFlagError(f"--process_id: {process_id} is not allowed; expected "
                                   f"{allowed}")
    if not (multihost or coordinator_address):
        given = [name for name, value in (("num_processes", num_processes),
                                          ("process_id", process_id)) if value is not None]
        if given:
            raise DistributedFlagError(f"--{given[0]}: takes effect only with --multihost or "
                                       f"--coordinator_address; give one, or leave it out for "
                                       f"one process")


def initialize_from_flags() -> None:
    f = flags.FLAGS
    check_flags(f.multihost, f.coordinator_address, f.num_processes, f.process_id)
    if f.multihost or f.coordinator_address:
        try:
            jax.distributed.initialize(coordinator_address=f.coordinator_address,
                                       num_processes=f.num_processes, process_id=f.process_id)
        except ValueError as e:  # JAX found no cluster that names what was not given
            raise DistributedFlagError(f"--multihost: {e} (no cluster here tells JAX; give "
                                       f"--coordinator_address, --num_processes and "
                                       f"--process_id)") from None


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
