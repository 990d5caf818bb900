"""Supervised terms: cross-entropy."""

import jax.numpy as jnp

from muscle_jax import losses
from muscle_jax.methods import base, register


def _cross_entropy(inputs: base.Inputs, section, state) -> base.TermResult:
    per_example = losses.supervised_loss(
        inputs.supervised_logits,
        inputs.supervised_targets,
        label_smoothing=section.label_smoothing,
    )
    return base.TermResult(jnp.mean(per_example))


def _check_cross_entropy(section, config) -> list[str]:
    if not 0.0 <= section.label_smoothing < 1.0:
        return [f"loss.cross_entropy.label_smoothing={section.label_smoothing} must be in [0, 1)."]
    return []


CROSS_ENTROPY = register(
    base.Term(
        name="cross_entropy",
        role=base.SUPERVISED,
        loss=_cross_entropy,
        description="cross-entropy on the labeled batch (optionally label-smoothed)",
        defaults={"label_smoothing": 0.0},
        check=_check_cross_entropy,
    )
)
