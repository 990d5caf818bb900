"""MUSCLE loss terms as pure JAX functions.

Depends only on JAX and NumPy, so it can be dropped into any Flax project:
``from muscle_jax import losses``. Nothing here imports TensorFlow, Orbax or
the trainer.
"""

from muscle_jax.losses._consistency import fixmatch_consistency, mixup, mse_consistency, sharpen
from muscle_jax.losses._mio import mio_loss
from muscle_jax.losses._muscle import CONSISTENCY_KINDS, masked_mean, muscle_loss
from muscle_jax.losses._mutual_information import (
    joint_distribution,
    multi_head_mutual_information,
    mutual_information,
    mutual_information_loss,
)
from muscle_jax.losses._schedules import RAMPUP_KINDS, rampup, term_weight
from muscle_jax.losses._self_adaptive import self_adaptive_loss, self_adaptive_update
from muscle_jax.losses._self_defined_target import (
    homeostasis_update,
    kwta_targets,
    self_defined_target_loss,
)
from muscle_jax.losses._supervised import supervised_loss

__all__ = [
    "CONSISTENCY_KINDS",
    "RAMPUP_KINDS",
    "fixmatch_consistency",
    "homeostasis_update",
    "joint_distribution",
    "kwta_targets",
    "masked_mean",
    "mio_loss",
    "mixup",
    "mse_consistency",
    "multi_head_mutual_information",
    "muscle_loss",
    "mutual_information",
    "mutual_information_loss",
    "rampup",
    "self_adaptive_loss",
    "self_adaptive_update",
    "self_defined_target_loss",
    "sharpen",
    "supervised_loss",
    "term_weight",
]
