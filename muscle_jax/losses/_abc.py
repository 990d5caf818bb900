r"""ABC: an auxiliary classifier trained as if the labels were balanced.

Lee, Shin and Kim, "ABC: Auxiliary Balanced Classifier for Class-imbalanced
Semi-supervised Learning" (NeurIPS 2021). A second linear head ``g`` on the
backbone's shared features is trained beside the base method's classifier;
each example's loss is kept with a probability that evens the classes out,
so ``g`` sees (in expectation) as many examples of the rarest class as of
any other. The evaluation reads ``g``.

With ``r_k = N_min / N_k`` from the labeled subset's class counts:

.. math::
  L_{lab} = \frac{1}{B}\sum_i \mathrm{CE}(g(f_i), y_i)\, b_i,
    \quad b_i \sim \mathrm{Bernoulli}(r_{y_i})

  L_{unl} = \frac{1}{\mu B}\sum_j \mathrm{CE}(g(f^s_j), \hat y_j)\,
    [\max P_j \ge t]\, c_j,
    \quad P_j = \mathrm{softmax}(g(f^w_j)),\ \hat y_j = \arg\max P_j,

  c_j \sim \mathrm{Bernoulli}\big(1 - \tfrac{s}{S}(1 - r_{\hat y_j})\big)

with ``s/S`` the run's progress: early on every confident pseudo-label is
kept (the head is still learning what the classes look like), and by the end
the unlabeled losses are as balanced as the labeled ones. The masks are
drawn apart from the losses (`abc_masks`), so the loss's arithmetic is a
pure function of them (`abc_loss`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from muscle_jax.losses._supervised import supervised_loss


def balancing_ratio(labeled_class_counts: ArrayLike) -> jax.Array:
    """``r_k = N_min / N_k``: 1 for the rarest class, smaller for the frequent ones.

    A class without labeled examples would make ``r`` undefined, so every
    count must be at least 1 (the config checks refuse such a subset).

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> losses.balancing_ratio(jnp.array([10, 5, 2]))
      Array([0.2, 0.4, 1. ], dtype=float32)

    Args:
      labeled_class_counts: the labeled subset's number of examples of each
        class ``[num_classes]``, every count at least 1.

    Returns:
      Float32 ``r`` ``[num_classes]`` in ``(0, 1]``: each class's keep
      probability in :func:`abc_masks`.

    References:
      Lee, Shin and Kim, `ABC: Auxiliary Balanced Classifier for
      Class-imbalanced Semi-supervised Learning
      <https://arxiv.org/abs/2110.10368>`_, NeurIPS 2021.
    """
    counts = jnp.asarray(labeled_class_counts, jnp.float32)
    return jnp.min(counts) / counts


def abc_pseudo_labels(weak_logits: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """``(argmax P, max P)`` of ``P = softmax(g(f_w))``, with no gradient into the logits.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> labels, confidence = losses.abc_pseudo_labels(jnp.array([[2.0, 0.0], [0.0, 0.1]]))
      >>> labels.tolist(), [round(float(c), 4) for c in confidence]
      ([0, 1], [0.8808, 0.525])

    Args:
      weak_logits: the balanced head's logits of the unlabeled weak views
        ``[batch_u, C]``.

    Returns:
      ``(pseudo_labels, confidence)``: int ``[batch_u]`` and float32
      ``[batch_u]``, both per example and without gradient.

    References:
      Lee, Shin and Kim, `ABC: Auxiliary Balanced Classifier for
      Class-imbalanced Semi-supervised Learning
      <https://arxiv.org/abs/2110.10368>`_, NeurIPS 2021.
    """
    probs = jax.nn.softmax(jax.lax.stop_gradient(jnp.asarray(weak_logits, jnp.float32)))
    return jnp.argmax(probs, axis=-1), jnp.max(probs, axis=-1)


def abc_masks(
    key: jax.Array,
    labels: ArrayLike,
    pseudo_labels: ArrayLike,
    ratio: ArrayLike,
    progress: ArrayLike,
) -> tuple[jax.Array, jax.Array]:
    """The Bernoulli keep-masks: ``(labeled [B], unlabeled [mu*B])`` as float32 0/1.

    Args:
      key: this step's key for the draws.
      labels: the labeled batch's classes ``[B]``.
      pseudo_labels: ``argmax P`` of the unlabeled batch ``[mu*B]`` (`abc_pseudo_labels`).
      ratio: `balancing_ratio` ``[C]``.
      progress: ``s / S`` in [0, 1] (may be traced).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> ratio = jnp.array([0.2, 0.4, 1.0])
      >>> labeled, unlabeled = losses.abc_masks(
      ...     jax.random.key(0), jnp.array([2, 2]), jnp.array([0, 1, 2]), ratio, 0.0)
      >>> labeled, unlabeled  # the rarest class, and the start of the run: all kept
      (Array([1., 1.], dtype=float32), Array([1., 1., 1.], dtype=float32))

    Returns:
      ``(labeled_mask, unlabeled_mask)``: float32 0/1 masks ``[B]`` and
      ``[mu*B]``, one draw per example, to pass to :func:`abc_loss`.

    References:
      Lee, Shin and Kim, `ABC: Auxiliary Balanced Classifier for
      Class-imbalanced Semi-supervised Learning
      <https://arxiv.org/abs/2110.10368>`_, NeurIPS 2021.
    """
    ratio = jnp.asarray(ratio, jnp.float32)
    labeled_key, unlabeled_key = jax.random.split(key)
    labeled = jax.random.bernoulli(labeled_key, ratio[jnp.asarray(labels)])
    keep = 1.0 - jnp.clip(progress, 0.0, 1.0) * (1.0 - ratio[jnp.asarray(pseudo_labels)])
    unlabeled = jax.random.bernoulli(unlabeled_key, keep)
    return labeled.astype(jnp.float32), unlabeled.astype(jnp.float32)


def abc_loss(
    labeled_logits: ArrayLike,
    labels: ArrayLike,
    weak_logits: ArrayLike,
    strong_logits: ArrayLike,
    labeled_mask: ArrayLike,
    unlabeled_mask: ArrayLike,
    *,
    threshold: float = 0.95,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``L_lab + L_unl`` of the balanced head, and its diagnostics.

    Args:
      labeled_logits: the balanced head's logits of the labeled batch ``[B, C]``.
      labels: ``[B]`` int classes.
      weak_logits: its logits of the unlabeled weak views ``[mu*B, C]`` (no
        gradient flows into them: they make the pseudo-labels).
      strong_logits: its logits of the strong views ``[mu*B, C]``.
      labeled_mask, unlabeled_mask: `abc_masks`' draws.
      threshold: confidence of the weak prediction to keep a pseudo-label.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> weak = jnp.array([[5.0, 0.0], [0.0, 0.0]])  # one confident pseudo-label
      >>> zeros, ones = jnp.zeros((2, 2)), jnp.ones(2)
      >>> loss, metrics = losses.abc_loss(zeros, jnp.array([0, 1]), weak, zeros, ones, ones)
      >>> round(float(loss), 4), round(float(metrics["abc_unlabeled"]), 4)  # log 2 + log 2 / 2
      (1.0397, 0.3466)

    Returns:
      ``(loss, metrics)``: the float32 scalar ``L_lab + L_unl`` (each the mean
      over its whole batch, masked examples counting 0) and
      ``{"abc_labeled", "abc_unlabeled", "abc_mask_rate"}`` scalars: the two
      parts and the fraction of unlabeled images kept.

    References:
      Lee, Shin and Kim, `ABC: Auxiliary Balanced Classifier for
      Class-imbalanced Semi-supervised Learning
      <https://arxiv.org/abs/2110.10368>`_, NeurIPS 2021.
    """
    pseudo_labels, confidence = abc_pseudo_labels(weak_logits)
    confident = (confidence >= threshold).astype(jnp.float32)
    mask = confident * jnp.asarray(unlabeled_mask, jnp.float32)
    labeled = jnp.mean(
        supervised_loss(labeled_logits, labels) * jnp.asarray(labeled_mask, jnp.float32)
    )
    unlabeled = jnp.mean(supervised_loss(strong_logits, pseudo_labels) * mask)
    metrics = {"abc_labeled": labeled, "abc_unlabeled": unlabeled, "abc_mask_rate": jnp.mean(mask)}
    return labeled + unlabeled, metrics
