"""What a suite is: one frozen `Suite` record with its `Arm`s, and the `Run`s it is made of.

A suite is registered the way a method is (`muscle_jax.methods.base.Term`):
one `Suite` holds its name and description, its arms (what each trains and
how tables call it), which arms its report pairs, its plots, its results.md
section and the builder of its runs. `suites` keeps the registry; the
command line, results.md, the plots and the docs' checks ask it, and no
module branches on a suite's name.

This module imports nothing else of the package: the outcomes, tables, plots
and suites all build on it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # Annotations only: importing either here would make a cycle.
    import ml_collections
    from matplotlib.figure import Figure

# In `Suite.pairs`, "every other arm present": ``(EVERY_ARM, "base")`` pairs each
# arm the runs have with ``base``, in the order the table shows the arms.
EVERY_ARM = "*"


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of a suite.

    A run is an ordinary ``python -m muscle_jax.main`` run, named by its
    directory ``SETTING/ARM/seed_K``: the same suite command always maps the
    same run to the same directory, which is what makes a killed suite
    resumable.

    Attributes:
      suite: which suite it belongs to.
      setting: the row it reports in (e.g. ``"20"`` labels, ``"lamb=2"``).
      arm: the column (an `Arm` of its suite).
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


def _slug(setting: str) -> str:
    """A setting as a directory name: ``"mi_weight=0.3"`` -> ``"mi_weight_0.3"``."""
    return setting.replace("=", "_").replace("/", "_").replace(" ", "_").lower()


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


@dataclasses.dataclass(frozen=True)
class Arm:
    """One column of a suite: what its runs train, and how tables and plots call it.

    Attributes:
      name: the run directory's ``ARM`` and what ``--arms`` picks.
      label: how tables and plots call it; ``{base}`` stands for the base method.
      method: the ``method=`` variant; None: the base method (the config's, or
        the row's in the bases suite).
      mi: the ``mi=`` variant.
      unsupervised, supervised, addon: the term variants ("": the config's).
      selectable: ``--arms`` may pick it (finetune's pre-training always runs;
        the MI ablation's rows are its settings, not arms).
      reported: a column of the tables and plots; False for runs that are a
        means, not a result (finetune's pre-training).
    """

    name: str
    label: str
    method: str | None = None
    mi: bool = False
    unsupervised: str = ""
    supervised: str = ""
    addon: str = ""
    selectable: bool = True
    reported: bool = True

    def variant(self, base: str) -> dict[str, Any]:
        """The `Run` fields that choose its terms, with ``base`` for the base method."""
        return {
            "method": self.method or base,
            "mi": self.mi,
            "unsupervised": self.unsupervised,
            "supervised": self.supervised,
            "addon": self.addon,
        }


class Plot(Protocol):
    """One PNG of a suite (`plots.Lines`, `plots.Bars`)."""

    filename: str

    def figure(self, suite: Suite, outcomes: Sequence[Any], base: str) -> Figure: ...


@dataclasses.dataclass(frozen=True)
class Suite:
    """One experiment suite: its runs, its columns, its report and its plots.

    Attributes:
      name: what ``--suite`` selects.
      description: one line for ``--help`` (docs/experiments.md has the protocol).
      arms: every arm its runs may have.
      build: ``(suite, config, options, base) -> [Run, ...]``: its runs for the
        user's config (``base``: the config's base method); raises `SuiteError`
        for an option it cannot take, before anything runs.
      report: ``(suite, outcomes, base, default_mi_weight) -> [line, ...]``: its
        section of results.md, between the common header and the classes lost.
      plots: its PNGs (`Plot`), drawn into the suite's directory.
      pairs: ``(a, b)``: the paired differences ``a - b`` its report shows,
        the headline first; ``a`` may be `EVERY_ARM`.
      default_arms: the arms run without ``--arms``; empty: every selectable one.
      label_counts: what ``--label_counts`` means for it, for ``--help``.
      columns: the results.csv columns its runs fill (keys of `Run.varied`).
      derived: config keys it sets from the user's value rather than sweeping
        them, so a user may fix them (finetune splits ``total_steps``).
    """

    name: str
    description: str
    arms: tuple[Arm, ...]
    build: Callable[[Suite, ml_collections.ConfigDict, SuiteOptions, str], list[Run]]
    report: Callable[[Suite, Sequence[Any], str, float], list[str]]
    plots: tuple[Plot, ...] = ()
    pairs: tuple[tuple[str, str], ...] = ()
    default_arms: tuple[str, ...] = ()
    label_counts: str = ""
    columns: tuple[str, ...] = ()
    derived: tuple[str, ...] = ()

    def __post_init__(self):
        names = [arm.name for arm in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"Suite {self.name!r}: arms repeat a name: {names}.")
        unknown = {name for pair in self.pairs for name in pair} - {*names, EVERY_ARM}
        unknown |= set(self.default_arms) - set(self.choices)
        if unknown:
            raise ValueError(
                f"Suite {self.name!r}: pairs or default_arms name {sorted(unknown)}, which are "
                "not its (selectable) arms."
            )

    @property
    def choices(self) -> tuple[str, ...]:
        """The arms ``--arms`` may pick, in the order the suite lists them."""
        return tuple(arm.name for arm in self.arms if arm.selectable)

    def arm(self, name: str) -> Arm:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(f"Suite {self.name!r} has no arm {name!r}.")

    def arm_label(self, name: str, base: str) -> str:
        """How an arm is called in tables and plots (its name when the suite has no such arm)."""
        found = [arm for arm in self.arms if arm.name == name]
        return found[0].label.format(base=base) if found else name

    def reported(self, name: str) -> bool:
        """Whether the arm is a column of the tables and plots."""
        return all(arm.reported for arm in self.arms if arm.name == name)

    def chosen_arms(self, options: SuiteOptions) -> list[Arm]:
        """The arms ``--arms`` picks, or the default ones; refuses one the suite lacks."""
        names = list(options.arms or self.default_arms or self.choices)
        unknown = [name for name in names if name not in self.choices]
        if unknown:
            raise SuiteError(
                f"Unknown arm(s) {unknown} for this suite; choose from {list(self.choices)}."
            )
        return [self.arm(name) for name in names]

    def pairs_among(self, arms: Sequence[str]) -> list[tuple[str, str]]:
        """`pairs` whose two arms are both among ``arms``, `EVERY_ARM` expanded in their order."""
        found = []
        for first, second in self.pairs:
            firsts = [arm for arm in arms if arm != second] if first == EVERY_ARM else [first]
            found += [(arm, second) for arm in firsts if arm in arms and second in arms]
        return found
