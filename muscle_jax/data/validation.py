"""Bad-data checks that run when an iterator is created, before anything compiles.

Each error names what is wrong, the numbers involved and what to do about it,
so a broken dataset fails in seconds with a readable message instead of as a
shape error inside a jitted step (or, worse, as silently wrong training).
"""

import numpy as np


class DataValidationError(ValueError):
    """The dataset's content does not match what the pipeline or the config expects."""


class DataRequestError(ValueError):
    """A request the dataset or the processes cannot satisfy: an unknown dataset, a labeled
    subset it cannot give, a batch that does not split over the processes or devices."""


def check_image_spec(name: str, shape: tuple, dtype) -> None:
    """Images must be `[H, W, C]` uint8 with every dimension known."""
    if len(shape) != 3 or any(d is None or d <= 0 for d in shape):
        raise DataValidationError(
            f"Dataset {name!r}: images must have a fixed shape (height, width, channels), "
            f"got {tuple(shape)}. Resize the images to one size when preparing the dataset."
        )
    if np.dtype(dtype) != np.uint8:
        raise DataValidationError(
            f"Dataset {name!r}: images must be uint8 in [0, 255], got dtype {np.dtype(dtype)}. "
            "Convert them (e.g. np.round(x * 255).astype(np.uint8) for [0, 1] floats)."
        )


def check_num_classes(name: str, dataset_classes: int, requested: int | None) -> None:
    if requested is not None and requested != dataset_classes:
        raise DataValidationError(
            f"num_classes={requested} does not match dataset {name!r}, which has "
            f"{dataset_classes} classes. Set num_classes to {dataset_classes} (or leave it unset)."
        )


def check_labels(name: str, split: str, labels: np.ndarray, num_classes: int) -> None:
    """Labels must be integers in [0, num_classes); the split must not be empty."""
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataValidationError(
            f"Dataset {name!r} split {split!r}: labels must be a 1-D integer array, "
            f"got shape {labels.shape} dtype {labels.dtype}."
        )
    if labels.size == 0:
        raise DataValidationError(f"Dataset {name!r} split {split!r} is empty.")
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataValidationError(
            f"Dataset {name!r} split {split!r}: {int(bad.sum())} labels outside "
            f"[0, {num_classes}), e.g. label {int(labels[first])} at index {first}. "
            "Fix the labels or the dataset's num_classes."
        )


def check_arrays(
    name: str, split: str, images: np.ndarray, labels: np.ndarray | None, num_classes: int
) -> None:
    """In-memory images `[N, H, W, C]` uint8 and their labels `[N]`."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise DataValidationError(
            f"Dataset {name!r} split {split!r}: images must be [N, H, W, C], "
            f"got shape {images.shape}. Add a channel axis for grey images (x[..., None])."
        )
    check_image_spec(name, images.shape[1:], images.dtype)
    if labels is None:
        if images.shape[0] == 0:
            raise DataValidationError(f"Dataset {name!r} split {split!r} is empty.")
        return
    labels = np.asarray(labels)
    if labels.shape[:1] != images.shape[:1]:
        raise DataValidationError(
            f"Dataset {name!r} split {split!r}: {images.shape[0]} images but labels of "
            f"shape {labels.shape}."
        )
    check_labels(name, split, labels, num_classes)
