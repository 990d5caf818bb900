"""Multi-process training with real processes: launch/local.sh on this machine's CPU.

Two processes with one simulated device each are compared with one process,
the test's own (8 simulated devices), both reading the data as 2 shards
(`data.num_shards`), so the global batch is the same. (One device a process
keeps each launched run cheap: 4 and 8 devices cost ~20 % more CPU a run here
and prove nothing more about processes; the one-process side runs in the test's
process because it proves nothing about launching, and a process started for
it cost ~20 CPU-s.) The runs
train FlexMatch + MI: of the bases, the one with the largest method state (a
record per unlabeled image, written from the global batch at every step), so
the state is checked across processes too.
Tolerance: results and parameters agree to rtol 1e-5, atol 1e-6 (the
cross-process all-reduce sums in another order than the in-process one; the
runs below differ by about 1e-7).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from absl import logging as absl_logging

from muscle_jax import train

from .helpers import latest_state, load_config
from .test_train import REPO

pytestmark = pytest.mark.slow(heavy=True)

RTOL, ATOL = 1e-5, 1e-6
METHOD = "method=flexmatch"
# A process that dies is noticed by the others after the heartbeat timeout: short in
# the test of that, the default (60 s) elsewhere. (With 5 s everywhere, a run whose
# process 0 took 27 s to tear its backend down under load was aborted at exit: the
# other process, already in the shutdown barrier, had stopped its heartbeats.)
HEARTBEAT_SECONDS = 5
DEATH_BOUND_SECONDS = 45


def _environment(devices: int) -> dict:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags)
    env.update(DEVICES_PER_PROCESS=str(devices), PYTHON=sys.executable)
    return env


def _local(num_processes, workdir, log_dir, *args, background=False):
    command = [
        "bash",
        os.path.join(REPO, "launch", "local.sh"),
        str(num_processes),
        f"--config=configs/tiny.py:{METHOD}",
        f"--workdir={workdir}",
        "--config.data.num_shards=2",
        *args,
    ]
    env = _environment(2 // num_processes)
    env["LOG_DIR"] = str(log_dir)
    if background:
        return subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    completed = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, _logs(log_dir) + completed.stderr[-3000:]
    return completed


def _logs(log_dir) -> str:
    return "".join(
        f"--- {name}\n" + (log_dir / name).read_text()[-3000:]
        for name in sorted(os.listdir(log_dir))
        if name.endswith(".log")
    )


def _final_state(workdir, config=None):
    return latest_state(workdir, config or load_config("tiny", METHOD))


def _assert_same_run(a, b, *, compare_losses=True):
    states = [_final_state(workdir) for workdir in (a, b)]
    assert int(states[0].step) == int(states[1].step)
    for x, y in zip(jax.tree.leaves(states[0]), jax.tree.leaves(states[1]), strict=True):
        np.testing.assert_allclose(x, y, rtol=RTOL, atol=ATOL)
    results = [json.loads((workdir / "results.json").read_text()) for workdir in (a, b)]
    assert results[0]["history"]["step"] == results[1]["history"]["step"]
    for key in ("ema_accuracy", "raw_accuracy"):
        np.testing.assert_allclose(
            results[0]["history"][key], results[1]["history"][key], atol=ATOL
        )
    if compare_losses:
        # The logged losses are means over each logging interval; a run stopped
        # mid-interval logs its parts separately, so it is compared by its state.
        for term in ("total", "supervised", "consistency"):
            np.testing.assert_allclose(
                results[0]["train_history"][term], results[1]["train_history"][term], rtol=RTOL
            )


def _read_shards(logs):
    """Each log's unlabeled ranges and labeled-subset digest, as its process logged them."""
    pattern = re.compile(r"unlabeled pool ranges (\[.*?\]) of (\d+); .* sha1 (\w+)\.")
    found = []
    for log in logs:
        match = pattern.search(log.read_text())
        assert match, f"{log} holds no data shards"
        found.append((json.loads(match.group(1)), int(match.group(2)), match.group(3)))
    return found


def _keep_only_first_checkpoint(source, target):
    """A copy of a finished run as it stood at its first checkpoint (a resumable run)."""
    shutil.copytree(source, target)
    steps = sorted(int(name) for name in os.listdir(target / "checkpoints") if name.isdigit())
    for step in steps[1:]:
        shutil.rmtree(target / "checkpoints" / str(step))
    (target / "results.json").unlink()
    return steps[0]


# Every run here is tiny, 36 steps, checkpoints every 12 (all 3 kept): long enough
# for a signal to land mid-run, with a step-12 checkpoint to resume from.
LONG_SETTINGS = {"total_steps": 36, "checkpoint_every_steps": 12, "keep_checkpoints": 3}
LONG = [f"--config.{key}={value}" for key, value in LONG_SETTINGS.items()]


def long_config():
    """`LONG` and the launched runs' shards, as a config for a run in this process."""
    config = load_config("tiny", METHOD)
    config.update(LONG_SETTINGS)
    config.data.num_shards = 2  # As `_local` reads the data.
    return config


def train_here(workdir):
    """`long_config` in this process, its INFO lines in console.log as `main` would log them."""
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.INFO)
    try:
        train.train_and_evaluate(long_config(), str(workdir))
    finally:
        absl_logging.set_verbosity(verbosity)


def one_process_reference(workdir):
    """The 1-process run both tests compare with (tests/shared_runs.py trains it once)."""
    train_here(workdir)
    return {}


def test_two_processes_train_as_one_and_checkpoints_cross_process_counts(shared_runs, tmp_path):
    one, _ = shared_runs.copy("multiprocess_one", tmp_path / "one")
    _local(2, tmp_path / "two", tmp_path / "logs_two", *LONG)
    _assert_same_run(one, tmp_path / "two")
    shards = _read_shards(tmp_path / "logs_two" / f"process_{i}.log" for i in range(2))
    ranges = [tuple(r) for process_ranges, _, _ in shards for r in process_ranges]
    pool = shards[0][1]
    # Disjoint unlabeled shards that together are the whole pool...
    assert sorted(ranges) == [(0, pool // 2), (pool // 2, pool)]
    # ...and one labeled subset, the same on both processes (and as with one process).
    assert shards[0][2] == shards[1][2] == _read_shards([one / "console.log"])[0][2]
    # Only process 0 writes the workdir's logs and results.
    console = (tmp_path / "two" / "console.log").read_text()
    assert "Process 0/2 reads" in console and "Process 1/2" not in console
    # Checkpoints across process counts, both ways: the SIGTERM test below.


def _wait_for(path, pattern, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and re.search(pattern, path.read_text()):
            return
        time.sleep(0.2)
    raise AssertionError(f"{path} never showed {pattern!r}")


def test_sigterm_to_one_process_stops_both_at_one_step(shared_runs, tmp_path):
    """1 -> 2 -> 1 processes: resumed on two, stopped by SIGTERM to one, finished on one.

    The two processes start from the 1-process run's step-12 checkpoint, so the
    checkpoint one process wrote restores on two; the checkpoint the two write
    together when stopped restores on one; and the run ends as the uninterrupted
    1-process run did.
    """
    uninterrupted, _ = shared_runs.original("multiprocess_one")
    run = tmp_path / "run"
    assert _keep_only_first_checkpoint(uninterrupted, run) == 12
    log_dir = tmp_path / "logs"
    launcher = _local(2, run, log_dir, *LONG, background=True)
    _wait_for(log_dir / "process_1.log", r"step 16/36")
    for index in range(2):
        log = (log_dir / f"process_{index}.log").read_text()
        assert "Resumed from" in log and "at step 12" in log, log[-3000:]
    pids = (log_dir / "pids").read_text().split()
    os.kill(int(pids[1]), signal.SIGTERM)  # Process 1 only.
    assert launcher.wait(timeout=300) == 0, _logs(log_dir)
    stops = [
        re.search(r"saves a checkpoint at step (\d+)", (log_dir / f"process_{i}.log").read_text())
        for i in range(2)
    ]
    assert all(stops), _logs(log_dir)
    step = int(stops[0].group(1))
    assert int(stops[1].group(1)) == step and 16 <= step < 36
    saved = [int(name) for name in os.listdir(run / "checkpoints")]
    assert max(saved) == step  # Saved where both stopped.
    assert not (run / "results.json").exists()
    # Resumed on ONE process (this one), it ends as the 1-process run. (A run
    # stopped mid-interval logs its losses in parts: compared by state and evals.)
    before = len((run / "console.log").read_text())
    train_here(run)
    log = (run / "console.log").read_text()[before:]  # This run's lines.
    assert re.search(rf"Resumed from .* at step {step}\b", log), log[-3000:]
    _assert_same_run(uninterrupted, run, compare_losses=False)


def test_a_killed_process_ends_the_others_within_the_bound(tmp_path):
    log_dir = tmp_path / "logs"
    # LONG's program (compiled for the tests above): process 0 cannot pass the step
    # after the kill without process 1, so the run cannot end before it notices.
    launcher = _local(
        2,
        tmp_path / "run",
        log_dir,
        *LONG,
        f"--heartbeat_timeout_seconds={HEARTBEAT_SECONDS}",
        background=True,
    )
    _wait_for(log_dir / "process_1.log", r"step 8/36")
    pids = [int(pid) for pid in (log_dir / "pids").read_text().split()]
    os.kill(pids[1], signal.SIGKILL)
    killed = time.monotonic()
    while time.monotonic() - killed < DEATH_BOUND_SECONDS + 30:
        try:
            os.kill(pids[0], 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    elapsed = time.monotonic() - killed
    code = launcher.wait(timeout=60)
    assert code != 0
    assert elapsed < DEATH_BOUND_SECONDS, f"process 0 outlived process 1 by {elapsed:.0f} s"
    print(f"process 0 exited {elapsed:.1f} s after process 1 was killed")
