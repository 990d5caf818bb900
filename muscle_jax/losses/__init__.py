"""MUSCLE loss terms as pure JAX functions.

Depends only on JAX and NumPy, so it can be dropped into any Flax project:
``from muscle_jax import losses``. Nothing here imports TensorFlow, Orbax or
the trainer.
"""

from muscle_jax.losses._abc import abc_loss, abc_masks, abc_pseudo_labels, balancing_ratio
from muscle_jax.losses._adaptive_thresholds import (
    FLEXMATCH_MAPPINGS,
    dash_initial_threshold,
    dash_mask,
    dash_targets,
    dash_threshold,
    flexmatch_class_effect,
    flexmatch_init,
    flexmatch_mask,
    flexmatch_thresholds,
    flexmatch_update,
    freematch_fairness_loss,
    freematch_init,
    freematch_mask,
    freematch_thresholds,
    freematch_update,
)
from muscle_jax.losses._alignment import (
    TSA_SCHEDULES,
    adamatch_consistency,
    adamatch_mask,
    adamatch_threshold,
    align_distribution,
    distribution_alignment_init,
    distribution_alignment_update,
    softmatch_consistency,
    softmatch_init,
    softmatch_update,
    softmatch_weights,
    tsa_mask,
    tsa_reduce,
    tsa_threshold,
    uda_consistency,
)
from muscle_jax.losses._base_steps import (
    adamatch_step,
    dash_init,
    dash_step,
    dash_steps_per_decay,
    flexmatch_step,
    freematch_step,
    softmatch_step,
    uda_step,
)
from muscle_jax.losses._consistency import fixmatch_consistency, mixup, mse_consistency, sharpen
from muscle_jax.losses._debiased import (
    DEBIASED_UPDATE_ORDERS,
    debiased_init,
    debiased_pseudo_label_step,
)
from muscle_jax.losses._mio import mio_loss
from muscle_jax.losses._muscle import (
    CONSISTENCY_KINDS,
    STATEFUL_CONSISTENCY_KINDS,
    masked_mean,
    muscle_loss,
)
from muscle_jax.losses._mutual_information import (
    class_prior_update,
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
    "DEBIASED_UPDATE_ORDERS",
    "FLEXMATCH_MAPPINGS",
    "RAMPUP_KINDS",
    "STATEFUL_CONSISTENCY_KINDS",
    "TSA_SCHEDULES",
    "abc_loss",
    "abc_masks",
    "abc_pseudo_labels",
    "adamatch_consistency",
    "adamatch_mask",
    "adamatch_step",
    "adamatch_threshold",
    "align_distribution",
    "balancing_ratio",
    "class_prior_update",
    "dash_init",
    "dash_initial_threshold",
    "dash_mask",
    "dash_step",
    "dash_steps_per_decay",
    "dash_targets",
    "dash_threshold",
    "debiased_init",
    "debiased_pseudo_label_step",
    "distribution_alignment_init",
    "distribution_alignment_update",
    "fixmatch_consistency",
    "flexmatch_class_effect",
    "flexmatch_init",
    "flexmatch_mask",
    "flexmatch_step",
    "flexmatch_thresholds",
    "flexmatch_update",
    "freematch_fairness_loss",
    "freematch_init",
    "freematch_mask",
    "freematch_step",
    "freematch_thresholds",
    "freematch_update",
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
    "softmatch_consistency",
    "softmatch_init",
    "softmatch_step",
    "softmatch_update",
    "softmatch_weights",
    "supervised_loss",
    "term_weight",
    "tsa_mask",
    "tsa_reduce",
    "tsa_threshold",
    "uda_consistency",
    "uda_step",
]
