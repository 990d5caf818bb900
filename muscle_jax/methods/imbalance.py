"""Additions made for biased (long-tailed) labels: debiased pseudo-labelling and ABC.

``loss.consistency=debiased`` (or ``method=debiased``): FixMatch whose
pseudo-labels and loss are corrected by the model's running mean prediction
(`losses.debiased_pseudo_label_step`), carried as method state. MUSCLE's MI
term goes on top as on any base.

``loss.addon=abc`` (or ``addon=abc``): ABC's balanced classifier, a second
head on the shared features trained by its own labeled and unlabeled losses
beside any base (`losses.abc_loss`); the evaluation reads that head. It is
the add-on role's one method; ``none`` is the default. The formulas,
defaults and the reference codes' differences: docs/method.md.
"""

from __future__ import annotations

from etils import epy

# Loaded when a term first runs (see muscle_jax/methods/base.py).
with epy.lazy_imports():
    import jax

    from muscle_jax import losses

from muscle_jax.methods import base, register, unlabeled_views
from muscle_jax.methods.adaptive import UNIT_WEIGHTING


def _debiased(inputs: base.Inputs, section, state) -> base.TermResult:
    return base.TermResult(
        *losses.debiased_pseudo_label_step(
            inputs.view_a_logits, inputs.view_b_logits, state, **debiased_options(section)
        )
    )


def debiased_options(section) -> dict:
    return {
        "tau": section.tau,
        "momentum": section.momentum,
        "threshold": section.threshold,
        "update_order": section.update_order,
    }


def _check_debiased(section, config) -> list[str]:
    problems = []
    if section.tau < 0:
        problems.append(f"loss.debiased.tau={section.tau} must be >= 0 (0: FixMatch).")
    if not 0.0 <= section.momentum < 1.0:
        problems.append(f"loss.debiased.momentum={section.momentum} must be in [0, 1).")
    if not 0.0 <= section.threshold <= 1.0:
        problems.append(f"loss.debiased.threshold={section.threshold} must be in [0, 1].")
    if section.update_order not in losses.DEBIASED_UPDATE_ORDERS:
        problems.append(
            f"loss.debiased.update_order={section.update_order!r} is not one of "
            f"{losses.DEBIASED_UPDATE_ORDERS}."
        )
    return problems


DEBIASED = register(
    base.Term(
        name="debiased",
        role=base.CONSISTENCY,
        loss=_debiased,
        description="debiased pseudo-labelling: FixMatch with adaptive logit adjustment by "
        "the running mean prediction",
        # tau 0.4 as USB (the paper's code: 1.0), m 0.999 and t 0.95 as both; q_hat
        # updated between the pseudo-label and the loss as the paper's code ("usb": USB's order).
        defaults={"tau": 0.4, "momentum": 0.999, "threshold": 0.95, "update_order": "paper"},
        unlabeled_views="weak_strong",
        weighting=UNIT_WEIGHTING,
        init_state=lambda spec, section: losses.debiased_init(spec.num_classes),
        check=_check_debiased,
        added_keys={"update_order": "paper"},  # Added later; the order these runs used.
    )
)


NO_ADDON = register(
    base.Term(
        name="none",
        role=base.ADDON,
        loss=lambda inputs, section, state: base.TermResult(jax.numpy.zeros((), "float32")),
        description="no add-on (the base method and the MI term alone)",
    )
)


# ABC's Bernoulli draws come from the step's key folded with a constant of their
# own, so they never reuse the streams the base method draws from the same key.
_ABC_STREAM = 0x616263


def _abc(inputs: base.Inputs, section, state) -> base.TermResult:
    pseudo_labels, _ = losses.abc_pseudo_labels(inputs.view_a_balanced_logits)
    progress = inputs.step / max(inputs.total_steps, 1)
    labeled_mask, unlabeled_mask = losses.abc_masks(
        jax.random.fold_in(inputs.key, _ABC_STREAM),
        inputs.labels,
        pseudo_labels,
        state["ratio"],
        progress,
    )
    value, metrics = losses.abc_loss(
        inputs.labeled_balanced_logits,
        inputs.labels,
        inputs.view_a_balanced_logits,
        inputs.view_b_balanced_logits,
        labeled_mask,
        unlabeled_mask,
        threshold=section.threshold,
    )
    return base.TermResult(value, metrics)


def _check_abc(section, config) -> list[str]:
    problems = []
    if not 0.0 <= section.threshold <= 1.0:
        problems.append(f"loss.abc.threshold={section.threshold} must be in [0, 1].")
    views = unlabeled_views(config)
    # ("none": no unlabeled batch at all, which `methods.check` already reports.)
    if views not in ("weak_strong", "weak_strong_weak", "none"):
        problems.append(
            f"loss.addon='abc' pseudo-labels weak views and trains on strong ones, but "
            f"loss.consistency={config.loss.consistency!r} asks the pipeline for {views!r}; "
            "choose a base with weak and strong views (fixmatch, flexmatch, freematch, ...)."
        )
    return problems


ABC = register(
    base.Term(
        name="abc",
        role=base.ADDON,
        loss=_abc,
        description="ABC: an auxiliary classifier trained on class-balanced masks, "
        "evaluated in place of the base's",
        defaults={"threshold": 0.95},  # The paper's and USB's.
        unlabeled_views="weak_strong",
        model_heads=lambda section: {"balanced_head": True},
        # r_k = N_min / N_k of the labeled subset: fixed for the run, kept with the
        # method state so the loss sees it inside the jitted step.
        init_state=lambda spec, section: {
            "ratio": losses.balancing_ratio(spec.labeled_class_counts)
        },
        check=_check_abc,
        evaluation_head="balanced_logits",
    )
)
