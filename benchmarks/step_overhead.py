"""What MUSCLE's extra terms cost: its train step against a bare supervised step.

Run: ``python benchmarks/step_overhead.py [--workload small_cnn]``, about 2
minutes on 2 CPU cores. Both steps take the same number of images through
the same backbone and optimiser. The MUSCLE step is the trainer's (FixMatch
consistency + MI, the EMA of parameters and BatchNorm statistics, the
metrics); the bare step is forward, cross-entropy, backward and the
optimiser update, nothing else (`harness.bare_supervised_step`). They run
in alternating rounds in one process; the ratio of median step times is the
overhead (goal: <= 1.05). FixMatch without MI is measured too, so the MI
term's own share shows.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="small_cnn", choices=sorted(harness.WORKLOADS))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="steps per contender per round")
    parser.add_argument("--batch_scale", type=float, default=1.0, help="scales B (smoke tests)")
    args = parser.parse_args()

    model, side, channels, batch_size, mu = harness.WORKLOADS[args.workload]
    batch_size = max(1, round(batch_size * args.batch_scale))
    dataset = harness.synthetic_dataset(side, channels)
    muscle = harness.trainer_step(
        "muscle", harness.step_config(model, batch_size=batch_size, mu=mu, mi=True), dataset
    )
    fixmatch = harness.trainer_step(
        "fixmatch", harness.step_config(model, batch_size=batch_size, mu=mu, mi=False), dataset
    )
    bare = harness.bare_supervised_step(
        "bare supervised",
        harness.step_config(model, batch_size=batch_size, mu=mu),
        dataset,
        muscle.images_per_step,
    )
    times = harness.alternate([bare, muscle, fixmatch], rounds=args.rounds, steps=args.steps)
    print(harness.device_line())
    print(f"{args.workload}: {muscle.images_per_step} images a step, {side}x{side}x{channels}")
    for step in (bare, muscle, fixmatch):
        print(f"  {step.name:16s} {harness.spread(times[step.name])}")
    base = harness.median(times[bare.name])
    fixmatch_ratio = harness.median(times[fixmatch.name]) / base
    muscle_ratio = harness.median(times[muscle.name]) / base
    print(f"  fixmatch / bare supervised: {fixmatch_ratio:.3f}")
    print(f"step time MUSCLE / bare supervised ({args.workload}): {muscle_ratio:.3f}")


if __name__ == "__main__":
    main()
