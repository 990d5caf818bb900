"""A run's plan: everything a run is put together from, built once before it trains.

`train.plan_run` builds it in `train.train_and_evaluate`, from the validated
config and the opened data; the input pipeline, the state, the steps and the
evaluation read their pieces from it instead of deriving them again.
"""

import dataclasses
from typing import Any

import jax
import ml_collections

from muscle_jax.data import plan as data_plan


@dataclasses.dataclass(frozen=True, eq=False)
class RunPlan:
    """The pieces of one run, each derived once.

    Attributes:
      config: the validated config (with the dataset's facts filled in).
      source: the opened data (`input_pipeline.open_dataset`).
      splits: which training examples are validation, labeled and unlabeled
        (`data.plan.SplitPlan`).
      spec: what the loss terms size their state by (`methods.StateSpec`).
      unlabeled_views, labeled_views: the views the loss terms need.
      mesh: the ``("data",)`` device mesh.
      data_sharding: the batches' sharding over it.
      state_shardings: the train state's sharding over it.
      images_per_step: the images the step's forward pass sees.
    """

    config: ml_collections.ConfigDict
    source: Any
    splits: data_plan.SplitPlan
    spec: Any
    unlabeled_views: str
    labeled_views: int
    mesh: jax.sharding.Mesh
    data_sharding: jax.sharding.NamedSharding
    state_shardings: Any
    images_per_step: int

    @property
    def info(self):
        """The dataset's `DatasetInfo`."""
        return self.source.info
