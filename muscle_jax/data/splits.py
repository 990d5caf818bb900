"""Which training examples keep their labels: seeded, per class, identical on every host.

The subset is a pure function of (labels, num_labeled, seed, profile): NumPy's
PCG64 stream seeded per class, so every host and every run picks the same
examples without communicating, and a class's pick does not depend on how
many examples the other classes hold. ``num_labeled=0`` (`ALL_LABELED`) keeps
every label instead: the whole training split (less a validation set) is the
labeled set, with whatever count each class has.
"""

import numpy as np
from numpy.typing import ArrayLike

from muscle_jax.data.validation import DataRequestError

# ``num_labeled``'s value for "every training example keeps its label": an image
# folder's train/ as it is, any count a class (docs/custom.md).
ALL_LABELED = 0


def per_class_counts(
    num_labeled: int, num_classes: int, *, imbalance_ratio: float = 1.0
) -> np.ndarray:
    """How many labeled examples each class gets; they sum to `num_labeled`.

    Balanced (`imbalance_ratio == 1`): `num_labeled / num_classes` each, which
    must divide evenly. Long-tailed (`imbalance_ratio > 1`): class c gets a
    share proportional to `imbalance_ratio ** (-c / (num_classes - 1))`, so
    class 0 is the largest, the last class the smallest, the counts fall
    exponentially in between, and largest / smallest equals the ratio up to
    rounding to whole examples (largest-remainder rounding keeps the total
    exact).
    """
    if num_labeled <= 0:
        raise DataRequestError(f"num_labeled must be positive, got {num_labeled}.")
    if num_classes < 1:
        raise DataRequestError(f"num_classes must be positive, got {num_classes}.")
    if imbalance_ratio < 1.0:
        raise DataRequestError(
            f"imbalance_ratio must be >= 1 (largest class / smallest class), got {imbalance_ratio}."
        )
    if imbalance_ratio == 1.0:
        if num_labeled % num_classes:
            raise DataRequestError(
                f"A balanced labeled set needs num_labeled divisible by the number of "
                f"classes: {num_labeled} labels over {num_classes} classes leaves "
                f"{num_labeled % num_classes} over."
            )
        return np.full(num_classes, num_labeled // num_classes, dtype=np.int64)
    if num_classes == 1:
        raise DataRequestError("A long-tailed profile needs at least 2 classes, got 1.")
    shares = imbalance_ratio ** (-np.arange(num_classes) / (num_classes - 1))
    ideal = num_labeled * shares / shares.sum()
    counts = np.floor(ideal).astype(np.int64)
    # Hand the leftover examples to the classes that lost most to the floor.
    leftover = num_labeled - counts.sum()
    counts[np.argsort(-(ideal - counts), kind="stable")[:leftover]] += 1
    if counts.min() < 1:
        raise DataRequestError(
            f"num_labeled={num_labeled} is too small for imbalance_ratio={imbalance_ratio} "
            f"over {num_classes} classes: the smallest class would get no example "
            f"(ideal counts {np.round(ideal, 2).tolist()})."
        )
    return counts


def select_validation_indices(
    labels: ArrayLike, *, num_per_class: int, seed: int, num_classes: int
) -> np.ndarray:
    """Indices (sorted, int64) of ``num_per_class`` training examples a class, held out.

    The validation set: never trained on (neither labeled nor unlabeled),
    evaluated beside the test set to choose a step without looking at the
    test set. Drawn from the seed on a stream of its own (so the labeled
    subset of a run without one is what it always was), before the labeled
    subset, which is then drawn from the rest (`select_labeled_indices`'s
    ``exclude``).
    """
    labels = np.asarray(labels)
    if num_per_class <= 0:
        return np.zeros(0, np.int64)
    chosen = []
    for cls in range(num_classes):
        members = np.flatnonzero(labels == cls)
        if num_per_class > members.size:
            raise DataRequestError(
                f"data.num_validation={num_per_class} a class, but class {cls} holds "
                f"{members.size} training examples."
            )
        rng = np.random.default_rng([seed, cls, 0x76616C])  # Its own stream ("val").
        chosen.append(rng.choice(members, size=num_per_class, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def select_labeled_indices(
    labels: ArrayLike,
    *,
    num_labeled: int,
    seed: int,
    imbalance_ratio: float = 1.0,
    num_classes: int | None = None,
    exclude: ArrayLike | None = None,
) -> np.ndarray:
    """Indices (sorted, int64) of the training examples that keep their labels.

    Args:
      labels: `[num_examples]` integer class of every training example, in
        index order.
      num_labeled: total number of labeled examples; `ALL_LABELED` (0): every
        example not excluded, whatever the count of each class (then
        ``imbalance_ratio`` must be 1).
      seed: the labeled subset is a deterministic function of it.
      imbalance_ratio: 1 for a balanced set (`num_labeled / C` per class),
        > 1 for a long-tailed one (see `per_class_counts`).
      num_classes: defaults to `max(labels) + 1`.
      exclude: indices never chosen (the validation set's).

    Raises:
      ValueError: naming the numbers, when the request cannot be met (not
        divisible, more than a class holds, non-positive, bad labels).

    >>> labels = [0, 1, 0, 1, 0, 1, 0, 1]
    >>> idx = select_labeled_indices(labels, num_labeled=4, seed=0)
    >>> [int(labels[i]) for i in idx].count(0)
    2
    >>> select_labeled_indices([0, 0, 1], num_labeled=0, seed=0).tolist()
    [0, 1, 2]
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataRequestError(
            f"labels must be a 1-D integer array, got shape {labels.shape} dtype {labels.dtype}."
        )
    if labels.size and labels.min() < 0:
        raise DataRequestError(f"labels must be >= 0, found {labels.min()}.")
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.size else 0
    elif labels.size and labels.max() >= num_classes:
        raise DataRequestError(f"labels must be < num_classes={num_classes}, found {labels.max()}.")
    allowed = np.ones(labels.shape[0], bool)
    if exclude is not None:
        allowed[np.asarray(exclude, np.int64)] = False
    if num_labeled == ALL_LABELED:
        if imbalance_ratio != 1.0:
            raise DataRequestError(
                f"imbalance_ratio={imbalance_ratio} draws a long-tailed subset of num_labeled "
                "examples, but num_labeled=0 keeps every label as the data has them; give a "
                "num_labeled or set imbalance_ratio=1."
            )
        return np.flatnonzero(allowed).astype(np.int64)
    counts = per_class_counts(num_labeled, num_classes, imbalance_ratio=imbalance_ratio)
    chosen = []
    for cls, count in enumerate(counts):
        members = np.flatnonzero((labels == cls) & allowed)
        if count > members.size:
            held_out = "" if exclude is None else " outside the validation set"
            raise DataRequestError(
                f"Class {cls} holds {members.size} examples{held_out} but the labeled set asks "
                f"for {count} of it (num_labeled={num_labeled}, {num_classes} classes, "
                f"imbalance_ratio={imbalance_ratio})."
            )
        rng = np.random.default_rng([seed, cls])
        chosen.append(rng.choice(members, size=count, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def unlabeled_class_counts(class_sizes: ArrayLike, *, ratio: float) -> np.ndarray:
    """How many training images of each class the unlabeled pool keeps (USB's protocol).

    ``ratio`` 1: every image. ``ratio`` > 1: class 0 keeps as many as the
    smallest class holds, class c ``ratio ** (-c / (C - 1))`` times that
    (floored, at least 1): the labeled long tail's order. ``ratio`` < -1: the
    same profile in the reversed order (the last class largest).
    """
    sizes = np.asarray(class_sizes, np.int64)
    if ratio == 1.0:
        return sizes.copy()
    if -1.0 < ratio < 1.0 or ratio == -1.0:
        raise DataRequestError(
            f"data.unlabeled_imbalance_ratio={ratio} must be 1 (as the dataset is), > 1 "
            "(class 0 largest) or < -1 (the reversed order)."
        )
    num_classes = sizes.size
    if num_classes < 2:
        raise DataRequestError("An imbalanced unlabeled pool needs at least 2 classes.")
    rank = np.arange(num_classes) if ratio > 0 else np.arange(num_classes)[::-1]
    shares = abs(ratio) ** (-rank / (num_classes - 1))
    return np.maximum(1, np.floor(sizes.min() * shares)).astype(np.int64)


def unlabeled_pool_mask(
    labels: ArrayLike, *, ratio: float, seed: int, num_classes: int
) -> np.ndarray:
    """Which training images join the unlabeled pool: bool ``[len(labels)]``.

    The kept images of each class (`unlabeled_class_counts`) are drawn from the
    seed on a stream of their own, from the labels of the whole training split,
    so every host keeps the same pool without communicating.
    """
    labels = np.asarray(labels)
    keep = np.ones(labels.shape[0], bool)
    if ratio == 1.0:
        return keep
    sizes = np.bincount(labels, minlength=num_classes)
    counts = unlabeled_class_counts(sizes, ratio=ratio)
    keep[:] = False
    for cls, count in enumerate(counts):
        members = np.flatnonzero(labels == cls)
        rng = np.random.default_rng([seed, cls, 0x756E6C])  # Its own stream ("unl").
        keep[rng.choice(members, size=int(count), replace=False)] = True
    return keep
