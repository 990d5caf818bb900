"""The MUSCLE objective: supervised + consistency + mutual information."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from muscle_jax.losses import (
    _base_steps,
    _consistency,
    _mutual_information,
    _supervised,
    _validation,
)

# The modern bases: each carries a state from step to step (UDA's is empty).
STATEFUL_CONSISTENCY_KINDS = ("flexmatch", "freematch", "softmatch", "adamatch", "uda", "dash")
CONSISTENCY_KINDS = (
    "fixmatch",
    "mse",
    "mean_teacher",
    "mixmatch",
    "none",
    *STATEFUL_CONSISTENCY_KINDS,
)


def masked_mean(
    values: jax.Array, where: ArrayLike | None = None, *, axis_name: str | None = None
) -> jax.Array:
    """Mean of ``values`` over the examples selected by ``where`` (0 if none are).

    The reduction for the per-example terms (:func:`supervised_loss`,
    :func:`fixmatch_consistency`, ...): padding rows of a batch are left out
    of both the sum and the count. With ``axis_name`` the sums are taken
    across that mapped axis, so the result is the global mean inside
    ``shard_map`` or ``pmap``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> values = jnp.array([1.0, 2.0, 3.0])
      >>> float(losses.masked_mean(values)), float(losses.masked_mean(values, values < 3))
      (2.0, 1.5)

    Args:
      values: per-example values ``[batch]``.
      where: optional mask ``[batch]`` (bool or 0/1) of the examples to count.
      axis_name: mapped axis to sum over, or None under global-view `jax.jit`.

    Returns:
      A scalar of ``values``' dtype.
    """
    weights = jnp.ones_like(values) if where is None else jnp.asarray(where, values.dtype)
    total, count = jnp.sum(values * weights), jnp.sum(weights)
    if axis_name is not None:
        total, count = jax.lax.psum((total, count), axis_name)
    return total / jnp.maximum(count, 1.0)


def muscle_loss(
    labeled_logits: ArrayLike,
    labels: ArrayLike,
    view_a_logits: ArrayLike,
    view_b_logits: ArrayLike,
    *,
    consistency: str = "fixmatch",
    supervised_weight: ArrayLike = 1.0,
    consistency_weight: ArrayLike = 1.0,
    mutual_information_weight: ArrayLike = 1.0,
    threshold: float = 0.95,
    lamb: float = 1.0,
    label_smoothing: float = 0.0,
    consistency_targets: ArrayLike | None = None,
    student_logits: ArrayLike | None = None,
    mi_probs: tuple[ArrayLike, ArrayLike] | None = None,
    labeled_where: ArrayLike | None = None,
    unlabeled_where: ArrayLike | None = None,
    axis_name: str | None = None,
    consistency_state: dict | None = None,
    consistency_options: dict | None = None,
    unlabeled_index: ArrayLike | None = None,
    step: ArrayLike = 0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    r"""MUSCLE loss: ``L = w_s L_sup + w_c L_cons - w_mi I(view a; view b)``.

    Two views of the same unlabeled images feed the consistency term and the
    mutual information. View A is the weak view (the pseudo-label or target
    side), view B the strong or second view (the student side).

    Consistency kinds (``CONSISTENCY_KINDS``):

    - ``fixmatch``: :func:`fixmatch_consistency` of B against A's confident
      pseudo-labels; ``aux["mask_rate"]`` is the fraction above threshold.
    - ``mse``: Pi-model, :func:`mse_consistency` of softmax(B) to sg softmax(A).
    - ``mean_teacher``: softmax(B) to ``consistency_targets``, the EMA
      teacher's probabilities on view A (required).
    - ``mixmatch``: softmax(``student_logits``) (logits of the mixed
      unlabeled inputs; defaults to B) to ``consistency_targets``, the mixed
      sharpened guesses (required). ``labels`` are then the mixed soft
      targets of the labeled part.
    - ``none``: MUSCLE without a consistency term.
    - the modern bases ``flexmatch``, ``freematch``, ``softmatch``,
      ``adamatch``, ``uda``, ``dash`` (``STATEFUL_CONSISTENCY_KINDS``): the
      ``*_step`` function of the same name (the one the trainer's terms
      call), given ``consistency_state`` (from its ``*_init``; ``{}`` for
      UDA) and its keyword options as ``consistency_options`` (e.g.
      ``{"threshold": 0.95}`` for FlexMatch; Dash needs
      ``steps_per_decay``). FlexMatch also takes ``unlabeled_index``, Dash
      ``step``. ``aux["consistency_state"]`` is the state for the next step
      and ``aux`` carries the method's diagnostics (``mask_rate``, ...).
      Their batch statistics are of the arrays passed in, so they take no
      ``unlabeled_where`` or ``axis_name``: call them on the global batch
      under ``jax.jit``.

    The weights may be traced scalars (ramped up with :func:`term_weight`).
    All per-example terms are averaged over the examples their mask selects.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from muscle_jax import losses
      >>> logits = jax.random.normal(jax.random.key(0), (8, 4))
      >>> total, aux = losses.muscle_loss(
      ...     logits[:2], jnp.array([0, 1]), logits, logits[::-1], consistency="mse")
      >>> sorted(aux)
      ['consistency', 'mutual_information', 'supervised', 'total']

    Args:
      labeled_logits: ``[batch_l, C]`` logits of the labeled examples.
      labels: ``[batch_l]`` integer labels or ``[batch_l, C]`` soft targets.
      view_a_logits: ``[batch_u, C]`` logits of unlabeled view A (weak): the
        pseudo-label or target side.
      view_b_logits: ``[batch_u, C]`` logits of unlabeled view B (strong, or
        the second view): the student side.
      consistency: one of ``CONSISTENCY_KINDS``.
      supervised_weight: weight of the supervised term.
      consistency_weight: weight of the consistency term.
      mutual_information_weight: weight of the MI term.
      threshold: FixMatch confidence threshold.
      lamb: IIC's lambda for the MI term.
      label_smoothing: for the supervised term.
      consistency_targets: target probabilities for ``mean_teacher`` and
        ``mixmatch``.
      student_logits: ``mixmatch`` only: logits of the mixed unlabeled inputs.
      mi_probs: optional ``(probs_a, probs_b)`` to use for the MI term instead
        of the softmax of the two unlabeled views, e.g. with the labeled views
        appended (``loss.iic.on_labeled``) or unmixed MixMatch views.
      labeled_where: optional ``[batch_l]`` mask of real labeled examples.
      unlabeled_where: optional ``[batch_u]`` mask of real unlabeled examples;
        masked rows are left out of the consistency and MI terms.
      axis_name: mapped axis for use inside ``shard_map``/``pmap``; None under
        global-view ``jax.jit``.
      consistency_state: a modern base's state (see the kinds above).
      consistency_options: a modern base's keyword options.
      unlabeled_index: ``[batch_u]`` the unlabeled images' ids (FlexMatch).
      step: the training step (Dash's threshold schedule).

    Returns:
      ``(total, aux)``: the float32 scalar loss (every term already reduced
      over its batch) and a dict of scalars with keys
      ``supervised``, ``consistency``, ``mutual_information`` (MI in nats, the
      positive quantity), ``total``, ``mask_rate`` for ``fixmatch``, and for
      a modern base its diagnostics and ``consistency_state``.

    References:
      Xie et al., `MUSCLE <https://arxiv.org/abs/2012.00150>`_, 2021.
    """
    if consistency not in CONSISTENCY_KINDS:
        raise ValueError(f"Unknown consistency {consistency!r}; choose one of {CONSISTENCY_KINDS}.")
    _validation.check_rank("labeled_logits", labeled_logits, 2, "[batch, num_classes]")
    _validation.check_rank("view_a_logits", view_a_logits, 2, "[batch, num_classes]")
    _validation.check_same_shape(("view_a_logits", "view_b_logits"), view_a_logits, view_b_logits)
    if jnp.shape(labeled_logits)[-1] != jnp.shape(view_a_logits)[-1]:
        raise ValueError(
            f"labeled_logits {jnp.shape(labeled_logits)} and view_a_logits "
            f"{jnp.shape(view_a_logits)} must have the same number of classes."
        )
    _validation.check_where(unlabeled_where, jnp.shape(view_a_logits)[0])
    if consistency in ("mean_teacher", "mixmatch") and consistency_targets is None:
        raise ValueError(f"consistency={consistency!r} needs consistency_targets.")
    if consistency in STATEFUL_CONSISTENCY_KINDS:
        if consistency_state is None:
            raise ValueError(
                f"consistency={consistency!r} needs consistency_state (from "
                f"losses.{consistency}_init, or {{}} for uda)."
            )
        if unlabeled_where is not None or axis_name is not None:
            raise ValueError(
                f"consistency={consistency!r} takes its batch statistics over the arrays "
                "passed in: call it under jax.jit on the global batch, without "
                "unlabeled_where or axis_name."
            )
        if consistency == "flexmatch" and unlabeled_index is None:
            raise ValueError("consistency='flexmatch' needs unlabeled_index.")

    aux = {}
    supervised = masked_mean(
        _supervised.supervised_loss(
            labeled_logits, labels, label_smoothing=label_smoothing, where=labeled_where
        ),
        labeled_where,
        axis_name=axis_name,
    )
    aux["supervised"] = supervised

    probs_a = jax.nn.softmax(jnp.asarray(view_a_logits, jnp.float32))
    probs_b = jax.nn.softmax(jnp.asarray(view_b_logits, jnp.float32))
    if consistency == "fixmatch":
        per_example, mask = _consistency.fixmatch_consistency(
            view_b_logits, view_a_logits, threshold=threshold
        )
        aux["mask_rate"] = masked_mean(mask, unlabeled_where, axis_name=axis_name)
    elif consistency == "mse":
        per_example = _consistency.mse_consistency(probs_b, probs_a)
    elif consistency == "mean_teacher":
        per_example = _consistency.mse_consistency(probs_b, consistency_targets)
    elif consistency == "mixmatch":
        student = view_b_logits if student_logits is None else student_logits
        student_probs = jax.nn.softmax(jnp.asarray(student, jnp.float32))
        per_example = _consistency.mse_consistency(student_probs, consistency_targets)
    elif consistency in STATEFUL_CONSISTENCY_KINDS:
        options = dict(consistency_options or {})
        state = consistency_state
        if consistency == "flexmatch":
            result = _base_steps.flexmatch_step(
                view_a_logits, view_b_logits, state, unlabeled_index, **options
            )
        elif consistency in ("freematch", "softmatch"):
            step_fn = getattr(_base_steps, f"{consistency}_step")
            result = step_fn(view_a_logits, view_b_logits, state, **options)
        elif consistency == "adamatch":
            result = _base_steps.adamatch_step(
                view_a_logits, view_b_logits, labeled_logits, state, **options
            )
        elif consistency == "uda":
            result = _base_steps.uda_step(view_a_logits, view_b_logits, **options)
        else:
            result = _base_steps.dash_step(
                view_a_logits, view_b_logits, labeled_logits, labels, state, step=step, **options
            )
        consistency_value, metrics, aux["consistency_state"] = result
        aux.update(metrics)
    else:
        per_example = jnp.zeros(jnp.shape(view_a_logits)[:1], jnp.float32)
    if consistency not in STATEFUL_CONSISTENCY_KINDS:
        consistency_value = masked_mean(per_example, unlabeled_where, axis_name=axis_name)
    aux["consistency"] = consistency_value

    if mi_probs is None:
        mi_probs = (probs_a, probs_b)
        if unlabeled_where is not None:
            # A zero row adds nothing to the joint, which is renormalised.
            keep = jnp.asarray(unlabeled_where, jnp.float32)[:, None]
            mi_probs = (probs_a * keep, probs_b * keep)
    mutual_information = _mutual_information.mutual_information(
        *mi_probs, lamb=lamb, axis_name=axis_name
    )
    aux["mutual_information"] = mutual_information

    total = (
        supervised_weight * supervised
        + consistency_weight * consistency_value
        - mutual_information_weight * mutual_information
    )
    aux["total"] = total
    return total, aux
