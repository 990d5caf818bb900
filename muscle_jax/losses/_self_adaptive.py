"""Self-adaptive training (SAT): cross-entropy against a running average of predictions."""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from muscle_jax.losses import _validation


def self_adaptive_update(
    targets: ArrayLike, probs: ArrayLike, *, momentum: float = 0.9
) -> jax.Array:
    r"""Move the per-example targets towards the model's current predictions.

    .. math::
      t_i \leftarrow \alpha\, t_i + (1 - \alpha)\, \mathrm{sg}(p_i)

    Started from the one-hot labels (or uniform for unlabeled examples),
    the targets drift towards what the model consistently predicts, which
    corrects noisy labels; the momentum ``alpha`` keeps single noisy
    predictions from taking over.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> losses.self_adaptive_update(jnp.array([[1.0, 0.0]]), jnp.array([[0.0, 1.0]]))
      Array([[0.9, 0.1]], dtype=float32)

    Args:
      targets: current targets ``[batch, num_classes]``.
      probs: the model's probabilities ``[batch, num_classes]``.
      momentum: ``alpha`` in ``[0, 1]``; 1 keeps the targets fixed.

    Returns:
      The updated float32 targets ``[batch, num_classes]``.

    References:
      Huang et al., `Self-Adaptive Training: Bridging Supervised and
      Self-Supervised Learning <https://arxiv.org/abs/2101.08732>`_, 2021.
    """
    _validation.check_rank("targets", targets, 2, "[batch, num_classes]")
    _validation.check_same_shape(("targets", "probs"), targets, probs)
    if isinstance(momentum, numbers.Real) and not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}.")
    probs = jax.lax.stop_gradient(jnp.asarray(probs, jnp.float32))
    return momentum * jnp.asarray(targets, jnp.float32) + (1.0 - momentum) * probs


def self_adaptive_loss(
    logits: ArrayLike,
    targets: ArrayLike,
    *,
    where: ArrayLike | None = None,
    axis_name: str | None = None,
) -> jax.Array:
    r"""Confidence-weighted cross-entropy against self-adaptive targets.

    .. math::
      L = -\frac{1}{\sum_i w_i} \sum_i w_i \sum_j t_{ij} \log \mathrm{softmax}(z_i)_j,
      \quad w_i = \max_j t_{ij}

    over the examples selected by ``where``. Targets and weights get no
    gradient. An example whose target is spread over several classes (an
    ambiguous or mislabeled one) counts less; with one-hot targets every
    weight is 1 and ``L`` is the mean cross-entropy.

    The normaliser is a statistic of the whole batch. Under `jax.jit` with a
    sharded batch XLA reduces across devices; inside `shard_map` or `pmap`
    pass ``axis_name`` so that both sums run over the global batch. If the
    selected weights sum to 0 (no example selected) the loss is 0.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> logits = jnp.array([[0.0, 0.0], [10.0, -10.0]])
      >>> round(float(losses.self_adaptive_loss(logits, jnp.eye(2))), 4)  # (log 2 + 20) / 2
      10.3466

    Args:
      logits: unnormalised scores ``[batch, num_classes]``.
      targets: targets ``[batch, num_classes]`` from :func:`self_adaptive_update`.
      where: optional boolean mask ``[batch]``; masked-out examples are left out.
      axis_name: mapped axis to sum over, or None.

    Returns:
      A float32 scalar: the normaliser is a statistic of the whole batch, so
      the reduction is done here rather than by the caller.

    References:
      Huang et al., `Self-Adaptive Training: Bridging Supervised and
      Self-Supervised Learning <https://arxiv.org/abs/2101.08732>`_, 2021.
    """
    _validation.check_rank("logits", logits, 2, "[batch, num_classes]")
    _validation.check_same_shape(("logits", "targets"), logits, targets)
    _validation.check_where(where, jnp.shape(logits)[0])
    targets = jax.lax.stop_gradient(jnp.asarray(targets, jnp.float32))
    if where is not None:
        # Selected rather than multiplied by the mask: padded targets may be
        # non-finite, and 0 * nan would reach the logits' gradient.
        targets = jnp.where(jnp.asarray(where, bool)[:, None], targets, 0.0)
    weights = jnp.max(targets, axis=-1)
    cross_entropy = -jnp.sum(targets * jax.nn.log_softmax(jnp.asarray(logits, jnp.float32)), -1)
    # Likewise for padded logits: a weight of 0 must not meet a non-finite loss.
    weighted = jnp.where(weights > 0, weights * cross_entropy, 0.0)
    total, normaliser = jnp.sum(weighted), jnp.sum(weights)
    if axis_name is not None:
        total, normaliser = jax.lax.psum((total, normaliser), axis_name)
    return jnp.where(normaliser > 0, total / jnp.where(normaliser > 0, normaliser, 1.0), 0.0)
