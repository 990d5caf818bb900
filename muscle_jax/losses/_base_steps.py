"""Each modern base method's consistency term for one batch: state in, loss and new state out.

The pieces (masks, thresholds, alignment, fairness) are the pure functions
of `_adaptive_thresholds` and `_alignment`, each tested on its own against
hand-computed values. Here they are put together in the order each
reference implementation runs them, once, for every caller: the trainer's
consistency terms (`muscle_jax.methods.adaptive`) and the public
:func:`muscle_jax.losses.muscle_loss` both call these functions, so the two
cannot drift apart.

Every function takes the two unlabeled views' logits (A weak, B strong),
the method's state (from its ``*_init``; UDA has none) and the method's
options, and returns ``(loss, metrics, new_state)``: the scalar consistency
loss (the mean over the whole unlabeled batch, as the reference code
reduces it), a dict of scalar diagnostics (``mask_rate`` for all), and the
state to carry to the next step. The batch statistics are of the arrays
passed in: under ``jax.jit`` over a mesh, of the global batch.

References, per function: FlexMatch (Zhang et al., NeurIPS 2021), FreeMatch
(Wang et al., ICLR 2023), SoftMatch (Chen et al., ICLR 2023), AdaMatch
(Berthelot et al., ICLR 2022), UDA (Xie et al., NeurIPS 2020), Dash (Xu et
al., ICML 2021); code: TorchSSL ``models/<name>/`` and USB
``semilearn/algorithms/<name>/``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from muscle_jax.losses import _adaptive_thresholds as thresholds
from muscle_jax.losses import _alignment as alignment
from muscle_jax.losses._supervised import supervised_loss

# Dash decays its threshold every 10 x 1024 of USB's 2^20 steps.
DASH_REFERENCE_DECAY_SHARE = 10 * 1024 / 2**20

State = dict[str, jax.Array]
Result = tuple[jax.Array, dict[str, jax.Array], State]


def _probs(logits: ArrayLike) -> jax.Array:
    return jax.nn.softmax(jax.lax.stop_gradient(jnp.asarray(logits, jnp.float32)))


def _masked_pseudo_label_loss(strong_logits, probs: jax.Array, mask: jax.Array) -> jax.Array:
    """Cross-entropy of the strong view to the weak view's argmax, masked, over the batch."""
    pseudo_labels = jnp.argmax(probs, axis=-1)
    return jnp.mean(supervised_loss(strong_logits, pseudo_labels) * mask)


def flexmatch_step(
    view_a_logits: ArrayLike,
    view_b_logits: ArrayLike,
    state: State,
    unlabeled_index: ArrayLike,
    *,
    threshold: float = 0.95,
    mapping: str = "convex",
    warmup: bool = True,
) -> Result:
    """FlexMatch: class-wise thresholds from the record BEFORE this batch, then the batch's writes.

    The order of TorchSSL's and USB's step: :func:`flexmatch_class_effect` of
    the pseudo-labels selected so far gives the flexible thresholds
    (:func:`flexmatch_mask`), then :func:`flexmatch_update` records this
    batch's confident pseudo-labels for the next step. The loss is the
    masked cross-entropy of view B to view A's argmax, averaged over the whole
    unlabeled batch.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> weak = jnp.array([[4.0, 0.0], [0.0, 0.1]])  # view A: confident, unsure
      >>> strong = jnp.zeros((2, 2))  # view B: CE = log 2 against either label
      >>> state = {"selected": losses.flexmatch_init(5)}  # a pool of 5 images
      >>> loss, metrics, state = losses.flexmatch_step(weak, strong, state, jnp.array([0, 3]))
      >>> round(float(loss), 4), float(metrics["mask_rate"])  # warm-up: every image passes
      (0.6931, 1.0)
      >>> state["selected"].tolist()  # image 0 recorded as class 0 (confidence 0.98 >= 0.95)
      [0, -1, -1, -1, -1]

    Args:
      view_a_logits: logits of the weakly augmented view (A) ``[batch_u, C]``;
        they make the pseudo-labels and get no gradient.
      view_b_logits: logits of the strongly augmented view (B) ``[batch_u, C]``;
        they receive the gradient.
      state: ``{"selected": [N]}``, ``selected`` from :func:`flexmatch_init`
        (``N`` the unlabeled pool's size) or the previous step.
      unlabeled_index: int ``[batch_u]``: each image's id in ``[0, N)``.
      threshold: the fixed confidence ``tau`` in ``[0, 1]``.
      mapping: one of ``FLEXMATCH_MAPPINGS``.
      warmup: FlexMatch's threshold warm-up (:func:`flexmatch_class_effect`).

    Returns:
      ``(loss, metrics, state)``: the float32 scalar loss; ``{"mask_rate":
      scalar}``, the fraction of the batch above its class's threshold; and
      ``{"selected": [N]}`` with this batch's confident pseudo-labels written,
      to pass to the next step.

    References:
      Zhang et al., `FlexMatch: Boosting Semi-Supervised Learning with
      Curriculum Pseudo Labeling <https://arxiv.org/abs/2110.08263>`_, NeurIPS
      2021. TorchSSL ``models/flexmatch/flexmatch.py``; USB
      ``semilearn/algorithms/flexmatch/flexmatch.py``.
    """
    probs = _probs(view_a_logits)
    beta = thresholds.flexmatch_class_effect(state["selected"], jnp.shape(probs)[-1], warmup=warmup)
    mask = thresholds.flexmatch_mask(probs, beta, threshold=threshold, mapping=mapping)
    selected = thresholds.flexmatch_update(
        state["selected"], unlabeled_index, probs, threshold=threshold
    )
    loss = _masked_pseudo_label_loss(view_b_logits, probs, mask)
    return loss, {"mask_rate": jnp.mean(mask)}, {"selected": selected}


def freematch_step(
    view_a_logits: ArrayLike,
    view_b_logits: ArrayLike,
    state: State,
    *,
    momentum: float = 0.999,
    fairness_weight: float = 0.01,
) -> Result:
    """FreeMatch: thresholds updated from this batch first, then the mask and the fairness term.

    The order of the reference code: :func:`freematch_update` moves the
    self-adaptive threshold and the class EMAs towards this batch, then
    :func:`freematch_mask` keeps the images above their class's threshold and
    :func:`freematch_fairness_loss` is taken over them. The loss is
    ``L_u + fairness_weight * L_f``, with ``L_u`` the masked cross-entropy of
    view B to view A's argmax averaged over the whole unlabeled batch;
    ``L_f`` (negative by design) is also reported as ``metrics["fairness"]``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> weak, strong = jnp.array([[4.0, 0.0], [0.0, 0.1]]), jnp.zeros((2, 2))
      >>> state = losses.freematch_init(2)  # tau = 1/C: every image passes at first
      >>> loss, metrics, state = losses.freematch_step(weak, strong, state)
      >>> loss.shape, sorted(metrics), float(metrics["mask_rate"])
      ((), ['fairness', 'mask_rate', 'threshold'], 1.0)
      >>> {name: state[name].shape for name in sorted(state)}  # carry it to the next step
      {'hist': (2,), 'p_tilde': (2,), 'tau': ()}

    Args:
      view_a_logits: logits of the weakly augmented view (A) ``[batch_u, C]``;
        they make the pseudo-labels and statistics and get no gradient.
      view_b_logits: logits of the strongly augmented view (B) ``[batch_u, C]``;
        they receive the gradient (of both terms).
      state: ``{"tau": [], "p_tilde": [C], "hist": [C]}`` from
        :func:`freematch_init` or the previous step.
      momentum: EMA momentum of the state, in ``[0, 1]``.
      fairness_weight: weight of ``L_f`` (USB's ``ent_loss_ratio``).

    Returns:
      ``(loss, metrics, state)``: the float32 scalar loss; ``{"mask_rate",
      "fairness", "threshold"}`` scalars (the fraction kept, ``L_f`` and the
      global ``tau``); and the updated state, to pass to the next step.

    References:
      Wang et al., `FreeMatch: Self-adaptive Thresholding for Semi-supervised
      Learning <https://arxiv.org/abs/2205.07246>`_, ICLR 2023. USB
      ``semilearn/algorithms/freematch/freematch.py``.
    """
    probs = _probs(view_a_logits)
    state = thresholds.freematch_update(state, probs, momentum=momentum)
    mask = thresholds.freematch_mask(probs, state)
    fairness = thresholds.freematch_fairness_loss(view_b_logits, mask, state)
    loss = _masked_pseudo_label_loss(view_b_logits, probs, mask) + fairness_weight * fairness
    metrics = {"mask_rate": jnp.mean(mask), "fairness": fairness, "threshold": state["tau"]}
    return loss, metrics, state


def softmatch_step(
    view_a_logits: ArrayLike,
    view_b_logits: ArrayLike,
    state: State,
    *,
    momentum: float = 0.999,
    n_sigma: float = 2.0,
    first_batch: bool = True,
) -> Result:
    """SoftMatch: uniform alignment and the Gaussian's statistics first, then the weights.

    :func:`softmatch_update` aligns view A's probabilities to the uniform
    distribution and moves the running mean and variance of their
    confidence; :func:`softmatch_weights` turns each confidence into a weight
    in ``(0, 1]``, and :func:`softmatch_consistency` weights the cross-entropy
    of view B to view A's (unaligned) argmax. The loss is the mean over the
    whole unlabeled batch.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> weak, strong = jnp.array([[4.0, 0.0], [0.0, 0.1]]), jnp.zeros((2, 2))
      >>> state = losses.softmatch_init(2)
      >>> loss, metrics, state = losses.softmatch_step(weak, strong, state)
      >>> round(float(loss), 4), sorted(state)  # early on every weight is ~1: log 2
      (0.6931, ['initialised', 'mu', 'p_hat', 'var'])

    Args:
      view_a_logits: logits of the weakly augmented view (A) ``[batch_u, C]``;
        they make the pseudo-labels and weights and get no gradient.
      view_b_logits: logits of the strongly augmented view (B) ``[batch_u, C]``;
        they receive the gradient.
      state: from :func:`softmatch_init` or the previous step.
      momentum: EMA momentum of the state, in ``[0, 1]``.
      n_sigma: the Gaussian's width divisor (:func:`softmatch_weights`).
      first_batch: ``p_hat`` starts at the first batch's mean (USB); False
        starts it at uniform.

    Returns:
      ``(loss, metrics, state)``: the float32 scalar loss; ``{"mask_rate":
      scalar}``, the mean weight (SoftMatch's soft mask); and the updated
      ``{"p_hat", "mu", "var", "initialised"}``, to pass to the next step.

    References:
      Chen et al., `SoftMatch: Addressing the Quantity-Quality Trade-off in
      Semi-supervised Learning <https://arxiv.org/abs/2301.10921>`_, ICLR 2023.
      USB ``semilearn/algorithms/softmatch/softmatch.py``.
    """
    probs = _probs(view_a_logits)
    state, aligned_probs = alignment.softmatch_update(
        state, probs, momentum=momentum, first_batch=first_batch
    )
    weights = alignment.softmatch_weights(aligned_probs, state["mu"], state["var"], n_sigma=n_sigma)
    per_example = alignment.softmatch_consistency(view_b_logits, view_a_logits, weights)
    return jnp.mean(per_example), {"mask_rate": jnp.mean(weights)}, state


def adamatch_step(
    view_a_logits: ArrayLike,
    view_b_logits: ArrayLike,
    labeled_logits: ArrayLike,
    state: State,
    *,
    threshold: float = 0.95,
    momentum: float = 0.999,
    labeled_ema_target: bool = True,
    first_batch: bool = True,
) -> Result:
    """AdaMatch: distribution alignment (updated first), then the relative threshold.

    :func:`distribution_alignment_update` moves ``p_model`` (and, with
    ``labeled_ema_target``, ``p_target``) towards this batch,
    :func:`align_distribution` reweights view A's probabilities, and
    :func:`adamatch_consistency` keeps the aligned pseudo-labels above the
    threshold relative to the labeled batch's confidence
    (:func:`adamatch_threshold`). The loss is the mean over the whole
    unlabeled batch.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> weak, strong = jnp.array([[4.0, 0.0], [0.0, 0.1]]), jnp.zeros((2, 2))
      >>> labeled = jnp.array([[3.0, 0.0], [0.0, 3.0]])  # confidence 0.95: tau_rel ~ 0.9
      >>> state = losses.distribution_alignment_init(2)
      >>> loss, metrics, state = losses.adamatch_step(weak, strong, labeled, state)
      >>> round(float(loss), 4), float(metrics["mask_rate"])  # only image 0 passes
      (0.3466, 0.5)

    Args:
      view_a_logits: logits of the weakly augmented view (A) ``[batch_u, C]``;
        they make the pseudo-labels and get no gradient.
      view_b_logits: logits of the strongly augmented view (B) ``[batch_u, C]``;
        they receive the gradient.
      labeled_logits: logits of the (weak) labeled batch ``[batch_l, C]``, for
        the relative threshold and the ``labeled_ema`` target; no gradient.
      state: ``{"p_model", "p_target", "initialised"}`` from
        :func:`distribution_alignment_init` or the previous step.
      threshold: ``tau`` in ``[0, 1]`` of the relative threshold.
      momentum: EMA momentum of the state, in ``[0, 1]``.
      labeled_ema_target: move ``p_target`` towards the labeled batch's mean
        prediction (AdaMatch's own target); False keeps the target the state
        was made with.
      first_batch: ``p_model`` starts at the first batch's mean (USB's
        ``DistAlignEMAHook``); False starts it at uniform.

    Returns:
      ``(loss, metrics, state)``: the float32 scalar loss; ``{"mask_rate":
      scalar}``; and the updated alignment state, to pass to the next step.

    References:
      Berthelot et al., `AdaMatch: A Unified Approach to Semi-Supervised
      Learning and Domain Adaptation <https://arxiv.org/abs/2106.04732>`_,
      ICLR 2022. USB ``semilearn/algorithms/adamatch/adamatch.py``.
    """
    probs = _probs(view_a_logits)
    labeled_probs = _probs(labeled_logits) if labeled_ema_target else None
    state = alignment.distribution_alignment_update(
        state, probs, momentum=momentum, labeled_probs=labeled_probs, first_batch=first_batch
    )
    aligned_probs = alignment.align_distribution(probs, state["p_model"], state["p_target"])
    per_example, mask = alignment.adamatch_consistency(
        view_b_logits, aligned_probs, labeled_logits, threshold=threshold
    )
    return jnp.mean(per_example), {"mask_rate": jnp.mean(mask)}, state


def uda_step(
    view_a_logits: ArrayLike,
    view_b_logits: ArrayLike,
    *,
    temperature: float = 0.4,
    threshold: float = 0.8,
) -> Result:
    """UDA: soft cross-entropy to the sharpened weak prediction on confident images (no state).

    :func:`uda_consistency` averaged over the whole unlabeled batch. UDA
    carries no state; it returns ``{}`` in its place so that every ``*_step``
    has the same shape.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> weak, strong = jnp.array([[4.0, 0.0], [0.0, 0.1]]), jnp.zeros((2, 2))
      >>> loss, metrics, state = losses.uda_step(weak, strong)
      >>> round(float(loss), 4), float(metrics["mask_rate"]), state
      (0.3466, 0.5, {})

    Args:
      view_a_logits: logits of the weakly augmented view (A) ``[batch_u, C]``;
        they make the soft targets and get no gradient.
      view_b_logits: logits of the strongly augmented view (B) ``[batch_u, C]``;
        they receive the gradient.
      temperature: sharpening temperature ``T > 0`` of the targets.
      threshold: confidence ``beta`` in ``[0, 1]`` an image needs.

    Returns:
      ``(loss, metrics, {})``: the float32 scalar loss and ``{"mask_rate":
      scalar}``.

    References:
      Xie et al., `Unsupervised Data Augmentation for Consistency Training
      <https://arxiv.org/abs/1904.12848>`_, NeurIPS 2020. TorchSSL
      ``models/uda/uda.py``; USB ``semilearn/algorithms/uda/uda.py``.
    """
    per_example, mask = alignment.uda_consistency(
        view_b_logits, view_a_logits, temperature=temperature, threshold=threshold
    )
    return jnp.mean(per_example), {"mask_rate": jnp.mean(mask)}, {}


def dash_init() -> State:
    """Dash's state: the starting threshold, set from the first batch's labeled loss.

    Examples:
      >>> from muscle_jax import losses
      >>> sorted(losses.dash_init())
      ['initialised', 'rho_init']

    Returns:
      ``{"rho_init": float32 scalar 0, "initialised": bool scalar False}``;
      :func:`dash_step` fills ``rho_init`` at the first step.

    References:
      Xu et al., `Dash: Semi-Supervised Learning with Dynamic Thresholding
      <https://arxiv.org/abs/2109.00650>`_, ICML 2021.
    """
    return {"rho_init": jnp.zeros((), jnp.float32), "initialised": jnp.zeros((), bool)}


def dash_steps_per_decay(total_steps: int, decay_every_steps: int = 0) -> int:
    """``decay_every_steps``, or the reference's share of a run (10 x 1024 of 2^20 steps).

    USB decays Dash's threshold every 10 x 1024 steps of a 2^20-step run; a
    shorter run keeps that share, so the threshold decays the same number of
    times over training.

    Examples:
      >>> from muscle_jax import losses
      >>> losses.dash_steps_per_decay(2**20), losses.dash_steps_per_decay(1000)
      (10240, 10)
      >>> losses.dash_steps_per_decay(1000, decay_every_steps=50)
      50

    Args:
      total_steps: the run's length in steps.
      decay_every_steps: an explicit interval; 0 takes the reference's share.

    Returns:
      The ``steps_per_decay`` of :func:`dash_step`, a positive int.

    References:
      Xu et al., `Dash: Semi-Supervised Learning with Dynamic Thresholding
      <https://arxiv.org/abs/2109.00650>`_, ICML 2021. USB
      ``semilearn/algorithms/dash/dash.py``.
    """
    if decay_every_steps:
        return int(decay_every_steps)
    return max(1, round(total_steps * DASH_REFERENCE_DECAY_SHARE))


def dash_step(
    view_a_logits: ArrayLike,
    view_b_logits: ArrayLike,
    labeled_logits: ArrayLike,
    labels: ArrayLike,
    state: State,
    *,
    step: ArrayLike,
    steps_per_decay: int,
    gamma: float = 1.27,
    rho_min: float = 0.05,
    temperature: float = 0.5,
) -> Result:
    """Dash: the loss threshold at ``step``, started from the labeled TRAINING batch's loss.

    USB takes the starting threshold from the test set after a warm-up, which
    leaks the test labels into training; here the first step's labeled batch
    sets it, once (:func:`dash_initial_threshold`), and the state keeps it.
    :func:`dash_threshold` decays it with ``step``; :func:`dash_targets` and
    :func:`dash_mask` keep the images whose loss against their own target is
    below it. The loss is the masked cross-entropy of view B to the targets,
    averaged over the whole unlabeled batch.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> weak, strong = jnp.array([[4.0, 0.0], [0.0, 0.1]]), jnp.zeros((2, 2))
      >>> labeled, labels = jnp.array([[3.0, 0.0], [0.0, 3.0]]), jnp.array([0, 1])
      >>> loss, metrics, state = losses.dash_step(
      ...     weak, strong, labeled, labels, losses.dash_init(), step=0, steps_per_decay=100)
      >>> round(float(loss), 4), float(metrics["mask_rate"]), bool(state["initialised"])
      (0.3466, 0.5, True)

    Args:
      view_a_logits: logits of the weakly augmented view (A) ``[batch_u, C]``;
        they make the targets and the mask and get no gradient.
      view_b_logits: logits of the strongly augmented view (B) ``[batch_u, C]``;
        they receive the gradient.
      labeled_logits: logits of the labeled batch ``[batch_l, C]``; the first
        step's set the starting threshold (no gradient).
      labels: ``[batch_l]`` integer labels or ``[batch_l, C]`` targets.
      state: from :func:`dash_init` or the previous step.
      step: the training step (may be traced), from the end of the warm-up.
      steps_per_decay: steps between two decays (:func:`dash_steps_per_decay`).
      gamma: the decay factor ``> 0``.
      rho_min: the threshold's floor; at it the targets become hard labels.
      temperature: ``T > 0`` of the soft targets.

    Returns:
      ``(loss, metrics, state)``: the float32 scalar loss; ``{"mask_rate",
      "threshold"}`` scalars (the fraction kept and this step's ``rho``); and
      ``{"rho_init", "initialised"}``, to pass to the next step.

    References:
      Xu et al., `Dash: Semi-Supervised Learning with Dynamic Thresholding
      <https://arxiv.org/abs/2109.00650>`_, ICML 2021. USB
      ``semilearn/algorithms/dash/dash.py``.
    """
    first = thresholds.dash_initial_threshold(labeled_logits, labels)
    rho_init = jnp.where(state["initialised"], state["rho_init"], first)
    rho = thresholds.dash_threshold(
        step, rho_init, rho_min=rho_min, gamma=gamma, steps_per_decay=steps_per_decay
    )
    targets = thresholds.dash_targets(view_a_logits, rho, temperature=temperature, rho_min=rho_min)
    mask = thresholds.dash_mask(view_a_logits, targets, rho)
    loss = jnp.mean(supervised_loss(view_b_logits, targets) * mask)
    new_state = {"rho_init": rho_init, "initialised": jnp.ones((), bool)}
    return loss, {"mask_rate": jnp.mean(mask), "threshold": rho}, new_state
