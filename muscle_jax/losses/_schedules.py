"""Ramp-up schedules for the weights of the unsupervised terms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

RAMPUP_KINDS = ("none", "linear", "sigmoid")


def rampup(step: ArrayLike, *, rampup_steps: int, kind: str = "sigmoid") -> jax.Array:
    r"""Ramp-up factor in ``[0, 1]`` at ``step``.

    With ``x = clip(step / rampup_steps, 0, 1)``:

    - ``none``: 1;
    - ``linear``: ``x``;
    - ``sigmoid``: ``exp(-5 (1 - x)^2)`` (Laine & Aila), which starts at
      ``exp(-5) ~ 0.0067`` and reaches 1 at ``rampup_steps``.

    ``rampup_steps = 0`` means no ramp-up: the factor is 1 from step 0.

    Examples:
      >>> from muscle_jax import losses
      >>> float(losses.rampup(50, rampup_steps=100, kind="linear"))
      0.5

    Args:
      step: the current step (may be traced).
      rampup_steps: length of the ramp, >= 0.
      kind: one of ``RAMPUP_KINDS``.

    Returns:
      A float32 scalar.

    References:
      Laine & Aila, `Temporal Ensembling <https://arxiv.org/abs/1610.02242>`_, 2017.
    """
    if kind not in RAMPUP_KINDS:
        raise ValueError(f"Unknown ramp-up kind {kind!r}; choose one of {RAMPUP_KINDS}.")
    if rampup_steps < 0:
        raise ValueError(f"rampup_steps must be >= 0, got {rampup_steps}.")
    if kind == "none" or rampup_steps == 0:
        return jnp.ones((), jnp.float32)
    x = jnp.clip(jnp.asarray(step, jnp.float32) / rampup_steps, 0.0, 1.0)
    if kind == "linear":
        return x
    return jnp.exp(-5.0 * jnp.square(1.0 - x))


def term_weight(
    step: ArrayLike, *, max_weight: float, rampup_steps: int, kind: str = "sigmoid"
) -> jax.Array:
    """``w(t) = max_weight * rampup(t / rampup_steps)``, a term's weight over training.

    The weight of :func:`muscle_loss`'s consistency and MI terms at ``step``
    (docs/method.md, "Ramp-up schedules").

    Examples:
      >>> from muscle_jax import losses
      >>> float(losses.term_weight(10, max_weight=2.0, rampup_steps=0))
      2.0
      >>> float(losses.term_weight(50, max_weight=2.0, rampup_steps=100, kind="linear"))
      1.0

    Args:
      step: the current step (may be traced).
      max_weight: the weight once the ramp is over.
      rampup_steps: length of the ramp, >= 0 (0: no ramp).
      kind: one of ``RAMPUP_KINDS``.

    Returns:
      A float32 scalar.

    References:
      Laine & Aila, `Temporal Ensembling <https://arxiv.org/abs/1610.02242>`_, 2017.
    """
    return max_weight * rampup(step, rampup_steps=rampup_steps, kind=kind)
