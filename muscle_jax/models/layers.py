"""Initialisers and small functions shared by the backbones.

The initialisers follow the FixMatch reference code, so that a model trained
here starts from the same distribution as the published baselines.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from muscle_jax.models import conv as conv_lib

# FixMatch draws conv kernels from N(0, 2 / (k * k * out_channels)): He-normal
# over fan-out, not a truncated normal.
conv_kernel_init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")
dense_kernel_init = nnx.initializers.glorot_normal()

LEAKY_RELU_SLOPE = 0.1


def conv(
    in_channels: int,
    out_channels: int,
    size: int,
    stride: int = 1,
    *,
    padding: str | int = "SAME",
    dtype: jnp.dtype,
    param_dtype: jnp.dtype,
    rngs: nnx.Rngs,
) -> nnx.Conv:
    """A bias-free ``size x size`` conv with the FixMatch init and the CPU-fast backward.

    Bias-free because every conv output of these backbones reaches a
    BatchNorm, which cancels a bias. `conv_lib.conv_general_dilated` is XLA's
    convolution with a matmul backward pass on the CPU (see its module).
    """
    return nnx.Conv(
        in_channels,
        out_channels,
        (size, size),
        stride,
        padding=padding,
        use_bias=False,
        kernel_init=conv_kernel_init,
        conv_general_dilated=conv_lib.conv_general_dilated,
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )


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
