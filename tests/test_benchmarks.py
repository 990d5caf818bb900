"""Smoke tests: every benchmark runs from a clean checkout at a tiny size.

No speed is asserted (these machines are noisy); each script must finish and
print its headline figure on its last line. The scripts run one after another
in one interpreter, as `python benchmarks/NAME.py ARGS` would run each; the
device check (benchmarks/device_check.sh --tiny) runs the utilisation, input
headroom, device-augmentation and end-to-end scripts, so they are checked in its output.
"""

import json
import os
import re
import subprocess

import pytest

from .shared_runs import PARITY_STEPS, benchmark_environment, run_parity_script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# script -> (tiny-size arguments, pattern of the headline on the last line).
SMOKE_RUNS = {
    "vs_pytorch.py": (
        # Without the third contender (XLA's own conv gradients, tested in test_models_conv):
        # its compile was a third of this script's smoke time.
        [
            "--workloads=mnist_cnn",  # The mnist config's six layers (harness.WORKLOADS).
            "--rounds=1",
            "--steps=1",
            "--batch_scale=0.125",
            "--no-xla_conv_backward",
        ],
        r"^images/s ours \(MUSCLE, MI on\) / PyTorch FixMatch: mnist_cnn ",
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
    "peak_memory.py": (
        # One child process (our default step on the digits model); the peer's side skips
        # without torch (benchmark_environment), and says so in the headline.
        ["--workloads=digits", "--steps=1", "--batch_scale=0.125", "--contenders=im2col,pytorch"],
        r"^peak MiB/image ours \(im2col\) / PyTorch: digits (\d+\.\d\d|no ratio)$",
    ),
}


@pytest.mark.slow(heavy=True)
@pytest.mark.parametrize("script", sorted(SMOKE_RUNS))
def test_benchmark_runs_and_prints_its_headline(shared_runs, script):
    # All of them run once, in one interpreter (tests/shared_runs.py).
    _, outcomes = shared_runs.original("benchmarks")
    outcome = outcomes[f"benchmarks/{script}"]
    assert outcome["error"] is None, outcome["error"][-3000:]
    last_line = outcome["stdout"].strip().splitlines()[-1]
    assert re.search(SMOKE_RUNS[script][1], last_line), outcome["stdout"][-3000:]


PARITY_HEADLINE = (
    r"^test accuracy device - host, points \(95% CI\): [+-]\d+\.\d\d \(n=1, no interval\)$"
)


@pytest.mark.slow(heavy=True)
def test_the_parity_script_trains_both_places_and_skips_them_when_rerun(shared_runs, tmp_path):
    workdir, outcome = shared_runs.copy("augment_parity", tmp_path / "parity")
    assert outcome["ran"], outcome["printed"][-3000:]
    printed = outcome["printed"].strip().splitlines()
    assert re.search(PARITY_HEADLINE, printed[-1]), printed
    for place in ("host", "device"):
        results = json.loads((workdir / f"{place}_seed_0" / "results.json").read_text())
        assert results["config"]["data"]["augment_on"] == place
        assert results["steps"] == PARITY_STEPS
    finished = (workdir / "device_seed_0" / "results.json").stat().st_mtime_ns
    ran, again = run_parity_script(workdir)  # Finished runs: read, not rerun.
    assert ran and again.strip().splitlines() == printed
    assert (workdir / "device_seed_0" / "results.json").stat().st_mtime_ns == finished


# The device check's sections, each ending in its script's headline.
DEVICE_CHECK_HEADLINES = [
    r"(?m)^train-step FLOP/s / matmul FLOP/s: small_cnn \d+\.\d\d$",  # float32
    r"(?m)^  small_cnn \(bfloat16\): .* of the matmul$",
    r"(?m)^pipeline images/s / step images/s: digits [\d.]+, cifar10 [\d.]+$",
    r"(?m)^device augmentation / train step \(small_cnn\): -?\d\.\d{3}$",
    r"(?m)^whole-run images/s / step images/s \(digits\): \d+\.\d\d$",
    r"(?m)^device check: 5 of 5 sections ran in \d+ s$",
]


@pytest.mark.slow(heavy=True)
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
