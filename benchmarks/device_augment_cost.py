"""What augmenting on the accelerator costs: the train step with and without it, and its rate.

Run: ``python benchmarks/device_augment_cost.py [--workload wrn28_2]``, about
2 minutes on 2 CPU cores. Three programs, in alternating rounds in one process:

- the trainer's MUSCLE step fed views the host already made (``augment_on=host``);
- the same step fed the host's uint8 images, making the views itself first
  (``augment_on=device``: weak and strong, RandAugment and Cutout, jitted in);
- the device augmentation alone (`device_augment.views` on that batch).

It prints the augmentation's share of the device step, and the augmentation's
images/s (all views) per core-second beside the host tf.data pipeline's
(`input_pipeline_benchmark.py`: 11,673 on this machine). On CPU the device
ops share the step's cores, so the share is what the host would save; on an
accelerator it is what the step pays instead of waiting on the host.
"""

import argparse
import functools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness
import jax

from muscle_jax import train

CORES = os.cpu_count() or 1


class _AugmentAlone:
    """`device_augment.views` on one uint8 batch: a contender for `harness.alternate`."""

    def __init__(self, augment, batch, images):
        self.name = "augmentation alone"
        self.images_per_step = images
        self._function = jax.jit(augment)
        self._batch = batch
        start = time.perf_counter()
        jax.block_until_ready(self._function(batch))
        self.compile_seconds = time.perf_counter() - start

    def run(self, steps: int) -> list[float]:
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            jax.block_until_ready(self._function(self._batch))
            times.append(time.perf_counter() - start)
        return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="wrn28_2", choices=sorted(harness.WORKLOADS))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="steps per contender per round")
    parser.add_argument("--batch_scale", type=float, default=1.0, help="scales B (8: protocol)")
    parser.add_argument("--compute_dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()

    model, side, channels, batch_size, mu = harness.WORKLOADS[args.workload]
    batch_size = max(1, round(batch_size * args.batch_scale))
    dataset = harness.synthetic_dataset(side, channels)
    config = functools.partial(
        harness.step_config, model, batch_size=batch_size, mu=mu, compute_dtype=args.compute_dtype
    )
    host_config, device_config = config(), config()
    host_config.data.augment_on = "host"
    device_config.data.augment_on = "device"
    host = harness.trainer_step("step, host views", host_config, dataset)
    device = harness.trainer_step("step + device augmentation", device_config, dataset)
    source = train.input_pipeline.sources.open_source(dataset)
    alone = _AugmentAlone(
        train.device_augmentation(device_config, source), device.batch, host.images_per_step
    )
    times = harness.alternate([host, device, alone], rounds=args.rounds, steps=args.steps)

    print(harness.device_line())
    print(
        f"{args.workload} ({args.compute_dtype}): {host.images_per_step} views a step "
        f"({batch_size} labeled, {batch_size * mu} unlabeled images), {side}x{side}x{channels}"
    )
    for step in (host, device, alone):
        print(f"  {step.name:28s} {harness.spread(times[step.name])}")
    host_s, device_s, alone_s = (harness.median(times[s.name]) for s in (host, device, alone))
    rate = host.images_per_step / alone_s
    print(
        f"  compile: step {host.compile_seconds:.1f} s, "
        f"with augmentation {device.compile_seconds:.1f} s"
    )
    print(
        f"  device augmentation alone: {rate:,.0f} views/s on {jax.device_count()} device(s)"
        + (f" = {rate / CORES:,.0f} a core-second" if jax.default_backend() == "cpu" else "")
    )
    print(f"  step with device augmentation / step with host views: {device_s / host_s:.3f}")
    share = (device_s - host_s) / device_s
    print(f"device augmentation / train step ({args.workload}): {share:.3f}")


if __name__ == "__main__":
    main()
