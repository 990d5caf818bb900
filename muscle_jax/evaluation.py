"""Accuracy of the raw and EMA models over the whole test set, and its summary.

The counts are made on the device, in the eval step: per-class hits, the
confusion matrix and the histogram of predicted classes (`per_class_hits`);
what they say about lost classes is read on the host (`muscle_jax.diagnostics`).
"""

from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from muscle_jax.models import ModelOutput


def per_class_hits(
    model: Callable[..., ModelOutput],
    batch: dict[str, jax.Array],
    num_classes: int,
    head: str = "logits",
) -> dict[str, jax.Array]:
    """Hits and counts per class, confusion and predicted-class counts; padding counts nothing.

    ``head`` is the `ModelOutput` field that predicts (`methods.evaluation_head`:
    ABC's balanced classifier when that add-on is chosen). ``confusion`` is
    ``[true class, predicted class]``; in int32, exact at any test-set size.
    """
    logits = getattr(model(batch["image"], train=False), head)
    predicted = jnp.argmax(logits, -1)
    mask = batch["mask"].astype(jnp.float32)
    correct = (predicted == batch["label"]).astype(jnp.float32) * mask
    counted = batch["mask"].astype(jnp.int32)
    return {
        "correct": jnp.zeros(num_classes).at[batch["label"]].add(correct),
        "count": jnp.zeros(num_classes).at[batch["label"]].add(mask),
        "confusion": jnp.zeros((num_classes, num_classes), jnp.int32)
        .at[batch["label"], predicted]
        .add(counted),
        "predicted": jnp.zeros(num_classes, jnp.int32).at[predicted].add(counted),
    }


def accumulate_hits(batches_of_hits: Iterable[dict[str, jax.Array]]) -> dict[str, np.ndarray]:
    """Sums the per-batch results on the host (one transfer per batch, at eval time only)."""
    totals: dict[str, np.ndarray] = {}
    for hits in batches_of_hits:
        for key, value in jax.device_get(hits).items():
            totals[key] = totals.get(key, 0) + np.asarray(value, np.float64)
    return totals


def accuracies(correct: np.ndarray, count: np.ndarray) -> tuple[float, list[float | None]]:
    """Overall accuracy and per-class accuracy (None for a class absent from the test set)."""
    per_class = [float(c / n) if n else None for c, n in zip(correct, count)]
    return float(correct.sum() / max(count.sum(), 1)), per_class


def reported_evaluations(steps: list[int], *, last: int, total_steps: int) -> list[int]:
    """Which evaluations the headline accuracy is the median of (their indices).

    The rule: the last ``last`` evaluations (the protocol's median of the last
    20) among those made in the last quarter of the run, step > 3/4 of
    ``total_steps``. A short run's early evaluations, taken while the model
    was still far from trained, never enter the figure; the final evaluation
    always does. (On the protocol's 2^20 steps with an evaluation every 1024,
    the last 20 all lie in the last quarter, so the rule is the protocol's.)
    """
    if not steps:
        raise ValueError("No evaluation has run; set eval_every_steps <= total_steps.")
    late = [index for index, step in enumerate(steps) if step > 0.75 * total_steps]
    return (late or [len(steps) - 1])[-last:]


def reported_accuracy(history: list[float], indices: list[int]) -> float:
    """The median of ``history`` at ``indices`` (from `reported_evaluations`)."""
    return float(np.median([history[index] for index in indices]))


def chosen_by_validation(history: dict, *, num_examples: int | None) -> dict[str, Any] | None:
    """The evaluation a validation set would choose, and its test accuracy (None without one).

    The step with the best validation accuracy of the EMA model (the earliest
    of equals), and the test accuracy of that model at that step: a figure
    chosen without looking at the test set, beside the headline (the median of
    the last evaluations).
    """
    if num_examples is None or not history.get("val_ema_accuracy"):
        return None
    scores = history["val_ema_accuracy"]
    best = int(np.argmax(scores))  # The first maximum: the earliest of equals.
    return {
        "num_examples": num_examples,
        "best_step": history["step"][best],
        "validation_accuracy": scores[best],
        "test_accuracy": history["ema_accuracy"][best],
    }


# The EMA model is the reported one (the protocol's). Its average spans about
# 1 / (1 - ema_decay) steps; when that is more than this share of the run, the
# final EMA still holds a visible part of the weights the run started from
# (at the limit, decay ** total_steps ~ e^-4 ~ 2 %), and it lags the raw model.
EMA_HORIZON_SHARE = 0.25


def ema_horizon_note(ema_decay: float, total_steps: int) -> str | None:
    """A warning when the EMA averages over too long a window for the run; None when it fits.

    Warned, not changed: ``ema_decay`` is part of what a run is (saved with
    its checkpoints, compared across runs), so the run keeps the value it was
    given and the console and summary.md say why its EMA figure may mean
    little, with a value that fits (an average over a tenth of the run).

    >>> print(ema_horizon_note(0.99, 1500))
    None
    >>> ema_horizon_note(0.999, 300).split(",")[0]
    'ema_decay=0.999 averages the EMA model over ~1000 steps'
    """
    if not 0.0 < ema_decay < 1.0 or total_steps < 1:
        return None
    horizon = 1.0 / (1.0 - ema_decay)
    if horizon <= EMA_HORIZON_SHARE * total_steps:
        return None
    fitting = max(0.0, 1.0 - 10.0 / total_steps)
    return (
        f"ema_decay={ema_decay:g} averages the EMA model over ~{horizon:.0f} steps, more than "
        f"a quarter of this {total_steps}-step run: at its end the initial weights still make "
        f"up {ema_decay**total_steps:.0%} of the EMA model, whose accuracy (the headline "
        f"figure) can then lag far behind the raw model's. For a run this long set "
        f"--config.ema_decay={fitting:.3g} (an average over ~{max(1, total_steps // 10)} "
        "steps), or train longer."
    )
