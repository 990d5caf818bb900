"""Augmentation on the accelerator (data.augment_on="device"): each op against the host's,
the draws, per-example seeding, sharding, the host's uint8 stream, and a bit-exact resume."""

import functools
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

from .helpers import DIGITS_STREAM, latest_state, load_config
from .shared_runs import device_parity_config, run_until_step

OPS = augment.keras_ops(0.5)  # The host's layers (TensorFlow backend).
DEVICE_OPS = dict(da._jax_layers(0.5))


def _images(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.float32)


@pytest.mark.parametrize("name", [name for name in OPS if name != "equalize"])
def test_each_op_equals_the_host_op_for_the_same_draw(name):
    # The host layer draws the transformation (TF stateless seeds); the device
    # layer applies that same transformation with Keras's JAX backend, jitted.
    images = _images((4, 16, 16, 3))
    host = OPS[name]
    params = host.get_random_transformation(
        tf.constant(images),
        training=True,
        seed=augment._StatelessSeedStream(tf.constant([5, 6], tf.int64)),
    )
    expected = np.clip(host.transform_images(tf.constant(images), params).numpy(), 0, 255)
    as_jax = jax.tree.map(lambda t: jnp.asarray(t.numpy()) if hasattr(t, "numpy") else t, params)
    device = jax.jit(lambda x, p: DEVICE_OPS[name].transform_images(x, p, training=True))
    got = np.clip(np.asarray(device(jnp.asarray(images), as_jax)), 0, 255)
    np.testing.assert_allclose(got, expected, atol=1e-3)
    assert np.abs(expected - images).max() > 1  # The drawn transformation changes the images.


def test_equalize_equals_the_host_op():
    # Within one grey level: the float rounding of the lookup table differs.
    images = _images((3, 16, 16, 3), seed=1) * 0.5 + 40  # Narrow histograms, to stretch.
    images = np.concatenate([images, np.full((1, 16, 16, 3), 7.0, np.float32)])  # One bin.
    expected = augment.equalize(tf.constant(images)).numpy()
    got = np.asarray(jax.jit(jax.vmap(da.equalize))(jnp.asarray(images)))
    assert np.abs(got - expected).max() <= 1.0 and np.mean(got != expected) < 0.05
    np.testing.assert_array_equal(got[3], images[3])  # A single bin is left as it is.
    assert np.ptp(got[0]) > np.ptp(images[0]) + 100


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


def test_cutout_greys_one_square_of_half_the_side_as_numpy_does():
    image = _images((32, 32, 3))
    got = np.asarray(da.cutout_at(jnp.asarray(image), jnp.array([10.0, 30.0])))
    rows, cols = np.meshgrid(np.arange(32) + 0.5, np.arange(32) + 0.5, indexing="ij")
    inside = (np.abs(rows - 10) < 8) & (np.abs(cols - 30) < 8)  # Clipped at the border.
    np.testing.assert_array_equal(got, np.where(inside[..., None], 127.5, image))
    assert inside.sum() == 16 * 10


def test_ops_are_drawn_uniformly_and_independently_per_round():
    keys = jax.random.split(jax.random.key(1), 4400)
    choices = np.asarray(jax.vmap(da.op_choices)(keys))  # [N, 2]
    num = len(da.op_names())
    assert num == 11 and da.op_names() == tuple(OPS)
    expected = len(keys) / num
    for round_ in range(2):
        counts = np.bincount(choices[:, round_], minlength=num)
        assert ((counts - expected) ** 2 / expected).sum() < 35  # chi2(10): p ~ 1e-4
    pairs = np.bincount(choices[:, 0] * num + choices[:, 1], minlength=num * num)
    assert pairs.min() > 10  # Every ordered pair of ops occurs.


def test_rand_augment_applies_the_two_ops_it_draws_in_order():
    image = jnp.asarray(_images((16, 16, 3), seed=2))
    for seed in range(4):
        key = jax.random.key(seed)
        out = jax.jit(da.rand_augment)(image, key)
        expected = image
        for round_key, choice in zip(jax.random.split(key, 2), da.op_choices(key)):
            _, op_key = jax.random.split(round_key)  # The magnitude's key of that round.
            expected = da._apply_op(DEVICE_OPS[da.op_names()[int(choice)]], expected, op_key)
        np.testing.assert_allclose(out, expected, atol=1e-3)


def test_magnitudes_vary_per_image_within_the_host_range():
    # Brightness: Keras draws a factor in [-0.5, 0.5] a image and adds factor * 255.
    image = jnp.full((8, 8, 3), 128.0)
    keys = jax.random.split(jax.random.key(2), 300)
    shift = jax.vmap(lambda k: da._apply_op(DEVICE_OPS["brightness"], image, k).mean() - 128)(keys)
    shift = np.asarray(shift)
    assert shift.min() >= -0.5 * 255 - 1e-3 and shift.max() <= 127 + 1e-3  # Clipped at 255.
    assert shift.min() < -100 and np.mean(shift > 0) > 0.35 and len(np.unique(shift)) > 250


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
    # The same examples in another order and batch size: the same pixels each, to
    # float rounding (XLA vectorises a batch of 4 and one of 16 differently).
    order = np.array([5, 1, 12, 7])
    part = jax.jit(VIEWS)({key: value[order] for key, value in batch.items()})
    for key in ("labeled", "labeled_strong", "unlabeled_a", "unlabeled_b"):
        np.testing.assert_allclose(part[key], np.asarray(out[key])[order], atol=1e-5, err_msg=key)
    # Another stream position is another draw.
    moved = {**batch, "unlabeled_position": batch["unlabeled_position"] + 1}
    assert not np.array_equal(jax.jit(VIEWS)(moved)["unlabeled_b"], out["unlabeled_b"])


@pytest.mark.slow
def test_views_sharded_over_eight_devices_equal_one_device():
    batch = _uint8_batch()
    one = jax.jit(VIEWS)(batch)
    mesh = train.make_mesh()
    assert mesh.size == 8
    sharded = jax.device_put(batch, NamedSharding(mesh, P("data")))
    eight = jax.jit(VIEWS)(sharded)
    assert eight["unlabeled_b"].sharding.spec == P("data")  # Made where its shard lives.
    for key in one:  # To float rounding, as in the test above.
        np.testing.assert_allclose(one[key], eight[key], atol=1e-5, err_msg=key)


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
