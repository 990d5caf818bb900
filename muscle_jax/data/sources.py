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
import functools
import os
from collections.abc import Callable

import numpy as np
import tensorflow as tf
from absl import logging

from muscle_jax.data import catalog, digits, files, graph, validation
from muscle_jax.data.types import ArrayDataset, DatasetInfo

# ArrayDataset and DatasetInfo live in `types` (`files` makes ArrayDatasets
# too), and are documented and importable here as before.
__all__ = [
    "ArrayDataset",
    "ArraySource",
    "DatasetInfo",
    "DatasetNotFoundError",
    "TfdsSource",
    "open_source",
]

# TFDS reads files one after the other, so positions in a split (and the
# `split[a:b]` slices used for per-host shards) mean the same thing in every read.
_IN_ORDER = {"interleave_cycle_length": 1}


class DatasetNotFoundError(FileNotFoundError):
    """The dataset is not prepared in data_dir and downloading is not allowed."""


class ArraySource:
    """A source over NumPy arrays (validated on creation).

    ``on_accept`` is what opening held back until the run is accepted
    (`files.open_files`' ``keep``: an image folder's cache); `accept` runs it.
    """

    def __init__(self, data: ArrayDataset, *, on_accept: Callable[[], None] | None = None):
        self._on_accept = on_accept
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
            class_names=_checked_names(name, data.class_names, data.num_classes),
        )
        self._train_labels = np.asarray(data.train_labels, np.int32)
        pool_images = [data.train_images] + ([] if extra is None else [extra])
        pool_labels = [self._train_labels] + ([] if extra is None else [np.full(len(extra), -1)])
        self._parts = {
            "pool": (np.concatenate(pool_images), np.concatenate(pool_labels).astype(np.int32)),
            "test": (np.asarray(data.test_images), np.asarray(data.test_labels, np.int32)),
        }

    def accept(self) -> None:
        """The run is accepted: writes what opening held back, once; a refused run writes none."""
        on_accept, self._on_accept = self._on_accept, None
        if on_accept is not None:
            on_accept()

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


def _checked_names(name: str, names, num_classes: int) -> tuple[str, ...] | None:
    if names is not None and len(names) != num_classes:
        raise validation.DataValidationError(
            f"Dataset {name!r}: {len(names)} class names for {num_classes} classes."
        )
    return None if names is None else tuple(str(n) for n in names)


class TfdsSource:
    """A source over a prepared TFDS dataset."""

    def __init__(self, name: str, *, data_dir: str | None, download: bool, builder=None):
        """`builder` overrides the catalog's TFDS builder (tests build tiny ones)."""
        import tensorflow_datasets as tfds

        self._tfds = tfds
        spec = catalog.lookup(name)
        if spec.tfds_name == "mini_imagenet":
            from muscle_jax.data import mini_imagenet  # noqa: F401  (registers the builder)
        self.flip = spec.flip
        self._builder = builder or _builder(name, spec, data_dir)
        if not self._builder.is_prepared():
            if not download:
                raise DatasetNotFoundError(_missing_message(name, spec, data_dir, self._builder))
            self._builder.download_and_prepare()
        features = self._builder.info.features
        self._image_key = _feature_key(name, features, tfds.features.Image, "image")
        self._label_key = _feature_key(name, features, tfds.features.ClassLabel, "label")
        image, label = features[self._image_key], features[self._label_key]
        validation.check_image_spec(name, image.shape, image.np_dtype)
        self._spec = dataclasses.replace(spec, test_split=self._test_split(name, spec))
        self._sizes = {split: self._count(split) for split in self._pool_splits()}
        self._test_size = self._count(self._spec.test_split)
        self.info = DatasetInfo(
            name=name,
            num_classes=label.num_classes,
            image_shape=tuple(int(d) for d in image.shape),
            num_train=self._sizes[spec.train_split],
            num_test=self._test_size,
            num_unlabeled_only=sum(self._sizes[s] for s in spec.extra_unlabeled_splits),
            class_names=tuple(label.names) if label.names else None,
        )

    def _test_split(self, name: str, spec: catalog.CatalogEntry) -> str:
        """The table's test split; a dataset without one is evaluated on its validation split."""
        splits = set(self._builder.info.splits.keys())
        if not splits or spec.test_split in splits:
            return spec.test_split  # (tfds.testing.mock_data leaves the split metadata empty.)
        if "validation" in splits:
            return "validation"
        raise validation.DataRequestError(
            f"Dataset {name!r} has the splits {sorted(splits)}: none is {spec.test_split!r} or "
            "'validation' to evaluate on."
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

    def accept(self) -> None:
        """Nothing was held back: TFDS prepares its files itself (`ArraySource.accept`)."""

    @functools.cache  # noqa: B019  (one source per run; the labels are read once)
    def train_labels(self) -> np.ndarray:
        """The training split's labels: one pass over the split, then kept for the run.

        The labeled subset, the validation set and the unlabeled pool are all
        drawn from them, at start-up and again by each iterator.
        """
        decoders = {self._image_key: self._tfds.decode.SkipDecoding()}
        split = self._spec.train_split
        ds = self._builder.as_dataset(
            split=split,
            shuffle_files=False,
            decoders=decoders,
            read_config=self._tfds.ReadConfig(**_IN_ORDER),
        )
        batches = (
            ds.map(graph.plain(lambda ex: ex[self._label_key])).batch(8192).as_numpy_iterator()
        )
        labels = np.concatenate(list(batches)).astype(np.int32)
        validation.check_labels(self.info.name, split, labels, self.info.num_classes)
        labels.setflags(write=False)  # Shared by every caller.
        return labels

    def gather_train(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One pass over the training split, keeping `indices` (sorted, unique)."""
        wanted = np.zeros(self.info.num_train, bool)
        wanted[indices] = True
        keep = tf.constant(wanted)
        ds = self.read("pool", 0, self.info.num_train).filter(
            graph.plain(lambda ex: keep[ex["index"]])
        )
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
                    graph.plain(
                        lambda i, ex: {
                            "image": ex[self._image_key],
                            "label": tf.cast(ex[self._label_key], tf.int32),
                            "index": tf.cast(i, tf.int32),
                        }
                    )
                )
            )
        ds = datasets[0]
        for more in datasets[1:]:
            ds = ds.concatenate(more)
        return ds


def _builder(name: str, spec: catalog.CatalogEntry, data_dir: str | None):
    """TFDS's builder for ``spec``: a registered one, or one prepared in ``data_dir``."""
    import tensorflow_datasets as tfds

    try:
        return tfds.builder(spec.tfds_name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        pass
    # Not a builder this TFDS knows: a dataset prepared elsewhere (a builder of
    # your own, `tfds build` of a community dataset) is read from its files.
    root = os.path.join(os.path.expanduser(data_dir or tfds.core.constants.DATA_DIR), name)
    versions = sorted(
        (v for v in (os.listdir(root) if os.path.isdir(root) else []) if v[:1].isdigit()),
        key=lambda v: tuple(int(p) for p in v.split(".") if p.isdigit()),
    )
    if versions:
        return tfds.builder_from_directory(os.path.join(root, versions[-1]))
    raise validation.DataRequestError(
        f"Unknown dataset {name!r}: not in the table ({', '.join(sorted(catalog.CATALOG))}), "
        f"not a TFDS dataset, and not prepared in {root}. Name one of those, or give your own "
        "images with --config.data.path=DIR (an image folder) or FILE.npz (see docs/custom.md)."
    )


def _feature_key(name: str, features, kind, preferred: str) -> str:
    """The feature of ``kind`` (Image, ClassLabel): ``preferred`` or the only one there is."""
    if preferred in features and isinstance(features[preferred], kind):
        return preferred
    keys = [key for key, feature in features.items() if isinstance(feature, kind)]
    if len(keys) != 1:
        raise validation.DataRequestError(
            f"Dataset {name!r} has {len(keys)} {kind.__name__} features ({keys}) and none named "
            f"{preferred!r}; the pipeline needs exactly one image and one class label."
        )
    return keys[0]


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
    name: "str | ArrayDataset",
    *,
    data_dir: str | None = None,
    download: bool = False,
    path: str | None = None,
    image_size: int | None = None,
    cache_dir: str | None = None,
    max_image_size: int | None = None,
) -> "ArraySource | TfdsSource":
    """The source for a name, your own files at ``path``, or an `ArrayDataset`; fails fast.

    ``path`` (an image folder or an ``.npz``, `muscle_jax.data.files`) takes
    precedence over the name; ``image_size`` resizes its images (else
    ``max_image_size`` those larger than it) and ``cache_dir`` keeps an image
    folder's decoded arrays. A name is the
    embedded digits, a table dataset or any TFDS dataset in ``data_dir``. An
    already opened source is returned as it is, so a run opens its dataset once.
    Opening writes nothing: the image folder's cache is written by the
    source's ``accept()``, which a run calls once it is accepted.
    """
    if isinstance(name, (ArraySource, TfdsSource)):
        return name
    if isinstance(name, ArrayDataset):
        return ArraySource(name)
    if path:
        dataset, keep = files.open_files(
            path, image_size=image_size, cache_dir=cache_dir, max_image_size=max_image_size
        )
        return ArraySource(dataset, on_accept=keep)
    spec = catalog.lookup(name)
    if spec.tfds_name is None:
        if data_dir:
            logging.warning(
                "data.data_dir=%s is not read: %r is embedded (scikit-learn's copy). For your "
                "own files give data.path; for a TFDS dataset there, its name.",
                data_dir,
                name,
            )
        train_x, train_y, test_x, test_y = digits.load()
        return ArraySource(
            ArrayDataset(name, train_x, train_y, test_x, test_y, num_classes=10, flip=spec.flip)
        )
    return TfdsSource(name, data_dir=data_dir, download=download)
