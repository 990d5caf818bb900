"""The embedded default dataset: scikit-learn's `load_digits`, no download needed.

1,797 real 8x8 grey images of the digits 0-9, values 0..16, shipped inside
scikit-learn. The train/test split is fixed in code (stratified, seed below)
so every machine and every run agrees on it.
"""

import functools

import numpy as np

NUM_TEST = 300
_SPLIT_SEED = 20201201  # Fixed forever: changing it changes every digits result.


@functools.cache
def load() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_images, train_labels, test_images, test_labels); images uint8 `[N, 8, 8, 1]`.

    Pixel values 0..16 are rescaled to 0..255 (17 distinct levels, nothing
    lost) so that every dataset enters the pipeline as uint8 in [0, 255].
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int32)
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=NUM_TEST, stratify=labels, random_state=_SPLIT_SEED
    )
    for array in (train_x, test_x, train_y, test_y):
        array.setflags(write=False)
    return train_x, train_y, test_x, test_y
