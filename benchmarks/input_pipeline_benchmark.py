"""Input pipeline throughput at CIFAR size with FixMatch's views (weak + strong).

Run: ``python benchmarks/input_pipeline_benchmark.py`` (about a minute on 2 CPU
cores). Synthetic uint8 32x32x3 images held in memory (no download), B = 64
labeled and mu * B = 448 unlabeled images per batch, each unlabeled image in a
weak and a strong (RandAugment + Cutout) view. After warm-up it times a few
hundred batches and prints batches/s and images/s, where "images" counts
every view produced (64 + 2 * 448 = 960 per batch), which is what a training
step consumes. Compare it with the step's demand: a step of t seconds needs
960 / t images/s. It also prints the rates per host core: images per
CPU-second the process used while timing (tf.data's threads included), so the
figure does not depend on how many cores this machine has;
`scaling_estimate.py` divides an accelerator's demand by it.
"""

import argparse
import os
import resource
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np

from muscle_jax import input_pipeline
from muscle_jax.data import graph

graph.skip_graph_optimizer()  # TensorFlow as `muscle_jax.main` sets it up.


def synthetic_cifar(num_train: int, num_test: int) -> input_pipeline.ArrayDataset:
    rng = np.random.default_rng(0)
    return input_pipeline.ArrayDataset(
        name="synthetic_cifar",
        train_images=rng.integers(0, 256, (num_train, 32, 32, 3), dtype=np.uint8),
        train_labels=rng.integers(0, 10, num_train).astype(np.int32),
        test_images=rng.integers(0, 256, (num_test, 32, 32, 3), dtype=np.uint8),
        test_labels=rng.integers(0, 10, num_test).astype(np.int32),
        num_classes=10,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_train", type=int, default=50_000)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--mu", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--batches", type=int, default=300)
    args = parser.parse_args()

    start = time.perf_counter()
    batches = input_pipeline.make_train_iterator(
        synthetic_cifar(args.num_train, 1000),
        data_dir=None,
        num_labeled=4000,
        seed=0,
        labeled_batch_size=args.batch_size,
        unlabeled_ratio=args.mu,
        unlabeled_views="weak_strong",
        process_index=0,
        process_count=1,
    )
    next(batches)
    print(f"set-up and first batch: {time.perf_counter() - start:.1f} s")
    for _ in range(args.warmup):
        next(batches)
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    for _ in range(args.batches):
        next(batches)
    seconds = time.perf_counter() - start
    cpu_seconds = _cpu_seconds() - cpu_start

    labeled = args.batch_size
    unlabeled = args.mu * args.batch_size
    per_batch = labeled + 2 * unlabeled
    rate = args.batches / seconds
    print(f"CPU cores: {os.cpu_count()}; {args.batches} batches in {seconds:.1f} s")
    print(f"batches/s: {rate:.2f}")
    print(f"labeled images/s: {rate * labeled:,.0f}")
    print(f"unlabeled images/s: {rate * unlabeled:,.0f} (each in 2 views)")
    print(f"images/s, all views ({per_batch} per batch): {rate * per_batch:,.0f}")
    per_core = args.batches / cpu_seconds
    print(f"CPU-seconds used: {cpu_seconds:.1f} ({cpu_seconds / seconds:.2f} cores busy)")
    print(f"strong-view images/s per host core: {per_core * unlabeled:,.0f}")
    print(f"images/s per host core, all views: {per_core * per_batch:,.0f}")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
