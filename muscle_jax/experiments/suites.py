"""The experiment suites (`SUITES`): which runs each is made of.

A suite is a list of `Run`s. Each run is an ordinary
``python -m muscle_jax.main`` run: the user's config, a method variant
(``method=...,mi=...`` after the config's ``:``) and ``--config.KEY=VALUE``
overrides for what the suite varies. A run is named by its directory,
``SETTING/ARM/seed_K``, so the same suite command always maps the same run to
the same directory: that is what makes a killed suite resumable.

The arms compared (`ARMS`) are defined here once; the tables, the plots and
the dispatchers ask this module what they mean.
"""

import dataclasses
import math
from collections.abc import Sequence

import ml_collections

SUITES = ("label_sweep", "bias", "finetune", "mi_ablation", "objectives", "bases", "noise")
# One line each, for --help (docs/experiments.md has the protocol and the tables).
DESCRIPTIONS = {
    "label_sweep": "MUSCLE, its base, supervised + MI and supervised at several label counts",
    "bias": "the same arms on long-tailed labels (imbalance ratios; worst-class accuracy)",
    "finetune": "MI-only pre-training then fine-tuning, against training from scratch",
    "mi_ablation": "one knob of the MI term at a time (weight, ramp-up, lambda, heads, ...)",
    "objectives": "the unsupervised term swapped (IIC, self-defined target, MIO) and "
    "self-adaptive training",
    "bases": "each base method (FixMatch ... Dash) alone and with MI on top",
    "noise": "noisy labels: cross-entropy against self-adaptive training, each alone and "
    "with MI, at several noise levels",
}

# Arm -> (method variant, MI on). "base" is filled in with the config's own
# consistency method (FixMatch for every shipped config).
ARMS: dict[str, tuple[str | None, bool]] = {
    "muscle": (None, True),  # the base method + MI: MUSCLE.
    "base": (None, False),  # the base method alone (same consistency, MI off).
    "supervised_mi": ("none", True),  # cross-entropy + MI on the unlabeled images.
    "supervised": ("supervised", False),  # cross-entropy on the labeled images only.
}
# The bias suite also runs bases made for long-tailed pseudo-labels, alone and with
# MI on top: is MI still worth adding to them, and does MI alone do what they do?
BIAS_ARMS: dict[str, tuple[str | None, bool]] = {
    **ARMS,
    "freematch": ("freematch", False),
    "freematch_mi": ("freematch", True),
    "debiased": ("debiased", False),
    "debiased_mi": ("debiased", True),
    # The config's base with ABC's balanced head on top (the add-on role).
    "abc": (None, False),
    "abc_mi": (None, True),
}
# Arm -> the ``addon=`` variant of those arms.
ARM_ADDONS = {"abc": "abc", "abc_mi": "abc"}
# Its paired comparisons beyond muscle - base: each such method with MI against it
# alone, and ABC against the base it is added to.
BIAS_PAIRS = (
    ("freematch_mi", "freematch"),
    ("debiased_mi", "debiased"),
    ("abc_mi", "abc"),
    ("abc", "base"),
)
# The unlabeled pool of the bias suite: as the dataset has it, or long-tailed in the
# labels' order or the reversed one (data.unlabeled_imbalance_ratio = 1, r, -r).
UNLABELED_SETTINGS = {"balanced": 0, "same": 1, "reversed": -1}
# The objectives suite's arms: on the config's base method, the unsupervised
# term swapped (MUSCLE's IIC, self-defined target, MIO) or the supervised one
# (self-adaptive training). Arm -> (unsupervised term, supervised term).
OBJECTIVE_ARMS: dict[str, tuple[str, str]] = {
    "base": ("none", "cross_entropy"),
    "iic": ("iic", "cross_entropy"),
    "sdt": ("sdt", "cross_entropy"),
    "mio": ("mio", "cross_entropy"),
    "self_adaptive": ("none", "self_adaptive"),
}
# The noise suite's arms: on the config's base method, the supervised term
# cross-entropy or self-adaptive training (SAT, arXiv 2101.08732, made for noisy
# labels), each without and with MUSCLE's MI term. Arm -> (MI on, supervised term).
NOISE_ARMS: dict[str, tuple[bool, str]] = {
    "base": (False, "cross_entropy"),
    "self_adaptive": (False, "self_adaptive"),
    "muscle": (True, "cross_entropy"),
    "muscle_self_adaptive": (True, "self_adaptive"),
}
# Its paired comparisons: SAT minus cross-entropy, without and with MI; then MI's gain.
NOISE_PAIRS = (("self_adaptive", "base"), ("muscle_self_adaptive", "muscle"), ("muscle", "base"))
# The finetune suite's arms.
PRETRAIN = "pretrain"  # MI only, no labels: the unsupervised pre-training.
FINETUNE_MUSCLE = "finetune_muscle"
FINETUNE_SUPERVISED = "finetune_supervised"
SCRATCH_MUSCLE = "scratch_muscle"

# Which arm each suite's paired difference compares with which ("MUSCLE minus its base").
PAIRED = {
    "label_sweep": ("muscle", "base"),
    "bias": ("muscle", "base"),
    "finetune": (FINETUNE_MUSCLE, FINETUNE_SUPERVISED),
    "mi_ablation": ("muscle", "base"),
    "objectives": ("iic", "base"),
    "bases": ("muscle", "base"),
    "noise": ("self_adaptive", "base"),
}

# Keys a suite sets from the user's own value rather than sweeping them: the
# finetune suite splits the user's total_steps into pre-training and fine-tuning.
DERIVED = {"finetune": ("total_steps",)}

# Per-class label counts of the default label sweep: 1, 2, 4 and 10 labels a
# class is where SSL methods separate (the protocol's CIFAR-10 counts are 4,
# 25 and 400 a class; on a dataset as easy as digits 10 a class is the ceiling).
DEFAULT_LABELS_PER_CLASS = (1, 2, 4, 10)
# The finetune and mi_ablation suites run at one label count: 2 a class.
DEFAULT_ONE_COUNT_PER_CLASS = 2
DEFAULT_IMBALANCE_RATIOS = (1.0, 10.0, 100.0)
# The bases suite: 1 and 4 labels a class (10 and 40 on digits and CIFAR-10,
# the protocol's hardest CIFAR-10 count and the one below it).
DEFAULT_BASES_LABELS_PER_CLASS = (1, 4)
DEFAULT_MI_WEIGHTS = (0.0, 0.1, 0.3, 1.0, 3.0)
# The noise suite: symmetric noise on 0, 20 and 40 % of the labels (SAT's CIFAR
# levels), at 10 labels a class, so that a level is realised on many labels (2 a
# class at 40 % could leave a class with none right).
DEFAULT_NOISE_LEVELS = (0.0, 0.2, 0.4)
DEFAULT_NOISE_LABELS_PER_CLASS = 10
# The MI ablation's knobs: the MI weight is swept, the others flipped one at a time.
ABLATION_KNOBS = ("mi_weight", "mi_rampup_steps", "lamb", "overclustering_heads", "mi_on_labeled")


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of a suite.

    Attributes:
      suite: which suite it belongs to.
      setting: the row it reports in (e.g. ``"20"`` labels, ``"lamb=2"``).
      arm: the column (a key of `ARMS`, or a finetune arm).
      seed: the run's ``config.seed`` (labeled subset, initialisation, data order).
      method: the ``method=`` variant; ``mi`` the ``mi=`` variant.
      overrides: ``(key, value)`` pairs passed as ``--config.key=value``.
      varied: the settings this run differs in, as they go into results.csv.
      stage: 0 for runs that depend on nothing; 1 for fine-tuning runs, which
        start from their stage-0 pre-training run's checkpoints.
      unsupervised, supervised, addon: the ``unsupervised=`` / ``supervised=``
        / ``addon=`` variants, or "" to keep the config's terms.
    """

    suite: str
    setting: str
    arm: str
    seed: int
    method: str
    mi: bool
    overrides: tuple[tuple[str, str], ...]
    varied: tuple[tuple[str, str], ...]
    stage: int = 0
    unsupervised: str = ""  # The ``unsupervised=`` variant ("": the config's).
    supervised: str = ""  # The ``supervised=`` variant ("": the config's).
    addon: str = ""  # The ``addon=`` variant ("": the config's).

    @property
    def name(self) -> str:
        """The run's directory under the suite's workdir."""
        return f"{_slug(self.setting)}/{self.arm}/seed_{self.seed}"


@dataclasses.dataclass(frozen=True)
class SuiteOptions:
    """What a suite sweeps; None means "the default for the config's dataset"."""

    seeds: tuple[int, ...] = (0, 1, 2)
    label_counts: tuple[int, ...] | None = None
    imbalance_ratios: tuple[float, ...] | None = None
    mi_weights: tuple[float, ...] | None = None
    knobs: tuple[str, ...] | None = None
    arms: tuple[str, ...] | None = None
    pretrain_fraction: float = 0.5
    bases: tuple[str, ...] | None = None
    unlabeled: tuple[str, ...] = ("balanced",)
    noise_levels: tuple[float, ...] | None = None
    noise_kind: str = "symmetric"


class SuiteError(ValueError):
    """A suite cannot be built from these options; the message says what to change."""


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


def arm_label(arm: str, base: str) -> str:
    """How an arm is called in tables and plots."""
    return {
        "muscle": f"MUSCLE ({base} + MI)",
        "base": base,
        "supervised_mi": "supervised + MI",
        "supervised": "supervised",
        PRETRAIN: "MI-only pre-training",
        FINETUNE_MUSCLE: "pre-trained, fine-tuned with MUSCLE",
        FINETUNE_SUPERVISED: "pre-trained, fine-tuned with cross-entropy",
        SCRATCH_MUSCLE: "MUSCLE from scratch, same total steps",
        "iic": f"{base} + IIC (MUSCLE)",
        "sdt": f"{base} + self-defined target",
        "mio": f"{base} + MIO",
        "self_adaptive": f"{base}, self-adaptive training",
        "freematch": "freematch",
        "freematch_mi": "freematch + MI",
        "debiased": "debiased pseudo-labelling",
        "debiased_mi": "debiased pseudo-labelling + MI",
        "abc": f"{base} + ABC",
        "abc_mi": f"{base} + ABC + MI",
        "muscle_self_adaptive": f"MUSCLE ({base} + MI), self-adaptive training",
    }.get(arm, arm)


def build(
    suite: str, config: ml_collections.ConfigDict, options: SuiteOptions, *, pinned: Sequence[str]
) -> list[Run]:
    """The runs of ``suite`` for ``config`` (the user's config with their overrides).

    Args:
      pinned: the config keys the user set on the command line
        (``--config.KEY``); a suite refuses to run when it would vary one of them.

    Raises:
      SuiteError: an unknown suite, arm or option, or a swept value the
        config's dataset cannot take; before anything runs.
    """
    if suite not in SUITES:
        raise SuiteError(f"Unknown suite {suite!r}; choose one of {', '.join(SUITES)}.")
    if not options.seeds:
        raise SuiteError("--seeds is empty; give at least one seed, e.g. --seeds=0,1,2.")
    if len(set(options.seeds)) != len(options.seeds):
        raise SuiteError(f"--seeds repeats a seed: {list(options.seeds)}.")
    if not config.data.num_classes:
        # The suites count labels a class before any data is opened.
        raise SuiteError(
            "data.num_classes=0 (the data's count, read when a run opens it), but a suite "
            "sizes its label counts by the class count before any run starts: give "
            "--config.data.num_classes=N."
        )
    base = base_method(config)
    builder = {
        "label_sweep": _label_sweep,
        "bias": _bias,
        "finetune": _finetune,
        "mi_ablation": _mi_ablation,
        "objectives": _objectives,
        "bases": _bases,
        "noise": _noise,
    }[suite]
    runs = builder(config, options, base)
    for run in runs:
        for key, _ in run.overrides:
            if key in pinned and key not in DERIVED.get(suite, ()):
                raise SuiteError(
                    f"--config.{key} is what the {suite} suite varies; give the values with "
                    f"the suite's own flag (see --help) instead of fixing it on the command line."
                )
    return runs


# ------------------------------------------------------------------ suites


def _arms(options: SuiteOptions, default: Sequence[str], allowed: Sequence[str]) -> list[str]:
    arms = list(options.arms) if options.arms else list(default)
    unknown = [arm for arm in arms if arm not in allowed]
    if unknown:
        raise SuiteError(f"Unknown arm(s) {unknown} for this suite; choose from {list(allowed)}.")
    return arms


def _method_of(arm: str, base: str) -> tuple[str, bool]:
    method, mi = BIAS_ARMS[arm]  # (ARMS' arms mean the same in every suite.)
    return method or base, mi


def default_label_counts(config: ml_collections.ConfigDict) -> tuple[int, ...]:
    return tuple(per_class * config.data.num_classes for per_class in DEFAULT_LABELS_PER_CLASS)


def _one_label_count(
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


def _label_sweep(config, options, base):
    counts = options.label_counts or default_label_counts(config)
    _check_counts(counts, config.data.num_classes, balanced=True)
    arms = _arms(options, tuple(ARMS), tuple(ARMS))
    return [
        Run(
            suite="label_sweep",
            setting=f"{count} labels",
            arm=arm,
            seed=seed,
            method=_method_of(arm, base)[0],
            mi=_method_of(arm, base)[1],
            overrides=(("data.num_labeled", str(count)), ("seed", str(seed))),
            varied=(("num_labeled", str(count)),),
        )
        for count in counts
        for seed in options.seeds
        for arm in arms
    ]


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


def _bias(config, options, base):
    ratios = options.imbalance_ratios or DEFAULT_IMBALANCE_RATIOS
    if any(ratio < 1 for ratio in ratios):
        raise SuiteError(f"--imbalance_ratios must be >= 1 (largest / smallest class): {ratios}.")
    count = _one_label_count(
        config,
        options,
        "bias",
        smallest_label_count_for(ratios, config.data.num_classes, config.data.num_labeled),
    )
    _check_counts([count], config.data.num_classes, balanced=False, ratios=ratios)
    arms = _arms(options, tuple(ARMS), tuple(BIAS_ARMS))  # The new arms by --arms.
    unknown = [name for name in options.unlabeled if name not in UNLABELED_SETTINGS]
    if unknown:
        raise SuiteError(
            f"--unlabeled={','.join(unknown)}: choose from {', '.join(UNLABELED_SETTINGS)}."
        )
    runs = []
    for ratio in ratios:
        for unlabeled in options.unlabeled:
            direction = UNLABELED_SETTINGS[unlabeled]
            if direction and ratio == 1:
                continue  # A ratio of 1 leaves the pool as it is: the balanced setting.
            setting = f"ratio {_number(ratio)}"
            # The balanced pool is the default: no override, so earlier suite runs match.
            pool_override, pool_varied = (), ()
            if direction:
                setting += f", unlabeled {unlabeled}"
                pool = str(float(direction * ratio))
                pool_override = (("data.unlabeled_imbalance_ratio", pool),)
                pool_varied = (("unlabeled_imbalance_ratio", _number(direction * ratio)),)
            for seed in options.seeds:
                for arm in arms:
                    runs.append(
                        Run(
                            suite="bias",
                            setting=setting,
                            arm=arm,
                            seed=seed,
                            method=_method_of(arm, base)[0],
                            mi=_method_of(arm, base)[1],
                            addon=ARM_ADDONS.get(arm, ""),
                            overrides=(
                                ("data.num_labeled", str(count)),
                                ("data.imbalance_ratio", str(float(ratio))),
                                *pool_override,
                                ("seed", str(seed)),
                            ),
                            varied=(
                                ("imbalance_ratio", _number(ratio)),
                                *pool_varied,
                                ("num_labeled", str(count)),
                            ),
                        )
                    )
    return runs


def _finetune(config, options, base):
    count = _one_label_count(config, options, "finetune")
    _check_counts([count], config.data.num_classes, balanced=True)
    if not 0 < options.pretrain_fraction < 1:
        raise SuiteError(
            f"--pretrain_fraction must lie in (0, 1), got {options.pretrain_fraction}."
        )
    total = config.total_steps
    pretrain_steps = max(1, round(total * options.pretrain_fraction))
    finetune_steps = total - pretrain_steps
    if finetune_steps < 1:
        raise SuiteError(f"total_steps={total} leaves no fine-tuning steps; raise it.")
    allowed = (FINETUNE_MUSCLE, FINETUNE_SUPERVISED, SCRATCH_MUSCLE)
    arms = _arms(options, allowed, allowed)
    varied = (("num_labeled", str(count)),)
    runs = []
    for seed in options.seeds:
        common = (("data.num_labeled", str(count)), ("seed", str(seed)))
        pretrain = Run(
            suite="finetune",
            setting="finetune",
            arm=PRETRAIN,
            seed=seed,
            method="none",
            mi=True,
            # MI alone: no labels reach the loss.
            overrides=(
                *common,
                ("loss.supervised_weight", "0.0"),
                ("total_steps", str(pretrain_steps)),
            ),
            varied=varied,
        )
        runs.append(pretrain)
        for arm in arms:
            method, mi, stage, steps, extra = {
                FINETUNE_MUSCLE: (base, True, 1, finetune_steps, True),
                FINETUNE_SUPERVISED: ("supervised", False, 1, finetune_steps, True),
                SCRATCH_MUSCLE: (base, True, 0, total, False),
            }[arm]
            overrides = (*common, ("total_steps", str(steps)))
            if extra:
                overrides += (("init_from", f"{{workdir}}/{pretrain.name}/checkpoints"),)
            runs.append(
                Run(
                    suite="finetune",
                    setting="finetune",
                    arm=arm,
                    seed=seed,
                    method=method,
                    mi=mi,
                    overrides=overrides,
                    varied=varied,
                    stage=stage,
                )
            )
    return runs


def ablation_settings(
    config: ml_collections.ConfigDict,
    mi_weights: Sequence[float],
    knobs: Sequence[str] = ABLATION_KNOBS,
) -> list[tuple[str, str, tuple[tuple[str, str], ...]]]:
    """``(setting, arm, overrides)`` of the MI ablation: one knob changed at a time.

    The reference is the config's MUSCLE; the MI-weight-0 row is its base
    method (MI computed but weighted 0, the same training as ``mi=False``).
    """
    loss = config.loss
    settings = []
    # The base (weight 0) and the config's own weight are the references every
    # other row is compared with, so they are always run.
    weights = list(mi_weights) if "mi_weight" in knobs else []
    weights = sorted({float(w) for w in [*weights, 0.0, loss.unsupervised_weight]})
    for weight in weights:
        arm = "base" if weight == 0 else "muscle"
        settings.append(
            (f"mi_weight={_number(weight)}", arm, (("loss.unsupervised_weight", str(weight)),))
        )
    # Each knob flipped away from the config's value, at the config's MI weight.
    rampup = max(1, config.total_steps // 4)
    if loss.unsupervised_rampup_steps == 0:
        settings.append(
            (
                f"mi_rampup_steps={rampup}",
                "muscle",
                (("loss.unsupervised_rampup_steps", str(rampup)),),
            )
        )
    else:
        settings.append(("mi_rampup_steps=0", "muscle", (("loss.unsupervised_rampup_steps", "0"),)))
    lamb = 2.0 if loss.iic.lamb == 1.0 else 1.0
    settings.append((f"lamb={_number(lamb)}", "muscle", (("loss.iic.lamb", str(lamb)),)))
    heads = 1 if config.model.overclustering_heads == 0 else 0
    settings.append(
        (f"overclustering_heads={heads}", "muscle", (("model.overclustering_heads", str(heads)),))
    )
    on_labeled = not loss.iic.on_labeled
    settings.append(
        (f"mi_on_labeled={on_labeled}", "muscle", (("loss.iic.on_labeled", str(on_labeled)),))
    )
    return [s for s in settings if s[0].startswith("mi_weight=") or s[0].split("=")[0] in knobs]


def _mi_ablation(config, options, base):
    count = _one_label_count(config, options, "mi_ablation")
    _check_counts([count], config.data.num_classes, balanced=True)
    weights = options.mi_weights or DEFAULT_MI_WEIGHTS
    if any(weight < 0 for weight in weights):
        raise SuiteError(f"--mi_weights must be >= 0: {list(weights)}.")
    knobs = options.knobs or ABLATION_KNOBS
    unknown = [knob for knob in knobs if knob not in ABLATION_KNOBS]
    if unknown:
        raise SuiteError(f"Unknown knob(s) {unknown}; choose from {list(ABLATION_KNOBS)}.")
    if options.arms:
        raise SuiteError("--arms does not apply to mi_ablation (its rows are its settings).")
    if config.loss.unsupervised != "iic" or config.loss.unsupervised_weight == 0:
        raise SuiteError(
            "The config turns MI off (mi=False, another unsupervised term, or "
            "loss.unsupervised_weight=0), but the ablation's knobs act on the MI term; run it "
            "with MUSCLE's term (unsupervised=iic) on."
        )
    runs = []
    for setting, arm, knob in ablation_settings(config, weights, knobs):
        knob_key, knob_value = knob[0]
        for seed in options.seeds:
            runs.append(
                Run(
                    suite="mi_ablation",
                    setting=setting,
                    arm=arm,
                    seed=seed,
                    method=base,
                    mi=True,
                    overrides=(("data.num_labeled", str(count)), ("seed", str(seed)), *knob),
                    varied=(
                        ("num_labeled", str(count)),
                        ("knob", knob_key),
                        ("value", knob_value),
                    ),
                )
            )
    return runs


# ------------------------------------------------------------------ helpers


def _check_counts(counts, num_classes, *, balanced, ratios=(1.0,)):
    from muscle_jax.data import splits

    for count in counts:
        for ratio in ratios if not balanced else (1.0,):
            try:
                splits.per_class_counts(count, num_classes, imbalance_ratio=ratio)
            except ValueError as error:
                raise SuiteError(f"Label count {count}: {error}") from None


def _number(value: float) -> str:
    """``10.0`` -> ``"10"``, ``0.3`` -> ``"0.3"``: how swept numbers are named."""
    value = float(value)
    return str(int(value)) if math.isfinite(value) and value.is_integer() else repr(value)


def _slug(setting: str) -> str:
    """A setting as a directory name: ``"mi_weight=0.3"`` -> ``"mi_weight_0.3"``."""
    return setting.replace("=", "_").replace("/", "_").replace(" ", "_").lower()


def _objectives(config, options, base):
    count = _one_label_count(config, options, "objectives")
    _check_counts([count], config.data.num_classes, balanced=True)
    arms = _arms(options, tuple(OBJECTIVE_ARMS), tuple(OBJECTIVE_ARMS))
    runs = []
    for seed in options.seeds:
        for arm in arms:
            unsupervised, supervised = OBJECTIVE_ARMS[arm]
            runs.append(
                Run(
                    suite="objectives",
                    setting=f"{count} labels",
                    arm=arm,
                    seed=seed,
                    method=base,
                    mi=unsupervised != "none",
                    overrides=(("data.num_labeled", str(count)), ("seed", str(seed))),
                    varied=(("num_labeled", str(count)),),
                    unsupervised=unsupervised,
                    supervised=supervised,
                )
            )
    return runs


def default_bases() -> tuple[str, ...]:
    """FixMatch and the modern bases (`methods.adaptive.MODERN_BASES`), as registered."""
    from muscle_jax.methods import adaptive

    return ("fixmatch", *adaptive.MODERN_BASES)


def _bases(config, options, base):
    """Each base method alone and with MUSCLE's MI term, at a few label counts."""
    from muscle_jax import methods

    bases = options.bases or default_bases()
    known = [name for name in methods.names(methods.CONSISTENCY) if name != "none"]
    unknown = [name for name in bases if name not in known]
    if unknown:
        raise SuiteError(f"Unknown base(s) {unknown}; choose from {known}.")
    counts = options.label_counts or tuple(
        per_class * config.data.num_classes for per_class in DEFAULT_BASES_LABELS_PER_CLASS
    )
    _check_counts(counts, config.data.num_classes, balanced=True)
    arms = _arms(options, ("muscle", "base"), ("muscle", "base"))
    return [
        Run(
            suite="bases",
            setting=f"{name} at {count} labels",
            arm=arm,
            seed=seed,
            method=name,
            mi=arm == "muscle",
            overrides=(("data.num_labeled", str(count)), ("seed", str(seed))),
            varied=(("base", name), ("num_labeled", str(count))),
        )
        for count in counts
        for name in bases
        for seed in options.seeds
        for arm in arms
    ]


def _noise(config, options, base):
    """Cross-entropy and self-adaptive training, without and with MI, at several noise levels."""
    from muscle_jax.data import label_noise  # Deferred, as the data package's other modules.

    count = _one_label_count(
        config, options, "noise", DEFAULT_NOISE_LABELS_PER_CLASS * config.data.num_classes
    )
    _check_counts([count], config.data.num_classes, balanced=True)
    levels = options.noise_levels or DEFAULT_NOISE_LEVELS
    bad = [level for level in levels if not 0 <= level < 1]
    if bad:
        raise SuiteError(f"--noise_levels must lie in [0, 1) (0: clean labels): {list(bad)}.")
    if len(set(levels)) != len(levels):
        raise SuiteError(f"--noise_levels repeats a level: {list(levels)}.")
    if options.noise_kind not in label_noise.KINDS:
        raise SuiteError(
            f"--noise_kind={options.noise_kind}: choose one of {', '.join(label_noise.KINDS)}."
        )
    arms = _arms(options, tuple(NOISE_ARMS), tuple(NOISE_ARMS))
    runs = []
    for level in levels:
        setting = f"noise {_number(level)}"
        if options.noise_kind != "symmetric":
            setting += f", {options.noise_kind}"
        for seed in options.seeds:
            for arm in arms:
                mi, supervised = NOISE_ARMS[arm]
                runs.append(
                    Run(
                        suite="noise",
                        setting=setting,
                        arm=arm,
                        seed=seed,
                        method=base,
                        mi=mi,
                        overrides=(
                            ("data.num_labeled", str(count)),
                            ("data.label_noise", str(float(level))),
                            ("data.label_noise_kind", options.noise_kind),
                            ("seed", str(seed)),
                        ),
                        varied=(
                            ("num_labeled", str(count)),
                            ("label_noise", _number(level)),
                            ("label_noise_kind", options.noise_kind),
                        ),
                        unsupervised="iic" if mi else "none",
                        supervised=supervised,
                    )
                )
    return runs
