"""A run survives a damaged checkpoint, holds its workdir alone, and reports what it measured."""

import json
import os
import socket
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

from muscle_jax import evaluation, train, workdir

from .helpers import load_config
from .test_train import REPO, _run_until_step


def _array_files(checkpoint):
    """The files holding a checkpoint's array bytes (TensorStore/OCDBT ``d/`` data files)."""
    return [
        os.path.join(root, name)
        for root, _, names in os.walk(checkpoint / "state")
        for name in names
        if os.path.basename(root) == "d"
    ]


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["random_bytes", "truncated"])
def test_unreadable_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, damage, caplog):
    config = load_config("tiny")
    uninterrupted = train.train_and_evaluate(config, str(tmp_path / "a"))

    stopped = _run_until_step(config, str(tmp_path / "b"), stop_after=8)
    assert stopped == {"status": "preempted", "step": 8}
    for victim in _array_files(tmp_path / "b" / "checkpoints" / "8"):
        size = os.path.getsize(victim)
        with open(victim, "r+b") as handle:
            if damage == "random_bytes":
                handle.write(np.random.default_rng(0).bytes(size))
            else:
                handle.truncate(min(size, 1000) // 2)

    resumed = train.train_and_evaluate(config, str(tmp_path / "b"))

    assert resumed["history"] == uninterrupted["history"]
    assert resumed["accuracy"] == uninterrupted["accuracy"]
    moved = os.listdir(tmp_path / "b" / "checkpoints.unreadable")
    assert len(moved) == 1 and moved[0].startswith("8-")  # Moved aside, not deleted.
    warnings = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert len(warnings) == 1 and "step 8" in warnings[0]


@pytest.mark.slow
def test_no_readable_checkpoint_is_one_clear_error(tmp_path):
    config = load_config("tiny")
    _run_until_step(config, str(tmp_path), stop_after=3)
    for victim in _array_files(tmp_path / "checkpoints" / "3"):
        with open(victim, "r+b") as handle:
            handle.truncate(10)
    with pytest.raises(train.checkpointing.UnreadableCheckpointError, match="new --workdir"):
        train.train_and_evaluate(config, str(tmp_path))
    assert os.listdir(tmp_path / "checkpoints.unreadable")


def test_second_lock_on_a_workdir_is_refused_and_released_after(tmp_path):
    with workdir.lock(str(tmp_path)) as holder:
        lock_file = json.loads((tmp_path / workdir.LOCK_NAME).read_text())
        assert lock_file["pid"] == os.getpid() == holder["pid"]
        with pytest.raises(
            workdir.WorkdirError, match=f"in use by another run .*pid {os.getpid()}"
        ):
            with workdir.lock(str(tmp_path)):
                pass
    assert not (tmp_path / workdir.LOCK_NAME).exists()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    stale = {"host": socket.gethostname(), "pid": int(dead.stdout), "started": "earlier"}
    (tmp_path / workdir.LOCK_NAME).write_text(json.dumps(stale))
    with workdir.lock(str(tmp_path)) as holder:
        assert json.loads((tmp_path / workdir.LOCK_NAME).read_text())["pid"] == holder["pid"]


def test_lock_of_another_host_is_refused_with_what_to_do(tmp_path):
    other = {"host": "some-other-host", "pid": 1, "started": "2026-01-01T00:00:00+00:00"}
    (tmp_path / workdir.LOCK_NAME).write_text(json.dumps(other))
    with pytest.raises(workdir.WorkdirError, match=r"some-other-host.*delete the lock"):
        with workdir.lock(str(tmp_path)):
            pass
    assert json.loads((tmp_path / workdir.LOCK_NAME).read_text()) == other  # Left as it was.


@pytest.mark.slow
def test_run_on_a_locked_workdir_is_refused_before_training(tmp_path):
    config = load_config("tiny")
    with workdir.lock(str(tmp_path)):
        with pytest.raises(workdir.WorkdirError, match="in use by another run"):
            train.train_and_evaluate(config, str(tmp_path))
    assert not (tmp_path / "checkpoints").exists()


def test_json_is_written_with_the_umask_mode(tmp_path):
    previous = os.umask(0o022)
    try:
        workdir.write_json(str(tmp_path / "results.json"), {"a": 1})
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(tmp_path / "results.json").st_mode) == 0o644


@pytest.mark.parametrize(
    "steps, total, last, expected",
    [
        # A short smoke run: evaluations at 100, 200, 300 of 300; only 300 counts.
        ([100, 200, 300], 300, 5, [2]),
        # The last `last` of the last quarter.
        ([2, 4, 6, 8, 10, 12, 14, 16], 16, 2, [6, 7]),
        ([2, 4, 6, 8, 10, 12, 14, 16], 16, 5, [6, 7]),
        # A single evaluation at the end counts even when the rule would leave none.
        ([10], 10, 20, [0]),
        # Evaluations only in the first half (a run stopped early): the last one.
        ([1, 2], 10, 5, [1]),
    ],
)
def test_headline_is_the_median_of_late_evaluations(steps, total, last, expected):
    assert evaluation.reported_evaluations(steps, last=last, total_steps=total) == expected


def test_headline_of_the_documented_smoke_run():
    # The README's digits smoke run printed 0.3967 from (0.25, 0.3967, 0.9367).
    indices = evaluation.reported_evaluations([100, 200, 300], last=5, total_steps=300)
    assert evaluation.reported_accuracy([0.25, 0.3967, 0.9367], indices) == 0.9367


@pytest.mark.slow
def test_results_carry_the_run_description(tmp_path):
    config = load_config("tiny")
    train.train_and_evaluate(config, str(tmp_path))
    results = json.loads((tmp_path / "results.json").read_text())
    run = results["run"]
    assert run["wall_seconds"] > 0 and run["started_at"] <= run["ended_at"]
    assert run["device_count"] == 8 and run["host"] == socket.gethostname()
    assert run["libraries"]["jax"] and run["libraries"]["flax"]
    assert results["accuracy_steps"] == [12]  # tiny evaluates at 6 and 12 of 12.
    assert results["timing"]["loop_steps"] == 11
    assert not (tmp_path / workdir.LOCK_NAME).exists()


@pytest.mark.slow
def test_resume_refuses_a_changed_schedule_and_allows_reporting_keys(tmp_path, caplog):
    config = load_config("tiny")
    _run_until_step(config, str(tmp_path), stop_after=4)
    longer = load_config("tiny")
    longer.total_steps = 16
    with pytest.raises(train.config_validation.ConfigError, match="total_steps: 12 -> 16"):
        train.train_and_evaluate(longer, str(tmp_path))

    relogged = load_config("tiny")
    relogged.log_every_steps = 2
    results = train.train_and_evaluate(relogged, str(tmp_path))
    assert results["steps"] == 12
    assert any("log_every_steps: 4 -> 2" in r.getMessage() for r in caplog.records)

    longer.allow_config_change_on_resume = True  # Extending a finished run, explicitly.
    assert train.train_and_evaluate(longer, str(tmp_path))["steps"] == 16


@pytest.mark.slow
def test_summary_and_plot_match_results(tmp_path):
    config = load_config("tiny")
    results = train.train_and_evaluate(config, str(tmp_path))
    summary = (tmp_path / "summary.md").read_text()
    assert f"Test accuracy (EMA model): {results['accuracy']:.4f}" in summary
    for step, ema in zip(results["history"]["step"], results["history"]["ema_accuracy"]):
        assert f"| {step} | {ema:.4f} |" in summary
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("results.json", "summary.md", "curves.png"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) & 0o044, name  # Group/other read.


def test_failed_validation_creates_nothing(tmp_path):
    bad = load_config("tiny")
    bad.data.batch_size = 0
    with pytest.raises(ValueError, match="batch_size=0"):
        train.train_and_evaluate(bad, str(tmp_path / "new_workdir"))
    assert not (tmp_path / "new_workdir").exists()


def test_help_exits_zero_and_lists_the_configs():
    completed = subprocess.run(
        [sys.executable, "-m", "muscle_jax.main", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "configs/digits.py" in completed.stdout and "config_defaults.py" in completed.stdout


@pytest.mark.slow
def test_second_process_on_a_workdir_is_refused_and_the_first_finishes(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    command = [
        sys.executable,
        "-m",
        "muscle_jax.main",
        "--config=configs/tiny.py",
        "--config.total_steps=60",
        f"--workdir={tmp_path}",
    ]
    first = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.time() + 120
    while not (tmp_path / workdir.LOCK_NAME).exists() and time.time() < deadline:
        time.sleep(0.2)
    started = time.time()
    second = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    refused_after = time.time() - started
    output, _ = first.communicate(timeout=600)
    assert second.returncode == 2, second.stdout + second.stderr
    assert f"pid {first.pid}" in second.stderr and second.stderr.count("error:") == 1
    assert refused_after < 30  # Refused at start-up (imports included), not after training.
    assert first.returncode == 0, output
    assert json.loads((tmp_path / "results.json").read_text())["steps"] == 60
    # The first run's progress and evaluation lines were copied to the workdir.
    log = (tmp_path / "console.log").read_text()
    assert "step 60/60 |" in log and "test accuracy EMA" in log
