"""Datasets from your own files: a folder of images by class, or arrays in an ``.npz``.

Both are read into memory as an `ArrayDataset` (the pipeline then treats
them like the embedded digits), chosen with ``data.path``:

* a directory is an image folder::

      DIR/train/<class>/*.png|jpg|jpeg     labeled training images, one folder a class
      DIR/test/<class>/*                   the test set, with the same class names
      DIR/unlabeled/**/*                   optional: images without a class, which
                                           join the unlabeled pool

  Class names are the folder names, sorted (label k is the k-th name).
  Images may be RGB or grey (all grey gives one channel; a mix is made RGB)
  and are resized to ``image_size`` x ``image_size`` when it is given; else
  those larger than ``max_image_size`` (when given) are resized down to
  ``max_image_size`` x ``max_image_size``, and every image must then have the
  same size. The decoded arrays are
  cached once in ``cache_dir`` under a fingerprint of the file list (names,
  sizes, modification times) and the size, so later runs and resumes read
  one file instead of decoding every image again; a changed folder gets a
  new fingerprint.

* a file ending in ``.npz`` holds ``x_train, y_train, x_test, y_test`` and
  optionally ``x_unlabeled`` (images uint8 ``[N, H, W]`` or ``[N, H, W, C]``,
  integer labels), and optionally ``class_names``.

Every problem is a `DataValidationError` (or `DataRequestError` for a path
that is not there) naming the folder or file and the fix, raised before
anything is written.
"""

import functools
import hashlib
import json
import os
from collections.abc import Callable

import numpy as np
from absl import logging

from muscle_jax.data.types import ArrayDataset
from muscle_jax.data.validation import DataRequestError, DataValidationError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Bump when the cached arrays would come out differently for the same files.
_CACHE_VERSION = 1
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def load(
    path: str, *, image_size: int | None, cache_dir: str | None, max_image_size: int | None = None
) -> ArrayDataset:
    """The dataset at ``path``: an image folder (a directory) or an ``.npz`` file.

    ``image_size``: every image resized to it; else ``max_image_size``: the
    images larger than it resized down to it, smaller ones kept as they are.
    """
    dataset, keep = open_files(
        path, image_size=image_size, cache_dir=cache_dir, max_image_size=max_image_size
    )
    keep()
    return dataset


def open_files(
    path: str, *, image_size: int | None, cache_dir: str | None, max_image_size: int | None = None
) -> tuple[ArrayDataset, Callable[[], None]]:
    """`load`, writing nothing: returns the dataset and ``keep``, which writes the cache.

    ``keep()`` writes an image folder's decoded arrays to ``cache_dir`` when
    they were not cached yet, and logs where the images came from. A run
    calls it once it is accepted, so that a run refused for its config or
    its data leaves no file behind; until then the closure holds the
    decoded arrays (one more copy of the images).
    """
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(path):
        return _open_image_folder(
            path, image_size=image_size, cache_dir=cache_dir, max_image_size=max_image_size
        )
    if path.endswith(".npz") and os.path.isfile(path):
        dataset = load_npz(path, image_size=image_size, max_image_size=max_image_size)
        return dataset, lambda: None
    if not os.path.exists(path):
        raise DataRequestError(
            f"data.path={path} does not exist. Give an image folder (DIR/train/<class>/..., "
            "DIR/test/<class>/...) or an .npz file (x_train, y_train, x_test, y_test)."
        )
    raise DataRequestError(
        f"data.path={path} is neither a directory (an image folder) nor an .npz file."
    )


# ---------------------------------------------------------------- .npz arrays


def load_npz(
    path: str, *, image_size: int | None = None, max_image_size: int | None = None
) -> ArrayDataset:
    """``x_train, y_train, x_test, y_test`` (+ ``x_unlabeled``, ``class_names``) from ``path``."""
    try:
        arrays = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataValidationError(f"{path} is not a readable .npz file: {error}") from None
    with arrays:
        missing = [key for key in NPZ_KEYS if key not in arrays.files]
        if missing:
            raise DataValidationError(
                f"{path} lacks {', '.join(missing)}; it has {', '.join(arrays.files) or 'nothing'}"
                f". Save it with np.savez(path, x_train=..., y_train=..., x_test=..., "
                "y_test=...[, x_unlabeled=...])."
            )
        x_train, x_test = (_images(path, key, arrays[key]) for key in ("x_train", "x_test"))
        y_train, y_test = (_labels(path, key, arrays[key]) for key in ("y_train", "y_test"))
        unlabeled = None
        if "x_unlabeled" in arrays.files:
            unlabeled = _images(path, "x_unlabeled", arrays["x_unlabeled"])
        names = None
        if "class_names" in arrays.files:
            names = tuple(str(name) for name in arrays["class_names"])
    size = image_size or _capped_size(x_train.shape[1:3], max_image_size)
    if size:
        x_train, x_test = (_resized(x, size) for x in (x_train, x_test))
        unlabeled = None if unlabeled is None else _resized(unlabeled, size)
    num_classes = len(names) if names else int(max(y_train.max(), y_test.max())) + 1
    return ArrayDataset(
        name=os.path.splitext(os.path.basename(path))[0],
        train_images=x_train,
        train_labels=y_train,
        test_images=x_test,
        test_labels=y_test,
        num_classes=num_classes,
        unlabeled_images=unlabeled,
        class_names=names,
    )


def _images(path: str, key: str, images: np.ndarray) -> np.ndarray:
    if images.ndim == 3:
        images = images[..., None]  # Grey [N, H, W]: one channel.
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise DataValidationError(
            f"{path}: {key} has shape {images.shape}; images must be [N, H, W] (grey) or "
            "[N, H, W, C] with C 1 or 3."
        )
    if images.dtype != np.uint8:
        raise DataValidationError(
            f"{path}: {key} is {images.dtype}; images must be uint8 in [0, 255] (for floats "
            "in [0, 1]: np.round(x * 255).astype(np.uint8))."
        )
    return images


def _labels(path: str, key: str, labels: np.ndarray) -> np.ndarray:
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataValidationError(
            f"{path}: {key} has shape {labels.shape} and dtype {labels.dtype}; labels must be "
            "a 1-D integer array, one class index per image."
        )
    if labels.size and labels.min() < 0:
        raise DataValidationError(
            f"{path}: {key} has the label {int(labels.min())}; labels must be 0, 1, 2, ..."
        )
    return labels.astype(np.int32)


# ---------------------------------------------------------------- image folders


def load_image_folder(
    path: str, *, image_size: int | None, cache_dir: str | None, max_image_size: int | None = None
) -> ArrayDataset:
    """The image folder at ``path`` (layout in the module docstring), decoded once and cached."""
    dataset, keep = _open_image_folder(
        path, image_size=image_size, cache_dir=cache_dir, max_image_size=max_image_size
    )
    keep()
    return dataset


def _open_image_folder(
    path: str, *, image_size: int | None, cache_dir: str | None, max_image_size: int | None
) -> tuple[ArrayDataset, Callable[[], None]]:
    """The image folder's dataset, and the `open_files` ``keep`` that caches it."""
    listing = _list_folder(path)
    cache_file = None
    if cache_dir:
        fingerprint = _fingerprint(listing, image_size, max_image_size)
        cache_file = os.path.join(cache_dir, f"{os.path.basename(path)}_{fingerprint}.npz")
        if os.path.isfile(cache_file):
            dataset = _from_arrays(path, listing, dict(np.load(cache_file, allow_pickle=False)))
            return dataset, functools.partial(
                logging.info, "Image folder %s: the decoded images from %s.", path, cache_file
            )
    arrays = _decode_all(path, listing, image_size, max_image_size)
    if not cache_file:
        return _from_arrays(path, listing, arrays), lambda: None

    def keep() -> None:
        from muscle_jax import workdir  # Only the cache needs it.

        try:
            os.makedirs(cache_dir, exist_ok=True)
            workdir.write_atomically(
                cache_file, lambda handle: np.savez(handle, **arrays), binary=True
            )
            logging.info("Image folder %s: decoded images cached in %s.", path, cache_file)
        except OSError as error:  # A speed-up only: the run goes on without it.
            logging.warning("Image folder %s: could not cache the images (%s).", path, error)

    return _from_arrays(path, listing, arrays), keep


def _image_files(directory: str, *, recursive: bool) -> tuple[list[str], list[str]]:
    """(image files, other files) below ``directory``, sorted, hidden files left out."""
    images, others = [], []
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        for name in sorted(names):
            if name.startswith("."):
                continue
            target = images if name.lower().endswith(IMAGE_SUFFIXES) else others
            target.append(os.path.join(root, name))
    return images, others


def _list_folder(path: str) -> dict:
    """{"classes": names, "train"/"test": [(file, label)], "unlabeled": [file]}; checked."""
    for split in ("train", "test"):
        if not os.path.isdir(os.path.join(path, split)):
            raise DataValidationError(
                f"Image folder {path} has no {split}/ folder. Expected {path}/train/<class>/"
                f"*.png|jpg and {path}/test/<class>/*, plus an optional {path}/unlabeled/."
            )
    classes = {split: _class_folders(os.path.join(path, split)) for split in ("train", "test")}
    names = _checked_classes(path, classes["train"], classes["test"])
    listing: dict = {"classes": names, "unlabeled": []}
    skipped = []
    for split in ("train", "test"):
        listing[split] = _labeled_files(os.path.join(path, split), names, skipped)
    if not listing["test"]:
        raise DataValidationError(
            f"Image folder {path}/test has no class folders with images; the test set is "
            f"what the run is evaluated on: add {path}/test/<class>/ folders."
        )
    if os.path.isdir(os.path.join(path, "unlabeled")):
        files, others = _image_files(os.path.join(path, "unlabeled"), recursive=True)
        skipped += others
        listing["unlabeled"] = files
    if skipped:
        logging.warning(
            "Image folder %s: %d files that are not .png/.jpg/.jpeg were left out, e.g. %s.",
            path,
            len(skipped),
            skipped[0],
        )
    return listing


def _class_folders(root: str) -> list[str]:
    """The class folders of a split folder ``root``, sorted; refuses files beside them."""
    loose = sorted(
        name
        for name in os.listdir(root)
        if not name.startswith(".") and not os.path.isdir(os.path.join(root, name))
    )
    if loose:
        raise DataValidationError(
            f"Image folder {root} holds files outside any class folder ({loose[0]}, ...): "
            f"put each image in {root}/<class>/."
        )
    return sorted(name for name in os.listdir(root) if not name.startswith("."))


def _checked_classes(path: str, train: list[str], test: list[str]) -> list[str]:
    """The class names (train/'s folders): at least 2, and every test class among them."""
    if len(train) < 2:
        raise DataValidationError(
            f"Image folder {path}/train has {len(train)} class folder(s); at least 2 are needed."
        )
    unknown = sorted(set(test) - set(train))
    if unknown:
        raise DataValidationError(
            f"Image folder {path}: the test classes {unknown} have no folder in "
            f"{path}/train, so the model could never predict them. Add their training images "
            "or remove them from test/."
        )
    return train


def _labeled_files(root: str, names: list[str], skipped: list[str]) -> list[tuple[str, int]]:
    """(file, label) of every image in ``root``'s class folders; other files join ``skipped``."""
    pairs = []
    for label, name in enumerate(names):
        directory = os.path.join(root, name)
        if not os.path.isdir(directory):
            continue  # A class without test images: allowed.
        files, others = _image_files(directory, recursive=False)
        skipped += others
        if not files:
            raise DataValidationError(
                f"Image folder {directory} has no images (.png, .jpg, .jpeg); add some or "
                "remove the folder."
            )
        pairs += [(file, label) for file in files]
    return pairs


def _fingerprint(listing: dict, image_size: int | None, max_image_size: int | None) -> str:
    sizes = [image_size] if max_image_size is None else [image_size, max_image_size]
    digest = hashlib.sha1(json.dumps([_CACHE_VERSION, *sizes]).encode())
    files = [file for split in ("train", "test") for file, _ in listing[split]]
    for file in files + listing["unlabeled"]:
        stat = os.stat(file)
        digest.update(f"{file}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _decode_all(
    path: str, listing: dict, image_size: int | None, max_image_size: int | None
) -> dict[str, np.ndarray]:
    """Every image as uint8, one channel count and one size: {"x_train", "x_test", ...}."""
    files = {
        "x_train": [file for file, _ in listing["train"]],
        "x_test": [file for file, _ in listing["test"]],
        "x_unlabeled": listing["unlabeled"],
    }
    decoded, first = {}, None
    for key, names in files.items():
        decoded[key] = []
        for file in names:
            # Resized as it is read, so a folder of large photos never sits in memory whole.
            image = _decode(file)
            size = image_size or _capped_size(image.shape[:2], max_image_size)
            if size:
                image = _resized(image[None], size)[0]
            if image_size is None and first is None:  # (With image_size: one size for all.)
                first = (file, image.shape)
            elif image_size is None and image.shape[:2] != first[1][:2]:
                raise DataValidationError(
                    f"Image folder {path}: {file} is {image.shape[1]}x{image.shape[0]} but "
                    f"{first[0]} is {first[1][1]}x{first[1][0]}. Resize them with "
                    "--config.data.image_size=N (N x N pixels), or make them one size."
                )
            decoded[key].append(image)
    grey = all(image.shape[-1] == 1 for images in decoded.values() for image in images)
    arrays = {
        key: np.stack([image if grey or image.shape[-1] == 3 else np.repeat(image, 3, axis=-1)
                       for image in images])
        for key, images in decoded.items()
        if images
    }  # fmt: skip
    arrays["y_train"] = np.array([label for _, label in listing["train"]], np.int32)
    arrays["y_test"] = np.array([label for _, label in listing["test"]], np.int32)
    return arrays


def _decode(file: str) -> np.ndarray:
    """One PNG or JPEG as uint8 [H, W, 1 or 3] (an alpha channel is dropped)."""
    import tensorflow as tf

    try:
        image = tf.io.decode_image(tf.io.read_file(file), expand_animations=False).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as error:
        message = str(error).strip().splitlines()[0]
        raise DataValidationError(
            f"Cannot read the image {file} ({message}). Remove or replace the file."
        ) from None
    if image.dtype != np.uint8:  # 16-bit PNGs.
        image = (image.astype(np.float64) * (255.0 / 65535.0)).round().astype(np.uint8)
    if image.shape[-1] == 2:  # Grey + alpha.
        image = image[..., :1]
    return image[..., :3]


def _capped_size(shape: tuple[int, ...], max_image_size: int | None) -> int | None:
    """``max_image_size`` for an image of ``shape`` (H, W) larger than it, else None (kept)."""
    if max_image_size and max(shape) > max_image_size:
        return max_image_size
    return None


def _resized(images: np.ndarray, size: int) -> np.ndarray:
    """``[N, H, W, C]`` uint8 resized to ``[N, size, size, C]`` (bilinear, antialiased)."""
    if images.shape[1:3] == (size, size):
        return images
    import tensorflow as tf

    resized = tf.image.resize(images, (size, size), method="bilinear", antialias=True)
    return np.clip(np.round(resized.numpy()), 0, 255).astype(np.uint8)


def _from_arrays(path: str, listing: dict, arrays: dict[str, np.ndarray]) -> ArrayDataset:
    return ArrayDataset(
        name=os.path.basename(path.rstrip(os.sep)),
        train_images=arrays["x_train"],
        train_labels=arrays["y_train"],
        test_images=arrays["x_test"],
        test_labels=arrays["y_test"],
        num_classes=len(listing["classes"]),
        unlabeled_images=arrays.get("x_unlabeled"),
        class_names=tuple(listing["classes"]),
    )
