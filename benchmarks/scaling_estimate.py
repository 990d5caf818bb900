"""Estimated time and cost of the CIFAR-100 WRN-28-8 protocol on a few TPU slices and GPU sets.

Run: ``python benchmarks/scaling_estimate.py [--utilisation=0.3]`` (instant: nothing is
compiled). Every figure is an estimate, computed, not measured:

  training FLOP = 3 x forward FLOP per 32x32 image x 960 images a step x 2^20 steps

(a backward pass costs about twice the forward), the forward FLOPs counted from
WRN-28-8's layer shapes (2 FLOP per multiply-add, as the docs/method.md anchor
~6.7 GFLOP), at a stated fraction of each accelerator's peak bfloat16 rate and
at stated on-demand prices. Narrow convolutions at 32x32 rarely reach half of
peak, and RandAugment on the hosts can be the limit; measure images/s on your
own hardware (the progress line prints it) before trusting a row. docs/scaling.md's
table is this script's output (tests/test_readme.py checks it).

The second table is what the step would consume at that rate, in images a
second counting every view (64 labeled + 2 x 448 unlabeled = 960 a step), and
how many host cores the tf.data pipeline needs to deliver them, at
``--host_images_per_core`` (all views per CPU-second, measured by
``input_pipeline_benchmark.py``; the default is its figure on this 2-core
machine, docs/performance.md).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from model_flops_benchmark import dense_multiply_adds

STEPS = 2**20
IMAGES_PER_STEP = 64 * (1 + 2 * 7)  # 64 labeled + two views of 448 unlabeled.
DEFAULT_UTILISATION = 0.3
# All-view images per CPU-second of the host pipeline (RandAugment + Cutout, CIFAR size):
# input_pipeline_benchmark.py on this 2-core machine (docs/performance.md).
# Measured 2026-12-02: 11,673 (20,644 images/s with 1.77 cores busy).
DEFAULT_HOST_IMAGES_PER_CORE = 11_700

# name -> (chips or GPUs, peak bf16 dense TFLOP/s each, assumed USD per chip- or GPU-hour).
HARDWARE = {
    "TPU v4-8 (4 chips)": (4, 275.0, 3.22),
    "TPU v4-32 (16 chips)": (16, 275.0, 3.22),
    "TPU v5e-8 (8 chips)": (8, 197.0, 1.20),
    "1x A100": (1, 312.0, 3.70),
    "8x A100": (8, 312.0, 3.70),
    "8x H100 (SXM)": (8, 989.0, 11.00),
}


def training_flop_per_image(width: int = 8, num_classes: int = 100) -> float:
    """3 x the forward FLOP of a WRN-28 at 32x32 (2 FLOP a multiply-add)."""
    return 3.0 * 2 * dense_multiply_adds(depth=28, width=width, num_classes=num_classes)


def training_flop() -> float:
    return training_flop_per_image() * IMAGES_PER_STEP * STEPS


def table(utilisation: float = DEFAULT_UTILISATION) -> str:
    total = training_flop()
    lines = [
        f"Estimated: {total:.2e} FLOP at {utilisation:.0%} of peak (bfloat16).",
        "",
        "| hardware | peak PFLOP/s | estimated time | estimated cost (USD) |",
        "|---|---|---|---|",
    ]
    for name, (units, tflops, price) in HARDWARE.items():
        peak = units * tflops * 1e12
        hours = total / (peak * utilisation) / 3600
        lines.append(
            f"| {name} | {peak / 1e15:.2f} | ~{hours:.{1 if hours < 10 else 0}f} h "
            f"| ~{hours * units * price:,.0f} "
            f"(at ${price:.2f}/unit-hour) |"
        )
    return "\n".join(lines)


# The protocols' models: name -> (width, classes).
DEMAND_MODELS = {"WRN-28-8 (CIFAR-100)": (8, 100), "WRN-28-2 (CIFAR-10)": (2, 10)}


def images_per_second(tflops: float, utilisation: float, width: int, num_classes: int) -> float:
    """All-view images a second one chip or GPU trains at ``utilisation`` of its peak."""
    return tflops * 1e12 * utilisation / training_flop_per_image(width, num_classes)


def demand_table(
    utilisation: float = DEFAULT_UTILISATION,
    host_images_per_core: float = DEFAULT_HOST_IMAGES_PER_CORE,
) -> str:
    lines = [
        f"Host input needed at {utilisation:.0%} of peak, with the host pipeline at "
        f"{host_images_per_core:,.0f} images a core-second (all views).",
        "",
        "| hardware | model | images/s a chip or GPU consumes | host cores a chip or GPU "
        "needs | host cores in all |",
        "|---|---|---|---|---|",
    ]
    for name, (units, tflops, _) in HARDWARE.items():
        for model, (width, num_classes) in DEMAND_MODELS.items():
            rate = images_per_second(tflops, utilisation, width, num_classes)
            cores = rate / host_images_per_core
            lines.append(f"| {name} | {model} | {rate:,.0f} | {cores:.1f} | {cores * units:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utilisation", type=float, default=DEFAULT_UTILISATION)
    parser.add_argument("--host_images_per_core", type=float, default=DEFAULT_HOST_IMAGES_PER_CORE)
    args = parser.parse_args()
    print(table(args.utilisation))
    print()
    print(demand_table(args.utilisation, args.host_images_per_core))


if __name__ == "__main__":
    main()
