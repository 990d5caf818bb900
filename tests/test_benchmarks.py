"""Smoke tests: every benchmark runs from a clean checkout at a tiny size.

No speed is asserted (these machines are noisy); each script must finish and
print its headline figure on its last line. The scripts run one after another
in one interpreter, as `python benchmarks/NAME.py ARGS` would run each; the
device check (benchmarks/device_check.sh --tiny) runs the utilisation, input
headroom, device-augmentation and end-to-end scripts, so they are checked in its output.
"""

import os
import re
import subprocess

import pytest

from .shared_runs import benchmark_environment

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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
    "augment_place_parity.py": (
        # Two tiny runs (host, device; the device one is test_device_augment's program);
        # "{workdir}" is the shared run's directory.
        ["--config=configs/tiny.py", "--seeds=0", "--total_steps=4", "--workdir={workdir}"],
        r"^test accuracy device - host, points \(95% CI\): [+-]\d+\.\d\d \(n=1, no interval\)$",
    ),
    "conv_lowering.py": (
        ["--images=4", "--repeats=1", "--shapes=2"],
        r"^XLA time / im2col time, median over shapes: forward \d+\.\d\d, "
        r"input gradient \d+\.\d\d$",
    ),
    "step_overhead.py": (
        ["--rounds=1", "--steps=1", "--batch_scale=0.125"],
        r"^step time MUSCLE / bare supervised \(small_cnn\): \d+\.\d{3}$",
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


# The device check's sections, each ending in its script's headline.
DEVICE_CHECK_HEADLINES = [
    r"(?m)^train-step FLOP/s / matmul FLOP/s: small_cnn \d+\.\d\d$",  # float32
    r"(?m)^  small_cnn \(bfloat16\): .* of the matmul$",
    r"(?m)^pipeline images/s / step images/s: digits [\d.]+, cifar10 [\d.]+$",
    r"(?m)^device augmentation / train step \(small_cnn\): -?\d\.\d{3}$",
    r"(?m)^whole-run images/s / step images/s \(digits\): \d+\.\d\d$",
    r"(?m)^device check: 5 of 5 sections ran in \d+ s$",
]


@pytest.mark.slow
def test_device_check_runs_every_section_at_tiny_size(tmp_path):
    completed = subprocess.run(
        ["bash", os.path.join(REPO, "benchmarks", "device_check.sh"), "--tiny"],
        cwd=tmp_path,  # The script finds the repository itself.
        env=benchmark_environment(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    for headline in DEVICE_CHECK_HEADLINES:
        assert re.search(headline, completed.stdout), (headline, completed.stdout[-3000:])
