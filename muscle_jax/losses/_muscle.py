"""The MUSCLE objective: supervised + consistency + mutual information."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from muscle_jax.losses import (
    _base_steps,
    _consistency,
    _debiased,
    _mutual_information,
    _supervised,
    _validation,
)

State = dict[str, jax.Array]
# A kind's consistency term: (scalar loss, scalar diagnostics, next state or None).
KindResult = tuple[jax.Array, dict[str, jax.Array], State | None]


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


# ---------------------------------------------------------------- the consistency kinds


@dataclasses.dataclass(frozen=True)
class _Inputs:
    """What `muscle_loss` hands every consistency kind: its own arguments, by name."""

    labeled_logits: ArrayLike
    labels: ArrayLike
    view_a_logits: ArrayLike
    view_b_logits: ArrayLike
    threshold: float
    consistency_targets: ArrayLike | None
    student_logits: ArrayLike | None
    unlabeled_where: ArrayLike | None
    axis_name: str | None
    unlabeled_index: ArrayLike | None
    step: ArrayLike


@dataclasses.dataclass(frozen=True)
class _Kind:
    """One consistency kind of `muscle_loss`.

    Attributes:
      term: ``(inputs, state, options) -> (loss, metrics, next state)``, the
        loss a scalar, the metrics scalars (``aux`` gets them), the state None
        for a kind without one.
      state_from: for a stateful kind (a base's ``*_step``), where its
        ``consistency_state`` comes from, as the error without it says; None
        for a per-example kind, whose terms `masked_mean` reduces over the examples
        ``unlabeled_where`` selects (also across ``axis_name``).
      needs: `muscle_loss` arguments the kind cannot run without.
    """

    term: Callable[[_Inputs, State | None, Mapping[str, Any]], KindResult]
    state_from: str | None = None
    needs: tuple[str, ...] = ()


def _probs(logits: ArrayLike) -> jax.Array:
    return jax.nn.softmax(jnp.asarray(logits, jnp.float32))


def _reduced(inputs: _Inputs, per_example: jax.Array, **metrics: jax.Array) -> KindResult:
    """A per-example kind's loss and metrics, each a `masked_mean` over the unlabeled batch."""

    def mean(values):
        return masked_mean(values, inputs.unlabeled_where, axis_name=inputs.axis_name)

    return mean(per_example), {name: mean(values) for name, values in metrics.items()}, None


def _fixmatch(inputs: _Inputs, state, options) -> KindResult:
    per_example, mask = _consistency.fixmatch_consistency(
        inputs.view_b_logits, inputs.view_a_logits, threshold=inputs.threshold
    )
    return _reduced(inputs, per_example, mask_rate=mask)


def _mse(inputs: _Inputs, state, options) -> KindResult:
    per_example = _consistency.mse_consistency(
        _probs(inputs.view_b_logits), _probs(inputs.view_a_logits)
    )
    return _reduced(inputs, per_example)


def _mean_teacher(inputs: _Inputs, state, options) -> KindResult:
    targets = inputs.consistency_targets
    return _reduced(inputs, _consistency.mse_consistency(_probs(inputs.view_b_logits), targets))


def _mixmatch(inputs: _Inputs, state, options) -> KindResult:
    student = inputs.view_b_logits if inputs.student_logits is None else inputs.student_logits
    targets = inputs.consistency_targets
    return _reduced(inputs, _consistency.mse_consistency(_probs(student), targets))


def _none(inputs: _Inputs, state, options) -> KindResult:
    return _reduced(inputs, jnp.zeros(jnp.shape(inputs.view_a_logits)[:1], jnp.float32))


def _flexmatch(inputs: _Inputs, state, options) -> KindResult:
    return _base_steps.flexmatch_step(
        inputs.view_a_logits, inputs.view_b_logits, state, inputs.unlabeled_index, **options
    )


def _freematch(inputs: _Inputs, state, options) -> KindResult:
    return _base_steps.freematch_step(inputs.view_a_logits, inputs.view_b_logits, state, **options)


def _softmatch(inputs: _Inputs, state, options) -> KindResult:
    return _base_steps.softmatch_step(inputs.view_a_logits, inputs.view_b_logits, state, **options)


def _adamatch(inputs: _Inputs, state, options) -> KindResult:
    return _base_steps.adamatch_step(
        inputs.view_a_logits, inputs.view_b_logits, inputs.labeled_logits, state, **options
    )


def _uda(inputs: _Inputs, state, options) -> KindResult:
    return _base_steps.uda_step(inputs.view_a_logits, inputs.view_b_logits, **options)


def _dash(inputs: _Inputs, state, options) -> KindResult:
    return _base_steps.dash_step(
        inputs.view_a_logits,
        inputs.view_b_logits,
        inputs.labeled_logits,
        inputs.labels,
        state,
        step=inputs.step,
        **options,
    )


def _debiased_step(inputs: _Inputs, state, options) -> KindResult:
    return _debiased.debiased_pseudo_label_step(
        inputs.view_a_logits, inputs.view_b_logits, state, **options
    )


# The one table of the consistency kinds `muscle_loss` takes; `CONSISTENCY_KINDS` and
# `STATEFUL_CONSISTENCY_KINDS` are read from it. Adding a kind is one row here and, for
# a new step function, the few lines above that call it.
#
# The method registry (`muscle_jax.methods`, one `Term` per method) does not read this
# table, nor does this package read the registry: `muscle_jax.losses` is the public
# pure-function API, installed with JAX and NumPy alone (setup.cfg's base install has
# no ml_collections, etils or Flax, which the registry imports), and the registry
# imports this package (lazily), so importing it here would be a cycle and a heavy
# import; and the registry also takes users' own terms, which need no kind here. Each
# built-in term and its row call the same pure `*_step` function, and one test
# (tests/test_methods_bases.py) runs every registered consistency term through
# `muscle_loss` against the term's own loss, so a term registered without a row fails it.
_KINDS: dict[str, _Kind] = {
    "fixmatch": _Kind(_fixmatch),
    "mse": _Kind(_mse),
    "mean_teacher": _Kind(_mean_teacher, needs=("consistency_targets",)),
    "mixmatch": _Kind(_mixmatch, needs=("consistency_targets",)),
    "none": _Kind(_none),
    "flexmatch": _Kind(_flexmatch, "from losses.flexmatch_init", needs=("unlabeled_index",)),
    "freematch": _Kind(_freematch, "from losses.freematch_init"),
    "softmatch": _Kind(_softmatch, "from losses.softmatch_init"),
    "adamatch": _Kind(_adamatch, "from losses.distribution_alignment_init"),
    "uda": _Kind(_uda, "{} for UDA, which has none"),
    "dash": _Kind(_dash, "from losses.dash_init"),
    "debiased": _Kind(_debiased_step, "from losses.debiased_init"),
}

CONSISTENCY_KINDS = tuple(_KINDS)
# The bases that run as a ``*_step``: each carries a state from step to step (UDA's is empty).
STATEFUL_CONSISTENCY_KINDS = tuple(
    name for name, kind in _KINDS.items() if kind.state_from is not None
)


def _kind(consistency: str) -> _Kind:
    if consistency not in _KINDS:
        raise ValueError(f"Unknown consistency {consistency!r}; choose one of {CONSISTENCY_KINDS}.")
    return _KINDS[consistency]


def _check_views(labeled_logits, view_a_logits, view_b_logits, unlabeled_where) -> None:
    _validation.check_rank("labeled_logits", labeled_logits, 2, "[batch, num_classes]")
    _validation.check_rank("view_a_logits", view_a_logits, 2, "[batch, num_classes]")
    _validation.check_same_shape(("view_a_logits", "view_b_logits"), view_a_logits, view_b_logits)
    if jnp.shape(labeled_logits)[-1] != jnp.shape(view_a_logits)[-1]:
        raise ValueError(
            f"labeled_logits {jnp.shape(labeled_logits)} and view_a_logits "
            f"{jnp.shape(view_a_logits)} must have the same number of classes."
        )
    _validation.check_where(unlabeled_where, jnp.shape(view_a_logits)[0])


def _check_kind_inputs(consistency: str, kind: _Kind, inputs: _Inputs, state) -> None:
    """The arguments ``kind`` cannot run without, in the order the checks always ran."""
    if kind.state_from is not None:
        if state is None:
            raise ValueError(
                f"consistency={consistency!r} needs consistency_state ({kind.state_from})."
            )
        if inputs.unlabeled_where is not None or inputs.axis_name is not None:
            raise ValueError(
                f"consistency={consistency!r} takes its batch statistics over the arrays "
                "passed in: call it under jax.jit on the global batch, without "
                "unlabeled_where or axis_name."
            )
    for name in kind.needs:
        if getattr(inputs, name) is None:
            raise ValueError(f"consistency={consistency!r} needs {name}.")


def _mi_probs(view_a_logits, view_b_logits, unlabeled_where) -> tuple[jax.Array, jax.Array]:
    """The two unlabeled views' probabilities, masked rows zeroed."""
    probs_a, probs_b = _probs(view_a_logits), _probs(view_b_logits)
    if unlabeled_where is None:
        return probs_a, probs_b
    # A zero row adds nothing to the joint, which is renormalised.
    keep = jnp.asarray(unlabeled_where, jnp.float32)[:, None]
    return probs_a * keep, probs_b * keep


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
      ``adamatch``, ``uda``, ``dash`` and debiased pseudo-labelling,
      ``debiased`` (``STATEFUL_CONSISTENCY_KINDS``): the base's ``*_step``
      function (:func:`flexmatch_step`, ...,
      :func:`debiased_pseudo_label_step`; the ones the trainer's terms
      call), given ``consistency_state`` (from its ``*_init``;
      :func:`distribution_alignment_init` for AdaMatch, ``{}`` for UDA) and
      its keyword options as ``consistency_options`` (e.g.
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

      A stateful base takes its state and returns the next one:

      >>> total, aux = losses.muscle_loss(
      ...     logits[:2], jnp.array([0, 1]), logits, logits[::-1], consistency="debiased",
      ...     consistency_state=losses.debiased_init(4), consistency_options={"tau": 0.4})
      >>> sorted(aux)
      ['consistency', 'consistency_state', 'mask_rate', 'mutual_information', 'supervised', 'total']
      >>> aux["consistency_state"]["q_hat"].shape  # pass it to the next step
      (4,)

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
      consistency_state: a stateful base's state (see the kinds above).
      consistency_options: a stateful base's keyword options.
      unlabeled_index: ``[batch_u]`` the unlabeled images' ids (FlexMatch).
      step: the training step (Dash's threshold schedule).

    Returns:
      ``(total, aux)``: the float32 scalar loss (every term already reduced
      over its batch) and a dict of scalars with keys
      ``supervised``, ``consistency``, ``mutual_information`` (MI in nats, the
      positive quantity), ``total``, ``mask_rate`` for ``fixmatch``, and for
      a stateful base its diagnostics and ``consistency_state``.

    References:
      Xie et al., `MUSCLE <https://arxiv.org/abs/2012.00150>`_, 2021.
    """
    kind = _kind(consistency)
    _check_views(labeled_logits, view_a_logits, view_b_logits, unlabeled_where)
    inputs = _Inputs(
        labeled_logits=labeled_logits,
        labels=labels,
        view_a_logits=view_a_logits,
        view_b_logits=view_b_logits,
        threshold=threshold,
        consistency_targets=consistency_targets,
        student_logits=student_logits,
        unlabeled_where=unlabeled_where,
        axis_name=axis_name,
        unlabeled_index=unlabeled_index,
        step=step,
    )
    _check_kind_inputs(consistency, kind, inputs, consistency_state)

    supervised = masked_mean(
        _supervised.supervised_loss(
            labeled_logits, labels, label_smoothing=label_smoothing, where=labeled_where
        ),
        labeled_where,
        axis_name=axis_name,
    )
    aux = {"supervised": supervised}
    consistency_value, metrics, next_state = kind.term(
        inputs, consistency_state, dict(consistency_options or {})
    )
    if kind.state_from is not None:
        aux["consistency_state"] = next_state
    aux.update(metrics)
    aux["consistency"] = consistency_value

    if mi_probs is None:
        mi_probs = _mi_probs(view_a_logits, view_b_logits, unlabeled_where)
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
