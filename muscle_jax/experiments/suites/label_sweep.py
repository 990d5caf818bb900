"""The label sweep: MUSCLE, its base, supervised + MI and supervised at several label counts."""

from muscle_jax.experiments import plots, tables
from muscle_jax.experiments.records import Suite
from muscle_jax.experiments.suites import common
from muscle_jax.experiments.suites.registry import register


def _build(suite, config, options, base):
    counts = options.label_counts or common.default_label_counts(config)
    common.check_counts(counts, config.data.num_classes, balanced=True)
    arms = suite.chosen_arms(options)
    return [
        run
        for count in counts
        for run in common.label_count_runs(suite.name, count, options, arms, base)
    ]


def _report(suite, outcomes, base, default_mi_weight):
    del default_mi_weight  # Only the MI ablation's report reads it.
    return [
        tables.comparison_table(outcomes, suite, base=base, measure="accuracy", row_title="labels")
    ]


LABEL_SWEEP = register(
    Suite(
        name="label_sweep",
        description="MUSCLE, its base, supervised + MI and supervised at several label counts",
        arms=common.ARMS,
        build=_build,
        report=_report,
        plots=(plots.Lines("accuracy_vs_labels.png", "labeled examples", plots.label_count),),
        pairs=(("muscle", "base"),),
        label_counts="the label counts (default: "
        + ", ".join(map(str, common.DEFAULT_LABELS_PER_CLASS))
        + " per class)",
        columns=("num_labeled",),
    )
)
