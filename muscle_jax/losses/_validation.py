"""Static shape checks shared by the losses.

Shapes are static under `jax.jit`, so these checks run at trace time and
raise before anything compiles; values are never inspected here.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
from jax.typing import ArrayLike


def check_rank(name: str, x: ArrayLike, rank: int, layout: str) -> None:
    if jnp.ndim(x) != rank:
        raise ValueError(f"{name} must have rank {rank} ({layout}), got shape {jnp.shape(x)}.")


def check_same_shape(names: Sequence[str], *arrays: ArrayLike) -> None:
    shapes = [jnp.shape(a) for a in arrays]
    if any(s != shapes[0] for s in shapes[1:]):
        described = ", ".join(f"{n} {s}" for n, s in zip(names, shapes, strict=True))
        raise ValueError(f"Shapes must match, got {described}.")


def check_batch(names: Sequence[str], *arrays: ArrayLike) -> None:
    sizes = [jnp.shape(a)[0] for a in arrays]
    if any(s != sizes[0] for s in sizes[1:]):
        described = ", ".join(f"{n} {jnp.shape(a)}" for n, a in zip(names, arrays, strict=True))
        raise ValueError(f"Batch sizes (leading axis) must match, got {described}.")


def check_classes(name: str, x: ArrayLike, *, minimum: int = 2) -> None:
    if jnp.shape(x)[-1] < minimum:
        raise ValueError(
            f"{name} needs at least {minimum} classes on its last axis, got shape {jnp.shape(x)}."
        )


def check_where(where: ArrayLike | None, batch_size: int) -> None:
    if where is not None and jnp.shape(where) != (batch_size,):
        raise ValueError(
            f"where must have shape ({batch_size},) to mask a batch of {batch_size}, "
            f"got {jnp.shape(where)}."
        )
