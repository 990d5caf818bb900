"""Real TFDS files with random content: the `mnist` and `cifar10` formats, offline.

TFDS cannot download here, but the input pipeline's speed depends on the
on-disk format (TFRecord shards of PNG-encoded images, decoded by tf.data),
not on what the pictures show. `prepare` writes a dataset with the real
builder's name, version and features under ``data_dir``, so that the
pipeline opens it exactly as it opens the real one:
``input_pipeline.make_train_iterator("cifar10", data_dir=data_dir, ...)``.
"""

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.image_classification import cifar, mnist

_REAL_BUILDERS = {"mnist": mnist.MNIST, "cifar10": cifar.Cifar10}


def _synthetic_builder(name: str):
    real = _REAL_BUILDERS[name]

    class Synthetic(real, skip_registration=True):
        """The real builder's name, version and features; random examples of each class."""

        def __init__(self, *, num_train: int, num_test: int, **kwargs):
            self._sizes = {"train": num_train, "test": num_test}
            super().__init__(**kwargs)

        def _split_generators(self, dl_manager):
            return {split: self._examples(split, size) for split, size in self._sizes.items()}

        def _examples(self, split: str, size: int):
            features = self.info.features
            rng = np.random.default_rng(0 if split == "train" else 1)
            for index in range(size):
                example = {
                    "image": rng.integers(0, 256, features["image"].shape, dtype=np.uint8),
                    "label": index % features["label"].num_classes,
                }
                if "id" in features:  # cifar10's "train_00001"-style example ids.
                    example["id"] = f"{split}_{index:05d}"
                yield index, example

    Synthetic.name = real.name
    return Synthetic


def prepare(name: str, data_dir: str, *, num_train: int, num_test: int) -> None:
    """Writes ``name`` (``mnist`` or ``cifar10``) with random images under ``data_dir``."""
    tfds.disable_progress_bar()
    builder = _synthetic_builder(name)(num_train=num_train, num_test=num_test, data_dir=data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )
