"""The bases suite: each base method (FixMatch ... Dash) alone and with MUSCLE's MI term on top."""

from muscle_jax.experiments import plots, tables
from muscle_jax.experiments.records import Arm, Run, Suite, SuiteError
from muscle_jax.experiments.suites import common
from muscle_jax.experiments.suites.registry import register

# Each row's base method (the arms' method is the row's, not the config's).
ARMS = (Arm("muscle", common.MUSCLE.label, mi=True), Arm("base", common.BASE.label))
# 1 and 4 labels a class (10 and 40 on digits and CIFAR-10, the protocol's
# hardest CIFAR-10 count and the one below it).
DEFAULT_LABELS_PER_CLASS = (1, 4)


def default_bases() -> tuple[str, ...]:
    """FixMatch and the modern bases (`methods.adaptive.MODERN_BASES`), as registered."""
    from muscle_jax.methods import adaptive

    return ("fixmatch", *adaptive.MODERN_BASES)


def _build(suite, config, options, base):
    """Each base method alone and with MUSCLE's MI term, at a few label counts."""
    del base  # Each row has its own.
    from muscle_jax import methods

    bases = options.bases or default_bases()
    known = [name for name in methods.names(methods.CONSISTENCY) if name != "none"]
    unknown = [name for name in bases if name not in known]
    if unknown:
        raise SuiteError(f"Unknown base(s) {unknown}; choose from {known}.")
    counts = options.label_counts or tuple(
        per_class * config.data.num_classes for per_class in DEFAULT_LABELS_PER_CLASS
    )
    common.check_counts(counts, config.data.num_classes, balanced=True)
    arms = suite.chosen_arms(options)
    return [
        Run(
            suite=suite.name,
            setting=f"{name} at {count} labels",
            arm=arm.name,
            seed=seed,
            overrides=(("data.num_labeled", str(count)), ("seed", str(seed))),
            varied=(("base", name), ("num_labeled", str(count))),
            **arm.variant(name),
        )
        for count in counts
        for name in bases
        for seed in options.seeds
        for arm in arms
    ]


def _report(suite, outcomes, base, default_mi_weight):
    del base, default_mi_weight  # Each row names its base; the columns say "base".
    return [
        "Each row is one base method at one label count, alone (`base`) and with "
        "MUSCLE's MI term on top (`muscle`), at the config's MI weight; no tuning.",
        "",
        tables.comparison_table(
            outcomes, suite, base="base", measure="accuracy", row_title="base, labels"
        ),
    ]


def _bar_label(suite, setting, arm, base):
    return f"{setting}{' + MI' if arm == 'muscle' else ''}"


BASES = register(
    Suite(
        name="bases",
        description="each base method (FixMatch ... Dash) alone and with MI on top",
        arms=ARMS,
        build=_build,
        report=_report,
        # A bar per base, label count and arm: 28 by default.
        plots=(plots.Bars("bases.png", bar_label=_bar_label, width=16),),
        pairs=(("muscle", "base"),),
        label_counts="the label counts (default "
        + " and ".join(map(str, DEFAULT_LABELS_PER_CLASS))
        + " per class)",
        columns=("num_labeled",),
    )
)
