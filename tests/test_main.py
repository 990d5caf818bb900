"""The command line's error handling, and what a run opens, in process."""

import pytest

from muscle_jax import config_validation, train

from .test_train import REPO


@pytest.fixture
def parsed_main(monkeypatch, tmp_path):
    from muscle_jax import main

    monkeypatch.chdir(REPO)
    main.FLAGS(["main", "--config=configs/tiny.py", f"--workdir={tmp_path / 'run'}"])
    yield main
    main.FLAGS.unparse_flags()


def _raise(error):
    def train_and_evaluate(config, workdir):
        raise error

    return train_and_evaluate


def test_the_users_errors_are_one_line(parsed_main, monkeypatch, capsys):
    monkeypatch.setattr(train, "train_and_evaluate", _raise(config_validation.ConfigError("bad")))
    with pytest.raises(SystemExit) as exit_info:
        parsed_main.main(["main"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().endswith("error: bad")


@pytest.mark.parametrize("error", [KeyError("a bug"), ValueError("a library failure")])
def test_other_errors_keep_their_traceback(parsed_main, monkeypatch, error):
    monkeypatch.setattr(train, "train_and_evaluate", _raise(error))
    with pytest.raises(type(error)):
        parsed_main.main(["main"])


def test_main_gives_tensorflow_no_accelerator_and_no_graph_optimizer(parsed_main, monkeypatch):
    import tensorflow as tf

    monkeypatch.setattr(
        train, "train_and_evaluate", lambda config, workdir: {"status": "preempted", "step": 0}
    )
    # The session's own setting (conftest.py) is undone, so that main's is what is seen.
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": False})
    try:
        parsed_main.main(["main"])
        assert tf.config.optimizer.get_experimental_options()["disable_meta_optimizer"]
    finally:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    assert tf.config.get_visible_devices("GPU") == []


@pytest.mark.slow
def test_a_run_opens_its_dataset_once(shared_runs):
    # The shared tiny run counted its calls of the digits loader while it trained.
    _, outcome = shared_runs.original("tiny")
    history = outcome["results"]["history"]
    assert len(history["step"]) == 2  # Two evaluations, one training stream...
    assert outcome["dataset_reads"] == 1  # ...and the data read once.


def test_verbose_adds_our_debug_lines_not_the_libraries(monkeypatch):
    import logging as std_logging

    from absl import logging

    from muscle_jax import main

    handler = std_logging.Handler()
    monkeypatch.setattr(std_logging.getLogger(), "handlers", [handler])
    monkeypatch.setattr(logging.get_absl_logger(), "filters", [])
    main._quiet_library_info_logs()

    def record(path, level):
        return std_logging.LogRecord("x", level, path, 1, "a line", None, None)

    ours = "/site-packages/muscle_jax/train.py"
    library = "/site-packages/orbax/checkpoint/manager.py"
    other = "/site-packages/jax/_src/compiler.py"
    assert handler.filter(record(ours, std_logging.DEBUG))
    assert not handler.filter(record(other, std_logging.DEBUG))  # -v 1: not theirs.
    assert handler.filter(record(other, std_logging.INFO))
    assert not handler.filter(record(library, std_logging.INFO))  # Orbax's INFO lines.
    assert handler.filter(record(library, std_logging.WARNING))
