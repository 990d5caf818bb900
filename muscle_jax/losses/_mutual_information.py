"""IIC mutual information between the class assignments of two views."""

import sys

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike

from muscle_jax.losses import _validation

EPS: float = sys.float_info.epsilon
"""Default clamp inside the logarithms: ``sys.float_info.epsilon`` (~2.2e-16).

This is the value of IIC's reference ``IID_loss`` (github.com/xu-ji/IIC),
whose ``EPS=sys.float_info.epsilon`` is Python's float, i.e. float64 machine
epsilon, applied to float32 tensors. It is not float32 machine epsilon
(~1.19e-7). 2.2e-16 is a normal float32 number (the smallest normal float32 is
~1.2e-38), so the clamp is exact in float32 and acts only on entries of the
joint or its marginals that are below 2.2e-16, mostly exactly zero ones.
"""


def _mean_outer_product(probs_a: jax.Array, probs_b: jax.Array) -> jax.Array:
    """``mean_i probs_a[i] outer probs_b[i]``, replicated when the batch is sharded."""
    sharding = jax.typeof(probs_a).sharding
    out_sharding = None
    if isinstance(sharding, NamedSharding) and sharding.spec and sharding.spec[0] is not None:
        # With explicit mesh axes, contracting a sharded batch axis is ambiguous to
        # jnp.einsum; the joint is a statistic of the global batch, so replicate it.
        out_sharding = NamedSharding(sharding.mesh, P())
    total = jnp.einsum("bi,bj->ij", probs_a, probs_b, out_sharding=out_sharding)
    return total / probs_a.shape[0]


def joint_distribution(
    probs_a: ArrayLike,
    probs_b: ArrayLike,
    *,
    axis_name: str | None = None,
) -> jax.Array:
    r"""Symmetrised joint distribution of two views' class assignments.

    .. math::
      P = \mathrm{sym}\Big(\frac{1}{B}\sum_i p_a[i]\, p_b[i]^\top\Big),\quad
      \mathrm{sym}(M) = \frac{(M + M^\top)/2}{\sum (M + M^\top)/2}

    The joint is a statistic of the whole batch. Under `jax.jit` with a sharded
    batch, XLA reduces the matrix product across devices, so the value equals
    the single-device one. Inside `shard_map` or `pmap`, where each device sees
    only its own slice, pass `axis_name` so the per-device joints are averaged
    across that axis (equal per-device batch sizes assumed).

    Args:
      probs_a: class probabilities of view A, ``[batch, num_classes]``.
      probs_b: class probabilities of view B, same shape.
      axis_name: mapped axis to average the joint over, or None.

    Returns:
      The joint distribution ``[num_classes, num_classes]`` in float32, summing
      to 1 (rows of the inputs need not sum to 1: the joint is renormalised).
    """
    _validation.check_rank("probs_a", probs_a, 2, "[batch, num_classes]")
    _validation.check_same_shape(("probs_a", "probs_b"), probs_a, probs_b)
    _validation.check_classes("probs_a", probs_a)
    # Always float32: bf16 logs of probabilities near eps lose the signal.
    probs_a = jnp.asarray(probs_a, jnp.float32)
    probs_b = jnp.asarray(probs_b, jnp.float32)
    joint = _mean_outer_product(probs_a, probs_b)
    if axis_name is not None:
        joint = jax.lax.pmean(joint, axis_name)
    joint = (joint + joint.T) / 2.0
    return joint / jnp.sum(joint)


def mutual_information(
    probs_a: ArrayLike,
    probs_b: ArrayLike,
    *,
    lamb: float = 1.0,
    eps: float | None = None,
    axis_name: str | None = None,
) -> jax.Array:
    r"""IIC mutual information between two views' class assignments, in nats.

    .. math::
      I = \sum_{ij} P_{ij}\big(\log P_{ij} - \lambda \log P_i - \lambda \log P_j\big)

    with ``P`` from :func:`joint_distribution` and its marginals
    ``P_i = sum_j P_ij``, ``P_j = sum_i P_ij``. ``P``, ``P_i`` and ``P_j`` are
    clamped below at ``eps`` inside the logarithms only, so the value and the
    gradient stay finite for one-hot inputs and for classes that no example is
    assigned to:

    - An entry that is exactly zero contributes exactly zero to ``I`` (IIC
      also replaces the factor ``P_ij`` in front of the log by ``eps``, a
      difference of order ``eps * |log eps|``, ~1e-14, per entry).
    - An entry below ``eps`` gets no gradient through the clamped logarithm;
      the factor in front still carries the gradient
      ``log(eps) - lamb log P_i - lamb log P_j``, a finite stand-in for the
      slope of ``P log P``, which is infinite at 0. Its size grows with
      ``-log(eps)``.
    - For ``lamb = 1``, clamping can only raise ``I``, by at most ``eps / e``
      per clamped entry of ``P`` (the maximum of ``P log(eps / P)``), so a
      large ``eps`` biases ``I`` upwards and distorts the gradient for very
      peaked joints with many tiny entries, e.g. over-clustering heads with
      hundreds of outputs.

    The default, :data:`EPS` = ``sys.float_info.epsilon`` (~2.2e-16), is IIC's
    reference value; it is representable in float32 and leaves every entry at
    or above 2.2e-16 unclamped.

    For ``lamb = 1``, ``0 <= I <= log(num_classes)`` and ``I(a, b) = I(b, a)``.
    ``lamb > 1`` weights the marginal entropies more, which pushes towards
    balanced clusters (IIC's ``lamb``).

    This is a batch statistic: it returns a scalar, not per-example values,
    and it must see the global batch (see :func:`joint_distribution`).

    Inputs are not checked for being distributions (values are never inspected
    under `jax.jit`): rows that do not sum to 1 reweight the examples, since
    the joint is renormalised, and a NaN anywhere gives a NaN result.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> one_hot = jnp.eye(4)
      >>> round(float(losses.mutual_information(one_hot, one_hot)), 4)  # log 4
      1.3863

    Args:
      probs_a: class probabilities of view A, ``[batch, num_classes]``.
      probs_b: class probabilities of view B, same shape.
      lamb: weight of the marginal terms (IIC's lambda), 1.0 for true MI.
      eps: clamp inside the logarithms; None means :data:`EPS`
        (``sys.float_info.epsilon``, ~2.2e-16, as in IIC's ``IID_loss``).
      axis_name: see :func:`joint_distribution`.

    Returns:
      A float32 scalar.

    References:
      Ji et al., `Invariant Information Clustering for Unsupervised Image
      Classification and Segmentation <https://arxiv.org/abs/1807.06653>`_,
      2019. Xie et al., `MUSCLE <https://arxiv.org/abs/2012.00150>`_, 2021.
    """
    joint = joint_distribution(probs_a, probs_b, axis_name=axis_name)
    eps = EPS if eps is None else eps
    marginal_i = jnp.sum(joint, axis=1, keepdims=True)
    marginal_j = jnp.sum(joint, axis=0, keepdims=True)
    log_ratio = (
        jnp.log(jnp.maximum(joint, eps))
        - lamb * jnp.log(jnp.maximum(marginal_i, eps))
        - lamb * jnp.log(jnp.maximum(marginal_j, eps))
    )
    return jnp.sum(joint * log_ratio)


def mutual_information_loss(
    probs_a: ArrayLike,
    probs_b: ArrayLike,
    *,
    lamb: float = 1.0,
    eps: float | None = None,
    axis_name: str | None = None,
) -> jax.Array:
    """Negative IIC mutual information: the term MUSCLE minimises.

    Same arguments as :func:`mutual_information`; returns ``-I`` as a scalar.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> round(float(losses.mutual_information_loss(jnp.eye(2), jnp.eye(2))), 4)
      -0.6931
    """
    return -mutual_information(probs_a, probs_b, lamb=lamb, eps=eps, axis_name=axis_name)


def multi_head_mutual_information(
    probs_a: ArrayLike,
    probs_b: ArrayLike,
    *,
    lamb: float = 1.0,
    eps: float | None = None,
    axis_name: str | None = None,
) -> jax.Array:
    """Mutual information averaged over several heads (IIC sub-heads).

    IIC trains several randomly initialised heads, and an over-clustering
    head with ``k * num_classes`` outputs, on the same objective; averaging
    over heads makes the term robust to one head's poor initialisation.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> heads = jnp.stack([jnp.eye(3), jnp.eye(3)])
      >>> round(float(losses.multi_head_mutual_information(heads, heads)), 4)
      1.0986

    Args:
      probs_a: ``[heads, batch, num_outputs]`` probabilities of view A.
      probs_b: same shape, view B.
      lamb, eps, axis_name: as in :func:`mutual_information`.

    Returns:
      The mean over heads of the per-head mutual information, a scalar.
    """
    _validation.check_rank("probs_a", probs_a, 3, "[heads, batch, num_outputs]")
    _validation.check_same_shape(("probs_a", "probs_b"), probs_a, probs_b)
    per_head = jax.vmap(
        lambda a, b: mutual_information(a, b, lamb=lamb, eps=eps, axis_name=axis_name)
    )(jnp.asarray(probs_a), jnp.asarray(probs_b))
    return jnp.mean(per_head)
