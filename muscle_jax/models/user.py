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

It is the contract of the built-in backbones too: `classifier.Classifier`
puts muscle_jax's heads on the features of either (`heads.OutputHeads`: the
classifier, and the heads a method asks for), so every method works with
every backbone.
"""

import importlib
import inspect

import jax
import jax.numpy as jnp
from flax import nnx

from muscle_jax.models import classifier

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


def build_backbone(path: str, *, in_channels: int, rngs: nnx.Rngs, **kwargs) -> nnx.Module:
    """Your backbone ``module:Class``, built as ``Class(in_channels=C, rngs=rngs, **kwargs)``.

    Raises:
      UserModelError: it cannot be imported or built, or has no integer
        ``num_features``.
    """
    backbone_cls = load_class(path)
    try:
        backbone = backbone_cls(in_channels=in_channels, rngs=rngs, **kwargs)
    except TypeError as error:
        raise UserModelError(
            f"model.name={path!r}: building it as {backbone_cls.__name__}(in_channels="
            f"{in_channels}, rngs=..., **model.kwargs={kwargs}) failed: {error}; {CONTRACT}."
        ) from error
    try:
        classifier.feature_width(backbone)
    except ValueError:
        raise UserModelError(
            f"model.name={path!r}: the built module needs an integer attribute "
            f"num_features (the width of the features it returns), got "
            f"{getattr(backbone, 'num_features', None)!r}; {CONTRACT}."
        ) from None
    return backbone


def check_contract(model: nnx.Module, image_shape: tuple[int, int, int], name: str) -> None:
    """Checks a (possibly abstract) model's backbone: its variable kinds and feature shape.

    ``model``: `create_model`'s `classifier.Classifier` around the backbone ``name``.
    """
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
