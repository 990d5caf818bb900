"""Adaptive confidence thresholds of FlexMatch, FreeMatch and Dash.

Each method replaces FixMatch's fixed confidence threshold with one that
follows the training. Their state is a handful of arrays: every function
takes it and returns the new one, nothing is held inside. Pseudo-labels and
state never carry a gradient.

The consistency term itself stays FixMatch's: per unlabeled image
``supervised_loss(strong_logits, targets) * mask``, averaged over the whole
unlabeled batch (:func:`masked_mean` with ``unlabeled_where``), not over the
images the mask keeps, as the reference code does.

Statistics over the batch are those of the global batch. Under `jax.jit`
with a sharded batch XLA reduces across devices; inside `shard_map` or `pmap`
pass ``axis_name``.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from muscle_jax.losses import _supervised, _validation
from muscle_jax.losses._mio import _replicate_batch

FLEXMATCH_MAPPINGS = ("convex", "linear")

# FreeMatch's floor inside the log of the fairness term (USB's value).
_LOG_EPS = 1e-12


def _check_unit_interval(name: str, value: ArrayLike) -> None:
    if isinstance(value, numbers.Real) and not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}.")


def _check_positive(name: str, value: ArrayLike) -> None:
    if isinstance(value, numbers.Real) and not value > 0:
        raise ValueError(f"{name} must be positive, got {value}.")


def _check_class_vector(name: str, x: ArrayLike, num_classes: int, against: str) -> None:
    if jnp.shape(x) != (num_classes,):
        raise ValueError(
            f"{name} must have shape ({num_classes},) to match {against}, got {jnp.shape(x)}."
        )


def _confidence(probs: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """``(max p, argmax p)`` of stop-gradient float32 probabilities."""
    probs = jax.lax.stop_gradient(jnp.asarray(probs, jnp.float32))
    return jnp.max(probs, axis=-1), jnp.argmax(probs, axis=-1).astype(jnp.int32)


def _normalise(x: jax.Array) -> jax.Array:
    total = jnp.sum(x)
    return x / jnp.where(total > 0, total, 1.0)


def _safe_ratio(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    """``numerator / denominator``, 0 where the denominator is 0 (USB's ``replace_inf_to_zero``)."""
    return jnp.where(denominator > 0, numerator / jnp.where(denominator > 0, denominator, 1.0), 0.0)


# ---------------------------------------------------------------- FlexMatch


def flexmatch_init(num_unlabeled: int) -> jax.Array:
    r"""FlexMatch's state: the pseudo-label selected for each unlabeled image, -1 for none yet.

    Examples:
      >>> from muscle_jax import losses
      >>> losses.flexmatch_init(3)
      Array([-1, -1, -1], dtype=int32)

    Args:
      num_unlabeled: ``N``, the number of images in the unlabeled set; the
        ids given to :func:`flexmatch_update` index this array.

    Returns:
      ``selected``: int32 ``[N]`` filled with -1.

    References:
      Zhang et al., `FlexMatch: Boosting Semi-Supervised Learning with
      Curriculum Pseudo Labeling <https://arxiv.org/abs/2110.08263>`_, NeurIPS
      2021. TorchSSL ``models/flexmatch/flexmatch.py`` (``selected_label``).
    """
    if not isinstance(num_unlabeled, numbers.Integral) or num_unlabeled < 1:
        raise ValueError(f"num_unlabeled must be a positive integer, got {num_unlabeled!r}.")
    return jnp.full((num_unlabeled,), -1, jnp.int32)


def flexmatch_class_effect(
    selected: ArrayLike, num_classes: int, *, warmup: bool = True
) -> jax.Array:
    r"""FlexMatch's learning effect of each class, from the pseudo-labels selected so far.

    .. math::
      \sigma_k = \sum_n [s_n = k],\qquad
      \beta_k = \frac{\sigma_k}{\max\big(\max_j \sigma_j,\ \sum_n [s_n = -1]\big)}
      \ \text{(warm-up)},\qquad
      \beta_k = \frac{\sigma_k}{\max_j \sigma_j}\ \text{(without)}

    A class that many images are confidently predicted as is well learned
    (``beta`` near 1) and gets a high threshold in :func:`flexmatch_mask`; a
    class few images reach gets a low one. With the warm-up, while most
    images are still unused (``s_n = -1``) their count is the normaliser, so
    every ``beta`` starts at 0 and rises as images are selected. 0/0 (no image
    selected, without warm-up) gives 0.

    At the start (every ``s_n = -1``) ``beta = 0``, so the threshold is 0 and
    every image passes: that is the intended warm-up, not a bug. TorchSSL and
    USB get the same zeros differently: they skip the update while a single
    value fills ``selected`` and keep their initial zeros. The one case where
    that differs from this function, every image selected as the same class,
    gives ``beta_k = 1`` for that class here where they keep the previous
    values.

    ``selected`` is state replicated on every device, not a batch, so no
    ``axis_name`` is needed.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> selected = jnp.array([-1, -1, -1, -1, -1, 0, 0, 1])  # 5 unused
      >>> losses.flexmatch_class_effect(selected, 3)  # [2, 1, 0] / max(2, 5)
      Array([0.4, 0.2, 0. ], dtype=float32)
      >>> losses.flexmatch_class_effect(selected, 3, warmup=False)  # [2, 1, 0] / 2
      Array([1. , 0.5, 0. ], dtype=float32)

    Args:
      selected: int ``[N]`` from :func:`flexmatch_init` / :func:`flexmatch_update`,
        entries in ``[-1, num_classes)``.
      num_classes: ``C``.
      warmup: normalise by the number of unused images too (TorchSSL's and
        USB's ``thresh_warmup``, on by default).

    Returns:
      ``beta``: float32 ``[C]`` in ``[0, 1]``.

    References:
      Zhang et al., `FlexMatch: Boosting Semi-Supervised Learning with
      Curriculum Pseudo Labeling <https://arxiv.org/abs/2110.08263>`_, NeurIPS
      2021. TorchSSL ``models/flexmatch/flexmatch.py`` (``classwise_acc``);
      USB ``semilearn/algorithms/flexmatch/utils.py``.
    """
    _validation.check_rank("selected", selected, 1, "[num_unlabeled]")
    if not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
    # Shifted by one so that the unused images (-1) get a slot of their own, slot 0.
    counts = jnp.bincount(jnp.asarray(selected, jnp.int32) + 1, length=num_classes + 1)
    counts = counts.astype(jnp.float32)
    unused, sigma = counts[0], counts[1:]
    normaliser = jnp.max(sigma)
    if warmup:
        normaliser = jnp.maximum(normaliser, unused)
    return _safe_ratio(sigma, normaliser)


def flexmatch_thresholds(
    beta: ArrayLike, *, threshold: float = 0.95, mapping: str = "convex"
) -> jax.Array:
    r"""FlexMatch's flexible threshold of each class, ``tau M(beta_k)``.

    .. math::
      \tau_k = \tau\, \mathcal{M}(\beta_k),\qquad
      \mathcal{M}(x) = \frac{x}{2 - x}\ \text{(convex)}\quad\text{or}\quad
      \mathcal{M}(x) = x\ \text{(linear)}

    The convex mapping (the paper's choice, and TorchSSL's and USB's code)
    keeps the thresholds low while ``beta`` is small and rises steeply as a
    class is learned. ``linear`` is the paper's ``M(x) = x``; the commented-out
    "linear" line of the reference code is ``(x + 1) / 2`` instead, which is
    not offered.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> beta = jnp.array([1.0, 0.5, 0.0])
      >>> losses.flexmatch_thresholds(beta, threshold=0.9)  # 0.9 * [1, 1/3, 0]
      Array([0.9, 0.3, 0. ], dtype=float32)

    Args:
      beta: ``[C]`` from :func:`flexmatch_class_effect`.
      threshold: ``tau`` in ``[0, 1]``.
      mapping: one of ``FLEXMATCH_MAPPINGS``.

    Returns:
      Float32 ``[C]`` thresholds in ``[0, tau]``.

    References:
      Zhang et al., `FlexMatch: Boosting Semi-Supervised Learning with
      Curriculum Pseudo Labeling <https://arxiv.org/abs/2110.08263>`_, NeurIPS
      2021. TorchSSL ``models/flexmatch/flexmatch_utils.py``; USB
      ``semilearn/algorithms/flexmatch/utils.py``.
    """
    _validation.check_rank("beta", beta, 1, "[num_classes]")
    _check_unit_interval("threshold", threshold)
    if mapping not in FLEXMATCH_MAPPINGS:
        raise ValueError(f"Unknown mapping {mapping!r}; choose one of {FLEXMATCH_MAPPINGS}.")
    beta = jax.lax.stop_gradient(jnp.asarray(beta, jnp.float32))
    mapped = beta / (2.0 - beta) if mapping == "convex" else beta
    return threshold * mapped


def flexmatch_mask(
    probs: ArrayLike,
    beta: ArrayLike,
    *,
    threshold: float = 0.95,
    mapping: str = "convex",
) -> jax.Array:
    r"""FlexMatch: keep the images whose confidence reaches their class's flexible threshold.

    .. math::
      m_i = \big[\, c_i \ge \tau\, \mathcal{M}(\beta_{\hat y_i}) \,\big],\quad
      c_i = \max_k p_{ik},\quad \hat y_i = \arg\max_k p_{ik},\quad
      p_i = \mathrm{sg}(\mathrm{softmax}(z^{weak}_i))

    ``beta`` is the one of the previous step (:func:`flexmatch_class_effect`
    before this step's :func:`flexmatch_update`), as in the reference code.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> probs = jnp.array([[0.9, 0.1], [0.4, 0.6]])
      >>> losses.flexmatch_mask(probs, jnp.array([1.0, 0.0]))  # thresholds [0.95, 0]
      Array([0., 1.], dtype=float32)

    Args:
      probs: weak-view probabilities ``[batch, C]``.
      beta: ``[C]`` from :func:`flexmatch_class_effect`.
      threshold: ``tau`` in ``[0, 1]``.
      mapping: one of ``FLEXMATCH_MAPPINGS``; ``convex`` by default.

    Returns:
      The float32 mask ``[batch]``; the pseudo-labels are ``argmax(probs)``.

    References:
      Zhang et al., `FlexMatch: Boosting Semi-Supervised Learning with
      Curriculum Pseudo Labeling <https://arxiv.org/abs/2110.08263>`_, NeurIPS
      2021. TorchSSL ``models/flexmatch/flexmatch_utils.py``; USB
      ``semilearn/algorithms/flexmatch/utils.py``.
    """
    _validation.check_rank("probs", probs, 2, "[batch, num_classes]")
    _check_class_vector("beta", beta, jnp.shape(probs)[-1], f"probs {jnp.shape(probs)}")
    thresholds = flexmatch_thresholds(beta, threshold=threshold, mapping=mapping)
    confidence, pseudo_labels = _confidence(probs)
    return (confidence >= thresholds[pseudo_labels]).astype(jnp.float32)


def flexmatch_update(
    selected: ArrayLike,
    ids: ArrayLike,
    probs: ArrayLike,
    *,
    threshold: float = 0.95,
    where: ArrayLike | None = None,
    axis_name: str | None = None,
) -> jax.Array:
    r"""FlexMatch: record the confident pseudo-labels of this batch.

    .. math::
      s_{\mathrm{id}_i} \leftarrow \hat y_i \quad \text{for every } i \text{ with } c_i \ge \tau

    with the FIXED ``tau``, not the flexible threshold of
    :func:`flexmatch_mask`: TorchSSL and USB select with ``max_probs >=
    p_cutoff`` (``select``) while masking with the flexible one, and this
    follows that code. Images below ``tau`` keep their previous entry.

    Under data parallelism every device holds a replica of ``selected``, and
    each must record the whole global batch so that the replicas stay
    identical. With ``axis_name`` the ids, pseudo-labels and flags are
    gathered over the axis before the scatter (TorchSSL and USB scatter each
    process's own batch into its own copy, which lets the copies drift apart
    under DDP). Under `jax.jit` with a sharded batch XLA gathers them itself.
    An id that appears twice is written by its last confident occurrence in
    global batch order, deterministically (a plain scatter leaves the winner
    unspecified).

    Ids outside ``[0, N)`` are dropped silently, as JAX drops out-of-range
    scatters; this is not checked inside jit. The caller must validate the
    ids (the trainer checks them against the unlabeled set when the run is
    built).

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> probs = jnp.array([[0.97, 0.03], [0.6, 0.4], [0.01, 0.99]])
      >>> losses.flexmatch_update(jnp.full(4, -1), jnp.array([2, 0, 3]), probs)
      Array([-1, -1,  0,  1], dtype=int32)

    Args:
      selected: int ``[N]`` from :func:`flexmatch_init` or the last update.
      ids: int ``[batch]``: each image's index into the unlabeled set.
      probs: weak-view probabilities ``[batch, C]``.
      threshold: the fixed ``tau`` in ``[0, 1]``.
      where: optional boolean mask ``[batch]`` of the real images; padding is
        never recorded.
      axis_name: mapped axis to gather over, or None.

    Returns:
      The updated int32 ``selected`` ``[N]``.

    References:
      Zhang et al., `FlexMatch: Boosting Semi-Supervised Learning with
      Curriculum Pseudo Labeling <https://arxiv.org/abs/2110.08263>`_, NeurIPS
      2021. TorchSSL ``models/flexmatch/flexmatch.py``; USB
      ``semilearn/algorithms/flexmatch/utils.py``.
    """
    _validation.check_rank("selected", selected, 1, "[num_unlabeled]")
    _validation.check_rank("ids", ids, 1, "[batch]")
    _validation.check_rank("probs", probs, 2, "[batch, num_classes]")
    _validation.check_batch(("ids", "probs"), ids, probs)
    _validation.check_where(where, jnp.shape(probs)[0])
    _check_unit_interval("threshold", threshold)
    if not jnp.issubdtype(jnp.result_type(ids), jnp.integer):
        raise ValueError(f"ids must be integers, got dtype {jnp.result_type(ids)}.")
    confidence, pseudo_labels = _confidence(probs)
    write = confidence >= threshold
    if where is not None:
        write = write & jnp.asarray(where, bool)
    ids = jnp.asarray(ids, jnp.int32)
    if axis_name is not None:
        # "invarying": the gathered batch is the same on every device, so the
        # updated replica is too (and may leave shard_map as P()).
        ids, pseudo_labels, write = jax.lax.all_gather(
            (ids, pseudo_labels, write), axis_name, tiled=True, to="invarying"
        )
    else:
        # With the batch sharded over an explicit mesh axis, the scatter into
        # the replicated array needs the whole batch on every device.
        ids, pseudo_labels, write = (_replicate_batch(x) for x in (ids, pseudo_labels, write))
    num_unlabeled = jnp.shape(selected)[0]
    positions = jnp.arange(jnp.shape(ids)[0], dtype=jnp.int32)
    # Unwritten images are sent out of range, where the scatter drops them;
    # so are negative ids, which would otherwise wrap around to the end.
    targets = jnp.where(write, ids, num_unlabeled)
    # max is order-independent: the last occurrence of a duplicated id wins on every device.
    latest = (
        jnp.full((num_unlabeled,), -1, jnp.int32)
        .at[targets]
        .max(positions, mode="drop", wrap_negative_indices=False)
    )
    new_labels = pseudo_labels[jnp.maximum(latest, 0)]
    return jnp.where(latest >= 0, new_labels, jnp.asarray(selected, jnp.int32))


# ---------------------------------------------------------------- FreeMatch


def _check_freematch_state(state: dict, num_classes: int | None, against: str) -> None:
    """Keys and shapes of a FreeMatch state; ``num_classes=None`` takes C from ``p_tilde``."""
    if not isinstance(state, dict) or set(state) != {"tau", "p_tilde", "hist"}:
        keys = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"state must be a dict with keys hist, p_tilde, tau, got {keys}.")
    if jnp.shape(state["tau"]) != ():
        raise ValueError(f"state['tau'] must be a scalar, got shape {jnp.shape(state['tau'])}.")
    if num_classes is None:
        _validation.check_rank("state['p_tilde']", state["p_tilde"], 1, "[num_classes]")
        num_classes = jnp.shape(state["p_tilde"])[0]
    _check_class_vector("state['p_tilde']", state["p_tilde"], num_classes, against)
    _check_class_vector("state['hist']", state["hist"], num_classes, against)


def freematch_init(num_classes: int, *, initial: float | None = None) -> dict[str, jax.Array]:
    r"""FreeMatch's state: the global threshold and the class-wise EMAs, all uniform.

    ``tau`` (the global self-adaptive threshold), ``p_tilde`` (the EMA of the
    mean prediction) and ``hist`` (the EMA of the histogram of pseudo-labels)
    all start at ``1/C`` by default, as in TorchSSL's code (which produced the
    paper's numbers) and USB's release (semilearn 0.3.2,
    ``freematch/utils.py``): ``tau = 1/C`` lets every image pass at first,
    since a confidence is never below ``1/C``. USB's code of early 2023
    (semilearn 0.3.0) started all three at 1 (``initial=1.0``), so that almost
    nothing passed until ``tau`` had decayed.

    Examples:
      >>> from muscle_jax import losses
      >>> state = losses.freematch_init(4)
      >>> state["tau"], state["p_tilde"]
      (Array(0.25, dtype=float32), Array([0.25, 0.25, 0.25, 0.25], dtype=float32))

    Args:
      num_classes: ``C``.
      initial: the starting value of all three; None for ``1/C``.

    Returns:
      ``{"tau": [], "p_tilde": [C], "hist": [C]}`` in float32.

    References:
      Wang et al., `FreeMatch: Self-adaptive Thresholding for Semi-supervised
      Learning <https://arxiv.org/abs/2205.07246>`_, ICLR 2023. TorchSSL
      ``models/freematch/freematch.py``; USB
      ``semilearn/algorithms/freematch/utils.py``.
    """
    if not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
    value = 1.0 / num_classes if initial is None else initial
    _check_positive("initial", value)
    return {
        "tau": jnp.asarray(value, jnp.float32),
        "p_tilde": jnp.full((num_classes,), value, jnp.float32),
        "hist": jnp.full((num_classes,), value, jnp.float32),
    }


def freematch_update(
    state: dict[str, ArrayLike],
    probs: ArrayLike,
    *,
    momentum: ArrayLike = 0.999,
    where: ArrayLike | None = None,
    axis_name: str | None = None,
) -> dict[str, jax.Array]:
    r"""FreeMatch: move the self-adaptive threshold and the class EMAs towards this batch.

    .. math::
      \tau \leftarrow m\tau + (1-m)\,\frac{1}{B}\sum_i c_i,\quad
      \tilde p \leftarrow m\tilde p + (1-m)\,\frac{1}{B}\sum_i p_i,\quad
      \tilde h \leftarrow m\tilde h + (1-m)\,\frac{1}{B}\sum_i \mathrm{onehot}(\hat y_i)

    over the whole unlabeled batch (every image, confident or not), BEFORE
    the mask of this step is taken, as in the reference code. ``tau`` follows
    the model's mean confidence, so the threshold rises as the model learns.

    The means are of the global batch: inside `shard_map` or `pmap` pass
    ``axis_name`` (USB gathers the batch from every process for this too).
    With no image selected by ``where`` the state is returned unchanged.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> probs = jnp.array([[0.9, 0.1], [0.7, 0.3]])  # mean confidence 0.8
      >>> new = losses.freematch_update(losses.freematch_init(2), probs, momentum=0.5)
      >>> new["tau"], new["hist"]  # 0.5 * 0.5 + 0.5 * 0.8; 0.5 * 0.5 + 0.5 * [1, 0]
      (Array(0.65, dtype=float32), Array([0.75, 0.25], dtype=float32))

    Args:
      state: from :func:`freematch_init` or the last update.
      probs: weak-view probabilities ``[batch, C]``.
      momentum: EMA momentum ``m`` in ``[0, 1]``; may be a traced scalar.
      where: optional boolean mask ``[batch]`` of the real images.
      axis_name: mapped axis to sum over, or None.

    Returns:
      The updated float32 ``{"tau", "p_tilde", "hist"}``, to pass to
      :func:`freematch_mask` and to the next update.

    References:
      Wang et al., `FreeMatch: Self-adaptive Thresholding for Semi-supervised
      Learning <https://arxiv.org/abs/2205.07246>`_, ICLR 2023. TorchSSL
      ``models/freematch/freematch.py`` (``cal_time_p_and_p_model``); USB
      ``semilearn/algorithms/freematch/utils.py``.
    """
    _validation.check_rank("probs", probs, 2, "[batch, num_classes]")
    batch, num_classes = jnp.shape(probs)
    _check_freematch_state(state, num_classes, f"probs {jnp.shape(probs)}")
    _validation.check_where(where, batch)
    _check_unit_interval("momentum", momentum)
    keep = jnp.ones((batch,), bool) if where is None else jnp.asarray(where, bool)
    # Selected rather than multiplied: padded probabilities may be non-finite.
    probs = jnp.where(keep[:, None], jax.lax.stop_gradient(jnp.asarray(probs, jnp.float32)), 0.0)
    confidence, pseudo_labels = _confidence(probs)
    sums = {
        "tau": jnp.sum(confidence),
        "p_tilde": jnp.sum(probs, axis=0),
        "hist": jnp.sum(
            jax.nn.one_hot(pseudo_labels, num_classes, dtype=jnp.float32) * keep[:, None], axis=0
        ),
    }
    count = jnp.sum(keep, dtype=jnp.float32)
    if axis_name is not None:
        sums, count = jax.lax.psum((sums, count), axis_name)
    state = jax.lax.stop_gradient({k: jnp.asarray(v, jnp.float32) for k, v in state.items()})
    return {
        key: jnp.where(
            count > 0,
            momentum * state[key] + (1.0 - momentum) * sums[key] / jnp.maximum(count, 1.0),
            state[key],
        )
        for key in state
    }


def freematch_thresholds(state: dict[str, ArrayLike]) -> jax.Array:
    r"""FreeMatch's self-adaptive threshold of each class.

    .. math::
      \tau_k = \tau \cdot \frac{\tilde p_k}{\max_j \tilde p_j}

    The global ``tau`` is scaled down for the classes the model predicts less
    (``MaxNorm`` of ``p_tilde``), so that they are not starved of pseudo-labels.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> state = {"tau": jnp.array(0.8), "p_tilde": jnp.array([0.5, 0.25]), "hist": jnp.ones(2)}
      >>> losses.freematch_thresholds(state)
      Array([0.8, 0.4], dtype=float32)

    Args:
      state: from :func:`freematch_update`.

    Returns:
      Float32 ``[C]`` thresholds in ``[0, tau]``.

    References:
      Wang et al., `FreeMatch: Self-adaptive Thresholding for Semi-supervised
      Learning <https://arxiv.org/abs/2205.07246>`_, ICLR 2023. TorchSSL
      ``models/freematch/freematch_utils.py``; USB
      ``semilearn/algorithms/freematch/utils.py``.
    """
    _check_freematch_state(state, None, "state['p_tilde']")
    tau = jax.lax.stop_gradient(jnp.asarray(state["tau"], jnp.float32))
    p_tilde = jax.lax.stop_gradient(jnp.asarray(state["p_tilde"], jnp.float32))
    return tau * p_tilde / jnp.max(p_tilde)


def freematch_mask(probs: ArrayLike, state: dict[str, ArrayLike]) -> jax.Array:
    r"""FreeMatch: keep the images whose confidence reaches their class's threshold.

    .. math::
      m_i = \Big[\, c_i \ge \tau\, \frac{\tilde p_{\hat y_i}}{\max_j \tilde p_j} \,\Big],\quad
      c_i = \max_k p_{ik},\quad \hat y_i = \arg\max_k p_{ik}

    with the state already updated with this batch (:func:`freematch_update`
    first, as the reference code does).

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> state = {"tau": jnp.array(0.8), "p_tilde": jnp.array([0.5, 0.25]), "hist": jnp.ones(2)}
      >>> losses.freematch_mask(jnp.array([[0.7, 0.3], [0.3, 0.7]]), state)  # thresholds [0.8, 0.4]
      Array([0., 1.], dtype=float32)

    Args:
      probs: weak-view probabilities ``[batch, C]``.
      state: from :func:`freematch_update`.

    Returns:
      The float32 mask ``[batch]``; the pseudo-labels are ``argmax(probs)``.

    References:
      Wang et al., `FreeMatch: Self-adaptive Thresholding for Semi-supervised
      Learning <https://arxiv.org/abs/2205.07246>`_, ICLR 2023. TorchSSL
      ``models/freematch/freematch_utils.py``; USB
      ``semilearn/algorithms/freematch/utils.py``.
    """
    _validation.check_rank("probs", probs, 2, "[batch, num_classes]")
    _check_freematch_state(state, jnp.shape(probs)[-1], f"probs {jnp.shape(probs)}")
    confidence, pseudo_labels = _confidence(probs)
    return (confidence >= freematch_thresholds(state)[pseudo_labels]).astype(jnp.float32)


def freematch_fairness_loss(
    strong_logits: ArrayLike,
    mask: ArrayLike,
    state: dict[str, ArrayLike],
    *,
    where: ArrayLike | None = None,
    axis_name: str | None = None,
) -> jax.Array:
    r"""FreeMatch's self-adaptive fairness term over the images the mask keeps.

    .. math::
      L_f = \sum_k a_k \log(b_k + 10^{-12}),\quad
      a = \mathrm{SumNorm}\Big(\frac{\tilde p}{\tilde h}\Big),\quad
      b = \mathrm{SumNorm}\Big(\frac{\bar q}{\bar h}\Big)

    where, over the kept images ``S = {i : m_i > 0}``, ``q_i =
    softmax(z^strong_i)``, ``q_bar = mean_S q_i`` and ``h_bar`` is the
    histogram of ``argmax q_i`` over ``S``; a division by a zero count gives
    0 (USB's ``replace_inf_to_zero``). ``a`` is state and carries no
    gradient; ``b`` carries the gradient to the strong logits through
    ``q_bar`` (the histograms are argmaxes and carry none).

    ``L_f`` is negative by design: it is ``-H(a, b)``, the paper's eq. 11 and
    the code's sign, and minimising it MAXIMISES the cross-entropy ``H(a,
    b)``, which pushes the strong view's mean prediction towards classes the
    model under-predicts, encouraging diverse (fair) predictions rather than
    matching ``a``. The authors confirm the sign is intended
    (microsoft/Semi-supervised-learning issue #182). Add it with a positive
    weight (USB's ``ent_loss_ratio``, 0.01).

    With no image kept the term is 0, as in USB (TorchSSL's
    ``freematch_entropy`` does not guard this case and returns NaN). The
    means and histograms are of the global kept set: inside `shard_map` or
    `pmap` pass ``axis_name`` (USB computes them per device). A weight mask
    rather than boolean indexing keeps the shapes static under jit.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> strong = jnp.log(jnp.array([[0.75, 0.25], [0.25, 0.75]]))
      >>> # One image per class, mean q = [1/2, 1/2]: a = b = [1/2, 1/2], L_f = log(1/2)
      >>> state = losses.freematch_init(2)
      >>> round(float(losses.freematch_fairness_loss(strong, jnp.ones(2), state)), 4)
      -0.6931
      >>> float(losses.freematch_fairness_loss(strong, jnp.zeros(2), state))
      0.0

    Args:
      strong_logits: logits of the strongly augmented view ``[batch, C]``;
        they receive the gradient.
      mask: ``[batch]`` from :func:`freematch_mask`.
      state: from :func:`freematch_update` (this step's).
      where: optional boolean mask ``[batch]`` of the real images.
      axis_name: mapped axis to sum over, or None.

    Returns:
      A float32 scalar, ``<= 0``.

    References:
      Wang et al., `FreeMatch: Self-adaptive Thresholding for Semi-supervised
      Learning <https://arxiv.org/abs/2205.07246>`_, ICLR 2023. USB
      ``semilearn/algorithms/freematch/freematch.py`` (``entropy_loss``);
      TorchSSL ``models/freematch_entropy/freematch_utils.py`` (TorchSSL's
      ``models/freematch`` has no fairness term).
    """
    _validation.check_rank("strong_logits", strong_logits, 2, "[batch, num_classes]")
    batch, num_classes = jnp.shape(strong_logits)
    if jnp.shape(mask) != (batch,):
        raise ValueError(
            f"mask must have shape ({batch},) to match strong_logits "
            f"{jnp.shape(strong_logits)}, got {jnp.shape(mask)}."
        )
    _check_freematch_state(state, num_classes, f"strong_logits {jnp.shape(strong_logits)}")
    _validation.check_where(where, batch)
    kept = jax.lax.stop_gradient(jnp.asarray(mask, jnp.float32)) > 0
    if where is not None:
        kept = kept & jnp.asarray(where, bool)
    # Selected before the softmax: a padded row's gradient is then exactly 0
    # even when its logits are not finite.
    logits = jnp.where(kept[:, None], jnp.asarray(strong_logits, jnp.float32), 0.0)
    q = jnp.where(kept[:, None], jax.nn.softmax(logits), 0.0)
    predicted = jax.nn.one_hot(jnp.argmax(q, axis=-1), num_classes, dtype=jnp.float32)
    sums = {
        "q": jnp.sum(q, axis=0),
        "hist": jnp.sum(predicted * kept[:, None], axis=0),
        "count": jnp.sum(kept, dtype=jnp.float32),
    }
    if axis_name is not None:
        sums = jax.lax.psum(sums, axis_name)
    # USB divides by histograms normalised to sum 1; SumNorm cancels that scale.
    mean_q = sums["q"] / jnp.maximum(sums["count"], 1.0)
    b = _normalise(_safe_ratio(mean_q, sums["hist"]))
    p_tilde = jax.lax.stop_gradient(jnp.asarray(state["p_tilde"], jnp.float32))
    hist = jax.lax.stop_gradient(jnp.asarray(state["hist"], jnp.float32))
    a = _normalise(_safe_ratio(p_tilde, hist))
    loss = jnp.sum(a * jnp.log(b + _LOG_EPS))
    return jnp.where(sums["count"] > 0, loss, 0.0)


# ---------------------------------------------------------------- Dash


def dash_initial_threshold(
    labeled_logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    axis_name: str | None = None,
) -> jax.Array:
    r"""Dash's starting threshold: the mean cross-entropy of the labeled training batch.

    .. math::
      \hat\rho = \frac{1}{B_l} \sum_i \mathrm{CE}(z_i, y_i)

    USB's code sets ``rho_init`` to the loss on the evaluation (test) set
    after its supervised warm-up (``self.evaluate()['eval/loss']``), which
    lets the test set steer training. This takes it from labeled TRAINING
    images instead: call it on the labeled batch at the end of the warm-up,
    or average it over several batches.

    The mean is of the global batch: inside `shard_map` or `pmap` pass
    ``axis_name``. With no example selected by ``where`` the result is 0,
    which :func:`dash_threshold` lifts to its floor ``rho_min``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> logits = jnp.array([[0.0, 0.0], [0.0, 0.0]])
      >>> round(float(losses.dash_initial_threshold(logits, jnp.array([0, 1]))), 4)  # log 2
      0.6931

    Args:
      labeled_logits: ``[batch_l, C]`` logits of the labeled images.
      labels: ``[batch_l]`` integer labels or ``[batch_l, C]`` soft targets.
      where: optional boolean mask ``[batch_l]`` of the real images.
      axis_name: mapped axis to sum over, or None.

    Returns:
      A float32 scalar with no gradient.

    References:
      Xu et al., `Dash: Semi-Supervised Learning with Dynamic Thresholding
      <https://arxiv.org/abs/2109.00650>`_, ICML 2021. USB
      ``semilearn/algorithms/dash/dash.py`` (``warmup``).
    """
    losses = _supervised.supervised_loss(labeled_logits, labels, where=where)
    total = jnp.sum(losses)
    batch = jnp.shape(losses)[0]
    count = jnp.asarray(batch, jnp.float32) if where is None else jnp.sum(where, dtype=jnp.float32)
    if axis_name is not None:
        total, count = jax.lax.psum((total, count), axis_name)
    return jax.lax.stop_gradient(total / jnp.maximum(count, 1.0))


def dash_threshold(
    step: ArrayLike,
    rho_init: ArrayLike,
    *,
    c0: float = 1.0001,
    gamma: float = 1.27,
    rho_min: float = 0.05,
    steps_per_decay: int = 10240,
) -> jax.Array:
    r"""Dash's dynamic threshold on the loss of a pseudo-labeled image.

    .. math::
      \rho_t = \max\big(C_0\, \gamma^{-k} \hat\rho,\ \rho_{min}\big),\quad
      k = \lfloor t / \text{steps\_per\_decay} \rfloor

    The threshold starts just above ``rho_init`` and is divided by ``gamma``
    every ``steps_per_decay`` steps, so fewer, better pseudo-labels are kept
    as training goes on, down to the floor ``rho_min``. USB recomputes it
    every 10 "epochs" of ``num_iter_per_epoch`` = 1024 steps (TorchSSL's Dash:
    ``it % (10 * 1024)``), hence the default 10240; ``step`` counts from the
    end of the supervised warm-up, where USB resets its step counter.

    Examples:
      >>> from muscle_jax import losses
      >>> [round(float(losses.dash_threshold(t, 1.0, c0=1.0, gamma=2.0, steps_per_decay=10)), 4)
      ...  for t in (0, 9, 10, 25, 1000)]
      [1.0, 1.0, 0.5, 0.25, 0.05]

    Args:
      step: the training step (may be traced), from the end of the warm-up.
      rho_init: ``rho_hat`` from :func:`dash_initial_threshold`.
      c0: ``C``, the constant slightly above 1.
      gamma: the decay factor ``> 0`` (``> 1`` to decrease).
      rho_min: the floor, ``>= 0``.
      steps_per_decay: steps between two decays, a positive integer.

    Returns:
      A float32 scalar ``>= rho_min`` with no gradient.

    References:
      Xu et al., `Dash: Semi-Supervised Learning with Dynamic Thresholding
      <https://arxiv.org/abs/2109.00650>`_, ICML 2021. USB
      ``semilearn/algorithms/dash/utils.py`` (``DashThresholdingHook``).
    """
    _validation.check_rank("step", step, 0, "a scalar")
    _validation.check_rank("rho_init", rho_init, 0, "a scalar")
    _check_positive("c0", c0)
    _check_positive("gamma", gamma)
    if isinstance(rho_min, numbers.Real) and not rho_min >= 0:
        raise ValueError(f"rho_min must be non-negative, got {rho_min}.")
    if not isinstance(steps_per_decay, numbers.Integral) or steps_per_decay < 1:
        raise ValueError(f"steps_per_decay must be a positive integer, got {steps_per_decay!r}.")
    decays = (jnp.asarray(step, jnp.int32) // steps_per_decay).astype(jnp.float32)
    rho_init = jax.lax.stop_gradient(jnp.asarray(rho_init, jnp.float32))
    rho = c0 * jnp.power(jnp.asarray(gamma, jnp.float32), -decays) * rho_init
    return jax.lax.stop_gradient(jnp.maximum(rho, jnp.asarray(rho_min, jnp.float32)))


def dash_targets(
    weak_logits: ArrayLike,
    rho: ArrayLike,
    *,
    temperature: float = 0.5,
    rho_min: float = 0.05,
) -> jax.Array:
    r"""Dash's pseudo-label targets: sharpened soft labels, hard ones once ``rho`` hits its floor.

    .. math::
      q_i = \begin{cases}
        \mathrm{sg}(\mathrm{softmax}(z^{weak}_i / T)) & \rho > \rho_{min} \\
        \mathrm{onehot}(\arg\max z^{weak}_i) & \rho \le \rho_{min}
      \end{cases}

    USB switches to hard labels when ``rho == rho_min``, i.e. once
    :func:`dash_threshold` is clipped to its floor; ``<=`` is the same for
    any threshold from :func:`dash_threshold` and also covers a ``rho_init``
    below the floor. ``rho`` may be traced; both targets are computed and one
    is selected.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> weak = jnp.log(jnp.array([[2.0, 1.0]]))  # softmax [2/3, 1/3]; with T = 1/2 [4/5, 1/5]
      >>> losses.dash_targets(weak, 1.0), losses.dash_targets(weak, 0.05)
      (Array([[0.8, 0.2]], dtype=float32), Array([[1., 0.]], dtype=float32))

    Args:
      weak_logits: logits of the weakly augmented view ``[batch, C]``.
      rho: this step's threshold from :func:`dash_threshold`.
      temperature: ``T > 0`` of the soft targets.
      rho_min: the floor given to :func:`dash_threshold`.

    Returns:
      Float32 targets ``[batch, C]`` with no gradient, for both the mask
      (:func:`dash_mask`) and the consistency term
      (``supervised_loss(strong_logits, targets)``).

    References:
      Xu et al., `Dash: Semi-Supervised Learning with Dynamic Thresholding
      <https://arxiv.org/abs/2109.00650>`_, ICML 2021. USB
      ``semilearn/algorithms/dash/utils.py``.
    """
    _validation.check_rank("weak_logits", weak_logits, 2, "[batch, num_classes]")
    _validation.check_rank("rho", rho, 0, "a scalar")
    _check_positive("temperature", temperature)
    logits = jax.lax.stop_gradient(jnp.asarray(weak_logits, jnp.float32))
    soft = jax.nn.softmax(logits / temperature)
    hard = jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=jnp.float32)
    return jnp.where(jnp.asarray(rho, jnp.float32) <= rho_min, hard, soft)


def dash_mask(weak_logits: ArrayLike, targets: ArrayLike, rho: ArrayLike) -> jax.Array:
    r"""Dash: keep the images whose loss against their own pseudo-label is at most ``rho``.

    .. math::
      m_i = \Big[\, -\sum_k q_{ik} \log \mathrm{softmax}(z^{weak}_i)_k \le \rho \,\Big]

    with ``q`` from :func:`dash_targets`. A small loss means the weak view
    already agrees with its target; as ``rho`` decays, only those images that
    agree ever more closely are kept.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> weak = jnp.array([[0.0, 0.0], [10.0, 0.0]])
      >>> losses.dash_mask(weak, jnp.eye(2)[jnp.array([0, 0])], 0.5)  # losses [log 2, ~4.5e-5]
      Array([0., 1.], dtype=float32)

    Args:
      weak_logits: logits of the weakly augmented view ``[batch, C]``.
      targets: ``[batch, C]`` from :func:`dash_targets`.
      rho: this step's threshold from :func:`dash_threshold`.

    Returns:
      The float32 mask ``[batch]``.

    References:
      Xu et al., `Dash: Semi-Supervised Learning with Dynamic Thresholding
      <https://arxiv.org/abs/2109.00650>`_, ICML 2021. USB
      ``semilearn/algorithms/dash/utils.py``.
    """
    _validation.check_rank("weak_logits", weak_logits, 2, "[batch, num_classes]")
    _validation.check_same_shape(("weak_logits", "targets"), weak_logits, targets)
    _validation.check_rank("rho", rho, 0, "a scalar")
    logits = jax.lax.stop_gradient(jnp.asarray(weak_logits, jnp.float32))
    targets = jax.lax.stop_gradient(jnp.asarray(targets, jnp.float32))
    losses = -jnp.sum(targets * jax.nn.log_softmax(logits), axis=-1)
    rho = jax.lax.stop_gradient(jnp.asarray(rho, jnp.float32))
    return (losses <= rho).astype(jnp.float32)
