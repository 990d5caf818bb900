"""Unsupervised terms: IIC's mutual information (MUSCLE)."""

import jax
import jax.numpy as jnp

from muscle_jax import losses
from muscle_jax.methods import base, register


def _probs(logits: jax.Array) -> jax.Array:
    return jax.nn.softmax(jnp.asarray(logits, jnp.float32))


def _iic(inputs: base.Inputs, section, state) -> base.TermResult:
    probs_a, probs_b = _probs(inputs.view_a_logits), _probs(inputs.view_b_logits)
    if section.on_labeled:
        # The labeled images' two views join the joint distribution's batch.
        probs_a = jnp.concatenate([_probs(inputs.labeled_logits), probs_a])
        probs_b = jnp.concatenate([_probs(inputs.labeled_strong_logits), probs_b])
    mutual_information = losses.mutual_information(probs_a, probs_b, lamb=section.lamb)
    value = -mutual_information
    metrics = {"mutual_information": mutual_information}
    if inputs.view_a_overclustering is not None:
        overclustering = losses.multi_head_mutual_information(
            _probs(inputs.view_a_overclustering),
            _probs(inputs.view_b_overclustering),
            lamb=section.lamb,
        )
        value = value - section.overclustering_weight * overclustering
        metrics["overclustering_mutual_information"] = overclustering
    return base.TermResult(value, metrics)


def _check_iic(section, config) -> list[str]:
    problems = []
    if section.lamb <= 0:
        problems.append(f"loss.iic.lamb={section.lamb} must be > 0.")
    if section.overclustering_weight < 0:
        problems.append(
            f"loss.iic.overclustering_weight={section.overclustering_weight} must be >= 0."
        )
    return problems


IIC = register(
    base.Term(
        name="iic",
        role=base.UNSUPERVISED,
        loss=_iic,
        description="MUSCLE's term: minus IIC's mutual information between the two views' "
        "class assignments",
        defaults={
            "lamb": 1.0,  # IIC's lambda: 1 is the true mutual information.
            "on_labeled": False,  # ours: the unlabeled views only.
            "overclustering_weight": 1.0,  # relative to the unsupervised weight.
        },
        unlabeled_views="weak_strong",
        labeled_views=lambda section: 2 if section.on_labeled else 1,
        check=_check_iic,
    )
)


def _none(inputs: base.Inputs, section, state) -> base.TermResult:
    return base.TermResult(jnp.zeros((), jnp.float32))


NONE = register(
    base.Term(
        name="none",
        role=base.UNSUPERVISED,
        loss=_none,
        description="no unsupervised term (the base method alone)",
    )
)
