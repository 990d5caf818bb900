"""Additions made for biased (long-tailed) pseudo-labels: debiased pseudo-labelling.

``loss.consistency=debiased`` (or ``method=debiased``): FixMatch whose
pseudo-labels and loss are corrected by the model's running mean prediction
(`losses.debiased_pseudo_label_step`), carried as method state. MUSCLE's MI
term goes on top as on any base. The formula, defaults and USB's no-op:
docs/method.md.
"""

from muscle_jax import losses
from muscle_jax.methods import base, register
from muscle_jax.methods.adaptive import UNIT_WEIGHTING


def _debiased(inputs: base.Inputs, section, state) -> base.TermResult:
    return base.TermResult(
        *losses.debiased_pseudo_label_step(
            inputs.view_a_logits, inputs.view_b_logits, state, **debiased_options(section)
        )
    )


def debiased_options(section) -> dict:
    return {"tau": section.tau, "momentum": section.momentum, "threshold": section.threshold}


def _check_debiased(section, config) -> list[str]:
    problems = []
    if section.tau < 0:
        problems.append(f"loss.debiased.tau={section.tau} must be >= 0 (0: FixMatch).")
    if not 0.0 <= section.momentum < 1.0:
        problems.append(f"loss.debiased.momentum={section.momentum} must be in [0, 1).")
    if not 0.0 <= section.threshold <= 1.0:
        problems.append(f"loss.debiased.threshold={section.threshold} must be in [0, 1].")
    return problems


DEBIASED = register(
    base.Term(
        name="debiased",
        role=base.CONSISTENCY,
        loss=_debiased,
        description="debiased pseudo-labelling: FixMatch with adaptive logit adjustment by "
        "the running mean prediction",
        # tau 0.4 as USB (the paper's code: 1.0), m 0.999 and t 0.95 as both.
        defaults={"tau": 0.4, "momentum": 0.999, "threshold": 0.95},
        unlabeled_views="weak_strong",
        weighting=UNIT_WEIGHTING,
        init_state=lambda spec, section: losses.debiased_init(spec.num_classes),
        check=_check_debiased,
    )
)
