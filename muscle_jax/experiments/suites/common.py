"""What several suites share: the four arms of the label sweep, label counts, checks, names.

The arms here mean the same in every suite that runs them: MUSCLE, its base
method alone, supervised + MI and supervised only.
"""

import math
from collections.abc import Sequence

import ml_collections

from muscle_jax.experiments.records import Arm, Run, SuiteError, SuiteOptions

MUSCLE = Arm("muscle", "MUSCLE ({base} + MI)", mi=True)  # The base method + MI: MUSCLE.
BASE = Arm("base", "{base}")  # The base method alone (same consistency, MI off).
SUPERVISED_MI = Arm("supervised_mi", "supervised + MI", method="none", mi=True)  # No consistency.
SUPERVISED = Arm("supervised", "supervised", method="supervised")  # The labeled images only.
ARMS = (MUSCLE, BASE, SUPERVISED_MI, SUPERVISED)

# Per-class label counts of the default label sweep: 1, 2, 4 and 10 labels a
# class is where SSL methods separate (the protocol's CIFAR-10 counts are 4,
# 25 and 400 a class; on a dataset as easy as digits 10 a class is the ceiling).
DEFAULT_LABELS_PER_CLASS = (1, 2, 4, 10)
# The suites that run at one label count run at 2 a class unless they say otherwise.
DEFAULT_ONE_COUNT_PER_CLASS = 2
ONE_COUNT_HELP = f"the one label count (default {DEFAULT_ONE_COUNT_PER_CLASS} per class)"


def base_method(config: ml_collections.ConfigDict) -> str:
    """The consistency method MUSCLE adds MI to in ``config``."""
    method = config.loss.consistency
    if method == "none":
        raise SuiteError(
            "The suites compare MUSCLE with its base method, but the config's method has no "
            "consistency loss (method=none or supervised). Give one after the config's ':', "
            "e.g. --config=configs/digits.py:method=fixmatch."
        )
    return method


def default_label_counts(config: ml_collections.ConfigDict) -> tuple[int, ...]:
    return tuple(per_class * config.data.num_classes for per_class in DEFAULT_LABELS_PER_CLASS)


def one_label_count(
    config: ml_collections.ConfigDict,
    options: SuiteOptions,
    suite: str,
    default: int | None = None,
) -> int:
    """The one label count a suite runs at: --label_counts' one value, or the suite's default.

    Without a default of its own, a suite runs at DEFAULT_ONE_COUNT_PER_CLASS labels a class.
    """
    if options.label_counts is None:
        if default is not None:
            return default
        return DEFAULT_ONE_COUNT_PER_CLASS * config.data.num_classes
    if len(options.label_counts) != 1:
        raise SuiteError(
            f"The {suite} suite runs at one label count; --label_counts gave "
            f"{list(options.label_counts)}."
        )
    return options.label_counts[0]


def check_counts(counts, num_classes, *, balanced, ratios=(1.0,)):
    """Refuses a label count the split cannot make (before any run opens the data)."""
    from muscle_jax.data import splits  # Deferred: the data package imports TF lazily.

    for count in counts:
        for ratio in ratios if not balanced else (1.0,):
            try:
                splits.per_class_counts(count, num_classes, imbalance_ratio=ratio)
            except ValueError as error:
                raise SuiteError(f"Label count {count}: {error}") from None


def number(value: float) -> str:
    """``10.0`` -> ``"10"``, ``0.3`` -> ``"0.3"``: how swept numbers are named."""
    value = float(value)
    return str(int(value)) if math.isfinite(value) and value.is_integer() else repr(value)


def label_count_runs(
    suite: str, count: int, options: SuiteOptions, arms: Sequence[Arm], base: str
) -> list[Run]:
    """One run per seed and arm at ``count`` labels: the setting ``"<count> labels"``."""
    return [
        Run(
            suite=suite,
            setting=f"{count} labels",
            arm=arm.name,
            seed=seed,
            overrides=(("data.num_labeled", str(count)), ("seed", str(seed))),
            varied=(("num_labeled", str(count)),),
            **arm.variant(base),
        )
        for seed in options.seeds
        for arm in arms
    ]
