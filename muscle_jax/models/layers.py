"""Initialisers and small functions shared by the backbones.

The initialisers follow the FixMatch reference code, so that a model trained
here starts from the same distribution as the published baselines.
"""

import jax
import jax.numpy as jnp
from flax import nnx

# FixMatch draws conv kernels from N(0, 2 / (k * k * out_channels)): He-normal
# over fan-out, not a truncated normal.
conv_kernel_init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")
dense_kernel_init = nnx.initializers.glorot_normal()

LEAKY_RELU_SLOPE = 0.1


def leaky_relu(x: jax.Array) -> jax.Array:
    """Leaky ReLU with the 0.1 slope of FixMatch, MixMatch and Mean Teacher."""
    return jax.nn.leaky_relu(x, negative_slope=LEAKY_RELU_SLOPE)


def global_average_pool(x: jax.Array) -> jax.Array:
    """Mean over the spatial axes of an NHWC map: ``[b, h, w, c] -> [b, c]``."""
    return jnp.mean(x, axis=(1, 2))


def dropout(x: jax.Array, *, rate: float, train: bool, key: jax.Array | None) -> jax.Array:
    """Inverted dropout driven by an explicit key, so a step is a pure function.

    The key is an argument rather than an `nnx.Rngs` held in the model: the
    trainer derives it with `fold_in(key, step)`, there is no RNG counter in
    the model state to checkpoint, and resuming reproduces the same masks.
    """
    if not train or rate == 0.0:
        return x
    if key is None:
        raise ValueError(
            f"dropout rate {rate} needs dropout_key=<PRNG key> when train=True; "
            "pass one or build the model with dropout_rate=0."
        )
    keep = 1.0 - rate
    mask = jax.random.bernoulli(key, keep, x.shape)
    return jnp.where(mask, x / keep, jnp.zeros_like(x))
