"""A suite's PNG plots: accuracy and MUSCLE's gain over its base, with error bars.

Accuracy panels show mean ± standard deviation over seeds; gain panels show
the paired difference with its 95 % confidence interval (`statistics`), the
same figures as results.md.
"""

import math
import os
from collections.abc import Sequence

from muscle_jax import workdir as workdir_lib
from muscle_jax.experiments import results as results_lib
from muscle_jax.experiments import statistics, suites

PLOT_NAMES = {
    "label_sweep": ("accuracy_vs_labels.png",),
    "bias": ("accuracy_vs_imbalance.png",),
    "finetune": ("finetune.png",),
    "mi_ablation": ("mi_ablation.png",),
    "objectives": ("objectives.png",),
    "bases": ("bases.png",),
    "noise": ("accuracy_vs_noise.png",),
}


def write(workdir: str, suite: str, outcomes: Sequence[results_lib.Outcome], *, base: str):
    """Draws the suite's plots (`PLOT_NAMES`) into ``workdir``; skips one with no finished run."""
    if not any(outcome.results for outcome in outcomes):
        return
    from matplotlib.figure import Figure  # Object API: no global state, no GUI backend.

    if suite in ("label_sweep", "bias", "noise"):
        measures = ["accuracy"] + (["worst_class_accuracy"] if suite == "bias" else [])
        figure = Figure(figsize=(5.5 * (len(measures) + 1), 4.2))
        axes = figure.subplots(1, len(measures) + 1)
        x_of, x_label = {
            "label_sweep": (_label_count, "labeled examples"),
            "bias": (_ratio, "imbalance ratio of the labels"),
            "noise": (_ratio, "fraction of the labels made wrong"),
        }[suite]
        # Noise levels start at 0: a linear axis.
        log_x = suite != "noise"
        for axis, measure in zip(axes, measures):
            _accuracy_lines(axis, outcomes, base, measure, x_of, log_x=log_x)
            axis.set(xlabel=x_label, ylabel=f"test {measure.replace('_', ' ')} (%)")
        pairs = suites.NOISE_PAIRS[:2] if suite == "noise" else (suites.PAIRED[suite],)
        _gain(axes[-1], outcomes, base, pairs, measures, x_of, log_x=log_x)
        axes[-1].set(xlabel=x_label)
    else:
        # The bases suite has a bar per base, label count and arm: 28 by default.
        figure = Figure(figsize=(16 if suite == "bases" else 9, 4.2))
        axis = figure.subplots()
        _bars(axis, outcomes, base, suite)
    figure.tight_layout()
    workdir_lib.write_atomically(
        os.path.join(workdir, PLOT_NAMES[suite][0]),
        lambda handle: figure.savefig(handle, dpi=90, format="png"),
        binary=True,
    )


def _label_count(setting: str) -> float:
    return float(setting.split()[0])


def _ratio(setting: str) -> float:
    """The number after the first word: ``"ratio 10, unlabeled same"``, ``"noise 0.2"``."""
    return float(setting.split()[1].rstrip(","))


def _series(settings) -> dict[str, list[str]]:
    """Settings grouped by what follows the swept number (the bias suite's unlabeled pool)."""
    groups: dict[str, list[str]] = {}
    for setting in settings:
        _, _, rest = setting.partition(",")
        groups.setdefault(rest.strip(), []).append(setting)
    return groups


def _settings_and_arms(outcomes):
    settings = list(dict.fromkeys(outcome.run.setting for outcome in outcomes))
    arms = list(dict.fromkeys(outcome.run.arm for outcome in outcomes))
    return settings, arms


def _accuracy_lines(axis, outcomes, base, measure, x_of, log_x=True):
    settings, arms = _settings_and_arms(outcomes)
    for suffix, series in _series(settings).items():
        for arm in arms:
            xs, means, stds = [], [], []
            for setting in series:
                summary = statistics.summarise(
                    list(results_lib.by_seed(outcomes, setting, arm, measure).values())
                )
                if summary.n:
                    xs.append(x_of(setting))
                    means.append(100 * summary.mean)
                    stds.append(0.0 if math.isnan(summary.std) else 100 * summary.std)
            if xs:
                label = suites.arm_label(arm, base) + (f" ({suffix})" if suffix else "")
                axis.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=label)
    axis.set_xscale("log" if log_x else "linear")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title(f"{measure.replace('_', ' ')}: mean ± std over seeds")


def _gain(axis, outcomes, base, pairs, measures, x_of, log_x=True):
    """Each pair's paired difference ``a - b`` against the swept number, with its 95 % CI."""
    settings, _ = _settings_and_arms(outcomes)
    lines = [
        (pair, suffix, series, m)
        for pair in pairs
        for suffix, series in _series(settings).items()
        for m in measures
    ]
    for (a, b), suffix, series, measure in lines:
        xs, means, lows, highs = [], [], [], []
        for setting in series:
            difference = statistics.paired_difference(
                results_lib.by_seed(outcomes, setting, a, measure),
                results_lib.by_seed(outcomes, setting, b, measure),
            )
            if difference.n:
                xs.append(x_of(setting))
                means.append(100 * difference.mean)
                lows.append(0.0 if difference.n < 2 else 100 * (difference.mean - difference.low))
                highs.append(0.0 if difference.n < 2 else 100 * (difference.high - difference.mean))
        if xs:
            label = measure.replace("_", " ") + (f" ({suffix})" if suffix else "")
            if len(pairs) > 1:
                label = f"{suites.arm_label(a, base)} − {suites.arm_label(b, base)}"
            axis.errorbar(xs, means, yerr=[lows, highs], marker="o", capsize=3, label=label)
    axis.axhline(0, color="black", linewidth=0.8)
    axis.set_xscale("log" if log_x else "linear")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    a, b = pairs[0]
    title = f"{suites.arm_label(a, base)} − {suites.arm_label(b, base)}"
    if len(pairs) > 1:
        title = "differences"
    axis.set(ylabel="points (%)", title=f"{title}: paired, 95 % CI")


def _bars(axis, outcomes, base, suite):
    """One bar per (setting, arm): mean ± std over seeds."""
    labels, means, stds = [], [], []
    for outcome_key in dict.fromkeys((o.run.setting, o.run.arm) for o in outcomes):
        setting, arm = outcome_key
        if arm == suites.PRETRAIN:
            continue
        summary = statistics.summarise(list(results_lib.by_seed(outcomes, setting, arm).values()))
        if not summary.n:
            continue
        if suite == "mi_ablation":
            labels.append(setting)
        elif suite == "bases":
            labels.append(f"{setting}{' + MI' if arm == 'muscle' else ''}")
        else:
            labels.append(suites.arm_label(arm, base))
        means.append(100 * summary.mean)
        stds.append(0.0 if math.isnan(summary.std) else 100 * summary.std)
    positions = range(len(labels))
    axis.bar(positions, means, yerr=stds, capsize=4, color="tab:blue", alpha=0.8)
    axis.set_xticks(list(positions), labels, rotation=25, ha="right", fontsize=8)
    low = min(m - s for m, s in zip(means, stds)) if means else 0
    axis.set_ylim(max(0.0, low - 5), 100)
    axis.grid(axis="y", alpha=0.3)
    axis.set(ylabel="test accuracy (%)", title=f"{suite}: mean ± std over seeds")
