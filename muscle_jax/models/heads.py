"""Model output and the heads every backbone puts on its pooled features."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from muscle_jax.models import layers


class ModelOutput(NamedTuple):
    """What every model returns; a NamedTuple, so it is a pytree as it stands.

    Attributes:
      logits: class logits ``[batch, num_classes]``, always float32.
      overclustering_logits: IIC over-clustering logits
        ``[heads, batch, factor * num_classes]`` in float32, or None when the
        model has no over-clustering head.
    """

    logits: jax.Array
    overclustering_logits: jax.Array | None


class OutputHeads(nnx.Module):
    """Linear classifier plus optional IIC over-clustering heads on shared features.

    Each over-clustering head is its own linear layer (IIC trains several and
    keeps the best), fed the same pooled features as the classifier.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        overclustering_heads: int = 0,
        overclustering_factor: int = 5,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
        if overclustering_heads < 0:
            raise ValueError(f"overclustering_heads must be >= 0, got {overclustering_heads}.")
        if overclustering_heads and overclustering_factor < 1:
            raise ValueError(f"overclustering_factor must be >= 1, got {overclustering_factor}.")

        def linear(out_features: int) -> nnx.Linear:
            return nnx.Linear(
                in_features,
                out_features,
                kernel_init=layers.dense_kernel_init,
                dtype=dtype,
                param_dtype=param_dtype,
                rngs=rngs,
            )

        self.classifier = linear(num_classes)
        self.overclustering = nnx.List(
            [linear(overclustering_factor * num_classes) for _ in range(overclustering_heads)]
        )

    def __call__(self, features: jax.Array) -> ModelOutput:
        # Losses (softmax, logs of the MI joint) need float32 even under bf16 compute.
        logits = self.classifier(features).astype(jnp.float32)
        overclustering_logits = None
        if len(self.overclustering):
            overclustering_logits = jnp.stack(
                [head(features).astype(jnp.float32) for head in self.overclustering]
            )
        return ModelOutput(logits=logits, overclustering_logits=overclustering_logits)
