"""Consistency terms: the semi-supervised base methods MUSCLE is added to."""

from __future__ import annotations

import dataclasses

from etils import epy

# Loaded when a term first runs (see muscle_jax/methods/base.py).
with epy.lazy_imports():
    import jax
    import jax.numpy as jnp

    from muscle_jax import losses

from muscle_jax.methods import alignment, base, register


def _probs(logits: jax.Array) -> jax.Array:
    return jax.nn.softmax(jnp.asarray(logits, jnp.float32))


def _fixmatch(inputs: base.Inputs, section, state) -> base.TermResult:
    if section.distribution_alignment == "none":
        per_example, mask = losses.fixmatch_consistency(
            inputs.view_b_logits, inputs.view_a_logits, threshold=section.threshold
        )
        return base.TermResult(jnp.mean(per_example), {"mask_rate": jnp.mean(mask)})
    # ReMixMatch's distribution alignment before the threshold, as AdaMatch's
    # (state updated from this batch first): pseudo-label and mask from p_da.
    probs = jax.nn.softmax(jax.lax.stop_gradient(jnp.asarray(inputs.view_a_logits, jnp.float32)))
    labeled_probs = None
    if section.distribution_alignment == "labeled_ema":
        labeled_probs = jax.nn.softmax(jax.lax.stop_gradient(inputs.labeled_logits))
    state = losses.distribution_alignment_update(
        state,
        probs,
        momentum=section.alignment_momentum,
        labeled_probs=labeled_probs,
        first_batch=section.p_model_init == "first_batch",
    )
    aligned = losses.align_distribution(probs, state["p_model"], state["p_target"])
    mask = (jnp.max(aligned, axis=-1) >= section.threshold).astype(jnp.float32)
    per_example = losses.supervised_loss(inputs.view_b_logits, jnp.argmax(aligned, -1)) * mask
    return base.TermResult(jnp.mean(per_example), {"mask_rate": jnp.mean(mask)}, state)


def _fixmatch_state(spec: base.StateSpec, section):
    if section.distribution_alignment == "none":
        return {}  # No state: FixMatch as its paper.
    return alignment.alignment_state(spec, section.distribution_alignment)


def _check_fixmatch(section, config) -> list[str]:
    problems = []
    if not 0.0 <= section.threshold <= 1.0:
        problems.append(f"loss.fixmatch.threshold={section.threshold} must be in [0, 1].")
    if section.distribution_alignment != "none":
        problems += alignment.check_alignment(
            "loss.fixmatch",
            section.distribution_alignment,
            section.alignment_momentum,
            target_key="distribution_alignment",
            allowed_extra=("none",),
        )
    elif not 0.0 <= section.alignment_momentum < 1.0:
        problems.append(
            f"loss.fixmatch.alignment_momentum={section.alignment_momentum} must be in [0, 1)."
        )
    return problems + alignment.check_start("loss.fixmatch.p_model_init", section.p_model_init)


FIXMATCH = register(
    base.Term(
        name="fixmatch",
        role=base.CONSISTENCY,
        loss=_fixmatch,
        description="FixMatch: cross-entropy of the strong view to the weak view's confident "
        "pseudo-label",
        # protocol (FixMatch tau); distribution alignment off, as the paper
        # (on: "uniform", "labeled" or "labeled_ema", EMA 0.999 and p_model
        # started at the first batch's mean, as USB's DistAlignEMAHook).
        defaults={
            "threshold": 0.95,
            "distribution_alignment": "none",
            "alignment_momentum": 0.999,
            "p_model_init": "first_batch",
        },
        unlabeled_views="weak_strong",
        init_state=_fixmatch_state,
        check=_check_fixmatch,
        added_keys=alignment.P_MODEL_INIT_ADDED,
    )
)


def _mse(inputs: base.Inputs, section, state) -> base.TermResult:
    # Pi-model: the second view's probabilities pulled to the first's (stopped).
    per_example = losses.mse_consistency(_probs(inputs.view_b_logits), _probs(inputs.view_a_logits))
    return base.TermResult(jnp.mean(per_example))


# Pi-model's and Mean Teacher's own schedule: L2 weight 10 with a sigmoid ramp-up.
_TEACHER_WEIGHTING = {"weight": 10.0, "rampup": "sigmoid", "rampup_steps": None}

MSE = register(
    base.Term(
        name="mse",
        role=base.CONSISTENCY,
        loss=_mse,
        description="Pi-model: squared error between the probabilities of two weak views",
        unlabeled_views="weak_weak",
        weighting=_TEACHER_WEIGHTING,
    )
)


def _mean_teacher(inputs: base.Inputs, section, state) -> base.TermResult:
    targets = jax.lax.stop_gradient(_probs(inputs.teacher_a_logits))
    per_example = losses.mse_consistency(_probs(inputs.view_b_logits), targets)
    return base.TermResult(jnp.mean(per_example))


MEAN_TEACHER = register(
    base.Term(
        name="mean_teacher",
        role=base.CONSISTENCY,
        loss=_mean_teacher,
        description="Mean Teacher: squared error to the EMA teacher's probabilities",
        unlabeled_views="weak_weak",
        needs_teacher=True,
        weighting=_TEACHER_WEIGHTING,
    )
)


def _mixmatch_prepare(inputs: base.Inputs, section) -> base.Inputs:
    """Sharpened guesses, MixUp over labeled + unlabeled, and a second forward pass."""
    probs_a, probs_b = _probs(inputs.view_a_logits), _probs(inputs.view_b_logits)
    guess = losses.sharpen((probs_a + probs_b) / 2, temperature=section.temperature)
    guess = jax.lax.stop_gradient(guess)
    batch = inputs.batch
    images = jnp.concatenate([batch["labeled"], batch["unlabeled_a"], batch["unlabeled_b"]])
    targets = jnp.concatenate(
        [jax.nn.one_hot(batch["label"], inputs.num_classes), guess, guess], dtype=jnp.float32
    )
    mixed_images, mixed_targets, _ = losses.mixup(inputs.key, images, targets, alpha=section.alpha)
    logits = inputs.model(
        mixed_images.astype(inputs.dtype), train=True, dropout_key=base.dropout_key(inputs.key, 1)
    ).logits
    num_labeled = batch["labeled"].shape[0]
    return dataclasses.replace(
        inputs,
        supervised_logits=logits[:num_labeled],
        supervised_targets=mixed_targets[:num_labeled],
        extras={
            **inputs.extras,
            "mixmatch_student_logits": logits[num_labeled:],
            "mixmatch_targets": mixed_targets[num_labeled:],
        },
    )


def _mixmatch(inputs: base.Inputs, section, state) -> base.TermResult:
    student = _probs(inputs.extras["mixmatch_student_logits"])
    per_example = losses.mse_consistency(student, inputs.extras["mixmatch_targets"])
    return base.TermResult(jnp.mean(per_example))


def _check_mixmatch(section, config) -> list[str]:
    if section.temperature <= 0 or section.alpha <= 0:
        return ["loss.mixmatch.temperature and loss.mixmatch.alpha must be > 0."]
    return []


MIXMATCH = register(
    base.Term(
        name="mixmatch",
        role=base.CONSISTENCY,
        loss=_mixmatch,
        description="MixMatch: sharpened guesses, MixUp of labeled and unlabeled, squared error",
        defaults={"temperature": 0.5, "alpha": 0.75},  # MixMatch paper.
        unlabeled_views="weak_weak",
        prepare=_mixmatch_prepare,
        replaces_supervised_inputs=True,
        # MixMatch's own protocol: L2 weight 75 (CIFAR-10), linear ramp-up.
        weighting={"weight": 75.0, "rampup": "linear", "rampup_steps": None},
        check=_check_mixmatch,
    )
)


def _none(inputs: base.Inputs, section, state) -> base.TermResult:
    return base.TermResult(jnp.zeros((), jnp.float32))


NONE = register(
    base.Term(
        name="none",
        role=base.CONSISTENCY,
        loss=_none,
        description="no consistency term",
    )
)
