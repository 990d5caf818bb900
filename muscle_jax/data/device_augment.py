"""Weak and strong augmentation as JAX ops, run inside the jitted train step.

With ``data.augment_on="device"`` the host pipeline only reads, shuffles and
batches: it yields each stream's images as uint8 with the stream position and
data shard of every example (`streams.augmented_batches`), and `views` makes
the augmented views on the accelerator, sharded with the batch, in the same
layout the host would have yielded ("labeled", "labeled_strong",
"unlabeled_a", "unlabeled_b" as float32 in [-1, 1]).

The same augmentations as the host's (`muscle_jax.data.augment`):
- weak: random horizontal flip (where the dataset allows it) and
  reflect-pad-and-crop, with the same padding;
- strong: weak, then RandAugment (2 ops per image out of the same 11, with
  the same magnitude ranges: the same Keras 3 layers, run on Keras's JAX
  backend), then Cutout of half the image side.

Every random draw of an image is a function of (seed, stream, data shard,
stream position, view) alone: not of the step, the batch it is in or the
device it lands on. So a resumed run augments exactly as an uninterrupted one,
and any device count or batch size gives the same pixels (to float rounding:
XLA vectorises different batch shapes differently). The draws are not the host's
(TensorFlow's stateless RNG is not JAX's), so the two places give equally
distributed, not equal, views.

"""

import functools

import jax
import jax.numpy as jnp
import keras

from muscle_jax import input_pipeline
from muscle_jax.data import augment
from muscle_jax.data.streams import LABELED, UNLABELED


def pad_and_crop(image: jax.Array, offsets: jax.Array, pad: int) -> jax.Array:
    """The ``[H, W, C]`` window at ``offsets`` (row, column) of ``image``, reflect-padded."""
    padded = jnp.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    return jax.lax.dynamic_slice(padded, (offsets[0], offsets[1], 0), image.shape)


def weak(image: jax.Array, key: jax.Array, *, flip: bool) -> jax.Array:
    """Flip (if ``flip``, with probability 1/2) and reflect-pad-and-crop one ``[H, W, C]`` image."""
    height, width = image.shape[:2]
    pad = augment.pad_for_size(max(height, width))
    crop_key, flip_key = jax.random.split(key)
    offsets = jax.random.randint(crop_key, (2,), 0, 2 * pad + 1)
    image = pad_and_crop(image, offsets, pad)
    if flip:
        image = jnp.where(jax.random.bernoulli(flip_key), image[:, ::-1], image)
    return image


def cutout_at(image: jax.Array, centre: jax.Array, *, fraction: float = 0.5) -> jax.Array:
    """Grey out the square of side ``fraction * size`` centred at ``centre`` (row, column, px)."""
    height, width = image.shape[:2]
    half = fraction * max(height, width) / 2
    rows = jnp.arange(height, dtype=jnp.float32)[:, None] + 0.5
    cols = jnp.arange(width, dtype=jnp.float32)[None, :] + 0.5
    inside = (jnp.abs(rows - centre[0]) < half) & (jnp.abs(cols - centre[1]) < half)
    return jnp.where(inside[..., None], jnp.asarray(augment.GREY, image.dtype), image)


def cutout(image: jax.Array, key: jax.Array, *, fraction: float = 0.5) -> jax.Array:
    """Cutout with the square's centre uniform over the image (it may be clipped by the border)."""
    height, width = image.shape[:2]
    centre = jax.random.uniform(key, (2,)) * jnp.array([height, width], jnp.float32)
    return cutout_at(image, centre, fraction=fraction)


def equalize(image: jax.Array) -> jax.Array:
    """The host's `augment.equalize` of one ``[H, W, C]`` image (Keras's arithmetic, per image).

    Written here because the Keras layer's JAX path is chosen by Keras's global
    backend (TensorFlow in this package) and its other path does not compile
    under `jax.jit`.
    """

    def channel(values: jax.Array) -> jax.Array:
        bins = jnp.clip((values * 255.0 / 255.0).astype(jnp.int32), 0, 255)
        histogram = jnp.zeros(256, jnp.int32).at[bins.reshape(-1)].add(1)
        cdf = jnp.cumsum(histogram)
        cdf_min = cdf[jnp.argmax(cdf > 0)]
        denominator = cdf[-1] - cdf_min
        denominator = jnp.where(denominator == 0, 1, denominator)
        lookup = jnp.clip(jnp.round((cdf - cdf_min) * 255 / denominator), 0, 255)
        indices = jnp.clip(values / 255.0 * 255, 0, 255).astype(jnp.int32)
        equalized = jnp.take(lookup, indices).astype(values.dtype)
        return jnp.where(jnp.count_nonzero(histogram) <= 1, values, equalized)

    return jnp.stack([channel(image[..., c]) for c in range(image.shape[-1])], axis=-1)


class _KeySeeds(keras.random.SeedGenerator):
    """A Keras ``seed=`` whose draws are folds of one JAX key (the host's `_StatelessSeedStream`).

    `SeedGenerator.__init__` is deliberately not called: it creates a state
    variable, which a jitted function cannot update.
    """

    def __init__(self, key: jax.Array):
        self._key = key
        self._draws = 0

    def next(self, ordered: bool = True) -> jax.Array:
        del ordered
        self._draws += 1
        return jax.random.key_data(jax.random.fold_in(self._key, self._draws))


@functools.cache
def _jax_layers(factor: float) -> tuple[tuple[str, keras.layers.Layer | None], ...]:
    """The host's 11 RandAugment layers, set to run on Keras's JAX backend (equalize: ours)."""
    layers = augment.keras_ops(factor)
    for layer in layers.values():
        layer.backend.set_backend("jax")
    return tuple((name, None if name == "equalize" else layer) for name, layer in layers.items())


def _apply_op(layer: keras.layers.Layer | None, image: jax.Array, key: jax.Array) -> jax.Array:
    if layer is None:
        out = equalize(image)
    else:
        params = layer.get_random_transformation(image[None], training=True, seed=_KeySeeds(key))
        out = layer.transform_images(image[None], params, training=True)[0]
    return jnp.clip(out.astype(jnp.float32), 0.0, 255.0)


def rand_augment(
    image: jax.Array, key: jax.Array, *, num_ops: int = 2, factor: float = 0.5
) -> jax.Array:
    """RandAugment of one float ``[H, W, C]`` image in [0, 255], as the host's `RandAugment`.

    Each of ``num_ops`` rounds draws one of the 11 ops uniformly and the op
    draws its own magnitude. Under `jax.vmap` every op runs on every image and
    each image keeps the one it drew (a `lax.switch` is batched into the same
    selection): 11 ops' work a round, cheap on an accelerator at CIFAR size.
    """
    layers = _jax_layers(factor)
    grey = image.shape[-1] == 1
    if grey:  # Some colour ops assume RGB, as on the host.
        image = jnp.repeat(image, 3, axis=-1)
    branches = [functools.partial(_apply_op, layer) for _, layer in layers]

    def one_round(image, round_key):
        choice, op_key = _draw_op(round_key, len(branches))
        return jax.lax.switch(choice, branches, image, op_key), None

    image, _ = jax.lax.scan(one_round, image, jax.random.split(key, num_ops))
    if grey:
        image = jnp.mean(image, axis=-1, keepdims=True)
    return image


def _draw_op(round_key: jax.Array, num_ops: int) -> tuple[jax.Array, jax.Array]:
    """(the op a round applies, the key it draws its magnitude from)."""
    choice_key, op_key = jax.random.split(round_key)
    return jax.random.randint(choice_key, (), 0, num_ops), op_key


def op_choices(key: jax.Array, *, num_ops: int = 2, factor: float = 0.5) -> jax.Array:
    """The ops `rand_augment` applies with ``key``, in order (indices into `op_names`)."""
    num = len(_jax_layers(factor))
    return jnp.stack([_draw_op(k, num)[0] for k in jax.random.split(key, num_ops)])


def op_names(factor: float = 0.5) -> tuple[str, ...]:
    return tuple(name for name, _ in _jax_layers(factor))


def strong(image: jax.Array, key: jax.Array, *, flip: bool) -> jax.Array:
    """Weak, then RandAugment, then Cutout, on one ``[H, W, C]`` image (FixMatch's strong)."""
    weak_key, augment_key, cutout_key = jax.random.split(key, 3)
    image = rand_augment(weak(image, weak_key, flip=flip), augment_key)
    return cutout(image, cutout_key)


def example_keys(seed: int, stream: int, shard: jax.Array, position: jax.Array) -> jax.Array:
    """One key per example, from (seed, stream, data shard, stream position) alone."""
    base = jax.random.fold_in(jax.random.key(seed), stream)
    return jax.vmap(lambda s, p: jax.random.fold_in(jax.random.fold_in(base, s), p))(
        shard, position
    )


def stream_views(
    images: jax.Array, keys: jax.Array, views: tuple[str, ...], *, flip: bool
) -> list[jax.Array]:
    """``len(views)`` views ("weak" or "strong") of a uint8 ``[N, H, W, C]`` batch, in [-1, 1].

    Each stream's views are made from its own batch, never concatenated with
    the other stream's: a concatenation along the sharded batch axis would move
    images between devices.
    """
    images = images.astype(jnp.float32)
    out = []
    for index, view in enumerate(views):
        view_keys = jax.vmap(lambda key, index=index: jax.random.fold_in(key, index))(keys)
        make = strong if view == "strong" else weak
        augmented = jax.vmap(functools.partial(make, flip=flip))(images, view_keys)
        out.append(augmented / 127.5 - 1.0)
    return out


def views(
    batch: dict[str, jax.Array],
    *,
    seed: int,
    unlabeled_views: str,
    labeled_views: int,
    flip: bool,
) -> dict[str, jax.Array]:
    """The training batch the host would have yielded, from the host's uint8 images.

    ``batch`` holds "labeled_image", "labeled_shard", "labeled_position" (and
    the same for "unlabeled_*" when ``unlabeled_views`` is not "none") beside
    the labels and indices, which pass through unchanged.
    """
    out = {
        key: value
        for key, value in batch.items()
        if not key.endswith(("_image", "_shard", "_position"))
    }
    keys = example_keys(seed, LABELED, batch["labeled_shard"], batch["labeled_position"])
    labeled = stream_views(
        batch["labeled_image"], keys, ("weak", "strong")[:labeled_views], flip=flip
    )
    out["labeled"] = labeled[0]
    if labeled_views == 2:
        out["labeled_strong"] = labeled[1]
    if unlabeled_views != "none":
        keys = example_keys(seed, UNLABELED, batch["unlabeled_shard"], batch["unlabeled_position"])
        kinds = input_pipeline.UNLABELED_VIEWS[unlabeled_views]
        out["unlabeled_a"], out["unlabeled_b"] = stream_views(
            batch["unlabeled_image"], keys, kinds, flip=flip
        )
    return out
