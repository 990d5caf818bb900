"""The command line's error handling, and what a run opens, in process."""

import pytest

from muscle_jax import config_validation, train
from muscle_jax.data import sources

from .helpers import load_config
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


def test_a_run_opens_its_dataset_once(monkeypatch, tmp_path):
    calls = []
    real_load = sources.digits.load

    def counting_load():
        calls.append(1)
        return real_load()

    monkeypatch.setattr(sources.digits, "load", counting_load)
    config = load_config("tiny")
    results = train.train_and_evaluate(config, str(tmp_path))
    assert len(results["history"]["step"]) == 2  # Two evaluations, one training stream...
    assert len(calls) == 1  # ...and the data read once.
