"""Starting JAX's distributed runtime for a multi-process run, before anything touches JAX.

Where the processes come from:

- Cloud TPU pod slices (several hosts) and SLURM jobs with several tasks are
  recognised from their environment, and JAX's own cluster detection finds
  the coordinator, the process count and this process's index.
- Anywhere else (several GPU hosts by hand, launch/local.sh on one machine):
  the coordinator address, process count and process index come from flags
  or from the environment variables ``JAX_COORDINATOR_ADDRESS``,
  ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``.

On CPU the cross-process collectives run over Gloo (TCP). A process that
dies stops sending heartbeats; after ``heartbeat_timeout_seconds`` the
runtime ends every other process with an error instead of leaving it
waiting in a collective.
"""

import dataclasses
import os
import sys
from collections.abc import Sequence

import jax
from absl import logging

ENV_ADDRESS = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"
# The command-line flags that start a multi-process run (muscle_jax/main.py defines them).
MULTI_PROCESS_FLAGS = ("--coordinator_address", "--num_processes", "--process_id", "--distributed")


class DistributedSetupError(ValueError):
    """The multi-process settings are incomplete or contradictory; the message says which."""


@dataclasses.dataclass(frozen=True)
class Setup:
    """How to start the runtime: `explicit` (address, count, id given) or `detected`."""

    kind: str  # "single", "explicit" or "detected".
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None


def _int_env(name: str) -> int | None:
    value = os.environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise DistributedSetupError(f"{name}={value!r} is not an integer.") from None


def detected_cluster(environ=os.environ) -> str | None:
    """The multi-process cluster this process runs in, or None (one process)."""
    tasks = environ.get("SLURM_NTASKS") or environ.get("SLURM_NPROCS")
    if environ.get("SLURM_JOB_ID") and tasks and tasks.isdigit() and int(tasks) > 1:
        return "SLURM"
    hosts = environ.get("TPU_WORKER_HOSTNAMES", "")
    if len([host for host in hosts.split(",") if host]) > 1:
        return "Cloud TPU pod slice"
    return None


def resolve(
    *,
    coordinator_address: str | None,
    num_processes: int | None,
    process_id: int | None,
    force: bool = False,
) -> Setup:
    """Decides how (and whether) to start the runtime from flags, then the environment."""
    address = coordinator_address or os.environ.get(ENV_ADDRESS) or None
    count = num_processes if num_processes is not None else _int_env(ENV_NUM_PROCESSES)
    index = process_id if process_id is not None else _int_env(ENV_PROCESS_ID)
    given = {"coordinator address": address, "process count": count, "process id": index}
    if any(value is not None for value in given.values()):
        missing = [name for name, value in given.items() if value is None]
        if missing and not force and detected_cluster() is None:
            raise DistributedSetupError(
                f"A multi-process run needs the coordinator address, the process count and "
                f"this process's id; missing: {', '.join(missing)}. Give --coordinator_address, "
                f"--num_processes and --process_id (or {ENV_ADDRESS}, {ENV_NUM_PROCESSES}, "
                f"{ENV_PROCESS_ID}), or use launch/local.sh."
            )
        if count is not None and count < 1:
            raise DistributedSetupError(f"The process count must be >= 1, got {count}.")
        if count is not None and index is not None and not 0 <= index < count:
            raise DistributedSetupError(
                f"The process id {index} must lie in [0, {count}) for {count} processes."
            )
        if not missing:
            return Setup("explicit", address, count, index)
    if force or detected_cluster() is not None:
        return Setup("detected", address, count, index)
    return Setup("single")


def announced(argv: Sequence[str] | None = None) -> bool:
    """Whether this process is to join a multi-process run; asks nothing of JAX.

    A run of several processes is announced by the environment (`resolve`'s
    variables, a recognised cluster; half-given settings count, main.py then
    says what is missing) or by one of `MULTI_PROCESS_FLAGS` in ``argv``, the
    command line without the program (default ``sys.argv[1:]``: a config file
    that asks is read while absl parses it, before the flags have values).
    """
    try:
        setup = resolve(coordinator_address=None, num_processes=None, process_id=None)
        single = setup.kind == "single" or setup.num_processes == 1
    except DistributedSetupError:
        single = False
    argv = sys.argv[1:] if argv is None else argv
    return not single or any(arg.split("=", 1)[0] in MULTI_PROCESS_FLAGS for arg in argv)


def initialize(setup: Setup, *, heartbeat_timeout_seconds: int) -> None:
    """Starts the runtime as ``setup`` says; a no-op for one process."""
    if setup.kind == "single" or (setup.kind == "explicit" and setup.num_processes == 1):
        return
    # Gloo carries the collectives between CPU processes; accelerators ignore it.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=setup.coordinator_address,
        num_processes=setup.num_processes,
        process_id=setup.process_id,
        heartbeat_timeout_seconds=heartbeat_timeout_seconds,
    )
    where = detected_cluster() or "explicit settings"
    logging.info(
        "Distributed runtime up (%s): process %d of %d.",
        where,
        jax.process_index(),
        jax.process_count(),
    )
