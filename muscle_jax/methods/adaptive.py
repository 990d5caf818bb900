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

from __future__ import annotations

from etils import epy

# Loaded when a term first runs (see muscle_jax/methods/base.py).
with epy.lazy_imports():
    import jax

    from muscle_jax import losses

from muscle_jax.methods import alignment, base, register

# Every method here is weighted as its paper (and USB/TorchSSL) weights it:
# lambda_u = 1 from the first step, as FixMatch.
UNIT_WEIGHTING = {"weight": 1.0, "rampup": "none", "rampup_steps": 0}


def _unit(name: str, value, *, closed_high: bool = True) -> list[str]:
    high_ok = value <= 1.0 if closed_high else value < 1.0
    if 0.0 <= value and high_ok:
        return []
    return [f"{name}={value} must be in [0, 1{']' if closed_high else ')'}."]


# ---------------------------------------------------------------- FlexMatch


def _flexmatch(inputs: base.Inputs, section, state) -> base.TermResult:
    return base.TermResult(
        *losses.flexmatch_step(
            inputs.view_a_logits,
            inputs.view_b_logits,
            state,
            inputs.unlabeled_index,
            **flexmatch_options(section),
        )
    )


def flexmatch_options(section) -> dict:
    return {"threshold": section.threshold, "mapping": section.mapping, "warmup": section.warmup}


def _flexmatch_state(spec: base.StateSpec, section):
    # One entry per image of the unlabeled pool (training set + unlabeled-only splits).
    if spec.num_unlabeled < 1:
        # A record too short would not fail at run time: JAX clamps out-of-range
        # gathers and drops out-of-range scatters, so training would go on wrong.
        raise ValueError(
            f"FlexMatch's record needs the unlabeled pool's size, but StateSpec.num_unlabeled="
            f"{spec.num_unlabeled}; build the spec with train.state_spec(config, info), which "
            "takes it from the dataset (training set plus unlabeled-only splits)."
        )
    return {"selected": losses.flexmatch_init(spec.num_unlabeled)}


def _flexmatch_partition(spec: base.StateSpec, section, num_devices: int):
    # Row-sharded when the pool divides evenly (STL-10's 105k records stay off one device).
    partition = jax.sharding.PartitionSpec
    rows = partition("data") if spec.num_unlabeled % num_devices == 0 else partition()
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
        weighting=UNIT_WEIGHTING,
        init_state=_flexmatch_state,
        state_partition=_flexmatch_partition,
        check=_check_flexmatch,
    )
)


# ---------------------------------------------------------------- FreeMatch


def _freematch(inputs: base.Inputs, section, state) -> base.TermResult:
    return base.TermResult(
        *losses.freematch_step(
            inputs.view_a_logits, inputs.view_b_logits, state, **freematch_options(section)
        )
    )


def freematch_options(section) -> dict:
    return {"momentum": section.momentum, "fairness_weight": section.fairness_weight}


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
        weighting=UNIT_WEIGHTING,
        init_state=lambda spec, section: losses.freematch_init(spec.num_classes),
        check=_check_freematch,
    )
)


# ---------------------------------------------------------------- SoftMatch


def _softmatch(inputs: base.Inputs, section, state) -> base.TermResult:
    return base.TermResult(
        *losses.softmatch_step(
            inputs.view_a_logits, inputs.view_b_logits, state, **softmatch_options(section)
        )
    )


def softmatch_options(section) -> dict:
    return {
        "momentum": section.momentum,
        "n_sigma": section.n_sigma,
        "first_batch": section.p_hat_init == "first_batch",
    }


def _check_softmatch(section, config) -> list[str]:
    problems = _unit("loss.softmatch.momentum", section.momentum, closed_high=False)
    if section.n_sigma <= 0:
        problems.append(f"loss.softmatch.n_sigma={section.n_sigma} must be > 0.")
    return problems + alignment.check_start("loss.softmatch.p_hat_init", section.p_hat_init)


SOFTMATCH = register(
    base.Term(
        name="softmatch",
        role=base.CONSISTENCY,
        loss=_softmatch,
        description="SoftMatch: pseudo-labels weighted by a truncated Gaussian of their "
        "uniformly aligned confidence",
        # USB: EMA 0.999, n_sigma 2 (the code's var / n_sigma^2; the paper's 2 var is n_sigma=1),
        # p_hat started at the first batch's mean.
        defaults={"momentum": 0.999, "n_sigma": 2.0, "p_hat_init": "first_batch"},
        unlabeled_views="weak_strong",
        weighting=UNIT_WEIGHTING,
        init_state=lambda spec, section: losses.softmatch_init(spec.num_classes),
        check=_check_softmatch,
        # Added later; SoftMatch always started p_hat at the first batch's mean.
        added_keys={"p_hat_init": "first_batch"},
    )
)


# ---------------------------------------------------------------- AdaMatch


def _adamatch(inputs: base.Inputs, section, state) -> base.TermResult:
    return base.TermResult(
        *losses.adamatch_step(
            inputs.view_a_logits,
            inputs.view_b_logits,
            inputs.labeled_logits,
            state,
            **adamatch_options(section),
        )
    )


def adamatch_options(section) -> dict:
    return {
        "threshold": section.threshold,
        "momentum": section.alignment_momentum,
        "labeled_ema_target": section.alignment_target == "labeled_ema",
        "first_batch": section.p_model_init == "first_batch",
    }


def _check_adamatch(section, config) -> list[str]:
    problems = _unit("loss.adamatch.threshold", section.threshold)
    problems += alignment.check_start("loss.adamatch.p_model_init", section.p_model_init)
    return problems + alignment.check_alignment(
        "loss.adamatch", section.alignment_target, section.alignment_momentum
    )


ADAMATCH = register(
    base.Term(
        name="adamatch",
        role=base.CONSISTENCY,
        loss=_adamatch,
        description="AdaMatch: distribution alignment to the labeled predictions and a "
        "threshold relative to the labeled batch's confidence",
        # USB: tau 0.95 (AdaMatch's own code: 0.9); alignment EMA 0.999 to the labeled EMA,
        # p_model started at the first batch's mean.
        defaults={
            "threshold": 0.95,
            "alignment_target": "labeled_ema",
            "alignment_momentum": 0.999,
            "p_model_init": "first_batch",
        },
        unlabeled_views="weak_strong",
        weighting=UNIT_WEIGHTING,
        init_state=lambda spec, section: alignment.alignment_state(spec, section.alignment_target),
        check=_check_adamatch,
        added_keys=alignment.P_MODEL_INIT_ADDED,
    )
)


# ---------------------------------------------------------------- UDA


def _uda(inputs: base.Inputs, section, state) -> base.TermResult:
    loss, metrics, _ = losses.uda_step(
        inputs.view_a_logits, inputs.view_b_logits, **uda_options(section)
    )
    return base.TermResult(loss, metrics)


def uda_options(section) -> dict:
    return {"temperature": section.temperature, "threshold": section.threshold}


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
        weighting=UNIT_WEIGHTING,
        check=_check_uda,
    )
)


# ---------------------------------------------------------------- Dash


def _dash(inputs: base.Inputs, section, state) -> base.TermResult:
    return base.TermResult(
        *losses.dash_step(
            inputs.view_a_logits,
            inputs.view_b_logits,
            inputs.labeled_logits,
            inputs.labels,
            state,
            step=inputs.step,
            **dash_options(section, inputs.total_steps),
        )
    )


def dash_options(section, total_steps: int) -> dict:
    """Dash's options for a run of ``total_steps`` (its decay is a share of the run)."""
    return {
        "steps_per_decay": losses.dash_steps_per_decay(total_steps, section.decay_every_steps),
        "gamma": section.gamma,
        "rho_min": section.rho_min,
        "temperature": section.temperature,
    }


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
        weighting=UNIT_WEIGHTING,
        init_state=lambda spec, section: losses.dash_init(),
        check=_check_dash,
    )
)

# The consistency terms this module registers, in the order tables list them.
# (`losses.muscle_loss` runs each through the same `*_step`, from its own table of
# kinds; tests/test_methods_bases.py runs every registered consistency term through it.)
MODERN_BASES = tuple(term.name for term in (FLEXMATCH, FREEMATCH, SOFTMATCH, ADAMATCH, UDA, DASH))
