"""results.md's tables: per setting and arm, the mean ± std over seeds and the paired differences.

The suites' report sections (`Suite.report`) are built from these; the
arms' names and pairs come from the `Suite` record, so a table never
branches on which suite it shows.
"""

from collections.abc import Sequence

from muscle_jax.experiments import statistics
from muscle_jax.experiments.outcomes import Outcome, by_seed, ordered
from muscle_jax.experiments.records import Suite


def _reported_arms(outcomes: Sequence[Outcome], suite: Suite) -> list[str]:
    return ordered(o.run.arm for o in outcomes if suite.reported(o.run.arm))


def _rows(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in rows])


def comparison_table(
    outcomes: Sequence[Outcome], suite: Suite, *, base: str, measure: str, row_title: str
) -> str:
    """Rows: settings; columns: arms (mean ± std) then each of the suite's pairs' differences."""
    settings = ordered(outcome.run.setting for outcome in outcomes)
    arms = _reported_arms(outcomes, suite)
    pairs = suite.pairs_among(arms)
    header = [row_title] + [suite.arm_label(arm, base) for arm in arms]
    header += [
        f"{suite.arm_label(a, base)} − {suite.arm_label(b, base)} (95 % CI)" for a, b in pairs
    ]
    rows = []
    for setting in settings:
        cells = [setting]
        for arm in arms:
            values = by_seed(outcomes, setting, arm, measure)
            cells.append(statistics.summarise(list(values.values())).format())
        for a, b in pairs:
            difference = statistics.paired_difference(
                by_seed(outcomes, setting, a, measure), by_seed(outcomes, setting, b, measure)
            )
            cells.append(difference.format())
        rows.append(cells)
    return _rows(header, rows)


def realised_noise(outcomes: Sequence[Outcome]) -> str:
    """Per setting, the realised noise rates of its finished runs (``–`` where none recorded it)."""
    cells = []
    for setting in ordered(outcome.run.setting for outcome in outcomes):
        rates = sorted(
            {
                round(outcome.results["label_noise"]["realised_rate"], 4)
                for outcome in outcomes
                if outcome.run.setting == setting
                and outcome.results
                and outcome.results.get("label_noise")
            }
        )
        cells.append(f"{setting}: {', '.join(f'{rate:g}' for rate in rates) or '–'}")
    return "; ".join(cells) + "."


def lost_cell(lost_per_run: Sequence[int]) -> str:
    """``lost: 1 class in 1/3 runs``: classes lost over the runs, and how many runs lost any."""
    if not lost_per_run:
        return "–"
    total = sum(lost_per_run)
    losing = sum(count > 0 for count in lost_per_run)
    return f"lost: {total} class{'es' if total != 1 else ''} in {losing}/{len(lost_per_run)} runs"


def classes_lost_table(outcomes: Sequence[Outcome], suite: Suite, *, base: str) -> str:
    """Rows: settings; columns: arms; each cell: `lost_cell` over the finished seeds."""
    settings = ordered(outcome.run.setting for outcome in outcomes)
    arms = _reported_arms(outcomes, suite)
    header = ["setting"] + [suite.arm_label(arm, base) for arm in arms]
    rows = [
        [setting]
        + [
            lost_cell(list(by_seed(outcomes, setting, arm, "classes_lost").values()))
            for arm in arms
        ]
        for setting in settings
    ]
    return _rows(header, rows)


def ablation_table(outcomes: Sequence[Outcome], *, reference: str, default: str | None) -> str:
    """One row per setting: accuracy, and its paired difference from the base and the default."""
    settings = ordered(outcome.run.setting for outcome in outcomes)
    header = ["setting", "accuracy", f"− {reference} (95 % CI)"]
    if default:
        header.append(f"− {default}, the default (95 % CI)")

    def values(setting):
        return {
            outcome.run.seed: outcome.accuracy
            for outcome in outcomes
            if outcome.run.setting == setting and outcome.accuracy is not None
        }

    rows = []
    for setting in settings:
        cells = [setting, statistics.summarise(list(values(setting).values())).format()]
        for other in [reference] + ([default] if default else []):
            if setting == other:
                cells.append("(reference)")
            else:
                cells.append(statistics.paired_difference(values(setting), values(other)).format())
        rows.append(cells)
    return _rows(header, rows)
