"""The registry of suites: `register` a `Suite`, `get` it by name, `build` its runs.

The built-in suites register themselves when `muscle_jax.experiments.suites`
is imported; this module imports none of them, so each can import it.
"""

from collections.abc import Sequence

import ml_collections

from muscle_jax.experiments.records import Run, Suite, SuiteError, SuiteOptions
from muscle_jax.experiments.suites.common import base_method

_REGISTRY: dict[str, Suite] = {}


def register(suite: Suite) -> Suite:
    """Makes ``suite`` selectable as ``--suite=<suite.name>``; returns it.

    Raises:
      ValueError: the name is taken.
    """
    if suite.name in _REGISTRY:
        raise ValueError(f"A suite called {suite.name!r} is already registered.")
    _REGISTRY[suite.name] = suite
    return suite


def unregister(name: str) -> None:
    """Removes a suite (for tests that register their own)."""
    _REGISTRY.pop(name)


def names() -> tuple[str, ...]:
    """What ``--suite`` accepts, in the order they were registered."""
    return tuple(_REGISTRY)


def registered() -> tuple[Suite, ...]:
    return tuple(_REGISTRY.values())


def get(name: str) -> Suite:
    if name not in _REGISTRY:
        raise SuiteError(f"Unknown suite {name!r}; choose one of {', '.join(_REGISTRY)}.")
    return _REGISTRY[name]


def build(
    suite: str, config: ml_collections.ConfigDict, options: SuiteOptions, *, pinned: Sequence[str]
) -> list[Run]:
    """The runs of ``suite`` for ``config`` (the user's config with their overrides).

    Args:
      pinned: the config keys the user set on the command line
        (``--config.KEY``); a suite refuses to run when it would vary one of them.

    Raises:
      SuiteError: an unknown suite, arm or option, or a swept value the
        config's dataset cannot take; before anything runs.
    """
    record = get(suite)
    _check_options(config, options)
    runs = record.build(record, config, options, base_method(config))
    for run in runs:
        for key, _ in run.overrides:
            if key in pinned and key not in record.derived:
                raise SuiteError(
                    f"--config.{key} is what the {suite} suite varies; give the values with "
                    f"the suite's own flag (see --help) instead of fixing it on the command line."
                )
    return runs


def _check_options(config: ml_collections.ConfigDict, options: SuiteOptions) -> None:
    """What every suite needs: distinct seeds, and the class count before any data is opened."""
    if not options.seeds:
        raise SuiteError("--seeds is empty; give at least one seed, e.g. --seeds=0,1,2.")
    if len(set(options.seeds)) != len(options.seeds):
        raise SuiteError(f"--seeds repeats a seed: {list(options.seeds)}.")
    if not config.data.num_classes:
        # The suites count labels a class before any data is opened.
        raise SuiteError(
            "data.num_classes=0 (the data's count, read when a run opens it), but a suite "
            "sizes its label counts by the class count before any run starts: give "
            "--config.data.num_classes=N."
        )
