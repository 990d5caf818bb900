"""Wide ResNet (WRN-d-k) as in the FixMatch / MixMatch reference code.

Pre-activation residual blocks, group widths 16k, 32k, 64k after a 16-wide
stem, BatchNorm momentum 0.999 and epsilon 1e-3 (TensorFlow's default, which
the reference inherits), leaky ReLU 0.1, global average pooling; the linear
head is `classifier.Classifier`'s, on the pooled features.

Differences from the TensorFlow reference, kept on purpose:
- Convolutions have no bias. Every conv output reaches a BatchNorm (directly
  or after the residual sum), which cancels a bias; the parameter counts that
  SSL papers quote (1.47 M for WRN-28-2) are the bias-free ones.
- Input normalisation ``(x - mean) / std`` is the input pipeline's job.

References:
  Zagoruyko & Komodakis, Wide Residual Networks, 2016 (arXiv 1605.07146).
  Sohn et al., FixMatch, 2020 (arXiv 2001.07685), ``libml/models.py``.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from muscle_jax.models import layers


class PreActBlock(nnx.Module):
    """BN -> leaky ReLU -> conv3x3 -> BN -> leaky ReLU -> conv3x3, plus shortcut."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int,
        activate_before_residual: bool,
        bn_momentum: float,
        bn_epsilon: float,
        dtype: jnp.dtype,
        param_dtype: jnp.dtype,
        rngs: nnx.Rngs,
    ):
        def conv(cin: int, cout: int, size: int, conv_stride: int = 1) -> nnx.Conv:
            return layers.conv(
                cin,
                cout,
                size,
                conv_stride,
                dtype=dtype,
                param_dtype=param_dtype,
                rngs=rngs,
            )

        def batch_norm(channels: int) -> nnx.BatchNorm:
            return nnx.BatchNorm(
                channels,
                momentum=bn_momentum,
                epsilon=bn_epsilon,
                dtype=dtype,
                param_dtype=param_dtype,
                rngs=rngs,
            )

        # The reference feeds the activated input to the shortcut only in the
        # first block of the network; elsewhere the shortcut sees the raw input.
        self.activate_before_residual = activate_before_residual
        self.bn1 = batch_norm(in_channels)
        self.conv1 = conv(in_channels, out_channels, 3, stride)
        self.bn2 = batch_norm(out_channels)
        self.conv2 = conv(out_channels, out_channels, 3)
        needs_projection = in_channels != out_channels or stride != 1
        self.shortcut = conv(in_channels, out_channels, 1, stride) if needs_projection else None

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        out = layers.leaky_relu(self.bn1(x, use_running_average=not train))
        if self.activate_before_residual:
            x = out
        out = self.conv1(out)
        out = layers.leaky_relu(self.bn2(out, use_running_average=not train))
        out = self.conv2(out)
        if self.shortcut is not None:
            x = self.shortcut(x)
        return x + out


class WideResNet(nnx.Module):
    """WRN-depth-width backbone for small (e.g. 32x32) images: ``64 * width`` features.

    Args:
      depth: total depth; ``(depth - 4)`` must be a multiple of 6 (28 gives
        4 blocks per group).
      width: widening factor k (2 for CIFAR-10/SVHN, 8 for CIFAR-100).
      in_channels: image channels.
      bn_momentum: running-average decay of BatchNorm (FixMatch: 0.999).
      bn_epsilon: BatchNorm epsilon (FixMatch: TensorFlow's 1e-3).
      dropout_rate: dropout on the pooled features before the heads (FixMatch
        default 0); when > 0 the call needs ``dropout_key`` in training.
      dtype: compute dtype.
      param_dtype: parameter dtype.
      rngs: initialisation RNGs (``params`` stream).
    """

    def __init__(
        self,
        *,
        depth: int = 28,
        width: int = 2,
        in_channels: int = 3,
        bn_momentum: float = 0.999,
        bn_epsilon: float = 1e-3,
        dropout_rate: float = 0.0,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4 with n >= 1, got {depth}.")
        if width < 1:
            raise ValueError(f"WideResNet width must be >= 1, got {width}.")
        blocks_per_group = (depth - 4) // 6
        common = dict(
            bn_momentum=bn_momentum,
            bn_epsilon=bn_epsilon,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.dropout_rate = dropout_rate
        self.stem = layers.conv(
            in_channels,
            16,
            3,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        blocks = []
        channels = 16
        for group, group_width in enumerate((16 * width, 32 * width, 64 * width)):
            for index in range(blocks_per_group):
                first = index == 0
                blocks.append(
                    PreActBlock(
                        channels,
                        group_width,
                        stride=2 if first and group > 0 else 1,
                        activate_before_residual=first and group == 0,
                        **common,
                    )
                )
                channels = group_width
        self.blocks = nnx.List(blocks)
        self.final_bn = nnx.BatchNorm(
            channels,
            momentum=bn_momentum,
            epsilon=bn_epsilon,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.num_features = channels

    def __call__(
        self, images: jax.Array, *, train: bool, dropout_key: jax.Array | None = None
    ) -> jax.Array:
        """Pooled features ``[batch, num_features]`` of NHWC ``images``; ``train``: batch BN."""
        x = self.stem(images)
        for block in self.blocks:
            x = block(x, train=train)
        x = layers.leaky_relu(self.final_bn(x, use_running_average=not train))
        features = layers.global_average_pool(x)
        return layers.dropout(features, rate=self.dropout_rate, train=train, key=dropout_key)
