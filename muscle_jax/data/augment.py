"""Weak and strong image augmentation as TF ops, seeded statelessly.

Every random draw is a function of an explicit `[2]` int64 seed tensor, never
of TensorFlow's global or per-op random state, so an augmented stream is a
pure function of (seed, position in the stream) and a resumed run sees the
same pixels as an uninterrupted one.

Images are float32 `[N, H, W, C]` batches in [0, 255] (any channel count) until
`normalize` maps them to [-1, 1] at the end of the pipeline.

- weak: random horizontal flip (where the dataset allows it) and
  reflect-pad-and-crop, pad 4 px at 32 px and proportional otherwise.
- strong: weak, then RandAugment (2 ops per image, each op and its magnitude
  drawn at random) and Cutout, as FixMatch's strong augmentation.

RandAugment's ops are Keras 3's maintained preprocessing layers, driven
through their public `get_random_transformation` / `transform_images` API.
`keras.layers.RandAugment` itself is not used as a whole because it draws its
randomness from a stateful `SeedGenerator` variable (not a function of the
example, and racy under a parallel `tf.data.map`) and, on a batch, applies the
same two ops to every image.
"""

import functools

import keras
import tensorflow as tf

# Mid-grey in [0, 255]: Cutout's fill, which `normalize` maps to 0.
GREY = 127.5


def pad_for_size(size: int) -> int:
    """Reflect-padding for pad-and-crop: 4 px at 32 px, proportional elsewhere (>= 1)."""
    return max(1, int(size / 8 + 0.5))


def normalize(images: tf.Tensor) -> tf.Tensor:
    """[0, 255] -> [-1, 1], float32."""
    return tf.cast(images, tf.float32) / 127.5 - 1.0


def split_seed(seed: tf.Tensor, num: int) -> list[tf.Tensor]:
    """`num` independent `[2]` seeds from one, statelessly."""
    seeds = tf.random.experimental.stateless_split(seed, num)
    return [seeds[i] for i in range(num)]


def weak(images: tf.Tensor, seed: tf.Tensor, *, flip: bool) -> tf.Tensor:
    """Flip (if `flip`) and reflect-pad-and-crop each image of a `[N, H, W, C]` batch.

    Done as two batched gathers (crop offsets and mirroring folded into the
    row and column indices), not image by image: several times faster in tf.data.
    """
    batch, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
    pad = pad_for_size(max(height, width))
    crop_seed, flip_seed = split_seed(seed, 2)
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    offsets = tf.random.stateless_uniform([batch, 2], crop_seed, 0, 2 * pad + 1, tf.int32)
    rows = offsets[:, :1] + tf.range(height)[None]
    cols = offsets[:, 1:] + tf.range(width)[None]
    if flip:
        mirrored = tf.random.stateless_uniform([batch, 1], flip_seed) < 0.5
        cols = tf.where(mirrored, tf.reverse(cols, axis=[1]), cols)
    rows_kept = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(rows_kept, cols, axis=2, batch_dims=1)


def cutout(images: tf.Tensor, seed: tf.Tensor, *, fraction: float = 0.5) -> tf.Tensor:
    """Grey out one square of side `fraction * size` per image of a `[N, H, W, C]` batch.

    The square's centre is uniform over the image, so it may be clipped by
    the border (as in the Cutout paper and FixMatch).
    """
    batch, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
    centres = tf.random.stateless_uniform([batch, 2], seed=seed) * [height, width]
    half = fraction * max(height, width) / 2
    rows = tf.range(height, dtype=tf.float32)[None, :, None] + 0.5
    cols = tf.range(width, dtype=tf.float32)[None, None, :] + 0.5
    inside = (tf.abs(rows - centres[:, 0, None, None]) < half) & (
        tf.abs(cols - centres[:, 1, None, None]) < half
    )
    return tf.where(inside[..., None], tf.constant(GREY, images.dtype), images)


class _StatelessSeedStream(keras.random.SeedGenerator):
    """A Keras `seed=` argument whose draws are stateless functions of one seed tensor.

    Keras layers call `next()` once per random draw; here each call folds a
    counter into the seed tensor instead of reading and bumping a variable.
    `SeedGenerator.__init__` is deliberately not called: it creates exactly
    that variable.
    """

    def __init__(self, seed: tf.Tensor):
        self._seed = seed
        self._draws = 0

    def next(self, ordered: bool = True) -> tf.Tensor:
        del ordered
        self._draws += 1
        return tf.random.experimental.stateless_fold_in(self._seed, self._draws)


class RandAugment:
    """RandAugment with a random magnitude per op and per image, on `[N, H, W, C]` batches.

    Each image gets `num_ops` ops drawn uniformly from the 11 below; each op
    draws its own magnitude uniformly within Keras's `factor` range. Grey
    (1-channel) images are augmented as 3 equal channels and averaged back,
    because some colour ops assume RGB.
    """

    def __init__(
        self, *, num_ops: int = 2, factor: float = 0.5, op_names: tuple[str, ...] | None = None
    ):
        ops = keras_ops(factor)
        op_names = tuple(ops) if op_names is None else op_names
        unknown = set(op_names) - set(ops)
        if unknown:
            raise ValueError(f"Unknown RandAugment ops {sorted(unknown)}; known: {list(ops)}.")
        self.num_ops = num_ops
        self.op_names = op_names
        self._layers = [ops[name] for name in op_names]
        for layer in self._layers:
            # These layers only ever run inside TF graphs here, whatever KERAS_BACKEND says.
            layer.backend.set_backend("tensorflow")
        # Traced once per image shape and reused by every pipeline that shares this
        # instance (`shared_rand_augment`), and without autograph (data/graph.py):
        # tracing the 11 Keras ops through autograph took ~2 s of every digits
        # run's start-up on 2 cores. (No reduce_retracing: cutout needs the static
        # image size of each shape.)
        self._traced = tf.function(self._augment, autograph=False)

    def __call__(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        return self._traced(images, seed)

    def _augment(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        shape = images.shape
        if shape[-1] == 1:
            images = tf.repeat(images, 3, axis=-1)
        num_layers = len(self._layers)
        choice_seed, *op_seeds = split_seed(seed, 1 + self.num_ops * num_layers)
        choices = tf.random.stateless_uniform(
            [tf.shape(images)[0], self.num_ops], choice_seed, 0, num_layers, tf.int32
        )
        for op in range(self.num_ops):
            # Each layer transforms only the images that drew it (not the whole
            # batch masked afterwards): about num_layers times less work.
            where = tf.dynamic_partition(tf.range(tf.shape(images)[0]), choices[:, op], num_layers)
            groups = tf.dynamic_partition(images, choices[:, op], num_layers)
            changed = []
            for index, (layer, group) in enumerate(zip(self._layers, groups)):
                seed_stream = _StatelessSeedStream(op_seeds[op * num_layers + index])
                # Some Keras ops fail on an empty batch, so skip those outright.
                changed.append(
                    tf.cond(
                        tf.shape(group)[0] > 0,
                        lambda layer=layer, group=group, seeds=seed_stream: _apply(
                            layer, group, seeds
                        ),
                        lambda group=group: group,
                    )
                )
            images = tf.ensure_shape(tf.dynamic_stitch(where, changed), images.shape)
        if shape[-1] == 1:
            images = tf.reduce_mean(images, axis=-1, keepdims=True)
        return images


@functools.cache
def shared_rand_augment(num_ops: int = 2, factor: float = 0.5) -> RandAugment:
    """One `RandAugment` per setting for the whole process, so its graph is traced once."""
    return RandAugment(num_ops=num_ops, factor=factor)


def equalize(images: tf.Tensor) -> tf.Tensor:
    """Histogram equalisation of each image and channel of a `[N, H, W, C]` batch in [0, 255].

    Keras's `Equalization` arithmetic (256 bins), but one histogram per image
    and channel, as RandAugment's Equalize (PIL's `ImageOps.equalize`) has it:
    the layer itself builds one histogram over every image of the batch it gets.
    """
    batch, height, width, channels = (tf.shape(images)[i] for i in range(4))
    rows = tf.reshape(tf.transpose(images, [0, 3, 1, 2]), [batch * channels, height * width])
    bins = tf.clip_by_value(tf.cast(rows * 255.0 / 255.0, tf.int32), 0, 255)
    histogram = tf.math.bincount(bins, minlength=256, maxlength=256, axis=-1)
    cdf = tf.cumsum(histogram, axis=-1)
    cdf_min = tf.gather(cdf, tf.argmax(tf.cast(cdf > 0, tf.int32), axis=-1), batch_dims=1)
    denominator = cdf[:, -1] - cdf_min
    denominator = tf.where(denominator == 0, tf.ones_like(denominator), denominator)
    lookup = (tf.cast(cdf - cdf_min[:, None], tf.float32) * 255.0) / tf.cast(
        denominator[:, None], tf.float32
    )
    lookup = tf.clip_by_value(tf.round(lookup), 0.0, 255.0)
    indices = tf.cast(tf.clip_by_value(rows / 255.0 * 255.0, 0.0, 255.0), tf.int32)
    equalized = tf.gather(lookup, indices, batch_dims=1)
    one_bin = tf.math.count_nonzero(histogram, axis=-1, keepdims=True) <= 1
    equalized = tf.where(one_bin, rows, equalized)
    return tf.transpose(tf.reshape(equalized, [batch, channels, height, width]), [0, 2, 3, 1])


def _apply(layer: keras.layers.Layer, images: tf.Tensor, seeds: _StatelessSeedStream):
    if isinstance(layer, keras.layers.Equalization):
        return equalize(images)  # Per image (`equalize`); it draws nothing.
    params = layer.get_random_transformation(images, training=True, seed=seeds)
    images = layer.transform_images(images, params, training=True)
    return tf.clip_by_value(tf.cast(images, tf.float32), 0.0, 255.0)


def keras_ops(factor: float) -> dict[str, keras.layers.Layer]:
    """RandAugment's 11 ops as Keras 3 layers.

    Colour ops take `factor` as `keras.layers.RandAugment` does. Geometric ops
    use FixMatch's RandAugment ranges instead (shear 0.3, translation 30 %,
    rotation 30 degrees; Keras's RandAugment would rotate up to 180) and fill
    by reflection rather than with black borders that no real image shows.
    """
    kw = {"value_range": (0, 255)}
    geometric = {"fill_mode": "reflect"}
    return {
        "shear": keras.layers.RandomShear(x_factor=0.3, y_factor=0.3, **geometric),
        "translate": keras.layers.RandomTranslation(0.3, 0.3, **geometric),
        "rotate": keras.layers.RandomRotation(30 / 360, **geometric),
        "brightness": keras.layers.RandomBrightness(factor, **kw),
        "color": keras.layers.RandomColorDegeneration(factor, **kw),
        "contrast": keras.layers.RandomContrast(factor, **kw),
        "sharpness": keras.layers.RandomSharpness(factor, **kw),
        "posterize": keras.layers.RandomPosterization(max(1, int(8 * factor)), **kw),
        "solarize": keras.layers.Solarization(
            addition_factor=factor, threshold_factor=factor, **kw
        ),
        "autocontrast": keras.layers.AutoContrast(**kw),
        "equalize": keras.layers.Equalization(**kw),  # Applied per image: `equalize`.
    }


def strong(
    images: tf.Tensor, seed: tf.Tensor, rand_augment: RandAugment, *, flip: bool
) -> tf.Tensor:
    """Weak, then RandAugment, then Cutout, on a `[N, H, W, C]` batch (FixMatch's strong)."""
    weak_seed, augment_seed, cutout_seed = split_seed(seed, 3)
    images = weak(images, weak_seed, flip=flip)
    return cutout(rand_augment(images, augment_seed), cutout_seed)
