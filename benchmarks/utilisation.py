"""How much of the device the train step uses: its FLOP/s against a large matmul's.

Run: ``python benchmarks/utilisation.py [--workloads wrn28_2,small_cnn]``,
about 2 minutes on 2 CPU cores. The step's FLOPs come from XLA's cost
analysis of the compiled MUSCLE train step (padding taps of "SAME"
convolutions are not counted, so this slightly understates the work a dense
count would give); its time is the median of several steps. The reference is
an ``N x N`` matmul in the step's compute dtype (N = 2048 by default), timed
in alternating rounds with the steps, in the same process. On an accelerator
whose dense peak is in `NOMINAL_PEAK_TFLOPS`, it also prints the model-FLOPs
utilisation (MFU): the step's FLOP/s over that peak.
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

# Dense peak TFLOP/s by device kind (substring of `device_kind`) and compute dtype, from
# the vendors' data sheets (NVIDIA's float32 figure is TF32, what XLA's default
# precision uses for float32 matmuls and convolutions there).
NOMINAL_PEAK_TFLOPS = {
    "H100": {"bfloat16": 989.0, "float32": 494.7},
    "H200": {"bfloat16": 989.0, "float32": 494.7},
    "A100": {"bfloat16": 312.0, "float32": 156.0},
    "TPU v4": {"bfloat16": 275.0},
    "TPU v5 lite": {"bfloat16": 197.0},
}


def nominal_peak(device_kind: str, dtype: str) -> float | None:
    """The data-sheet peak FLOP/s of one device, or None where it is not in the table."""
    for kind, peaks in NOMINAL_PEAK_TFLOPS.items():
        if kind in device_kind and dtype in peaks:
            return peaks[dtype] * 1e12
    return None


@dataclasses.dataclass
class Matmul:
    size: int
    dtype: str = "float32"
    name: str = "matmul"

    def __post_init__(self):
        key = jax.random.key(0)
        shape = (self.size, self.size)
        self._a = jax.random.normal(key, shape, self.dtype)
        self._b = jax.random.normal(jax.random.fold_in(key, 1), shape, self.dtype)
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

    matmul = Matmul(args.matmul_size, args.compute_dtype)
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
    print(f"{args.matmul_size}^2 {args.compute_dtype} matmul: {peak / 1e9:,.1f} GFLOP/s")
    nominal = nominal_peak(jax.devices()[0].device_kind, args.compute_dtype)
    headline = []
    for step in steps:
        achieved = step.flops_per_step / harness.median(times[step.name])
        mfu = "" if nominal is None else f", MFU {achieved / nominal:.1%} of the data-sheet peak"
        print(
            f"  {step.name} ({args.compute_dtype}): {step.flops_per_step / 1e9:,.2f} GFLOP a step "
            f"({step.images_per_step} images), {harness.spread(times[step.name])}, "
            f"{achieved / 1e9:,.1f} GFLOP/s = {achieved / peak:.1%} of the matmul{mfu}"
        )
        headline.append(f"{step.name} {achieved / peak:.2f}")
    print("train-step FLOP/s / matmul FLOP/s: " + ", ".join(headline))


if __name__ == "__main__":
    main()
