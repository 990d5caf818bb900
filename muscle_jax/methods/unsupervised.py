"""Unsupervised terms: IIC's mutual information (MUSCLE), self-defined target, MIO."""

from __future__ import annotations

from etils import epy

# Loaded when a term first runs (see muscle_jax/methods/base.py).
with epy.lazy_imports():
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


def _self_defined_target(inputs: base.Inputs, section, state) -> base.TermResult:
    # Unlabeled images (weak view) get k-WTA targets of their own outputs
    # against the homeostasis thresholds; labeled ones their one-hot label.
    unlabeled_outputs = _probs(inputs.view_a_logits)
    unlabeled_targets = losses.kwta_targets(unlabeled_outputs, state["thresholds"], k=section.k)
    labeled_outputs = _probs(inputs.labeled_logits)
    labeled_targets = jax.nn.one_hot(inputs.labels, inputs.num_classes, dtype=jnp.float32)
    per_example = jnp.concatenate(
        [
            losses.self_defined_target_loss(labeled_outputs, labeled_targets),
            losses.self_defined_target_loss(unlabeled_outputs, unlabeled_targets),
        ]
    )
    thresholds = losses.homeostasis_update(
        state["thresholds"], unlabeled_targets, k=section.k, rate=section.rate
    )
    spread = jnp.max(thresholds) - jnp.min(thresholds)
    return base.TermResult(
        jnp.mean(per_example), {"sdt_threshold_spread": spread}, {"thresholds": thresholds}
    )


def _check_sdt(section, config) -> list[str]:
    problems = []
    if not isinstance(section.k, int) or not 1 <= section.k < config.data.num_classes:
        problems.append(
            f"loss.sdt.k={section.k!r} must be an integer in [1, data.num_classes="
            f"{config.data.num_classes})."
        )
    if section.rate < 0:
        problems.append(f"loss.sdt.rate={section.rate} must be >= 0.")
    return problems


SDT = register(
    base.Term(
        name="sdt",
        role=base.UNSUPERVISED,
        loss=_self_defined_target,
        description="self-defined target: squared error to k-winner-take-all targets with "
        "homeostasis thresholds",
        defaults={
            "k": 1,  # one winning class per image: a classifier's output layer.
            "rate": 0.01,  # ours: the homeostasis step gamma.
        },
        unlabeled_views="weak_strong",
        init_state=lambda spec, section: {
            "thresholds": jnp.zeros((spec.num_classes,), jnp.float32)
        },
        check=_check_sdt,
    )
)


def _mio(inputs: base.Inputs, section, state) -> base.TermResult:
    value, metrics = losses.mio_loss(
        inputs.view_a_projections,
        inputs.view_b_projections,
        tau_positive=section.tau_positive,
        tau_negative=section.tau_negative,
        l2_weight=section.l2_weight,
    )
    return base.TermResult(value, {f"mio_{key}": metric for key, metric in metrics.items()})


def _check_mio(section, config) -> list[str]:
    problems = []
    if not isinstance(section.projector_dim, int) or section.projector_dim < 1:
        problems.append(f"loss.mio.projector_dim={section.projector_dim!r} must be >= 1.")
    if section.tau_positive <= 0 or section.tau_negative <= 0:
        problems.append("loss.mio.tau_positive and loss.mio.tau_negative must be > 0.")
    if section.l2_weight < 0:
        problems.append(f"loss.mio.l2_weight={section.l2_weight} must be >= 0.")
    return problems


MIO = register(
    base.Term(
        name="mio",
        role=base.UNSUPERVISED,
        loss=_mio,
        description="MIO: binary cross-entropy over the two views' pair similarities on a "
        "projector head, plus an L2 term",
        defaults={
            "tau_positive": 0.5,
            "tau_negative": 0.5,
            "l2_weight": 1.0,  # ours: lambda.
            "projector_dim": 128,  # ours: SimCLR's embedding width.
        },
        unlabeled_views="weak_strong",
        model_heads=lambda section: {"projector_dim": section.projector_dim},
        check=_check_mio,
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
