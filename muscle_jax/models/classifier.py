"""The one model contract: a backbone's pooled features, with muscle_jax's heads on them.

Every model `create_model` builds is a `Classifier`: a backbone, built-in
(`WideResNet`, `ResNet`, `CNN13`, `SmallCNN`, `MLP`) or yours
(`muscle_jax.models.user`), under ``backbone``, and `heads.OutputHeads` under
``heads``. A backbone

* has an integer attribute ``num_features``;
* is called as ``backbone(images, train=bool)`` on NHWC float images and
  returns float features ``[batch, num_features]`` (pooled: one vector an
  image, after any dropout of its own); if its ``__call__`` takes
  ``dropout_key``, it gets the step's key in training (None in evaluation);
* holds only ``nnx.Param`` and ``nnx.BatchStat`` variables.

The heads (the classifier, and those the loss terms ask for: IIC's
over-clustering heads, MIO's projector, ABC's balanced classifier, IIC's MI
head) are `heads.OutputHeads`'s, so a new head goes there and reaches every
backbone, and a new backbone gets every head.

A model's variables are ``backbone/...`` and ``heads/...``
(`PARAMETER_LAYOUT` 2). Checkpoints record the layout they were written in
(``parameter_layout`` in their compatibility record, `muscle_jax.checkpointing`).
"""

import inspect
from typing import Any

import jax
from flax import nnx

from muscle_jax.models.heads import ModelOutput, OutputHeads

# 1: a built-in model held its layers at the top of its variables, beside ``heads``
#    (``convs/0/kernel``, ``heads/classifier/kernel``); a backbone of yours was already
#    under ``backbone``. Checkpoints from before the record carry no ``parameter_layout``.
# 2: every model is ``backbone/...`` (its layers) and ``heads/...`` (`Classifier`).
PARAMETER_LAYOUT = 2


def feature_width(backbone: nnx.Module) -> int:
    """The backbone's ``num_features``, or a ValueError naming what is wrong with it."""
    features = getattr(backbone, "num_features", None)
    if not isinstance(features, int) or isinstance(features, bool) or features < 1:
        raise ValueError(
            f"{type(backbone).__name__} needs an integer attribute num_features >= 1 (the width "
            f"of the features it returns), got {features!r}."
        )
    return features


class Classifier(nnx.Module):
    """A backbone with `OutputHeads` on its pooled features; returns `ModelOutput`.

    Args:
      backbone: the feature extractor (see the module docstring for its contract).
      num_classes: classifier outputs.
      rngs: initialisation RNGs. Build the backbone with the same ``rngs`` first:
        the heads then draw their initial weights after its layers'.
      **heads: `OutputHeads`' options, passed on as they are (which heads,
        their sizes, ``dtype`` and ``param_dtype``): a new head is an option
        of `OutputHeads` alone.
    """

    def __init__(
        self,
        backbone: nnx.Module,
        num_classes: int,
        *,
        rngs: nnx.Rngs,
        **heads: Any,
    ):
        self.backbone = backbone
        self.num_features = feature_width(backbone)
        self._takes_dropout_key = "dropout_key" in inspect.signature(backbone).parameters
        self.heads = OutputHeads(self.num_features, num_classes, rngs=rngs, **heads)

    def __call__(
        self, images: jax.Array, *, train: bool, dropout_key: jax.Array | None = None
    ) -> ModelOutput:
        """The heads' outputs on ``backbone(images)``; ``train`` selects batch vs running BN."""
        extra = {"dropout_key": dropout_key} if self._takes_dropout_key else {}
        return self.heads(self.backbone(images, train=train, **extra))
