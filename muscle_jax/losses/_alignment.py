"""Distribution alignment and the base methods built on it or on soft targets.

ReMixMatch's distribution alignment (shared with AdaMatch), SoftMatch's soft
weighting with uniform alignment, AdaMatch's relative threshold, and UDA's
sharpened soft targets with training-signal annealing.

Everything is a pure function: the running statistics are a dict of arrays
that goes in and comes out (keep it in the train state and checkpoint it).
Every batch statistic is a statistic of the global batch: inside
`shard_map` or `pmap` pass ``axis_name`` so that the sums and counts are
taken across it; under global-view `jax.jit` XLA reduces across devices.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from muscle_jax.losses import _validation
from muscle_jax.losses._supervised import supervised_loss

TSA_SCHEDULES = ("none", "linear", "exp", "log")

# ReMixMatch's, AdaMatch's and USB's constant: it keeps a class that the model
# never predicts (p_model ~ 0) from blowing its aligned probability up.
_EPSILON = 1e-6


def _check_momentum(momentum: float) -> None:
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}.")


def _check_distribution(name: str, x: ArrayLike, num_classes: int) -> None:
    if jnp.shape(x) != (num_classes,):
        raise ValueError(
            f"{name} must have shape ({num_classes},) for {num_classes} classes, "
            f"got {jnp.shape(x)}."
        )


def _check_scalar(name: str, x: ArrayLike) -> None:
    if jnp.shape(x) != ():
        raise ValueError(f"{name} must be a scalar, got shape {jnp.shape(x)}.")


def _check_state(state: dict, keys: tuple[str, ...], function: str) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(
            f"state is missing {missing}: build it with {function}, got keys {sorted(state)}."
        )


def _check_probs(name: str, probs: ArrayLike, where: ArrayLike | None) -> None:
    _validation.check_rank(name, probs, 2, "[batch, num_classes]")
    _validation.check_classes(name, probs)
    _validation.check_where(where, jnp.shape(probs)[0])


def _selected(values: jax.Array, where: ArrayLike | None) -> tuple[jax.Array, jax.Array]:
    """``(values with unselected rows zeroed, float selection [batch])``."""
    if where is None:
        return values, jnp.ones(values.shape[:1], jnp.float32)
    keep = jnp.asarray(where, bool)
    # jnp.where, not a product, so that NaN padding does not leak into the sums.
    mask = keep.reshape(keep.shape + (1,) * (values.ndim - 1))
    return jnp.where(mask, values, 0.0), keep.astype(jnp.float32)


def _global_mean(
    values: jax.Array, where: ArrayLike | None, axis_name: str | None
) -> tuple[jax.Array, jax.Array]:
    """Mean over the selected rows of the global batch, and their global count."""
    values, weights = _selected(values, where)
    total, count = jnp.sum(values, axis=0), jnp.sum(weights)
    if axis_name is not None:
        total, count = jax.lax.psum((total, count), axis_name)
    return total / jnp.maximum(count, 1.0), count


def _global_unbiased_variance(
    values: jax.Array,
    mean: jax.Array,
    count: jax.Array,
    where: ArrayLike | None,
    axis_name: str | None,
) -> jax.Array:
    """Unbiased variance of ``values [batch]`` over the selected rows of the global batch.

    Two passes (the global mean first, then the squared deviations from it)
    rather than ``E[x^2] - E[x]^2``: confidences near 1 with a small spread
    would lose most of their digits to cancellation in float32.
    """
    deviations, _ = _selected(jnp.square(values - mean), where)
    total = jnp.sum(deviations)
    if axis_name is not None:
        total = jax.lax.psum(total, axis_name)
    return total / jnp.maximum(count - 1.0, 1.0)


def _ema_or_first(
    old: jax.Array,
    batch_value: jax.Array,
    count: jax.Array,
    initialised: jax.Array,
    momentum: float,
    first_batch: bool,
) -> jax.Array:
    ema = momentum * old + (1.0 - momentum) * batch_value
    if first_batch:
        ema = jnp.where(initialised, ema, batch_value)
    # A step without any selected example carries no evidence: keep the estimate.
    return jnp.where(count > 0, ema, old)


# ---------------------------------------------------------------- distribution alignment


def distribution_alignment_init(
    num_classes: int, *, p_target: ArrayLike | None = None
) -> dict[str, jax.Array]:
    r"""The state of distribution alignment: ``p_model``, ``p_target`` and ``initialised``.

    ``p_model`` holds the uniform distribution until the first update, which
    replaces it by that batch's mean (USB) unless it is made with
    ``first_batch=False`` (then the uniform value is averaged in);
    ``initialised`` records that a batch has been seen. The target is fixed
    by how the state is built and updated:

    - ``"uniform"``: ``p_target=None`` and no ``labeled_probs`` in
      :func:`distribution_alignment_update`;
    - ``"labeled"``: ``p_target`` the labeled set's class histogram (counts
      or frequencies; it is normalised here), no ``labeled_probs``;
    - ``"labeled_ema"`` (AdaMatch): ``p_target=None`` (it starts uniform, as
      in USB and AdaMatch's code) and ``labeled_probs`` at every update.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> state = losses.distribution_alignment_init(4, p_target=jnp.array([2.0, 1.0, 1.0, 0.0]))
      >>> state["p_model"]
      Array([0.25, 0.25, 0.25, 0.25], dtype=float32)
      >>> state["p_target"], state["initialised"]
      (Array([0.5 , 0.25, 0.25, 0.  ], dtype=float32), Array(False, dtype=bool))

    Args:
      num_classes: number of classes C, >= 2.
      p_target: optional fixed target distribution ``[C]``; uniform if None.

    Returns:
      ``{"p_model": [C], "p_target": [C], "initialised": bool scalar}``.

    References:
      Berthelot et al., `ReMixMatch <https://arxiv.org/abs/1911.09785>`_, ICLR
      2020. Code: ``semilearn/algorithms/hooks/dist_align.py`` in
      microsoft/Semi-supervised-learning (USB).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
    uniform = jnp.full((num_classes,), 1.0 / num_classes, jnp.float32)
    if p_target is None:
        target = uniform
    else:
        _check_distribution("p_target", p_target, num_classes)
        target = jnp.asarray(p_target, jnp.float32)
        target = target / jnp.sum(target)
    return {"p_model": uniform, "p_target": target, "initialised": jnp.array(False)}


def distribution_alignment_update(
    state: dict[str, jax.Array],
    probs: ArrayLike,
    *,
    momentum: float = 0.999,
    labeled_probs: ArrayLike | None = None,
    first_batch: bool = True,
    where: ArrayLike | None = None,
    labeled_where: ArrayLike | None = None,
    axis_name: str | None = None,
) -> dict[str, jax.Array]:
    r"""Moves ``p_model`` (and an EMA target) towards this batch's mean prediction.

    .. math::
      p_{model} \leftarrow m\, p_{model} + (1 - m)\, \frac{1}{B}\sum_i \mathrm{sg}(p_i),\qquad
      p_{target} \leftarrow m\, p_{target} + (1 - m)\, \frac{1}{B_l}\sum_j \mathrm{sg}(q_j)

    with ``p_i = softmax(z^weak_i)`` on the unlabeled batch and, for the
    ``labeled_ema`` target only, ``q_j = softmax(z_j)`` on the labeled
    batch. Call it before :func:`align_distribution`, with the same batch, as
    USB and AdaMatch's code do.

    Both means are of the global batch (``axis_name`` inside ``shard_map``).
    A step that selects no example leaves its estimate unchanged.

    Paper and code differ; the defaults follow USB's EMA:

    - ReMixMatch (paper and code) and AdaMatch's code estimate ``p_model`` as
      the mean over the last 128 batches, not an EMA; ``momentum=1 - 1/128``
      is an EMA of about the same horizon.
    - ReMixMatch's code aligns with the ``p_model`` from before the current
      batch (it updates after the step): call :func:`align_distribution`
      first to get that order.
    - USB's ``DistAlignEMAHook`` (semilearn 0.3.2, ``hooks/dist_align.py``)
      starts ``p_model`` at the first batch's mean (``None`` until then): the
      default, ``first_batch=True``. ReMixMatch's and AdaMatch's code start
      their 128-batch mean from a buffer of uniform rows, which the first 128
      batches push out; an EMA of momentum 0.999 started at uniform
      (``first_batch=False``) would still hold ``0.999^t`` of it, 37 % after
      1000 steps, so the first-batch start is the closer match to both.
      ``p_target`` starts uniform either way, as in all three.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> probs = jnp.array([[0.5, 0.5], [0.9, 0.1]])  # batch mean [0.7, 0.3]
      >>> state = losses.distribution_alignment_init(2)
      >>> updated = losses.distribution_alignment_update(state, probs, momentum=0.5)
      >>> [round(float(p), 4) for p in updated["p_model"]]  # the first batch's mean
      [0.7, 0.3]
      >>> updated = losses.distribution_alignment_update(
      ...     state, probs, momentum=0.5, first_batch=False)
      >>> [round(float(p), 4) for p in updated["p_model"]]  # 0.5 * 0.5 + 0.5 * [0.7, 0.3]
      [0.6, 0.4]

    Args:
      state: from :func:`distribution_alignment_init` or a previous update.
      probs: unlabeled weak-view probabilities ``[batch, C]``.
      momentum: EMA momentum m in ``[0, 1]``.
      labeled_probs: labeled-batch probabilities ``[batch_l, C]`` for the
        ``labeled_ema`` target (AdaMatch); None keeps ``p_target`` fixed.
      first_batch: the first update replaces ``p_model`` by the batch's
        mean (USB); False averages the uniform initial value in instead.
      where: optional boolean mask ``[batch]`` of the unlabeled rows to count.
      labeled_where: optional boolean mask ``[batch_l]`` of the labeled rows.
      axis_name: mapped axis to sum over, or None.

    Returns:
      The updated ``{"p_model", "p_target", "initialised"}`` (float32, no
      gradient), to pass to the next update.

    References:
      Berthelot et al., `ReMixMatch <https://arxiv.org/abs/1911.09785>`_, ICLR
      2020. Berthelot et al., `AdaMatch <https://arxiv.org/abs/2106.04732>`_,
      ICLR 2022. Code: ``semilearn/algorithms/hooks/dist_align.py`` in
      microsoft/Semi-supervised-learning (USB).
    """
    _check_state(state, ("p_model", "p_target", "initialised"), "distribution_alignment_init")
    _check_momentum(momentum)
    _check_probs("probs", probs, where)
    num_classes = jnp.shape(probs)[-1]
    _check_distribution("state['p_model']", state["p_model"], num_classes)
    _check_distribution("state['p_target']", state["p_target"], num_classes)
    state = jax.lax.stop_gradient(state)
    probs = jax.lax.stop_gradient(jnp.asarray(probs, jnp.float32))
    batch_mean, count = _global_mean(probs, where, axis_name)
    p_model = _ema_or_first(
        state["p_model"], batch_mean, count, state["initialised"], momentum, first_batch
    )
    p_target = jnp.asarray(state["p_target"], jnp.float32)
    if labeled_probs is not None:
        _check_probs("labeled_probs", labeled_probs, labeled_where)
        if jnp.shape(labeled_probs)[-1] != num_classes:
            raise ValueError(
                f"labeled_probs {jnp.shape(labeled_probs)} and probs {jnp.shape(probs)} "
                "must have the same number of classes."
            )
        labeled_probs = jax.lax.stop_gradient(jnp.asarray(labeled_probs, jnp.float32))
        labeled_mean, labeled_count = _global_mean(labeled_probs, labeled_where, axis_name)
        # No first-batch start for the target: USB and AdaMatch's code both start it uniform.
        p_target = _ema_or_first(p_target, labeled_mean, labeled_count, True, momentum, False)
    return {
        "p_model": p_model,
        "p_target": p_target,
        "initialised": jnp.logical_or(state["initialised"], count > 0),
    }


def align_distribution(probs: ArrayLike, p_model: ArrayLike, p_target: ArrayLike) -> jax.Array:
    r"""Distribution alignment: reweight each prediction by ``p_target / p_model``.

    .. math::
      \tilde p_i = \mathrm{sg}\Big(\mathrm{normalise}\Big(p_i \odot
      \frac{p_{target} + 10^{-6}}{p_{model} + 10^{-6}}\Big)\Big)

    The classes the model over-predicts on unlabeled data lose mass, the
    under-predicted ones gain it; every row sums to 1. The result is a
    pseudo-label, so it carries no gradient.

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> from muscle_jax import losses
      >>> probs = jnp.array([[0.5, 0.5], [0.9, 0.1]])
      >>> # ratios [0.5/0.6, 0.5/0.4]: row 0 -> [0.8333, 1.25] / 2.0833
      >>> aligned = losses.align_distribution(probs, jnp.array([0.6, 0.4]), jnp.array([0.5, 0.5]))
      >>> np.asarray(aligned, np.float64).round(4)
      array([[0.4   , 0.6   ],
             [0.8571, 0.1429]])

    Args:
      probs: probabilities ``[batch, C]``.
      p_model: the running mean prediction ``[C]`` (``state["p_model"]``).
      p_target: the target distribution ``[C]`` (``state["p_target"]``).

    Returns:
      Aligned float32 probabilities ``[batch, C]``.

    References:
      Berthelot et al., `ReMixMatch <https://arxiv.org/abs/1911.09785>`_, ICLR
      2020. Code: ``semilearn/algorithms/hooks/dist_align.py`` in
      microsoft/Semi-supervised-learning (USB).
    """
    _check_probs("probs", probs, None)
    num_classes = jnp.shape(probs)[-1]
    _check_distribution("p_model", p_model, num_classes)
    _check_distribution("p_target", p_target, num_classes)
    probs, p_model, p_target = jax.lax.stop_gradient(
        tuple(jnp.asarray(x, jnp.float32) for x in (probs, p_model, p_target))
    )
    aligned = probs * ((p_target + _EPSILON) / (p_model + _EPSILON))
    return aligned / jnp.sum(aligned, axis=-1, keepdims=True)


# ---------------------------------------------------------------- SoftMatch


def softmatch_init(num_classes: int) -> dict[str, jax.Array]:
    r"""SoftMatch's state: ``p_hat`` (uniform), ``mu = 1/C``, ``var = 1`` and ``initialised``.

    The initial ``mu`` and ``var`` are those of USB's
    ``SoftMatchWeightingHook``: a wide Gaussian, so that early on every
    example gets a weight near 1.

    Examples:
      >>> from muscle_jax import losses
      >>> state = losses.softmatch_init(4)
      >>> state["p_hat"]
      Array([0.25, 0.25, 0.25, 0.25], dtype=float32)
      >>> state["mu"], state["var"]
      (Array(0.25, dtype=float32), Array(1., dtype=float32))

    Args:
      num_classes: number of classes C, >= 2.

    Returns:
      ``{"p_hat": [C], "mu": scalar, "var": scalar, "initialised": bool scalar}``.

    References:
      Chen et al., `SoftMatch <https://arxiv.org/abs/2301.10921>`_, ICLR 2023.
      Code: ``semilearn/algorithms/softmatch/softmatch.py`` (and ``utils.py``)
      in microsoft/Semi-supervised-learning (USB).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
    return {
        "p_hat": jnp.full((num_classes,), 1.0 / num_classes, jnp.float32),
        "mu": jnp.asarray(1.0 / num_classes, jnp.float32),
        "var": jnp.asarray(1.0, jnp.float32),
        "initialised": jnp.array(False),
    }


def softmatch_update(
    state: dict[str, jax.Array],
    probs: ArrayLike,
    *,
    momentum: float = 0.999,
    first_batch: bool = True,
    where: ArrayLike | None = None,
    axis_name: str | None = None,
) -> tuple[dict[str, jax.Array], jax.Array]:
    r"""SoftMatch's uniform alignment and the EMA of the aligned confidences' mean and variance.

    .. math::
      \hat p \leftarrow m \hat p + (1-m)\,\mathrm{mean}_i\, p_i,\quad
      p^{ua}_i = \mathrm{normalise}\Big(p_i \odot \frac{1/C + 10^{-6}}{\hat p + 10^{-6}}\Big),\quad
      c_i = \max p^{ua}_i

    .. math::
      \mu \leftarrow m \mu + (1-m)\,\mathrm{mean}_i\, c_i,\qquad
      \sigma^2 \leftarrow m \sigma^2 + (1-m)\,\frac{1}{B-1}\sum_i (c_i - \bar c)^2

    in that order, each on the state the previous line produced, as USB
    does; ``p_i = softmax(sg(z^weak_i))``. The alignment is only for the
    weights (:func:`softmatch_weights`): the pseudo-label stays the argmax of
    the unaligned weak prediction (:func:`softmatch_consistency`).

    The mean and the unbiased variance are of the global batch, from sums
    taken across ``axis_name``: the mean of per-device variances is not the
    global variance (it misses the spread between the devices' means). USB
    gathers the probabilities for this, but in the stored
    ``semilearn/algorithms/softmatch/utils.py`` the multi-GPU branch calls
    ``self.concat_all_gather``, which neither ``MaskingHook`` nor ``Hook``
    defines. A global batch of one has no variance: ``var`` then keeps its
    value (``torch.var`` would give NaN).

    ``p_hat`` starts at the first batch's mean by default, as USB's
    ``DistAlignEMAHook`` (``p_model = None`` until then) does;
    ``first_batch=False`` starts it at uniform. ``mu`` and ``var`` always
    start at ``1/C`` and 1.

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> from muscle_jax import losses
      >>> probs = jnp.array([[0.5, 0.5], [0.9, 0.1]])
      >>> state, aligned = losses.softmatch_update(losses.softmatch_init(2), probs, momentum=0.5)
      >>> [round(float(p), 4) for p in state["p_hat"]]  # the first batch's mean
      [0.7, 0.3]
      >>> # row 0: 0.5/0.7 : 0.5/0.3 = 3 : 7; row 1: 0.9/0.7 : 0.1/0.3 = 27 : 7
      >>> np.asarray(aligned, np.float64).round(4)
      array([[0.3   , 0.7   ],
             [0.7941, 0.2059]])

    Args:
      state: from :func:`softmatch_init` or a previous update.
      probs: unlabeled weak-view probabilities ``[batch, C]``.
      momentum: EMA momentum m in ``[0, 1]`` (``ema_p`` in USB).
      first_batch: start ``p_hat`` at the first batch's mean (USB).
      where: optional boolean mask ``[batch]`` of the rows to count.
      axis_name: mapped axis to sum over, or None.

    Returns:
      ``(state, aligned_probs)``: the updated state and the uniformly aligned
      probabilities ``[batch, C]`` (float32, no gradient).

    References:
      Chen et al., `SoftMatch <https://arxiv.org/abs/2301.10921>`_, ICLR 2023.
      Code: ``semilearn/algorithms/softmatch/softmatch.py`` (and ``utils.py``)
      and ``semilearn/algorithms/hooks/dist_align.py`` in
      microsoft/Semi-supervised-learning (USB).
    """
    _check_state(state, ("p_hat", "mu", "var", "initialised"), "softmatch_init")
    _check_momentum(momentum)
    _check_probs("probs", probs, where)
    num_classes = jnp.shape(probs)[-1]
    _check_distribution("state['p_hat']", state["p_hat"], num_classes)
    _check_scalar("state['mu']", state["mu"])
    _check_scalar("state['var']", state["var"])
    state = jax.lax.stop_gradient(state)
    probs = jax.lax.stop_gradient(jnp.asarray(probs, jnp.float32))
    batch_mean, count = _global_mean(probs, where, axis_name)
    p_hat = _ema_or_first(
        state["p_hat"], batch_mean, count, state["initialised"], momentum, first_batch
    )
    uniform = jnp.full((num_classes,), 1.0 / num_classes, jnp.float32)
    aligned = align_distribution(probs, p_hat, uniform)
    confidence = jnp.max(aligned, axis=-1)
    mean, _ = _global_mean(confidence, where, axis_name)
    variance = _global_unbiased_variance(confidence, mean, count, where, axis_name)
    mu = jnp.where(count > 0, momentum * state["mu"] + (1.0 - momentum) * mean, state["mu"])
    var = jnp.where(count > 1, momentum * state["var"] + (1.0 - momentum) * variance, state["var"])
    new_state = {
        "p_hat": p_hat,
        "mu": mu,
        "var": var,
        "initialised": jnp.logical_or(state["initialised"], count > 0),
    }
    return new_state, aligned


def softmatch_weights(
    aligned_probs: ArrayLike, mu: ArrayLike, var: ArrayLike, *, n_sigma: float = 2.0
) -> jax.Array:
    r"""SoftMatch's truncated Gaussian weights of the (aligned) confidences.

    .. math::
      w_i = \exp\Big(-\frac{\min(c_i - \mu, 0)^2}{2\sigma^2 / n_\sigma^2}\Big),\qquad
      c_i = \max \tilde p_i

    An example at least as confident as the running mean gets weight 1; a
    less confident one is weighted down smoothly instead of being dropped
    by a hard threshold. ``w`` is in ``(0, 1]`` in exact arithmetic; in
    float32 it underflows to 0 once the exponent exceeds about 103, as in
    the reference code.

    The paper writes ``2 sigma^2`` in the denominator; USB's code (by the
    paper's authors) divides the variance by ``n_sigma^2`` first, with
    ``n_sigma = 2``: a Gaussian half as wide. The default follows the code;
    ``n_sigma=1`` is the paper's formula.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> aligned = jnp.array([[0.9, 0.1], [0.5, 0.5]])
      >>> # c = [0.9, 0.5]: row 1 is 0.2 below mu: exp(-0.04 / (2 * 0.08 / 4)) = exp(-1)
      >>> [round(float(w), 4) for w in losses.softmatch_weights(aligned, 0.7, 0.08)]
      [1.0, 0.3679]

    Args:
      aligned_probs: the aligned probabilities ``[batch, C]`` from
        :func:`softmatch_update`.
      mu: the running mean of the confidence, ``state["mu"]``.
      var: the running variance, ``state["var"]``, > 0.
      n_sigma: the Gaussian's width divisor, > 0 (``n_sigma`` in USB).

    Returns:
      Float32 weights ``[batch]`` in ``(0, 1]``, without gradient.

    References:
      Chen et al., `SoftMatch <https://arxiv.org/abs/2301.10921>`_, ICLR 2023.
      Code: ``semilearn/algorithms/softmatch/utils.py``
      (``SoftMatchWeightingHook.masking``) in microsoft/Semi-supervised-learning.
    """
    _check_probs("aligned_probs", aligned_probs, None)
    _check_scalar("mu", mu)
    _check_scalar("var", var)
    if n_sigma <= 0:
        raise ValueError(f"n_sigma must be positive, got {n_sigma}.")
    aligned_probs, mu, var = jax.lax.stop_gradient(
        tuple(jnp.asarray(x, jnp.float32) for x in (aligned_probs, mu, var))
    )
    deficit = jnp.minimum(jnp.max(aligned_probs, axis=-1) - mu, 0.0)
    exponent = jnp.square(deficit) / (2.0 * var / n_sigma**2)
    # At or above the mean the weight is 1 by definition, even for var = 0 (0/0 otherwise).
    return jnp.where(deficit < 0, jnp.exp(-exponent), 1.0)


def softmatch_consistency(
    strong_logits: ArrayLike, weak_logits: ArrayLike, weights: ArrayLike
) -> jax.Array:
    r"""SoftMatch: weighted cross-entropy against the unaligned weak pseudo-labels.

    .. math::
      \ell_i = \mathrm{sg}(w_i) \cdot \mathrm{CE}(z^{strong}_i, \arg\max z^{weak}_i)

    The pseudo-label is the argmax of the weak logits themselves, not of the
    aligned probabilities: SoftMatch aligns for the weights only (USB's
    ``softmatch.py`` passes ``logits_x_ulb_w`` on purpose). Reduce with the
    mean over the whole unlabeled batch (``masked_mean(losses, where)``, not
    over the weights' sum), as the reference code does.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> weak = jnp.array([[3.0, 0.0], [0.0, 1.0]])
      >>> strong = jnp.zeros((2, 2))  # CE = log 2 against either label
      >>> losses.softmatch_consistency(strong, weak, jnp.array([1.0, 0.5])).round(4)
      Array([0.6931, 0.3466], dtype=float32)

    Args:
      strong_logits: logits of the strongly augmented view ``[batch, C]``.
      weak_logits: logits of the weakly augmented view, same shape.
      weights: ``[batch]`` from :func:`softmatch_weights`.

    Returns:
      Per-example losses ``[batch]`` (the caller reduces).

    References:
      Chen et al., `SoftMatch <https://arxiv.org/abs/2301.10921>`_, ICLR 2023.
      Code: ``semilearn/algorithms/softmatch/softmatch.py`` in
      microsoft/Semi-supervised-learning (USB).
    """
    _validation.check_rank("strong_logits", strong_logits, 2, "[batch, num_classes]")
    _validation.check_same_shape(("strong_logits", "weak_logits"), strong_logits, weak_logits)
    if jnp.shape(weights) != jnp.shape(strong_logits)[:1]:
        raise ValueError(
            f"weights must have shape {jnp.shape(strong_logits)[:1]} (one per example), "
            f"got {jnp.shape(weights)}."
        )
    pseudo_labels = jnp.argmax(jax.lax.stop_gradient(jnp.asarray(weak_logits)), axis=-1)
    weights = jax.lax.stop_gradient(jnp.asarray(weights, jnp.float32))
    return supervised_loss(strong_logits, pseudo_labels) * weights


# ---------------------------------------------------------------- AdaMatch


def adamatch_threshold(
    labeled_logits: ArrayLike,
    *,
    threshold: float = 0.95,
    labeled_where: ArrayLike | None = None,
    axis_name: str | None = None,
) -> jax.Array:
    r"""AdaMatch's relative confidence threshold.

    .. math::
      \tau_{rel} = \tau \cdot \frac{1}{B_l}\sum_j \max \mathrm{softmax}(\mathrm{sg}(z_j))

    over the global labeled batch: the threshold follows how confident the
    model is on data it is trained to fit, instead of being fixed. With no
    labeled example selected it falls back to ``tau``.

    The default ``tau = 0.95`` is USB's (``p_cutoff``); the AdaMatch paper and
    its code (google-research/adamatch, ``--confidence``) use 0.9.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> labeled = jnp.log(jnp.array([[0.8, 0.2], [0.6, 0.4]]))  # mean max 0.7
      >>> round(float(losses.adamatch_threshold(labeled)), 4)  # 0.95 * 0.7
      0.665

    Args:
      labeled_logits: logits of the (weak) labeled batch ``[batch_l, C]``.
      threshold: tau in ``[0, 1]``.
      labeled_where: optional boolean mask ``[batch_l]`` of the rows to count.
      axis_name: mapped axis to sum over, or None.

    Returns:
      A float32 scalar without gradient.

    References:
      Berthelot et al., `AdaMatch <https://arxiv.org/abs/2106.04732>`_, ICLR
      2022. Code: ``semilearn/algorithms/adamatch/adamatch.py`` (and
      ``utils.py``) in microsoft/Semi-supervised-learning (USB).
    """
    _validation.check_rank("labeled_logits", labeled_logits, 2, "[batch, num_classes]")
    _validation.check_where(labeled_where, jnp.shape(labeled_logits)[0])
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}.")
    labeled_logits = jax.lax.stop_gradient(jnp.asarray(labeled_logits, jnp.float32))
    confidence = jnp.max(jax.nn.softmax(labeled_logits), axis=-1)
    mean, count = _global_mean(confidence, labeled_where, axis_name)
    return jnp.where(count > 0, threshold * mean, threshold)


def adamatch_mask(
    aligned_probs: ArrayLike,
    labeled_logits: ArrayLike,
    *,
    threshold: float = 0.95,
    labeled_where: ArrayLike | None = None,
    axis_name: str | None = None,
) -> jax.Array:
    r"""AdaMatch's mask: aligned confidence at least the relative threshold.

    .. math::
      m_i = [\max \tilde p_i \ge \tau_{rel}]

    with ``tau_rel`` from :func:`adamatch_threshold` and ``tilde p`` the
    distribution-aligned weak probabilities (:func:`align_distribution`).

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> labeled = jnp.log(jnp.array([[0.8, 0.2], [0.6, 0.4]]))  # tau_rel = 0.665
      >>> losses.adamatch_mask(jnp.array([[0.7, 0.3], [0.4, 0.6]]), labeled)
      Array([1., 0.], dtype=float32)

    Args:
      aligned_probs: aligned unlabeled probabilities ``[batch, C]``.
      labeled_logits: logits of the labeled batch ``[batch_l, C]``.
      threshold: tau in ``[0, 1]``.
      labeled_where: optional boolean mask ``[batch_l]``.
      axis_name: mapped axis to sum over, or None.

    Returns:
      The float mask ``[batch]``; ``mean(mask)`` is the mask rate to log.

    References:
      Berthelot et al., `AdaMatch <https://arxiv.org/abs/2106.04732>`_, ICLR
      2022. Code: ``semilearn/algorithms/adamatch/utils.py`` in
      microsoft/Semi-supervised-learning (USB).
    """
    _check_probs("aligned_probs", aligned_probs, None)
    if jnp.shape(labeled_logits)[-1:] != jnp.shape(aligned_probs)[-1:]:
        raise ValueError(
            f"labeled_logits {jnp.shape(labeled_logits)} and aligned_probs "
            f"{jnp.shape(aligned_probs)} must have the same number of classes."
        )
    relative = adamatch_threshold(
        labeled_logits, threshold=threshold, labeled_where=labeled_where, axis_name=axis_name
    )
    aligned_probs = jax.lax.stop_gradient(jnp.asarray(aligned_probs, jnp.float32))
    return (jnp.max(aligned_probs, axis=-1) >= relative).astype(jnp.float32)


def adamatch_consistency(
    strong_logits: ArrayLike,
    aligned_probs: ArrayLike,
    labeled_logits: ArrayLike,
    *,
    threshold: float = 0.95,
    labeled_where: ArrayLike | None = None,
    axis_name: str | None = None,
) -> tuple[jax.Array, jax.Array]:
    r"""AdaMatch: cross-entropy against aligned pseudo-labels above the relative threshold.

    .. math::
      \ell_i = m_i \cdot \mathrm{CE}(z^{strong}_i, \arg\max \tilde p_i),\quad
      \tilde p_i = \mathrm{DA}(\mathrm{softmax}(\mathrm{sg}(z^{weak}_i))),\quad
      m_i = [\max \tilde p_i \ge \tau_{rel}]

    A step: ``state = distribution_alignment_update(state, softmax(z_weak),
    labeled_probs=softmax(z_labeled))`` (the ``labeled_ema`` target), then
    ``aligned = align_distribution(softmax(z_weak), state["p_model"],
    state["p_target"])``, then this. Reduce with the mean over the whole
    unlabeled batch, as the reference code does.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> labeled = jnp.log(jnp.array([[0.8, 0.2], [0.6, 0.4]]))  # tau_rel = 0.665
      >>> aligned = jnp.array([[0.3, 0.7], [0.6, 0.4]])
      >>> loss, mask = losses.adamatch_consistency(jnp.zeros((2, 2)), aligned, labeled)
      >>> loss.round(4), mask
      (Array([0.6931, 0.    ], dtype=float32), Array([1., 0.], dtype=float32))

    Args:
      strong_logits: logits of the strongly augmented view ``[batch, C]``.
      aligned_probs: aligned weak probabilities, same shape.
      labeled_logits: logits of the labeled batch ``[batch_l, C]``.
      threshold: tau in ``[0, 1]``; see :func:`adamatch_threshold`.
      labeled_where: optional boolean mask ``[batch_l]``.
      axis_name: mapped axis to sum over, or None.

    Returns:
      ``(losses, mask)``: per-example losses ``[batch]`` (0 where masked) and
      the float mask ``[batch]``.

    References:
      Berthelot et al., `AdaMatch <https://arxiv.org/abs/2106.04732>`_, ICLR
      2022. Code: ``semilearn/algorithms/adamatch/adamatch.py`` in
      microsoft/Semi-supervised-learning (USB).
    """
    _validation.check_rank("strong_logits", strong_logits, 2, "[batch, num_classes]")
    _validation.check_same_shape(("strong_logits", "aligned_probs"), strong_logits, aligned_probs)
    mask = adamatch_mask(
        aligned_probs,
        labeled_logits,
        threshold=threshold,
        labeled_where=labeled_where,
        axis_name=axis_name,
    )
    pseudo_labels = jnp.argmax(jax.lax.stop_gradient(jnp.asarray(aligned_probs)), axis=-1)
    return supervised_loss(strong_logits, pseudo_labels) * mask, mask


# ---------------------------------------------------------------- UDA


def uda_consistency(
    strong_logits: ArrayLike,
    weak_logits: ArrayLike,
    *,
    temperature: float = 0.4,
    threshold: float = 0.8,
) -> tuple[jax.Array, jax.Array]:
    r"""UDA: soft cross-entropy against the sharpened weak prediction, on confident examples.

    .. math::
      \ell_i = m_i \cdot \Big(-\sum_c q_{ic} \log \mathrm{softmax}(z^{strong}_i)_c\Big),\quad
      q_i = \mathrm{sg}(\mathrm{softmax}(z^{weak}_i / T)),\quad
      m_i = [\max \mathrm{softmax}(\mathrm{sg}(z^{weak}_i)) \ge \beta]

    ``softmax(z / T)`` is :func:`sharpen` of ``softmax(z)``: ``T < 1`` makes the
    target more confident. The mask uses the unsharpened confidence, as
    TorchSSL's ``models/uda/uda_utils.py`` and the paper's code do, so that
    sharpening does not let more examples in. Reduce with the mean over the
    whole unlabeled batch, as both codes do.

    Paper and codes differ; the defaults follow the paper and TorchSSL:

    - USB's ``uda.py`` builds the target with ``softmax=False`` from
      probabilities, so its ``T`` is silently unused (the target is the
      unsharpened ``softmax(z)``): ``temperature=1.0`` reproduces that.
    - The paper's code (google-research/uda, ``image/main.py``) uses the KL
      divergence instead of the soft cross-entropy: the same gradient, a
      value lower by the target's entropy; and a strict ``>`` in the mask
      where TorchSSL has ``>=``.
    - ``T = 0.4`` and ``beta = 0.8`` are TorchSSL's and USB's defaults
      (TorchSSL's ``config/uda/*.yaml``, USB's ``get_argument``).

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> weak = jnp.log(jnp.array([[0.9, 0.1], [0.5, 0.5]]))  # confidences 0.9, 0.5
      >>> loss, mask = losses.uda_consistency(jnp.zeros((2, 2)), weak)  # CE = log 2 for any target
      >>> loss.round(4), mask
      (Array([0.6931, 0.    ], dtype=float32), Array([1., 0.], dtype=float32))

    Args:
      strong_logits: logits of the strongly augmented view ``[batch, C]``.
      weak_logits: logits of the weakly augmented view, same shape.
      temperature: sharpening temperature T > 0.
      threshold: confidence beta in ``[0, 1]``.

    Returns:
      ``(losses, mask)``: per-example losses ``[batch]`` (0 where masked) and
      the float mask ``[batch]``.

    References:
      Xie et al., `Unsupervised Data Augmentation for Consistency Training
      <https://arxiv.org/abs/1904.12848>`_, NeurIPS 2020. Code:
      ``models/uda/uda.py`` and ``uda_utils.py`` in TorchSSL/TorchSSL;
      ``semilearn/algorithms/uda/uda.py`` in microsoft/Semi-supervised-learning.
    """
    _validation.check_rank("strong_logits", strong_logits, 2, "[batch, num_classes]")
    _validation.check_same_shape(("strong_logits", "weak_logits"), strong_logits, weak_logits)
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}.")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}.")
    weak_logits = jax.lax.stop_gradient(jnp.asarray(weak_logits, jnp.float32))
    mask = (jnp.max(jax.nn.softmax(weak_logits), axis=-1) >= threshold).astype(jnp.float32)
    targets = jax.nn.softmax(weak_logits / temperature)
    log_probs = jax.nn.log_softmax(jnp.asarray(strong_logits, jnp.float32))
    return -jnp.sum(targets * log_probs, axis=-1) * mask, mask


def tsa_threshold(step: ArrayLike, total_steps: int, num_classes: int, schedule: str) -> jax.Array:
    r"""UDA's training-signal annealing threshold ``eta_t``.

    .. math::
      \eta_t = \alpha_t \Big(1 - \frac{1}{K}\Big) + \frac{1}{K},\qquad
      \alpha_t = \begin{cases}
        t/T & \text{linear}\\
        \exp(5\,(t/T - 1)) & \text{exp}\\
        1 - \exp(-5\, t/T) & \text{log}
      \end{cases}

    ``eta`` rises from ``1/K`` to 1 over training: ``log`` releases the
    labeled signal early, ``exp`` late (for when the model overfits the few
    labels fast). ``none`` gives 1: nothing is masked (USB's default).
    ``t/T`` is not clipped, as in the codes; past ``total_steps``, ``linear``
    and ``exp`` exceed 1 and mask nothing.

    Examples:
      >>> from muscle_jax import losses
      >>> round(float(losses.tsa_threshold(50, 100, 10, "linear")), 4)  # 0.5 * 0.9 + 0.1
      0.55

    Args:
      step: the current step t (may be traced).
      total_steps: T, > 0.
      num_classes: K, >= 2.
      schedule: one of ``TSA_SCHEDULES``.

    Returns:
      A float32 scalar; pass it to :func:`tsa_mask`.

    References:
      Xie et al., `Unsupervised Data Augmentation for Consistency Training
      <https://arxiv.org/abs/1904.12848>`_, NeurIPS 2020. Code:
      ``models/uda/uda_utils.py`` (``TSA``) in TorchSSL/TorchSSL.
    """
    if schedule not in TSA_SCHEDULES:
        raise ValueError(f"Unknown TSA schedule {schedule!r}; choose one of {TSA_SCHEDULES}.")
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}.")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
    if schedule == "none":
        return jnp.ones((), jnp.float32)
    progress = jnp.asarray(step, jnp.float32) / total_steps
    if schedule == "linear":
        alpha = progress
    elif schedule == "exp":
        alpha = jnp.exp((progress - 1.0) * 5.0)
    else:
        alpha = 1.0 - jnp.exp(-progress * 5.0)
    return alpha * (1.0 - 1.0 / num_classes) + 1.0 / num_classes


def tsa_mask(
    labeled_logits: ArrayLike,
    labels: ArrayLike,
    threshold: ArrayLike,
    *,
    use_max_prob: bool = False,
) -> jax.Array:
    r"""UDA's TSA mask: drop the labeled examples the model already fits beyond ``eta_t``.

    .. math::
      m_j = [\, \mathrm{softmax}(\mathrm{sg}(z_j))_{y_j} \le \eta_t \,]

    Multiply the per-example supervised loss by it and reduce with
    :func:`tsa_reduce`. Examples the model gets wrong keep training however
    confident it is.

    The paper and its code (google-research/uda, ``image/main.py``,
    ``anneal_sup_loss``) test the correct class's probability (the
    default). TorchSSL and USB (semilearn 0.3.2, ``uda.py``) test the largest
    probability instead, which also drops confidently wrong examples:
    ``use_max_prob=True``. Their reductions differ too (:func:`tsa_reduce`).

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> logits = jnp.log(jnp.array([[0.6, 0.4], [0.3, 0.7]]))
      >>> losses.tsa_mask(logits, jnp.array([1, 1]), 0.55)  # p(label) = [0.4, 0.7]
      Array([1., 0.], dtype=float32)
      >>> losses.tsa_mask(logits, jnp.array([1, 1]), 0.55, use_max_prob=True)  # max = [0.6, 0.7]
      Array([0., 0.], dtype=float32)

    Args:
      labeled_logits: logits of the labeled batch ``[batch_l, C]``.
      labels: integer labels ``[batch_l]``.
      threshold: ``eta_t`` from :func:`tsa_threshold` (may be traced).
      use_max_prob: test the largest probability (TorchSSL, USB).

    Returns:
      The float mask ``[batch_l]`` without gradient; 1 keeps the example.

    References:
      Xie et al., `Unsupervised Data Augmentation for Consistency Training
      <https://arxiv.org/abs/1904.12848>`_, NeurIPS 2020. Code:
      ``models/uda/uda.py`` in TorchSSL/TorchSSL.
    """
    _validation.check_rank("labeled_logits", labeled_logits, 2, "[batch, num_classes]")
    if jnp.shape(labels) != jnp.shape(labeled_logits)[:1]:
        raise ValueError(
            f"labels must have shape {jnp.shape(labeled_logits)[:1]} (one integer per row of "
            f"labeled_logits {jnp.shape(labeled_logits)}), got {jnp.shape(labels)}."
        )
    _check_scalar("threshold", threshold)
    probs = jax.nn.softmax(jax.lax.stop_gradient(jnp.asarray(labeled_logits, jnp.float32)))
    if use_max_prob:
        tested = jnp.max(probs, axis=-1)
    else:
        tested = jnp.take_along_axis(probs, jnp.asarray(labels)[:, None], axis=-1)[:, 0]
    return (tested <= jnp.asarray(threshold, jnp.float32)).astype(jnp.float32)


def tsa_reduce(losses: ArrayLike, mask: ArrayLike, *, over_kept: bool) -> jax.Array:
    r"""The TSA-masked supervised loss: over the kept examples, or over the whole batch.

    .. math::
      L = \frac{\sum_j m_j \ell_j}{\max(\sum_j m_j, 1)}\ \text{(over\_kept)},\qquad
      L = \frac{1}{B_l}\sum_j m_j \ell_j\ \text{(otherwise)}

    The paper's code (google-research/uda, ``anneal_sup_loss``) averages over
    the kept examples (``over_kept=True``): the labeled signal keeps its
    scale while TSA drops most of the batch. TorchSSL and USB (semilearn
    0.3.2) divide by the batch size, so the supervised term shrinks with the
    share kept. A batch with nothing kept gives 0 either way.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> per_example = jnp.array([1.0, 3.0, 5.0, 7.0])
      >>> mask = jnp.array([1.0, 1.0, 0.0, 0.0])
      >>> float(losses.tsa_reduce(per_example, mask, over_kept=True))  # (1 + 3) / 2
      2.0
      >>> float(losses.tsa_reduce(per_example, mask, over_kept=False))  # (1 + 3) / 4
      1.0

    Args:
      losses: per-example supervised losses ``[batch_l]``.
      mask: :func:`tsa_mask`'s mask ``[batch_l]``.
      over_kept: divide by the number kept (the paper) instead of the batch
        size (TorchSSL, USB).

    Returns:
      A float32 scalar.

    References:
      Xie et al., `Unsupervised Data Augmentation for Consistency Training
      <https://arxiv.org/abs/1904.12848>`_, NeurIPS 2020. Code:
      ``image/main.py`` in google-research/uda; ``models/uda/uda.py`` in
      TorchSSL/TorchSSL.
    """
    _validation.check_rank("losses", losses, 1, "[batch]")
    if jnp.shape(mask) != jnp.shape(losses):
        raise ValueError(
            f"mask must have the shape of losses {jnp.shape(losses)}, got {jnp.shape(mask)}."
        )
    losses = jnp.asarray(losses, jnp.float32)
    mask = jax.lax.stop_gradient(jnp.asarray(mask, jnp.float32))
    # jnp.where, not a product, so that a non-finite loss of a dropped example stays out.
    total = jnp.sum(jnp.where(mask > 0, losses * mask, 0.0))
    if over_kept:
        return total / jnp.maximum(jnp.sum(mask), 1.0)
    return total / losses.shape[0]
