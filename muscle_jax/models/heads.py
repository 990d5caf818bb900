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
      projections: ``[batch, projector_dim]`` float32 embeddings of the
        contrastive projector head (MIO), or None without one.
      balanced_logits: ``[batch, num_classes]`` float32 logits of ABC's
        balanced classifier, or None without that head.
      mi_logits: ``[batch, num_classes]`` float32 logits of the auxiliary head
        that only IIC's mutual information trains (``loss.iic.head``), or None
        without that head.
    """

    logits: jax.Array
    overclustering_logits: jax.Array | None
    projections: jax.Array | None = None
    balanced_logits: jax.Array | None = None
    mi_logits: jax.Array | None = None


class OutputHeads(nnx.Module):
    """Linear classifier plus optional IIC over-clustering, projector, balanced and MI heads.

    Each over-clustering head is its own linear layer (IIC trains several and
    keeps the best), fed the same pooled features as the classifier. The
    projector (MIO's embedding) is a two-layer MLP, as in SimCLR-style
    contrastive methods, so the contrastive geometry is learned apart from
    the classifier's features. The balanced head (ABC) is a second linear
    classifier on the same features, trained by its own add-on term. The MI
    head is one more linear layer with ``num_classes`` outputs that the mutual
    information term trains in place of the classifier (``loss.iic.head``), so
    the clustering objective shapes the features without acting on the head
    that is evaluated.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        overclustering_heads: int = 0,
        overclustering_factor: int = 5,
        projector_dim: int = 0,
        balanced_head: bool = False,
        mi_head: bool = False,
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
        if projector_dim < 0:
            raise ValueError(f"projector_dim must be >= 0, got {projector_dim}.")

        def linear(out_features: int, in_features: int = in_features) -> nnx.Linear:
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
        self.projector = (
            nnx.List([linear(in_features), linear(projector_dim, in_features)])
            if projector_dim
            else None
        )
        self.balanced_classifier = linear(num_classes) if balanced_head else None
        self.mi_classifier = linear(num_classes) if mi_head else None

    def __call__(self, features: jax.Array) -> ModelOutput:
        # Losses (softmax, logs of the MI joint) need float32 even under bf16 compute.
        logits = self.classifier(features).astype(jnp.float32)
        overclustering_logits = None
        if len(self.overclustering):
            overclustering_logits = jnp.stack(
                [head(features).astype(jnp.float32) for head in self.overclustering]
            )
        projections = None
        if self.projector is not None:
            hidden, out = self.projector
            projections = out(jax.nn.relu(hidden(features))).astype(jnp.float32)
        balanced_logits = None
        if self.balanced_classifier is not None:
            balanced_logits = self.balanced_classifier(features).astype(jnp.float32)
        mi_logits = None
        if self.mi_classifier is not None:
            mi_logits = self.mi_classifier(features).astype(jnp.float32)
        return ModelOutput(
            logits=logits,
            overclustering_logits=overclustering_logits,
            projections=projections,
            balanced_logits=balanced_logits,
            mi_logits=mi_logits,
        )
