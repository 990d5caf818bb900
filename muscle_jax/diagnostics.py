"""What a run's confusion matrix and its unlabeled-sample predictions say about its classes.

At one label a class, MUSCLE's MI term can leave a class that no test image
is predicted as. The figures here tell the two ways apart: a class merged
into another (its test images predicted as that other class: the confusion
matrix's row) and an output reused for something else (the class is still
predicted, on the unlabeled sample, but not for its own images). NumPy
only: the experiment suites read it without importing jax.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np

# A class is lost when its test recall (the EMA model's, at the final
# evaluation) is below this. The one definition: results.json, summary.md and
# the suites' reports all count lost classes with `lost_classes`.
LOST_CLASS_RECALL = 0.3
# The rule in words, for the reports.
LOST_CLASS_RULE = f"test recall below {LOST_CLASS_RECALL * 100:g} %"

# summary.md prints the whole confusion matrix up to this many classes; above
# it, the per-class recall and the largest off-diagonal cells (`top_confusions`).
FULL_MATRIX_CLASSES = 20
TOP_CONFUSIONS = 10


def recalls(confusion: np.ndarray) -> list[float | None]:
    """Each class's recall, diagonal / row sum (None for a class absent from the test set)."""
    confusion = np.asarray(confusion)
    rows = confusion.sum(axis=1)
    return [float(confusion[k, k] / n) if n else None for k, n in enumerate(rows)]


def lost_classes(per_class_recall: Sequence[float | None]) -> list[int]:
    """The classes whose recall is below `LOST_CLASS_RECALL` (absent classes are not lost)."""
    return [
        k
        for k, recall in enumerate(per_class_recall)
        if recall is not None and recall < LOST_CLASS_RECALL
    ]


def classes_lost_entry(per_class_recall: Sequence[float | None]) -> dict[str, Any]:
    """results.json's ``classes_lost``: the threshold, the lost classes and their count."""
    lost = lost_classes(per_class_recall)
    return {"threshold": LOST_CLASS_RECALL, "classes": lost, "count": len(lost)}


def top_confusions(
    confusion: np.ndarray, limit: int = TOP_CONFUSIONS
) -> list[tuple[int, int, int]]:
    """The largest off-diagonal cells as (true, predicted, images), largest first.

    Ties go to the lower (true, predicted) pair, so the list is reproducible.
    """
    confusion = np.asarray(confusion)
    cells = [
        (int(confusion[t, p]), t, p)
        for t in range(confusion.shape[0])
        for p in range(confusion.shape[1])
        if t != p and confusion[t, p] > 0
    ]
    cells.sort(key=lambda cell: (-cell[0], cell[1], cell[2]))
    return [(t, p, count) for count, t, p in cells[:limit]]


def unpredicted_classes(histogram: Sequence[int]) -> list[int]:
    """The classes a model predicts for none of the images (a histogram of predictions)."""
    return [k for k, count in enumerate(histogram) if count == 0]
