"""The data types the input pipeline's modules share: `DatasetInfo` and `ArrayDataset`.

A leaf: it imports nothing of muscle_jax, so `sources` (which reads them)
and `files` (which makes `ArrayDataset`s from your files) both import it
and not each other. Both names are also importable where they are
documented, `muscle_jax.input_pipeline` and `muscle_jax.data.sources`.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the trainer needs to know about a dataset before reading it.

    Attributes:
      image_shape: (H, W, C) as the pipeline yields it.
      num_unlabeled_only: examples without labels that join the unlabeled
        stream (STL-10: 100,000). Unlabeled indices run over
        `[0, num_train + num_unlabeled_only)`, training examples first.
      class_names: the name of each label, where the dataset has them (an
        image folder's class folders, a TFDS ClassLabel's names).
    """

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]
    num_train: int
    num_test: int
    num_unlabeled_only: int = 0
    class_names: tuple[str, ...] | None = None

    @property
    def pool_size(self) -> int:
        """Size of the unlabeled pool, the range of `unlabeled_index`."""
        return self.num_train + self.num_unlabeled_only


@dataclasses.dataclass(frozen=True, eq=False)
class ArrayDataset:
    """A dataset held in memory: your own arrays, the files of `muscle_jax.data.files`, tests.

    Images are uint8 `[N, H, W, C]`, labels integer `[N]` in [0, num_classes);
    ``unlabeled_images`` join the unlabeled pool. Train on it with
    ``train.train_and_evaluate(config, workdir, source=dataset)``, or pass it to
    the pipeline's functions in place of a dataset name.
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    flip: bool = True
    unlabeled_images: np.ndarray | None = None
    class_names: tuple[str, ...] | None = None
