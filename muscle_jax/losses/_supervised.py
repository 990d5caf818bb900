"""Cross-entropy on labeled examples."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from muscle_jax.losses import _validation


def supervised_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    label_smoothing: float = 0.0,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Per-example cross-entropy, with optional label smoothing and a mask.

    .. math::
      \ell_i = -\sum_c t_{ic} \log \mathrm{softmax}(z_i)_c,\quad
      t_i = (1 - \epsilon)\, y_i + \epsilon / C

    ``labels`` are either integer class ids ``[batch]`` or soft targets
    ``[batch, num_classes]`` (MixMatch's mixed labels); the rank decides.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> logits = jnp.array([[0.0, 0.0], [10.0, -10.0]])
      >>> [round(float(x), 4) for x in losses.supervised_loss(logits, jnp.array([0, 1]))]
      [0.6931, 20.0]

    Args:
      logits: unnormalised scores ``[batch, num_classes]``.
      labels: ``[batch]`` integer labels or ``[batch, num_classes]`` targets.
      label_smoothing: epsilon in ``[0, 1)``; 0 disables it.
      where: optional boolean mask ``[batch]``; masked-out examples give 0.

    Returns:
      Per-example losses ``[batch]`` in float32 (the caller reduces).

    References:
      Szegedy et al., `Rethinking the Inception Architecture
      <https://arxiv.org/abs/1512.00567>`_, 2016 (label smoothing).
    """
    _validation.check_rank("logits", logits, 2, "[batch, num_classes]")
    logits = jnp.asarray(logits, jnp.float32)
    batch, num_classes = logits.shape
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}.")
    if jnp.ndim(labels) == 1:
        if jnp.shape(labels)[0] != batch:
            raise ValueError(
                f"labels {jnp.shape(labels)} do not match logits {logits.shape}: "
                "expected one integer label per row."
            )
        targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    elif jnp.shape(labels) == logits.shape:
        targets = jnp.asarray(labels, jnp.float32)
    else:
        raise ValueError(
            f"labels must be [batch] integers or [batch, num_classes] targets matching "
            f"logits {logits.shape}, got shape {jnp.shape(labels)}."
        )
    _validation.check_where(where, batch)
    if label_smoothing:
        targets = (1.0 - label_smoothing) * targets + label_smoothing / num_classes
    losses = -jnp.sum(targets * jax.nn.log_softmax(logits), axis=-1)
    if where is not None:
        losses = jnp.where(where, losses, 0.0)
    return losses
