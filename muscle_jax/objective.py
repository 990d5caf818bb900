"""The train step's objective: one forward pass, the chosen terms, their weighted sum.

Everything here runs inside the jitted train step. The model is run once
over concat(labeled, [labeled strong], unlabeled views: two, or three when
`methods.pipeline_views` adds a second weak view), as the reference
FixMatch code does, so BatchNorm statistics see the same mix of images. The
terms (`muscle_jax.methods`) read that pass's outputs; a term that needs a
second pass (MixMatch) makes it in its ``prepare``. The total is combined
here and nowhere else:

    total = w_s L_sup + w_c(t) L_cons + w_u(t) L_unsup + w_a L_addon

and every method reports the same metric keys (`METRIC_KEYS`), plus the
diagnostics its terms add (e.g. FixMatch's ``mask_rate``).
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from muscle_jax import losses, methods, metric_keys
from muscle_jax.models import ModelOutput

Model = Callable[..., ModelOutput]

# Reported for every method (`metric_keys`).
METRIC_KEYS = metric_keys.METRIC_KEYS


def term_weights(loss_config: ml_collections.ConfigDict, step: jax.Array) -> dict[str, jax.Array]:
    """The ramped weights of the consistency and unsupervised terms at ``step``."""
    return {
        "consistency": losses.term_weight(
            step,
            max_weight=loss_config.consistency_weight,
            rampup_steps=loss_config.consistency_rampup_steps,
            kind=loss_config.consistency_rampup,
        ),
        "unsupervised": losses.term_weight(
            step,
            max_weight=loss_config.unsupervised_weight,
            rampup_steps=loss_config.unsupervised_rampup_steps,
            kind=loss_config.unsupervised_rampup,
        ),
    }


def _split(array: jax.Array | None, sizes: list[int], axis: int = 0) -> list[Any]:
    if array is None:
        return [None] * len(sizes)
    offsets = [sum(sizes[:i]) for i in range(1, len(sizes))]
    return jnp.split(array, offsets, axis=axis)


def _inputs(model, batch, *, teacher, key, step, total_steps, num_classes, dtype, needs_teacher):
    """Runs the student once (and the teacher if asked) and names the outputs."""
    names = ["labeled"]
    if "labeled_strong" in batch:
        names.append("labeled_strong")
    if "unlabeled_a" in batch:
        names += ["unlabeled_a", "unlabeled_b"]
    if "unlabeled_c" in batch:  # A second weak view, in the same pass (BatchNorm sees it).
        names.append("unlabeled_c")
    sizes = [batch[name].shape[0] for name in names]
    images = jnp.concatenate([batch[name] for name in names]).astype(dtype)
    # Models built with a dropout rate draw from the key; at rate 0 they ignore it.
    output = model(images, train=True, dropout_key=methods.dropout_key(key, 0))
    logits = dict(zip(names, _split(output.logits, sizes), strict=True))
    projections = dict(zip(names, _split(output.projections, sizes), strict=True))
    balanced = dict(zip(names, _split(output.balanced_logits, sizes), strict=True))
    mi_head = dict(zip(names, _split(output.mi_logits, sizes), strict=True))
    # Over-clustering logits are [heads, batch, outputs]: the batch is axis 1.
    heads = dict(zip(names, _split(output.overclustering_logits, sizes, axis=1), strict=True))
    teacher_a_logits = None
    if needs_teacher and "unlabeled_a" in batch:
        teacher_a_logits = teacher(batch["unlabeled_a"].astype(dtype), train=False).logits
    return methods.Inputs(
        labeled_logits=logits["labeled"],
        labels=batch["label"],
        labeled_index=batch.get("labeled_index"),
        supervised_logits=logits["labeled"],
        supervised_targets=batch["label"],
        labeled_strong_logits=logits.get("labeled_strong"),
        view_a_logits=logits.get("unlabeled_a"),
        view_b_logits=logits.get("unlabeled_b"),
        view_a_projections=projections.get("unlabeled_a"),
        view_b_projections=projections.get("unlabeled_b"),
        view_a_overclustering=heads.get("unlabeled_a"),
        view_b_overclustering=heads.get("unlabeled_b"),
        view_c_logits=logits.get("unlabeled_c"),
        view_c_projections=projections.get("unlabeled_c"),
        view_c_overclustering=heads.get("unlabeled_c"),
        teacher_a_logits=teacher_a_logits,
        labeled_balanced_logits=balanced["labeled"],
        view_a_balanced_logits=balanced.get("unlabeled_a"),
        view_b_balanced_logits=balanced.get("unlabeled_b"),
        labeled_mi_logits=mi_head["labeled"],
        labeled_strong_mi_logits=mi_head.get("labeled_strong"),
        view_a_mi_logits=mi_head.get("unlabeled_a"),
        view_b_mi_logits=mi_head.get("unlabeled_b"),
        view_c_mi_logits=mi_head.get("unlabeled_c"),
        unlabeled_index=batch.get("unlabeled_index"),
        model=model,
        batch=batch,
        key=key,
        step=step,
        total_steps=total_steps,
        num_classes=num_classes,
        dtype=dtype,
    )


def compute_loss(
    model: Model,
    batch: dict[str, jax.Array],
    *,
    step: jax.Array,
    key: jax.Array,
    loss_config: ml_collections.ConfigDict,
    num_classes: int,
    total_steps: int = 0,
    method_state: dict[str, Any] | None = None,
    teacher: Model | None = None,
    dtype: jnp.dtype = jnp.float32,
) -> tuple[jax.Array, tuple[dict[str, jax.Array], dict[str, Any]]]:
    """The objective of ``model`` on ``batch``: ``(total, (metrics, new method state))``.

    ``batch`` holds the input pipeline's keys: ``labeled``, ``label``,
    ``labeled_index``, optionally ``labeled_strong``, ``unlabeled_a`` and
    ``unlabeled_b``, and ``unlabeled_c`` where `methods.pipeline_views` is
    "weak_strong_weak". ``teacher`` (the EMA model) is used by terms that need
    it; ``method_state`` is `methods.init_state`'s tree, carried across steps;
    ``total_steps`` is the run's length, for terms with their own schedule.
    """
    method_state = {} if method_state is None else method_state
    _check_views(batch, loss_config)
    terms = methods.selected(loss_config)
    sections = {role: methods.section(loss_config, term) for role, term in terms.items()}
    inputs = _inputs(
        model,
        batch,
        teacher=teacher,
        key=key,
        step=step,
        total_steps=total_steps,
        num_classes=num_classes,
        dtype=dtype,
        needs_teacher=methods.needs_teacher(loss_config),
    )
    for role, term in terms.items():
        if term.prepare is not None and inputs.has_unlabeled:
            inputs = term.prepare(inputs, sections[role])
    results = {}
    for role, term in terms.items():
        uses_unlabeled = term.unlabeled_views is not None
        if uses_unlabeled and not inputs.has_unlabeled:
            results[role] = methods.TermResult(jnp.zeros((), jnp.float32))
            continue
        results[role] = term.loss(inputs, sections[role], method_state.get(term.name))

    weights = term_weights(loss_config, step)
    # The one place the terms are combined.
    total = (
        loss_config.supervised_weight * results[methods.SUPERVISED].value
        + weights["consistency"] * results[methods.CONSISTENCY].value
        + weights["unsupervised"] * results[methods.UNSUPERVISED].value
        + loss_config.addon_weight * results[methods.ADDON].value
    )

    metrics = {}
    for result in results.values():
        metrics.update(result.metrics)
    if "mutual_information" not in metrics:
        metrics["mutual_information"] = _diagnostic_mutual_information(inputs)
    metrics.update(
        total=total,
        supervised=results[methods.SUPERVISED].value,
        consistency=results[methods.CONSISTENCY].value,
        unsupervised=results[methods.UNSUPERVISED].value,
        addon=results[methods.ADDON].value,
        consistency_weight=weights["consistency"],
        unsupervised_weight=weights["unsupervised"],
    )
    new_state = {
        term.name: method_state[term.name] if results[role].state is None else results[role].state
        for role, term in terms.items()
        if term.name in method_state
    }
    return total, (metrics, new_state)


def _check_views(batch: dict[str, jax.Array], loss_config: ml_collections.ConfigDict) -> None:
    """Refuses (at trace time) a batch without the third view the terms pair, or with a stray one.

    Without it a term that pairs two weak views would silently read the strong one.
    """
    if "unlabeled_a" not in batch:
        return
    wanted = methods.pipeline_views(loss_config) == "weak_strong_weak"
    if wanted != ("unlabeled_c" in batch):
        raise ValueError(
            f"The batch {'lacks' if wanted else 'has'} 'unlabeled_c' (a second weak view of the "
            f"unlabeled images), but the chosen terms need views "
            f"{methods.pipeline_views(loss_config)!r}; make the batch with the views "
            "methods.unlabeled_views(config) names (train.make_train_batches does)."
        )


def _diagnostic_mutual_information(inputs: methods.Inputs) -> jax.Array:
    if not inputs.has_unlabeled:
        return jnp.zeros((), jnp.float32)
    probs_a = jax.nn.softmax(jax.lax.stop_gradient(inputs.view_a_logits))
    probs_b = jax.nn.softmax(jax.lax.stop_gradient(inputs.view_b_logits))
    return losses.mutual_information(probs_a, probs_b)
