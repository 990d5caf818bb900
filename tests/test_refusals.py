"""A refused run writes nothing, a finished run asked again writes nothing, a refusal is one line.

"Nothing" is checked on a listing of every path with its size and
modification time, the directory itself included: a refused run creates no
workdir, no data cache, no lock, no event file, and touches no earlier file.
"""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from muscle_jax import config_validation, preemption, train, workdir
from muscle_jax.data import sources

from .helpers import load_config, xla_flags
from .shared_runs import short_config
from .test_custom_data import make_image_folder
from .test_train import REPO


def listing(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` and ``root`` itself: (size of a file or None, mtime in ns)."""
    if not root.exists():
        return {}
    entries = {".": (None, root.stat().st_mtime_ns)}
    for path in sorted(root.rglob("*")):
        stat = path.lstat()
        entries[str(path.relative_to(root))] = (
            stat.st_size if path.is_file() else None,
            stat.st_mtime_ns,
        )
    return entries


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """Three classes of 16x16 pictures (`test_custom_data.make_image_folder`)."""
    folder = make_image_folder(tmp_path_factory.mktemp("refusals") / "pets", train=10, test=4)
    (folder / "train" / "left" / "notes.txt").unlink()  # Its warning is not under test.
    return folder


def folder_config(folder: Path, **data):
    """The tiny run on ``folder``; ``data`` overrides keys of the ``data`` section."""
    config = load_config("tiny")
    config.data.path = str(folder)
    config.data.image_size = 16
    config.data.num_classes = 3
    config.data.num_labeled = 6
    config.data.eval_batch_size = 8
    for key, value in data.items():
        config.data[key] = value
    return config


REFUSALS = {
    # A bad value, found with the config's own checks before the data opens.
    "config": ({"batch_size": 0}, config_validation.ConfigError, "batch_size=0"),
    # A class count the folder contradicts, found once the data is open (decoded).
    "data": ({"num_classes": 6}, config_validation.ConfigError, "num_classes=6"),
}


@pytest.mark.parametrize("kind", sorted(REFUSALS))
def test_a_refused_run_creates_no_workdir_and_no_cache(image_folder, tmp_path, kind):
    data, error, message = REFUSALS[kind]
    cache = tmp_path / "cache"  # data.data_dir: where an image folder's cache goes.
    cache.mkdir()
    before = {"folder": listing(image_folder), "cache": listing(cache)}
    for cache_dir in (None, str(cache)):
        with pytest.raises(error, match=message):
            train.train_and_evaluate(
                folder_config(image_folder, data_dir=cache_dir, **data), str(tmp_path / "run")
            )
        assert not (tmp_path / "run").exists()
        assert {"folder": listing(image_folder), "cache": listing(cache)} == before


def test_a_refused_run_leaves_an_existing_workdir_as_it_was(image_folder, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    before = listing(run)
    with pytest.raises(config_validation.ConfigError, match="num_classes=6"):
        train.train_and_evaluate(folder_config(image_folder, num_classes=6), str(run))
    assert listing(run) == before


@pytest.mark.parametrize("existing", [False, True])
def test_a_refusal_once_the_workdir_is_held_is_undone(
    image_folder, tmp_path, monkeypatch, existing
):
    # A refusal `_train` meets before its first step (here: building the model), once
    # the workdir was created, locked and its console.log opened.
    def refuse(*args, **kwargs):
        raise config_validation.ConfigError("refused while building")

    monkeypatch.setattr(train, "create_train_state", refuse)
    run = tmp_path / "run"
    if existing:
        run.mkdir()
        (run / "console.log").write_text("an earlier run's lines\n")
    files = {path: size for path, (size, _) in listing(run).items() if path != "."}
    with pytest.raises(config_validation.ConfigError, match="refused while building"):
        train.train_and_evaluate(folder_config(image_folder), str(run))
    assert run.exists() == existing
    assert {path: size for path, (size, _) in listing(run).items() if path != "."} == files


def test_a_workdir_refused_for_its_free_space_is_not_left_behind(tmp_path, monkeypatch):
    full = shutil._ntuple_diskusage(10**9, 10**9, 1024)
    monkeypatch.setattr(workdir.shutil, "disk_usage", lambda path: full)
    with pytest.raises(workdir.WorkdirError, match="MiB free"):
        workdir.prepare(str(tmp_path / "new" / "run"))
    assert list(tmp_path.iterdir()) == []


def test_restore_keeps_a_file_moved_aside_and_removes_what_the_run_made(tmp_path):
    (tmp_path / "checkpoints" / "6").mkdir(parents=True)
    (tmp_path / "checkpoints" / "6" / "state").write_text("weights")
    (tmp_path / "console.log").write_text("before\n")
    before = workdir.snapshot(str(tmp_path))
    # A run moves an unreadable checkpoint aside, logs, writes new files, then is refused.
    (tmp_path / "checkpoints.unreadable").mkdir()
    os.replace(tmp_path / "checkpoints" / "6", tmp_path / "checkpoints.unreadable" / "6-x")
    with open(tmp_path / "console.log", "a") as log:
        log.write("refused\n")
    (tmp_path / "events").mkdir()
    (tmp_path / "events" / "tfevents").write_text("new")
    workdir.restore(before)
    assert (tmp_path / "checkpoints.unreadable" / "6-x" / "state").read_text() == "weights"
    assert (tmp_path / "console.log").read_text() == "before\n"
    assert not (tmp_path / "events").exists()


@pytest.mark.slow
def test_a_finished_run_asked_again_writes_nothing(shared_runs, tmp_path, capsys, monkeypatch):
    run, outcome = shared_runs.copy("short", tmp_path / "run")
    before = listing(run)
    again = train.train_and_evaluate(short_config(), str(run))
    assert again["already_complete"] and again["accuracy"] == outcome["results"]["accuracy"]
    assert listing(run) == before  # No event file, no lock, no rewritten results.

    # The command line says so, with where the results are, and exits 0.
    from muscle_jax import main

    monkeypatch.chdir(REPO)
    try:
        main.parse_flags(
            [
                "main",
                "--config=configs/tiny.py",
                f"--workdir={run}",
                "--config.total_steps=4",
                "--config.checkpoint_every_steps=2",
                "--config.eval_every_steps=2",
                "--config.plot_curves=False",
            ]
        )
        main.main(["main"])  # Returns: exit code 0.
    finally:
        # Back to unparsed flags, without the --config.KEY flags parsing defined.
        for name in [name for name in main.FLAGS if name.startswith("config.")]:
            delattr(main.FLAGS, name)
        main.FLAGS.unparse_flags()
    printed = capsys.readouterr().out
    assert "already complete" in printed and str(run / "results.json") in printed
    assert listing(run) == before

    # A changed key is not "the same run": a longer one is refused as before.
    longer = short_config()
    longer.total_steps = 6
    with pytest.raises(config_validation.ConfigError, match="total_steps"):
        train.train_and_evaluate(longer, str(run))
    assert listing(run) == before


def test_an_incompatible_checkpoint_is_refused_before_anything_is_written(shared_runs, tmp_path):
    run, _ = shared_runs.copy("short", tmp_path / "run")
    (run / "results.json").unlink()  # A run stopped before its end: its checkpoints decide.
    before = listing(run)
    other = short_config()
    other.optimizer.learning_rate = 0.5
    with pytest.raises(config_validation.ConfigError, match="learning_rate"):
        train.train_and_evaluate(other, str(run))
    assert listing(run) == before


@pytest.mark.slow
def test_a_refusal_through_the_command_line_prints_its_error_alone(image_folder, tmp_path):
    """After TensorFlow, JAX and the data have started, stderr is the error and nothing else."""
    command = [
        sys.executable,
        "-m",
        "muscle_jax.main",
        "--config=configs/tiny.py",
        f"--config.data.path={image_folder}",
        "--config.data.image_size=16",
        "--config.data.num_labeled=6",
        "--config.data.num_classes=6",  # The folder has 3: found after the data opens.
        f"--workdir={tmp_path / 'run'}",
    ]
    # A user's environment: one device, TensorFlow's own log level (main sets it).
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env["XLA_FLAGS"] = xla_flags()
    before = listing(image_folder)
    completed = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert completed.returncode == 2, completed.stderr
    lines = completed.stderr.splitlines()
    assert lines[0].startswith("error: Config does not fit the dataset"), completed.stderr
    # The rest of the message: its list of problems, nothing a library printed.
    assert all(line.startswith("  - ") for line in lines[1:]), completed.stderr
    assert "num_classes=6" in completed.stderr and completed.stdout == ""
    assert not (tmp_path / "run").exists() and listing(image_folder) == before


def test_a_second_ctrl_c_quits_without_waiting_for_the_checkpoint():
    with preemption.stop_on_signals() as stop:
        os.kill(os.getpid(), signal.SIGINT)  # The first: a stop after this step.
        assert stop.should_stop(1) and stop.signal_name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # The second: quits, as Ctrl-C does.


def test_an_image_folder_cache_is_written_once_the_run_is_accepted(image_folder, tmp_path):
    source = sources.open_source(
        "unused", path=str(image_folder), image_size=16, cache_dir=str(tmp_path / "cache")
    )
    assert source.info.num_classes == 3 and not (tmp_path / "cache").exists()
    source.accept()
    assert len(list((tmp_path / "cache").glob("pets_*.npz"))) == 1
    source.accept()  # Once only.
    assert len(list((tmp_path / "cache").iterdir())) == 1
