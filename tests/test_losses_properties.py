"""Property-based tests of the losses over random shapes and values.

Values and seeds are drawn at random; the shapes from a few fixed ones that
span the range (batch sizes 1..256, class counts 2..100), because every
distinct shape compiles again: each example runs one module-level jitted
function that computes everything it checks, compiled once per shape.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from muscle_jax import losses

# (batch, classes): one example, a single pair of classes, odd sizes, the largest.
shapes = st.sampled_from([(1, 2), (7, 10), (33, 57), (256, 100)])
scales = st.sampled_from([0.1, 1.0, 5.0, 50.0])
PROFILE = settings(max_examples=20, deadline=None)


def two_views(seed, batch, num_classes, scale):
    key_a, key_b = jax.random.split(jax.random.key(seed))
    return (
        scale * jax.random.normal(key_a, (batch, num_classes)),
        scale * jax.random.normal(key_b, (batch, num_classes)),
    )


def _mi_of_logits(logits_a, logits_b):
    return losses.mutual_information(jax.nn.softmax(logits_a), jax.nn.softmax(logits_b))


@jax.jit
def _mi_checks(logits_a, logits_b):
    value, grads = jax.value_and_grad(_mi_of_logits, argnums=(0, 1))(logits_a, logits_b)
    return value, grads, _mi_of_logits(logits_b, logits_a)


@PROFILE
@given(shape=shapes, scale=scales, seed=st.integers(0, 2**16))
def test_mutual_information_bounds_symmetry_and_finite_gradients(shape, scale, seed):
    batch, num_classes = shape
    value, grads, swapped = _mi_checks(*two_views(seed, batch, num_classes, scale))
    assert np.isfinite(value)
    assert -1e-5 <= float(value) <= math.log(num_classes) + 1e-5
    assert all(np.all(np.isfinite(g)) for g in grads)
    np.testing.assert_allclose(swapped, value, rtol=1e-4, atol=1e-6)


_mutual_information = jax.jit(losses.mutual_information)


@PROFILE
@given(shape=shapes, seed=st.integers(0, 2**16))
def test_mutual_information_of_identical_hard_views_is_cluster_entropy(shape, seed):
    batch, num_classes = shape
    ids = np.random.default_rng(seed).integers(0, num_classes, batch)
    one_hot = jax.nn.one_hot(ids, num_classes)
    sizes = np.bincount(ids, minlength=num_classes) / batch
    entropy = -sum(p * math.log(p) for p in sizes if p > 0)
    mi = _mutual_information(one_hot, one_hot)
    assert abs(float(mi) - entropy) < 1e-4


@functools.partial(jax.jit, static_argnums=2)
def _muscle_value_and_grad(params, labels, consistency):
    def total(params):
        labeled, view_a, view_b = params
        return losses.muscle_loss(labeled, labels, view_a, view_b, consistency=consistency)[0]

    return jax.value_and_grad(total)(params)


@PROFILE
@given(
    shape=shapes,
    scale=scales,
    seed=st.integers(0, 2**16),
    consistency=st.sampled_from(["fixmatch", "mse", "none"]),
)
def test_muscle_loss_finite_value_and_gradients(shape, scale, seed, consistency):
    batch, num_classes = shape
    logits_a, logits_b = two_views(seed, batch, num_classes, scale)
    labeled = logits_a[: max(1, batch // 4)]
    labels = jnp.arange(labeled.shape[0]) % num_classes
    value, grads = _muscle_value_and_grad((labeled, logits_a, logits_b), labels, consistency)
    assert np.isfinite(value)
    assert all(np.all(np.isfinite(g)) for g in grads)
