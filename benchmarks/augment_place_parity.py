"""Does augmenting on the device train as well as on the host? Paired runs over seeds.

Run: ``python benchmarks/augment_place_parity.py --workdir=/tmp/augment_parity``
(the digits config, seeds 0-2: six runs, about 10-15 minutes on 2 CPU cores;
a finished run is skipped when rerun). Each seed trains the same config twice,
with ``data.augment_on=host`` and ``=device``: the same labeled subset,
initialisation and data order, the same op set and magnitude ranges, but
other random draws (TensorFlow's and JAX's generators differ). It prints each
run's test accuracy and the paired difference device - host with its 95 %
interval (`muscle_jax.experiments.statistics`).
"""

import argparse
import importlib.util
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from muscle_jax import train
from muscle_jax.experiments import statistics

HERE = os.path.dirname(os.path.abspath(__file__))


def _config(path: str, seed: int, place: str, total_steps: int | None):
    spec = importlib.util.spec_from_file_location("parity_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(None)
    config.seed = seed
    config.data.augment_on = place
    if total_steps:
        config.total_steps = total_steps
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--config", default=os.path.join(HERE, "..", "configs", "digits.py"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--total_steps", type=int, default=None, help="default: the config's")
    args = parser.parse_args()

    accuracy = {"host": {}, "device": {}}
    for seed in (int(s) for s in args.seeds.split(",")):
        for place in ("host", "device"):
            workdir = os.path.join(args.workdir, f"{place}_seed_{seed}")
            results_path = os.path.join(workdir, "results.json")
            if os.path.exists(results_path):
                with open(results_path) as f:
                    results = json.load(f)
            else:
                results = train.train_and_evaluate(
                    _config(args.config, seed, place, args.total_steps), workdir
                )
            if results["status"] != "completed":  # Stopped by a signal, with a checkpoint.
                raise SystemExit(f"{workdir}: stopped at step {results['step']}; rerun to resume.")
            accuracy[place][seed] = results["accuracy"]
            print(f"seed {seed}, augment_on={place}: test accuracy {results['accuracy']:.4f}")
    difference = statistics.paired_difference(accuracy["device"], accuracy["host"])
    for place in ("host", "device"):
        summary = statistics.summarise(list(accuracy[place].values()))
        print(f"  {place:6s} {summary.format(digits=2)} %")
    print(f"test accuracy device - host, points (95% CI): {difference.format(digits=2)}")


if __name__ == "__main__":
    main()
