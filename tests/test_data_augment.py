"""Weak and strong augmentation: RandAugment's ops and Cutout against PIL, draws, determinism."""

import numpy as np
import pytest
import tensorflow as tf

from muscle_jax import config_defaults, input_pipeline
from muscle_jax.data import augment
from muscle_jax.data import rand_augment_spec as spec

from . import pil_reference as pil

SEED = tf.constant([3, 4], tf.int64)
# Square sizes the reference meets, and a non-square one so that width and
# height (translate, rotate's centre, Cutout) cannot be mixed up unnoticed.
SHAPES = [(8, 8), (16, 16), (32, 32), (12, 20)]


def _batch(shape, seed=0):
    return tf.constant(np.random.default_rng(seed).integers(0, 256, shape), tf.float32)


def _pil_images(count: int, shape: tuple[int, int], channels: int, seed: int) -> np.ndarray:
    """`pil_reference.random_images`, cropped to ``shape`` (height, width)."""
    rng = np.random.default_rng(seed)
    images = pil.random_images(rng, count, max(shape), channels)
    return images[:, : shape[0], : shape[1]]


def _magnitude_grid(op: spec.Op, rng: np.random.Generator) -> np.ndarray:
    """float32 magnitudes over the op's range: 11 evenly spaced (both ends) and 13 at random."""
    uniforms = np.concatenate([np.linspace(0.0, 1.0, 11), rng.uniform(0.0, 1.0, 13)])
    return spec.magnitude(op, uniforms).astype(np.float32)


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


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("op", spec.OPS, ids=spec.OP_NAMES)
def test_each_op_is_pils_exactly(op, shape, channels):
    # Every op reproduces PIL's arithmetic, so the pixels are equal, not close:
    # each image of the batch gets its own magnitude from the grid.
    rng = np.random.default_rng(spec.OP_NAMES.index(op.name))
    magnitudes = _magnitude_grid(op, rng)
    images = _pil_images(len(magnitudes), shape, channels, seed=int(rng.integers(1 << 30)))
    got = augment.apply_op(op.name, tf.constant(images, tf.float32), magnitudes).numpy()
    expected = [pil.apply_op(op.name, image, float(v)) for image, v in zip(images, magnitudes)]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.stack(expected).astype(np.float32))


def test_the_ops_change_the_images_they_should():
    # Guards the comparison above against an oracle and host that agree on doing nothing.
    images = _pil_images(8, (32, 32), 3, seed=5)
    unchanged = {"identity"}
    for op in spec.OPS:
        out = augment.apply_op(
            op.name, tf.constant(images, tf.float32), np.full(8, spec.magnitude(op, 0.3))
        )
        assert np.array_equal(out.numpy(), images) == (op.name in unchanged), op.name


def _one_magnitude_per_image(op: spec.Op, count: int) -> np.ndarray:
    return spec.magnitude(op, np.linspace(0.1, 0.9, count, dtype=np.float32))


def test_each_op_inside_tf_data_gives_the_eager_pixels():
    images = _batch((6, 16, 16, 3), seed=1)

    def all_ops(batch):
        return [
            augment.apply_op(op.name, batch, _one_magnitude_per_image(op, 6)) for op in spec.OPS
        ]

    graph = next(iter(tf.data.Dataset.from_tensors(images).map(all_ops)))
    for op, eager_out, graph_out in zip(spec.OPS, all_ops(images), graph):
        np.testing.assert_array_equal(graph_out, eager_out, err_msg=op.name)


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_each_op_treats_equal_channels_as_the_grey_image(channels):
    # Any channel count works, and an image whose channels are all one grey
    # image comes out as that grey image's result in every channel (grey = the
    # channel mean, or PIL's luma for RGB, is that image again).
    grey = _pil_images(6, (16, 16), 1, seed=channels).astype(np.float32)
    for op in spec.OPS:
        magnitudes = _one_magnitude_per_image(op, 6)
        expected = augment.apply_op(op.name, grey, magnitudes).numpy()
        got = augment.apply_op(op.name, np.repeat(grey, channels, axis=-1), magnitudes).numpy()
        np.testing.assert_array_equal(got, np.repeat(expected, channels, axis=-1), op.name)


@pytest.mark.parametrize("op", spec.OP_NAMES)
def test_each_op_takes_no_images(op):
    # A group of the batch that no image drew.
    assert augment.apply_op(op, tf.zeros([0, 16, 16, 3]), tf.zeros([0])).shape == (0, 16, 16, 3)


def test_unknown_op_rejected():
    with pytest.raises(ValueError, match="Unknown RandAugment op"):
        augment.apply_op("warp", tf.zeros([1, 8, 8, 1]), [0.5])


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_cutout_is_the_reference_cutout(shape, channels):
    width = shape[1]
    sides = [0.0, 0.4, 1.0, 2.5, width / 4, width / 2 - 0.01]
    corners = [0.0, 0.3, 0.5, 0.999]
    draws = np.array([(s, x, y) for s in sides for x in corners for y in corners], np.float32)
    images = _pil_images(len(draws), shape, channels, seed=width)
    got = augment.cutout(tf.constant(images, tf.float32), *draws.T).numpy()
    expected = [pil.cutout(image, *map(float, draw)) for image, draw in zip(images, draws)]
    np.testing.assert_array_equal(got, np.stack(expected).astype(np.float32))


def _chi_square_of_uniform_counts(counts: np.ndarray) -> float:
    expected = counts.sum() / len(counts)
    return float(((counts - expected) ** 2 / expected).sum())


def test_the_drawn_ops_are_uniform_over_the_fourteen_with_uniform_magnitudes():
    op_indices, uniforms = augment.rand_augment_draws(SEED, 14_000, 3)
    op_indices, uniforms = op_indices.numpy(), uniforms.numpy()
    assert op_indices.shape == uniforms.shape == (14_000, 3)
    # 13 degrees of freedom: chi-square exceeds 40 with probability ~1e-4.
    assert _chi_square_of_uniform_counts(np.bincount(op_indices.ravel(), minlength=14)) < 40
    assert uniforms.min() >= 0 and uniforms.max() < 1
    assert _chi_square_of_uniform_counts(np.histogram(uniforms, 20, (0, 1))[0]) < 50
    # The rounds of one image are independent draws, not one op repeated.
    assert np.mean(op_indices[:, 0] == op_indices[:, 1]) < 0.1
    for index, op in enumerate(spec.OPS):
        magnitudes = spec.magnitude(op, uniforms[op_indices == index])
        assert op.low <= magnitudes.min() < op.low + 0.01 * (op.high - op.low)
        assert op.high - 0.01 * (op.high - op.low) < magnitudes.max() <= op.high


def test_cutout_draws_are_uniform():
    sides, x_uniform, y_uniform = (d.numpy() for d in augment.cutout_draws(SEED, 20_000, 32))
    assert sides.min() >= 0 and sides.max() < 16  # U(0, 0.5) * width.
    for draws, high in ((sides, 16), (x_uniform, 1), (y_uniform, 1)):
        assert _chi_square_of_uniform_counts(np.histogram(draws, 20, (0, high))[0]) < 50
    assert abs(np.corrcoef(sides, x_uniform)[0, 1]) < 0.03


def _reference_rand_augment(image, op_indices, uniforms):
    for index, uniform in zip(op_indices, uniforms):
        op = spec.OPS[index]
        image = pil.apply_op(op.name, image, float(spec.magnitude(op, uniform)))
    return image


# The process-wide instances, as the pipeline uses them: each test below calls them
# on the same few shapes, so that each graph is traced once (tracing is most of
# these tests' time).
THREE_ROUNDS = augment.shared_rand_augment()
ONE_ROUND = augment.shared_rand_augment(1)
BATCH = 40


@pytest.mark.parametrize("channels", [1, 3])
def test_rand_augment_applies_the_ops_it_draws_as_the_reference_does(channels):
    assert THREE_ROUNDS.num_ops == spec.DEFAULT_ROUNDS == 3
    images = _pil_images(BATCH, (32, 32), channels, seed=channels)
    got = THREE_ROUNDS(tf.constant(images, tf.float32), SEED).numpy()
    op_indices, uniforms = (d.numpy() for d in augment.rand_augment_draws(SEED, BATCH, 3))
    expected = [_reference_rand_augment(*args) for args in zip(images, op_indices, uniforms)]
    np.testing.assert_array_equal(got, np.stack(expected).astype(np.float32))


@pytest.mark.parametrize("shape", [(24, 8, 8, 1), (1, 16, 16, 3)])
def test_strong_is_weak_then_rand_augment_then_cutout(shape):
    # Traced inside tf.data, as the pipeline runs it; a batch of one leaves
    # 13 of the 14 op groups empty.
    images = _batch(shape)
    got = _in_tf_data(lambda x: augment.strong(x, SEED, ONE_ROUND, flip=True), images)
    np.testing.assert_array_equal(got[0], got[1])
    weak_seed, augment_seed, cutout_seed = augment.split_seed(SEED, 3)
    weak = augment.weak(images, weak_seed, flip=True).numpy().astype(np.uint8)
    op_indices, uniforms = augment.rand_augment_draws(augment_seed, shape[0], 1)
    cutouts = augment.cutout_draws(cutout_seed, shape[0], shape[2])
    for i, image in enumerate(weak):
        image = _reference_rand_augment(image, op_indices[i].numpy(), uniforms[i].numpy())
        image = pil.cutout(image, *(float(d[i]) for d in cutouts))
        np.testing.assert_array_equal(got[0][i], image.astype(np.float32))


@pytest.mark.parametrize("channels", [1, 3])
def test_strong_deterministic_per_seed_and_varied_per_image(channels):
    image = _batch((32, 32, channels))
    images = tf.repeat(image[None], BATCH, axis=0)  # One image, 40 times.
    out = augment.strong(images, SEED, THREE_ROUNDS, flip=True).numpy()
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 255
    np.testing.assert_array_equal(augment.strong(images, SEED, THREE_ROUNDS, flip=True), out)
    other = augment.strong(images, tf.constant([3, 5], tf.int64), THREE_ROUNDS, flip=True)
    assert not np.array_equal(out, other.numpy())
    # Each copy of the image gets its own ops, magnitudes and Cutout.
    assert len({o.tobytes() for o in out}) == BATCH


def test_zero_rounds_is_the_identity_and_negative_rounds_are_refused():
    # One and three rounds are each checked against the reference above.
    images = _batch((BATCH, 32, 32, 3))
    np.testing.assert_array_equal(augment.RandAugment(num_ops=0)(images, SEED), images)
    with pytest.raises(ValueError, match="num_ops"):
        augment.RandAugment(num_ops=-1)


def test_the_shared_instance_takes_every_image_shape_as_a_fresh_one():
    # One RandAugment per number of rounds serves every pipeline of a process (its
    # graph traced once per shape); images of another size after the first must
    # keep their static shape.
    assert augment.shared_rand_augment(1) is ONE_ROUND and ONE_ROUND.num_ops == 1
    for shape in [(BATCH, 32, 32, 3), (4, 8, 8, 1)]:  # Another size, channel count and batch.
        images = _batch(shape)
        out = augment.strong(images, SEED, ONE_ROUND, flip=True)
        fresh = augment.strong(images, SEED, augment.RandAugment(num_ops=1), flip=True)
        assert out.shape == shape
        np.testing.assert_array_equal(out.numpy(), fresh.numpy())


class _StopAtRandAugment(Exception):
    """Raised where the pipeline asks for its RandAugment: nothing further is built."""


def test_the_data_config_sets_the_pipelines_rounds(monkeypatch):
    # data.rand_augment_ops reaches `shared_rand_augment` through `training` and
    # `make_train_iterator` (the streams take the instance it returns).
    asked = []

    def record(num_ops=spec.DEFAULT_ROUNDS):
        asked.append(num_ops)
        raise _StopAtRandAugment

    monkeypatch.setattr(augment, "shared_rand_augment", record)
    data_config = config_defaults.base_config().data
    data_config.update(num_classes=4, num_labeled=8, batch_size=4, unlabeled_ratio=1)
    rng = np.random.default_rng(0)
    source = input_pipeline.ArrayDataset(
        name="tiny",
        train_images=rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8),
        train_labels=(np.arange(40) % 4).astype(np.int32),
        test_images=rng.integers(0, 256, (8, 8, 8, 3), dtype=np.uint8),
        test_labels=(np.arange(8) % 4).astype(np.int32),
        num_classes=4,
    )
    for rounds in (2, spec.DEFAULT_ROUNDS):
        data_config.rand_augment_ops = rounds
        with pytest.raises(_StopAtRandAugment):
            input_pipeline.training(
                data_config, seed=0, unlabeled_views="weak_strong", source=source
            )
    assert asked == [2, spec.DEFAULT_ROUNDS]
