"""A suite's results, rebuilt from its run directories: results.csv and results.md.

Nothing here keeps state of its own: every figure is read back from the
runs' ``results.json``, so the files can be rebuilt at any time
(``--report_only``), from a suite that is still running or was stopped.
"""

import csv
import dataclasses
import io
import json
import os
from collections.abc import Sequence
from typing import Any

from muscle_jax import diagnostics
from muscle_jax import workdir as workdir_lib
from muscle_jax.experiments import statistics, suites

# results.csv's columns: what identifies the run, what it varied, what it measured.
RUN_COLUMNS = ("suite", "run", "setting", "arm", "seed", "method", "mi")
VARIED_COLUMNS = (
    "num_labeled",
    "imbalance_ratio",
    "knob",
    "value",
    "label_noise",
    "label_noise_kind",
)
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
CSV_COLUMNS = RUN_COLUMNS + VARIED_COLUMNS + MEASURED_COLUMNS


@dataclasses.dataclass(frozen=True)
class Outcome:
    """A run and what its directory holds: ``results`` is None until it has finished."""

    run: suites.Run
    results: dict[str, Any] | None

    @property
    def accuracy(self) -> float | None:
        return None if self.results is None else self.results["accuracy"]

    @property
    def worst_class_accuracy(self) -> float | None:
        """The lowest per-class accuracy at the final evaluation (EMA model)."""
        if self.results is None:
            return None
        per_class = [value for value in self.results["per_class_accuracy"] if value is not None]
        return min(per_class) if per_class else None

    @property
    def classes_lost(self) -> int | None:
        """How many classes the run lost (`diagnostics.lost_classes`) at the final evaluation.

        Counted from ``per_class_accuracy``, so a results.json written before
        ``classes_lost`` existed counts the same way.
        """
        if self.results is None:
            return None
        return len(diagnostics.lost_classes(self.results["per_class_accuracy"]))


def read_results(run_dir: str) -> dict[str, Any] | None:
    """A finished run's results.json, or None when the run has not finished."""
    path = os.path.join(run_dir, "results.json")
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        results = json.load(handle)
    return results if results.get("status") == "completed" else None


def collect(runs: Sequence[suites.Run], workdir: str) -> list[Outcome]:
    return [Outcome(run, read_results(os.path.join(workdir, run.name))) for run in runs]


def csv_rows(outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
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
            **{key: "" for key in VARIED_COLUMNS},
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
        rows.append({column: row.get(column, "") for column in CSV_COLUMNS})
    return rows


def csv_text(outcomes: Sequence[Outcome]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows(outcomes))
    return buffer.getvalue()


# ------------------------------------------------------------------ results.md


def by_seed(outcomes: Sequence[Outcome], setting: str, arm: str, measure: str = "accuracy"):
    """``{seed: value}`` of the finished runs in one cell of the table."""
    return {
        outcome.run.seed: getattr(outcome, measure)
        for outcome in outcomes
        if outcome.run.setting == setting
        and outcome.run.arm == arm
        and getattr(outcome, measure) is not None
    }


def _ordered(values) -> list:
    return list(dict.fromkeys(values))


def comparison_table(
    outcomes: Sequence[Outcome],
    *,
    base: str,
    measure: str,
    row_title: str,
    pairs: Sequence[tuple[str, str]],
) -> str:
    """Rows: settings; columns: arms (mean ± std) then each pair's paired difference."""
    settings = _ordered(outcome.run.setting for outcome in outcomes)
    arms = _ordered(outcome.run.arm for outcome in outcomes if outcome.run.arm != suites.PRETRAIN)
    pairs = [(a, b) for a, b in pairs if a in arms and b in arms]
    header = [row_title] + [suites.arm_label(arm, base) for arm in arms]
    header += [
        f"{suites.arm_label(a, base)} − {suites.arm_label(b, base)} (95 % CI)" for a, b in pairs
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
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
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def realised_noise(outcomes: Sequence[Outcome]) -> str:
    """Per setting, the realised noise rates of its finished runs (``–`` where none recorded it)."""
    cells = []
    for setting in _ordered(outcome.run.setting for outcome in outcomes):
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


def classes_lost_table(outcomes: Sequence[Outcome], *, base: str) -> str:
    """Rows: settings; columns: arms; each cell: `lost_cell` over the finished seeds."""
    settings = _ordered(outcome.run.setting for outcome in outcomes)
    arms = _ordered(outcome.run.arm for outcome in outcomes if outcome.run.arm != suites.PRETRAIN)
    header = ["setting"] + [suites.arm_label(arm, base) for arm in arms]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for setting in settings:
        cells = [setting]
        for arm in arms:
            cells.append(lost_cell(list(by_seed(outcomes, setting, arm, "classes_lost").values())))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ablation_table(outcomes: Sequence[Outcome], *, reference: str, default: str | None) -> str:
    """One row per setting: accuracy, and its paired difference from the base and the default."""
    settings = _ordered(outcome.run.setting for outcome in outcomes)
    header = ["setting", "accuracy", f"− {reference} (95 % CI)"]
    if default:
        header.append(f"− {default}, the default (95 % CI)")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def values(setting):
        return {
            outcome.run.seed: outcome.accuracy
            for outcome in outcomes
            if outcome.run.setting == setting and outcome.accuracy is not None
        }

    for setting in settings:
        cells = [setting, statistics.summarise(list(values(setting).values())).format()]
        for other in [reference] + ([default] if default else []):
            if setting == other:
                cells.append("(reference)")
            else:
                cells.append(statistics.paired_difference(values(setting), values(other)).format())
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(
    suite: str,
    outcomes: Sequence[Outcome],
    *,
    base: str,
    command: str,
    default_mi_weight: float,
) -> str:
    finished = [outcome for outcome in outcomes if outcome.results]
    seeds = sorted({outcome.run.seed for outcome in outcomes})
    wall = sum(outcome.results["run"]["wall_seconds"] for outcome in finished)
    dataset = finished[0].results["config"]["data"]["name"] if finished else "?"
    lines = [
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
    paired = [suites.PAIRED[suite]]
    if suite == "label_sweep":
        lines += [
            comparison_table(
                outcomes, base=base, measure="accuracy", row_title="labels", pairs=paired
            )
        ]
    elif suite == "bias":
        present = {outcome.run.arm for outcome in outcomes}
        paired += [pair for pair in suites.BIAS_PAIRS if set(pair) <= present]
        num_labeled = dict(outcomes[0].run.varied)["num_labeled"] if outcomes else "?"
        lines += [
            f"Labeled set: {num_labeled} labels, long-tailed: class 0 has `ratio` times the "
            "labels of the last class. Unlabeled pool: the whole training set, or (`unlabeled "
            "same`/`reversed`) long-tailed by the same ratio in the labels' order or the "
            "reversed one.",
            "",
            "## Overall accuracy",
            "",
            comparison_table(
                outcomes, base=base, measure="accuracy", row_title="imbalance", pairs=paired
            ),
            "",
            "## Worst-class accuracy (the lowest per-class accuracy at the final evaluation)",
            "",
            comparison_table(
                outcomes,
                base=base,
                measure="worst_class_accuracy",
                row_title="imbalance",
                pairs=paired,
            ),
        ]
    elif suite == "finetune":
        paired.append((suites.FINETUNE_MUSCLE, suites.SCRATCH_MUSCLE))
        pretrain = [o for o in outcomes if o.run.arm == suites.PRETRAIN]
        steps = {o.run.arm: dict(o.run.overrides).get("total_steps") for o in outcomes}
        tuning = steps.get(suites.FINETUNE_MUSCLE) or steps.get(suites.FINETUNE_SUPERVISED)
        lines += [
            f"MI-only pre-training ({steps.get(suites.PRETRAIN)} steps, no labels in the "
            f"loss), then {tuning} fine-tuning steps; from scratch: "
            f"{steps.get(suites.SCRATCH_MUSCLE)} steps. "
            f"{sum(o.results is not None for o in pretrain)} of {len(pretrain)} pre-training "
            "runs finished (their accuracy, clusters read as classes, is not a result).",
            "",
            comparison_table(outcomes, base=base, measure="accuracy", row_title="", pairs=paired),
        ]
    elif suite == "objectives":
        arms = list(dict.fromkeys(outcome.run.arm for outcome in outcomes))
        pairs = [(arm, "base") for arm in arms if arm != "base" and "base" in arms]
        lines += [
            "Each arm is the base method with one term swapped: the unsupervised term "
            "(none, IIC = MUSCLE, self-defined target, MIO) at the config's "
            "loss.unsupervised_weight, or self-adaptive training as the supervised term.",
            "",
            comparison_table(outcomes, base=base, measure="accuracy", row_title="", pairs=pairs),
        ]
    elif suite == "bases":
        lines += [
            "Each row is one base method at one label count, alone (`base`) and with "
            "MUSCLE's MI term on top (`muscle`), at the config's MI weight; no tuning.",
            "",
            comparison_table(
                outcomes, base="base", measure="accuracy", row_title="base, labels", pairs=paired
            ),
        ]
    elif suite == "noise":
        pairs = list(suites.NOISE_PAIRS)
        num_labeled = dict(outcomes[0].run.varied)["num_labeled"] if outcomes else "?"
        lines += [
            f"Labeled set: {num_labeled} labels, a fraction of them (`noise`) given a wrong "
            "label before training (`data.label_noise`, seeded: every arm of a seed sees the "
            "same wrong labels); test labels are clean. Arms: cross-entropy (`"
            f"{suites.arm_label('base', base)}`) or self-adaptive training as the supervised "
            "term, each without and with MUSCLE's MI term.",
            "",
            comparison_table(
                outcomes, base=base, measure="accuracy", row_title="label noise", pairs=pairs
            ),
            "",
            "Realised noise rates (results.json's `label_noise`): " + realised_noise(outcomes),
        ]
    elif suite == "mi_ablation":
        default = f"mi_weight={suites._number(default_mi_weight)}"
        settings = {outcome.run.setting for outcome in outcomes}
        lines += [
            "One knob changed at a time from the config's MUSCLE; `mi_weight=0` is the base "
            "method.",
            "",
            ablation_table(
                outcomes,
                reference="mi_weight=0",
                default=default if default in settings and default != "mi_weight=0" else None,
            ),
        ]
    lines += [
        "",
        f"## Classes lost ({diagnostics.LOST_CLASS_RULE})",
        "",
        f"A class is lost when the EMA model's {diagnostics.LOST_CLASS_RULE} at the final "
        "evaluation: per setting and arm, the classes lost over the finished seeds, and how "
        "many runs lost at least one (each run's `summary.md` shows where its images went).",
        "",
        classes_lost_table(outcomes, base=base),
    ]
    missing = [outcome.run.name for outcome in outcomes if outcome.results is None]
    if missing:
        lines += ["", f"Not finished ({len(missing)}): " + ", ".join(missing[:20])]
        if len(missing) > 20:
            lines[-1] += ", ..."
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
        from muscle_jax.experiments import plots  # Deferred: matplotlib is slow to import.

        plots.write(workdir, suite, outcomes, base=base)
