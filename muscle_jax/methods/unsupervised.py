"""Unsupervised terms: IIC's mutual information (MUSCLE), self-defined target, MIO."""

from __future__ import annotations

from etils import epy

# Loaded when a term first runs (see muscle_jax/methods/base.py).
with epy.lazy_imports():
    import jax
    import jax.numpy as jnp
    import numpy as np

    from muscle_jax import losses

from muscle_jax.methods import base, register


def _probs(logits: jax.Array) -> jax.Array:
    return jax.nn.softmax(jnp.asarray(logits, jnp.float32))


# loss.iic's choices. The defaults are IIC's MI as MUSCLE first trained it.
IIC_HEADS = ("classifier", "auxiliary", "both")
IIC_MARGINALS = ("uniform", "prior")
IIC_PRIORS = ("labeled", "estimated")
# The views whose class assignments the joint pairs: the weak with the strong view
# (the consistency term's pair) or with a second weak view (IIC's semi-supervised recipe).
IIC_VIEWS = ("weak_strong", "weak_weak")

# loss.iic's keys added after runs were saved, with the values that do what those runs did.
IIC_ADDED_KEYS = {
    "head": "classifier",
    "anchor_labeled": False,
    "marginal": "uniform",
    "prior": "labeled",
    "prior_momentum": 0.999,
    "confidence_gate": 0.0,
    "views": "weak_strong",
}


def _heads(section) -> tuple[str, ...]:
    """The heads the MI term trains: the evaluated classifier, the MI head or both."""
    return {"classifier": ("classifier",), "auxiliary": ("auxiliary",)}.get(
        section.head, ("classifier", "auxiliary")
    )


def _paired(inputs: base.Inputs, section, output: str):
    """The ``output`` the joint pairs with ``view_a``'s: ``view_b``'s, or a second weak view's."""
    if section.views == "weak_weak":
        return inputs.second_weak(output)
    return getattr(inputs, f"view_b_{output}")


def _joint_rows(inputs: base.Inputs, section, head: str, gate):
    """The two sides of the joint on ``head`` and the rows that enter it.

    Returns ``(probs_a, probs_b, where)``: ``[N, C]`` each, the weak view's and
    the paired view's (`_paired`), where ``N`` is the unlabeled batch, plus
    the labeled batch in front with ``on_labeled`` (their weak and strong
    views' predictions) or ``anchor_labeled`` (their one-hot labels on both
    sides); ``where`` ``[N]`` (None: every row) keeps the
    labeled rows and the unlabeled rows that pass the confidence gate.
    """
    if head == "classifier":
        labeled, labeled_strong = inputs.labeled_logits, inputs.labeled_strong_logits
        view_a, view_b = inputs.view_a_logits, _paired(inputs, section, "logits")
    else:
        labeled, labeled_strong = inputs.labeled_mi_logits, inputs.labeled_strong_mi_logits
        view_a, view_b = inputs.view_a_mi_logits, _paired(inputs, section, "mi_logits")
    probs_a, probs_b = _probs(view_a), _probs(view_b)
    if section.on_labeled:
        # The labeled images' two views join the joint distribution's batch.
        front_a, front_b = _probs(labeled), _probs(labeled_strong)
    elif section.anchor_labeled:
        # Their labels instead: class k's labeled images put mass on the joint's
        # diagonal entry (k, k), which ties cluster k to class k.
        front_a = front_b = jax.nn.one_hot(inputs.labels, probs_a.shape[-1], dtype=jnp.float32)
    else:
        return probs_a, probs_b, gate
    where = None
    if gate is not None:
        where = jnp.concatenate([jnp.ones(front_a.shape[:1], bool), gate])
    return jnp.concatenate([front_a, probs_a]), jnp.concatenate([front_b, probs_b]), where


def _iic(inputs: base.Inputs, section, state) -> base.TermResult:
    r"""Minus IIC's mutual information on the chosen head(s), with the chosen remedies.

    ``L = -sum_h J(h) - overclustering_weight * mean_k MI(overclustering head k)``
    over ``h`` in `_heads` (the classifier's logits and/or the MI head's),
    where ``J(h)`` is `losses.mutual_information` of that head's two views'
    softmax ``[N, C]`` (the weak view and, by ``views``, the strong or a second
    weak view: the rows of `_joint_rows`; ``where`` from the
    confidence gate ``max_c sg(softmax(z_a^classifier)) > confidence_gate``),
    with ``prior=pi`` under ``marginal="prior"``:
    ``J = MI + (2 lamb - 1) sum_i (m_i - pi_i) log pi_i``. ``state`` is
    ``{"prior": pi [C]}`` under ``marginal="prior"`` (else None); the
    ``estimated`` prior is first moved by `losses.class_prior_update` with the
    classifier's weak-view softmax. Returns the scalar loss, its diagnostics
    and the new state.
    """
    metrics, new_state = {}, None
    # The evaluated classifier's weak view: what the labels teach, hence the
    # confidence the gate reads and the class distribution the prior estimates.
    weak = jax.lax.stop_gradient(_probs(inputs.view_a_logits))
    gate = None
    if section.confidence_gate > 0:
        gate = jnp.max(weak, axis=-1) > section.confidence_gate
        metrics["iic_gate_rate"] = jnp.mean(gate.astype(jnp.float32))
    prior = None
    if section.marginal == "prior":
        prior = state["prior"]
        if section.prior == "estimated":
            prior = losses.class_prior_update(prior, weak, momentum=section.prior_momentum)
            new_state = {"prior": prior}
        metrics["iic_prior_min"] = jnp.min(prior)
    value = jnp.zeros((), jnp.float32)
    for head in _heads(section):
        probs_a, probs_b, where = _joint_rows(inputs, section, head, gate)
        objective = losses.mutual_information(
            probs_a, probs_b, lamb=section.lamb, where=where, prior=prior
        )
        value = value - objective
        if prior is not None:  # The MI itself, comparable with the uniform marginal's.
            objective = losses.mutual_information(probs_a, probs_b, lamb=section.lamb, where=where)
        # With the MI head alone, the objective reports the classifier's own MI.
        key = "mutual_information" if head == "classifier" else "mi_head_mutual_information"
        metrics[key] = objective
    if inputs.view_a_overclustering is not None:
        # The over-clustering heads pair the same views as the joint, as in IIC.
        overclustering = losses.multi_head_mutual_information(
            _probs(inputs.view_a_overclustering),
            _probs(_paired(inputs, section, "overclustering")),
            lamb=section.lamb,
        )
        value = value - section.overclustering_weight * overclustering
        metrics["overclustering_mutual_information"] = overclustering
    return base.TermResult(value, metrics, new_state)


def _iic_state(spec: base.StateSpec, section) -> dict:
    """The class prior the marginal is matched to (``marginal="prior"``); else no state."""
    if section.marginal != "prior":
        return {}
    if section.prior == "labeled":
        counts = np.asarray(spec.labeled_class_counts, np.float32)
        if counts.shape != (spec.num_classes,) or counts.sum() <= 0:
            raise ValueError(
                f"loss.iic.prior='labeled' needs the labeled set's {spec.num_classes} class "
                f"counts; got {spec.labeled_class_counts}."
            )
        return {"prior": jnp.asarray(counts / counts.sum())}
    # "estimated": uniform until the unlabeled batches move it.
    return {"prior": jnp.full((spec.num_classes,), 1.0 / spec.num_classes, jnp.float32)}


def _check_iic(section, config) -> list[str]:
    problems = []
    if section.lamb <= 0:
        problems.append(f"loss.iic.lamb={section.lamb} must be > 0.")
    if section.overclustering_weight < 0:
        problems.append(
            f"loss.iic.overclustering_weight={section.overclustering_weight} must be >= 0."
        )
    for key, choices in (
        ("head", IIC_HEADS),
        ("marginal", IIC_MARGINALS),
        ("prior", IIC_PRIORS),
        ("views", IIC_VIEWS),
    ):
        if section[key] not in choices:
            problems.append(f"loss.iic.{key}={section[key]!r} is not one of {choices}.")
    if section.views == "weak_weak" and section.on_labeled:
        # The labeled rows would pair a weak with a strong view, the unlabeled two weak ones.
        problems.append(
            "loss.iic.views='weak_weak' pairs two weak views, but loss.iic.on_labeled=True "
            "joins the labeled images by their weak and strong views; set one of them back "
            "(views='weak_strong' or on_labeled=False)."
        )
    if section.anchor_labeled and section.on_labeled:
        problems.append(
            "loss.iic.anchor_labeled=True joins the labeled images by their labels and "
            "loss.iic.on_labeled=True by their predictions; set at most one of them to True."
        )
    if not 0.0 <= section.prior_momentum <= 1.0:
        problems.append(f"loss.iic.prior_momentum={section.prior_momentum} must be in [0, 1].")
    if not 0.0 <= section.confidence_gate < 1.0:
        problems.append(
            f"loss.iic.confidence_gate={section.confidence_gate} must be in [0, 1) (0: off)."
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
            # The remedies for a lost class (docs/method.md), off by default (ours):
            "head": "classifier",  # | "auxiliary" (an MI head) | "both".
            "anchor_labeled": False,  # The labeled images join the joint by their labels.
            "marginal": "uniform",  # | "prior": KL(marginal || loss.iic.prior).
            "prior": "labeled",  # | "estimated" (EMA of the predictions), with "prior".
            "prior_momentum": 0.999,  # The estimated prior's EMA, as distribution alignment's.
            "confidence_gate": 0.0,  # > 0: only confident unlabeled images enter the joint.
            # The joint's pair: the weak view with the strong one (ours) or with a
            # second weak view (IIC's semi-supervised recipe), the consistency term
            # keeping its own pair.
            "views": "weak_strong",  # | "weak_weak".
        },
        unlabeled_views="weak_strong",
        labeled_views=lambda section: 2 if section.on_labeled else 1,
        weak_pair=lambda section: section.views == "weak_weak",
        model_heads=lambda section: {"mi_head": True} if section.head != "classifier" else {},
        init_state=_iic_state,
        check=_check_iic,
        added_keys=IIC_ADDED_KEYS,
    )
)


# loss.sdt's choices: the output layer's activation (softmax: ours, a classifier's;
# sigmoid: the paper's MLP) and the loss between outputs and targets (`losses`).
SDT_OUTPUTS = ("softmax", "sigmoid")
# loss.sdt's keys added after runs were saved, with the values that do what those runs did.
SDT_ADDED_KEYS = {"output": "softmax", "criterion": "mse"}


def _sdt_outputs(logits: jax.Array, section) -> jax.Array:
    if section.output == "sigmoid":
        return jax.nn.sigmoid(jnp.asarray(logits, jnp.float32))
    return _probs(logits)


def _self_defined_target(inputs: base.Inputs, section, state) -> base.TermResult:
    # Unlabeled images (weak view) get k-WTA targets of their own outputs
    # against the homeostasis thresholds; labeled ones their one-hot label.
    unlabeled_outputs = _sdt_outputs(inputs.view_a_logits, section)
    unlabeled_targets = losses.kwta_targets(unlabeled_outputs, state["thresholds"], k=section.k)
    labeled_outputs = _sdt_outputs(inputs.labeled_logits, section)
    labeled_targets = jax.nn.one_hot(inputs.labels, inputs.num_classes, dtype=jnp.float32)
    criterion = section.criterion
    per_example = jnp.concatenate(
        [
            losses.self_defined_target_loss(labeled_outputs, labeled_targets, criterion=criterion),
            losses.self_defined_target_loss(
                unlabeled_outputs, unlabeled_targets, criterion=criterion
            ),
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
    num_classes = config.data.num_classes
    # num_classes=0 is the data's count: k's bound is checked again once the data is open
    # (`config_validation.validate_against_dataset`).
    too_large = bool(num_classes) and isinstance(section.k, int) and section.k >= num_classes
    if not isinstance(section.k, int) or section.k < 1 or too_large:
        bound = num_classes or "the data's count"
        problems.append(
            f"loss.sdt.k={section.k!r} must be an integer in [1, data.num_classes={bound})."
        )
    if section.rate < 0:
        problems.append(f"loss.sdt.rate={section.rate} must be >= 0.")
    if section.output not in SDT_OUTPUTS:
        problems.append(f"loss.sdt.output={section.output!r} is not one of {SDT_OUTPUTS}.")
    if section.criterion not in losses.SDT_CRITERIA:
        problems.append(
            f"loss.sdt.criterion={section.criterion!r} is not one of {losses.SDT_CRITERIA}."
        )
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
            # ours: the softmax, so the target and the argmax read the same head; the
            # paper's MLP has a sigmoid output layer (configs/sdt_mlp.py).
            "output": "softmax",  # | "sigmoid".
            # The paper's squared error; "cross_entropy" is its code's semi-supervised
            # recipe (a softmax cross-entropy over the outputs).
            "criterion": "mse",  # | "cross_entropy".
        },
        unlabeled_views="weak_strong",
        init_state=lambda spec, section: {
            "thresholds": jnp.zeros((spec.num_classes,), jnp.float32)
        },
        check=_check_sdt,
        added_keys=SDT_ADDED_KEYS,
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
