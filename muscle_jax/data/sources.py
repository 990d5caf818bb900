"""Reading a dataset by name (TFDS, or the embedded digits) or from in-memory arrays.

A source answers three questions: what the dataset is (`info`), what the
training labels are (to choose the labeled subset), and which examples lie in
a range of the training pool or the test split (`read`). The training pool is
the training split followed by any unlabeled-only splits (STL-10's
`unlabeled`); an example's index is its position in that pool, the same on
every host.

TFDS data is never downloaded unless `download=True`: a missing dataset is a
`DatasetNotFoundError` raised in well under a second, naming the dataset, the
data_dir and how to prepare it offline (TFDS 4.9 keeps GCS lookups off by
default, and `tfds.builder` only reads local metadata).
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from muscle_jax.data import catalog, digits, validation

# TFDS reads files one after the other, so positions in a split (and the
# `split[a:b]` slices used for per-host shards) mean the same thing in every read.
_IN_ORDER = {"interleave_cycle_length": 1}


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the trainer needs to know about a dataset before reading it.

    Attributes:
      image_shape: (H, W, C) as the pipeline yields it.
      num_unlabeled_only: examples without labels that join the unlabeled
        stream (STL-10: 100,000). Unlabeled indices run over
        `[0, num_train + num_unlabeled_only)`, training examples first.
    """

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]
    num_train: int
    num_test: int
    num_unlabeled_only: int = 0

    @property
    def pool_size(self) -> int:
        """Size of the unlabeled pool, the range of `unlabeled_index`."""
        return self.num_train + self.num_unlabeled_only


@dataclasses.dataclass(frozen=True, eq=False)
class ArrayDataset:
    """A dataset held in memory: for tests, and for data that is not in the catalog.

    Images are uint8 `[N, H, W, C]`, labels integer `[N]` in [0, num_classes).
    Pass it wherever a dataset name is accepted.
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    flip: bool = True
    unlabeled_images: np.ndarray | None = None


class DatasetNotFoundError(FileNotFoundError):
    """The dataset is not prepared in data_dir and downloading is not allowed."""


class ArraySource:
    """A source over NumPy arrays (validated on creation)."""

    def __init__(self, data: ArrayDataset):
        name = data.name
        validation.check_arrays(
            name, "train", data.train_images, data.train_labels, data.num_classes
        )
        validation.check_arrays(name, "test", data.test_images, data.test_labels, data.num_classes)
        shape = data.train_images.shape[1:]
        extra = data.unlabeled_images
        if extra is not None:
            validation.check_arrays(name, "unlabeled", extra, None, data.num_classes)
        for split, images in (("test", data.test_images), ("unlabeled", extra)):
            if images is not None and images.shape[1:] != shape:
                raise validation.DataValidationError(
                    f"Dataset {name!r}: {split} images have shape {images.shape[1:]} but "
                    f"train images {shape}."
                )
        self.flip = data.flip
        self.info = DatasetInfo(
            name=name,
            num_classes=data.num_classes,
            image_shape=tuple(int(d) for d in shape),
            num_train=len(data.train_labels),
            num_test=len(data.test_labels),
            num_unlabeled_only=0 if extra is None else len(extra),
        )
        self._train_labels = np.asarray(data.train_labels, np.int32)
        pool_images = [data.train_images] + ([] if extra is None else [extra])
        pool_labels = [self._train_labels] + ([] if extra is None else [np.full(len(extra), -1)])
        self._parts = {
            "pool": (np.concatenate(pool_images), np.concatenate(pool_labels).astype(np.int32)),
            "test": (np.asarray(data.test_images), np.asarray(data.test_labels, np.int32)),
        }

    def train_labels(self) -> np.ndarray:
        return self._train_labels

    def gather_train(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images, labels = self._parts["pool"]
        return images[indices], labels[indices]

    def read(self, part: str, start: int, end: int) -> tf.data.Dataset:
        """Examples `[start, end)` of "pool" or "test": dicts of image, label, index."""
        images, labels = self._parts[part]
        return tf.data.Dataset.from_tensor_slices(
            {
                "image": images[start:end],
                "label": labels[start:end],
                "index": np.arange(start, end, dtype=np.int32),
            }
        )


class TfdsSource:
    """A source over a prepared TFDS dataset."""

    def __init__(self, name: str, *, data_dir: str | None, download: bool, builder=None):
        """`builder` overrides the catalog's TFDS builder (tests build tiny ones)."""
        import tensorflow_datasets as tfds

        self._tfds = tfds
        spec = catalog.entry(name)
        if spec.tfds_name == "mini_imagenet":
            from muscle_jax.data import mini_imagenet  # noqa: F401  (registers the builder)
        self.flip = spec.flip
        self._spec = spec
        self._builder = builder or tfds.builder(spec.tfds_name, data_dir=data_dir)
        if not self._builder.is_prepared():
            if not download:
                raise DatasetNotFoundError(_missing_message(name, spec, data_dir, self._builder))
            self._builder.download_and_prepare()
        features = self._builder.info.features
        image, label = features["image"], features["label"]
        validation.check_image_spec(name, image.shape, image.np_dtype)
        self._sizes = {split: self._count(split) for split in self._pool_splits()}
        self._test_size = self._count(spec.test_split)
        self.info = DatasetInfo(
            name=name,
            num_classes=label.num_classes,
            image_shape=tuple(int(d) for d in image.shape),
            num_train=self._sizes[spec.train_split],
            num_test=self._test_size,
            num_unlabeled_only=sum(self._sizes[s] for s in spec.extra_unlabeled_splits),
        )

    def _pool_splits(self) -> tuple[str, ...]:
        return (self._spec.train_split, *self._spec.extra_unlabeled_splits)

    def _count(self, split: str) -> int:
        # The dataset's cardinality, rather than info.splits, so that
        # `tfds.testing.mock_data` (whose split metadata is empty) works too.
        return int(self._builder.as_dataset(split=split).cardinality())

    def _split(self, split: str, start: int, end: int) -> tf.data.Dataset:
        return self._builder.as_dataset(
            split=f"{split}[{start}:{end}]",
            shuffle_files=False,
            read_config=self._tfds.ReadConfig(**_IN_ORDER),
        )

    def train_labels(self) -> np.ndarray:
        decoders = {"image": self._tfds.decode.SkipDecoding()}
        split = self._spec.train_split
        ds = self._builder.as_dataset(
            split=split,
            shuffle_files=False,
            decoders=decoders,
            read_config=self._tfds.ReadConfig(**_IN_ORDER),
        )
        batches = ds.map(lambda ex: ex["label"]).batch(8192).as_numpy_iterator()
        labels = np.concatenate(list(batches)).astype(np.int32)
        validation.check_labels(self.info.name, split, labels, self.info.num_classes)
        return labels

    def gather_train(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One pass over the training split, keeping `indices` (sorted, unique)."""
        wanted = np.zeros(self.info.num_train, bool)
        wanted[indices] = True
        keep = tf.constant(wanted)
        ds = self.read("pool", 0, self.info.num_train).filter(lambda ex: keep[ex["index"]])
        batches = list(ds.batch(4096).as_numpy_iterator())
        found = np.concatenate([b["index"] for b in batches])
        if not np.array_equal(found, indices):
            raise validation.DataValidationError(
                f"Dataset {self.info.name!r}: reading the training split twice gave different "
                f"examples ({found.size} of the {len(indices)} labeled ones found). Is the "
                "data being rewritten while training starts?"
            )
        images = np.concatenate([b["image"] for b in batches])
        return images, np.concatenate([b["label"] for b in batches])

    def read(self, part: str, start: int, end: int) -> tf.data.Dataset:
        """Examples `[start, end)` of "pool" or "test": dicts of image, label, index."""
        if part == "test":
            pieces = [(self._spec.test_split, start, end, 0)]
        else:
            pieces, offset = [], 0
            for split in self._pool_splits():
                lo, hi = max(start, offset), min(end, offset + self._sizes[split])
                if lo < hi:
                    pieces.append((split, lo - offset, hi - offset, offset))
                offset += self._sizes[split]
        datasets = []
        for split, lo, hi, offset in pieces:
            ds = self._split(split, lo, hi).enumerate(start=offset + lo)
            datasets.append(
                ds.map(
                    lambda i, ex: {
                        "image": ex["image"],
                        "label": tf.cast(ex["label"], tf.int32),
                        "index": tf.cast(i, tf.int32),
                    }
                )
            )
        ds = datasets[0]
        for more in datasets[1:]:
            ds = ds.concatenate(more)
        return ds


def _missing_message(name, spec, data_dir, builder) -> str:
    where = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets (TFDS default)"
    if spec.tfds_name == "mini_imagenet":
        how = (
            "place the images as <manual_dir>/<class>/*.jpg (100 classes x 600) and run "
            "`tfds build mini_imagenet --imports=muscle_jax.data.mini_imagenet "
            "--manual_dir=<manual_dir> --data_dir=DIR`"
        )
    else:
        how = (
            f"on a machine with internet run `tfds build {spec.tfds_name} --data_dir=DIR`, "
            f"copy DIR/{spec.tfds_name} to this machine"
        )
    return (
        f"Dataset {name!r} (TFDS {spec.tfds_name!r}) is not prepared in data_dir={where} "
        f"(looked for {builder.data_dir}). Downloads are off (download=False). To prepare it "
        f"offline: {how}, then pass --config.data.data_dir=DIR. See docs/datasets.md. The embedded "
        f"'digits' dataset needs no preparation."
    )


def open_source(
    name: "str | ArrayDataset", *, data_dir: str | None = None, download: bool = False
) -> "ArraySource | TfdsSource":
    """The source for a catalog name or an `ArrayDataset`; fails fast when data is missing.

    An already opened source is returned as it is, so a run opens its dataset once.
    """
    if isinstance(name, (ArraySource, TfdsSource)):
        return name
    if isinstance(name, ArrayDataset):
        return ArraySource(name)
    spec = catalog.entry(name)
    if spec.tfds_name is None:
        train_x, train_y, test_x, test_y = digits.load()
        return ArraySource(
            ArrayDataset(name, train_x, train_y, test_x, test_y, num_classes=10, flip=spec.flip)
        )
    return TfdsSource(name, data_dir=data_dir, download=download)
