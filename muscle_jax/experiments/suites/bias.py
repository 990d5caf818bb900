"""The bias suite: long-tailed labels (imbalance ratios), overall and worst-class accuracy.

Beside the label sweep's arms it runs, by ``--arms``, bases made for
long-tailed pseudo-labels alone and with MI on top: is MI still worth adding
to them, and does MI alone do what they do?
"""

from collections.abc import Sequence

from muscle_jax.experiments import plots, tables
from muscle_jax.experiments.records import Arm, Run, Suite, SuiteError
from muscle_jax.experiments.suites import common
from muscle_jax.experiments.suites.registry import register

ARMS = (
    *common.ARMS,
    Arm("freematch", "freematch", method="freematch"),
    Arm("freematch_mi", "freematch + MI", method="freematch", mi=True),
    Arm("debiased", "debiased pseudo-labelling", method="debiased"),
    Arm("debiased_mi", "debiased pseudo-labelling + MI", method="debiased", mi=True),
    # The config's base with ABC's balanced head on top (the add-on role).
    Arm("abc", "{base} + ABC", addon="abc"),
    Arm("abc_mi", "{base} + ABC + MI", mi=True, addon="abc"),
)
# Beyond MUSCLE minus its base: each such method with MI against it alone, and
# ABC against the base it is added to.
PAIRS = (
    ("muscle", "base"),
    ("freematch_mi", "freematch"),
    ("debiased_mi", "debiased"),
    ("abc_mi", "abc"),
    ("abc", "base"),
)
DEFAULT_IMBALANCE_RATIOS = (1.0, 10.0, 100.0)
# The unlabeled pool: as the dataset has it, or long-tailed in the labels'
# order or the reversed one (data.unlabeled_imbalance_ratio = 1, r, -r).
UNLABELED_SETTINGS = {"balanced": 0, "same": 1, "reversed": -1}


def smallest_label_count_for(ratios: Sequence[float], num_classes: int, at_least: int) -> int:
    """The smallest multiple of ``num_classes`` >= ``at_least`` that gives every class a label.

    A long-tailed set with ratio r gives the last class about
    ``n (1 - q) / (1 - q^C) * q^(C-1)`` labels with ``q = r^(-1/(C-1))``;
    the split rounds that, so the count asked must leave it >= 1 for the
    largest ratio.
    """
    from muscle_jax.data import splits  # Deferred: the data package imports TF lazily.

    count = max(at_least, num_classes)
    count += -count % num_classes
    for _ in range(10_000):
        try:
            for ratio in ratios:
                splits.per_class_counts(count, num_classes, imbalance_ratio=ratio)
            return count
        except ValueError:
            count += num_classes
    raise SuiteError(f"No label count gives every class a label at imbalance ratios {ratios}.")


def _settings(ratios, unlabeled):
    """``(setting, pool overrides, pool varied)`` per ratio and unlabeled pool."""
    unknown = [name for name in unlabeled if name not in UNLABELED_SETTINGS]
    if unknown:
        raise SuiteError(
            f"--unlabeled={','.join(unknown)}: choose from {', '.join(UNLABELED_SETTINGS)}."
        )
    settings = []
    for ratio in ratios:
        for name in unlabeled:
            direction = UNLABELED_SETTINGS[name]
            if direction and ratio == 1:
                continue  # A ratio of 1 leaves the pool as it is: the balanced setting.
            setting = f"ratio {common.number(ratio)}"
            # The balanced pool is the default: no override, so earlier suite runs match.
            if not direction:
                settings.append((ratio, setting, (), ()))
                continue
            pool = direction * ratio
            settings.append(
                (
                    ratio,
                    f"{setting}, unlabeled {name}",
                    (("data.unlabeled_imbalance_ratio", str(float(pool))),),
                    (("unlabeled_imbalance_ratio", common.number(pool)),),
                )
            )
    return settings


def _build(suite, config, options, base):
    ratios = options.imbalance_ratios or DEFAULT_IMBALANCE_RATIOS
    if any(ratio < 1 for ratio in ratios):
        raise SuiteError(f"--imbalance_ratios must be >= 1 (largest / smallest class): {ratios}.")
    count = common.one_label_count(
        config,
        options,
        suite.name,
        smallest_label_count_for(ratios, config.data.num_classes, config.data.num_labeled),
    )
    common.check_counts([count], config.data.num_classes, balanced=False, ratios=ratios)
    arms = suite.chosen_arms(options)  # The long-tailed bases only by --arms.
    return [
        Run(
            suite=suite.name,
            setting=setting,
            arm=arm.name,
            seed=seed,
            overrides=(
                ("data.num_labeled", str(count)),
                ("data.imbalance_ratio", str(float(ratio))),
                *pool_override,
                ("seed", str(seed)),
            ),
            varied=(
                ("imbalance_ratio", common.number(ratio)),
                *pool_varied,
                ("num_labeled", str(count)),
            ),
            **arm.variant(base),
        )
        for ratio, setting, pool_override, pool_varied in _settings(ratios, options.unlabeled)
        for seed in options.seeds
        for arm in arms
    ]


def _report(suite, outcomes, base, default_mi_weight):
    del default_mi_weight  # Only the MI ablation's report reads it.
    num_labeled = dict(outcomes[0].run.varied)["num_labeled"] if outcomes else "?"

    def table(measure):
        return tables.comparison_table(
            outcomes, suite, base=base, measure=measure, row_title="imbalance"
        )

    return [
        f"Labeled set: {num_labeled} labels, long-tailed: class 0 has `ratio` times the "
        "labels of the last class. Unlabeled pool: the whole training set, or (`unlabeled "
        "same`/`reversed`) long-tailed by the same ratio in the labels' order or the "
        "reversed one.",
        "",
        "## Overall accuracy",
        "",
        table("accuracy"),
        "",
        "## Worst-class accuracy (the lowest per-class accuracy at the final evaluation)",
        "",
        table("worst_class_accuracy"),
    ]


BIAS = register(
    Suite(
        name="bias",
        description="the same arms on long-tailed labels (imbalance ratios; worst-class accuracy)",
        arms=ARMS,
        build=_build,
        report=_report,
        plots=(
            plots.Lines(
                "accuracy_vs_imbalance.png",
                "imbalance ratio of the labels",
                plots.swept_value,
                measures=("accuracy", "worst_class_accuracy"),
            ),
        ),
        pairs=PAIRS,
        default_arms=tuple(arm.name for arm in common.ARMS),
        label_counts="the one label count (default: the smallest that leaves every class a "
        "label at the largest ratio)",
        columns=("num_labeled", "imbalance_ratio"),
    )
)
