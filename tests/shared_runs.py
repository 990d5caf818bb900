"""Training runs that many tests read: each trained once per test session.

A test that needs a finished or a stopped tiny run asks the `shared_runs`
fixture (conftest.py) for it by name and gets its own copy in its own tmp
dir, so it may resume, damage or extend it. The first test to ask trains
it; a file lock makes the other xdist worker wait for that run rather than
train it again. Add a scenario here only when no existing one gives what a
test needs (docs/development.md).
"""

import fcntl
import json
import os
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.helpers import ONE_THREAD_TENSORFLOW, load_config


def run_until_step(config, workdir, stop_after: int):
    """Runs ``train_and_evaluate``, sending itself SIGTERM after ``stop_after`` steps."""
    from muscle_jax import train

    calls = {"n": 0}
    real_accumulate = train.monitoring.accumulate

    def counting_accumulate(sums, metrics, step):
        calls["n"] += 1
        if calls["n"] == stop_after:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_accumulate(sums, metrics, step)

    train.monitoring.accumulate = counting_accumulate
    try:
        return train.train_and_evaluate(config, str(workdir))
    finally:
        train.monitoring.accumulate = real_accumulate


# The tiny default run is stopped here: between two logging steps (4, 8) and
# after its step-6 checkpoint, so the stopped workdir holds two checkpoints
# (6 and the preemption's 7) and resumes mid-interval.
PREEMPTED_AT = 7


def short_config():
    """Tiny, 4 steps, checkpoints and evaluations every 2: a run to refuse, tear or extend."""
    config = load_config("tiny")
    config.total_steps = 4
    config.checkpoint_every_steps = 2
    config.eval_every_steps = 2
    return config


def _tiny(workdir: Path) -> dict[str, Any]:
    """The default tiny run (12 steps, 8 devices), counting how often it reads its dataset."""
    from muscle_jax import train
    from muscle_jax.data import sources

    calls = []
    real_load = sources.digits.load

    def counting_load():
        calls.append(1)
        return real_load()

    sources.digits.load = counting_load
    try:
        config = load_config("tiny")
        config.plot_curves = True  # The run whose curves.png the tests check.
        results = train.train_and_evaluate(config, str(workdir))
    finally:
        sources.digits.load = real_load
    return {"results": results, "dataset_reads": len(calls)}


def _tiny_preempted(workdir: Path) -> dict[str, Any]:
    return {"stopped": run_until_step(load_config("tiny"), workdir, stop_after=PREEMPTED_AT)}


def _short(workdir: Path) -> dict[str, Any]:
    from muscle_jax import train

    return {"results": train.train_and_evaluate(short_config(), str(workdir))}


# Runs each benchmark script as ``python benchmarks/NAME.py ARGS`` would, one after
# another in one interpreter (the device check's `run_section`): the imports and the
# shared compilations are paid once. A failed script's output ends in its traceback.
_BENCHMARK_DRIVER = r"""
import contextlib, io, json, os, sys
sys.path.insert(0, "benchmarks")
from device_check import run_section
outcomes = {}
for script, args in json.loads(sys.argv[1]).items():
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        ran = run_section(os.path.basename(script), args)
    outcomes[script] = {"stdout": printed.getvalue(), "error": None if ran else printed.getvalue()}
print(json.dumps(outcomes))
"""


def benchmark_environment() -> dict[str, str]:
    """The environment the benchmarks' smoke runs get: a user's, with this session's cache."""
    # One CPU device and TensorFlow's own thread pools, as a user runs them (the test
    # session simulates eight devices and runs every op on one thread: conftest.py).
    test_only = ("XLA_FLAGS", *ONE_THREAD_TENSORFLOW)
    env = {key: value for key, value in os.environ.items() if key not in test_only}
    env["MUSCLE_JAX_TORCH_PYTHON"] = ""  # The peer's side must skip cleanly without torch.
    # Benchmarks time optimised programs, and their timing loops ran 40 s longer without
    # XLA's optimisations (135 s against 95 s for the smoke runs) than the compiles saved.
    env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "0"
    env["PYTHON"] = sys.executable  # For benchmarks/device_check.sh.
    return env


def benchmark_smoke(runs: dict[str, list[str]]) -> dict[str, Any]:
    """Every benchmark of ``runs`` (script path -> arguments) in one subprocess."""
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    completed = subprocess.run(
        [sys.executable, "-c", _BENCHMARK_DRIVER, json.dumps(runs)],
        cwd=repo,
        env=benchmark_environment(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _benchmarks(workdir: Path) -> dict[str, Any]:
    from tests.test_benchmarks import SMOKE_RUNS

    workdir.mkdir()
    scripts = {f"benchmarks/{name}": arguments for name, (arguments, _) in SMOKE_RUNS.items()}
    return benchmark_smoke(scripts)


# The parity script's smoke run: the tiny config at seed 0 for this many steps, with
# augment_on=host and =device. Its device run is also the uninterrupted reference
# of test_device_augment's resume test (`device_parity_config`).
PARITY_STEPS = 4


def parity_arguments(workdir: Path) -> list[str]:
    """``benchmarks/augment_place_parity.py``'s arguments for the smoke run in ``workdir``."""
    repo = Path(__file__).resolve().parents[1]
    return [
        f"--config={repo / 'configs' / 'tiny.py'}",
        "--seeds=0",
        f"--total_steps={PARITY_STEPS}",
        f"--workdir={workdir}",
    ]


def device_parity_config():
    """The config of the parity run's ``device_seed_0`` (curves.png aside)."""
    config = load_config("tiny")
    config.total_steps = PARITY_STEPS
    config.data.augment_on = "device"
    return config


def run_parity_script(workdir: Path) -> tuple[bool, str]:
    """(whether it succeeded, what it printed): the script run in this process."""
    import contextlib
    import io

    benchmarks = str(Path(__file__).resolve().parents[1] / "benchmarks")
    if benchmarks not in sys.path:
        sys.path.insert(0, benchmarks)
    from device_check import run_section

    printed, argv = io.StringIO(), list(sys.argv)
    try:
        with contextlib.redirect_stdout(printed):
            ran = run_section("augment_place_parity.py", parity_arguments(workdir))
    finally:
        sys.argv = argv  # run_section sets it, as `python SCRIPT ARGS` would.
    return ran, printed.getvalue()


def _augment_parity(workdir: Path) -> dict[str, Any]:
    # In the test process (8 devices, the session's cache), not the benchmark driver.
    ran, printed = run_parity_script(workdir)
    return {"ran": ran, "printed": printed}


def _multiprocess_one(workdir: Path) -> dict[str, Any]:
    from tests.test_multiprocess import one_process_reference

    return one_process_reference(workdir)


SCENARIOS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "tiny": _tiny,
    "tiny_preempted": _tiny_preempted,
    "short": _short,
    "benchmarks": _benchmarks,
    "augment_parity": _augment_parity,
    "multiprocess_one": _multiprocess_one,
}


class SharedRuns:
    """Hands out copies of the `SCENARIOS` runs, training each once per session."""

    def __init__(self, tmp_path_factory):
        base = tmp_path_factory.getbasetemp()
        # Under xdist each worker has its own basetemp below one shared directory.
        if os.environ.get("PYTEST_XDIST_WORKER"):
            base = base.parent
        self._root = base / "shared_runs"
        self._root.mkdir(exist_ok=True)

    def original(self, name: str) -> tuple[Path, dict[str, Any]]:
        """The run's directory (read it, never write it) and what its builder returned."""
        workdir = self._root / name
        done = self._root / f"{name}.json"
        with open(self._root / f"{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # Released when the file closes.
            if not done.exists():
                shutil.rmtree(workdir, ignore_errors=True)  # A builder that failed before.
                outcome = SCENARIOS[name](workdir)
                done.write_text(json.dumps(outcome))
        return workdir, json.loads(done.read_text())

    def copy(self, name: str, target: Path) -> tuple[Path, dict[str, Any]]:
        """A private copy of the run at ``target``, and what its builder returned."""
        workdir, outcome = self.original(name)
        shutil.copytree(workdir, target)
        return target, outcome
