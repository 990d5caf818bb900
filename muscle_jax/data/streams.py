"""Endless, seeded, resumable tf.data streams of augmented batches.

A stream is a pure function of (seed, position), independent of TensorFlow's
global random seed: every shuffle and augmentation draws from stateless ops
seeded by `fold_in`s of the seed. Epoch e visits the examples in an order
drawn from (seed, e); the batch starting at stream position p is augmented
with seeds drawn from (seed, p). So a stream that starts at position p0
(`start_position`) yields exactly what an uninterrupted stream yields from p0
on. Resuming costs reading (not augmenting) the examples of the current epoch
before p0: nothing for in-memory data, at most one epoch of TFDS reads
(seconds for CIFAR, a minute or so for STL-10's 105k examples).

Shuffling is by blocks, so memory stays bounded like a shuffle buffer: the
shard is cut into contiguous blocks of at most `shuffle_buffer_size` examples;
each epoch visits the blocks in a random order and each block in a random
order. A shard that fits in one block (CIFAR's 50k at the default size) gets
a full uniform permutation every epoch.
"""

from collections.abc import Callable

import tensorflow as tf

from muscle_jax.data import augment, graph

_ENDLESS = 2**62

# Stream ids folded into the seed, so that streams never share random draws.
LABELED, UNLABELED = 1, 2


def _base_seed(seed: int, stream: int, process_index: int) -> tf.Tensor:
    base = tf.constant([seed, stream], tf.int64)
    return tf.random.experimental.stateless_fold_in(base, process_index)


def _fold(seed: tf.Tensor, *data: int | tf.Tensor) -> tf.Tensor:
    for value in data:
        seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(value, tf.int64))
    return seed


def shuffled_epochs(
    blocks: list[tf.data.Dataset],
    block_sizes: list[int],
    *,
    seed: tf.Tensor,
    start_position: int,
) -> tf.data.Dataset:
    """Endless epochs over `blocks`, shuffled from (seed, epoch), from `start_position` on.

    `blocks` are finite datasets of example dicts holding exactly
    `block_sizes` (> 0) examples each. Adds "position" (int64, the position
    in the endless stream) to each example.
    """
    first_epoch, skip = divmod(start_position, sum(block_sizes))
    whole_blocks = [block.batch(size) for block, size in zip(blocks, block_sizes)]

    def one_epoch(epoch):
        epoch_seed = _fold(seed, epoch)
        order = tf.random.experimental.stateless_shuffle(
            tf.range(len(whole_blocks), dtype=tf.int64), _fold(epoch_seed, -1)
        )
        chosen = tf.data.Dataset.choose_from_datasets(
            whole_blocks, tf.data.Dataset.from_tensor_slices(order)
        )

        def permuted(block_position, block):
            count = tf.shape(block["index"])[0]
            perm = tf.random.experimental.stateless_shuffle(
                tf.range(count), _fold(epoch_seed, block_position)
            )
            return tf.data.Dataset.from_tensor_slices(
                tf.nest.map_structure(lambda t: tf.gather(t, perm), block)
            )

        return chosen.enumerate().flat_map(graph.plain(permuted))

    stream = (
        tf.data.Dataset.range(first_epoch, _ENDLESS).flat_map(graph.plain(one_epoch)).skip(skip)
    )
    return stream.enumerate(start=start_position).map(
        graph.plain(lambda position, ex: {**ex, "position": position})
    )


def augmented_batches(
    stream: tf.data.Dataset,
    *,
    seed: tf.Tensor,
    batch_size: int,
    views: tuple[str, ...],
    flip: bool,
    rand_augment: augment.RandAugment,
    on_device: bool = False,
    shard: int = 0,
) -> tf.data.Dataset:
    """Batches of `len(views)` independent views ("weak" or "strong") of each example.

    Yields dicts with "view0", "view1", ... as float32 in [-1, 1], plus
    "label" and "index" (int32). Augmentation runs on whole batches (much
    faster in TF than image by image), seeded from (seed, the batch's first
    stream position), with independent draws for every image and view.

    With `on_device`, nothing is augmented here: the batch holds "image" (the
    uint8 images), "position" and "shard" (uint32, what seeds each example's
    augmentation on the accelerator: `device_augment.views`).
    """

    def unaugmented_batch(batch):
        count = tf.shape(batch["position"])[0]
        return {
            "image": batch["image"],
            "position": tf.cast(batch["position"], tf.uint32),
            "shard": tf.fill([count], tf.constant(shard, tf.uint32)),
            "label": batch["label"],
            "index": batch["index"],
        }

    def augment_batch(batch):
        batch_seed = _fold(seed, batch["position"][0])
        images = tf.cast(batch["image"], tf.float32)
        out = {"label": batch["label"], "index": batch["index"]}
        for i, (view, view_seed) in enumerate(
            zip(views, augment.split_seed(batch_seed, len(views)))
        ):
            if view == "strong":
                images_i = augment.strong(images, view_seed, rand_augment, flip=flip)
            else:
                images_i = augment.weak(images, view_seed, flip=flip)
            out[f"view{i}"] = augment.normalize(images_i)
        return out

    return stream.batch(batch_size, drop_remainder=True).map(
        graph.plain(unaugmented_batch if on_device else augment_batch),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def train_stream(
    blocks: list[tf.data.Dataset],
    block_sizes: list[int],
    *,
    seed: int,
    stream: int,
    process_index: int,
    batch_size: int,
    start_step: int,
    views: tuple[str, ...],
    flip: bool,
    rand_augment: augment.RandAugment,
    rename: Callable[[dict], dict],
    on_device: bool = False,
) -> tf.data.Dataset:
    """One data shard's labeled or unlabeled stream, resumed at `start_step`.

    `process_index` is the data shard's index (it seeds the stream).
    """
    base = _base_seed(seed, stream, process_index)
    positions = shuffled_epochs(
        blocks, block_sizes, seed=_fold(base, 0), start_position=start_step * batch_size
    )
    batches = augmented_batches(
        positions,
        seed=_fold(base, 1),
        batch_size=batch_size,
        views=views,
        flip=flip,
        rand_augment=rand_augment,
        on_device=on_device,
        shard=process_index,
    )
    return batches.map(graph.plain(rename))
