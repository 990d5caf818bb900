"""Flax NNX models for MUSCLE: a backbone, built-in or yours, with our heads; `create_model`.

Every model is one contract (`classifier.Classifier`): a backbone that
returns pooled features and declares their width (``num_features``), built
by name (`list_models`) or imported from your code (``module:Class``,
`muscle_jax.models.user`), under ``backbone``, and `OutputHeads` under
``heads``. A model is called as ``model(images, *, train, dropout_key=None)``
on NHWC float images and returns a `ModelOutput`: float32 ``logits``
``[batch, num_classes]`` and, when built with over-clustering heads,
``overclustering_logits`` ``[heads, batch, factor * num_classes]`` (else
None), ``projections`` ``[batch, projector_dim]`` with a projector head
(else None), ``balanced_logits`` ``[batch, num_classes]`` with ABC's
balanced head (else None), and ``mi_logits`` ``[batch, num_classes]`` with the
head only IIC's mutual information trains (else None). ``train=True``
normalises with batch statistics and updates the BatchNorm running averages;
``train=False`` uses the running averages.
Dropout is off by default; a model built with a dropout rate needs a
``dropout_key`` in training, so a train step stays a pure function of its
inputs. Conv and dense weights are Params named ``kernel``: weight decay can
select them by that name.

A new head goes in `OutputHeads` (and `ModelOutput`), and every backbone gets
it; a new built-in backbone is a module with ``num_features`` that returns
features, added to the registry below.
"""

import inspect
import types
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from flax import nnx

from muscle_jax.models import user
from muscle_jax.models.classifier import PARAMETER_LAYOUT, Classifier
from muscle_jax.models.cnn13 import CNN13
from muscle_jax.models.heads import ModelOutput, OutputHeads
from muscle_jax.models.resnet import ResNet
from muscle_jax.models.small import MLP, SmallCNN
from muscle_jax.models.user import UserModelError, is_import_path
from muscle_jax.models.wide_resnet import WideResNet

__all__ = [
    "CNN13",
    "MLP",
    "PARAMETER_LAYOUT",
    "Classifier",
    "ModelOutput",
    "OutputHeads",
    "ResNet",
    "SmallCNN",
    "UserModelError",
    "WideResNet",
    "create_backbone",
    "create_model",
    "kwargs_problems",
    "list_models",
    "model_arguments",
]

# name -> (backbone class, keyword arguments the name fixes).
_MODELS: types.MappingProxyType[str, tuple[Callable[..., nnx.Module], dict[str, Any]]] = (
    types.MappingProxyType(
        {
            "wide_resnet": (WideResNet, {}),
            "wrn28_2": (WideResNet, {"depth": 28, "width": 2}),
            "wrn28_8": (WideResNet, {"depth": 28, "width": 8}),
            "resnet18": (ResNet, {"stage_sizes": (2, 2, 2, 2)}),
            "cnn13": (CNN13, {}),
            "small_cnn": (SmallCNN, {}),
            "mlp": (MLP, {}),
        }
    )
)


def list_models() -> tuple[str, ...]:
    """Names that `create_model` accepts, sorted."""
    return tuple(sorted(_MODELS))


# What `create_model` sets itself (from the config's other keys and the methods' heads:
# the `Classifier`'s arguments, and a built-in backbone's dtypes), so never through
# ``model.kwargs``. A backbone of yours gets ``rngs``.
SET_BY_CREATE_MODEL = (
    "num_classes",
    "overclustering_heads",
    "overclustering_factor",
    "projector_dim",
    "balanced_head",
    "mi_head",
    "dtype",
    "param_dtype",
    "rngs",
)


def model_arguments(name: str) -> tuple[str, ...] | None:
    """The keyword arguments ``model.kwargs`` may give the model ``name``, in signature order.

    A built-in backbone's constructor arguments, less those `create_model` sets
    (`SET_BY_CREATE_MODEL`); a backbone of yours (``module:Class``, imported
    here) its class's, less ``rngs``. None: the class takes ``**kwargs``, so
    any name may be right.

    Raises:
      ValueError: an unknown built-in name; `UserModelError`: a backbone that
        cannot be imported.
    """
    if is_import_path(name):
        model_cls, taken = user.load_class(name), ("rngs",)
    elif name not in _MODELS:
        raise ValueError(f"Unknown model {name!r}; known models: {', '.join(list_models())}.")
    else:
        model_cls, taken = _MODELS[name][0], SET_BY_CREATE_MODEL
    parameters = list(inspect.signature(model_cls.__init__).parameters.values())[1:]
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters):
        return None
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(p.name for p in parameters if p.kind in named and p.name not in taken)


def kwargs_problems(name: str, kwargs: dict[str, Any]) -> list[str]:
    """One line for each of ``kwargs`` the model ``name`` cannot take (empty: all fine).

    Checked with the config, before anything is built or compiled: an argument
    the model does not have (e.g. the small CNN's ``widths`` given to ``mlp``),
    one `create_model` sets itself, or one that contradicts what the name
    fixes (``wrn28_2`` with ``width=8``).
    """
    accepted = model_arguments(name)
    problems = []
    for key in kwargs:
        if key in SET_BY_CREATE_MODEL:
            problems.append(
                f"model.kwargs.{key} is set by muscle_jax (from the data, model.compute_dtype "
                "and the loss terms' heads), not through model.kwargs; remove it."
            )
        elif accepted is not None and key not in accepted:
            problems.append(
                f"model.kwargs.{key} is not an argument of model {name!r}, which takes "
                f"{', '.join(accepted) or 'none'}; remove it or choose a model that takes it."
            )
    fixed = {} if is_import_path(name) else _MODELS[name][1]
    clashes = {key: kwargs[key] for key in fixed if key in kwargs and kwargs[key] != fixed[key]}
    if clashes:
        problems.append(
            f"model {name!r} fixes {fixed}, but model.kwargs gives {clashes}: remove them, or "
            "name a model that leaves them free (wide_resnet takes depth and width)."
        )
    return problems


def create_backbone(
    name: str,
    *,
    rngs: nnx.Rngs,
    dtype: jnp.dtype = jnp.float32,
    param_dtype: jnp.dtype = jnp.float32,
    **model_kwargs: Any,
) -> nnx.Module:
    """The backbone called ``name``: pooled features ``[batch, num_features]``, no heads.

    Args:
      name: as `create_model`'s.
      rngs: initialisation RNGs.
      dtype: a built-in backbone's compute dtype (yours is built without it).
      param_dtype: a built-in backbone's parameter dtype.
      **model_kwargs: passed to the backbone class; a backbone of yours needs
        ``in_channels``.

    Raises:
      ValueError: for an unknown name, or keyword arguments that contradict
        what the name fixes; `UserModelError`: a backbone of yours that cannot
        be imported or built, or has no integer ``num_features``.
    """
    if is_import_path(name):
        return user.build_backbone(name, rngs=rngs, **model_kwargs)
    if name not in _MODELS:
        raise ValueError(f"Unknown model {name!r}; known models: {', '.join(list_models())}.")
    backbone_cls, fixed = _MODELS[name]
    clashes = {key for key, value in fixed.items() if model_kwargs.get(key, value) != value}
    if clashes:
        raise ValueError(
            f"Model {name!r} fixes {fixed}; got conflicting "
            f"{ {key: model_kwargs[key] for key in sorted(clashes)} }. "
            "Use the generic name to choose them."
        )
    return backbone_cls(
        **{**model_kwargs, **fixed}, dtype=dtype, param_dtype=param_dtype, rngs=rngs
    )


def create_model(
    name: str,
    *,
    num_classes: int,
    rngs: nnx.Rngs,
    overclustering_heads: int = 0,
    overclustering_factor: int = 5,
    projector_dim: int = 0,
    balanced_head: bool = False,
    mi_head: bool = False,
    dtype: jnp.dtype = jnp.float32,
    param_dtype: jnp.dtype = jnp.float32,
    **model_kwargs: Any,
) -> Classifier:
    """Builds the model called ``name``: its backbone (`create_backbone`) with our heads.

    Args:
      name: one of `list_models()` (``wrn28_2`` / ``wrn28_8`` are
        ``wide_resnet`` with depth 28 and width 2 / 8), or ``module:Class``,
        a backbone of yours (`muscle_jax.models.user`: it gets ``in_channels``,
        ``rngs`` and ``model_kwargs``).
      num_classes: classifier outputs.
      rngs: initialisation RNGs (the backbone's layers draw first, then the heads).
      overclustering_heads: number of IIC over-clustering heads (0: none).
      overclustering_factor: each such head has ``factor * num_classes`` outputs.
      projector_dim: width of the contrastive projector head (0: none).
      balanced_head: a second linear classifier (ABC's balanced head).
      mi_head: a linear head with ``num_classes`` outputs that only IIC's mutual
        information trains (``loss.iic.head``).
      dtype: compute dtype (e.g. ``jnp.bfloat16`` on accelerators); logits
        are float32 regardless.
      param_dtype: parameter dtype.
      **model_kwargs: passed to the backbone class, e.g. ``in_channels=1``,
        ``width=4`` for ``wide_resnet``, ``stem="imagenet"`` for ``resnet18``,
        ``input_shape=(8, 8, 1)`` (required) for ``mlp``.

    Returns:
      The model, a `Classifier` (an `nnx.Module`): ``backbone`` and ``heads``.

    Raises:
      ValueError: for an unknown name, or keyword arguments that contradict
        what the name fixes (``wrn28_2`` with ``width=8``); `UserModelError`:
        a backbone of yours that cannot be imported or built.
    """
    backbone = create_backbone(
        name, rngs=rngs, dtype=dtype, param_dtype=param_dtype, **model_kwargs
    )
    return Classifier(
        backbone,
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
