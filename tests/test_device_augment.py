"""Augmentation on the accelerator (data.augment_on="device"): each RandAugment op and Cutout
against PIL (tests/pil_reference.py), the draws, per-example seeding, sharding, the host's uint8
stream, and a bit-exact resume.

How exact: 13 of the 14 ops and Cutout equal PIL pixel for pixel on every grid here (8, 16,
32 and 28 px, grey and RGB, each op's range with its ends). Rotate may differ in at most 1e-4
of the pixels (measured: 3.7e-6 of 4000 random 32 px rotations, 1 to 4 pixels in 0.25 % of
them): its coefficients come from float32 cosines where PIL has float64.
"""

import functools
import inspect
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from muscle_jax import config_validation, train
from muscle_jax import input_pipeline as ip
from muscle_jax.data import augment
from muscle_jax.data import device_augment as da
from muscle_jax.data import rand_augment_spec as spec
from muscle_jax.data.streams import UNLABELED

from . import pil_reference as pil
from .helpers import DIGITS_STREAM, latest_state, load_config
from .shared_runs import device_parity_config, run_until_step

# One compile per image shape holds all 14 ops (the op is a traced index).
APPLY_OPS = jax.jit(jax.vmap(da.apply_op))
RAND_AUGMENT = jax.jit(jax.vmap(da.rand_augment))
STRONG = jax.jit(jax.vmap(functools.partial(da.strong, flip=True)))
# Rotate's coefficients come from float32 cosines (PIL: float64): measured
# 3.7e-6 of the pixels of 4000 random 32 px rotations read a neighbouring source
# pixel. Every other op is exact.
ROTATE_MISMATCH_FRACTION = 1e-4
SHAPES = [(8, 1), (8, 3), (16, 1), (16, 3), (32, 1), (32, 3)]
# Magnitudes beside an even grid over each range: PIL's integer steps and their edges.
EDGE_MAGNITUDES = {
    "posterize": [4.0, 4.999, 5.0, 6.5, 7.0, 7.999, 8.0],
    "solarize": [0.0, 1.0, 127.5, 128.0, 128.5, 255.0, 256.0],
    "rotate": [0.0, -0.001, 12.0, 29.99],
    "shear_x": [0.0, 1 / 64, -0.25, 0.1],
    "shear_y": [0.0, 1 / 64, -0.25, 0.1],
    "translate_x": [0.0, 0.25, -1 / 16, 0.1],
    "translate_y": [0.0, 0.25, -1 / 16, 0.1],
}


def _magnitudes(op: spec.Op) -> np.ndarray:
    grid = np.linspace(op.low, op.high, 9)
    return np.concatenate([grid, EDGE_MAGNITUDES.get(op.name, [])]).astype(np.float32)


def _images(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.float32)


def _on_every_op(images: np.ndarray):
    """(op index, image, magnitude) triples: every image at every op's `_magnitudes`."""
    indices, batch, values = [], [], []
    for index, op in enumerate(spec.OPS):
        for value in _magnitudes(op):
            indices += [index] * len(images)
            batch.append(images)
            values += [value] * len(images)
    return np.array(indices), np.concatenate(batch), np.array(values, np.float32)


@pytest.mark.parametrize("size,channels", SHAPES)
def test_each_op_equals_pil_over_its_range(size, channels):
    images = pil.random_images(np.random.default_rng(size + channels), 4, size, channels)
    indices, batch, values = _on_every_op(images)
    got = np.asarray(APPLY_OPS(indices, jnp.asarray(batch, jnp.float32), values))
    expected = np.stack(
        [pil.apply_op(spec.OP_NAMES[i], x, float(v)) for i, x, v in zip(indices, batch, values)]
    )
    assert np.array_equal(got, np.round(got)) and got.min() >= 0 and got.max() <= 255
    for index, name in enumerate(spec.OP_NAMES):
        mine, theirs = got[indices == index], expected[indices == index]
        if name == "rotate":
            assert np.mean(mine != theirs) <= ROTATE_MISMATCH_FRACTION
        else:
            np.testing.assert_array_equal(mine, theirs, err_msg=name)
        # PIL's Equalize keeps images of fewer than 256 + (top level's count) pixels.
        kept = (
            name == "identity"
            or (name, channels) == ("color", 1)
            or (name, size) == ("equalize", 8)
        )
        assert kept or np.any(theirs != batch[indices == index]), name  # The grid changes images.


def test_ops_equal_pil_at_a_width_that_is_not_a_power_of_two():
    # 28 px: v * width is inexact in float32, so translate's floor(v * w + 0.5)
    # is decided from the product's rounding error. The magnitudes sit one float32
    # step either side of PIL's half-way points (n + 0.5) / 28.
    images = pil.random_images(np.random.default_rng(4), 3, 28, 3)
    halfway = (np.arange(-8, 9) + 0.5) / 28
    values = np.concatenate(
        [
            np.nextafter(halfway.astype(np.float32), np.float32(-1)),
            halfway.astype(np.float32),
            np.nextafter(halfway.astype(np.float32), np.float32(1)),
        ]
    )
    batch = np.repeat(images, len(values), axis=0)
    repeated = np.tile(values, len(images))
    for name in ("translate_x", "translate_y", "shear_x", "shear_y"):
        got = jax.jit(jax.vmap(da.OP_FUNCTIONS[name]))(jnp.asarray(batch, jnp.float32), repeated)
        expected = [pil.apply_op(name, x, float(v)) for x, v in zip(batch, repeated)]
        np.testing.assert_array_equal(np.asarray(got), np.stack(expected), err_msg=name)


def test_autocontrast_equals_pil_where_float64_falls_short_and_elsewhere():
    # Every (lo, hi) where PIL's float64 table falls one short of the exact
    # quotient somewhere (12094 entries in 5958 pairs) and 1000 other pairs: an
    # image holding every level from lo to hi. (All 32640 pairs take PIL ~10 s.)
    pairs, shortfalls = da._autocontrast_shortfalls()
    assert len(pairs) == 5958 and np.count_nonzero(shortfalls) == 12094
    low, high = np.triu_indices(256, k=1)
    others = np.setdiff1d(low * 256 + high, pairs)
    keys = np.concatenate([pairs, np.random.default_rng(0).choice(others, 1000, replace=False)])
    low, high = keys // 256, keys % 256
    images = np.clip(np.arange(256), low[:, None], high[:, None]).reshape(-1, 16, 16, 1)
    got = jax.jit(jax.vmap(da.autocontrast, (0, None)))(images.astype(np.float32), 0.0)
    expected = [pil.apply_op("autocontrast", x, 0.0) for x in images.astype(np.uint8)]
    np.testing.assert_array_equal(got, np.stack(expected))
    assert got[list(keys).index(0 * 256 + 25), -1, -1, 0] == 254  # hi = 25: not 255.


def test_equalize_keeps_the_images_pil_keeps():
    flat = np.full((16, 16, 3), 7, np.uint8)  # One level per channel.
    top_heavy = np.full((16, 16, 3), 200, np.uint8)
    top_heavy[0, 0] = 7  # step = (256 - 255) // 255 == 0 in PIL.
    bottom_heavy = flat.copy()
    bottom_heavy[0, 0] = 200  # step = (256 - 1) // 255 == 1: stretched to 0 and 255.
    images = np.stack([flat, top_heavy, bottom_heavy])
    got = np.asarray(jax.jit(jax.vmap(da.equalize, (0, None)))(images.astype(np.float32), 0.0))
    np.testing.assert_array_equal(got[:2], images[:2])
    np.testing.assert_array_equal(np.unique(got[2]), [0, 255])
    for image, out in zip(images, got):
        np.testing.assert_array_equal(out, pil.apply_op("equalize", image, 0.0))


def _units(count, rng):
    """Uniforms on jax.random.uniform's 2**-23 grid: random, ends, and the half-pixel edges."""
    units = rng.integers(0, 2**23, (count, 3))
    units[:8, 0] = [0, 1, 2**22, 2**23 - 1, 4, 2**20, 2**21 + 4, 3 * 2**20]
    # Corners where u * w - side / 2 is an integer at 32 px, and one 2**-23 either side.
    units[8:32, 0] = units[8:32, 0] // 4 * 4
    units[8:32, 1] = (units[8:32, 0] + 2**20 * rng.integers(0, 32, 24)) // 4
    units[8:32, 1] += np.tile([-1, 0, 1], 8)
    units[:, 1:] = np.clip(units[:, 1:], 0, 2**23 - 1)
    return units


@pytest.mark.parametrize("size,channels", [(8, 1), (32, 3), (28, 3)])
def test_cutout_equals_pil_over_a_grid_of_draws(size, channels):
    rng = np.random.default_rng(size)
    images = pil.random_images(rng, 64, size, channels)
    uniforms = (_units(len(images), rng) / 2**23).astype(np.float32)
    got = np.asarray(jax.jit(jax.vmap(da.cutout))(jnp.asarray(images, jnp.float32), uniforms))
    for image, draw, out in zip(images, uniforms, got):
        side, x, y = (float(u) for u in draw)
        np.testing.assert_array_equal(out, pil.cutout(image, side * 0.5 * size, x, y))
    fill = np.asarray(spec.cutout_fill(channels), np.float32)
    filled = np.all(got == fill, axis=-1) & ~np.all(images == fill, axis=-1)
    assert filled[0].sum() == 0 and filled[1].sum() > 0  # Side 0: none; 2**-23: one pixel.


def test_ops_are_drawn_uniformly_and_independently_per_round():
    keys = jax.random.split(jax.random.key(1), 14000)
    choices = np.asarray(jax.vmap(da.op_choices)(keys))  # [N, 3]
    assert choices.shape == (14000, spec.DEFAULT_ROUNDS) and da.op_names() == spec.OP_NAMES
    expected = len(keys) / spec.NUM_OPS
    for round_ in range(spec.DEFAULT_ROUNDS):
        counts = np.bincount(choices[:, round_], minlength=spec.NUM_OPS)
        assert ((counts - expected) ** 2 / expected).sum() < 40  # chi2(13): p ~ 2e-4
    pairs = np.bincount(choices[:, 0] * spec.NUM_OPS + choices[:, 1], minlength=spec.NUM_OPS**2)
    assert pairs.min() > 30  # Every ordered pair of ops occurs (71 expected).
    assert np.mean(choices[:, 0] == choices[:, 1]) > 0.05  # With replacement: 1/14 repeats.


def test_magnitudes_are_uniform_over_each_range():
    keys = jax.random.split(jax.random.key(2), 6000)
    indices, uniforms = jax.vmap(da.op_draws)(keys)
    values = np.asarray(jax.vmap(jax.vmap(da.op_magnitude))(indices, uniforms))
    indices, uniforms = np.asarray(indices), np.asarray(uniforms)
    assert np.all((0 <= uniforms) & (uniforms < 1))
    # Kolmogorov-Smirnov against U[0, 1): 0.01 at 18000 draws is p < 1e-3.
    assert np.abs(np.sort(uniforms.ravel()) - np.linspace(0, 1, uniforms.size)).max() < 0.01
    for index, op in enumerate(spec.OPS):
        drawn = values[indices == index]
        low, high, span = np.float32(op.low), np.float32(op.high), op.high - op.low
        assert low <= drawn.min() < low + 0.01 * span, op.name
        assert high - 0.01 * span < drawn.max() <= high, op.name
        assert abs(drawn.mean() - (op.low + op.high) / 2) < 0.03 * span, op.name
    np.testing.assert_allclose(
        jax.vmap(da.op_magnitude)(jnp.arange(spec.NUM_OPS), jnp.zeros(spec.NUM_OPS)),
        [op.low for op in spec.OPS],
        rtol=1e-6,
    )


def _rand_augment_batch():
    """24 images of 16 px and their keys, for `RAND_AUGMENT` (compiled for this shape)."""
    images = pil.random_images(np.random.default_rng(2), 24, 16, 3)
    return jnp.asarray(images, jnp.float32), jax.random.split(jax.random.key(3), len(images))


def test_rand_augment_applies_the_ops_it_draws_in_order_as_pil_does():
    images, keys = _rand_augment_batch()
    got = np.asarray(RAND_AUGMENT(images, keys))
    indices, uniforms = jax.vmap(da.op_draws)(keys)
    values = np.asarray(jax.vmap(jax.vmap(da.op_magnitude))(indices, uniforms))
    for image, ops, magnitudes, out in zip(np.asarray(images), np.asarray(indices), values, got):
        expected = image
        for index, value in zip(ops, magnitudes):
            expected = pil.apply_op(spec.OP_NAMES[index], expected, float(value))
        rotated = spec.OP_NAMES.index("rotate") in ops
        assert np.mean(out != expected) <= (0.01 if rotated else 0.0)
    assert np.mean(got != images) > 0.3


def test_rand_augment_is_a_function_of_each_images_key_under_jit_and_vmap():
    images, keys = _rand_augment_batch()
    out = np.asarray(RAND_AUGMENT(images, keys))
    np.testing.assert_array_equal(RAND_AUGMENT(images, keys), out)  # Deterministic.
    # Each image's pixels depend on its own image and key, not on its batch neighbours.
    np.testing.assert_array_equal(RAND_AUGMENT(images[::-1], keys[::-1]), out[::-1])
    others = np.asarray(RAND_AUGMENT(images, jax.random.split(jax.random.key(5), len(images))))
    assert np.mean(np.any(others != out, axis=(1, 2, 3))) > 0.5
    np.testing.assert_array_equal(da.rand_augment(images[0], keys[0], num_ops=0), images[0])


def test_strong_is_weak_then_rand_augment_then_cutout():
    images, keys = _rand_augment_batch()
    weak_keys, augment_keys, cutout_keys = jax.vmap(lambda key: jax.random.split(key, 3))(keys).T
    expected = jax.vmap(functools.partial(da.weak, flip=True))(images, weak_keys)
    expected = RAND_AUGMENT(expected, augment_keys)
    expected = jax.vmap(da.cutout)(expected, jax.vmap(da.cutout_uniforms)(cutout_keys))
    np.testing.assert_array_equal(STRONG(images, keys), expected)


def test_host_and_device_ops_give_the_same_pixels():
    # Both places reproduce PIL, so the same images at the same magnitudes agree
    # (the grid test's batch at 16 px: its compile is reused).
    images = pil.random_images(np.random.default_rng(16 + 3), 4, 16, 3)
    indices, batch, values = _on_every_op(images)
    device = np.asarray(APPLY_OPS(indices, jnp.asarray(batch, jnp.float32), values))
    for index, name in enumerate(spec.OP_NAMES):
        chosen = indices == index
        host = augment.apply_op(name, tf.constant(batch[chosen], tf.float32), values[chosen])
        mismatch = np.mean(host.numpy() != device[chosen])
        assert mismatch <= (ROTATE_MISMATCH_FRACTION if name == "rotate" else 0.0), name


def test_host_and_device_strong_views_are_equally_distributed():
    # The two places draw with different generators (TensorFlow's, JAX's), so
    # their views of the same images are equal in distribution only: per-image
    # statistics agree within sampling error (4 standard errors).
    images = pil.random_images(np.random.default_rng(8), 480, 16, 3)
    host = augment.strong(
        tf.constant(images, tf.float32),
        tf.constant([8, 9], tf.int64),
        augment.shared_rand_augment(spec.DEFAULT_ROUNDS),
        flip=True,
    ).numpy()
    keys = jax.random.split(jax.random.key(8), len(images))
    device = np.concatenate(
        [
            STRONG(jnp.asarray(images[i : i + 24], jnp.float32), keys[i : i + 24])
            for i in range(0, 480, 24)
        ]
    )
    fill = np.asarray(spec.cutout_fill(3), np.float32)
    for name, statistic in {
        "mean level": lambda views: views.mean(axis=(1, 2, 3)),
        "black": lambda views: np.all(views == 0, axis=-1).mean(axis=(1, 2)),
        "white": lambda views: np.all(views == 255, axis=-1).mean(axis=(1, 2)),
        "cutout fill": lambda views: np.all(views == fill, axis=-1).mean(axis=(1, 2)),
        "changed": lambda views: np.mean(views != images, axis=(1, 2, 3)),
    }.items():
        on_host, on_device = statistic(host), statistic(device)
        error = np.sqrt((on_host.var() + on_device.var()) / len(images))
        assert abs(on_host.mean() - on_device.mean()) <= 4 * error, name


@pytest.mark.parametrize("shape", [(8, 8, 1), (32, 32, 3)])
def test_pad_and_crop_is_numpy_reflect_pad_then_slice(shape):
    image = _images(shape)
    pad = augment.pad_for_size(shape[0])
    padded = np.pad(image, [(pad, pad), (pad, pad), (0, 0)], mode="reflect")
    for row, col in [(0, 0), (pad, pad), (2 * pad, 1), (1, 2 * pad)]:
        got = da.pad_and_crop(jnp.asarray(image), jnp.array([row, col]), pad)
        np.testing.assert_array_equal(got, padded[row : row + shape[0], col : col + shape[1]])


def test_weak_crops_and_flips_as_often_as_the_host():
    # One bright column at x = 10 (as the host's test): a crop moves it by at most
    # the pad, a flip mirrors it; about half the images flip, none without flip.
    images = np.zeros((200, 32, 32, 1), np.float32)
    images[:, :, 10] = 255
    keys = jax.random.split(jax.random.key(0), 200)
    for flip in (False, True):
        out = np.asarray(jax.vmap(functools.partial(da.weak, flip=flip))(images, keys))
        columns = np.argmax(out[:, 16, :, 0], axis=1)
        mirrored = np.abs(columns - 21) <= 4
        assert np.all((np.abs(columns - 10) <= 4) | mirrored)
        assert (mirrored.mean() == 0) if not flip else (0.35 < mirrored.mean() < 0.65)


def _uint8_batch(n=16, shape=(8, 8, 1)):
    images = np.random.default_rng(3).integers(0, 256, (n, *shape), np.uint8)
    return {
        "labeled_image": images,
        "labeled_shard": np.repeat(np.arange(2, dtype=np.uint32), n // 2),
        "labeled_position": np.tile(np.arange(n // 2, dtype=np.uint32), 2),
        "label": np.arange(n, dtype=np.int32) % 10,
        "labeled_index": np.arange(n, dtype=np.int32),
        "unlabeled_image": images[::-1].copy(),
        "unlabeled_shard": np.zeros(n, np.uint32),
        "unlabeled_position": np.arange(n, dtype=np.uint32) + 100,
        "unlabeled_index": np.arange(n, dtype=np.int32),
    }


VIEWS = functools.partial(
    da.views, seed=0, unlabeled_views="weak_strong", labeled_views=2, flip=True
)


def test_views_are_the_host_layout_and_depend_on_each_example_alone():
    batch = _uint8_batch()
    out = jax.jit(VIEWS)(batch)
    assert set(out) == {
        "labeled",
        "labeled_strong",
        "label",
        "labeled_index",
        "unlabeled_a",
        "unlabeled_b",
        "unlabeled_index",
    }
    for key in ("labeled", "labeled_strong", "unlabeled_a", "unlabeled_b"):
        assert out[key].shape == (16, 8, 8, 1) and out[key].dtype == jnp.float32
        assert -1.0 <= float(out[key].min()) and float(out[key].max()) <= 1.0
    np.testing.assert_array_equal(out["label"], batch["label"])
    # The weak and strong views of an image differ, and so do two images' views.
    assert np.abs(out["labeled"] - out["labeled_strong"]).mean() > 0.05
    # The same examples in another order: the same pixels each (another batch
    # size would compile again; the eight-device test below splits the batch).
    order = np.random.default_rng(0).permutation(16)
    part = jax.jit(VIEWS)({key: value[order] for key, value in batch.items()})
    for key in ("labeled", "labeled_strong", "unlabeled_a", "unlabeled_b"):
        np.testing.assert_array_equal(part[key], np.asarray(out[key])[order], err_msg=key)
    # Another stream position is another draw.
    moved = {**batch, "unlabeled_position": batch["unlabeled_position"] + 1}
    assert not np.array_equal(jax.jit(VIEWS)(moved)["unlabeled_b"], out["unlabeled_b"])


def test_views_make_strong_views_with_the_rounds_asked_for():
    assert inspect.signature(da.views).parameters["num_ops"].default == spec.DEFAULT_ROUNDS
    batch = _uint8_batch()
    out = jax.jit(functools.partial(VIEWS, num_ops=0))(batch)
    # Without ops a strong view is its weak view with a Cutout.
    keys = da.example_keys(0, UNLABELED, batch["unlabeled_shard"], batch["unlabeled_position"])
    view_keys = jax.vmap(lambda key: jax.random.fold_in(key, 1))(keys)  # The second view.
    strong = functools.partial(da.strong, flip=True, num_ops=0)
    images = jnp.asarray(batch["unlabeled_image"], jnp.float32)
    expected = jax.jit(jax.vmap(strong))(images, view_keys)
    np.testing.assert_array_equal(out["unlabeled_b"], expected / 127.5 - 1.0)


def test_the_train_step_passes_the_configured_rounds():
    config = load_config("tiny")
    config.data.augment_on = "device"
    config.data.rand_augment_ops = 1
    augment_views = train.device_augmentation(config, ip.sources.open_source("digits"))
    assert augment_views.func is da.views and augment_views.keywords["num_ops"] == 1


@pytest.mark.slow
def test_views_sharded_over_eight_devices_equal_one_device():
    batch = _uint8_batch()
    one = jax.jit(VIEWS)(batch)
    mesh = train.make_mesh()
    assert mesh.size == 8
    sharded = jax.device_put(batch, NamedSharding(mesh, P("data")))
    eight = jax.jit(VIEWS)(sharded)
    assert eight["unlabeled_b"].sharding.spec == P("data")  # Made where its shard lives.
    for key in one:
        np.testing.assert_array_equal(one[key], eight[key], err_msg=key)


def test_the_host_stream_yields_uint8_images_and_their_seeds_and_resumes():
    kw = {
        **DIGITS_STREAM,
        "process_count": 1,
        "process_index": 0,
        "num_shards": 1,
        "augment_on": "device",
    }
    stream = ip.make_train_iterator("digits", **kw)
    batches = [next(stream) for _ in range(4)]
    source = ip.sources.open_source("digits")
    images, _ = source.gather_train(batches[0]["unlabeled_index"])
    assert set(batches[0]) == {
        "label",
        "labeled_index",
        "labeled_image",
        "labeled_position",
        "labeled_shard",
        "unlabeled_index",
        "unlabeled_image",
        "unlabeled_position",
        "unlabeled_shard",
    }
    assert batches[0]["unlabeled_image"].dtype == np.uint8
    np.testing.assert_array_equal(batches[0]["unlabeled_image"], images)  # Not augmented.
    np.testing.assert_array_equal(batches[2]["unlabeled_position"], np.arange(32, 48))
    np.testing.assert_array_equal(batches[1]["labeled_position"], np.arange(8, 16))
    assert not batches[0]["labeled_shard"].any()
    resumed = ip.make_train_iterator("digits", start_step=2, **kw)
    for expected in batches[2:]:
        got = next(resumed)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


def test_auto_is_the_host_on_cpu_and_the_device_elsewhere_and_bad_values_are_refused():
    config = load_config("tiny")
    assert config.data.augment_on == "auto"
    assert config_validation.with_augment_place(config, "cpu").data.augment_on == "host"
    assert config_validation.with_augment_place(config, "gpu").data.augment_on == "device"
    assert config_validation.with_augment_place(config, "tpu").data.augment_on == "device"
    config.data.augment_on = "gpu"
    with pytest.raises(config_validation.ConfigError, match=r"data.augment_on='gpu' is not one"):
        config_validation.validate_config(config, num_devices=8)


@pytest.mark.slow
def test_device_augmentation_trains_and_resumes_bit_identically(shared_runs, tmp_path):
    # Uninterrupted: the parity smoke run's device run (tests/shared_runs.py).
    reference, _ = shared_runs.original("augment_parity")
    reference = reference / "device_seed_0"
    uninterrupted = json.loads((reference / "results.json").read_text())
    config = device_parity_config()
    stopped = run_until_step(config, tmp_path / "b", stop_after=3)
    assert stopped == {"status": "preempted", "step": 3}
    resumed = train.train_and_evaluate(config, str(tmp_path / "b"))
    assert resumed["history"] == uninterrupted["history"]
    assert resumed["accuracy"] == uninterrupted["accuracy"]
    states = [latest_state(path, config) for path in (reference, tmp_path / "b")]
    for a, b in zip(jax.tree.leaves(states[0]), jax.tree.leaves(states[1]), strict=True):
        np.testing.assert_array_equal(a, b)
