"""The README's commands and snippet are what CI and users actually run."""

import os
import re
import subprocess
import sys

import pytest

from tests import cli_driver

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")
# The stateful-base example lives in the losses guide; the README links to it.
LOSSES_GUIDE = os.path.join(REPO, "docs", "losses.md")
RESULTS = os.path.join(REPO, "docs", "results.md")


def block_after(marker: str, path: str = README) -> str:
    text = open(path).read()
    match = re.search(re.escape(marker) + r"\s*```\w*\n(.*?)```", text, re.S)
    assert match, f"no code block after {marker} in {os.path.relpath(path, REPO)}"
    return match.group(1)


@pytest.mark.slow
def test_losses_snippet_runs():
    completed = subprocess.run(
        [sys.executable, "-c", block_after("<!-- snippet: losses -->")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    assert "mutual_information" in completed.stdout


@pytest.mark.slow
def test_stateful_base_snippet_runs_and_threads_its_state():
    completed = subprocess.run(
        [sys.executable, "-c", block_after("<!-- snippet: losses-stateful-base -->", LOSSES_GUIDE)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    steps = [line for line in completed.stdout.splitlines() if "'threshold'" in line]
    assert len(steps) == 3, completed.stdout
    # freematch_init(10) starts tau at 1/10; a state passed back in has moved from it.
    final = re.search(r"after 3 steps: (\S+)", completed.stdout)
    assert final, completed.stdout
    assert float(final.group(1)) != pytest.approx(0.1, abs=1e-6)


def test_ci_runs_the_readme_test_command():
    command = block_after("<!-- test-command -->").strip()
    assert "pytest" in command and "pip install" in command
    extracted = subprocess.run(
        [os.path.join(REPO, ".ci", "readme-test-command"), README],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert extracted == command
    assert "readme-test-command" in open(os.path.join(REPO, ".ci", "run")).read()


@pytest.mark.slow
def test_readme_experiment_commands_are_valid(tmp_path):
    """Each suite command in docs/results.md builds its runs (a SLURM dry run, not run)."""
    commands = [
        line.split()
        for line in open(RESULTS).read().splitlines()
        if line.startswith("python -m muscle_jax.experiments ")
    ]
    from muscle_jax.experiments import suites

    # One command per suite.
    assert {arg for command in commands for arg in command if arg.startswith("--suite=")} == {
        f"--suite={suite}" for suite in suites.names()
    }
    # Answered by one interpreter (tests/cli_driver.py): a dry run trains nothing.
    outcomes = cli_driver.run_command_lines(
        "muscle_jax.experiments.__main__",
        [
            [
                *(arg for arg in command[3:] if not arg.startswith("--workdir=")),
                f"--workdir={tmp_path / str(index)}",
                "--dispatch=slurm",
                "--dry_run",
            ]
            for index, command in enumerate(commands)
        ],
    )
    for command, completed in zip(commands, outcomes, strict=True):
        assert completed.returncode == 0, (command, completed.stderr)
        assert "would submit: sbatch" in completed.stdout, command


def test_scaling_table_is_the_estimate_scripts_output():
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    try:
        import scaling_estimate
    finally:
        sys.path.pop(0)
    docs = "".join(
        open(os.path.join(REPO, "docs", page)).read() for page in ("scaling.md", "performance.md")
    )
    assert scaling_estimate.table() in docs
    assert scaling_estimate.demand_table() in docs
    # The protocol's FLOP count from the model's layer shapes: ~2e19, as the docs say.
    assert 1.9e19 < scaling_estimate.training_flop() < 2.1e19
