"""CNN-13, the "conv-large" network of Laine & Aila and Mean Teacher.

Three 3x3 convs of 128 channels, max pool, dropout; three of 256, max pool,
dropout; a valid 3x3 conv of 512, 1x1 convs of 256 and 128; global average
pool; linear head. Every conv is followed by BatchNorm and leaky ReLU 0.1.

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

from muscle_jax.models import heads, layers


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
    """CNN-13 classifier for 32x32 images.

    Args:
      num_classes: classifier outputs.
      in_channels: image channels.
      dropout_rate: dropout after each max pool (Mean Teacher: 0.5; default 0,
        see the module docstring); when > 0 training calls need ``dropout_key``.
      bn_momentum: running-average decay of BatchNorm (PyTorch default 0.9).
      bn_epsilon: BatchNorm epsilon.
      overclustering_heads: number of IIC over-clustering heads (0: none).
      overclustering_factor: each such head has ``factor * num_classes`` outputs.
      projector_dim: width of the contrastive projector head (0: none), for MIO.
      balanced_head: a second classifier, ABC's balanced one (`heads.OutputHeads`).
      mi_head: a linear head that only IIC's mutual information trains (``loss.iic.head``).
      dtype: compute dtype; logits come back in float32 regardless.
      param_dtype: parameter dtype.
      rngs: initialisation RNGs.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        in_channels: int = 3,
        dropout_rate: float = 0.0,
        bn_momentum: float = 0.9,
        bn_epsilon: float = 1e-5,
        overclustering_heads: int = 0,
        overclustering_factor: int = 5,
        projector_dim: int = 0,
        balanced_head: bool = False,
        mi_head: bool = False,
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
        self.heads = heads.OutputHeads(
            channels,
            num_classes,
            overclustering_heads=overclustering_heads,
            overclustering_factor=overclustering_factor,
            projector_dim=projector_dim,
            balanced_head=balanced_head,
            mi_head=mi_head,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )

    def __call__(
        self, images: jax.Array, *, train: bool, dropout_key: jax.Array | None = None
    ) -> heads.ModelOutput:
        """Classify NHWC ``images``; ``train`` selects batch vs running BN statistics."""
        x = images
        last = len(self.stages) - 1
        for index, stage in enumerate(self.stages):
            for conv in stage:
                x = conv(x, train=train)
            if index < last:
                x = nnx.max_pool(x, (2, 2), strides=(2, 2))
                key = None if dropout_key is None else jax.random.fold_in(dropout_key, index)
                x = layers.dropout(x, rate=self.dropout_rate, train=train, key=key)
        return self.heads(layers.global_average_pool(x))
