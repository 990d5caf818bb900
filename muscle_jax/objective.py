"""Turns a batch and a model into the MUSCLE loss for one train step.

Everything here runs inside the jitted train step. The model is run once
over concat(labeled, unlabeled views), as the reference FixMatch code does,
so BatchNorm statistics see the same mix of images; MixMatch needs a second
pass over its mixed batch.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections

from muscle_jax import losses
from muscle_jax.models import ModelOutput

Model = Callable[..., ModelOutput]


def term_weights(loss_config: ml_collections.ConfigDict, step: jax.Array) -> dict[str, jax.Array]:
    """The ramped weights of the consistency and MI terms at ``step``."""
    return {
        "consistency": losses.term_weight(
            step,
            max_weight=loss_config.consistency_weight,
            rampup_steps=loss_config.consistency_rampup_steps,
            kind=loss_config.consistency_rampup,
        ),
        "mutual_information": losses.term_weight(
            step,
            max_weight=loss_config.mi_weight,
            rampup_steps=loss_config.mi_rampup_steps,
            kind=loss_config.mi_rampup,
        ),
    }


def _split(array: jax.Array, sizes: list[int], axis: int = 0) -> list[jax.Array]:
    offsets = [sum(sizes[:i]) for i in range(1, len(sizes))]
    return jnp.split(array, offsets, axis=axis)


def _mixmatch_pieces(
    model: Model,
    batch: dict[str, jax.Array],
    probs_a: jax.Array,
    probs_b: jax.Array,
    loss_config: ml_collections.ConfigDict,
    num_classes: int,
    key: jax.Array,
    dtype: jnp.dtype,
) -> dict[str, jax.Array]:
    """MixMatch: sharpened guesses, MixUp over labeled + unlabeled, a second pass."""
    guess = losses.sharpen((probs_a + probs_b) / 2, temperature=loss_config.mixmatch_temperature)
    guess = jax.lax.stop_gradient(guess)
    inputs = jnp.concatenate([batch["labeled"], batch["unlabeled_a"], batch["unlabeled_b"]])
    targets = jnp.concatenate(
        [jax.nn.one_hot(batch["label"], num_classes), guess, guess], dtype=jnp.float32
    )
    mixed_inputs, mixed_targets, _ = losses.mixup(
        key, inputs, targets, alpha=loss_config.mixmatch_alpha
    )
    logits = model(mixed_inputs.astype(dtype), train=True).logits
    num_labeled = batch["labeled"].shape[0]
    return {
        "labeled_logits": logits[:num_labeled],
        "labels": mixed_targets[:num_labeled],
        "student_logits": logits[num_labeled:],
        "consistency_targets": mixed_targets[num_labeled:],
    }


def compute_loss(
    model: Model,
    batch: dict[str, jax.Array],
    *,
    step: jax.Array,
    key: jax.Array,
    loss_config: ml_collections.ConfigDict,
    num_classes: int,
    teacher: Model | None = None,
    dtype: jnp.dtype = jnp.float32,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The MUSCLE loss of ``model`` on ``batch``; returns ``(loss, aux metrics)``.

    ``batch`` holds the input pipeline's keys: ``labeled``, ``label``,
    optionally ``labeled_strong``, ``unlabeled_a`` and ``unlabeled_b``.
    ``teacher`` (the EMA model) is needed for ``mean_teacher`` only.
    """
    parts = [batch["labeled"]]
    if "labeled_strong" in batch:
        parts.append(batch["labeled_strong"])
    has_unlabeled = "unlabeled_a" in batch
    if has_unlabeled:
        parts += [batch["unlabeled_a"], batch["unlabeled_b"]]
    output = model(jnp.concatenate(parts).astype(dtype), train=True)
    logits = _split(output.logits, [p.shape[0] for p in parts])
    labeled_logits = logits[0]
    weights = term_weights(loss_config, step)

    if not has_unlabeled:
        supervised = jnp.mean(
            losses.supervised_loss(
                labeled_logits, batch["label"], label_smoothing=loss_config.label_smoothing
            )
        )
        zero = jnp.zeros((), jnp.float32)
        aux = {"supervised": supervised, "consistency": zero, "mutual_information": zero}
        aux["total"] = loss_config.supervised_weight * supervised
        return aux["total"], aux

    view_a_logits, view_b_logits = logits[-2], logits[-1]
    probs_a, probs_b = jax.nn.softmax(view_a_logits), jax.nn.softmax(view_b_logits)
    mi_probs = None
    if loss_config.mi_on_labeled and "labeled_strong" in batch:
        mi_probs = (
            jnp.concatenate([jax.nn.softmax(logits[0]), probs_a]),
            jnp.concatenate([jax.nn.softmax(logits[1]), probs_b]),
        )
    extra = {"labels": batch["label"], "labeled_logits": labeled_logits}
    if loss_config.consistency == "mean_teacher":
        teacher_logits = teacher(batch["unlabeled_a"].astype(dtype), train=False).logits
        extra["consistency_targets"] = jax.lax.stop_gradient(jax.nn.softmax(teacher_logits))
    elif loss_config.consistency == "mixmatch":
        extra.update(
            _mixmatch_pieces(model, batch, probs_a, probs_b, loss_config, num_classes, key, dtype)
        )
        # MI on the un-mixed views: mixing would blur the class assignments.
        mi_probs = mi_probs or (probs_a, probs_b)

    total, aux = losses.muscle_loss(
        extra.pop("labeled_logits"),
        extra.pop("labels"),
        view_a_logits,
        view_b_logits,
        consistency=loss_config.consistency,
        supervised_weight=loss_config.supervised_weight,
        consistency_weight=weights["consistency"],
        mutual_information_weight=weights["mutual_information"],
        threshold=loss_config.threshold,
        lamb=loss_config.lamb,
        label_smoothing=loss_config.label_smoothing,
        mi_probs=mi_probs,
        **extra,
    )
    if output.overclustering_logits is not None:
        # Over-clustering logits are [heads, batch, outputs]: the batch is axis 1.
        heads = _split(output.overclustering_logits, [p.shape[0] for p in parts], axis=1)
        overclustering_mi = losses.multi_head_mutual_information(
            jax.nn.softmax(heads[-2]), jax.nn.softmax(heads[-1]), lamb=loss_config.lamb
        )
        total = total - (
            weights["mutual_information"] * loss_config.overclustering_weight * overclustering_mi
        )
        aux["overclustering_mutual_information"] = overclustering_mi
        aux["total"] = total
    aux["consistency_weight"] = weights["consistency"]
    aux["mi_weight"] = weights["mutual_information"]
    return total, aux
