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
``kh * kw`` copies of the layer's input for the length of the backward op.

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
_NHWC = ("NHWC", "HWIO", "NHWC")

_conv_backward = "auto"


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


def _conv2d_bwd(strides, pads, residuals, dy):
    x, w = residuals
    kh, kw, _, _ = w.shape
    x_padded = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    # im2col: the input windows of every tap side by side, [N, Ho, Wo, kh*kw*C]
    # in its natural layout, then one matmul contracting batch and positions.
    # (One dot per tap on strided views was slower: XLA transposed each view.)
    # f32 accumulation, so bf16 runs sum thousands of products without losing bits.
    patches = jnp.concatenate(
        [window for _, _, window in _tap_windows(x_padded, (kh, kw), strides, dy.shape[1:3])],
        axis=-1,
    )
    dw = lax.dot_general(
        patches, dy, (((0, 1, 2), (0, 1, 2)), ((), ())), preferred_element_type=jnp.float32
    ).reshape(w.shape)
    # XLA's own input gradient (a transposed convolution) was as fast as col2im
    # in the whole step, so it stays.
    _, transpose = jax.vjp(lambda x: _forward(x, w, strides, pads), x)
    (dx,) = transpose(dy)
    return dx.astype(x.dtype), dw.astype(w.dtype)


_conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)

# A bad value in the environment fails here, at import, before anything compiles.
set_conv_backward(os.environ.get("MUSCLE_JAX_CONV_BACKWARD", "auto"))
