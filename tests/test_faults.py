"""Faults a long run meets: kill -9 at any moment, torn checkpoints, NaNs, bad workdirs.

The kill tests run `python -m muscle_jax.main` in subprocesses, as a
scheduler would, and compare the final results with an uninterrupted run.
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

from muscle_jax import checkpointing, monitoring, train, workdir
from muscle_jax.config_validation import ConfigError

from .helpers import latest_state, load_config
from .shared_runs import short_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The killed runs are the shared tiny run (tests/shared_runs.py) with a checkpoint every
# 2 steps, which changes when it saves, not what it computes: the subprocesses see the
# session's 8 simulated devices and compilation cache, so that in-process run is their
# uninterrupted reference, bit for bit.
KILL_TOTAL_STEPS = 12
KILL_CHECKPOINT_EVERY = 2
TINY_FLAGS = [
    "--config=configs/tiny.py",
    f"--config.checkpoint_every_steps={KILL_CHECKPOINT_EVERY}",
]


def kill_config():
    config = load_config("tiny")
    config.checkpoint_every_steps = KILL_CHECKPOINT_EVERY
    return config


def main_command(workdir_path):
    return [sys.executable, "-m", "muscle_jax.main", *TINY_FLAGS, f"--workdir={workdir_path}"]


def kill_after_progress_lines(workdir_path, count, extra_delay):
    """Starts a run, waits for its ``count``-th progress line, SIGKILLs it ``extra_delay`` s later.

    Returns the exit code and the step that line reported (None if the run ended first).
    """
    process = subprocess.Popen(
        main_command(workdir_path),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 300
    step, seen = None, 0
    for line in process.stdout:
        match = re.search(rf"step (\d+)/{KILL_TOTAL_STEPS} \|", line)
        seen += bool(match)
        if seen == count or time.time() > deadline:
            step = int(match.group(1)) if match else None
            break
    time.sleep(extra_delay)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    return process.returncode, step


@pytest.mark.slow(heavy=True)
def test_kill_9_at_several_moments_then_resume_equals_uninterrupted(shared_runs, tmp_path):
    reference_run, _ = shared_runs.original("tiny")
    reference = json.loads((reference_run / "results.json").read_text())
    reference_state = latest_state(reference_run)

    run = tmp_path / "killed"
    # Progress lines come at every checkpoint step, right before the loop starts
    # an asynchronous checkpoint write, so a kill there lands mid-write; waiting
    # for later lines lets each run resume from a newer checkpoint first, and the
    # delays move the kill further into the write and the following steps.
    # Three kills: after the first checkpoint, and after 3 and 2 more of each
    # resumed run (about steps 2, 8 and 12 of 12: the last before the final
    # checkpoint and evaluation), so none can finish first.
    killed_at = []
    for count, delay in ((1, 0.0), (3, 0.0), (2, 0.05)):
        returncode, step = kill_after_progress_lines(run, count, delay)
        assert returncode == -signal.SIGKILL, (returncode, killed_at)
        killed_at.append(step)
    assert None not in killed_at and max(killed_at) > min(killed_at), killed_at
    print(f"killed after the progress lines of steps {killed_at}")
    # What the kills left resumes in any process: this one, as the reference ran.
    train.train_and_evaluate(kill_config(), str(run))
    resumed = json.loads((run / "results.json").read_text())

    assert resumed["history"] == reference["history"]
    assert resumed["accuracy"] == reference["accuracy"]
    assert resumed["per_class_accuracy"] == reference["per_class_accuracy"]
    for a, b in zip(jax.tree.leaves(latest_state(run)), jax.tree.leaves(reference_state)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_torn_checkpoint_is_never_loaded(shared_runs, tmp_path):
    run, _ = shared_runs.copy("short", tmp_path / "run")  # 4 steps, checkpoints at 2 and 4.
    checkpoints = run / "checkpoints"
    # A write killed half-way: Orbax's temporary directory for step 6, with a truncated file.
    torn = checkpoints / "6.orbax-checkpoint-tmp-1234"
    shutil.copytree(checkpoints / "4", torn)
    for file in sorted(torn.rglob("*")):
        if file.is_file():
            file.write_bytes(file.read_bytes()[: len(file.read_bytes()) // 2])
    assert checkpointing.Checkpointer(str(checkpoints), max_to_keep=3).latest_step() == 4

    config = short_config()
    config.total_steps = 6
    config.allow_config_change_on_resume = True  # Extends the finished run, on purpose.
    results = train.train_and_evaluate(config, str(run))
    assert results["steps"] == 6


@pytest.mark.slow
def test_nan_stops_the_run_naming_step_and_term(shared_runs, tmp_path):
    run, _ = shared_runs.copy("short", tmp_path / "run")
    config = short_config()
    good = latest_state(run, config)

    # Resume with a learning rate that overflows the weights at once.
    config.total_steps = 12
    config.log_every_steps = 4
    config.optimizer.learning_rate = 1e30
    config.allow_config_change_on_resume = True
    with pytest.raises(monitoring.NonFiniteLossError) as info:
        train.train_and_evaluate(config, str(run))
    message = str(info.value)
    assert "became non-finite at step" in message
    assert any(term in message for term in ("supervised", "total", "grad_norm"))
    reader = checkpointing.Checkpointer(str(run / "checkpoints"), max_to_keep=2)
    assert reader.latest_step() == 4
    for a, b in zip(jax.tree.leaves(latest_state(run, config)), jax.tree.leaves(good)):
        np.testing.assert_array_equal(a, b)


def test_workdir_that_is_a_file_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("precious")
    with pytest.raises(workdir.WorkdirError, match="not a directory"):
        train.train_and_evaluate(load_config("tiny"), str(blocker))
    with pytest.raises(workdir.WorkdirError, match="not writable"):
        train.train_and_evaluate(load_config("tiny"), str(blocker / "below"))
    assert blocker.read_text() == "precious"


def test_full_disk_is_refused_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(
        workdir.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 1024)
    )
    with pytest.raises(workdir.WorkdirError, match="MiB free"):
        train.train_and_evaluate(load_config("tiny"), str(tmp_path))
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_incompatible_checkpoint_is_refused_and_left_alone(shared_runs, tmp_path):
    run, _ = shared_runs.copy("short", tmp_path / "run")
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}

    other_model = short_config()
    other_model.model.kwargs.widths = (16, 16)
    with pytest.raises(checkpointing.IncompatibleCheckpointError, match="model_kwargs"):
        train.train_and_evaluate(other_model, str(run))
    other_classes = short_config()
    other_classes.data.num_classes = 20  # (40 labels still split over the classes.)
    with pytest.raises(ConfigError, match="num_classes=20"):
        train.train_and_evaluate(other_classes, str(run))
    after = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    assert after == before


BAD_CONFIGS = [
    ("data.name", "no_such_dataset", "no_such_dataset"),
    ("data.batch_size", 0, "batch_size=0"),
    ("data.num_labeled", 5000, "num_labeled=5000"),
    ("data.unlabeled_ratio", -1, "unlabeled_ratio=-1"),
    ("data.eval_batch_size", 7, "eval_batch_size=7"),
    ("data.num_classes", 5, "num_classes=5"),
    ("data.num_labeled", 45, "45 labels over 10 classes leaves 5 over"),
    ("data.unlabeled_imbalance_ratio", 0.5, "unlabeled_imbalance_ratio=0.5 must be 1"),
    ("data.num_validation", -1, "num_validation=-1"),
    ("model.name", "resnet1000", "resnet1000"),
    ("model.compute_dtype", "fp8", "fp8"),
    ("total_steps", 0, "total_steps=0"),
    ("ema_decay", 1.0, "ema_decay=1.0"),
]


def test_bad_inputs_fail_before_training_and_keep_earlier_outputs(
    shared_runs, tmp_path, monkeypatch
):
    run, _ = shared_runs.copy("short", tmp_path / "run")
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}

    def built(*args, **kwargs):
        raise AssertionError("a bad config reached the model and optimiser")

    # Refused before anything is built or compiled: reaching the build is the failure
    # (a wall-clock bound here failed on loaded machines).
    monkeypatch.setattr(train, "create_train_state", built)
    for key, value, fragment in BAD_CONFIGS:
        bad = load_config("tiny")
        section, _, name = key.rpartition(".")
        (bad[section] if section else bad)[name] = value
        with pytest.raises(ValueError) as info:
            train.train_and_evaluate(bad, str(run))
        assert fragment in str(info.value), (key, str(info.value))
    monkeypatch.undo()
    missing = load_config("tiny", "dataset=cifar10")
    missing.data.data_dir = str(tmp_path / "no_tfds_here")
    with pytest.raises(FileNotFoundError, match="no_tfds_here"):
        train.train_and_evaluate(missing, str(run))
    after = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    assert after == before
