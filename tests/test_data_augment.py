"""Weak and strong augmentation: each op eagerly and inside tf.data.map, seeded statelessly."""

import numpy as np
import pytest
import tensorflow as tf

from muscle_jax.data import augment

SEED = tf.constant([3, 4], tf.int64)
OPS = augment.keras_ops(0.5)
OP_NAMES = tuple(OPS)


def _batch(shape, seed=0):
    return tf.constant(np.random.default_rng(seed).integers(0, 256, shape), tf.float32)


def _in_tf_data(fn, images):
    """fn applied inside a parallel tf.data.map (graph mode), twice."""
    ds = tf.data.Dataset.from_tensors(images).repeat(2)
    return [x.numpy() for x in ds.map(fn, num_parallel_calls=2)]


@pytest.mark.parametrize("size", [8, 28, 32, 84, 96])
def test_pad_is_four_at_32_and_proportional(size):
    assert augment.pad_for_size(size) == max(1, round(size / 8 + 1e-9))
    assert augment.pad_for_size(32) == 4 and augment.pad_for_size(8) == 1


def test_normalize_maps_0_255_to_minus_one_one():
    np.testing.assert_allclose(augment.normalize(tf.constant([0.0, 127.5, 255.0])), [-1, 0, 1])


@pytest.mark.parametrize("shape", [(4, 8, 8, 1), (4, 32, 32, 3)])
@pytest.mark.parametrize("flip", [False, True])
def test_weak_is_a_shifted_copy_and_deterministic(shape, flip):
    images = _batch(shape)
    out = augment.weak(images, SEED, flip=flip)
    assert out.shape == shape and out.dtype == tf.float32
    for graph_out in _in_tf_data(lambda x: augment.weak(x, SEED, flip=flip), images):
        np.testing.assert_array_equal(graph_out, out)
    pad = augment.pad_for_size(shape[1])
    for image, got in zip(images.numpy(), out.numpy()):
        padded = np.pad(image, [(pad, pad), (pad, pad), (0, 0)], mode="reflect")
        candidates = [
            padded[y : y + shape[1], x : x + shape[2]]
            for y in range(2 * pad + 1)
            for x in range(2 * pad + 1)
        ]
        if flip:
            candidates += [c[:, ::-1] for c in candidates]
        assert any(np.array_equal(got, c) for c in candidates)


def _bright_column_after_weak(flip: bool) -> np.ndarray:
    # One bright column at x = 10 in 20 copies: a crop moves it by at most the
    # pad (4), a flip moves it to the right half.
    images = np.zeros((20, 32, 32, 1), np.float32)
    images[:, :, 10] = 255
    out = augment.weak(tf.constant(images), SEED, flip=flip).numpy()
    return np.argmax(out[:, 16, :, 0], axis=1)


def test_weak_without_flip_never_mirrors():
    columns = _bright_column_after_weak(flip=False)
    assert np.all((columns >= 6) & (columns <= 14)) and len(set(columns)) > 1


def test_weak_with_flip_sometimes_mirrors():
    mirrored = _bright_column_after_weak(flip=True) > 16
    assert 0 < mirrored.sum() < 20


def test_cutout_greys_one_square_per_image():
    images = tf.zeros([16, 32, 32, 3])
    out = augment.cutout(images, SEED).numpy()
    grey = out[..., 0] == 127.5
    area = grey.reshape(16, -1).sum(1)
    assert np.all(area <= 16 * 16) and np.all(area > 0)
    assert len(set(map(bytes, grey.reshape(16, -1)))) > 1  # squares differ between images


@pytest.mark.parametrize("op", OP_NAMES)
@pytest.mark.parametrize("shape", [(4, 8, 8, 1), (4, 32, 32, 3)])
def test_each_randaugment_op_eagerly_and_in_tf_data(op, shape):
    rand_augment = augment.RandAugment(num_ops=1, op_names=(op,))
    images = _batch(shape)
    out = rand_augment(images, SEED)
    assert out.shape == shape and out.dtype == tf.float32
    assert np.all(np.isfinite(out)) and out.numpy().min() >= 0 and out.numpy().max() <= 255
    for graph_out in _in_tf_data(lambda x: rand_augment(x, SEED), images):
        np.testing.assert_allclose(graph_out, out, atol=1e-4)


@pytest.mark.parametrize("shape", [(16, 8, 8, 1), (16, 32, 32, 3)])
def test_strong_deterministic_per_seed_and_varied_per_image(shape):
    rand_augment = augment.RandAugment()
    image = _batch(shape[1:])
    images = tf.repeat(image[None], shape[0], axis=0)  # one image, 16 times
    out = augment.strong(images, SEED, rand_augment, flip=True).numpy()
    assert out.shape == shape and out.min() >= 0 and out.max() <= 255
    other = augment.strong(images, tf.constant([3, 5], tf.int64), rand_augment, flip=True).numpy()
    assert not np.array_equal(out, other)
    # Each copy of the image gets its own ops, magnitudes and Cutout.
    assert len({o.tobytes() for o in out}) == shape[0]
    for graph_out in _in_tf_data(
        lambda x: augment.strong(x, SEED, rand_augment, flip=True), images
    ):
        np.testing.assert_allclose(graph_out, out, atol=1e-4)


def test_grey_images_stay_one_channel():
    out = augment.RandAugment()(_batch((8, 8, 8, 1)), SEED)
    assert out.shape == (8, 8, 8, 1)


def test_equalize_is_the_keras_layer_applied_to_each_image_alone():
    # The layer on a batch pools one histogram over all its images; RandAugment's
    # Equalize (PIL's) equalises each image, as `augment.equalize` does.
    images = _batch((4, 16, 16, 3), seed=1) * 0.5 + 40
    layer = OPS["equalize"]
    got = augment.equalize(images).numpy()
    for image, equalized in zip(images, got):
        expected = layer.transform_images(image[None], None).numpy()[0]
        np.testing.assert_array_equal(equalized, expected)
    pooled = layer.transform_images(images, None).numpy()
    assert not np.array_equal(pooled, got)


def test_unknown_op_rejected():
    with pytest.raises(ValueError, match="Unknown RandAugment ops"):
        augment.RandAugment(op_names=("warp",))


def test_the_shared_instance_takes_every_image_shape_as_a_fresh_one():
    # One RandAugment serves every pipeline of a process (its graph traced once per
    # shape); images of another size after the first must keep their static shape.
    shared = augment.shared_rand_augment()
    assert augment.shared_rand_augment() is shared
    for shape in [(4, 8, 8, 1), (6, 32, 32, 3)]:  # Another size, channel count and batch.
        images = _batch(shape)
        out = augment.strong(images, SEED, shared, flip=True)
        fresh = augment.strong(images, SEED, augment.RandAugment(), flip=True)
        assert out.shape == shape
        np.testing.assert_array_equal(out.numpy(), fresh.numpy())
