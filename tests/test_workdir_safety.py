"""A run survives a damaged checkpoint, holds its workdir alone, and reports what it measured."""

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

from muscle_jax import evaluation, train, workdir

from .helpers import load_config, xla_flags
from .shared_runs import PREEMPTED_AT
from .test_train import REPO


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
def test_unreadable_latest_checkpoint_falls_back_to_the_previous_one(
    shared_runs, tmp_path, damage, caplog
):
    config = load_config("tiny")
    _, uninterrupted = shared_runs.original("tiny")
    run, stopped = shared_runs.copy("tiny_preempted", tmp_path / "b")
    assert stopped["stopped"] == {"status": "preempted", "step": PREEMPTED_AT}
    for victim in _array_files(run / "checkpoints" / str(PREEMPTED_AT)):
        size = os.path.getsize(victim)
        with open(victim, "r+b") as handle:
            if damage == "random_bytes":
                handle.write(np.random.default_rng(0).bytes(size))
            else:
                handle.truncate(min(size, 1000) // 2)

    resumed = train.train_and_evaluate(config, str(run))

    assert resumed["history"] == uninterrupted["results"]["history"]
    assert resumed["accuracy"] == uninterrupted["results"]["accuracy"]
    moved = os.listdir(run / "checkpoints.unreadable")
    assert len(moved) == 1 and moved[0].startswith(f"{PREEMPTED_AT}-")  # Moved aside, kept.
    warnings = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert len(warnings) == 1 and f"step {PREEMPTED_AT}" in warnings[0]


@pytest.mark.slow
def test_no_readable_checkpoint_is_one_clear_error_and_a_rerun_says_it_starts_over(
    shared_runs, tmp_path, caplog
):
    run, _ = shared_runs.copy("tiny_preempted", tmp_path / "run")
    for step in (6, PREEMPTED_AT):  # Every checkpoint the stopped run kept.
        for victim in _array_files(run / "checkpoints" / str(step)):
            with open(victim, "r+b") as handle:
                handle.truncate(10)
    with pytest.raises(
        train.checkpointing.UnreadableCheckpointError, match="starts over from step 0"
    ):
        train.train_and_evaluate(load_config("tiny"), str(run))
    assert len(os.listdir(run / "checkpoints.unreadable")) == 2
    # The same command again: a new run from step 0, which says so and where they went.
    caplog.clear()
    assert train.train_and_evaluate(load_config("tiny"), str(run))["steps"] == 12
    said = [r.getMessage() for r in caplog.records if "Starting over from step 0" in r.getMessage()]
    assert len(said) == 1 and f"{run / 'checkpoints.unreadable'} (2 of them" in said[0]


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


@pytest.mark.slow(heavy=True)
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


def test_results_carry_the_run_description(shared_runs):
    run_dir, _ = shared_runs.original("tiny")
    results = json.loads((run_dir / "results.json").read_text())
    run = results["run"]
    assert run["wall_seconds"] > 0 and run["started_at"] <= run["ended_at"]
    assert run["device_count"] == 8 and run["host"] == socket.gethostname()
    assert run["libraries"]["jax"] and run["libraries"]["flax"]
    assert results["accuracy_steps"] == [12]  # tiny evaluates at 6 and 12 of 12.
    assert results["timing"]["loop_steps"] == 11
    assert not (run_dir / workdir.LOCK_NAME).exists()


@pytest.mark.slow
def test_resume_refuses_a_changed_schedule_and_allows_reporting_keys(shared_runs, tmp_path, caplog):
    run, _ = shared_runs.copy("tiny_preempted", tmp_path / "run")
    longer = load_config("tiny")
    longer.total_steps = 16
    with pytest.raises(train.config_validation.ConfigError, match="total_steps: 12 -> 16"):
        train.train_and_evaluate(longer, str(run))

    relogged = load_config("tiny")
    relogged.log_every_steps = 2
    results = train.train_and_evaluate(relogged, str(run))
    assert results["steps"] == 12
    assert any("log_every_steps: 4 -> 2" in r.getMessage() for r in caplog.records)

    longer.allow_config_change_on_resume = True  # Extending a finished run, explicitly.
    assert train.train_and_evaluate(longer, str(run))["steps"] == 16


def test_summary_and_plot_match_results(shared_runs):
    run, outcome = shared_runs.original("tiny")
    results = outcome["results"]
    summary = (run / "summary.md").read_text()
    assert f"Test accuracy (EMA model): {results['accuracy']:.4f}" in summary
    for step, ema in zip(results["history"]["step"], results["history"]["ema_accuracy"]):
        assert f"| {step} | {ema:.4f} |" in summary
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("results.json", "summary.md", "curves.png"):
        assert stat.S_IMODE(os.stat(run / name).st_mode) & 0o044, name  # Group/other read.


def test_failed_validation_creates_nothing(tmp_path):
    bad = load_config("tiny")
    bad.data.batch_size = 0
    with pytest.raises(ValueError, match="batch_size=0"):
        train.train_and_evaluate(bad, str(tmp_path / "new_workdir"))
    assert not (tmp_path / "new_workdir").exists()


@pytest.mark.slow
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


@pytest.mark.slow(heavy=True)
def test_second_process_is_refused_and_sigterm_leaves_a_restorable_checkpoint(tmp_path):
    """Two real `python -m muscle_jax.main` on one workdir: the second is refused at once;
    a SIGTERM then stops the first at a step, with a checkpoint a resume continues from."""
    env = dict(os.environ, XLA_FLAGS=xla_flags(devices=2))
    command = [
        sys.executable,
        "-m",
        "muscle_jax.main",
        "--config=configs/tiny.py",
        f"--workdir={tmp_path}",
        "--config.total_steps=100000",
        "--config.log_every_steps=1",
        "--config.eval_every_steps=2",
        "--config.checkpoint_every_steps=100000",
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
    assert second.returncode == 2, second.stdout + second.stderr
    assert f"pid {first.pid}" in second.stderr and second.stderr.count("error:") == 1
    # Refused at start-up, not after training: it made no step, and the first run
    # (100,000 steps) is still going. (A wall-clock bound here failed under load.)
    assert "step " not in second.stdout + second.stderr
    assert first.poll() is None, f"refused only after {time.time() - started:.0f} s"

    deadline = time.time() + 240
    for line in first.stdout:
        if "step 3/" in line or time.time() > deadline:
            break
    first.send_signal(signal.SIGTERM)
    output, _ = first.communicate(timeout=120)
    assert first.returncode == 0, output
    assert "stopped at step" in output
    # The first run's progress and evaluation lines were copied to the workdir.
    log = (tmp_path / "console.log").read_text()
    assert "step 3/100000 |" in log and "test accuracy EMA" in log
    assert not (tmp_path / workdir.LOCK_NAME).exists()
    steps = train.checkpointing.Checkpointer(
        str(tmp_path / "checkpoints"), max_to_keep=2, read_only=True
    ).all_steps()
    assert steps and steps[-1] >= 3

    config = load_config("tiny")
    config.total_steps = steps[-1] + 2
    config.allow_config_change_on_resume = True  # A shorter run than the stopped one, on purpose.
    results = train.train_and_evaluate(config, str(tmp_path))
    assert results["steps"] == steps[-1] + 2
    assert json.loads((tmp_path / "results.json").read_text())["steps"] == steps[-1] + 2


def test_the_step_a_validation_set_chooses_and_its_test_accuracy():
    history = {
        "step": [10, 20, 30, 40],
        "ema_accuracy": [0.50, 0.70, 0.65, 0.80],
        "val_ema_accuracy": [0.40, 0.75, 0.75, 0.60],  # Best at 20 and 30: the earlier.
    }
    chosen = evaluation.chosen_by_validation(history, num_examples=30)
    assert chosen == {
        "num_examples": 30,
        "best_step": 20,
        "validation_accuracy": 0.75,
        "test_accuracy": 0.70,
    }
    assert evaluation.chosen_by_validation(history, num_examples=None) is None


def test_only_a_closed_loops_late_callbacks_are_dropped_after_a_failed_read(monkeypatch):
    import asyncio
    import sys
    import types

    def unraisable(run):
        try:
            run()
        except RuntimeError as error:
            return types.SimpleNamespace(
                exc_type=RuntimeError,
                exc_value=error,
                exc_traceback=error.__traceback__,
                err_msg=None,
                object=None,
            )
        raise AssertionError("expected a RuntimeError")

    loop = asyncio.new_event_loop()
    loop.close()
    late = unraisable(lambda: loop.call_soon_threadsafe(print))  # What TensorStore's threads hit.

    def other_error():
        raise RuntimeError("Event loop is closed")  # The same text from elsewhere: kept.

    other = unraisable(other_error)
    reached = []
    monkeypatch.setattr(sys, "unraisablehook", reached.append)
    train.checkpointing._drop_late_callbacks_of_failed_reads()
    train.checkpointing._drop_late_callbacks_of_failed_reads()  # Installed once.
    sys.unraisablehook(late)
    sys.unraisablehook(other)
    assert reached == [other]
