"""Your own backbone by import path: ``--config.model.name=mypkg.nets:MyNet``.

The contract (checked when the model is built, before anything compiles):

* ``MyNet`` is a Flax NNX module class, importable as ``module:attribute``
  from the Python path (e.g. with ``PYTHONPATH=.``);
* it is built as ``MyNet(in_channels=C, rngs=nnx.Rngs(...), **model.kwargs)``
  (C: the images' channels; ``model.kwargs`` from the config);
* the built module has an integer attribute ``num_features``;
* it is called as ``backbone(images, train=bool)`` on float
  ``[batch, H, W, C]`` images in [-1, 1] and returns float features
  ``[batch, num_features]`` (pooled: one vector an image). If its
  ``__call__`` also takes ``dropout_key``, it gets a PRNG key while training
  (None in evaluation) for its dropout;
* it holds only ``nnx.Param`` and ``nnx.BatchStat`` variables (BatchNorm's
  running averages are BatchStats). No ``nnx.Rngs`` inside the module: the
  train step is a pure function of its inputs, so randomness comes in as
  ``dropout_key``.

muscle_jax puts its own heads on the features (`OutputHeads`: the classifier,
IIC's over-clustering heads, MIO's projector), so every method works with
every backbone.
"""

import importlib
import inspect

import jax
import jax.numpy as jnp
from flax import nnx

from muscle_jax.models.heads import ModelOutput, OutputHeads

CONTRACT = "see muscle_jax/models/user.py or docs/custom.md for the contract"


class UserModelError(ValueError):
    """A user backbone that cannot be imported or does not keep the contract."""


def is_import_path(name: str) -> bool:
    """``module:attribute`` names a backbone of yours; anything else is a built-in name."""
    return ":" in name


def load_class(path: str) -> type:
    """The class at ``module:attribute``, with an error naming what is missing."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise UserModelError(f"model.name={path!r}: write it as module:Class, e.g. mypkg.nets:Net.")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise UserModelError(
            f"model.name={path!r}: cannot import {module_name!r} ({error}). Is its directory on "
            "PYTHONPATH (e.g. PYTHONPATH=. python -m muscle_jax.main ...)?"
        ) from None
    backbone = getattr(module, attribute, None)
    if not (inspect.isclass(backbone) and issubclass(backbone, nnx.Module)):
        raise UserModelError(
            f"model.name={path!r}: {module_name} has no flax.nnx.Module class {attribute!r}"
            f" (found {type(backbone).__name__}); {CONTRACT}."
        )
    return backbone


class UserModel(nnx.Module):
    """A user backbone with muscle_jax's heads on its features (`ModelOutput`, as every model)."""

    def __init__(
        self,
        num_classes: int,
        *,
        backbone: str,
        in_channels: int,
        overclustering_heads: int = 0,
        overclustering_factor: int = 5,
        projector_dim: int = 0,
        balanced_head: bool = False,
        mi_head: bool = False,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
        **kwargs,
    ):
        backbone_cls = load_class(backbone)
        try:
            self.backbone = backbone_cls(in_channels=in_channels, rngs=rngs, **kwargs)
        except TypeError as error:
            raise UserModelError(
                f"model.name={backbone!r}: building it as {backbone_cls.__name__}(in_channels="
                f"{in_channels}, rngs=..., **model.kwargs={kwargs}) failed: {error}; {CONTRACT}."
            ) from error
        features = getattr(self.backbone, "num_features", None)
        if not isinstance(features, int) or isinstance(features, bool) or features < 1:
            raise UserModelError(
                f"model.name={backbone!r}: the built module needs an integer attribute "
                f"num_features (the width of the features it returns), got {features!r}; "
                f"{CONTRACT}."
            )
        self.num_features = features
        self._takes_dropout_key = "dropout_key" in inspect.signature(self.backbone).parameters
        self.heads = OutputHeads(
            features,
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
    ) -> ModelOutput:
        extra = {"dropout_key": dropout_key} if self._takes_dropout_key else {}
        return self.heads(self.backbone(images, train=train, **extra))


def check_contract(model: nnx.Module, image_shape: tuple[int, int, int], name: str) -> None:
    """Checks a (possibly abstract) `UserModel`'s variable kinds and feature shape."""
    _, _, _, rest = nnx.split(model.backbone, nnx.Param, nnx.BatchStat, ...)
    others = sorted(
        f"{'.'.join(map(str, path))} ({type(variable).__name__})"
        for path, variable in nnx.to_flat_state(rest)
    )
    if others:
        raise UserModelError(
            f"model.name={name!r} holds variables other than nnx.Param and nnx.BatchStat: "
            f"{', '.join(others[:5])}{' ...' if len(others) > 5 else ''}. Keep randomness out "
            f"of the module (take a dropout_key argument instead of nnx.Rngs); {CONTRACT}."
        )
    graphdef, state = nnx.split(model.backbone)

    def features(state, images):
        return nnx.merge(graphdef, state)(images, train=False)

    # A failure inside the user's own code keeps its traceback (it is a bug to find there).
    out = jax.eval_shape(features, state, jax.ShapeDtypeStruct((2, *image_shape), jnp.float32))
    expected = (2, model.num_features)
    if not hasattr(out, "shape") or tuple(out.shape) != expected:
        raise UserModelError(
            f"model.name={name!r} returned {getattr(out, 'shape', type(out).__name__)} for a "
            f"batch of 2; it must return features [batch, num_features] = {list(expected)}; "
            f"{CONTRACT}."
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise UserModelError(
            f"model.name={name!r} returned {out.dtype} features; they must be float."
        )
