"""Whether a run fits the machine's memory, known before its first step.

A run too large for its machine used to be killed by the kernel's OOM killer
minutes into training ("Killed", and a workdir with a stale lock). Here the
need is estimated once the train and eval steps are compiled, and a run that
cannot fit is refused in one line, before anything is trained.

XLA says what each compiled step needs (`jax.stages.Compiled.memory_analysis`:
its arguments, outputs and temporaries, and the bytes a donated argument
shares with an output); the host's part is measured (the process's resident
set) or read off the input pipeline's buffers. The estimate is

* on the CPU, where the steps' buffers are host memory: what the process
  holds now (runtime, data, train state, first batches, compiled programs)
  + the larger step's transient buffers (train: the outputs not aliased to
  the donated state, and the temporaries; eval: its batches in flight, outputs
  and temporaries), over every local device + the input pipeline's buffers
  still to fill (`input_pipeline_bytes`) + the host copy of the state a
  checkpoint write makes + an allowance for the rest (`ALLOWANCE_BYTES` and
  `ALLOWANCE_OF_STEP` of the step);
* on a GPU or TPU, per device: the larger step's arguments, transients and
  code + the batches prefetched to the device, against the device's
  ``bytes_limit``; and, for the host, what the process holds now + the
  input pipeline's buffers + the checkpoint copy + `ALLOWANCE_BYTES`.

The limit is the host memory available to the process (MemAvailable, or what
its cgroup still allows when that is less, plus what the process already
holds), or ``memory_limit_gb`` of the config when it is above 0 (on a GPU or
TPU it replaces the device's limit).
"""

import dataclasses
import os
import resource
import sys
from typing import Any

import jax
import numpy as np
from absl import logging

GIB = 2**30
# What a run's host memory grows by beyond the parts counted here (the evaluation's
# and checkpoint writer's threads, the logs and reports, the allocator's slack):
# a fixed part and a share of the step's buffers. Measured on 2 CPU cores (docs/
# performance.md): the peak exceeded the counted parts by 56-72 MiB on
# configs/digits.py (step 21 MiB) and by 210 MiB on WRN-28-2 at 240 images a step
# (step 1.4 GiB); these values cover both with about 5 % to spare.
ALLOWANCE_BYTES = 128 * 2**20
ALLOWANCE_OF_STEP = 0.15


class InsufficientMemoryError(RuntimeError):
    """The run needs more memory than it has; the message names the need, the limit, the knobs."""


@dataclasses.dataclass(frozen=True)
class StepMemory:
    """One compiled step's buffers, in bytes, for one device (XLA's `memory_analysis`)."""

    arguments: int
    outputs: int
    aliased: int
    temporaries: int
    code: int

    @classmethod
    def of(cls, compiled: jax.stages.Compiled) -> "StepMemory":
        stats = compiled.memory_analysis()
        if stats is None:  # A backend without the analysis: nothing known, nothing counted.
            return cls(0, 0, 0, 0, 0)
        return cls(
            arguments=int(stats.argument_size_in_bytes),
            outputs=int(stats.output_size_in_bytes),
            aliased=int(stats.alias_size_in_bytes),
            temporaries=int(stats.temp_size_in_bytes),
            code=int(stats.generated_code_size_in_bytes),
        )

    @property
    def transient(self) -> int:
        """What the step allocates while it runs: new outputs (not the donated ones) and temps."""
        return max(self.outputs - self.aliased, 0) + self.temporaries


@dataclasses.dataclass(frozen=True)
class Budget:
    """One memory of the run (the host's RAM or one device's): the parts it needs, its limit."""

    memory: str
    parts: dict[str, int]
    limit: int
    limit_source: str

    @property
    def needed(self) -> int:
        return sum(self.parts.values())

    @property
    def fits(self) -> bool:
        return self.needed <= self.limit

    def describe(self) -> str:
        """``~X of the Y of MEMORY it can use (the parts; limit: where Y comes from)``."""
        parts = ", ".join(f"{name} {_size(value)}" for name, value in self.parts.items())
        return (
            f"~{_size(self.needed)} of the {_size(self.limit)} of {self.memory} it can use "
            f"({parts}; limit: {self.limit_source})"
        )


@dataclasses.dataclass(frozen=True)
class Plan:
    """The run's estimated needs, one `Budget` per memory it uses."""

    budgets: tuple[Budget, ...]

    @property
    def fits(self) -> bool:
        return all(budget.fits for budget in self.budgets)

    def summary(self) -> str:
        """The console line every run logs."""
        return "memory: the run needs " + "; ".join(b.describe() for b in self.budgets) + "."

    def record(self) -> dict[str, Any]:
        """results.json's ``memory.estimates`` (the trainer adds the measured peak beside them)."""
        return {
            "estimates": [
                {
                    "memory": budget.memory,
                    "estimated_bytes": budget.needed,
                    "parts_bytes": dict(budget.parts),
                    "limit_bytes": budget.limit,
                    "limit_source": budget.limit_source,
                }
                for budget in self.budgets
            ]
        }


def _size(num_bytes: float) -> str:
    if num_bytes >= GIB:
        return f"{num_bytes / GIB:.1f} GiB"
    return f"{num_bytes / 2**20:.0f} MiB"


# ---------------------------------------------------------------- measuring


def resident_bytes() -> int:
    """The process's resident set now."""
    import psutil  # Deferred: only a run's check measures.

    return int(psutil.Process().memory_info().rss)


def peak_resident_bytes() -> int:
    """The process's peak resident set so far (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _read_int(path: str) -> int | None:
    try:
        with open(path) as handle:
            text = handle.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit.


def _inactive_file(path: str, key: str) -> int:
    """Page cache the kernel reclaims before it kills (memory.stat's inactive file pages)."""
    try:
        with open(path) as handle:
            for line in handle:
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def cgroup_headroom() -> int | None:
    """What the process's cgroup (a container, a SLURM job) still allows; None: no limit."""
    try:
        with open("/proc/self/cgroup") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0" and controllers == "":  # cgroup v2
            base = os.path.join("/sys/fs/cgroup", path.lstrip("/"))
            limit, used = _read_int(f"{base}/memory.max"), _read_int(f"{base}/memory.current")
            reclaimable = _inactive_file(f"{base}/memory.stat", "inactive_file")
        elif "memory" in controllers.split(","):  # cgroup v1
            base = os.path.join("/sys/fs/cgroup/memory", path.lstrip("/"))
            limit = _read_int(f"{base}/memory.limit_in_bytes")
            used = _read_int(f"{base}/memory.usage_in_bytes")
            reclaimable = _inactive_file(f"{base}/memory.stat", "total_inactive_file")
        else:
            continue
        # v1 reports "no limit" as a huge number (about 2**63).
        if limit is None or used is None or limit >= 2**60:
            return None
        return max(limit - used + reclaimable, 0)
    return None


def host_limit(resident: int) -> tuple[int, str]:
    """(bytes, where from): the host memory this process may grow to."""
    import psutil

    available, source = int(psutil.virtual_memory().available), "available RAM"
    headroom = cgroup_headroom()
    if headroom is not None and headroom < available:
        available, source = headroom, "its cgroup's memory limit"
    return resident + available, f"{source} + this process's"


def addressable_bytes(tree) -> int:
    """Bytes this process holds of the arrays in ``tree`` (its shards of global arrays)."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        if isinstance(leaf, jax.Array):
            total += sum(shard.data.nbytes for shard in leaf.addressable_shards)
        else:
            total += np.asarray(leaf).nbytes
    return total


def input_pipeline_bytes(
    *,
    batch_bytes: int,
    example_bytes: int,
    stream_block_examples: list[int],
    prefetch: int,
    parallel_batches: int,
) -> int:
    """The host input pipeline's buffers beyond the one batch already made.

    ``prefetch`` batches wait in tf.data's prefetch buffer and one more ahead
    of the step; the parallel augmentation holds up to ``parallel_batches``
    more (tf.data's parallelism is the core count: autotuning is off); each
    stream reads its next shuffle block (``stream_block_examples`` examples)
    and shuffles a copy of it while the last one is dropped.
    """
    batches = (prefetch + 1 + parallel_batches) * batch_bytes
    return batches + sum(stream_block_examples) * example_bytes


# ---------------------------------------------------------------- the plan


def _limit_override(memory_limit_gb: float) -> int | None:
    return int(memory_limit_gb * GIB) if memory_limit_gb > 0 else None


def estimate(
    *,
    train: StepMemory,
    evaluation: StepMemory,
    num_local_devices: int,
    platform: str,
    resident: int,
    pipeline: int,
    checkpoint: int,
    train_batch_per_device: int,
    eval_batches: int,
    memory_limit_gb: float = 0.0,
    host_limit_fn=host_limit,
    device_limit: int | None = None,
) -> Plan:
    """The run's `Plan` from its compiled steps and measured host memory.

    Args:
      train, evaluation: the compiled steps' buffers, per device.
      num_local_devices: this process's devices (on the CPU they share its RAM).
      platform: ``jax.default_backend()``.
      resident: the process's resident set now (after compiling, first batch made).
      pipeline: `input_pipeline_bytes`.
      checkpoint: the host copy of the state a checkpoint write holds (one replica).
      train_batch_per_device: one training batch's bytes on one device.
      eval_batches: the host bytes of the evaluation batches in flight at once.
      memory_limit_gb: the config's override of the limit (0: detect).
      host_limit_fn: ``resident -> (limit, source)`` (`host_limit`).
      device_limit: an accelerator's ``bytes_limit`` (None: unknown).
    """
    override = _limit_override(memory_limit_gb)
    from muscle_jax import input_pipeline  # Deferred: imports TensorFlow.

    if platform == "cpu":
        steps = max(
            train.transient * num_local_devices,
            evaluation.transient * num_local_devices + eval_batches,
        )
        limit, source = host_limit_fn(resident) if override is None else (override, "")
        return Plan(
            (
                Budget(
                    "host RAM",
                    {
                        "held now": resident,
                        "step": steps,
                        "input pipeline": pipeline,
                        "checkpoint copy": checkpoint,
                        "allowance": ALLOWANCE_BYTES + int(ALLOWANCE_OF_STEP * steps),
                    },
                    limit,
                    source or "memory_limit_gb",
                ),
            )
        )
    host, host_source = host_limit_fn(resident)
    budgets = [
        Budget(
            "host RAM",
            {
                "held now": resident,
                "input pipeline": pipeline + eval_batches,
                "checkpoint copy": checkpoint,
                "allowance": ALLOWANCE_BYTES,
            },
            host,
            host_source,
        )
    ]
    limit = device_limit if override is None else override
    if limit is not None:
        step = max(
            train.arguments + train.transient + train.code,
            evaluation.arguments + evaluation.transient + evaluation.code,
        )
        prefetched = input_pipeline.DEVICE_PREFETCH * train_batch_per_device
        budgets.append(
            Budget(
                f"{platform.upper()} memory a device",
                {"step": step, "prefetched batches": prefetched},
                limit,
                "bytes_limit" if override is None else "memory_limit_gb",
            )
        )
    return Plan(tuple(budgets))


def knobs(config, *, images_per_step: int, platform: str) -> str:
    """What to change for a run that needs less memory (the refusal's advice)."""
    from muscle_jax.models import conv  # Deferred: imports Flax.

    data = config.data
    advice = (
        f"lower data.batch_size ({data.batch_size}) or data.unlabeled_ratio "
        f"({data.unlabeled_ratio}; a step holds {images_per_step} images), or choose a "
        f"smaller model.name than {config.model.name}"
    )
    if platform == "cpu" and conv.conv_backward() != "xla":
        advice += (
            ", or bound the CPU's im2col kernel gradient, whose patches copy each layer's "
            "input (a smaller MUSCLE_JAX_CONV_PATCH_MB, or XLA's gradient: "
            "MUSCLE_JAX_CONV_BACKWARD=xla)"
        )
    return advice + "; --config.memory_limit_gb=N sets the limit instead of detecting it"


def refusal(plan: Plan, advice: str) -> str:
    """The one line a refused run prints."""
    over = [budget for budget in plan.budgets if not budget.fits]
    return (
        "the run does not fit in memory: it needs "
        + "; ".join(b.describe() for b in over)
        + f". Nothing was trained and the workdir is as it was. To fit: {advice}."
    )


def _agreed(fits: bool) -> tuple[bool, list[int]]:
    """(whether every process fits, the processes that do not): all refuse together."""
    if jax.process_count() == 1:
        return fits, [] if fits else [0]
    from jax.experimental import multihost_utils  # Deferred: single runs need none.

    every = np.asarray(multihost_utils.process_allgather(np.int32(fits))).reshape(-1)
    return bool(every.all()), [int(i) for i in np.flatnonzero(every == 0)]


def check(
    config,
    *,
    train_step,
    eval_step,
    state,
    train_batch,
    eval_batch,
    info,
    images_per_step: int,
) -> Plan:
    """Compiles both steps (the jitted functions reuse these executables), logs the plan.

    Raises:
      InsufficientMemoryError: the run would need more memory than its limit, on
        this process or on another one of the run.
    """
    from muscle_jax import input_pipeline  # Deferred: imports TensorFlow.

    train = StepMemory.of(train_step.lower(state, train_batch).compile())
    evaluation = StepMemory.of(eval_step.lower(state, eval_batch).compile())
    platform = jax.default_backend()
    num_local = jax.local_device_count()
    data = config.data
    shards = data.num_shards or jax.process_count()
    per_process = shards // jax.process_count()
    pool_block = min(input_pipeline.SHUFFLE_BUFFER_SIZE, -(-info.pool_size // shards))
    labeled_block = -(-max(data.num_labeled, 1) // shards)
    blocks = [labeled_block] * per_process
    if data.unlabeled_ratio:
        blocks += [pool_block] * per_process
    pipeline = input_pipeline_bytes(
        batch_bytes=addressable_bytes(train_batch),
        # uint8 pixels, the label, the index and the stream position.
        example_bytes=int(np.prod(info.image_shape)) + 4 + 4 + 8,
        stream_block_examples=blocks,
        prefetch=input_pipeline.HOST_PREFETCH,
        parallel_batches=len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count() or 1,
    )
    eval_batch_bytes = addressable_bytes(eval_batch)
    device_limit = None
    if platform != "cpu":
        stats = jax.local_devices()[0].memory_stats() or {}
        device_limit = stats.get("bytes_limit")
    plan = estimate(
        train=train,
        evaluation=evaluation,
        num_local_devices=num_local,
        platform=platform,
        resident=resident_bytes(),
        pipeline=pipeline,
        # Orbax copies the state to the host and writes it while training goes on.
        checkpoint=sum(leaf.nbytes for leaf in jax.tree.leaves(state)) // jax.process_count(),
        train_batch_per_device=addressable_bytes(train_batch) // max(num_local, 1),
        eval_batches=eval_batch_bytes
        * (1 + input_pipeline.HOST_PREFETCH + input_pipeline.DEVICE_PREFETCH),
        memory_limit_gb=config.memory_limit_gb,
        device_limit=device_limit,
    )
    logging.info("%s", plan.summary())
    every_fits, short = _agreed(plan.fits)
    if not plan.fits:
        advice = knobs(config, images_per_step=images_per_step, platform=platform)
        raise InsufficientMemoryError(refusal(plan, advice))
    if not every_fits:
        raise InsufficientMemoryError(
            f"the run does not fit in memory on process(es) {short} (their error lines say "
            "what each needs). Nothing was trained and the workdir is as it was."
        )
    return plan
