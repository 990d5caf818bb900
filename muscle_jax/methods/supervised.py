"""Supervised terms: cross-entropy, and self-adaptive training's soft targets."""

from __future__ import annotations

from etils import epy

# Loaded when a term first runs (see muscle_jax/methods/base.py).
with epy.lazy_imports():
    import jax
    import jax.numpy as jnp

    from muscle_jax import losses

from muscle_jax.methods import base, register


def _cross_entropy(inputs: base.Inputs, section, state) -> base.TermResult:
    per_example = losses.supervised_loss(
        inputs.supervised_logits,
        inputs.supervised_targets,
        label_smoothing=section.label_smoothing,
    )
    if section.tsa == "none":
        return base.TermResult(jnp.mean(per_example))
    # UDA's training-signal annealing: labeled images the model already fits
    # beyond eta_t leave the loss. tsa_max_prob picks one reference whole:
    # TorchSSL's and USB's (largest probability, mean over the batch) or the
    # paper's code (the label's probability, mean over the images kept).
    eta = losses.tsa_threshold(inputs.step, inputs.total_steps, inputs.num_classes, section.tsa)
    mask = losses.tsa_mask(
        inputs.supervised_logits,
        inputs.supervised_targets,
        eta,
        use_max_prob=section.tsa_max_prob,
    )
    value = losses.tsa_reduce(per_example, mask, over_kept=not section.tsa_max_prob)
    metrics = {"tsa_mask_rate": jnp.mean(mask), "tsa_threshold": eta}
    return base.TermResult(value, metrics)


def _check_cross_entropy(section, config) -> list[str]:
    problems = []
    if not 0.0 <= section.label_smoothing < 1.0:
        problems.append(
            f"loss.cross_entropy.label_smoothing={section.label_smoothing} must be in [0, 1)."
        )
    if section.tsa not in losses.TSA_SCHEDULES:
        problems.append(
            f"loss.cross_entropy.tsa={section.tsa!r} is not one of {losses.TSA_SCHEDULES}."
        )
    elif section.tsa != "none" and config.loss.consistency == "mixmatch":
        problems.append(
            "loss.cross_entropy.tsa needs the integer labels, but MixMatch trains the supervised "
            "term on mixed soft targets; set loss.cross_entropy.tsa='none' with MixMatch."
        )
    return problems


CROSS_ENTROPY = register(
    base.Term(
        name="cross_entropy",
        role=base.SUPERVISED,
        loss=_cross_entropy,
        description="cross-entropy on the labeled batch (optionally label-smoothed)",
        # Training-signal annealing (UDA's TSA) off, as the papers' protocols; when on,
        # TorchSSL's and USB's test of the largest probability and mean over the batch
        # (False: the paper's code, the label's probability and mean over the kept images).
        defaults={"label_smoothing": 0.0, "tsa": "none", "tsa_max_prob": True},
        check=_check_cross_entropy,
    )
)


def _self_adaptive(inputs: base.Inputs, section, state) -> base.TermResult:
    # A row never written yet holds zeros: its target is the one-hot label, as
    # self-adaptive training starts from the given labels.
    index = inputs.labeled_index
    one_hot = jax.nn.one_hot(inputs.labels, inputs.num_classes, dtype=jnp.float32)
    previous = state["targets"][index]
    previous = jnp.where(jnp.sum(previous, -1, keepdims=True) > 0, previous, one_hot)
    probs = jax.nn.softmax(jax.lax.stop_gradient(inputs.supervised_logits))
    updated = losses.self_adaptive_update(previous, probs, momentum=section.momentum)
    started = inputs.step >= jnp.floor(section.start_fraction * inputs.total_steps)
    targets = jnp.where(started, updated, one_hot)
    value = losses.self_adaptive_loss(inputs.supervised_logits, targets)
    new_state = {"targets": state["targets"].at[index].set(targets)}
    confidence = jnp.mean(jnp.max(targets, axis=-1))
    return base.TermResult(value, {"self_adaptive_confidence": confidence}, new_state)


def _self_adaptive_state(spec: base.StateSpec, section):
    return {
        # One soft target per training example, indexed by the pipeline's
        # labeled_index; all-zero rows mean "still the one-hot label".
        "targets": jnp.zeros((spec.num_train, spec.num_classes), jnp.float32),
    }


def _self_adaptive_partition(spec: base.StateSpec, section, num_devices: int):
    # The table grows with the dataset (ImageNet: 1.28 M x 1000 floats); its
    # rows are split over the devices when they divide evenly.
    partition = jax.sharding.PartitionSpec
    rows = partition("data") if spec.num_train % num_devices == 0 else partition()
    return {"targets": rows}


def _check_self_adaptive(section, config) -> list[str]:
    problems = []
    if not 0.0 <= section.momentum < 1.0:
        problems.append(f"loss.self_adaptive.momentum={section.momentum} must be in [0, 1).")
    if not 0.0 <= section.start_fraction <= 1.0:
        problems.append(
            f"loss.self_adaptive.start_fraction={section.start_fraction} must be in [0, 1]."
        )
    from muscle_jax import methods  # The registry, for the consistency term chosen with it.

    consistency = methods.get(base.CONSISTENCY, config.loss.consistency)
    if consistency.replaces_supervised_inputs:
        problems.append(
            f"loss.supervised='self_adaptive' keeps one target per labeled example, but "
            f"loss.consistency={consistency.name!r} trains the supervised term on mixed "
            "examples; use loss.supervised='cross_entropy' with it."
        )
    return problems


SELF_ADAPTIVE = register(
    base.Term(
        name="self_adaptive",
        role=base.SUPERVISED,
        loss=_self_adaptive,
        description="self-adaptive training: per-example moving soft targets, confidence-weighted",
        # The paper's alpha 0.9, and its start E_s = 60 of 200 epochs: the
        # targets follow the predictions from 30 % of the run on.
        defaults={"momentum": 0.9, "start_fraction": 0.3},
        init_state=_self_adaptive_state,
        state_partition=_self_adaptive_partition,
        check=_check_self_adaptive,
    )
)
