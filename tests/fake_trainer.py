"""A stand-in for ``python -m muscle_jax.main`` in the experiment-suite tests: no training.

``python -m muscle_jax.experiments --trainer=tests.fake_trainer ...`` starts
this module for every run with main's flags. What the suites do with runs
(which runs a suite is made of, skipping finished ones, refusing one trained
with other settings, the report, its statistics and plots) does not depend
on what training learns, so it is tested here in a second a run instead of
a real run's quarter of a minute; tests/test_experiments.py keeps one real
suite run: killed mid-way, resumed and reported.

It builds the same locked config from the same flags and writes the
results.json that the trainer writes for a finished run, with accuracies
that are a fixed function of the run's settings (see `accuracy`). Like the
trainer, a run with ``init_from`` needs that checkpoint directory, and says
where it started from in console.log.
"""

import json
import os

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS


def define_flags():
    """Main's flags; defined only when this runs, since pytest's doctest run imports it."""
    config_flags.DEFINE_config_file("config", None, "The run's config, as main takes it.")
    flags.DEFINE_string("workdir", None, "The run's directory.")
    flags.mark_flags_as_required(["config", "workdir"])


def accuracy(config) -> float:
    """0.5, +0.1 with a consistency method, +0.05 with the MI term on, +0.01 a seed."""
    loss = config.loss
    value = 0.5 + 0.01 * config.seed
    value += 0.1 if loss.consistency != "none" else 0.0
    value += 0.05 if loss.unsupervised != "none" and loss.unsupervised_weight > 0 else 0.0
    return round(value, 6)


def main(argv):
    del argv
    config = FLAGS.config
    os.makedirs(FLAGS.workdir, exist_ok=True)
    log = []
    if config.init_from:
        if not os.path.isdir(config.init_from):
            raise SystemExit(f"error: init_from={config.init_from} does not exist.")
        log.append(f"Initialised the weights from {config.init_from}.")
    for step in range(1, config.total_steps + 1):
        log.append(f"step {step}/{config.total_steps} | fake")
    print("\n".join(log), flush=True)
    with open(os.path.join(FLAGS.workdir, "console.log"), "a") as handle:
        handle.write("\n".join(log) + "\n")
    # A fine-tuning run of the suite points at this directory.
    os.makedirs(os.path.join(FLAGS.workdir, "checkpoints"), exist_ok=True)
    value = accuracy(config)
    per_class = [value] * (config.data.num_classes - 1) + [round(value - 0.1, 6)]
    results = {
        "status": "completed",
        "accuracy": value,
        "raw_accuracy": round(value - 0.01, 6),
        "final_accuracy": value,
        "per_class_accuracy": per_class,
        "steps": config.total_steps,
        "run": {"wall_seconds": 1.0},
        "config": json.loads(config.to_json_best_effort()),
    }
    with open(os.path.join(FLAGS.workdir, "results.json"), "w") as handle:
        json.dump(results, handle)


if __name__ == "__main__":
    define_flags()
    app.run(main)
