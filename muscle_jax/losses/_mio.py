"""MIO: binary contrastive learning of two views' embeddings."""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike

from muscle_jax.losses import _validation

# Squared-norm floor: a zero embedding normalises to zero with a finite gradient.
_NORM_EPS = 1e-12


def _l2_normalise(x: jax.Array) -> jax.Array:
    return x * jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True) + _NORM_EPS)


def _replicate_batch(x: jax.Array) -> jax.Array:
    """``x`` replicated when its batch axis is sharded over explicit mesh axes."""
    sharding = jax.typeof(x).sharding
    if isinstance(sharding, NamedSharding) and sharding.spec and sharding.spec[0] is not None:
        # S = z_a z_b^T would shard both of its axes over the same mesh axis;
        # every anchor needs every other example as a negative anyway.
        return jax.sharding.reshard(x, NamedSharding(sharding.mesh, P()))
    return x


def _check_temperature(name: str, value: float) -> None:
    if isinstance(value, numbers.Real) and not value > 0:
        raise ValueError(f"{name} must be positive, got {value}.")


def mio_loss(
    embeddings_a: ArrayLike,
    embeddings_b: ArrayLike,
    *,
    tau_positive: float = 0.5,
    tau_negative: float = 0.5,
    l2_weight: ArrayLike = 1.0,
    where: ArrayLike | None = None,
    axis_name: str | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    r"""MIO loss: classify pairs of embeddings as same image or not.

    With L2-normalised embeddings ``z = x / ||x||`` and cosine similarities
    ``S_ij = z_a[i] . z_b[j]`` over the global batch:

    .. math::
      L = \frac{1}{|P|}\sum_{i} \mathrm{BCE}(S_{ii}/\tau_+, 1)
        + \frac{1}{|N|}\sum_{i \ne j} \mathrm{BCE}(S_{ij}/\tau_-, 0)
        + \lambda \frac{1}{|P|}\sum_i \lVert z_a[i] - z_b[i] \rVert^2

    where ``BCE(x, 1) = softplus(-x)`` and ``BCE(x, 0) = softplus(x)`` are
    binary cross-entropies with logits, ``P`` the selected examples and ``N``
    the ordered pairs of distinct selected examples. Averaging the positives
    and the negatives separately, so that the ``B - 1`` negatives of an
    anchor together weigh as much as its one positive, is this library's
    choice; it keeps the balance independent of the batch size. Rows masked
    out by ``where`` are neither anchors nor negatives; a term with no pairs
    (no example selected, or a single one for the negatives) is 0. Zero
    embeddings normalise to zero (``S = 0``) with a finite gradient.

    Every example's negatives are all other examples of the global batch.
    Under `jax.jit` with a sharded batch this needs nothing; inside
    `shard_map` or `pmap` pass ``axis_name``: the B embeddings are then
    gathered from every device (equal per-device batch sizes assumed) and the
    sums and counts are taken over the mapped axis.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> views = jnp.eye(4)
      >>> loss, aux = losses.mio_loss(views, views)
      >>> round(float(aux["positive_similarity"]), 4), round(float(aux["negative_similarity"]), 4)
      (1.0, 0.0)
      >>> shuffled, _ = losses.mio_loss(views, views[::-1])
      >>> bool(loss < shuffled)
      True

    Args:
      embeddings_a: embeddings of view A ``[batch, dim]``.
      embeddings_b: embeddings of view B, same shape.
      tau_positive: temperature of the positive pairs, > 0.
      tau_negative: temperature of the negative pairs, > 0.
      l2_weight: weight ``lambda`` of the distance between positive pairs;
        may be a traced scalar.
      where: optional boolean mask ``[batch]`` of the real examples.
      axis_name: mapped axis for use inside ``shard_map``/``pmap``; None under
        global-view ``jax.jit``.

    Returns:
      ``(loss, aux)``: the float32 scalar loss and a dict of scalars with the
      mean cosine similarity of the positive pairs, ``positive_similarity``,
      and of the negative pairs, ``negative_similarity``.

    References:
      Manna et al., `MIO: Mutual Information Optimization using Self-Supervised
      Binary Contrastive Learning <https://arxiv.org/abs/2111.12664>`_, 2021.
    """
    _validation.check_rank("embeddings_a", embeddings_a, 2, "[batch, dim]")
    _validation.check_same_shape(("embeddings_a", "embeddings_b"), embeddings_a, embeddings_b)
    batch = jnp.shape(embeddings_a)[0]
    _validation.check_where(where, batch)
    _check_temperature("tau_positive", tau_positive)
    _check_temperature("tau_negative", tau_negative)

    keep = jnp.ones((batch,), bool) if where is None else jnp.asarray(where, bool)
    # Zeroed before the matrix product: a masked row's cotangents are 0, but a
    # non-finite padded row would still turn 0 * row into NaN gradients for
    # the real rows it is multiplied with.
    z_a = jnp.where(keep[:, None], _l2_normalise(jnp.asarray(embeddings_a, jnp.float32)), 0.0)
    z_b = jnp.where(keep[:, None], _l2_normalise(jnp.asarray(embeddings_b, jnp.float32)), 0.0)

    if axis_name is None:
        offset = 0
        z_b_all, keep_all = _replicate_batch(z_b), _replicate_batch(keep)
    else:
        offset = jax.lax.axis_index(axis_name) * batch
        z_b_all = jax.lax.all_gather(z_b, axis_name, tiled=True)
        keep_all = jax.lax.all_gather(keep, axis_name, tiled=True)

    similarity = z_a @ z_b_all.T
    rows = offset + jnp.arange(batch)
    is_positive = rows[:, None] == jnp.arange(z_b_all.shape[0])[None, :]
    negative = ~is_positive & keep[:, None] & keep_all[None, :]

    def masked_sum(values, mask):
        return jnp.sum(jnp.where(mask, values, 0.0))

    positive_similarity = jnp.sum(z_a * z_b, axis=-1)
    sums = {
        "positive_bce": masked_sum(jax.nn.softplus(-positive_similarity / tau_positive), keep),
        "negative_bce": masked_sum(jax.nn.softplus(similarity / tau_negative), negative),
        "distance": masked_sum(jnp.sum(jnp.square(z_a - z_b), axis=-1), keep),
        "positive_similarity": masked_sum(positive_similarity, keep),
        "negative_similarity": masked_sum(similarity, negative),
        "positives": jnp.sum(keep, dtype=jnp.float32),
        "negatives": jnp.sum(negative, dtype=jnp.float32),
    }
    if axis_name is not None:
        sums = jax.lax.psum(sums, axis_name)
    positives = jnp.maximum(sums["positives"], 1.0)
    negatives = jnp.maximum(sums["negatives"], 1.0)
    loss = (
        sums["positive_bce"] / positives
        + sums["negative_bce"] / negatives
        + l2_weight * sums["distance"] / positives
    )
    aux = {
        "positive_similarity": sums["positive_similarity"] / positives,
        "negative_similarity": sums["negative_similarity"] / negatives,
    }
    return loss, aux
