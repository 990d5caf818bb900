"""CNN-13, the "conv-large" network of Laine & Aila and Mean Teacher.

Three 3x3 convs of 128 channels, max pool, dropout; three of 256, max pool,
dropout; a valid 3x3 conv of 512, 1x1 convs of 256 and 128; global average
pool (128 features; `classifier.Classifier` adds the linear head). Every
conv is followed by BatchNorm and leaky ReLU 0.1.

Differences from the Mean Teacher PyTorch code, kept on purpose:
- No weight normalisation and no conv biases (BatchNorm follows each conv).
- Dropout defaults to 0 so that every model shares the deterministic call
  ``model(x, train=...)``. Mean Teacher used 0.5: pass ``dropout_rate=0.5``
  and give the call a ``dropout_key`` while training.

References:
  Laine & Aila, Temporal Ensembling for Semi-Supervised Learning, 2017.
  Tarvainen & Valpola, Mean teachers are better role models, 2017.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from muscle_jax.models import layers


class ConvBNAct(nnx.Module):
    """Conv (no bias) -> BatchNorm -> leaky ReLU 0.1."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        size: int,
        *,
        padding: str,
        bn_momentum: float,
        bn_epsilon: float,
        dtype: jnp.dtype,
        param_dtype: jnp.dtype,
        rngs: nnx.Rngs,
    ):
        self.conv = layers.conv(
            in_channels,
            out_channels,
            size,
            padding=padding,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.bn = nnx.BatchNorm(
            out_channels,
            momentum=bn_momentum,
            epsilon=bn_epsilon,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        return layers.leaky_relu(self.bn(self.conv(x), use_running_average=not train))


# (out_channels, kernel size, padding) per stage; a max pool and dropout
# follow every stage but the last.
_STAGES = (
    ((128, 3, "SAME"),) * 3,
    ((256, 3, "SAME"),) * 3,
    ((512, 3, "VALID"), (256, 1, "SAME"), (128, 1, "SAME")),
)


class CNN13(nnx.Module):
    """CNN-13 backbone for 32x32 images: 128 pooled features.

    Args:
      in_channels: image channels.
      dropout_rate: dropout after each max pool (Mean Teacher: 0.5; default 0,
        see the module docstring); when > 0 training calls need ``dropout_key``.
      bn_momentum: running-average decay of BatchNorm (PyTorch default 0.9).
      bn_epsilon: BatchNorm epsilon.
      dtype: compute dtype.
      param_dtype: parameter dtype.
      rngs: initialisation RNGs.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        dropout_rate: float = 0.0,
        bn_momentum: float = 0.9,
        bn_epsilon: float = 1e-5,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.dropout_rate = dropout_rate
        stages = []
        channels = in_channels
        for stage in _STAGES:
            convs = []
            for out_channels, size, padding in stage:
                convs.append(
                    ConvBNAct(
                        channels,
                        out_channels,
                        size,
                        padding=padding,
                        bn_momentum=bn_momentum,
                        bn_epsilon=bn_epsilon,
                        dtype=dtype,
                        param_dtype=param_dtype,
                        rngs=rngs,
                    )
                )
                channels = out_channels
            stages.append(nnx.List(convs))
        self.stages = nnx.List(stages)
        self.num_features = channels

    def __call__(
        self, images: jax.Array, *, train: bool, dropout_key: jax.Array | None = None
    ) -> jax.Array:
        """Pooled features ``[batch, num_features]`` of NHWC ``images``; ``train``: batch BN."""
        x = images
        last = len(self.stages) - 1
        for index, stage in enumerate(self.stages):
            for conv in stage:
                x = conv(x, train=train)
            if index < last:
                x = nnx.max_pool(x, (2, 2), strides=(2, 2))
                key = None if dropout_key is None else jax.random.fold_in(dropout_key, index)
                x = layers.dropout(x, rate=self.dropout_rate, train=train, key=key)
        return layers.global_average_pool(x)
