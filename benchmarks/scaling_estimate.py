"""Estimated time and cost of the CIFAR-100 WRN-28-8 protocol on a few TPU slices and GPU sets.

Run: ``python benchmarks/scaling_estimate.py [--utilisation=0.3]`` (instant: nothing is
compiled). Every figure is an estimate, computed, not measured:

  training FLOP = 3 x forward FLOP per 32x32 image x 960 images a step x 2^20 steps

(a backward pass costs about twice the forward), the forward FLOPs counted from
WRN-28-8's layer shapes (2 FLOP per multiply-add, as the docs/method.md anchor
~6.7 GFLOP), at a stated fraction of each accelerator's peak bfloat16 rate and
at stated on-demand prices. Narrow convolutions at 32x32 rarely reach half of
peak, and RandAugment on the hosts can be the limit; measure images/s on your
own hardware (the progress line prints it) before trusting a row. The README's
"Scaling out" table is this script's output (tests/test_readme.py checks it).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from model_flops_benchmark import dense_multiply_adds

STEPS = 2**20
IMAGES_PER_STEP = 64 * (1 + 2 * 7)  # 64 labeled + two views of 448 unlabeled.
DEFAULT_UTILISATION = 0.3

# name -> (chips or GPUs, peak bf16 dense TFLOP/s each, assumed USD per chip- or GPU-hour).
HARDWARE = {
    "TPU v4-8 (4 chips)": (4, 275.0, 3.22),
    "TPU v4-32 (16 chips)": (16, 275.0, 3.22),
    "TPU v5e-8 (8 chips)": (8, 197.0, 1.20),
    "1x A100": (1, 312.0, 3.70),
    "8x A100": (8, 312.0, 3.70),
    "8x H100 (SXM)": (8, 989.0, 11.00),
}


def training_flop() -> float:
    forward = 2 * dense_multiply_adds(depth=28, width=8, num_classes=100)
    return 3.0 * forward * IMAGES_PER_STEP * STEPS


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utilisation", type=float, default=DEFAULT_UTILISATION)
    print(table(parser.parse_args().utilisation))


if __name__ == "__main__":
    main()
