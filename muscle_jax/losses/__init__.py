"""MUSCLE loss terms as pure JAX functions.

Depends only on JAX and NumPy, so it can be dropped into any Flax project:
``from muscle_jax import losses``. Nothing here imports TensorFlow, Orbax or
the trainer.

Conventions, the same for every function here:

- **Per-example terms return per-example values** ``[batch]`` and the caller
  reduces them (e.g. :func:`supervised_loss`, :func:`fixmatch_consistency`,
  :func:`mse_consistency`, :func:`uda_consistency`; reduce with
  :func:`masked_mean` to leave padding out).
- **Batch statistics return a scalar**: :func:`mutual_information` and
  :func:`mutual_information_loss` (the MI term is a statistic of the joint
  distribution over the whole batch, so it cannot be split per example),
  :func:`mio_loss`, :func:`self_adaptive_loss`, :func:`tsa_reduce`, and the
  thresholds computed from a batch.
- **Composed terms return a scalar**: :func:`muscle_loss` returns
  ``(total, aux)``, and each base method's ``*_step``
  (:func:`flexmatch_step`, :func:`freematch_step`, :func:`softmatch_step`,
  :func:`adamatch_step`, :func:`uda_step`, :func:`dash_step`,
  :func:`debiased_pseudo_label_step`) returns ``(loss, metrics, state)``: the
  consistency loss averaged over the whole unlabeled batch, a dict of scalar
  diagnostics, and the state to pass to the next step.
- **Stateful bases are pure**: the state is a dict of arrays made by the
  method's ``*_init`` (:func:`flexmatch_init`, :func:`freematch_init`,
  :func:`softmatch_init`, :func:`distribution_alignment_init`,
  :func:`dash_init`, :func:`debiased_init`; UDA has none), passed in and
  returned updated; keep it in your train state and checkpoint it with it.
- **Views**: view A is the weakly augmented view (it makes the pseudo-labels
  and targets and gets no gradient through them), view B the strongly
  augmented one (it receives the gradient). Shapes are written
  ``[batch, num_classes]``; ``C`` is the number of classes.
- Arrays go in as ``jax.typing.ArrayLike`` and come out as ``jax.Array``;
  hyperparameters are keyword-only. Shapes are checked when traced, with a
  ``ValueError`` naming them. Batch statistics are of the arrays passed in:
  of the global batch under ``jax.jit`` (sharded or not); inside
  ``shard_map``/``pmap`` pass ``axis_name`` where a function takes it.

The option names are module constants: ``CONSISTENCY_KINDS`` and
``STATEFUL_CONSISTENCY_KINDS`` (:func:`muscle_loss`), ``FLEXMATCH_MAPPINGS``,
``TSA_SCHEDULES``, ``RAMPUP_KINDS``, ``DEBIASED_UPDATE_ORDERS`` and
``SDT_CRITERIA``.

Examples:
  >>> import jax.numpy as jnp
  >>> from muscle_jax import losses
  >>> logits = jnp.array([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
  >>> losses.supervised_loss(logits, jnp.array([0, 1, 0])).shape  # per example
  (3,)
  >>> losses.mutual_information(jnp.eye(3), jnp.eye(3)).shape  # one batch statistic
  ()
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
from muscle_jax.losses._self_defined_target import CRITERIA as SDT_CRITERIA
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
    "SDT_CRITERIA",
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
