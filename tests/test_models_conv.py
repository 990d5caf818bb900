"""The convolution with the im2col kernel gradient: same values and gradients as XLA's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from muscle_jax import models
from muscle_jax.models import conv

NHWC = ("NHWC", "HWIO", "NHWC")


@pytest.fixture
def matmul_backward():
    """Forces the im2col gradient (the tests run on CPU, where "auto" picks it too)."""
    before = conv.conv_backward()
    conv.set_conv_backward("matmul")
    yield
    conv.set_conv_backward(before)


def _loss(conv_fn, strides, padding):
    def loss(x, w):
        dimension_numbers = lax.conv_dimension_numbers(x.shape, w.shape, NHWC)
        y = conv_fn(x, w, strides, padding, dimension_numbers=dimension_numbers)
        # A loss whose gradient dy differs at every position and channel.
        return jnp.sum(jnp.sin(y) * jnp.arange(y.size, dtype=y.dtype).reshape(y.shape) / y.size)

    return loss


CASES = [
    # (input NHWC, kernel HWIO, strides, padding)
    ((3, 8, 8, 3), (3, 3, 3, 5), (1, 1), "SAME"),
    ((3, 9, 7, 4), (3, 3, 4, 6), (2, 2), "SAME"),
    ((2, 9, 7, 16), (1, 1, 16, 8), (2, 2), "SAME"),
    ((2, 10, 11, 12), (3, 3, 12, 6), (2, 2), "VALID"),
    ((2, 10, 11, 5), (3, 2, 5, 7), (2, 3), ((1, 2), (0, 1))),
    ((2, 6, 6, 1), (3, 3, 1, 4), (1, 1), ((1, 1), (1, 1))),
]


@pytest.mark.parametrize("x_shape, w_shape, strides, padding", CASES)
def test_values_and_gradients_equal_xla(matmul_backward, x_shape, w_shape, strides, padding):
    x = jax.random.normal(jax.random.key(0), x_shape)
    w = jax.random.normal(jax.random.key(1), w_shape)
    ours = _loss(conv.conv_general_dilated, strides, padding)
    xla = _loss(lax.conv_general_dilated, strides, padding)
    value, grads = jax.jit(jax.value_and_grad(ours, argnums=(0, 1)))(x, w)
    expected_value, expected_grads = jax.jit(jax.value_and_grad(xla, argnums=(0, 1)))(x, w)
    np.testing.assert_allclose(value, expected_value, rtol=1e-6)
    for got, want in zip(grads, expected_grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_bfloat16_kernel_gradient_accumulates_in_float32(matmul_backward):
    x = jax.random.normal(jax.random.key(0), (16, 12, 12, 8)).astype(jnp.bfloat16)
    w = jax.random.normal(jax.random.key(1), (3, 3, 8, 8)).astype(jnp.bfloat16)
    grad_w = jax.jit(jax.grad(_loss(conv.conv_general_dilated, (1, 1), "SAME"), argnums=1))(x, w)
    reference = jax.grad(_loss(lax.conv_general_dilated, (1, 1), "SAME"), argnums=1)(
        x.astype(jnp.float32), w.astype(jnp.float32)
    )
    assert grad_w.dtype == jnp.bfloat16
    # bf16 keeps 8 bits of mantissa: within a few of its ulps of the f32 gradient.
    np.testing.assert_allclose(
        grad_w.astype(jnp.float32), reference, rtol=3e-2, atol=3e-2 * np.abs(reference).max()
    )


def test_sharded_batch_gives_the_single_device_gradient(matmul_backward):
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    x = jax.random.normal(jax.random.key(0), (16, 8, 8, 4))
    w = jax.random.normal(jax.random.key(1), (3, 3, 4, 6))
    grad = jax.grad(_loss(conv.conv_general_dilated, (2, 2), "SAME"), argnums=(0, 1))
    single = jax.jit(grad)(x, w)
    x_sharded = jax.device_put(x, NamedSharding(mesh, P("data")))
    sharded = jax.jit(grad)(x_sharded, jax.device_put(w, NamedSharding(mesh, P())))
    # Equal up to the order of the cross-device sum.
    for got, want in zip(sharded, single, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_model_gradients_equal_with_either_backward():
    model = models.create_model("wrn28_2", num_classes=10, rngs=nnx.Rngs(0))
    graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    params, batch_stats = params.to_pure_dict(), batch_stats.to_pure_dict()
    images = jax.random.normal(jax.random.key(2), (4, 16, 16, 3))

    def loss(params, batch_stats):
        out = nnx.merge(graphdef, params, batch_stats)(images, train=True).logits
        return jnp.sum(out**2)

    before = conv.conv_backward()
    try:
        conv.set_conv_backward("matmul")
        ours = jax.jit(jax.grad(loss))(params, batch_stats)
        conv.set_conv_backward("xla")
        xla = jax.jit(jax.grad(loss))(params, batch_stats)
    finally:
        conv.set_conv_backward(before)
    for got, want in zip(jax.tree.leaves(ours), jax.tree.leaves(xla), strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-5 * np.abs(want).max() + 1e-7)


def test_plain_lax_path_for_what_it_does_not_cover(matmul_backward):
    # Dilated kernels are not covered: the call must match lax exactly (it is lax).
    x = jax.random.normal(jax.random.key(0), (2, 9, 9, 3))
    w = jax.random.normal(jax.random.key(1), (3, 3, 3, 4))
    dimension_numbers = lax.conv_dimension_numbers(x.shape, w.shape, NHWC)
    kwargs = dict(rhs_dilation=(2, 2), dimension_numbers=dimension_numbers)
    ours = conv.conv_general_dilated(x, w, (1, 1), "SAME", **kwargs)
    np.testing.assert_array_equal(ours, lax.conv_general_dilated(x, w, (1, 1), "SAME", **kwargs))


def test_unknown_choice_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="'fast' is not one of"):
        conv.set_conv_backward("fast")
