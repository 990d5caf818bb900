"""CPU-sized backbones: a small CNN and an MLP, for digits and MNIST-sized runs.

Both return features; `classifier.Classifier` puts the heads on them.
"""

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from muscle_jax.models import layers


class SmallCNN(nnx.Module):
    """A few 3x3 conv -> BatchNorm -> leaky ReLU layers, then global average pooling.

    Every layer after the first halves the resolution ("SAME" padding), and
    global average pooling makes the features (``num_features``: the last
    width) independent of the input size, so the same backbone runs on 8x8
    digits, 28x28 MNIST and 32x32 CIFAR.

    Args:
      in_channels: image channels (1 for digits and MNIST).
      widths: output channels of each conv layer.
      bn_momentum: running-average decay of BatchNorm.
      bn_epsilon: BatchNorm epsilon.
      dropout_rate: dropout on the pooled features; when > 0 training calls
        need ``dropout_key``.
      dtype: compute dtype.
      param_dtype: parameter dtype.
      rngs: initialisation RNGs.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        widths: Sequence[int] = (32, 64, 128),
        bn_momentum: float = 0.99,
        bn_epsilon: float = 1e-3,
        dropout_rate: float = 0.0,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if not widths:
            raise ValueError("SmallCNN needs at least one conv layer; widths is empty.")
        self.dropout_rate = dropout_rate
        convs, norms = [], []
        channels = in_channels
        for index, width in enumerate(widths):
            convs.append(
                layers.conv(
                    channels,
                    width,
                    3,
                    1 if index == 0 else 2,
                    dtype=dtype,
                    param_dtype=param_dtype,
                    rngs=rngs,
                )
            )
            norms.append(
                nnx.BatchNorm(
                    width,
                    momentum=bn_momentum,
                    epsilon=bn_epsilon,
                    dtype=dtype,
                    param_dtype=param_dtype,
                    rngs=rngs,
                )
            )
            channels = width
        self.convs = nnx.List(convs)
        self.norms = nnx.List(norms)
        self.num_features = channels

    def __call__(
        self, images: jax.Array, *, train: bool, dropout_key: jax.Array | None = None
    ) -> jax.Array:
        """Pooled features ``[batch, num_features]`` of NHWC ``images``; ``train``: batch BN."""
        x = images
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = layers.leaky_relu(norm(conv(x), use_running_average=not train))
        features = layers.global_average_pool(x)
        return layers.dropout(features, rate=self.dropout_rate, train=train, key=dropout_key)


class MLP(nnx.Module):
    """Flatten -> input dropout -> (dense -> ReLU -> dropout) per hidden layer: the features.

    ``num_features`` is the last hidden size (the flattened image without one).

    Args:
      input_shape: shape of one image, e.g. ``(8, 8, 1)``; dense layers need
        their input size when they are built.
      hidden_sizes: width of each hidden layer.
      dropout_rate: dropout after each hidden layer; when > 0 training calls
        need ``dropout_key``.
      input_dropout_rate: dropout on the flattened pixels, before the first
        layer (the self-defined-target MLP's 0.3, `configs/sdt_mlp.py`).
      dtype: compute dtype.
      param_dtype: parameter dtype.
      rngs: initialisation RNGs.
    """

    def __init__(
        self,
        *,
        input_shape: Sequence[int],
        hidden_sizes: Sequence[int] = (256, 256),
        dropout_rate: float = 0.0,
        input_dropout_rate: float = 0.0,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.input_shape = tuple(input_shape)
        self.dropout_rate = dropout_rate
        self.input_dropout_rate = input_dropout_rate
        hidden = []
        features = math.prod(self.input_shape)
        for size in hidden_sizes:
            hidden.append(
                nnx.Linear(
                    features,
                    size,
                    kernel_init=layers.dense_kernel_init,
                    dtype=dtype,
                    param_dtype=param_dtype,
                    rngs=rngs,
                )
            )
            features = size
        self.hidden = nnx.List(hidden)
        self.num_features = features

    def __call__(
        self, images: jax.Array, *, train: bool, dropout_key: jax.Array | None = None
    ) -> jax.Array:
        """Features ``[batch, num_features]`` of ``images`` of shape ``[batch, *input_shape]``."""
        if tuple(images.shape[1:]) != self.input_shape:
            raise ValueError(
                f"MLP built for images of shape {self.input_shape}, got batch of shape "
                f"{tuple(images.shape)}."
            )
        x = images.reshape(images.shape[0], -1)
        # Its own stream: the hidden layers' keys are fold_in(key, 0), (key, 1), ...
        key = None if dropout_key is None else jax.random.fold_in(dropout_key, len(self.hidden))
        x = layers.dropout(x, rate=self.input_dropout_rate, train=train, key=key)
        for index, layer in enumerate(self.hidden):
            x = jax.nn.relu(layer(x))
            key = None if dropout_key is None else jax.random.fold_in(dropout_key, index)
            x = layers.dropout(x, rate=self.dropout_rate, train=train, key=key)
        return x
