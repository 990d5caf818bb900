"""Smoke tests: every benchmark runs from a clean checkout at a tiny size.

No speed is asserted (these machines are noisy); each script must finish and
print its headline figure on its last line. The scripts run one after another
in one interpreter, as `python benchmarks/NAME.py ARGS` would run each.
"""

import re

import pytest

# script -> (tiny-size arguments, pattern of the headline on the last line).
SMOKE_RUNS = {
    "vs_pytorch.py": (
        # Without the third contender (XLA's own conv gradients, tested in test_models_conv):
        # its compile was a third of this script's smoke time.
        [
            "--workloads=small_cnn",
            "--rounds=1",
            "--steps=1",
            "--batch_scale=0.125",
            "--no-xla_conv_backward",
        ],
        r"^images/s ours \(MUSCLE, MI on\) / PyTorch FixMatch: small_cnn ",
    ),
    "step_overhead.py": (
        ["--rounds=1", "--steps=1", "--batch_scale=0.125"],
        r"^step time MUSCLE / bare supervised \(small_cnn\): \d+\.\d{3}$",
    ),
    "utilisation.py": (
        [
            "--workloads=small_cnn",
            "--matmul_size=256",
            "--rounds=1",
            "--steps=1",
            "--batch_scale=0.125",
        ],
        r"^train-step FLOP/s / matmul FLOP/s: small_cnn \d+\.\d\d$",
    ),
    "input_headroom.py": (
        [
            # scikit-learn's copy and one real TFDS format (MNIST's is the same kind).
            "--configs=digits,cifar10",
            "--batches=2",
            "--steps=1",
            "--batch_scale=0.125",
            "--num_train=200",
            "--model=small_cnn",
        ],
        r"^pipeline images/s / step images/s: digits [\d.]+, cifar10 [\d.]+$",
    ),
    "end_to_end.py": (
        ["--steps=12", "--compile_models=small_cnn"],
        r"^whole-run images/s / step images/s \(digits\): \d+\.\d\d$",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SMOKE_RUNS))
def test_benchmark_runs_and_prints_its_headline(shared_runs, script):
    # All of them run once, in one interpreter (tests/shared_runs.py).
    _, outcomes = shared_runs.original("benchmarks")
    outcome = outcomes[f"benchmarks/{script}"]
    assert outcome["error"] is None, outcome["error"][-3000:]
    last_line = outcome["stdout"].strip().splitlines()[-1]
    assert re.search(SMOKE_RUNS[script][1], last_line), outcome["stdout"][-3000:]
