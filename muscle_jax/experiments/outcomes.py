"""A suite's runs read back from their directories: each run's `Outcome`.

Nothing here keeps state of its own: every figure is read back from the
runs' ``results.json``, so the reports can be rebuilt at any time
(``--report_only``), from a suite that is still running or was stopped.
The tables (`tables`, `results`), the plots (`plots`) and the dispatcher
read runs through this module alone, so none of them imports another.
"""

import dataclasses
import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

from muscle_jax import diagnostics
from muscle_jax.experiments.records import Run


@dataclasses.dataclass(frozen=True)
class Outcome:
    """A run and what its directory holds: ``results`` is None until it has finished."""

    run: Run
    results: dict[str, Any] | None

    @property
    def accuracy(self) -> float | None:
        return None if self.results is None else self.results["accuracy"]

    @property
    def worst_class_accuracy(self) -> float | None:
        """The lowest per-class accuracy at the final evaluation (EMA model)."""
        if self.results is None:
            return None
        per_class = [value for value in self.results["per_class_accuracy"] if value is not None]
        return min(per_class) if per_class else None

    @property
    def classes_lost(self) -> int | None:
        """How many classes the run lost (`diagnostics.lost_classes`) at the final evaluation.

        Counted from ``per_class_accuracy``, so a results.json written before
        ``classes_lost`` existed counts the same way.
        """
        if self.results is None:
            return None
        return len(diagnostics.lost_classes(self.results["per_class_accuracy"]))


def read_results(run_dir: str) -> dict[str, Any] | None:
    """A finished run's results.json, or None when the run has not finished."""
    path = os.path.join(run_dir, "results.json")
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        results = json.load(handle)
    return results if results.get("status") == "completed" else None


def collect(runs: Sequence[Run], workdir: str) -> list[Outcome]:
    return [Outcome(run, read_results(os.path.join(workdir, run.name))) for run in runs]


def by_seed(outcomes: Sequence[Outcome], setting: str, arm: str, measure: str = "accuracy"):
    """``{seed: value}`` of the finished runs in one cell of the table."""
    return {
        outcome.run.seed: getattr(outcome, measure)
        for outcome in outcomes
        if outcome.run.setting == setting
        and outcome.run.arm == arm
        and getattr(outcome, measure) is not None
    }


def ordered(values: Iterable) -> list:
    """``values`` without repeats, in the order they first came (the runs' order)."""
    return list(dict.fromkeys(values))


def settings_and_arms(outcomes: Sequence[Outcome]) -> tuple[list[str], list[str]]:
    """The settings (rows) and arms (columns) of ``outcomes``, in the runs' order."""
    return (
        ordered(outcome.run.setting for outcome in outcomes),
        ordered(outcome.run.arm for outcome in outcomes),
    )
