"""Parameters and forward FLOPs per image of WRN-28-2 and WRN-28-8 at 32x32.

Run: ``python benchmarks/model_flops_benchmark.py`` (about a minute on 2 CPU
cores, most of it compiling WRN-28-8). Nothing is initialised for real: the
model is built abstractly and XLA's cost analysis reads the compiled forward.

XLA counts a multiply-add as two FLOPs, and leaves out the taps of a "SAME"
convolution that fall on the zero padding (about 9% of a 32x32 WRN's work,
more on the 8x8 maps). Papers often count one FLOP per multiply-add. So the
script prints XLA's figure, its multiply-add reading (half), and a dense count
from the layer shapes with padding included, and names which reading matches
the docs/method.md anchors (~0.43 GFLOP for WRN-28-2, ~6.7 for WRN-28-8).
"""

import argparse

import jax
import jax.numpy as jnp
from flax import nnx

from muscle_jax import models

# name -> (width, num_classes, docs/method.md anchors: params, GFLOP per image).
ANCHORS = {
    "wrn28_2": (2, 10, 1.47e6, 0.43),
    "wrn28_8": (8, 100, 23.4e6, 6.7),
}


def dense_multiply_adds(depth: int, width: int, num_classes: int, size: int = 32) -> int:
    """Multiply-adds of the WRN forward from its layer shapes, padding taps included."""
    blocks_per_group = (depth - 4) // 6
    total = size * size * 9 * 3 * 16
    channels = 16
    for group, group_width in enumerate((16 * width, 32 * width, 64 * width)):
        side = size // 2**group
        for _ in range(blocks_per_group):
            total += side * side * 9 * (channels + group_width) * group_width
            if channels != group_width:
                total += side * side * channels * group_width
            channels = group_width
    return total + channels * num_classes


def forward_flops(name: str, num_classes: int, batch_size: int) -> tuple[int, float]:
    """Parameter count and XLA-counted forward FLOPs (eval mode) for one batch."""
    model = nnx.eval_shape(
        lambda: models.create_model(name, num_classes=num_classes, rngs=nnx.Rngs(0))
    )
    graphdef, state = nnx.split(model)
    params = sum(leaf.size for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))

    def forward(state, images):
        return nnx.merge(graphdef, state)(images, train=False).logits

    images = jax.ShapeDtypeStruct((batch_size, 32, 32, 3), jnp.float32)
    cost = jax.jit(forward).lower(state, images).compile().cost_analysis()
    # Older jax returned one dict per computation.
    if isinstance(cost, list | tuple):
        cost = cost[0]
    return params, float(cost["flops"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, batch {args.batch_size}")
    for name, (width, num_classes, anchor_params, anchor_gflop) in ANCHORS.items():
        params, flops = forward_flops(name, num_classes, args.batch_size)
        raw = flops / args.batch_size / 1e9
        macs = raw / 2
        dense = dense_multiply_adds(28, width, num_classes) / 1e9
        closer = "raw FLOPs" if abs(raw - anchor_gflop) < abs(macs - anchor_gflop) else "MACs"
        print(
            f"{name} ({num_classes} classes): {params:,} params "
            f"(anchor {anchor_params / 1e6:.2f} M)\n"
            f"  XLA: {raw:.3f} GFLOP/image raw = {macs:.3f} G multiply-adds/image\n"
            f"  dense count with padding taps: {dense:.3f} G multiply-adds = "
            f"{2 * dense:.3f} GFLOP/image\n"
            f"  anchor {anchor_gflop} GFLOP/image matches the {closer} reading "
            f"(2 FLOPs per multiply-add; XLA {raw / (2 * dense):.1%} of the dense count)"
        )


if __name__ == "__main__":
    main()
