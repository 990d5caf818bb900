"""Is an im2col matmul faster than XLA:CPU's own convolution, forward and input gradient?

Run: ``python benchmarks/conv_lowering.py``, about 1 minute on 2 CPU cores.
For each 3x3 convolution shape of WRN-28-2 (at the 120 images of the
vs_pytorch step) it times, jitted, XLA's `conv_general_dilated` against the
same convolution as one matmul over the input windows (the im2col that
`muscle_jax.models.conv` uses for the kernel gradient), for the forward pass
and for the input gradient (autodiff of each). A ratio above 1 means im2col
is faster. The outputs are checked equal first.
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from muscle_jax.models import conv

# (side, in channels, out channels, stride): WRN-28-2's 3x3 convolutions.
SHAPES = [
    (32, 16, 32, 1),
    (32, 32, 32, 1),
    (32, 32, 64, 2),
    (16, 64, 64, 1),
    (16, 64, 128, 2),
    (8, 128, 128, 1),
]
_NHWC = ("NHWC", "HWIO", "NHWC")


def xla_conv(x, w, stride):
    return lax.conv_general_dilated(
        x, w, (stride, stride), ((1, 1), (1, 1)), dimension_numbers=_NHWC
    )


def im2col_conv(x, w, stride):
    """The 3x3 'SAME' convolution as one matmul over the windows of its 9 taps."""
    batch, side, _, channels = x.shape
    out = (side + 2 - 3) // stride + 1
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    windows = [
        window for _, _, window in conv._tap_windows(padded, (3, 3), (stride,) * 2, (out, out))
    ]
    patches = jnp.concatenate(windows, axis=-1).reshape(-1, 9 * channels)
    return (patches @ w.reshape(9 * channels, -1)).reshape(batch, out, out, -1)


def median_seconds(function, *args, repeats: int) -> float:
    jax.block_until_ready(function(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(function(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--shapes", type=int, default=len(SHAPES), help="the first N shapes")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    print(harness.device_line())
    forward_ratios, gradient_ratios = [], []
    for side, c_in, c_out, stride in SHAPES[: args.shapes]:
        x = jnp.asarray(rng.standard_normal((args.images, side, side, c_in)), jnp.float32)
        w = jnp.asarray(rng.standard_normal((3, 3, c_in, c_out)) * 0.1, jnp.float32)
        timed = {}
        for name, function in (("xla", xla_conv), ("im2col", im2col_conv)):
            forward = jax.jit(lambda x, w, f=function, s=stride: f(x, w, s))
            gradient = jax.jit(jax.grad(lambda x, w, f=function, s=stride: (f(x, w, s) ** 2).sum()))
            timed[name] = (forward, gradient)
        np.testing.assert_allclose(timed["xla"][0](x, w), timed["im2col"][0](x, w), atol=2e-3)
        seconds = {
            (name, part): median_seconds(timed[name][part], x, w, repeats=args.repeats)
            for name in timed
            for part in (0, 1)
        }
        flop = 2 * args.images * (side // stride) ** 2 * 9 * c_in * c_out
        forward_ratios.append(seconds["xla", 0] / seconds["im2col", 0])
        gradient_ratios.append(seconds["xla", 1] / seconds["im2col", 1])
        print(
            f"  {side}x{side} {c_in}->{c_out} stride {stride}: forward XLA "
            f"{seconds['xla', 0] * 1e3:.1f} ms ({flop / seconds['xla', 0] / 1e9:.0f} GFLOP/s), "
            f"im2col {seconds['im2col', 0] * 1e3:.1f} ms ({forward_ratios[-1]:.2f}x); "
            f"input gradient (with the forward) XLA {seconds['xla', 1] * 1e3:.1f} ms, "
            f"im2col {seconds['im2col', 1] * 1e3:.1f} ms ({gradient_ratios[-1]:.2f}x)"
        )
    forward, gradient = statistics.median(forward_ratios), statistics.median(gradient_ratios)
    print(
        f"XLA time / im2col time, median over shapes: forward {forward:.2f}, "
        f"input gradient {gradient:.2f}"
    )


if __name__ == "__main__":
    main()
