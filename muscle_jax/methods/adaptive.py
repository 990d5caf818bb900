"""The modern base methods: adaptive thresholds, soft weights and distribution alignment.

FlexMatch, FreeMatch, SoftMatch, AdaMatch, UDA and Dash as consistency terms
(``loss.consistency=<name>``, or ``method=<name>`` after a config's ``:``),
each built from the pure functions of `muscle_jax.losses` and carrying its
statistics as method state (saved in checkpoints, restored bit-exactly).
MUSCLE's MI term is added on top as on any base (``unsupervised=iic``, the
default; ``mi=False`` for the base alone). Every batch statistic is of the
global batch: the step is jitted over the whole mesh, so XLA reduces across
devices. Paper/code differences and the defaults chosen: docs/method.md.
"""

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from muscle_jax import losses
from muscle_jax.methods import base, register

# The consistency terms this module registers, in the order tables list them.
MODERN_BASES = ("flexmatch", "freematch", "softmatch", "adamatch", "uda", "dash")
# Every method here is weighted as its paper (and USB/TorchSSL) weights it:
# lambda_u = 1 from the first step, as FixMatch.
_UNIT_WEIGHTING = {"weight": 1.0, "rampup": "none", "rampup_steps": 0}
DISTRIBUTION_ALIGNMENT_TARGETS = ("uniform", "labeled", "labeled_ema")


def _probs(logits: jax.Array) -> jax.Array:
    return jax.nn.softmax(jax.lax.stop_gradient(jnp.asarray(logits, jnp.float32)))


def _pseudo_label_loss(inputs: base.Inputs, probs: jax.Array, mask: jax.Array) -> jax.Array:
    """Cross-entropy of the strong view to the weak view's argmax, masked, over the batch."""
    pseudo_labels = jnp.argmax(probs, axis=-1)
    return jnp.mean(losses.supervised_loss(inputs.view_b_logits, pseudo_labels) * mask)


def _unit(name: str, value, *, closed_high: bool = True) -> list[str]:
    high_ok = value <= 1.0 if closed_high else value < 1.0
    if 0.0 <= value and high_ok:
        return []
    return [f"{name}={value} must be in [0, 1{']' if closed_high else ')'}."]


# ---------------------------------------------------------------- distribution alignment


def alignment_state(spec: base.StateSpec, target: str) -> dict[str, jax.Array]:
    """Distribution alignment's state for ``target`` (`DISTRIBUTION_ALIGNMENT_TARGETS`)."""
    p_target = None
    if target == "labeled":
        # The labeled subset's class histogram, known when the run is built.
        p_target = jnp.asarray(spec.labeled_class_counts, jnp.float32)
    return losses.distribution_alignment_init(spec.num_classes, p_target=p_target)


def aligned(inputs: base.Inputs, state, *, target: str, momentum: float):
    """``(new state, aligned weak-view probabilities)``: the state is updated first."""
    probs = _probs(inputs.view_a_logits)
    labeled_probs = _probs(inputs.labeled_logits) if target == "labeled_ema" else None
    state = losses.distribution_alignment_update(
        state, probs, momentum=momentum, labeled_probs=labeled_probs
    )
    return state, losses.align_distribution(probs, state["p_model"], state["p_target"])


def _check_alignment(prefix: str, target: str, momentum: float) -> list[str]:
    problems = _unit(f"{prefix}.alignment_momentum", momentum, closed_high=False)
    if target not in DISTRIBUTION_ALIGNMENT_TARGETS:
        problems.append(
            f"{prefix}.alignment_target={target!r} is not one of {DISTRIBUTION_ALIGNMENT_TARGETS}."
        )
    return problems


# ---------------------------------------------------------------- FlexMatch


def _flexmatch(inputs: base.Inputs, section, state) -> base.TermResult:
    probs = _probs(inputs.view_a_logits)
    # The thresholds of this step come from the record before this step's writes.
    beta = losses.flexmatch_class_effect(
        state["selected"], inputs.num_classes, warmup=section.warmup
    )
    mask = losses.flexmatch_mask(probs, beta, threshold=section.threshold, mapping=section.mapping)
    selected = losses.flexmatch_update(
        state["selected"], inputs.unlabeled_index, probs, threshold=section.threshold
    )
    return base.TermResult(
        _pseudo_label_loss(inputs, probs, mask),
        {"mask_rate": jnp.mean(mask)},
        {"selected": selected},
    )


def _flexmatch_state(spec: base.StateSpec, section):
    # One entry per image of the unlabeled pool (training set + unlabeled-only splits).
    return {"selected": losses.flexmatch_init(spec.num_unlabeled)}


def _flexmatch_partition(spec: base.StateSpec, section, num_devices: int):
    # Row-sharded when the pool divides evenly (STL-10's 105k records stay off one device).
    rows = P("data") if spec.num_unlabeled % num_devices == 0 else P()
    return {"selected": rows}


def _check_flexmatch(section, config) -> list[str]:
    problems = _unit("loss.flexmatch.threshold", section.threshold)
    if section.mapping not in losses.FLEXMATCH_MAPPINGS:
        problems.append(
            f"loss.flexmatch.mapping={section.mapping!r} is not one of {losses.FLEXMATCH_MAPPINGS}."
        )
    return problems


FLEXMATCH = register(
    base.Term(
        name="flexmatch",
        role=base.CONSISTENCY,
        loss=_flexmatch,
        description="FlexMatch: FixMatch with class-wise thresholds from each class's "
        "learning effect (curriculum pseudo-labelling)",
        # TorchSSL/USB: tau 0.95, the convex mapping x / (2 - x), threshold warm-up on.
        defaults={"threshold": 0.95, "mapping": "convex", "warmup": True},
        unlabeled_views="weak_strong",
        weighting=_UNIT_WEIGHTING,
        init_state=_flexmatch_state,
        state_partition=_flexmatch_partition,
        check=_check_flexmatch,
    )
)


# ---------------------------------------------------------------- FreeMatch


def _freematch(inputs: base.Inputs, section, state) -> base.TermResult:
    probs = _probs(inputs.view_a_logits)
    # FreeMatch updates its thresholds from this batch before masking it.
    state = losses.freematch_update(state, probs, momentum=section.momentum)
    mask = losses.freematch_mask(probs, state)
    fairness = losses.freematch_fairness_loss(inputs.view_b_logits, mask, state)
    value = _pseudo_label_loss(inputs, probs, mask) + section.fairness_weight * fairness
    metrics = {"mask_rate": jnp.mean(mask), "fairness": fairness, "threshold": state["tau"]}
    return base.TermResult(value, metrics, state)


def _check_freematch(section, config) -> list[str]:
    problems = _unit("loss.freematch.momentum", section.momentum, closed_high=False)
    if section.fairness_weight < 0:
        problems.append(f"loss.freematch.fairness_weight={section.fairness_weight} must be >= 0.")
    return problems


FREEMATCH = register(
    base.Term(
        name="freematch",
        role=base.CONSISTENCY,
        loss=_freematch,
        description="FreeMatch: a self-adaptive global and class-wise threshold, plus a "
        "fairness term",
        # EMA 0.999 (both codes); fairness weight 0.01 is TorchSSL's (USB's CIFAR configs: 0.001).
        defaults={"momentum": 0.999, "fairness_weight": 0.01},
        unlabeled_views="weak_strong",
        weighting=_UNIT_WEIGHTING,
        init_state=lambda spec, section: losses.freematch_init(spec.num_classes),
        check=_check_freematch,
    )
)


# ---------------------------------------------------------------- SoftMatch


def _softmatch(inputs: base.Inputs, section, state) -> base.TermResult:
    probs = _probs(inputs.view_a_logits)
    state, aligned_probs = losses.softmatch_update(state, probs, momentum=section.momentum)
    weights = losses.softmatch_weights(
        aligned_probs, state["mu"], state["var"], n_sigma=section.n_sigma
    )
    per_example = losses.softmatch_consistency(inputs.view_b_logits, inputs.view_a_logits, weights)
    metrics = {"mask_rate": jnp.mean(weights)}  # The mean weight: SoftMatch's soft mask.
    return base.TermResult(jnp.mean(per_example), metrics, state)


def _check_softmatch(section, config) -> list[str]:
    problems = _unit("loss.softmatch.momentum", section.momentum, closed_high=False)
    if section.n_sigma <= 0:
        problems.append(f"loss.softmatch.n_sigma={section.n_sigma} must be > 0.")
    return problems


SOFTMATCH = register(
    base.Term(
        name="softmatch",
        role=base.CONSISTENCY,
        loss=_softmatch,
        description="SoftMatch: pseudo-labels weighted by a truncated Gaussian of their "
        "uniformly aligned confidence",
        # USB: EMA 0.999, n_sigma 2 (the code's var / n_sigma^2; the paper's 2 var is n_sigma=1).
        defaults={"momentum": 0.999, "n_sigma": 2.0},
        unlabeled_views="weak_strong",
        weighting=_UNIT_WEIGHTING,
        init_state=lambda spec, section: losses.softmatch_init(spec.num_classes),
        check=_check_softmatch,
    )
)


# ---------------------------------------------------------------- AdaMatch


def _adamatch(inputs: base.Inputs, section, state) -> base.TermResult:
    state, aligned_probs = aligned(
        inputs, state, target=section.alignment_target, momentum=section.alignment_momentum
    )
    per_example, mask = losses.adamatch_consistency(
        inputs.view_b_logits, aligned_probs, inputs.labeled_logits, threshold=section.threshold
    )
    return base.TermResult(jnp.mean(per_example), {"mask_rate": jnp.mean(mask)}, state)


def _check_adamatch(section, config) -> list[str]:
    problems = _unit("loss.adamatch.threshold", section.threshold)
    return problems + _check_alignment(
        "loss.adamatch", section.alignment_target, section.alignment_momentum
    )


ADAMATCH = register(
    base.Term(
        name="adamatch",
        role=base.CONSISTENCY,
        loss=_adamatch,
        description="AdaMatch: distribution alignment to the labeled predictions and a "
        "threshold relative to the labeled batch's confidence",
        # USB: tau 0.95 (AdaMatch's own code: 0.9); alignment EMA 0.999 to the labeled EMA.
        defaults={
            "threshold": 0.95,
            "alignment_target": "labeled_ema",
            "alignment_momentum": 0.999,
        },
        unlabeled_views="weak_strong",
        weighting=_UNIT_WEIGHTING,
        init_state=lambda spec, section: alignment_state(spec, section.alignment_target),
        check=_check_adamatch,
    )
)


# ---------------------------------------------------------------- UDA


def _uda(inputs: base.Inputs, section, state) -> base.TermResult:
    per_example, mask = losses.uda_consistency(
        inputs.view_b_logits,
        inputs.view_a_logits,
        temperature=section.temperature,
        threshold=section.threshold,
    )
    return base.TermResult(jnp.mean(per_example), {"mask_rate": jnp.mean(mask)})


def _check_uda(section, config) -> list[str]:
    problems = _unit("loss.uda.threshold", section.threshold)
    if section.temperature <= 0:
        problems.append(f"loss.uda.temperature={section.temperature} must be > 0.")
    return problems


UDA = register(
    base.Term(
        name="uda",
        role=base.CONSISTENCY,
        loss=_uda,
        description="UDA: soft cross-entropy to the weak view's sharpened prediction, on "
        "confident images",
        # Paper and TorchSSL: T 0.4, confidence 0.8 (USB's current code drops the T).
        defaults={"temperature": 0.4, "threshold": 0.8},
        unlabeled_views="weak_strong",
        weighting=_UNIT_WEIGHTING,
        check=_check_uda,
    )
)


# ---------------------------------------------------------------- Dash


def _dash_decay_steps(section, total_steps: int) -> int:
    """Dash's rho decays every 10 x 1024 of 2^20 steps; a shorter run keeps the fraction."""
    if section.decay_every_steps:
        return int(section.decay_every_steps)
    return max(1, round(total_steps * 10 * 1024 / 2**20))


def _dash(inputs: base.Inputs, section, state) -> base.TermResult:
    # The starting threshold: the labeled TRAINING batch's loss at the first step
    # (USB takes it from the test set after a warm-up, which leaks the test labels).
    first = losses.dash_initial_threshold(inputs.labeled_logits, inputs.labels)
    rho_init = jnp.where(state["initialised"], state["rho_init"], first)
    rho = losses.dash_threshold(
        inputs.step,
        rho_init,
        rho_min=section.rho_min,
        gamma=section.gamma,
        steps_per_decay=_dash_decay_steps(section, inputs.total_steps),
    )
    targets = losses.dash_targets(
        inputs.view_a_logits, rho, temperature=section.temperature, rho_min=section.rho_min
    )
    mask = losses.dash_mask(inputs.view_a_logits, targets, rho)
    per_example = losses.supervised_loss(inputs.view_b_logits, targets) * mask
    new_state = {"rho_init": rho_init, "initialised": jnp.ones((), bool)}
    metrics = {"mask_rate": jnp.mean(mask), "threshold": rho}
    return base.TermResult(jnp.mean(per_example), metrics, new_state)


def _check_dash(section, config) -> list[str]:
    problems = []
    if section.rho_min <= 0 or section.gamma <= 1 or section.temperature <= 0:
        problems.append(
            f"loss.dash: rho_min={section.rho_min} and temperature={section.temperature} "
            f"must be > 0 and gamma={section.gamma} > 1."
        )
    if section.decay_every_steps < 0:
        problems.append(
            f"loss.dash.decay_every_steps={section.decay_every_steps} must be >= 0 "
            "(0: the paper's share of the run)."
        )
    return problems


DASH = register(
    base.Term(
        name="dash",
        role=base.CONSISTENCY,
        loss=_dash,
        description="Dash: a loss threshold that shrinks over the run, starting from the "
        "labeled training loss",
        # USB: gamma 1.27, rho_min 0.05, T 0.5; decay every 10 x 1024 of 2^20 steps (0 here:
        # that share of total_steps).
        defaults={"gamma": 1.27, "rho_min": 0.05, "temperature": 0.5, "decay_every_steps": 0},
        unlabeled_views="weak_strong",
        weighting=_UNIT_WEIGHTING,
        init_state=lambda spec, section: {
            "rho_init": jnp.zeros((), jnp.float32),
            "initialised": jnp.zeros((), bool),
        },
        check=_check_dash,
    )
)
