"""A run's split plan: which training examples play which role, drawn once.

The validation set, the labeled subset (and the labels training sees for it,
after any label noise) and the unlabeled pool are pure functions of the
training labels, the ``data`` settings and the seed (`splits`,
`label_noise`). A run draws them here once, in `draw`, and every reader asks
the plan: the training stream, the fixed unlabeled sample, the class counts
the loss terms size their state by, and results.json's records. Nothing
re-derives a piece of it, so the pieces cannot disagree.
"""

import dataclasses
from typing import Any

import numpy as np

from muscle_jax.data import label_noise, splits


@dataclasses.dataclass(frozen=True, eq=False)
class SplitPlan:
    """The roles of the training split's examples in one run (identical on every host).

    Attributes:
      dataset: the dataset's name (the asymmetric label noise's flips depend on it).
      num_classes: the number of classes.
      validation: indices held out as the validation set (never trained on).
      labeled: sorted indices of the labeled subset.
      true_labels: the labeled subset's labels in the data.
      labeled_labels: the labels training sees for it (``true_labels`` with the
        label noise of ``noise``; equal to them without noise).
      in_pool: bool ``[num_train]``: which training examples the unlabeled
        stream reads (an unlabeled-only split, where the data has one, joins whole).
      pool_per_class: the unlabeled pool's training images a class, before the
        validation set (and an excluded labeled subset) is taken out.
      noise: the label-noise setting (``fraction``, ``kind``).
    """

    dataset: str
    num_classes: int
    validation: np.ndarray
    labeled: np.ndarray
    true_labels: np.ndarray
    labeled_labels: np.ndarray
    in_pool: np.ndarray
    pool_per_class: np.ndarray
    noise: dict[str, Any]

    def labeled_class_counts(self) -> tuple[int, ...]:
        """The labeled subset's size a class (the true labels)."""
        counts = np.bincount(self.true_labels, minlength=self.num_classes)
        return tuple(int(count) for count in counts)

    def pool_indices(self) -> np.ndarray:
        """The training examples the unlabeled stream reads, in index order."""
        return np.flatnonzero(self.in_pool)

    def label_noise_record(self) -> dict[str, Any]:
        """results.json's ``label_noise``: the setting and exactly which labels it changed."""
        return label_noise.describe(
            self.labeled,
            self.true_labels,
            self.labeled_labels,
            num_classes=self.num_classes,
            dataset=self.dataset,
            **self.noise,
        )


def draw(
    train_labels: np.ndarray,
    *,
    dataset: str,
    num_classes: int,
    seed: int,
    num_labeled: int,
    num_validation: int = 0,
    imbalance_ratio: float = 1.0,
    unlabeled_imbalance_ratio: float = 1.0,
    exclude_labeled_from_unlabeled: bool = False,
    noise_fraction: float = 0.0,
    noise_kind: str = "symmetric",
) -> SplitPlan:
    """Draws the plan from the whole training split's labels and the seed alone.

    Raises `DataRequestError` for a request the data cannot meet (more labels
    a class than it holds, a long-tailed pool of one class, ...).
    """
    train_labels = np.asarray(train_labels)
    validation = splits.select_validation_indices(
        train_labels, num_per_class=num_validation, seed=seed, num_classes=num_classes
    )
    labeled = splits.select_labeled_indices(
        train_labels,
        num_labeled=num_labeled,
        seed=seed,
        imbalance_ratio=imbalance_ratio,
        num_classes=num_classes,
        exclude=validation if validation.size else None,
    )
    noise = {"fraction": noise_fraction, "kind": noise_kind}
    true_labels = train_labels[labeled]
    # The only place training labels are corrupted: every shard slices this array.
    labeled_labels = label_noise.noisy_labels(
        true_labels, seed=seed, num_classes=num_classes, dataset=dataset, **noise
    )
    pool = splits.unlabeled_pool_mask(
        train_labels, ratio=unlabeled_imbalance_ratio, seed=seed, num_classes=num_classes
    )
    pool_per_class = np.bincount(train_labels[pool], minlength=num_classes)
    in_pool = pool.copy()
    in_pool[validation] = False  # The validation set is never trained on.
    if exclude_labeled_from_unlabeled:
        in_pool[labeled] = False
    return SplitPlan(
        dataset=dataset,
        num_classes=num_classes,
        validation=validation,
        labeled=labeled,
        true_labels=true_labels,
        labeled_labels=labeled_labels,
        in_pool=in_pool,
        pool_per_class=pool_per_class,
        noise=noise,
    )


def for_data_config(data_config, *, source, seed: int) -> SplitPlan:
    """`draw` for a config's ``data`` section and a source (`input_pipeline.open_dataset`)."""
    return draw(
        source.train_labels(),
        dataset=source.info.name,
        num_classes=source.info.num_classes,
        seed=seed,
        num_labeled=data_config.num_labeled,
        num_validation=data_config.get("num_validation", 0),
        imbalance_ratio=data_config.imbalance_ratio,
        unlabeled_imbalance_ratio=data_config.get("unlabeled_imbalance_ratio", 1.0),
        exclude_labeled_from_unlabeled=data_config.exclude_labeled_from_unlabeled,
        noise_fraction=data_config.get("label_noise", 0.0),
        noise_kind=data_config.get("label_noise_kind", "symmetric"),
    )
