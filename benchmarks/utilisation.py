"""How much of the device the train step uses: its FLOP/s against a large matmul's.

Run: ``python benchmarks/utilisation.py [--workloads wrn28_2,small_cnn]``,
about 2 minutes on 2 CPU cores. The step's FLOPs come from XLA's cost
analysis of the compiled MUSCLE train step (padding taps of "SAME"
convolutions are not counted, so this slightly understates the work a dense
count would give); its time is the median of several steps. The reference is
an ``N x N`` float32 matmul (N = 2048 by default), timed in alternating
rounds with the steps, in the same process.
"""

import argparse
import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness
import jax
import jax.numpy as jnp


@dataclasses.dataclass
class Matmul:
    size: int
    name: str = "matmul"

    def __post_init__(self):
        key = jax.random.key(0)
        self._a = jax.random.normal(key, (self.size, self.size), jnp.float32)
        self._b = jax.random.normal(jax.random.fold_in(key, 1), (self.size, self.size))
        self._dot = jax.jit(jnp.dot)
        jax.block_until_ready(self._dot(self._a, self._b))
        self.flops = 2.0 * self.size**3

    def run(self, steps: int) -> list[float]:
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            jax.block_until_ready(self._dot(self._a, self._b))
            times.append(time.perf_counter() - start)
        return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="wrn28_2,small_cnn")
    parser.add_argument("--matmul_size", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch_scale", type=float, default=1.0, help="scales B (smoke tests)")
    parser.add_argument("--compute_dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()

    matmul = Matmul(args.matmul_size)
    steps = []
    for workload in args.workloads.split(","):
        model, side, channels, batch_size, mu = harness.WORKLOADS[workload]
        config = harness.step_config(
            model,
            batch_size=max(1, round(batch_size * args.batch_scale)),
            mu=mu,
            compute_dtype=args.compute_dtype,
        )
        steps.append(
            harness.trainer_step(workload, config, harness.synthetic_dataset(side, channels))
        )
    times = harness.alternate([matmul, *steps], rounds=args.rounds, steps=args.steps)
    peak = matmul.flops / harness.median(times[matmul.name])
    print(harness.device_line())
    print(f"{args.matmul_size}^2 float32 matmul: {peak / 1e9:,.1f} GFLOP/s")
    headline = []
    for step in steps:
        achieved = step.flops_per_step / harness.median(times[step.name])
        print(
            f"  {step.name}: {step.flops_per_step / 1e9:,.2f} GFLOP a step "
            f"({step.images_per_step} images), {harness.spread(times[step.name])}, "
            f"{achieved / 1e9:,.1f} GFLOP/s = {achieved / peak:.1%} of the matmul"
        )
        headline.append(f"{step.name} {achieved / peak:.2f}")
    print("train-step FLOP/s / matmul FLOP/s: " + ", ".join(headline))


if __name__ == "__main__":
    main()
