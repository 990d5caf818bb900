"""A suite's results, rebuilt from its run directories: results.csv, results.md and the plots.

Every figure is read back from the runs' ``results.json`` (`outcomes`), so
the files can be rebuilt at any time (``--report_only``), from a suite that
is still running or was stopped. What differs between suites (results.md's
section, the pairs, the plots, the CSV's columns) comes from the suite's
`Suite` record.
"""

import csv
import io
import os
from collections.abc import Sequence
from typing import Any

from muscle_jax import diagnostics
from muscle_jax import workdir as workdir_lib
from muscle_jax.experiments import plots, suites, tables

# Reading runs back is `outcomes`' (shared with the plots and the dispatcher);
# named here too, where a suite's results are read.
from muscle_jax.experiments.outcomes import Outcome as Outcome
from muscle_jax.experiments.outcomes import collect as collect
from muscle_jax.experiments.outcomes import read_results as read_results

# results.csv's columns: what identifies the run, what it varied (`csv_columns`),
# what it measured.
RUN_COLUMNS = ("suite", "run", "setting", "arm", "seed", "method", "mi")
MEASURED_COLUMNS = (
    "status",
    "accuracy",
    "worst_class_accuracy",
    "classes_lost",
    "final_accuracy",
    "raw_accuracy",
    "steps",
    "wall_seconds",
)


def varied_columns() -> tuple[str, ...]:
    """The columns of what runs vary: every registered suite's `Suite.columns`, once each.

    One header for every suite, so the CSVs of different suites line up.
    """
    return tuple(dict.fromkeys(column for suite in suites.registered() for column in suite.columns))


def csv_columns() -> tuple[str, ...]:
    return RUN_COLUMNS + varied_columns() + MEASURED_COLUMNS


def csv_rows(outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    columns, varied = csv_columns(), varied_columns()
    rows = []
    for outcome in outcomes:
        run, results = outcome.run, outcome.results
        row = {
            "suite": run.suite,
            "run": run.name,
            "setting": run.setting,
            "arm": run.arm,
            "seed": run.seed,
            "method": run.method,
            "mi": run.mi,
            **{key: "" for key in varied},
            **dict(run.varied),
            "status": "completed" if results else "not finished",
        }
        if results:
            row.update(
                accuracy=results["accuracy"],
                worst_class_accuracy=outcome.worst_class_accuracy,
                classes_lost=outcome.classes_lost,
                final_accuracy=results["final_accuracy"],
                raw_accuracy=results["raw_accuracy"],
                steps=results["steps"],
                wall_seconds=round(results["run"]["wall_seconds"], 1),
            )
        rows.append({column: row.get(column, "") for column in columns})
    return rows


def csv_text(outcomes: Sequence[Outcome]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=csv_columns(), lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows(outcomes))
    return buffer.getvalue()


# ------------------------------------------------------------------ results.md


def _header(suite: str, outcomes: Sequence[Outcome], command: str) -> list[str]:
    finished = [outcome for outcome in outcomes if outcome.results]
    seeds = sorted({outcome.run.seed for outcome in outcomes})
    wall = sum(outcome.results["run"]["wall_seconds"] for outcome in finished)
    dataset = finished[0].results["config"]["data"]["name"] if finished else "?"
    return [
        f"# {suite} on {dataset}",
        "",
        f"Command: `{command}`",
        "",
        f"{len(finished)} of {len(outcomes)} runs finished; seeds {', '.join(map(str, seeds))}; "
        f"{wall / 60:.1f} min of wall time in the finished runs.",
        "",
        "Accuracy: test accuracy in % of each run's EMA model, the median of its last "
        "evaluations in the last quarter of the run (results.json's `accuracy`); "
        "mean ± standard deviation over seeds. Differences are paired by seed (same "
        "labeled subset, initialisation and data order), with a Student-t 95 % confidence "
        "interval; an interval that contains 0 does not tell the two apart.",
        "",
    ]


def _classes_lost(suite: suites.Suite, outcomes: Sequence[Outcome], base: str) -> list[str]:
    return [
        "",
        f"## Classes lost ({diagnostics.LOST_CLASS_RULE})",
        "",
        f"A class is lost when the EMA model's {diagnostics.LOST_CLASS_RULE} at the final "
        "evaluation: per setting and arm, the classes lost over the finished seeds, and how "
        "many runs lost at least one (each run's `summary.md` shows where its images went).",
        "",
        tables.classes_lost_table(outcomes, suite, base=base),
    ]


def _not_finished(outcomes: Sequence[Outcome]) -> list[str]:
    missing = [outcome.run.name for outcome in outcomes if outcome.results is None]
    if not missing:
        return []
    line = f"Not finished ({len(missing)}): " + ", ".join(missing[:20])
    return ["", line + (", ..." if len(missing) > 20 else "")]


def markdown(
    suite: str,
    outcomes: Sequence[Outcome],
    *,
    base: str,
    command: str,
    default_mi_weight: float,
) -> str:
    """results.md: the common header, the suite's own section (`Suite.report`), classes lost."""
    record = suites.get(suite)
    lines = _header(suite, outcomes, command)
    lines += record.report(record, outcomes, base, default_mi_weight)
    lines += _classes_lost(record, outcomes, base)
    lines += _not_finished(outcomes)
    return "\n".join(lines) + "\n"


def write(
    workdir: str,
    suite: str,
    outcomes: Sequence[Outcome],
    *,
    base: str,
    command: str,
    default_mi_weight: float,
    plot: bool = True,
) -> None:
    """Writes results.csv, results.md and (``plot``) the suite's PNG plots into ``workdir``."""
    table = csv_text(outcomes)
    text = markdown(
        suite, outcomes, base=base, command=command, default_mi_weight=default_mi_weight
    )
    workdir_lib.write_atomically(os.path.join(workdir, "results.csv"), lambda f: f.write(table))
    workdir_lib.write_atomically(os.path.join(workdir, "results.md"), lambda f: f.write(text))
    if plot:
        plots.write(workdir, suites.get(suite), outcomes, base=base)
