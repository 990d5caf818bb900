"""A whole training run against its bare step, and the seconds to the first step.

Run: ``python benchmarks/end_to_end.py``, about 5 minutes on 2 CPU cores.

1. Runs ``python -m muscle_jax.main --config=configs/digits.py`` (the README's
   quick start, shortened to ``--steps``) in a fresh workdir, with its
   evaluations, logging and checkpoints, and reads the timing it writes to
   results.json: seconds to the first step (start-up and compilation) and
   the seconds of the loop after it. Then times the same config's train step
   alone, in this process, on one batch already on the device.
   Ratio: loop images/s / step images/s (goal: >= 0.9).
2. Compiles the train step of the small CNN (MNIST size), WRN-28-2 and
   WRN-28-8 (CIFAR size) and reports the seconds to lower and compile each.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness

COMPILE_MODELS = {
    "small_cnn": ("small_cnn", 28, 1, 64, 7),
    "wrn28_2": ("wrn28_2", 32, 3, 64, 7),
    "wrn28_8": ("wrn28_8", 32, 3, 64, 7),
}


def whole_run(steps: int) -> tuple[dict, float]:
    """Results of a digits run of ``steps`` steps, and the wall seconds of the process."""
    with tempfile.TemporaryDirectory() as workdir:
        command = [
            sys.executable,
            "-m",
            "muscle_jax.main",
            "--config=configs/digits.py",
            f"--config.total_steps={steps}",
            f"--workdir={workdir}",
        ]
        start = time.perf_counter()
        subprocess.run(command, cwd=harness.ROOT, check=True, capture_output=True)
        seconds = time.perf_counter() - start
        with open(os.path.join(workdir, "results.json")) as f:
            return json.load(f), seconds


def compile_seconds(model: str, side: int, channels: int, batch_size: int, mu: int) -> float:
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from muscle_jax import input_pipeline, train

    config = harness.step_config(model, batch_size=batch_size, mu=mu)
    dataset = harness.synthetic_dataset(side, channels, num_train=600, num_test=10)
    graphdef, state, tx = train.create_train_state(config, input_pipeline.dataset_info(dataset))
    mesh = train.make_mesh()
    batch = jax.device_put(
        next(train.make_train_batches(config, source=dataset)), NamedSharding(mesh, P("data"))
    )
    p_train, _ = train.compile_steps(graphdef, tx, config, mesh)
    start = time.perf_counter()
    p_train.lower(state, batch).compile()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600, help="steps of the digits run")
    parser.add_argument("--compile_models", default="small_cnn,wrn28_2,wrn28_8")
    parser.add_argument("--step_repeats", type=int, default=20, help="steps timed alone")
    args = parser.parse_args()

    results, process_seconds = whole_run(args.steps)
    timing = results["timing"]
    config = harness.load_config("digits")
    step = harness.trainer_step("digits step", config, config.data.name)
    step_seconds = harness.median(step.run(args.step_repeats))
    images = step.images_per_step
    loop_rate = timing["loop_steps"] * images / timing["loop_seconds"]
    step_rate = images / step_seconds
    print(harness.device_line())
    print(
        f"digits run, {results['steps']} steps of {images} images: process {process_seconds:.1f} s"
        f", first step after {timing['seconds_to_first_step']:.1f} s, loop "
        f"{timing['loop_seconds']:.1f} s for {timing['loop_steps']} steps = {loop_rate:,.0f} img/s"
    )
    print(f"the step alone: {step_seconds * 1e3:.1f} ms = {step_rate:,.0f} img/s")
    for name in filter(None, args.compile_models.split(",")):
        model, side, channels, batch_size, mu = COMPILE_MODELS[name]
        seconds = compile_seconds(model, side, channels, batch_size, mu)
        print(f"compile the train step, {name} (B={batch_size}, mu={mu}): {seconds:.1f} s")
    print(f"whole-run images/s / step images/s (digits): {loop_rate / step_rate:.2f}")


if __name__ == "__main__":
    main()
