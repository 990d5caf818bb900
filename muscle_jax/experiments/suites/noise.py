"""The noise suite: noisy labels, cross-entropy against self-adaptive training, each with MI.

On the config's base method, the supervised term is cross-entropy or
self-adaptive training (SAT, arXiv 2101.08732, made for noisy labels), each
without and with MUSCLE's MI term, at several noise levels. Every arm of a
seed sees the same wrong labels (drawn from the seed), so the differences
are paired on the noise too.
"""

from muscle_jax.experiments import plots, tables
from muscle_jax.experiments.records import Arm, Run, Suite, SuiteError
from muscle_jax.experiments.suites import common
from muscle_jax.experiments.suites.registry import register


def _arm(name, label, mi, supervised):
    return Arm(name, label, mi=mi, unsupervised="iic" if mi else "none", supervised=supervised)


ARMS = (
    _arm("base", "{base}", False, "cross_entropy"),
    _arm("self_adaptive", "{base}, self-adaptive training", False, "self_adaptive"),
    _arm("muscle", common.MUSCLE.label, True, "cross_entropy"),
    _arm(
        "muscle_self_adaptive",
        "MUSCLE ({base} + MI), self-adaptive training",
        True,
        "self_adaptive",
    ),
)
# SAT minus cross-entropy, without and with MI (the plot's gains); then MI's gain.
PAIRS = (("self_adaptive", "base"), ("muscle_self_adaptive", "muscle"), ("muscle", "base"))
# Symmetric noise on 0, 20 and 40 % of the labels (SAT's CIFAR levels), at 10
# labels a class, so that a level is realised on many labels (2 a class at 40 %
# could leave a class with none right).
DEFAULT_LEVELS = (0.0, 0.2, 0.4)
DEFAULT_LABELS_PER_CLASS = 10


def _levels(options) -> tuple[float, ...]:
    from muscle_jax.data import label_noise  # Deferred, as the data package's other modules.

    levels = options.noise_levels or DEFAULT_LEVELS
    bad = [level for level in levels if not 0 <= level < 1]
    if bad:
        raise SuiteError(f"--noise_levels must lie in [0, 1) (0: clean labels): {list(bad)}.")
    if len(set(levels)) != len(levels):
        raise SuiteError(f"--noise_levels repeats a level: {list(levels)}.")
    if options.noise_kind not in label_noise.KINDS:
        raise SuiteError(
            f"--noise_kind={options.noise_kind}: choose one of {', '.join(label_noise.KINDS)}."
        )
    return levels


def _setting(level, kind) -> str:
    setting = f"noise {common.number(level)}"
    return setting if kind == "symmetric" else f"{setting}, {kind}"


def _build(suite, config, options, base):
    """Cross-entropy and self-adaptive training, without and with MI, at several noise levels."""
    count = common.one_label_count(
        config, options, suite.name, DEFAULT_LABELS_PER_CLASS * config.data.num_classes
    )
    common.check_counts([count], config.data.num_classes, balanced=True)
    levels = _levels(options)
    arms = suite.chosen_arms(options)
    kind = options.noise_kind
    return [
        Run(
            suite=suite.name,
            setting=_setting(level, kind),
            arm=arm.name,
            seed=seed,
            overrides=(
                ("data.num_labeled", str(count)),
                ("data.label_noise", str(float(level))),
                ("data.label_noise_kind", kind),
                ("seed", str(seed)),
            ),
            varied=(
                ("num_labeled", str(count)),
                ("label_noise", common.number(level)),
                ("label_noise_kind", kind),
            ),
            **arm.variant(base),
        )
        for level in levels
        for seed in options.seeds
        for arm in arms
    ]


def _report(suite, outcomes, base, default_mi_weight):
    del default_mi_weight  # Only the MI ablation's report reads it.
    num_labeled = dict(outcomes[0].run.varied)["num_labeled"] if outcomes else "?"
    return [
        f"Labeled set: {num_labeled} labels, a fraction of them (`noise`) given a wrong "
        "label before training (`data.label_noise`, seeded: every arm of a seed sees the "
        "same wrong labels); test labels are clean. Arms: cross-entropy (`"
        f"{suite.arm_label('base', base)}`) or self-adaptive training as the supervised "
        "term, each without and with MUSCLE's MI term.",
        "",
        tables.comparison_table(
            outcomes, suite, base=base, measure="accuracy", row_title="label noise"
        ),
        "",
        "Realised noise rates (results.json's `label_noise`): " + tables.realised_noise(outcomes),
    ]


NOISE = register(
    Suite(
        name="noise",
        description="noisy labels: cross-entropy against self-adaptive training, each alone and "
        "with MI, at several noise levels",
        arms=ARMS,
        build=_build,
        report=_report,
        plots=(
            plots.Lines(
                "accuracy_vs_noise.png",
                "fraction of the labels made wrong",
                plots.swept_value,
                gains=PAIRS[:2],
                log_x=False,  # Noise levels start at 0: a linear axis.
            ),
        ),
        pairs=PAIRS,
        label_counts=f"the one label count (default {DEFAULT_LABELS_PER_CLASS} per class)",
        columns=("num_labeled", "label_noise", "label_noise_kind"),
    )
)
