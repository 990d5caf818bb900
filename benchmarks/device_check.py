"""The device check: the protocol's step, its host pipeline and a short run, on one accelerator.

Run on the machine with the GPU or TPU: ``benchmarks/device_check.sh`` (about
5-8 minutes on one GPU, an estimate: it has not run on one yet; ``--tiny``
runs every section at minute size, for the tests on CPU). It runs, one
after another in this one process (one backend start, one compilation cache):

1. the MUSCLE train step of WRN-28-2 and WRN-28-8 at the protocol's batch
   (B = 64, mu = 7: 960 images a step) in float32 and in bfloat16: step time,
   FLOP/s against a large matmul of the same dtype, and the model-FLOPs
   utilisation against the device's data-sheet peak (`utilisation.py`);
2. the host's tf.data pipeline (RandAugment + Cutout, all host cores) against
   what the step consumes, for the CIFAR-10 config (`input_headroom.py`);
3. the step with the augmentation made on the device (`data.augment_on=device`)
   against the step fed host views, WRN-28-2 in bfloat16 (`device_augment_cost.py`);
4. a short end-to-end digits run with its seconds to the first step, the loop
   against the bare step, and the compile times of the two WRNs
   (`end_to_end.py`).

A section that fails prints its traceback and the others still run; the exit
status says whether all ran. Copy the whole output into benchmarks/README.md.
"""

import argparse
import os
import runpy
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))

# (title, script, arguments on the accelerator, arguments with --tiny).
SECTIONS = [
    (
        "Train step, float32",
        "utilisation.py",
        ["--workloads=wrn28_2,wrn28_8", "--batch_scale=8", "--matmul_size=8192", "--steps=5"],
        ["--workloads=small_cnn", "--batch_scale=0.125", "--matmul_size=256", "--rounds=1"],
    ),
    (
        "Train step, bfloat16",
        "utilisation.py",
        [
            "--workloads=wrn28_2,wrn28_8",
            "--batch_scale=8",
            "--matmul_size=8192",
            "--steps=5",
            "--compute_dtype=bfloat16",
        ],
        [
            "--workloads=small_cnn",
            "--batch_scale=0.125",
            "--matmul_size=256",
            "--rounds=1",
            "--compute_dtype=bfloat16",
        ],
    ),
    (
        "Host pipeline against the step (all host cores)",
        "input_headroom.py",
        ["--configs=cifar10", "--batches=30"],
        # scikit-learn's copy and one real TFDS format (MNIST's is the same kind).
        [
            "--configs=digits,cifar10",
            "--batches=2",
            "--steps=1",
            "--batch_scale=0.125",
            "--num_train=200",
            "--model=small_cnn",
        ],
    ),
    (
        "Augmentation on the device against the step",
        "device_augment_cost.py",
        # Two rounds: its three programs' compiles dominate this section on a GPU.
        [
            "--workload=wrn28_2",
            "--batch_scale=8",
            "--compute_dtype=bfloat16",
            "--rounds=2",
            "--steps=5",
        ],
        ["--workload=small_cnn", "--batch_scale=0.125", "--rounds=1", "--steps=1"],
    ),
    (
        "A short end-to-end run",
        "end_to_end.py",
        ["--steps=300", "--compile_models=wrn28_2,wrn28_8"],
        ["--steps=12", "--compile_models=small_cnn", "--step_repeats=2"],
    ),
]


def run_section(script: str, arguments: list[str]) -> bool:
    """Runs ``python benchmarks/SCRIPT ARGUMENTS`` in this process; False if it failed."""
    sys.argv = [os.path.join(HERE, script), *arguments]
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as stop:
        return stop.code in (None, 0)
    except Exception:
        traceback.print_exc(file=sys.stdout)
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="minute-scale sizes (tests on CPU)")
    args = parser.parse_args()
    started = time.perf_counter()
    failed = []
    for title, script, full, tiny in SECTIONS:
        arguments = tiny if args.tiny else full
        print(f"\n== {title}: python benchmarks/{script} {' '.join(arguments)}", flush=True)
        section_started = time.perf_counter()
        if not run_section(script, arguments):
            failed.append(title)
        print(f"({time.perf_counter() - section_started:.0f} s)", flush=True)
    print(
        f"\ndevice check: {len(SECTIONS) - len(failed)} of {len(SECTIONS)} sections ran "
        f"in {time.perf_counter() - started:.0f} s" + (f"; failed: {failed}" if failed else "")
    )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
