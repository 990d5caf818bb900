"""Optimiser and learning-rate schedule from the config."""

import jax
import jax.numpy as jnp
import ml_collections
import optax


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """FixMatch's ``lr * cos(7 pi k / (16 K))`` (or constant), after an optional warm-up.

    The 7/16 keeps the rate at ``cos(7 pi / 16) ~ 0.2 lr`` at the end rather
    than 0, as in the FixMatch paper.
    """
    opt = config.optimizer
    base = opt.learning_rate
    total = config.total_steps

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        if opt.schedule == "cosine":
            rate = base * jnp.cos(7 * jnp.pi * step / (16 * total))
        else:
            rate = jnp.full_like(step, base)
        if opt.warmup_steps:
            rate = rate * jnp.minimum(1.0, (step + 1) / opt.warmup_steps)
        return rate

    return schedule


def decay_mask(params) -> object:
    """True for the kernels of convs and dense layers: biases and BN scales are not decayed."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) == "kernel", params
    )


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """SGD with Nesterov momentum and L2 on kernels (the protocol), or AdamW."""
    opt = config.optimizer
    schedule = learning_rate_schedule(config)
    if opt.name == "adam":
        return optax.adamw(schedule, weight_decay=opt.weight_decay, mask=decay_mask)
    # Weight decay before momentum is an L2 term in the loss, as FixMatch has it.
    return optax.chain(
        optax.add_decayed_weights(opt.weight_decay, mask=decay_mask),
        optax.sgd(schedule, momentum=opt.momentum, nesterov=opt.nesterov),
    )
