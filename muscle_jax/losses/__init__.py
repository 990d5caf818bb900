"""MUSCLE loss terms as pure JAX functions.

Depends only on JAX and NumPy, so it can be dropped into any Flax project:
``from muscle_jax import losses``. Nothing here imports TensorFlow, Orbax or
the trainer.
"""

from muscle_jax.losses._consistency import fixmatch_consistency, mixup, mse_consistency, sharpen
from muscle_jax.losses._muscle import CONSISTENCY_KINDS, masked_mean, muscle_loss
from muscle_jax.losses._mutual_information import (
    joint_distribution,
    multi_head_mutual_information,
    mutual_information,
    mutual_information_loss,
)
from muscle_jax.losses._schedules import RAMPUP_KINDS, rampup, term_weight
from muscle_jax.losses._supervised import supervised_loss

__all__ = [
    "CONSISTENCY_KINDS",
    "RAMPUP_KINDS",
    "fixmatch_consistency",
    "joint_distribution",
    "masked_mean",
    "mixup",
    "mse_consistency",
    "multi_head_mutual_information",
    "muscle_loss",
    "mutual_information",
    "mutual_information_loss",
    "rampup",
    "sharpen",
    "supervised_loss",
    "term_weight",
]
