"""The objectives suite: on the config's base method, one term of the objective swapped.

The unsupervised term (none, MUSCLE's IIC, the self-defined target, MIO) at
the config's loss.unsupervised_weight, or self-adaptive training as the
supervised term; each arm is compared with the base alone, paired.
"""

from muscle_jax.experiments import plots, tables
from muscle_jax.experiments.records import EVERY_ARM, Arm, Suite
from muscle_jax.experiments.suites import common
from muscle_jax.experiments.suites.registry import register


def _swapped(name, label, unsupervised, supervised="cross_entropy"):
    """An arm with these two terms; MI (``mi=``) is on with any unsupervised term."""
    return Arm(
        name, label, mi=unsupervised != "none", unsupervised=unsupervised, supervised=supervised
    )


ARMS = (
    _swapped("base", "{base}", "none"),
    _swapped("iic", "{base} + IIC (MUSCLE)", "iic"),
    _swapped("sdt", "{base} + self-defined target", "sdt"),
    _swapped("mio", "{base} + MIO", "mio"),
    _swapped("self_adaptive", "{base}, self-adaptive training", "none", "self_adaptive"),
)


def _build(suite, config, options, base):
    count = common.one_label_count(config, options, suite.name)
    common.check_counts([count], config.data.num_classes, balanced=True)
    return common.label_count_runs(suite.name, count, options, suite.chosen_arms(options), base)


def _report(suite, outcomes, base, default_mi_weight):
    del default_mi_weight  # Only the MI ablation's report reads it.
    return [
        "Each arm is the base method with one term swapped: the unsupervised term "
        "(none, IIC = MUSCLE, self-defined target, MIO) at the config's "
        "loss.unsupervised_weight, or self-adaptive training as the supervised term.",
        "",
        tables.comparison_table(outcomes, suite, base=base, measure="accuracy", row_title=""),
    ]


OBJECTIVES = register(
    Suite(
        name="objectives",
        description="the unsupervised term swapped (IIC, self-defined target, MIO) and "
        "self-adaptive training",
        arms=ARMS,
        build=_build,
        report=_report,
        plots=(plots.Bars("objectives.png"),),
        # Every arm against the base alone, in the table's order.
        pairs=((EVERY_ARM, "base"),),
        label_counts=common.ONE_COUNT_HELP,
        columns=("num_labeled",),
    )
)
