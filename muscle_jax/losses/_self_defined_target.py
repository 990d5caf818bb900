"""Self-defined targets (SDT): k-winner-take-all targets with homeostatic thresholds."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from muscle_jax.losses import _validation

# What `self_defined_target_loss` measures between the outputs and their targets.
CRITERIA = ("mse", "cross_entropy")


def _check_k(k: int, num_outputs: int) -> None:
    if not 1 <= k <= num_outputs:
        raise ValueError(f"k must be in [1, {num_outputs}] for {num_outputs} outputs, got {k}.")


def kwta_targets(outputs: ArrayLike, thresholds: ArrayLike, *, k: int = 1) -> jax.Array:
    r"""k-winner-take-all targets of the outputs shifted by homeostatic thresholds.

    .. math::
      y_{ij} = \mathrm{sg}\big([\, o_{ij} - H_j \text{ is among the } k
      \text{ largest of } o_i - H \,]\big)

    Each row gets exactly ``k`` ones. Ties are broken deterministically
    towards the lower index (the order of `jax.lax.top_k`). The targets carry
    no gradient: they are what the network is trained towards, not part of it.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> outputs = jnp.array([[0.5, 0.3, 0.2], [0.4, 0.4, 0.2]])
      >>> losses.kwta_targets(outputs, jnp.array([0.3, 0.0, 0.0]))
      Array([[0., 1., 0.],
             [0., 1., 0.]], dtype=float32)

    Args:
      outputs: network outputs ``[batch, num_outputs]``.
      thresholds: homeostatic thresholds ``H`` ``[num_outputs]``, kept up to
        date with :func:`homeostasis_update`.
      k: number of winners per example, in ``[1, num_outputs]``.

    Returns:
      Float32 targets ``[batch, num_outputs]`` of zeros and ones.

    References:
      Liu et al., `Unsupervised End-to-End Training with a Self-Defined Target
      <https://arxiv.org/abs/2403.12116>`_, 2024.
    """
    _validation.check_rank("outputs", outputs, 2, "[batch, num_outputs]")
    num_outputs = jnp.shape(outputs)[-1]
    if jnp.shape(thresholds) != (num_outputs,):
        raise ValueError(
            f"thresholds must have shape ({num_outputs},) to match outputs "
            f"{jnp.shape(outputs)}, got {jnp.shape(thresholds)}."
        )
    _check_k(k, num_outputs)
    shifted = jnp.asarray(outputs, jnp.float32) - jnp.asarray(thresholds, jnp.float32)
    _, winners = jax.lax.top_k(shifted, k)
    targets = jnp.sum(jax.nn.one_hot(winners, num_outputs, dtype=jnp.float32), axis=-2)
    return jax.lax.stop_gradient(targets)


def homeostasis_update(
    thresholds: ArrayLike,
    targets: ArrayLike,
    *,
    k: int = 1,
    rate: ArrayLike = 0.01,
    where: ArrayLike | None = None,
    axis_name: str | None = None,
) -> jax.Array:
    r"""Homeostasis: move each threshold towards its unit winning ``k/N`` of the time.

    .. math::
      H_j \leftarrow H_j + \eta \Big(\frac{1}{|S|}\sum_{i \in S} y_{ij} - \frac{k}{N}\Big)

    over the examples ``S`` selected by ``where``. A unit that wins more often
    than its share gets a higher threshold, so it wins less in
    :func:`kwta_targets`; one that never wins has its threshold lowered until
    it does. This keeps every output in use, which the targets alone do not.

    The win rate is a statistic of the whole batch. Under `jax.jit` with a
    sharded batch XLA reduces across devices; inside `shard_map` or `pmap`
    pass ``axis_name`` so that the sums and counts are taken over the global
    batch. If no example is selected the thresholds are returned unchanged.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> targets = jnp.array([[1.0, 0.0], [1.0, 0.0]])  # unit 0 always wins
      >>> losses.homeostasis_update(jnp.zeros(2), targets, rate=0.1)
      Array([ 0.05, -0.05], dtype=float32)

    Args:
      thresholds: current thresholds ``H`` ``[num_outputs]``.
      targets: targets ``[batch, num_outputs]`` from :func:`kwta_targets`.
      k: the number of winners per example the targets were built with.
      rate: homeostasis learning rate ``eta``; may be a traced scalar.
      where: optional boolean mask ``[batch]`` of the examples to count.
      axis_name: mapped axis to sum over, or None.

    Returns:
      The updated float32 thresholds ``[num_outputs]``.

    References:
      Liu et al., `Unsupervised End-to-End Training with a Self-Defined Target
      <https://arxiv.org/abs/2403.12116>`_, 2024.
    """
    _validation.check_rank("targets", targets, 2, "[batch, num_outputs]")
    batch, num_outputs = jnp.shape(targets)
    if jnp.shape(thresholds) != (num_outputs,):
        raise ValueError(
            f"thresholds must have shape ({num_outputs},) to match targets "
            f"{jnp.shape(targets)}, got {jnp.shape(thresholds)}."
        )
    _check_k(k, num_outputs)
    _validation.check_where(where, batch)
    targets = jax.lax.stop_gradient(jnp.asarray(targets, jnp.float32))
    weights = jnp.ones((batch,), jnp.float32) if where is None else jnp.asarray(where, jnp.float32)
    wins = jnp.sum(targets * weights[:, None], axis=0)
    count = jnp.sum(weights)
    if axis_name is not None:
        wins, count = jax.lax.psum((wins, count), axis_name)
    win_rate = wins / jnp.maximum(count, 1.0)
    step = jnp.where(count > 0, rate * (win_rate - k / num_outputs), 0.0)
    return jnp.asarray(thresholds, jnp.float32) + step


def self_defined_target_loss(
    outputs: ArrayLike, targets: ArrayLike, *, criterion: str = "mse"
) -> jax.Array:
    r"""The error between the outputs and their self-defined targets: squared or cross-entropy.

    .. math::
      \ell_i^{\mathrm{mse}} = \frac{1}{N}\sum_j \big(o_{ij} - \mathrm{sg}(y_{ij})\big)^2,
      \qquad
      \ell_i^{\mathrm{cross\_entropy}} = -\sum_j \mathrm{sg}(y_{ij})
        \log \frac{e^{o_{ij}}}{\sum_{j'} e^{o_{ij'}}}

    The squared error is the paper's loss. The cross-entropy takes the
    outputs themselves as the logits of a softmax, as the authors' code does
    in its semi-supervised MLP recipe (PyTorch's ``CrossEntropyLoss`` applied
    to the sigmoid output layer, so ``o`` is in ``(0, 1)``); with ``k``
    winners the target sums to ``k`` and is not renormalised, as there.

    In muscle_jax ``outputs`` are the classifier's softmax probabilities or
    its sigmoid (``loss.sdt.output``), so the same head is evaluated by its
    argmax. Unlabeled examples use the :func:`kwta_targets` of those outputs;
    labeled examples use their one-hot label as the target. The targets get
    no gradient.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> probs = jnp.array([[0.5, 0.5], [1.0, 0.0]])
      >>> losses.self_defined_target_loss(probs, jnp.array([[1.0, 0.0], [1.0, 0.0]]))
      Array([0.25, 0.  ], dtype=float32)
      >>> losses.self_defined_target_loss(
      ...     jnp.zeros((1, 4)), jnp.array([[0.0, 1.0, 0.0, 0.0]]), criterion="cross_entropy"
      ... )  # log 4
      Array([1.3862944], dtype=float32)

    Args:
      outputs: outputs ``[batch, num_outputs]`` that receive the gradient.
      targets: targets of the same shape.
      criterion: ``"mse"`` or ``"cross_entropy"`` (`CRITERIA`).

    Returns:
      Per-example losses ``[batch]`` in float32 (the caller reduces, e.g.
      with :func:`masked_mean`).

    References:
      Liu et al., `Unsupervised End-to-End Training with a Self-Defined Target
      <https://arxiv.org/abs/2403.12116>`_, 2024.
    """
    _validation.check_rank("outputs", outputs, 2, "[batch, num_outputs]")
    _validation.check_same_shape(("outputs", "targets"), outputs, targets)
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}.")
    outputs = jnp.asarray(outputs, jnp.float32)
    targets = jax.lax.stop_gradient(jnp.asarray(targets, jnp.float32))
    if criterion == "cross_entropy":
        return -jnp.sum(targets * jax.nn.log_softmax(outputs, axis=-1), axis=-1)
    return jnp.mean(jnp.square(outputs - targets), axis=-1)
