"""Smoke tests: every benchmark runs from a clean checkout at a tiny size.

No speed is asserted (these machines are noisy); each script must finish and
print its headline figure on its last line.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# script -> (tiny-size arguments, pattern of the headline on the last line).
SMOKE_RUNS = {
    "vs_pytorch.py": (
        ["--workloads=small_cnn", "--rounds=1", "--steps=1", "--batch_scale=0.125"],
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
            "--configs=digits,mnist,cifar10",
            "--batches=2",
            "--steps=1",
            "--batch_scale=0.125",
            "--num_train=200",
        ],
        r"^pipeline images/s / step images/s: digits [\d.]+, mnist [\d.]+, cifar10 [\d.]+$",
    ),
    "end_to_end.py": (
        ["--steps=12", "--compile_models=small_cnn"],
        r"^whole-run images/s / step images/s \(digits\): \d+\.\d\d$",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SMOKE_RUNS))
def test_benchmark_runs_and_prints_its_headline(script):
    arguments, headline = SMOKE_RUNS[script]
    # One CPU device, as a user runs them (the test session simulates eight).
    env = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}
    env["MUSCLE_JAX_TORCH_PYTHON"] = ""  # The peer's side must skip cleanly without torch.
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *arguments],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    last_line = result.stdout.strip().splitlines()[-1]
    assert re.search(headline, last_line), result.stdout[-3000:]
