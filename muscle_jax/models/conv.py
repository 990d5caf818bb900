"""2-D convolution whose kernel gradient is one matrix multiply (im2col) on the CPU.

Why: XLA:CPU runs a convolution's forward pass and input gradient well, but
its kernel gradient poorly. Measured on this project's 2-core CPU machines
(``benchmarks/README.md``), the kernel gradient of a 3x3 convolution took
3-10x its forward pass (e.g. 447 ms against 52 ms for 32->32 channels on 120
32x32 maps). PyTorch's CPU path computes it as a matrix multiply over the
input windows; so does this module: the windows of every kernel tap laid
side by side (``[N, Ho, Wo, kh*kw*C_in]``, "im2col"), contracted with the
output gradient over batch and positions, ``dW = patches^T @ dy``.

The forward pass and the input gradient are XLA's own, so outputs are
unchanged and the kernel gradient equals XLA's up to float rounding (tested
in ``tests/test_models_conv.py``). The cost is memory: the patches hold
``kh * kw`` copies of the layer's input. So they are bounded: where a layer's
patches would exceed a budget (`set_conv_patch_budget`, or the
``MUSCLE_JAX_CONV_PATCH_MB`` environment variable; 64 MiB by default), the
batch is split into chunks whose patches fit it and a loop accumulates the
chunks' kernel gradients; where one example's patches alone exceed it, that
layer takes XLA's kernel gradient.

`conv_general_dilated` is a drop-in for `jax.lax.conv_general_dilated` that
`flax.nnx.Conv` takes as its ``conv_general_dilated=`` argument. It uses the
im2col gradient only where it applies and helps: 2-D NHWC/HWIO convolutions
without dilation or groups, on the CPU backend, while `set_conv_backward`
(or the ``MUSCLE_JAX_CONV_BACKWARD`` environment variable) is ``"auto"``
(the default) or ``"matmul"``; ``"xla"`` turns it off everywhere.
Everything else goes to `jax.lax.conv_general_dilated` unchanged.
"""

import functools
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

CONV_BACKWARD_CHOICES = ("auto", "matmul", "xla")
# 64 MiB keeps chunks of ~50 of WRN-28-2's 32x32x32 maps: large enough matmuls that the
# chunked kernel gradient ran no slower than the whole batch's (one 240-image layer: 1.8 s
# in 5 chunks against 3.1 s at once; the train step at 120 images: 21.1 s against 24.3 s),
# and the step's peak memory fell to about XLA's gradient's (benchmarks/README.md, Memory).
DEFAULT_PATCH_BUDGET_MB = 64.0
_NHWC = ("NHWC", "HWIO", "NHWC")

_conv_backward = "auto"
_patch_budget_mb = DEFAULT_PATCH_BUDGET_MB


def set_conv_backward(choice: str) -> None:
    """Chooses the convolution backward pass for models traced from now on.

    ``"auto"``: the im2col kernel gradient on the CPU backend, XLA's elsewhere
    (GPU and TPU convolution gradients are fast). ``"matmul"``: always. ``"xla"``:
    never. Already compiled functions keep what they were traced with.
    """
    if choice not in CONV_BACKWARD_CHOICES:
        raise ValueError(
            f"conv backward {choice!r} is not one of {CONV_BACKWARD_CHOICES} "
            "(MUSCLE_JAX_CONV_BACKWARD or set_conv_backward)."
        )
    global _conv_backward
    _conv_backward = choice


def conv_backward() -> str:
    """The current choice of `set_conv_backward`."""
    return _conv_backward


def set_conv_patch_budget(megabytes: float) -> None:
    """Bounds one convolution's im2col patches, in MiB, for models traced from now on.

    A layer whose patches (``batch * Ho * Wo * kh * kw * C_in`` elements) would
    exceed ``megabytes`` MiB computes its kernel gradient in batch chunks that
    fit; one whose single example exceeds it takes XLA's kernel gradient.
    Smaller budgets save memory at the cost of more, smaller matmuls.
    """
    if (
        isinstance(megabytes, bool)
        or not isinstance(megabytes, int | float)
        or not megabytes > 0
        or megabytes == float("inf")
    ):
        raise ValueError(
            f"conv patch budget {megabytes!r} is not a positive number of MiB "
            "(MUSCLE_JAX_CONV_PATCH_MB or set_conv_patch_budget), e.g. 64."
        )
    global _patch_budget_mb
    _patch_budget_mb = float(megabytes)


def conv_patch_budget() -> float:
    """The current budget of `set_conv_patch_budget`, in MiB."""
    return _patch_budget_mb


def patch_chunks(num_examples: int, example_bytes: int, budget_bytes: float) -> int | None:
    """How many batch chunks keep one chunk's patches within ``budget_bytes``; None: none can.

    The smallest count that fits, or a divisor of ``num_examples`` up to twice
    that (equal chunks, so the batch needs no padding).
    """
    per_chunk = int(budget_bytes // example_bytes)
    if per_chunk < 1:
        return None
    fewest = -(-num_examples // per_chunk)
    for count in range(fewest, min(2 * fewest, num_examples) + 1):
        if num_examples % count == 0:
            return count
    return fewest


def _uses_matmul_backward() -> bool:
    if _conv_backward == "auto":
        return jax.default_backend() == "cpu"
    return _conv_backward == "matmul"


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision=None,
    preferred_element_type=None,
    out_sharding=None,
) -> jax.Array:
    """`jax.lax.conv_general_dilated` with the im2col kernel gradient where it applies."""
    lax_conv = functools.partial(
        lax.conv_general_dilated,
        lhs,
        rhs,
        window_strides,
        padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count,
        batch_group_count=batch_group_count,
        precision=precision,
        preferred_element_type=preferred_element_type,
    )
    plain = (
        lhs.ndim == 4
        and all(d == 1 for d in (lhs_dilation or (1, 1)))
        and all(d == 1 for d in (rhs_dilation or (1, 1)))
        and feature_group_count == 1
        and batch_group_count == 1
        and precision is None
        and preferred_element_type is None
        and out_sharding is None
        and dimension_numbers is not None
        and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
        == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
    )
    if not plain or not _uses_matmul_backward():
        if out_sharding is not None:
            return lax_conv(out_sharding=out_sharding)
        return lax_conv()
    strides = tuple(int(s) for s in window_strides)
    if isinstance(padding, str):
        pads = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
    else:
        pads = padding
    pads = tuple((int(lo), int(hi)) for lo, hi in pads)
    return _conv2d(lhs, rhs, strides, pads)


def _forward(x: jax.Array, w: jax.Array, strides, pads) -> jax.Array:
    return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv2d(x, w, strides, pads):
    return _forward(x, w, strides, pads)


def _conv2d_fwd(x, w, strides, pads):
    return _forward(x, w, strides, pads), (x, w)


def _tap_windows(x_padded: jax.Array, kernel_hw, strides, out_hw):
    """``(i, j, window)`` for each kernel tap: the input positions tap (i, j) reads.

    Taps in row-major (i, j) order, the order of an HWIO kernel's first two axes.
    """
    (kh, kw), (sh, sw), (ho, wo) = kernel_hw, strides, out_hw
    for i in range(kh):
        for j in range(kw):
            yield (
                i,
                j,
                x_padded[:, i : i + (ho - 1) * sh + 1 : sh, j : j + (wo - 1) * sw + 1 : sw, :],
            )


def _im2col_kernel_gradient(x, dy, kernel_hw, strides, pads):
    """``patches^T @ dy`` in float32, ``[kh * kw * C_in, C_out]``."""
    x_padded = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    # im2col: the input windows of every tap side by side, [N, Ho, Wo, kh*kw*C]
    # in its natural layout, then one matmul contracting batch and positions.
    # (One dot per tap on strided views was slower: XLA transposed each view.)
    # f32 accumulation, so bf16 runs sum thousands of products without losing bits.
    patches = jnp.concatenate(
        [window for _, _, window in _tap_windows(x_padded, kernel_hw, strides, dy.shape[1:3])],
        axis=-1,
    )
    return lax.dot_general(
        patches, dy, (((0, 1, 2), (0, 1, 2)), ((), ())), preferred_element_type=jnp.float32
    )


def _chunked_kernel_gradient(x, dy, kernel_hw, strides, pads, num_chunks):
    """`_im2col_kernel_gradient` summed over ``num_chunks`` batch chunks, one at a time.

    Chunk ``i`` holds examples ``i, i + num_chunks, ...``: the batch axis splits
    as ``[chunk size, num_chunks]`` and the loop's dynamic index falls on the
    second axis, so a batch sharded over devices (on the first) keeps each
    device's examples on that device where the chunk size is a multiple of the
    device count. A batch the chunks do not divide is padded with zero
    examples, which add nothing to the gradient. The loop is what bounds the
    memory: XLA keeps one iteration's patches alive at a time.
    """
    num_examples = x.shape[0]
    chunk = -(-num_examples // num_chunks)
    padding = chunk * num_chunks - num_examples
    if padding:
        x = jnp.pad(x, ((0, padding), (0, 0), (0, 0), (0, 0)))
        dy = jnp.pad(dy, ((0, padding), (0, 0), (0, 0), (0, 0)))
    x = x.reshape(chunk, num_chunks, *x.shape[1:])
    dy = dy.reshape(chunk, num_chunks, *dy.shape[1:])

    def add_chunk(index, dw):
        x_chunk = lax.dynamic_index_in_dim(x, index, axis=1, keepdims=False)
        dy_chunk = lax.dynamic_index_in_dim(dy, index, axis=1, keepdims=False)
        return dw + _im2col_kernel_gradient(x_chunk, dy_chunk, kernel_hw, strides, pads)

    kh, kw = kernel_hw
    dw = jnp.zeros((kh * kw * x.shape[-1], dy.shape[-1]), jnp.float32)
    return lax.fori_loop(0, num_chunks, add_chunk, dw)


def _conv2d_bwd(strides, pads, residuals, dy):
    x, w = residuals
    kh, kw, _, _ = w.shape
    forward = functools.partial(_forward, strides=strides, pads=pads)
    example_bytes = dy.shape[1] * dy.shape[2] * kh * kw * x.shape[-1] * x.dtype.itemsize
    num_chunks = patch_chunks(x.shape[0], example_bytes, _patch_budget_mb * 2**20)
    if num_chunks is None:
        # One example's patches exceed the budget: XLA's kernel gradient needs none.
        _, transpose = jax.vjp(forward, x, w)
        return transpose(dy)
    if num_chunks == 1:
        dw = _im2col_kernel_gradient(x, dy, (kh, kw), strides, pads)
    else:
        dw = _chunked_kernel_gradient(x, dy, (kh, kw), strides, pads, num_chunks)
    # XLA's own input gradient (a transposed convolution) was as fast as col2im
    # in the whole step, so it stays.
    _, transpose = jax.vjp(lambda x: forward(x, w), x)
    (dx,) = transpose(dy)
    return dx.astype(x.dtype), dw.reshape(w.shape).astype(w.dtype)


_conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def _budget_from_environment() -> float:
    value = os.environ.get("MUSCLE_JAX_CONV_PATCH_MB", "")
    if not value:
        return DEFAULT_PATCH_BUDGET_MB
    try:
        return float(value)
    except ValueError:
        raise ValueError(
            f"MUSCLE_JAX_CONV_PATCH_MB={value!r} is not a number of MiB: set it to a "
            f"positive number such as {DEFAULT_PATCH_BUDGET_MB:g}, or unset it."
        ) from None


# A bad value in the environment fails here, at import, before anything compiles.
set_conv_backward(os.environ.get("MUSCLE_JAX_CONV_BACKWARD", "auto"))
set_conv_patch_budget(_budget_from_environment())
