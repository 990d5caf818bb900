"""The MI ablation: one knob of the MI term changed at a time from the config's MUSCLE.

Its rows are its settings: the MI weight swept (weight 0 is the base
method), the other knobs each flipped away from the config's value.
"""

from collections.abc import Sequence

import ml_collections

from muscle_jax.experiments import plots, tables
from muscle_jax.experiments.records import Arm, Run, Suite, SuiteError
from muscle_jax.experiments.suites import common
from muscle_jax.experiments.suites.registry import register

# The rows' arms: the config's MUSCLE, and at MI weight 0 its base method (MI
# computed but weighted 0, the same training as mi=False). --arms picks none.
ARMS = (
    Arm("muscle", common.MUSCLE.label, mi=True, selectable=False),
    Arm("base", common.BASE.label, mi=True, selectable=False),
)
DEFAULT_MI_WEIGHTS = (0.0, 0.1, 0.3, 1.0, 3.0)
# The knobs: the MI weight is swept, the others flipped one at a time.
KNOBS = ("mi_weight", "mi_rampup_steps", "lamb", "overclustering_heads", "mi_on_labeled")


def _weight_settings(config, mi_weights, knobs):
    # The base (weight 0) and the config's own weight are the references every
    # other row is compared with, so they are always run.
    weights = list(mi_weights) if "mi_weight" in knobs else []
    weights = sorted({float(w) for w in [*weights, 0.0, config.loss.unsupervised_weight]})
    return [
        (
            f"mi_weight={common.number(weight)}",
            "base" if weight == 0 else "muscle",
            (("loss.unsupervised_weight", str(weight)),),
        )
        for weight in weights
    ]


def _flipped_settings(config):
    """Each other knob flipped away from the config's value, at the config's MI weight."""
    loss = config.loss
    if loss.unsupervised_rampup_steps == 0:
        rampup = str(max(1, config.total_steps // 4))
    else:
        rampup = "0"
    lamb = 2.0 if loss.iic.lamb == 1.0 else 1.0
    heads = 1 if config.model.overclustering_heads == 0 else 0
    on_labeled = not loss.iic.on_labeled
    return [
        (f"mi_rampup_steps={rampup}", "loss.unsupervised_rampup_steps", rampup),
        (f"lamb={common.number(lamb)}", "loss.iic.lamb", str(lamb)),
        (f"overclustering_heads={heads}", "model.overclustering_heads", str(heads)),
        (f"mi_on_labeled={on_labeled}", "loss.iic.on_labeled", str(on_labeled)),
    ]


def ablation_settings(
    config: ml_collections.ConfigDict,
    mi_weights: Sequence[float],
    knobs: Sequence[str] = KNOBS,
) -> list[tuple[str, str, tuple[tuple[str, str], ...]]]:
    """``(setting, arm, overrides)`` of the MI ablation: one knob changed at a time.

    The reference is the config's MUSCLE; the MI-weight-0 row is its base
    method (MI computed but weighted 0, the same training as ``mi=False``).
    """
    settings = _weight_settings(config, mi_weights, knobs)
    settings += [
        (setting, "muscle", ((key, value),)) for setting, key, value in _flipped_settings(config)
    ]
    return [s for s in settings if s[0].startswith("mi_weight=") or s[0].split("=")[0] in knobs]


def _check(config, options) -> tuple[tuple[float, ...], tuple[str, ...]]:
    """The MI weights and knobs to run; refuses options the ablation cannot take."""
    weights = options.mi_weights or DEFAULT_MI_WEIGHTS
    if any(weight < 0 for weight in weights):
        raise SuiteError(f"--mi_weights must be >= 0: {list(weights)}.")
    knobs = options.knobs or KNOBS
    unknown = [knob for knob in knobs if knob not in KNOBS]
    if unknown:
        raise SuiteError(f"Unknown knob(s) {unknown}; choose from {list(KNOBS)}.")
    if options.arms:
        raise SuiteError("--arms does not apply to mi_ablation (its rows are its settings).")
    if config.loss.unsupervised != "iic" or config.loss.unsupervised_weight == 0:
        raise SuiteError(
            "The config turns MI off (mi=False, another unsupervised term, or "
            "loss.unsupervised_weight=0), but the ablation's knobs act on the MI term; run it "
            "with MUSCLE's term (unsupervised=iic) on."
        )
    return weights, knobs


def _build(suite, config, options, base):
    count = common.one_label_count(config, options, suite.name)
    common.check_counts([count], config.data.num_classes, balanced=True)
    weights, knobs = _check(config, options)
    return [
        Run(
            suite=suite.name,
            setting=setting,
            arm=arm,
            seed=seed,
            overrides=(("data.num_labeled", str(count)), ("seed", str(seed)), *knob),
            varied=(("num_labeled", str(count)), ("knob", knob[0][0]), ("value", knob[0][1])),
            **suite.arm(arm).variant(base),
        )
        for setting, arm, knob in ablation_settings(config, weights, knobs)
        for seed in options.seeds
    ]


def _report(suite, outcomes, base, default_mi_weight):
    default = f"mi_weight={common.number(default_mi_weight)}"
    settings = {outcome.run.setting for outcome in outcomes}
    return [
        "One knob changed at a time from the config's MUSCLE; `mi_weight=0` is the base method.",
        "",
        tables.ablation_table(
            outcomes,
            reference="mi_weight=0",
            default=default if default in settings and default != "mi_weight=0" else None,
        ),
    ]


MI_ABLATION = register(
    Suite(
        name="mi_ablation",
        description="one knob of the MI term at a time (weight, ramp-up, lambda, heads, ...)",
        arms=ARMS,
        build=_build,
        report=_report,
        plots=(plots.Bars("mi_ablation.png", bar_label=plots.setting_bar),),
        label_counts=common.ONE_COUNT_HELP,
        columns=("num_labeled", "knob", "value"),
    )
)
