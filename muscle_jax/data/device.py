"""From per-process NumPy batches to global `jax.Array`s, a couple of batches ahead.

Each process holds `global_batch / process_count` rows; with a sharding over a
("data",) mesh the rows become one global array per key through
`jax.make_array_from_process_local_data`. Transfers are asynchronous, so
keeping `prefetch` batches in flight overlaps them with the training step.
"""

import collections
import itertools
from collections.abc import Iterable, Iterator

import jax
import numpy as np

from muscle_jax.data.validation import DataRequestError

# data.augment_on: where the training views are made. "auto" is the host on
# CPU (where device ops would take the step's own cores) and the accelerator
# on a GPU or TPU, whose step outruns a host pipeline (docs/performance.md).
AUGMENT_PLACES = ("host", "device")
AUGMENT_ON = ("auto", *AUGMENT_PLACES)


def augment_place(data_config, platform: str | None = None) -> str:
    """``data.augment_on`` as "host" or "device" on ``platform`` (default: JAX's backend)."""
    place = data_config.get("augment_on", "host")
    if place != "auto":
        return place
    return "host" if (platform or jax.default_backend()) == "cpu" else "device"


def local_batch_size(
    global_batch: int,
    *,
    process_count: int,
    sharding: jax.sharding.Sharding | None,
    what: str = "batch_size",
) -> int:
    """`global_batch / process_count`, checked against the processes and devices."""
    if global_batch <= 0:
        raise DataRequestError(f"{what} must be positive, got {global_batch}.")
    if global_batch % process_count:
        raise DataRequestError(
            f"{what}={global_batch} (global) is not divisible by the process count {process_count}."
        )
    if sharding is not None:
        devices = len(sharding.device_set)
        if global_batch % devices:
            raise DataRequestError(
                f"{what}={global_batch} (global) is not divisible by the {devices} devices "
                "of the sharding."
            )
    return global_batch // process_count


def to_global(batch: dict[str, np.ndarray], sharding: jax.sharding.Sharding) -> dict:
    return {
        key: jax.make_array_from_process_local_data(sharding, value) for key, value in batch.items()
    }


def prefetch_to_device(
    batches: Iterable[dict[str, np.ndarray]],
    sharding: jax.sharding.Sharding | None,
    *,
    size: int = 2,
) -> Iterator[dict]:
    """Yields the batches as global arrays (NumPy when `sharding` is None), `size` ahead."""
    if sharding is None:
        yield from batches
        return
    batches = iter(batches)
    queue = collections.deque(to_global(b, sharding) for b in itertools.islice(batches, size))
    while queue:
        yield queue.popleft()
        for batch in itertools.islice(batches, 1):
            queue.append(to_global(batch, sharding))
