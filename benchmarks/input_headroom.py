"""Input-pipeline headroom: images/s the pipeline delivers / images/s the step consumes.

Run: ``python benchmarks/input_headroom.py``, about 3 minutes on 2 CPU cores.
For the digits, MNIST and CIFAR-10 configs as users run them
(``configs/{digits,mnist,cifar10}.py``: their models, batch sizes, mu and
views), it reads each dataset in its real format: digits from the copy that
scikit-learn ships, MNIST and CIFAR-10 as real TFDS files (TFRecord shards
of PNG images, written by `synthetic_tfds.prepare` with random content, as
the tests do, because nothing can be downloaded here). Supply: batches
drawn from the training stream after a warm-up, on the host. Demand: the
compiled train step on one batch. Both are measured in this process, one
after the other, each with the whole machine; during training they share it.
Goal: >= 3.
"""

import argparse
import os
import sys
import tempfile
import time

import ml_collections

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness
import synthetic_tfds

from muscle_jax import train


def pipeline_seconds_per_batch(config, batches: int, warmup: int) -> float:
    stream = train.make_train_batches(config)
    for _ in range(warmup):
        next(stream)
    start = time.perf_counter()
    for _ in range(batches):
        next(stream)
    return (time.perf_counter() - start) / batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="digits,mnist,cifar10")
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch_scale", type=float, default=1.0, help="scales B (smoke tests)")
    parser.add_argument("--num_train", type=int, default=5_000, help="synthetic TFDS train size")
    parser.add_argument(
        "--model",
        default=None,
        help="replace every config's model with this one (smoke tests: small_cnn compiles in "
        "seconds where WRN-28-2 takes a minute); the headroom is then not the config's",
    )
    args = parser.parse_args()

    print(harness.device_line())
    headline = []
    with tempfile.TemporaryDirectory() as data_dir:
        for name in args.configs.split(","):
            config = harness.load_config(name)
            config.data.augment_on = "host"  # The host pipeline is what this measures.
            config.data.batch_size = max(1, round(config.data.batch_size * args.batch_scale))
            if args.model:
                config.model.name = args.model
                config.model.kwargs = ml_collections.ConfigDict()
            if name != "digits":
                synthetic_tfds.prepare(
                    config.data.name, data_dir, num_train=args.num_train, num_test=200
                )
                config.data.data_dir = data_dir
                config.data.num_labeled = min(config.data.num_labeled, args.num_train // 2)
            supply_seconds = pipeline_seconds_per_batch(config, args.batches, warmup=5)
            step = harness.trainer_step(name, config, config.data.name)
            demand_seconds = harness.median(step.run(args.steps))
            images = step.images_per_step
            ratio = demand_seconds / supply_seconds
            print(
                f"  {name}: {config.model.name}, {images} images a step; pipeline "
                f"{images / supply_seconds:,.0f} img/s, step {images / demand_seconds:,.0f} img/s,"
                f" headroom {ratio:.1f}"
            )
            headline.append(f"{name} {ratio:.1f}")
    print("pipeline images/s / step images/s: " + ", ".join(headline))


if __name__ == "__main__":
    main()
