"""Consistency terms of the base semi-supervised methods MUSCLE extends."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from muscle_jax.losses import _validation


def fixmatch_consistency(
    strong_logits: ArrayLike,
    weak_logits: ArrayLike,
    *,
    threshold: float = 0.95,
) -> tuple[jax.Array, jax.Array]:
    r"""FixMatch: cross-entropy against confident pseudo-labels.

    .. math::
      \ell_i = m_i \cdot \mathrm{CE}(z^{strong}_i, \arg\max q_i),\quad
      q_i = \mathrm{sg}(\mathrm{softmax}(z^{weak}_i)),\quad
      m_i = [\max q_i \ge \tau]

    No gradient flows through the weak view.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> weak = jnp.array([[10.0, 0.0], [0.1, 0.0]])
      >>> strong = jnp.array([[0.0, 0.0], [0.0, 0.0]])
      >>> loss, mask = losses.fixmatch_consistency(strong, weak)
      >>> loss.round(4), mask
      (Array([0.6931, 0.    ], dtype=float32), Array([1., 0.], dtype=float32))

    Args:
      strong_logits: logits of the strongly augmented view ``[batch, C]``.
      weak_logits: logits of the weakly augmented view, same shape.
      threshold: confidence tau in ``[0, 1]`` a pseudo-label needs.

    Returns:
      ``(losses, mask)``: per-example losses ``[batch]`` (0 where masked) and
      the float mask ``[batch]``; ``mean(mask)`` is the mask rate to log.

    References:
      Sohn et al., `FixMatch <https://arxiv.org/abs/2001.07685>`_, 2020.
    """
    _validation.check_rank("strong_logits", strong_logits, 2, "[batch, num_classes]")
    _validation.check_same_shape(("strong_logits", "weak_logits"), strong_logits, weak_logits)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}.")
    weak_probs = jax.lax.stop_gradient(jax.nn.softmax(jnp.asarray(weak_logits, jnp.float32)))
    pseudo_labels = jnp.argmax(weak_probs, axis=-1)
    mask = (jnp.max(weak_probs, axis=-1) >= threshold).astype(jnp.float32)
    log_probs = jax.nn.log_softmax(jnp.asarray(strong_logits, jnp.float32))
    cross_entropy = -jnp.take_along_axis(log_probs, pseudo_labels[:, None], axis=-1)[:, 0]
    return cross_entropy * mask, mask


def mse_consistency(student_probs: ArrayLike, target_probs: ArrayLike) -> jax.Array:
    r"""Pi-model / Mean Teacher / MixMatch consistency: squared error of probabilities.

    .. math::
      \ell_i = \lVert p_i - \mathrm{sg}(q_i) \rVert^2 / C

    The target is wrapped in a stop-gradient: for the Pi-model it is the
    other augmented view, for Mean Teacher the EMA teacher's prediction, for
    MixMatch the mixed, sharpened guesses.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> losses.mse_consistency(jnp.array([[1.0, 0.0]]), jnp.array([[0.0, 1.0]]))
      Array([1.], dtype=float32)

    Args:
      student_probs: probabilities ``[batch, C]`` that receive the gradient.
      target_probs: target probabilities, same shape.

    Returns:
      Per-example losses ``[batch]`` in float32 (the caller reduces).

    References:
      Laine & Aila, `Temporal Ensembling <https://arxiv.org/abs/1610.02242>`_,
      2017. Tarvainen & Valpola, `Mean Teacher
      <https://arxiv.org/abs/1703.01780>`_, 2017.
    """
    _validation.check_rank("student_probs", student_probs, 2, "[batch, num_classes]")
    _validation.check_same_shape(("student_probs", "target_probs"), student_probs, target_probs)
    student = jnp.asarray(student_probs, jnp.float32)
    target = jax.lax.stop_gradient(jnp.asarray(target_probs, jnp.float32))
    return jnp.mean(jnp.square(student - target), axis=-1)


def sharpen(probs: ArrayLike, *, temperature: float = 0.5) -> jax.Array:
    r"""MixMatch sharpening: ``p^{1/T}`` renormalised over classes.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> [round(float(p), 2) for p in losses.sharpen(jnp.array([0.75, 0.25]))]
      [0.9, 0.1]

    Args:
      probs: probabilities ``[..., num_classes]``.
      temperature: T > 0; T -> 0 approaches a one-hot argmax.

    Returns:
      Sharpened probabilities, same shape.

    References:
      Berthelot et al., `MixMatch <https://arxiv.org/abs/1905.02249>`_, 2019.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}.")
    # In log space so that small probabilities raised to 1/T do not underflow.
    log_probs = jnp.log(jnp.maximum(jnp.asarray(probs, jnp.float32), 1e-30))
    return jax.nn.softmax(log_probs / temperature, axis=-1)


def mixup(
    key: jax.Array,
    inputs: ArrayLike,
    targets: ArrayLike,
    *,
    alpha: float = 0.75,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""MixMatch's MixUp: mix each example with a shuffled partner.

    .. math::
      \lambda \sim \mathrm{Beta}(\alpha, \alpha),\ \lambda' = \max(\lambda, 1-\lambda),\
      x' = \lambda' x + (1 - \lambda') x_{\pi},\ y' = \lambda' y + (1-\lambda') y_{\pi}

    ``lambda' >= 0.5`` keeps each mixed example closer to its own input, so the
    labeled part of the batch stays mostly labeled (MixMatch, eq. 9). One
    lambda per example.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> x, y = jnp.ones((4, 2)), jnp.eye(4)
      >>> mixed_x, mixed_y, lam = losses.mixup(jax.random.key(0), x, y)
      >>> bool(jnp.all(lam >= 0.5)), mixed_y.sum(-1).round(4).tolist()
      (True, [1.0, 1.0, 1.0, 1.0])

    Args:
      key: PRNG key for the permutation and the Beta draws.
      inputs: ``[batch, ...]`` inputs (images).
      targets: ``[batch, num_classes]`` soft targets.
      alpha: Beta distribution parameter, > 0.

    Returns:
      ``(mixed_inputs, mixed_targets, lam)`` with ``lam`` of shape ``[batch]``.

    References:
      Zhang et al., `mixup <https://arxiv.org/abs/1710.09412>`_, 2018.
      Berthelot et al., `MixMatch <https://arxiv.org/abs/1905.02249>`_, 2019.
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}.")
    _validation.check_rank("targets", targets, 2, "[batch, num_classes]")
    _validation.check_batch(("inputs", "targets"), inputs, targets)
    inputs = jnp.asarray(inputs)
    targets = jnp.asarray(targets, jnp.float32)
    perm_key, beta_key = jax.random.split(key)
    batch = inputs.shape[0]
    permutation = jax.random.permutation(perm_key, batch)
    lam = jax.random.beta(beta_key, alpha, alpha, (batch,))
    lam = jnp.maximum(lam, 1.0 - lam)
    lam_inputs = lam.reshape((batch,) + (1,) * (inputs.ndim - 1)).astype(inputs.dtype)
    mixed_inputs = lam_inputs * inputs + (1 - lam_inputs) * inputs[permutation]
    mixed_targets = lam[:, None] * targets + (1 - lam[:, None]) * targets[permutation]
    return mixed_inputs, mixed_targets, lam
