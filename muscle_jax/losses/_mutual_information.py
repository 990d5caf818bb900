"""IIC mutual information between the class assignments of two views."""

from __future__ import annotations

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


def _rows(probs: jax.Array, where: ArrayLike | None) -> jax.Array:
    """``probs`` with the rows ``where`` leaves out set to zero (float32)."""
    probs = jnp.asarray(probs, jnp.float32)
    if where is None:
        return probs
    # jnp.where, not a product, so that NaN in a left-out row does not leak into the joint.
    return jnp.where(jnp.asarray(where, bool)[:, None], probs, 0.0)


def joint_distribution(
    probs_a: ArrayLike,
    probs_b: ArrayLike,
    *,
    where: ArrayLike | None = None,
    axis_name: str | None = None,
) -> jax.Array:
    r"""Symmetrised joint distribution of two views' class assignments.

    .. math::
      P = \mathrm{sym}\Big(\frac{1}{B}\sum_i w_i\, p_a[i]\, p_b[i]^\top\Big),\quad
      \mathrm{sym}(M) = \frac{(M + M^\top)/2}{\sum (M + M^\top)/2}

    with ``w_i = 1`` for the rows ``where`` selects (all by default) and 0 for
    the others, so a left-out example does not enter the joint. When no row is
    selected the joint is all zeros (and the mutual information 0), not NaN.

    The joint is a statistic of the whole batch. Under `jax.jit` with a sharded
    batch, XLA reduces the matrix product across devices, so the value equals
    the single-device one. Inside `shard_map` or `pmap`, where each device sees
    only its own slice, pass `axis_name` so the per-device joints are averaged
    across that axis (equal per-device batch sizes assumed).

    Args:
      probs_a: class probabilities of view A, ``[batch, num_classes]``.
      probs_b: class probabilities of view B, same shape.
      where: optional boolean mask ``[batch]`` of the rows that enter the joint.
      axis_name: mapped axis to average the joint over, or None.

    Returns:
      The joint distribution ``[num_classes, num_classes]`` in float32, summing
      to 1 (rows of the inputs need not sum to 1: the joint is renormalised),
      or all zeros when ``where`` selects no row. A batch statistic: one
      matrix for the whole batch.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> probs_a = jnp.array([[1.0, 0.0], [0.0, 1.0]])
      >>> probs_b = jnp.array([[0.0, 1.0], [0.0, 1.0]])
      >>> losses.joint_distribution(probs_a, probs_b)  # (M + M^T) / 2, M = [[0, 1/2], [0, 1/2]]
      Array([[0.  , 0.25],
             [0.25, 0.5 ]], dtype=float32)

    References:
      Ji et al., `Invariant Information Clustering for Unsupervised Image
      Classification and Segmentation <https://arxiv.org/abs/1807.06653>`_,
      2019.
    """
    _validation.check_rank("probs_a", probs_a, 2, "[batch, num_classes]")
    _validation.check_same_shape(("probs_a", "probs_b"), probs_a, probs_b)
    _validation.check_classes("probs_a", probs_a)
    _validation.check_where(where, jnp.shape(probs_a)[0])
    # Always float32: bf16 logs of probabilities near eps lose the signal.
    probs_a = _rows(probs_a, where)
    probs_b = _rows(probs_b, where)
    joint = _mean_outer_product(probs_a, probs_b)
    if axis_name is not None:
        joint = jax.lax.pmean(joint, axis_name)
    joint = (joint + joint.T) / 2.0
    total = jnp.sum(joint)
    # An empty selection leaves a zero joint (no evidence), rather than 0 / 0.
    return joint / jnp.where(total > 0, total, 1.0)


def mutual_information(
    probs_a: ArrayLike,
    probs_b: ArrayLike,
    *,
    lamb: float = 1.0,
    eps: float | None = None,
    where: ArrayLike | None = None,
    prior: ArrayLike | None = None,
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

    **With a class prior** ``prior`` (a distribution :math:`\pi` over the
    classes, e.g. the labeled set's class frequencies), the marginal-entropy
    part is replaced by a divergence to :math:`\pi`, as RIM and IMSAT do. ``P``
    is symmetric, so both marginals are the same :math:`m`, and with
    :math:`H(P) = H(m) + H(a|b)`:

    .. math::
      I_\lambda = \sum_{ij} P_{ij}\log P_{ij} - 2\lambda\sum_i m_i \log m_i
                = -H(a|b) + (2\lambda - 1)\, H(m).

    :math:`H(m) = \log C - \mathrm{KL}(m \| u)` is largest at the uniform
    :math:`u`, which is wrong for a long-tailed pool. Putting
    :math:`H(\pi) - \mathrm{KL}(m \| \pi)`, largest at :math:`m = \pi`, in its
    place gives what this returns:

    .. math::
      J_\lambda = -H(a|b) + (2\lambda - 1)\big(H(\pi) - \mathrm{KL}(m \| \pi)\big)
                = I_\lambda + (2\lambda - 1) \sum_i (m_i - \pi_i) \log \pi_i.

    For the uniform :math:`\pi`, :math:`J_\lambda = I_\lambda` exactly. For
    ``lamb = 1``, :math:`J \le H(\pi)`, with equality when each view's
    assignment determines the other's and :math:`m = \pi` (as
    :math:`I \le \log C`). Replacing all of :math:`2\lambda H(m)` in
    :math:`I_\lambda = -H(P) + 2\lambda H(m)` instead would leave the
    :math:`-H(m)` inside :math:`-H(P)`, and the optimum would be
    :math:`m \propto \pi^{2\lambda / (2\lambda - 1)}`, not :math:`\pi`.
    :math:`\pi` is clamped at ``eps`` inside its logarithm (a class the prior
    excludes costs :math:`m_i \log(1/\mathrm{eps})`, about 36 nats a unit of
    mass) and gets no gradient.

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
      probs_a: class probabilities of view A, ``[batch, num_classes]`` (in
        MUSCLE the weak view; the value is symmetric in the two views).
      probs_b: class probabilities of view B (the strong view), same shape.
      lamb: weight of the marginal terms (IIC's lambda), 1.0 for true MI.
      eps: clamp inside the logarithms; None means :data:`EPS`
        (``sys.float_info.epsilon``, ~2.2e-16, as in IIC's ``IID_loss``).
      where: optional boolean mask ``[batch]`` of the examples that enter the
        joint (see :func:`joint_distribution`); none selected gives 0.
      prior: optional class distribution ``[num_classes]`` (counts or
        frequencies: it is normalised here) to match the marginal to, in place
        of the uniform one; None gives IIC's :math:`I_\lambda`.
      axis_name: see :func:`joint_distribution`.

    Returns:
      A float32 scalar: :math:`I_\lambda`, or :math:`J_\lambda` with a prior.

    References:
      Ji et al., `Invariant Information Clustering for Unsupervised Image
      Classification and Segmentation <https://arxiv.org/abs/1807.06653>`_,
      2019. Xie et al., `MUSCLE <https://arxiv.org/abs/2012.00150>`_, 2021.
      Krause et al., `Discriminative Clustering by Regularized Information
      Maximization <https://papers.nips.cc/paper/4154>`_, NeurIPS 2010 (RIM's
      prior); Hu et al., `IMSAT <https://arxiv.org/abs/1702.08720>`_, ICML 2017.
    """
    joint = joint_distribution(probs_a, probs_b, where=where, axis_name=axis_name)
    eps = EPS if eps is None else eps
    marginal_i = jnp.sum(joint, axis=1, keepdims=True)
    marginal_j = jnp.sum(joint, axis=0, keepdims=True)
    log_ratio = (
        jnp.log(jnp.maximum(joint, eps))
        - lamb * jnp.log(jnp.maximum(marginal_i, eps))
        - lamb * jnp.log(jnp.maximum(marginal_j, eps))
    )
    value = jnp.sum(joint * log_ratio)
    if prior is not None:
        prior = _class_prior(prior, joint.shape[0])
        log_prior = jnp.log(jnp.maximum(prior, eps))
        value = value + (2.0 * lamb - 1.0) * jnp.sum((marginal_i[:, 0] - prior) * log_prior)
    return value


def _class_prior(prior: ArrayLike, num_classes: int) -> jax.Array:
    """``prior`` as a float32 distribution ``[num_classes]`` without gradient."""
    _validation.check_rank("prior", prior, 1, "[num_classes]")
    if jnp.shape(prior)[0] != num_classes:
        raise ValueError(
            f"prior has {jnp.shape(prior)[0]} classes; the probabilities have {num_classes}."
        )
    prior = jax.lax.stop_gradient(jnp.asarray(prior, jnp.float32))
    return prior / jnp.sum(prior)


def mutual_information_loss(
    probs_a: ArrayLike,
    probs_b: ArrayLike,
    *,
    lamb: float = 1.0,
    eps: float | None = None,
    where: ArrayLike | None = None,
    prior: ArrayLike | None = None,
    axis_name: str | None = None,
) -> jax.Array:
    """Negative IIC mutual information: the term MUSCLE minimises.

    A batch statistic, like :func:`mutual_information`: it must see the global
    batch and returns one scalar, not per-example values.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> round(float(losses.mutual_information_loss(jnp.eye(2), jnp.eye(2))), 4)
      -0.6931

    Args:
      probs_a: class probabilities of view A (weak), ``[batch, num_classes]``.
      probs_b: class probabilities of view B (strong), same shape.
      lamb, eps, where, prior, axis_name: as in :func:`mutual_information`.

    Returns:
      A float32 scalar, ``-I`` (``-J`` with a prior).

    References:
      Ji et al., `Invariant Information Clustering for Unsupervised Image
      Classification and Segmentation <https://arxiv.org/abs/1807.06653>`_,
      2019. Xie et al., `MUSCLE <https://arxiv.org/abs/2012.00150>`_, 2021.
    """
    return -mutual_information(
        probs_a, probs_b, lamb=lamb, eps=eps, where=where, prior=prior, axis_name=axis_name
    )


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
      The mean over heads of the per-head mutual information, a float32 scalar.

    References:
      Ji et al., `Invariant Information Clustering for Unsupervised Image
      Classification and Segmentation <https://arxiv.org/abs/1807.06653>`_,
      2019.
    """
    _validation.check_rank("probs_a", probs_a, 3, "[heads, batch, num_outputs]")
    _validation.check_same_shape(("probs_a", "probs_b"), probs_a, probs_b)
    per_head = jax.vmap(
        lambda a, b: mutual_information(a, b, lamb=lamb, eps=eps, axis_name=axis_name)
    )(jnp.asarray(probs_a), jnp.asarray(probs_b))
    return jnp.mean(per_head)


def class_prior_update(
    prior: ArrayLike,
    probs: ArrayLike,
    *,
    momentum: float = 0.999,
    where: ArrayLike | None = None,
    axis_name: str | None = None,
) -> jax.Array:
    r"""Moves an estimate of the unlabeled pool's class distribution towards this batch's.

    .. math::
      \pi \leftarrow m\, \pi + (1 - m)\, \frac{1}{|S|}\sum_{i \in S} \mathrm{sg}(p_i)

    over the rows ``S`` that ``where`` selects (all by default), as
    distribution alignment keeps ``p_model``; it is the ``prior`` of
    :func:`mutual_information` for an unlabeled pool whose class frequencies
    are not known (long-tailed). A batch that selects no row leaves
    :math:`\pi` unchanged. The mean is of the global batch (``axis_name``
    inside ``shard_map``).

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> probs = jnp.array([[0.5, 0.5], [0.9, 0.1]])  # batch mean [0.7, 0.3]
      >>> prior = losses.class_prior_update(jnp.array([0.5, 0.5]), probs, momentum=0.5)
      >>> [round(float(p), 4) for p in prior]  # 0.5 * 0.5 + 0.5 * [0.7, 0.3]
      [0.6, 0.4]

    Args:
      prior: the current estimate ``[num_classes]``, summing to 1.
      probs: this batch's class probabilities ``[batch, num_classes]``.
      momentum: EMA momentum ``m`` in ``[0, 1]``.
      where: optional boolean mask ``[batch]`` of the rows to count.
      axis_name: mapped axis to sum over, or None.

    Returns:
      The new estimate ``[num_classes]``, float32, without gradient.

    References:
      Berthelot et al., `ReMixMatch <https://arxiv.org/abs/1911.09785>`_, ICLR
      2020 (the running mean prediction of distribution alignment). Krause et
      al., `Discriminative Clustering by Regularized Information Maximization
      <https://papers.nips.cc/paper/4154>`_, NeurIPS 2010 (the class prior).
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}.")
    _validation.check_rank("probs", probs, 2, "[batch, num_classes]")
    _validation.check_where(where, jnp.shape(probs)[0])
    prior = jax.lax.stop_gradient(_class_prior(prior, jnp.shape(probs)[1]))
    rows = jax.lax.stop_gradient(_rows(probs, where))
    selected = jnp.ones(rows.shape[:1]) if where is None else jnp.asarray(where, jnp.float32)
    count = jnp.sum(selected)
    total = jnp.sum(rows, axis=0)
    if axis_name is not None:
        total, count = jax.lax.psum((total, count), axis_name)
    batch_mean = total / jnp.maximum(count, 1.0)
    return jnp.where(count > 0, momentum * prior + (1.0 - momentum) * batch_mean, prior)
