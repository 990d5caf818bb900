"""Train-step demand against input-pipeline supply, measured in one run.

Run: ``python benchmarks/train_step_benchmark.py [--model wrn28_2 --batch_size 64 --mu 7]``.
On this project's 2-core CPU machines the defaults are small (WRN-28-2 with
B = 8, mu = 7: 8 + 2 * 56 = 120 images a step) so the run takes a few
minutes; on a GPU or TPU pass the protocol's ``--batch_size 64``.

It times the jitted MUSCLE train step (FixMatch + MI, one forward pass over
labeled + weak + strong) on one fixed batch already on the device, then the
input pipeline producing the same batch shape from synthetic 32x32x3 data,
and prints both rates in images/s (every view counted) and their ratio. A
ratio above 1 means the pipeline keeps up with the step on this machine.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from input_pipeline_benchmark import synthetic_cifar

from muscle_jax import config_defaults, input_pipeline, train


def benchmark_config(args):
    config = config_defaults.base_config()
    config.dataset = "synthetic_cifar"
    config.model_name = args.model
    config.batch_size = args.batch_size
    config.unlabeled_ratio = args.mu
    config.total_steps = 1000
    config.compute_dtype = args.compute_dtype
    config_defaults.apply_method(config, "fixmatch", use_mi=True)
    return config


def time_train_step(config, dataset, steps):
    info = input_pipeline.dataset_info(dataset)
    graphdef, state, tx = train.create_train_state(config, info)
    mesh = train.make_mesh()
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    batch = next(train.make_train_batches(config, dataset=dataset, sharding=sharding))
    p_train, _ = train.compile_steps(graphdef, tx, config, mesh)
    state = jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    start = time.perf_counter()
    state, metrics = p_train(state, batch)
    jax.block_until_ready(metrics)
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = p_train(state, batch)
    jax.block_until_ready(metrics)
    return (time.perf_counter() - start) / steps, compile_seconds


def time_pipeline(config, dataset, batches):
    stream = train.make_train_batches(config, dataset=dataset)
    for _ in range(10):
        next(stream)
    start = time.perf_counter()
    for _ in range(batches):
        next(stream)
    return (time.perf_counter() - start) / batches


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="wrn28_2")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--mu", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--pipeline_batches", type=int, default=100)
    parser.add_argument("--compute_dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()

    config = benchmark_config(args)
    dataset = synthetic_cifar(10_000, 1_000)
    images_per_step = train.images_per_step(config)
    step_seconds, compile_seconds = time_train_step(config, dataset, args.steps)
    batch_seconds = time_pipeline(config, dataset, args.pipeline_batches)

    demand = images_per_step / step_seconds
    supply = images_per_step / batch_seconds
    device = jax.devices()[0]
    print(f"device: {jax.device_count()} x {device.platform} ({device.device_kind})")
    print(f"model {args.model}, {images_per_step} images per step, compute {args.compute_dtype}")
    print(f"train step: {step_seconds * 1000:.1f} ms/step (compile {compile_seconds:.1f} s)")
    print(f"step demand:     {demand:,.0f} images/s")
    print(f"pipeline supply: {supply:,.0f} images/s ({os.cpu_count()} CPU cores)")
    print(f"supply / demand: {supply / demand:.2f}")


if __name__ == "__main__":
    main()
