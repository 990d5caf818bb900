"""The datasets the pipeline knows by name, and what each needs.

The table holds the facts TFDS's metadata does not give (whether a flip
keeps the class, unlabeled-only splits). Any other name is read as a TFDS
dataset prepared in ``data_dir`` with the defaults of `CatalogEntry`, its
classes, image shape and splits from its metadata (`lookup`); your own files
come in through ``data.path`` (`muscle_jax.data.files`), arrays in memory as
an `ArrayDataset`.
"""

import dataclasses

from muscle_jax.data.validation import DataRequestError


@dataclasses.dataclass(frozen=True)
class CatalogEntry:
    """How to read one named dataset.

    Attributes:
      tfds_name: the TFDS builder; None for the embedded `digits`.
      flip: whether weak augmentation flips horizontally. Off for digits of
        any kind (a mirrored 2 is not a 2: mnist, digits, svhn_cropped, as
        FixMatch does for SVHN); on for natural images and for fashion_mnist,
        whose garment classes are left-right symmetric.
      extra_unlabeled_splits: splits without labels that join the unlabeled
        stream after the training split (STL-10's `unlabeled`).
    """

    tfds_name: str | None
    flip: bool = True
    train_split: str = "train"
    test_split: str = "test"
    extra_unlabeled_splits: tuple[str, ...] = ()


CATALOG: dict[str, CatalogEntry] = {
    "digits": CatalogEntry(tfds_name=None, flip=False),
    "mnist": CatalogEntry(tfds_name="mnist", flip=False),
    "fashion_mnist": CatalogEntry(tfds_name="fashion_mnist", flip=True),
    "cifar10": CatalogEntry(tfds_name="cifar10"),
    "cifar100": CatalogEntry(tfds_name="cifar100"),
    "svhn_cropped": CatalogEntry(tfds_name="svhn_cropped", flip=False),
    "stl10": CatalogEntry(tfds_name="stl10", extra_unlabeled_splits=("unlabeled",)),
    "mini_imagenet": CatalogEntry(tfds_name="mini_imagenet"),
}


def lookup(name: str) -> CatalogEntry:
    """The table's entry for ``name``; for any other name, TFDS's dataset of that name."""
    if not name:
        raise DataRequestError(
            "data.name is empty; name a dataset (" + ", ".join(sorted(CATALOG)) + ", or any "
            "TFDS dataset prepared in data.data_dir) or give data.path."
        )
    return CATALOG.get(name) or CatalogEntry(tfds_name=name)
