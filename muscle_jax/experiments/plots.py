"""A suite's PNG plots: accuracy and the paired gains, with error bars.

Accuracy panels show mean ± standard deviation over seeds; gain panels show
the paired difference with its 95 % confidence interval (`statistics`), the
same figures as results.md. A suite names its plots in its `Suite` record:
a `Lines` plot (accuracy against the swept number, and the gains) or a
`Bars` plot (one bar per setting and arm).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from muscle_jax import workdir as workdir_lib
from muscle_jax.experiments import statistics
from muscle_jax.experiments.outcomes import Outcome, by_seed, settings_and_arms
from muscle_jax.experiments.records import Suite

if TYPE_CHECKING:  # matplotlib loads when a plot is drawn: it is slow to import.
    from matplotlib.figure import Figure


def write(workdir: str, suite: Suite, outcomes: Sequence[Outcome], *, base: str):
    """Draws the suite's plots (`Suite.plots`) into ``workdir``; none without a finished run."""
    if not any(outcome.results for outcome in outcomes):
        return
    for plot in suite.plots:
        figure = plot.figure(suite, outcomes, base)
        figure.tight_layout()
        workdir_lib.write_atomically(
            os.path.join(workdir, plot.filename),
            lambda handle, figure=figure: figure.savefig(handle, dpi=90, format="png"),
            binary=True,
        )


def label_count(setting: str) -> float:
    """The number a setting starts with: ``"20 labels"``."""
    return float(setting.split()[0])


def swept_value(setting: str) -> float:
    """The number after the first word: ``"ratio 10, unlabeled same"``, ``"noise 0.2"``."""
    return float(setting.split()[1].rstrip(","))


@dataclasses.dataclass(frozen=True)
class Lines:
    """Each measure against the swept number per arm, then the ``gains`` (paired, 95 % CI).

    Attributes:
      filename: the PNG's name in the suite's directory.
      x_label: the swept number's axis label; ``x_of`` reads it from a setting.
      measures: `Outcome` fields, one panel each.
      gains: ``(a, b)`` pairs drawn as ``a - b`` in the last panel.
      log_x: a log axis (False for numbers that start at 0, such as noise levels).
    """

    filename: str
    x_label: str
    x_of: Callable[[str], float]
    measures: tuple[str, ...] = ("accuracy",)
    gains: tuple[tuple[str, str], ...] = (("muscle", "base"),)
    log_x: bool = True

    def figure(self, suite: Suite, outcomes: Sequence[Outcome], base: str) -> Figure:
        from matplotlib.figure import Figure  # Object API: no global state, no GUI backend.

        figure = Figure(figsize=(5.5 * (len(self.measures) + 1), 4.2))
        axes = figure.subplots(1, len(self.measures) + 1)
        for axis, measure in zip(axes, self.measures):
            self._accuracy_lines(axis, suite, outcomes, base, measure)
            axis.set(xlabel=self.x_label, ylabel=f"test {measure.replace('_', ' ')} (%)")
        self._gain(axes[-1], suite, outcomes, base)
        axes[-1].set(xlabel=self.x_label)
        return figure

    def _accuracy_lines(self, axis, suite, outcomes, base, measure):
        settings, arms = settings_and_arms(outcomes)
        for suffix, series in _series(settings).items():
            for arm in filter(suite.reported, arms):
                xs, means, stds = [], [], []
                for setting in series:
                    summary = statistics.summarise(
                        list(by_seed(outcomes, setting, arm, measure).values())
                    )
                    if summary.n:
                        xs.append(self.x_of(setting))
                        means.append(100 * summary.mean)
                        stds.append(0.0 if math.isnan(summary.std) else 100 * summary.std)
                if xs:
                    label = suite.arm_label(arm, base) + (f" ({suffix})" if suffix else "")
                    axis.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=label)
        axis.set_xscale("log" if self.log_x else "linear")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
        axis.set_title(f"{measure.replace('_', ' ')}: mean ± std over seeds")

    def _gain(self, axis, suite, outcomes, base):
        """Each gain ``a - b`` against the swept number, with its 95 % CI."""
        settings, _ = settings_and_arms(outcomes)
        pairs = self.gains
        lines = [
            (pair, suffix, series, measure)
            for pair in pairs
            for suffix, series in _series(settings).items()
            for measure in self.measures
        ]
        for (a, b), suffix, series, measure in lines:
            xs, means, lows, highs = [], [], [], []
            for setting in series:
                difference = statistics.paired_difference(
                    by_seed(outcomes, setting, a, measure), by_seed(outcomes, setting, b, measure)
                )
                if difference.n:
                    xs.append(self.x_of(setting))
                    means.append(100 * difference.mean)
                    two = difference.n >= 2
                    lows.append(100 * (difference.mean - difference.low) if two else 0.0)
                    highs.append(100 * (difference.high - difference.mean) if two else 0.0)
            if xs:
                label = measure.replace("_", " ") + (f" ({suffix})" if suffix else "")
                if len(pairs) > 1:
                    label = f"{suite.arm_label(a, base)} − {suite.arm_label(b, base)}"
                axis.errorbar(xs, means, yerr=[lows, highs], marker="o", capsize=3, label=label)
        axis.axhline(0, color="black", linewidth=0.8)
        axis.set_xscale("log" if self.log_x else "linear")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
        a, b = pairs[0]
        title = f"{suite.arm_label(a, base)} − {suite.arm_label(b, base)}"
        if len(pairs) > 1:
            title = "differences"
        axis.set(ylabel="points (%)", title=f"{title}: paired, 95 % CI")


def _series(settings) -> dict[str, list[str]]:
    """Settings grouped by what follows the swept number (the bias suite's unlabeled pool)."""
    groups: dict[str, list[str]] = {}
    for setting in settings:
        _, _, rest = setting.partition(",")
        groups.setdefault(rest.strip(), []).append(setting)
    return groups


def arm_bar(suite: Suite, setting: str, arm: str, base: str) -> str:
    """A bar named by its arm (a suite with one setting)."""
    return suite.arm_label(arm, base)


def setting_bar(suite: Suite, setting: str, arm: str, base: str) -> str:
    """A bar named by its setting (a suite whose rows are its settings)."""
    return setting


@dataclasses.dataclass(frozen=True)
class Bars:
    """One bar per (setting, arm): mean ± std over seeds.

    Attributes:
      filename: the PNG's name in the suite's directory.
      bar_label: ``(suite, setting, arm, base) -> str``: a bar's tick label.
      width: the figure's width in inches (the bases suite has 28 bars by default).
    """

    filename: str
    bar_label: Callable[[Suite, str, str, str], str] = arm_bar
    width: float = 9

    def figure(self, suite: Suite, outcomes: Sequence[Outcome], base: str) -> Figure:
        from matplotlib.figure import Figure

        figure = Figure(figsize=(self.width, 4.2))
        axis = figure.subplots()
        labels, means, stds = [], [], []
        for setting, arm in dict.fromkeys((o.run.setting, o.run.arm) for o in outcomes):
            summary = statistics.summarise(list(by_seed(outcomes, setting, arm).values()))
            if not suite.reported(arm) or not summary.n:
                continue
            labels.append(self.bar_label(suite, setting, arm, base))
            means.append(100 * summary.mean)
            stds.append(0.0 if math.isnan(summary.std) else 100 * summary.std)
        positions = range(len(labels))
        axis.bar(positions, means, yerr=stds, capsize=4, color="tab:blue", alpha=0.8)
        axis.set_xticks(list(positions), labels, rotation=25, ha="right", fontsize=8)
        low = min(m - s for m, s in zip(means, stds)) if means else 0
        axis.set_ylim(max(0.0, low - 5), 100)
        axis.grid(axis="y", alpha=0.3)
        axis.set(ylabel="test accuracy (%)", title=f"{suite.name}: mean ± std over seeds")
        return figure
