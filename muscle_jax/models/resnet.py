"""ResNet-18 (BasicBlock, post-activation) for 84x84 Mini-ImageNet.

Stem choice: SSL work on Mini-ImageNet at 84x84 (e.g. the pseudo-labelling
code of Arazo et al. 2020, which MUSCLE-era papers compare with) keeps the
CIFAR-style stem, a 3x3 stride-1 conv with no max pool, so the last stage
still sees an 11x11 map. ``stem="cifar"`` is that default; ``stem="imagenet"``
gives torchvision's 7x7 stride-2 conv plus 3x3 stride-2 max pool (a 3x3 last
map at 84x84, about 12x cheaper).

Convolutions use symmetric padding as in PyTorch, ReLU activations, and
BatchNorm with PyTorch's defaults (momentum 0.1 there, i.e. decay 0.9 here;
epsilon 1e-5). Initialisation follows FixMatch (He-normal fan-out, Glorot
dense) rather than torchvision's, for one rule across the backbones.

References:
  He et al., Deep Residual Learning for Image Recognition, 2016.
  Arazo et al., Pseudo-Labeling and Confirmation Bias in Deep SSL, 2020.
"""

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from muscle_jax.models import layers

STEMS = ("cifar", "imagenet")


def _conv(
    cin: int,
    cout: int,
    size: int,
    stride: int,
    *,
    dtype: jnp.dtype,
    param_dtype: jnp.dtype,
    rngs: nnx.Rngs,
) -> nnx.Conv:
    return layers.conv(
        cin,
        cout,
        size,
        stride,
        padding=size // 2,
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )


class BasicBlock(nnx.Module):
    """conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus (projected) shortcut, ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int,
        bn_momentum: float,
        bn_epsilon: float,
        dtype: jnp.dtype,
        param_dtype: jnp.dtype,
        rngs: nnx.Rngs,
    ):
        conv = functools.partial(_conv, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        batch_norm = functools.partial(
            nnx.BatchNorm,
            momentum=bn_momentum,
            epsilon=bn_epsilon,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.conv1 = conv(in_channels, out_channels, 3, stride)
        self.bn1 = batch_norm(out_channels)
        self.conv2 = conv(out_channels, out_channels, 3, 1)
        self.bn2 = batch_norm(out_channels)
        needs_projection = in_channels != out_channels or stride != 1
        self.shortcut_conv = (
            conv(in_channels, out_channels, 1, stride) if needs_projection else None
        )
        self.shortcut_bn = batch_norm(out_channels) if needs_projection else None

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        out = jax.nn.relu(self.bn1(self.conv1(x), use_running_average=not train))
        out = self.bn2(self.conv2(out), use_running_average=not train)
        if self.shortcut_conv is not None:
            x = self.shortcut_bn(self.shortcut_conv(x), use_running_average=not train)
        return jax.nn.relu(x + out)


class ResNet(nnx.Module):
    """BasicBlock ResNet backbone; the defaults make ResNet-18 (512 features) for 84x84 images.

    Args:
      stage_sizes: BasicBlocks per stage ((2, 2, 2, 2) is ResNet-18).
      base_width: channels of the first stage; each later stage doubles them.
      stem: "cifar" (3x3 stride-1 conv) or "imagenet" (7x7/2 conv + max pool).
      in_channels: image channels.
      bn_momentum: running-average decay of BatchNorm.
      bn_epsilon: BatchNorm epsilon.
      dropout_rate: dropout on the pooled features; when > 0 the call needs
        ``dropout_key`` in training.
      dtype: compute dtype.
      param_dtype: parameter dtype.
      rngs: initialisation RNGs.
    """

    def __init__(
        self,
        *,
        stage_sizes: tuple[int, ...] = (2, 2, 2, 2),
        base_width: int = 64,
        stem: str = "cifar",
        in_channels: int = 3,
        bn_momentum: float = 0.9,
        bn_epsilon: float = 1e-5,
        dropout_rate: float = 0.0,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if stem not in STEMS:
            raise ValueError(f"ResNet stem must be one of {STEMS}, got {stem!r}.")
        common = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.stem_type = stem
        self.dropout_rate = dropout_rate
        stem_size, stem_stride = (3, 1) if stem == "cifar" else (7, 2)
        self.stem_conv = _conv(in_channels, base_width, stem_size, stem_stride, **common)
        self.stem_bn = nnx.BatchNorm(base_width, momentum=bn_momentum, epsilon=bn_epsilon, **common)
        blocks = []
        channels = base_width
        for stage, num_blocks in enumerate(stage_sizes):
            stage_width = base_width * 2**stage
            for index in range(num_blocks):
                blocks.append(
                    BasicBlock(
                        channels,
                        stage_width,
                        stride=2 if index == 0 and stage > 0 else 1,
                        bn_momentum=bn_momentum,
                        bn_epsilon=bn_epsilon,
                        **common,
                    )
                )
                channels = stage_width
        self.blocks = nnx.List(blocks)
        self.num_features = channels

    def __call__(
        self, images: jax.Array, *, train: bool, dropout_key: jax.Array | None = None
    ) -> jax.Array:
        """Pooled features ``[batch, num_features]`` of NHWC ``images``; ``train``: batch BN."""
        x = jax.nn.relu(self.stem_bn(self.stem_conv(images), use_running_average=not train))
        if self.stem_type == "imagenet":
            x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for block in self.blocks:
            x = block(x, train=train)
        features = layers.global_average_pool(x)
        return layers.dropout(features, rate=self.dropout_rate, train=train, key=dropout_key)
