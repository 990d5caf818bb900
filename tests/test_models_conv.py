"""The convolution with the im2col kernel gradient: same values and gradients as XLA's."""

import contextlib

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


@contextlib.contextmanager
def patch_budget(megabytes):
    """The im2col patch budget for what is traced inside."""
    before = conv.conv_patch_budget()
    conv.set_conv_patch_budget(megabytes)
    try:
        yield
    finally:
        conv.set_conv_patch_budget(before)


def _example_mib(x_shape, w_shape, strides, padding):
    """MiB of one example's float32 patches: ``Ho * Wo * kh * kw * C_in`` elements."""
    dimension_numbers = lax.conv_dimension_numbers(x_shape, w_shape, NHWC)
    out = jax.eval_shape(
        lambda x, w: lax.conv_general_dilated(
            x, w, strides, padding, dimension_numbers=dimension_numbers
        ),
        jax.ShapeDtypeStruct(x_shape, jnp.float32),
        jax.ShapeDtypeStruct(w_shape, jnp.float32),
    )
    kh, kw, cin, _ = w_shape
    return out.shape[1] * out.shape[2] * kh * kw * cin * 4 / 2**20


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


# 0.2 MiB: WRN-28-2's 16x16 layers take XLA's kernel gradient, its 8x8 and 4x4 ones
# run in chunks of 1 and 2 of the 4 images (0.28, 0.14, 0.07 MiB an image).
@pytest.mark.parametrize("budget", [conv.DEFAULT_PATCH_BUDGET_MB, 0.2])
def test_model_gradients_equal_with_either_backward(budget):
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
        with patch_budget(budget):
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


def test_patch_chunks_fit_the_budget_and_prefer_equal_chunks():
    assert conv.patch_chunks(240, 10, 10_000) == 1  # All at once.
    assert conv.patch_chunks(240, 10, 1_000) == 3  # 100 a chunk fit: 3 chunks of 80.
    assert conv.patch_chunks(7, 10, 30) == 3  # 3 a chunk; no divisor of 7 in 3-6: padded.
    assert conv.patch_chunks(8, 10, 30) == 4  # 3 a chunk; 4 chunks of 2 need no padding.
    assert conv.patch_chunks(8, 10, 9) is None  # One example alone is over the budget.


# (cases index, batch, examples a chunk fit): divisible, not divisible (padded), one a chunk.
CHUNKED = [(0, 6, 2), (1, 7, 3), (3, 5, 1), (4, 7, 2), (2, 3, 2)]


@pytest.mark.parametrize("case, batch, per_chunk", CHUNKED)
def test_chunked_kernel_gradient_equals_unchunked_and_xla(matmul_backward, case, batch, per_chunk):
    x_shape, w_shape, strides, padding = CASES[case]
    x_shape = (batch, *x_shape[1:])
    x = jax.random.normal(jax.random.key(0), x_shape)
    w = jax.random.normal(jax.random.key(1), w_shape)
    grad = jax.grad(_loss(conv.conv_general_dilated, strides, padding), argnums=(0, 1))
    chunks = conv.patch_chunks(batch, 1, per_chunk + 0.5)
    assert chunks > 1  # The case does chunk.
    with patch_budget((per_chunk + 0.5) * _example_mib(x_shape, w_shape, strides, padding)):
        chunked = jax.jit(grad)(x, w)
    with patch_budget(1e9):
        unchunked = jax.jit(grad)(x, w)
    xla = jax.jit(jax.grad(_loss(lax.conv_general_dilated, strides, padding), argnums=(0, 1)))(x, w)
    np.testing.assert_array_equal(chunked[0], unchunked[0])  # dx is XLA's either way.
    for reference in (unchunked[1], xla[1]):
        np.testing.assert_allclose(
            chunked[1], reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max()
        )


def test_over_budget_example_takes_xla_kernel_gradient(matmul_backward):
    x_shape, w_shape, strides, padding = CASES[0]
    x = jax.random.normal(jax.random.key(0), x_shape)
    w = jax.random.normal(jax.random.key(1), w_shape)
    grad = jax.grad(_loss(conv.conv_general_dilated, strides, padding), argnums=(0, 1))
    with patch_budget(0.5 * _example_mib(x_shape, w_shape, strides, padding)):
        hlo = jax.jit(grad).lower(x, w).as_text()
        ours = jax.jit(grad)(x, w)
    xla = jax.jit(jax.grad(_loss(lax.conv_general_dilated, strides, padding), argnums=(0, 1)))(x, w)
    assert "concatenate" not in hlo and "while" not in hlo  # No patches, no chunk loop.
    for got, want in zip(ours, xla, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * np.abs(want).max())


def test_chunked_bfloat16_kernel_gradient_accumulates_in_float32(matmul_backward):
    x = jax.random.normal(jax.random.key(0), (16, 12, 12, 8)).astype(jnp.bfloat16)
    w = jax.random.normal(jax.random.key(1), (3, 3, 8, 8)).astype(jnp.bfloat16)
    loss = _loss(conv.conv_general_dilated, (1, 1), "SAME")
    # bf16 patches are half of float32's: 3 examples a chunk, 6 chunks.
    with patch_budget(1.5 * _example_mib(x.shape, w.shape, (1, 1), "SAME")):
        grad_w = jax.jit(jax.grad(loss, argnums=1))(x, w)
    reference = jax.grad(_loss(lax.conv_general_dilated, (1, 1), "SAME"), argnums=1)(
        x.astype(jnp.float32), w.astype(jnp.float32)
    )
    assert grad_w.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        grad_w.astype(jnp.float32), reference, rtol=3e-2, atol=3e-2 * np.abs(reference).max()
    )


def test_sharded_batch_gives_the_single_device_gradient_in_chunks(matmul_backward):
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    x = jax.random.normal(jax.random.key(0), (16, 8, 8, 4))
    w = jax.random.normal(jax.random.key(1), (3, 3, 4, 6))
    grad = jax.grad(_loss(conv.conv_general_dilated, (2, 2), "SAME"), argnums=(0, 1))
    with patch_budget(4.5 * _example_mib(x.shape, w.shape, (2, 2), "SAME")):  # 4 chunks of 4.
        single = jax.jit(grad)(x, w)
        x_sharded = jax.device_put(x, NamedSharding(mesh, P("data")))
        sharded = jax.jit(grad)(x_sharded, jax.device_put(w, NamedSharding(mesh, P())))
    with patch_budget(1e9):
        unchunked = jax.jit(grad)(x, w)
    for got, want in [*zip(sharded, single, strict=True), (single[1], unchunked[1])]:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("budget", [0, -1.0, float("nan"), float("inf"), "64", True])
def test_bad_patch_budget_is_refused_with_the_fix(budget):
    with pytest.raises(ValueError, match="is not a positive number of MiB"):
        conv.set_conv_patch_budget(budget)


def test_patch_budget_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("MUSCLE_JAX_CONV_PATCH_MB", "16")
    assert conv._budget_from_environment() == 16.0
    monkeypatch.delenv("MUSCLE_JAX_CONV_PATCH_MB")
    assert conv._budget_from_environment() == conv.DEFAULT_PATCH_BUDGET_MB
    monkeypatch.setenv("MUSCLE_JAX_CONV_PATCH_MB", "lots")
    with pytest.raises(ValueError, match=r"MUSCLE_JAX_CONV_PATCH_MB='lots' is not a number"):
        conv._budget_from_environment()
