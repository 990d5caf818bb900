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

    ``state`` is ``{"selected": flexmatch_init(pool size)}``; ``unlabeled_index``
    ``[batch]`` the images' ids in ``[0, pool size)``.
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

    The loss is ``L_u + fairness_weight * L_f``; ``L_f`` (negative by design)
    is also reported as ``metrics["fairness"]``.
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

    ``metrics["mask_rate"]`` is the mean weight: SoftMatch's soft mask.
    ``first_batch``: ``p_hat`` starts at the first batch's mean (USB); False
    starts it at uniform.
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

    ``state`` from ``distribution_alignment_init``; ``labeled_ema_target``
    moves its target towards the labeled batch's mean prediction (AdaMatch's
    own target); False keeps the target the state was made with.
    ``first_batch``: ``p_model`` starts at the first batch's mean (USB's
    ``DistAlignEMAHook``); False starts it at uniform.
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
    """UDA: soft cross-entropy to the sharpened weak prediction on confident images (no state)."""
    per_example, mask = alignment.uda_consistency(
        view_b_logits, view_a_logits, temperature=temperature, threshold=threshold
    )
    return jnp.mean(per_example), {"mask_rate": jnp.mean(mask)}, {}


def dash_init() -> State:
    """Dash's state: the starting threshold, set from the first batch's labeled loss."""
    return {"rho_init": jnp.zeros((), jnp.float32), "initialised": jnp.zeros((), bool)}


def dash_steps_per_decay(total_steps: int, decay_every_steps: int = 0) -> int:
    """``decay_every_steps``, or the reference's share of a run (10 x 1024 of 2^20 steps)."""
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
    sets it, once, and the state keeps it.
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
