"""The input pipeline: seeded, resumable, sharded tf.data streams for semi-supervised training.

Layout as in big_vision, in the order the steps run: data shard -> block
shuffle -> repeat -> batch (per-process size, drop remainder) -> augment each
batch (one vectorised call per view) -> global `jax.Array`s, prefetched.

Training batches (`make_train_iterator`) are dicts:
  "labeled"          [B, H, W, C] float32 in [-1, 1], weakly augmented
  "label"            [B] int32
  "labeled_index"    [B] int32, index of the example in the training set
  "labeled_strong"   [B, H, W, C], strong view of the same images (labeled_views=2)
  "unlabeled_a"      [mu*B, H, W, C] weak view        (unlabeled_views != "none")
  "unlabeled_b"      [mu*B, H, W, C] strong view ("weak_strong",
                     "weak_strong_weak") or a second independent weak view ("weak_weak")
  "unlabeled_c"      [mu*B, H, W, C] a second weak view beside the strong one
                     ("weak_strong_weak": `methods.pipeline_views`)
  "unlabeled_index"  [mu*B] int32, index in the unlabeled pool (training set
                     first, then unlabeled-only splits such as STL-10's)
Batch sizes are global; each process yields its 1/process_count share, or a
global array when a sharding is given.

The stream is a deterministic function of (seed, step, number of data
shards): `start_step=k` yields exactly the batches an uninterrupted iterator
yields from its k-th on. The data is read as `num_shards` shards (default:
one per process), so with a fixed shard count the global batch is the same
whatever the process count. The labeled subset is a function of the seed
alone, chosen on the full training set (identical on every host), then
split over the shards.

Evaluation batches (`make_eval_iterator`) are dicts "image", "label" and
"mask" (False on padding); one pass covers the test split exactly once.

The datasets: see `muscle_jax.data.catalog` and docs/datasets.md; your own
files through ``data.path`` (`muscle_jax.data.files`, docs/custom.md), and
arrays in memory as an `ArrayDataset` in place of a name.
"""

import functools
import hashlib
from collections.abc import Iterator

import jax
import numpy as np
import tensorflow as tf
from absl import logging

from muscle_jax.data import (
    augment,
    device,
    graph,
    rand_augment_spec,
    sources,
    streams,
    validation,
)
from muscle_jax.data import plan as plan_lib
from muscle_jax.data.sources import ArrayDataset, DatasetInfo, DatasetNotFoundError
from muscle_jax.data.splits import per_class_counts, select_labeled_indices
from muscle_jax.data.validation import DataRequestError, DataValidationError

__all__ = [
    "ArrayDataset",
    "DataRequestError",
    "DataValidationError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "dataset_info",
    "evaluation",
    "make_eval_iterator",
    "make_train_iterator",
    "open_dataset",
    "per_class_counts",
    "select_labeled_indices",
    "training",
]

# The kinds of each unlabeled image's views, in the order "unlabeled_a", "_b", "_c"
# (`UNLABELED_KEYS`) take them. A view's index seeds its draws, so adding the third
# view leaves the first two as they were.
UNLABELED_VIEWS = {
    "weak_strong": ("weak", "strong"),
    "weak_weak": ("weak", "weak"),
    "weak_strong_weak": ("weak", "strong", "weak"),
    "none": (),
}
UNLABELED_KEYS = ("unlabeled_a", "unlabeled_b", "unlabeled_c")
# Buffers a run holds on the host (`muscle_jax.memory_plan` counts them): batches
# kept ready by tf.data and, as global arrays, ahead of the step; and the unlabeled
# shard read in shuffled blocks of at most this many examples.
HOST_PREFETCH = 2
DEVICE_PREFETCH = 2
SHUFFLE_BUFFER_SIZE = 50_000


def dataset_info(
    name: str | ArrayDataset, *, data_dir: str | None = None, download: bool = False
) -> DatasetInfo:
    """Classes, image shape and split sizes, without reading the examples.

    Raises:
      DatasetNotFoundError: (a FileNotFoundError) the dataset is not prepared
        in `data_dir` and `download` is False; the message says how to
        prepare it offline.
      ValueError: unknown name (the message lists the known ones).
    """
    return sources.open_source(name, data_dir=data_dir, download=download).info


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_optimization.map_parallelization = True
    # No autotuning thread: the iterator's destructor waits for that thread's
    # next wake-up, which came 15-30 s after the end of a digits run (seen in
    # native stacks: ~RootDataset::Iterator waiting on its logical thread).
    # AUTOTUNE parallelism then falls back to TF's default, bounded by its
    # thread pool (the core count).
    options.autotune.enabled = False
    return options


def _process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if not 0 <= index < count:
        raise ValueError(f"process_index={index} must lie in [0, process_count={count}).")
    return index, count


def _shard(size: int, index: int, count: int) -> tuple[int, int]:
    """Contiguous even shard `[start, end)` of `range(size)`, as tfds.even_splits cuts it."""
    return size * index // count, size * (index + 1) // count


def open_dataset(
    data_config, *, cache_dir: str | None = None
) -> "sources.ArraySource | sources.TfdsSource":
    """Opens the config's dataset once for a run; pass the result to `training` and `evaluation`.

    That is ``data.path`` (your image folder or .npz; an image folder's decoded
    arrays are kept in ``data.data_dir``, else in ``cache_dir``) or else
    ``data.name``. Reading a TFDS builder's metadata and cardinalities takes
    seconds on a large dataset; a run does it here once instead of at every
    evaluation. The result's ``info`` is the `DatasetInfo`. Opening writes
    nothing: call the result's ``accept()`` to write the image folder's cache.
    """
    return sources.open_source(
        data_config.name,
        data_dir=data_config.data_dir,
        download=data_config.download,
        path=data_config.get("path"),
        image_size=data_config.get("image_size"),
        cache_dir=data_config.data_dir or cache_dir,
        max_image_size=data_config.get("max_image_size"),
    )


def training(
    data_config,
    *,
    seed: int,
    unlabeled_views: str,
    labeled_views: int = 1,
    source=None,
    sharding: jax.sharding.NamedSharding | None = None,
    start_step: int = 0,
    split_plan: plan_lib.SplitPlan | None = None,
) -> Iterator[dict]:
    """`train_batches` for a config's ``data`` section (big_vision's ``config.input``).

    ``unlabeled_views`` and ``labeled_views`` are what the loss terms need
    (`muscle_jax.methods`); ``source`` is `open_dataset`'s result (default:
    opened here); ``split_plan`` the run's plan (default: drawn here,
    `plan.for_data_config`).
    """
    if source is None:
        source = open_dataset(data_config)
    else:  # An opened source as it is; an in-memory ArrayDataset opened here.
        source = sources.open_source(
            source, data_dir=data_config.data_dir, download=data_config.download
        )
    validation.check_num_classes(source.info.name, source.info.num_classes, data_config.num_classes)
    if split_plan is None:
        split_plan = plan_lib.for_data_config(data_config, source=source, seed=seed)
    return train_batches(
        source,
        split_plan,
        seed=seed,
        labeled_batch_size=data_config.batch_size,
        unlabeled_ratio=data_config.unlabeled_ratio,
        unlabeled_views=unlabeled_views,
        labeled_views=labeled_views,
        num_shards=data_config.num_shards or None,
        sharding=sharding,
        start_step=start_step,
        flip=data_config.get("flip"),
        augment_on=device.augment_place(data_config),
        rand_augment_ops=data_config.get("rand_augment_ops", rand_augment_spec.DEFAULT_ROUNDS),
    )


def flips(data_config, source) -> bool:
    """Whether the weak augmentation flips: ``data.flip``, else the dataset's default."""
    return _flips(source, data_config.get("flip"))


def _flips(source, flip: bool | None) -> bool:
    return source.flip if flip is None else flip


def evaluation(
    data_config,
    *,
    source=None,
    sharding: jax.sharding.NamedSharding | None = None,
    held_out: tuple[np.ndarray, np.ndarray] | None = None,
) -> Iterator[dict]:
    """`make_eval_iterator` (one pass over the test split, or ``held_out``) for ``data``."""
    return make_eval_iterator(
        open_dataset(data_config) if source is None else source,
        data_dir=data_config.data_dir,
        batch_size=data_config.eval_batch_size,
        sharding=sharding,
        num_classes=data_config.num_classes,
        download=data_config.download,
        held_out=held_out,
    )


def make_train_iterator(
    name: str | ArrayDataset,
    *,
    data_dir: str | None,
    num_labeled: int,
    seed: int,
    labeled_batch_size: int,
    unlabeled_ratio: int,
    unlabeled_views: str,
    labeled_views: int = 1,
    imbalance_ratio: float = 1.0,
    exclude_labeled_from_unlabeled: bool = False,
    num_classes: int | None = None,
    sharding: jax.sharding.NamedSharding | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
    num_shards: int | None = None,
    download: bool = False,
    start_step: int = 0,
    shuffle_buffer_size: int = SHUFFLE_BUFFER_SIZE,
    prefetch: int = DEVICE_PREFETCH,
    flip: bool | None = None,
    num_validation: int = 0,
    unlabeled_imbalance_ratio: float = 1.0,
    augment_on: str = "host",
    rand_augment_ops: int = rand_augment_spec.DEFAULT_ROUNDS,
    label_noise: float = 0.0,
    label_noise_kind: str = "symmetric",
) -> Iterator[dict]:
    """Endless training batches (keys in the module docstring), from `start_step` on.

    The split plan (`plan.draw`) from the split arguments, then `train_batches`
    from it; a run with a config draws its plan once and calls `training`.
    Every check (missing data, bad data, batch sizes, the labeled request)
    runs here, before the first batch and before anything compiles.

    Args:
      name: a dataset name (`catalog.lookup`), an `ArrayDataset` or an opened source.
      data_dir: TFDS data directory (None: TFDS's default).
      num_labeled: size of the labeled subset (all processes together).
      seed: the labeled subset, the shuffles and the augmentations derive from it.
      labeled_batch_size: global labeled batch B.
      unlabeled_ratio: mu; the global unlabeled batch is mu * B.
      unlabeled_views: a key of `UNLABELED_VIEWS` ("none": no unlabeled keys).
      labeled_views: 1, or 2 to add "labeled_strong".
      imbalance_ratio: > 1 for a long-tailed labeled subset.
      exclude_labeled_from_unlabeled: drop the labeled examples from the
        unlabeled stream (default: FixMatch's whole training set).
      num_classes: if given, must equal the dataset's.
      sharding, process_index, process_count, num_shards, start_step,
        shuffle_buffer_size, prefetch, flip, augment_on, rand_augment_ops:
        as `train_batches`.
      download: allow TFDS to download and prepare a missing dataset.
      num_validation: training examples a class held out as the validation set
        (`validation_examples`): neither labeled nor unlabeled here.
      unlabeled_imbalance_ratio: 1, or a long-tailed unlabeled pool
        (`splits.unlabeled_class_counts`; negative: the reversed order). Only the
        training split is subsampled; unlabeled-only splits join whole.
      label_noise, label_noise_kind: the fraction of the labeled subset whose
        "label" is corrupted, and how (`data.label_noise`); the labels of nothing
        else change.
    """
    source = sources.open_source(name, data_dir=data_dir, download=download)
    info = source.info
    validation.check_num_classes(info.name, info.num_classes, num_classes)
    split_plan = plan_lib.draw(
        source.train_labels(),
        dataset=info.name,
        num_classes=info.num_classes,
        seed=seed,
        num_labeled=num_labeled,
        num_validation=num_validation,
        imbalance_ratio=imbalance_ratio,
        unlabeled_imbalance_ratio=unlabeled_imbalance_ratio,
        exclude_labeled_from_unlabeled=exclude_labeled_from_unlabeled,
        noise_fraction=label_noise,
        noise_kind=label_noise_kind,
    )
    return train_batches(
        source,
        split_plan,
        seed=seed,
        labeled_batch_size=labeled_batch_size,
        unlabeled_ratio=unlabeled_ratio,
        unlabeled_views=unlabeled_views,
        labeled_views=labeled_views,
        sharding=sharding,
        process_index=process_index,
        process_count=process_count,
        num_shards=num_shards,
        start_step=start_step,
        shuffle_buffer_size=shuffle_buffer_size,
        prefetch=prefetch,
        flip=flip,
        augment_on=augment_on,
        rand_augment_ops=rand_augment_ops,
    )


def train_batches(
    source,
    split_plan: plan_lib.SplitPlan,
    *,
    seed: int,
    labeled_batch_size: int,
    unlabeled_ratio: int,
    unlabeled_views: str,
    labeled_views: int = 1,
    sharding: jax.sharding.NamedSharding | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
    num_shards: int | None = None,
    start_step: int = 0,
    shuffle_buffer_size: int = SHUFFLE_BUFFER_SIZE,
    prefetch: int = DEVICE_PREFETCH,
    flip: bool | None = None,
    augment_on: str = "host",
    rand_augment_ops: int = rand_augment_spec.DEFAULT_ROUNDS,
) -> Iterator[dict]:
    """Endless training batches of an opened ``source`` as ``split_plan`` splits it.

    Args:
      source: an opened source (`open_dataset`).
      split_plan: the run's `plan.SplitPlan` (labeled subset and its labels,
        the unlabeled pool).
      seed: the shuffles and the augmentations derive from it.
      labeled_batch_size, unlabeled_ratio, unlabeled_views, labeled_views: as
        `make_train_iterator`.
      sharding: batch sharding over a ("data",) mesh; None yields NumPy arrays.
      process_index, process_count: default `jax.process_index()` / `count()`.
      num_shards: the data is read as this many shards, each with its own
        slice of the labeled subset, contiguous part of the unlabeled pool,
        shuffles and augmentations; a process reads ``num_shards /
        process_count`` of them. The global batch (every shard's batch, in
        shard order) is then the same for any process count. None: one
        shard per process.
      start_step: resume: the first batch yielded is batch `start_step`.
      shuffle_buffer_size: the unlabeled shard is shuffled in blocks of at
        most this many examples (a full permutation when the shard is smaller).
      prefetch: batches kept in flight to the devices.
      flip: horizontal flips in the augmentations; None: the dataset's default.
      augment_on: "host" augments here; "device" yields each stream's uint8
        images instead of its views, with what seeds their augmentation on the
        accelerator ("labeled_image", "labeled_position", "labeled_shard" and
        the same for "unlabeled_"; `device_augment.views` makes the views).
      rand_augment_ops: RandAugment rounds of each strong view made here
        (``data.rand_augment_ops``; `rand_augment_spec.DEFAULT_ROUNDS`).
    """
    if augment_on not in device.AUGMENT_PLACES:
        raise ValueError(f"augment_on must be one of {device.AUGMENT_PLACES}, got {augment_on!r}.")
    if unlabeled_views not in UNLABELED_VIEWS:
        raise ValueError(
            f"unlabeled_views must be one of {sorted(UNLABELED_VIEWS)}, got {unlabeled_views!r}."
        )
    if labeled_views not in (1, 2):
        raise ValueError(f"labeled_views must be 1 or 2, got {labeled_views}.")
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}.")
    index, count = _process(process_index, process_count)
    shards = count if num_shards is None else num_shards
    if shards < 1 or shards % count:
        raise DataRequestError(
            f"num_shards={shards} must be a positive multiple of the {count} processes."
        )
    if len(split_plan.labeled) < shards:
        raise DataRequestError(
            f"num_labeled={len(split_plan.labeled)} is fewer than the {shards} data shards "
            "(one per process unless data.num_shards says otherwise)."
        )
    # Each process reads `per_process` consecutive data shards; the global
    # batch is every shard's batch in shard order, whatever the process count.
    per_process = shards // count
    local_labeled, local_unlabeled = _local_batch_sizes(
        labeled_batch_size,
        unlabeled_ratio if unlabeled_views != "none" else 0,
        process_count=count,
        per_process=per_process,
        sharding=sharding,
    )
    my_shards = range(index * per_process, (index + 1) * per_process)
    _log_shards(source.info, split_plan, index, count, my_shards, shards)
    # Over the whole pool: an unlabeled-only split, where the data has one, joins whole.
    excluded = np.zeros(source.info.pool_size, bool)
    excluded[: source.info.num_train] = ~split_plan.in_pool
    stream = functools.partial(
        _shard_batches,
        source,
        split_plan,
        shards=shards,
        labeled_batch=local_labeled // per_process,
        unlabeled_batch=local_unlabeled // per_process,
        unlabeled_views=unlabeled_views,
        labeled_views=labeled_views,
        shuffle_buffer_size=shuffle_buffer_size,
        excluded=excluded,
        common={
            "seed": seed,
            "start_step": start_step,
            "flip": _flips(source, flip),
            "rand_augment": augment.shared_rand_augment(rand_augment_ops),
            "on_device": augment_on == "device",
        },
    )
    shard_batches = [stream(shard) for shard in my_shards]
    if per_process == 1:
        batches = shard_batches[0]
    else:
        batches = tf.data.Dataset.zip(tuple(shard_batches)).map(graph.plain(_concatenate))
    batches = batches.prefetch(HOST_PREFETCH)
    batches = batches.with_options(_options())
    return device.prefetch_to_device(batches.as_numpy_iterator(), sharding, size=prefetch)


def _local_batch_sizes(
    labeled_batch_size: int, unlabeled_ratio: int, *, process_count, per_process, sharding
) -> tuple[int, int]:
    """This process's labeled and unlabeled batch (unlabeled_ratio 0: no unlabeled stream)."""
    local_labeled = device.local_batch_size(
        labeled_batch_size,
        process_count=process_count,
        sharding=sharding,
        what="labeled_batch_size",
    )
    local_unlabeled = 0
    if unlabeled_ratio:
        if unlabeled_ratio < 1:
            raise DataRequestError(f"unlabeled_ratio must be >= 1, got {unlabeled_ratio}.")
        local_unlabeled = device.local_batch_size(
            unlabeled_ratio * labeled_batch_size,
            process_count=process_count,
            sharding=sharding,
            what="unlabeled batch (unlabeled_ratio * labeled_batch_size)",
        )
    for what, size in (("labeled", local_labeled), ("unlabeled", local_unlabeled)):
        if size % per_process:
            raise DataRequestError(
                f"The {what} batch of each process ({size}) does not split into its "
                f"{per_process} data shards; choose a batch size divisible by "
                f"num_shards={per_process * process_count}."
            )
    return local_labeled, local_unlabeled


def _log_shards(info, split_plan, index: int, count: int, my_shards: range, shards: int) -> None:
    # What this process reads, in the log: multi-process tests check that the
    # unlabeled ranges are disjoint and the labeled subset the same everywhere.
    logging.info(
        "Process %d/%d reads data shards %d-%d of %d: unlabeled pool ranges %s of %d; "
        "labeled subset of %d examples, sha1 %s.",
        index,
        count,
        my_shards[0],
        my_shards[-1],
        shards,
        [list(_shard(info.pool_size, shard, shards)) for shard in my_shards],
        info.pool_size,
        len(split_plan.labeled),
        hashlib.sha1(np.asarray(split_plan.labeled, np.int64).tobytes()).hexdigest()[:12],
    )


def _shard_batches(
    source,
    split_plan,
    shard: int,
    *,
    shards: int,
    labeled_batch: int,
    unlabeled_batch: int,
    unlabeled_views: str,
    labeled_views: int,
    shuffle_buffer_size: int,
    excluded: np.ndarray,
    common: dict,
) -> tf.data.Dataset:
    """One data shard's batches: its slice of the labeled subset and its part of the pool."""
    # The shard, not the process, seeds the stream: one process or many read the
    # same shard the same way.
    common = {**common, "process_index": shard}
    mine = split_plan.labeled[shard::shards]
    images, labels = source.gather_train(mine)
    labels = split_plan.labeled_labels[shard::shards].astype(labels.dtype)
    labeled_examples = {"image": images, "label": labels, "index": mine.astype(np.int32)}
    parts = [
        streams.train_stream(
            [tf.data.Dataset.from_tensor_slices(labeled_examples)],
            [len(mine)],
            stream=streams.LABELED,
            batch_size=labeled_batch,
            views=("weak", "strong")[:labeled_views],
            rename=_rename_labeled,
            **common,
        )
    ]
    if unlabeled_views != "none":
        blocks, sizes = _unlabeled_blocks(
            source, _shard(source.info.pool_size, shard, shards), excluded, shuffle_buffer_size
        )
        if not blocks:
            raise DataRequestError(f"Data shard {shard} has no unlabeled examples.")
        parts.append(
            streams.train_stream(
                blocks,
                sizes,
                stream=streams.UNLABELED,
                batch_size=unlabeled_batch,
                views=UNLABELED_VIEWS[unlabeled_views],
                rename=_rename_unlabeled,
                **common,
            )
        )
    return tf.data.Dataset.zip(tuple(parts)).map(graph.plain(_merge))


def _unlabeled_blocks(source, shard, excluded: np.ndarray, block_size: int):
    """The shard as contiguous blocks of at most `block_size` examples, labels dropped."""
    if block_size < 1:
        raise ValueError(f"shuffle_buffer_size must be positive, got {block_size}.")
    start, end = shard
    excluded_tensor = tf.constant(excluded)
    blocks, sizes = [], []
    for lo in range(start, end, block_size):
        hi = min(lo + block_size, end)
        size = hi - lo - int(excluded[lo:hi].sum())
        if size == 0:
            continue
        block = source.read("pool", lo, hi)
        if excluded[lo:hi].any():
            block = block.filter(
                graph.plain(lambda ex: tf.logical_not(excluded_tensor[ex["index"]]))
            )
        blocks.append(block.map(graph.plain(lambda ex: {**ex, "label": tf.zeros([], tf.int32)})))
        sizes.append(size)
    return blocks, sizes


def _unaugmented(batch: dict, stream: str) -> dict:
    return {f"{stream}_{key}": batch[key] for key in ("image", "position", "shard")}


def _rename_labeled(batch: dict) -> dict:
    out = {"label": batch["label"], "labeled_index": batch["index"]}
    if "image" in batch:  # augment_on="device"
        return {**out, **_unaugmented(batch, "labeled")}
    out["labeled"] = batch["view0"]
    if "view1" in batch:
        out["labeled_strong"] = batch["view1"]
    return out


def _rename_unlabeled(batch: dict) -> dict:
    out = {"unlabeled_index": batch["index"]}
    if "image" in batch:  # augment_on="device"
        return {**out, **_unaugmented(batch, "unlabeled")}
    names = UNLABELED_KEYS[: sum(key.startswith("view") for key in batch)]
    return {**out, **{name: batch[f"view{i}"] for i, name in enumerate(names)}}


def _merge(*parts: dict) -> dict:
    return {key: value for part in parts for key, value in part.items()}


def _concatenate(*shard_batches: dict) -> dict:
    return {key: tf.concat([b[key] for b in shard_batches], 0) for key in shard_batches[0]}


def make_eval_iterator(
    name: str | ArrayDataset,
    *,
    data_dir: str | None,
    batch_size: int,
    sharding: jax.sharding.NamedSharding | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
    num_classes: int | None = None,
    download: bool = False,
    prefetch: int = DEVICE_PREFETCH,
    held_out: tuple[np.ndarray, np.ndarray] | None = None,
) -> Iterator[dict]:
    """One pass over the test split: "image", "label", "mask" (False on padding).

    Each process reads a contiguous shard; every process yields the same number
    of batches (padding, masked, fills the last one and any extra ones), so
    that a jitted step across processes sees matching batches and the masked
    examples together are the test split exactly once. ``held_out`` (images,
    labels), e.g. `validation_examples`, is evaluated instead of the test split.
    """
    source = sources.open_source(name, data_dir=data_dir, download=download)
    info = source.info
    validation.check_num_classes(info.name, info.num_classes, num_classes)
    index, count = _process(process_index, process_count)
    local = device.local_batch_size(batch_size, process_count=count, sharding=sharding)
    total = info.num_test if held_out is None else len(held_out[1])
    start, end = _shard(total, index, count)
    largest_shard = -(-total // count)
    num_batches = -(-largest_shard // local)
    if held_out is None:
        examples = source.read("test", start, end)
    else:
        images, labels = held_out
        examples = tf.data.Dataset.from_tensor_slices(
            {"image": images[start:end], "label": labels[start:end].astype(np.int32)}
        )
    ds = examples.map(
        graph.plain(lambda ex: {"image": augment.normalize(ex["image"]), "label": ex["label"]}),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    ds = ds.batch(local).prefetch(HOST_PREFETCH).with_options(_options())
    padded = _padded_batches(ds.as_numpy_iterator(), local, num_batches, info, total)
    return device.prefetch_to_device(padded, sharding, size=prefetch)


def unlabeled_pool_counts(
    data_config, *, source, seed: int, split_plan: plan_lib.SplitPlan | None = None
) -> dict:
    """What the unlabeled pool holds: training images a class, and unlabeled-only images.

    Before the validation set (and, with ``exclude_labeled_from_unlabeled``, the
    labeled subset) is taken out; for results.json.
    """
    split_plan = split_plan or plan_lib.for_data_config(data_config, source=source, seed=seed)
    return {
        "imbalance_ratio": data_config.get("unlabeled_imbalance_ratio", 1.0),
        "per_class": [int(count) for count in split_plan.pool_per_class],
        "unlabeled_only": source.info.num_unlabeled_only,
    }


def label_noise_record(
    data_config, *, source, seed: int, split_plan: plan_lib.SplitPlan | None = None
) -> dict:
    """results.json's ``label_noise``: which labeled examples `training` gave which wrong label.

    The run's split plan's record (default: the plan drawn from the config and seed).
    """
    split_plan = split_plan or plan_lib.for_data_config(data_config, source=source, seed=seed)
    return split_plan.label_noise_record()


def validation_examples(
    data_config, *, source, seed: int, split_plan: plan_lib.SplitPlan | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """The held-out validation set (images, labels) of ``data.num_validation`` a class, or None.

    The same examples `training` leaves out of both streams (the split plan),
    read once for a run; pass them to `evaluation` as ``held_out``.
    """
    if not data_config.get("num_validation", 0):
        return None
    split_plan = split_plan or plan_lib.for_data_config(data_config, source=source, seed=seed)
    return source.gather_train(split_plan.validation)


def unlabeled_sample(
    data_config,
    *,
    source,
    seed: int,
    size: int,
    split_plan: plan_lib.SplitPlan | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels of `unlabeled_sample_indices`, read once for a run."""
    return source.gather_train(
        unlabeled_sample_indices(
            data_config, source=source, seed=seed, size=size, split_plan=split_plan
        )
    )


def unlabeled_sample_indices(
    data_config,
    *,
    source,
    seed: int,
    size: int,
    split_plan: plan_lib.SplitPlan | None = None,
) -> np.ndarray:
    """The first ``size`` training examples the unlabeled stream reads (their indices).

    A fixed sample for a run (a function of the config and seed alone): every
    evaluation predicts it, so a class the model stops predicting shows at
    the evaluation it died. Drawn from the training split only (its labels are
    known, unlike an unlabeled-only split's), in the pool's order; fewer than
    ``size`` when the pool's training part is smaller.
    """
    split_plan = split_plan or plan_lib.for_data_config(data_config, source=source, seed=seed)
    return split_plan.pool_indices()[:size]


def _padded_batches(batches, batch_size: int, num_batches: int, info: DatasetInfo, total: int):
    empty = {
        "image": np.zeros((0, *info.image_shape), np.float32),
        "label": np.zeros((0,), np.int32),
    }
    for _ in range(num_batches):
        batch = next(batches, empty)
        real = len(batch["label"])
        pad = batch_size - real
        yield {
            "image": np.pad(batch["image"], [(0, pad), (0, 0), (0, 0), (0, 0)]),
            "label": np.pad(batch["label"], (0, pad)),
            "mask": np.arange(batch_size) < real,
        }
    if next(batches, None) is not None:
        raise DataValidationError(
            f"Dataset {info.name!r}: the test split holds more than the {total} "
            "examples its metadata declares."
        )
