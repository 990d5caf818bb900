"""Distribution alignment as a term option: its state and its checks (AdaMatch, FixMatch)."""

from __future__ import annotations

from etils import epy

# Loaded when a term first runs (see muscle_jax/methods/base.py).
with epy.lazy_imports():
    import jax
    import jax.numpy as jnp

    from muscle_jax import losses

from muscle_jax.methods import base

# What p_model is aligned to: uniform, the labeled subset's class histogram
# (known when the run is built), or an EMA of the labeled batch's mean prediction.
DISTRIBUTION_ALIGNMENT_TARGETS = ("uniform", "labeled", "labeled_ema")

# Where the running mean prediction (p_model, SoftMatch's p_hat) starts: the first
# batch's mean replaces it at the first update (USB's DistAlignEMAHook, the default),
# or the uniform distribution is averaged in from the start.
P_MODEL_INITS = ("first_batch", "uniform")

# p_model_init was added after runs were saved, which started p_model at uniform.
# Their checkpoints read as "first_batch" all the same: the state's `initialised`
# flag, set by the first update, makes the two starts update alike from then on,
# so a resumed run goes on as it would have, and an old config is not refused for
# a key that changes nothing in it.
P_MODEL_INIT_ADDED = {"p_model_init": "first_batch"}


def alignment_state(spec: base.StateSpec, target: str) -> dict[str, jax.Array]:
    """Distribution alignment's state for ``target`` (`DISTRIBUTION_ALIGNMENT_TARGETS`)."""
    p_target = None
    if target == "labeled":
        p_target = jnp.asarray(spec.labeled_class_counts, jnp.float32)
    return losses.distribution_alignment_init(spec.num_classes, p_target=p_target)


def check_alignment(
    prefix: str,
    target: str,
    momentum: float,
    *,
    target_key: str = "alignment_target",
    allowed_extra: tuple[str, ...] = (),
) -> list[str]:
    """Problems with a distribution-alignment target and momentum under ``prefix``."""
    problems = []
    if not 0.0 <= momentum < 1.0:
        problems.append(f"{prefix}.alignment_momentum={momentum} must be in [0, 1).")
    if target not in DISTRIBUTION_ALIGNMENT_TARGETS:
        allowed = allowed_extra + DISTRIBUTION_ALIGNMENT_TARGETS
        problems.append(f"{prefix}.{target_key}={target!r} is not one of {allowed}.")
    return problems


def check_start(key: str, value: str) -> list[str]:
    """The problem with a running mean's start ``value`` (`P_MODEL_INITS`) at ``key``, if any."""
    if value in P_MODEL_INITS:
        return []
    return [f"{key}={value!r} is not one of {P_MODEL_INITS}."]
