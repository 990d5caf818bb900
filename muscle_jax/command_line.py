"""Turning a command line into a config and flags, for ``muscle_jax.main`` and ``.experiments``.

Both take ``--config=FILE[:VARIANTS]`` with ``--config.KEY=VALUE`` overrides
(and ``--config.model.kwargs.KEY=VALUE``, see `split_model_kwargs`). A
mistake in any of them is one line naming it and exit code 2, never a
traceback: `parse` turns what absl and ml_collections raise into a
`CommandLineError` with that line. The keys and their defaults are
`muscle_jax.config_defaults`'s; this module only reads the command line.

``--config.model.name=OTHER`` starts OTHER from its own defaults: the config
file's ``model.kwargs`` were written for the file's model (the small CNN's
``widths`` mean nothing to an MLP), so they are dropped; the command line's
own ``--config.model.kwargs.KEY=VALUE`` still apply.
"""

import ast
import os
import sys
from typing import Any

from absl import flags
from ml_collections import config_flags

from muscle_jax import config_defaults

CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


class CommandLineError(ValueError):
    """A flag, config file, variant or override that cannot be used; the message says which."""


def config_file_argument(argv) -> str | None:
    """The ``--config`` value (``FILE[:VARIANTS]``) of ``argv``, if any."""
    for index, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg[len("--config=") :]
        if arg == "--config" and index + 1 < len(argv):
            return argv[index + 1]
    return None


def check_config_file(argv) -> None:
    """Raises when ``--config`` names a file that is not there (the fix: where the configs are)."""
    value = config_file_argument(argv)
    if value is None:
        return
    path = value.split(":", 1)[0]
    if os.path.isfile(path):
        return
    hint = f"The shipped configs are in {CONFIGS_DIR}"
    shipped = os.path.join(CONFIGS_DIR, os.path.basename(path))
    if os.path.isfile(shipped):
        hint = f"Did you mean --config={shipped}{value[len(path) :]}? ({hint}.)"
    raise CommandLineError(
        f"--config={value}: no config file {path} (relative to {os.getcwd()}). {hint}"
    )


def describe(error: Exception) -> str:
    """One line for what absl or ml_collections raised about the command line."""
    if isinstance(error, (AttributeError, KeyError)):
        # ml_collections wraps the KeyError of an unknown key, its text quoted.
        inner = error
        while inner.args and isinstance(inner.args[0], BaseException):
            inner = inner.args[0]
        text = inner.args[0] if inner.args and isinstance(inner.args[0], str) else str(inner)
        return "unknown config key " + " ".join(text.split())
    text = str(error)
    marker = "Traceback (most recent call last)"
    if marker in text:
        # A config file's own error, which ml_collections embeds with its traceback.
        head, _, tail = text.partition(marker)
        lines = [line.strip() for line in tail.splitlines() if line.strip()]
        return f"{' '.join(head.split()).rstrip(':')}: {lines[-1] if lines else ''}"
    return " ".join(text.split())


def moved_key_problems(args) -> list[str]:
    """``--config.OLD=...`` arguments of keys that moved into a section, with the new key."""
    problems = []
    for arg in args:
        if not arg.startswith("--config."):
            continue
        key = arg[len("--config.") :].split("=", 1)[0]
        if key in config_defaults.MOVED_KEYS:
            problems.append(f"--config.{key} is now --config.{config_defaults.MOVED_KEYS[key]}")
    return problems


MODEL_KWARGS_FLAG = "--config.model.kwargs."


def split_model_kwargs(args) -> tuple[list[str], dict[str, Any]]:
    """(the other arguments, {KEY: value}) of the ``--config.model.kwargs.KEY=VALUE`` arguments.

    ``model.kwargs`` go to the model's constructor, so their keys are the
    model's (a backbone of yours has its own): the locked config cannot know
    them, and the command line takes them apart from the other overrides.
    Values are Python literals (``8``, ``0.3``, ``(16, 32)``, ``'same'``);
    anything else is kept as a string.
    """
    rest, kwargs = [], {}
    for arg in args:
        if not (arg.startswith(MODEL_KWARGS_FLAG) and "=" in arg):
            rest.append(arg)
            continue
        key, _, text = arg[len(MODEL_KWARGS_FLAG) :].partition("=")
        if not key.isidentifier():
            raise ValueError(f"{arg}: {key!r} is not a keyword argument name.")
        try:
            kwargs[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            kwargs[key] = text
    return rest, kwargs


def parse_without_model_kwargs(flag_values, argv: list[str]) -> list[str]:
    """``flag_values(argv)`` for ``argv`` without the model kwargs (`split_model_kwargs`).

    ml_collections' config flag reads the overrides from ``sys.argv`` itself, not
    from the arguments it is given, so ``sys.argv`` is ``argv`` while it parses.
    """
    saved = sys.argv
    sys.argv = list(argv)
    try:
        return flag_values(argv)
    finally:
        sys.argv = saved


def parse(flag_values, argv: list[str]) -> tuple[list[str], dict]:
    """Parses ``argv`` into ``flag_values``; raises `CommandLineError`.

    Returns absl's remaining arguments and the ``--config.model.kwargs.KEY=VALUE``
    ones, already set in the config (a suite passes them on to its runs).
    """
    check_config_file(argv)
    try:
        argv, model_kwargs = split_model_kwargs(argv)
        remaining = parse_without_model_kwargs(flag_values, argv)
        _drop_kwargs_of_a_replaced_model(flag_values)
        if model_kwargs:
            config_defaults.set_model_kwargs(flag_values.config, model_kwargs)
        return remaining, model_kwargs
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as error:
        raise CommandLineError(describe(error)) from None


def _drop_kwargs_of_a_replaced_model(flag_values) -> None:
    """Empties ``model.kwargs`` when ``--config.model.name`` named another model than the file's."""
    overrides = config_flags.get_override_values(flag_values["config"])
    if "model.name" not in overrides:
        return
    # The override flag's default is the value the config file gave.
    if overrides["model.name"] != flag_values["config.model.name"].default:
        config_defaults.set_model_kwargs(flag_values.config, None)


def exit_with(message: str) -> None:
    """Prints ``error: message`` on stderr and exits with 2 (a usage error)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
