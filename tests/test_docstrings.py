"""`muscle_jax.losses`' documentation standard: every public function is documented alike.

The examples themselves run as doctests (`--doctest-modules` over
`muscle_jax/losses` in setup.cfg); these tests keep every public function
carrying one, with its arguments, what it returns and where it comes from,
and keep the signatures readable (`ArrayLike`, not the Union it stands for).
"""

import configparser
import doctest
import inspect
import os
import re

import pytest

from muscle_jax import losses

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PUBLIC_FUNCTIONS = sorted(name for name in losses.__all__ if callable(getattr(losses, name)))

# A plain reduction, not a method from a paper.
WITHOUT_REFERENCES = {"masked_mean"}


def section(docstring: str, title: str) -> str | None:
    """The text of a Google-style section, up to the next unindented line."""
    match = re.search(rf"^{title}:\n((?:[ ]+.*\n|\n)+)", docstring + "\n", re.M)
    return match.group(1) if match else None


def documented_arguments(args: str) -> set[str]:
    """Names of an ``Args:`` section, including ``a, b: as in ...`` entries."""
    names = set()
    for line in args.splitlines():
        entry = re.match(r"^  (\w+(?:, \w+)*):", line)
        if entry:
            names.update(entry.group(1).split(", "))
    return names


@pytest.mark.parametrize("name", PUBLIC_FUNCTIONS)
def test_public_loss_function_is_documented(name):
    function = getattr(losses, name)
    docstring = inspect.getdoc(function)
    parameters = set(inspect.signature(function).parameters)
    problems = []
    if parameters:
        args = section(docstring, "Args")
        missing = parameters - documented_arguments(args or "")
        if missing:
            problems.append(f"Args: does not document {sorted(missing)}")
    if section(docstring, "Returns") is None:
        problems.append("no Returns: section")
    if name not in WITHOUT_REFERENCES and section(docstring, "References") is None:
        problems.append("no References: section")
    examples = doctest.DocTestParser().get_examples(docstring)
    if not examples or not any(example.want for example in examples):
        problems.append("no example with checked output")
    assert not problems, f"losses.{name}: " + "; ".join(problems)


@pytest.mark.parametrize("name", PUBLIC_FUNCTIONS)
def test_signature_reads_array_like(name):
    signature = str(inspect.signature(getattr(losses, name)))
    # The expanded alias would read "Union[jax.Array, numpy.ndarray, ...]".
    assert "ndarray" not in signature and "Union" not in signature, signature


def test_the_suite_runs_the_losses_doctests():
    config = configparser.ConfigParser()
    config.read(os.path.join(REPO, "setup.cfg"))
    pytest_options = config["tool:pytest"]
    assert "--doctest-modules" in pytest_options["addopts"].split()
    assert "muscle_jax/losses" in pytest_options["testpaths"].split()
