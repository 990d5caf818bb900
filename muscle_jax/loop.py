"""The training loop: one step, then each periodic action that is due.

What a run does between steps (the progress line and TensorBoard scalars,
evaluation, summary.md and the curves, checkpoints, a profile, the run-time
projection) is a list of actions, each a `clu.periodic_actions` action with
its own cadence, as flax's examples drive their loops. The loop itself only
steps, times the steps, asks for a stop and calls the actions. A new periodic
thing is one more action, not another branch in the loop.

Order matters and is the list's: the summary first (it is the loop's one host
sync, and the record the others write must hold this step), then evaluation,
then the report (which draws the evaluation), then the checkpoint (which
saves both histories), the profiler last.
"""

import dataclasses
import json
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import numpy as np
from absl import logging
from clu import periodic_actions
from clu import profiler as clu_profiler

from muscle_jax import diagnostics, evaluation, input_pipeline, monitoring, preemption, report

# The unlabeled images every evaluation predicts (`input_pipeline.unlabeled_sample`):
# one more forward pass of each model over this many images.
UNLABELED_SAMPLE_SIZE = 512
# The evaluation history's keys for that sample's predicted-class counts.
SAMPLE_HISTORY_KEYS = {
    "ema_predicted": "unlabeled_predicted_ema",
    "raw_predicted": "unlabeled_predicted_raw",
}
# The curves PNG at most this often (a drawing is ~0.2-0.8 s of CPU); summary.md
# at every evaluation, and both at the end of a run.
PLOT_EVERY_SECONDS = 60.0


@dataclasses.dataclass
class Record:
    """What a run has measured so far, saved with every checkpoint and in results.json.

    ``history``: the evaluations (step, EMA and raw test accuracy, the unlabeled
    sample's predicted-class counts, the validation accuracies when there is a
    validation set). ``train_history``: the training metrics' means over each
    logging interval, one list for every metric the step returns (a metric a
    checkpoint from before it lacks is None there).
    """

    history: dict[str, list]
    train_history: dict[str, list]

    @classmethod
    def empty(cls, *, validation: bool) -> "Record":
        history = {"step": [], "ema_accuracy": [], "raw_accuracy": []}
        history.update({key: [] for key in SAMPLE_HISTORY_KEYS.values()})
        if validation:
            history.update(val_ema_accuracy=[], val_raw_accuracy=[])
        return cls(history, {"step": []})

    @classmethod
    def resumed(cls, meta: dict[str, Any]) -> "Record":
        """The record a checkpoint's metadata holds (older checkpoints lack some lists)."""
        history = meta["history"]
        for key in SAMPLE_HISTORY_KEYS.values():
            history.setdefault(key, [None] * len(history["step"]))
        return cls(history, meta.get("train_history") or {"step": []})

    def add_training_means(self, step: int, means: dict[str, float]) -> None:
        rows = len(self.train_history["step"])
        self.train_history["step"].append(step)
        for key in sorted(set(means) | set(self.train_history) - {"step"}):
            column = self.train_history.setdefault(key, [None] * rows)
            column.append(means.get(key))


class Action(periodic_actions.PeriodicAction):
    """A clu periodic action at the steps divisible by any of ``every``, and at the last step.

    ``on_stop``: also at the step where a stop (a signal, a preemption) ends
    the run early. Subclasses implement ``_apply(step, t)``.
    """

    on_stop = False

    def __init__(self, *, every: Sequence[int], last_step: int):
        self._cadences = tuple(sorted({every_steps for every_steps in every if every_steps}))
        super().__init__(
            every_steps=self._cadences[0] if self._cadences else None, on_steps=(last_step,)
        )
        self._stopping = False

    def after_step(self, step: int, *, stopping: bool) -> bool:
        """Runs the action if it is due after ``step``; returns whether it ran."""
        self._stopping = stopping and self.on_stop
        return self(step)

    def _should_trigger(self, step: int, t: float) -> bool:
        return (
            self._stopping
            or step in self._on_steps
            or any(step % every_steps == 0 for every_steps in self._cadences)
        )


@dataclasses.dataclass
class Loop:
    """What the actions read: the state after the last step, the run's record and settings."""

    config: Any
    state: Any
    record: Record
    p_eval: Callable
    source: Any
    data_sharding: Any
    workdir: str
    is_first_process: bool
    validation_set: tuple[np.ndarray, np.ndarray] | None
    unlabeled_sample: tuple[np.ndarray, np.ndarray]

    def evaluate(self, held_out=None) -> dict[str, Any]:
        """Accuracies on the test split, or on ``held_out`` (e.g. the validation set).

        With the EMA model's confusion matrix (rows: true class, columns:
        predicted) and both models' predicted-class counts, from the same pass.
        """
        batches = input_pipeline.evaluation(
            self.config.data, source=self.source, sharding=self.data_sharding, held_out=held_out
        )
        totals = evaluation.accumulate_hits(self.p_eval(self.state, batch) for batch in batches)
        ema_accuracy, ema_per_class = evaluation.accuracies(totals["ema_correct"], totals["count"])
        raw_accuracy, _ = evaluation.accuracies(totals["raw_correct"], totals["count"])
        return {
            "ema_accuracy": ema_accuracy,
            "raw_accuracy": raw_accuracy,
            "per_class_accuracy": ema_per_class,
            "num_examples": int(totals["count"].sum()),
            "confusion": totals["ema_confusion"].astype(int).tolist(),
            "ema_predicted": totals["ema_predicted"].astype(int).tolist(),
            "raw_predicted": totals["raw_predicted"].astype(int).tolist(),
        }

    def write_report(self, plot: bool = True) -> None:
        """summary.md so far, and the curves PNG when ``plot`` (first process only)."""
        if self.is_first_process:
            history, train_history = self.record.history, self.record.train_history
            write_report(self.workdir, self.config, history, train_history, plot=plot)


def write_report(workdir, config, history, train_history, results=None, plot=True) -> None:
    """Writes summary.md, and the curves PNG when ``plot`` and ``config.plot_curves``."""
    report.write_summary(
        workdir, config=config, history=history, train_history=train_history, results=results
    )
    if plot and config.get("plot_curves", True):
        report.plot_curves(
            workdir,
            history=history,
            train_history=train_history,
            terms=report.drawn_terms(config),
        )


class Summary(Action):
    """The means of the metrics since the last summary: logged, in TensorBoard and the record.

    It runs whenever any other action does, so what they write holds this
    step; its host sync is the loop's only one, and it raises on a NaN before
    anything is saved.
    """

    on_stop = True

    def __init__(self, loop: Loop, writer, progress: monitoring.ProgressLine, **cadence):
        super().__init__(**cadence)
        self._loop, self._writer, self._progress = loop, writer, progress
        self._sums = None

    def add(self, metrics: dict[str, jax.Array], step: int) -> None:
        """Adds one step's metrics (device arrays: nothing waits for them here)."""
        if self._sums is None:
            self._sums = monitoring.empty_sums(metrics)
        self._sums = monitoring.accumulate(self._sums, metrics, step)

    def _apply(self, step: int, t: float) -> None:
        means = monitoring.summarise(self._sums)
        self._sums = None
        rate = self._progress.images_per_second(step)
        self._writer.write_scalars(step, {**means, "images_per_second": rate})
        history = self._loop.record.history
        accuracy = history["ema_accuracy"][-1] if history["ema_accuracy"] else None
        logging.info(self._progress.format(step, means, rate, accuracy=accuracy))
        # Every term at -v 1 (they are always in TensorBoard).
        logging.vlog(1, self._progress.format(step, means, rate, all_terms=True))
        self._loop.record.add_training_means(step, means)


class Evaluate(Action):
    """Test accuracy of both models, the unlabeled sample's predictions, the validation set."""

    def __init__(self, loop: Loop, writer, **cadence):
        super().__init__(**cadence)
        self._loop, self._writer = loop, writer
        self.last: dict[str, Any] | None = None

    def _apply(self, step: int, t: float) -> None:
        loop, history = self._loop, self._loop.record.history
        last = self.last = loop.evaluate()
        history["step"].append(step)
        history["ema_accuracy"].append(last["ema_accuracy"])
        history["raw_accuracy"].append(last["raw_accuracy"])
        predicted = loop.evaluate(held_out=loop.unlabeled_sample)
        for key, history_key in SAMPLE_HISTORY_KEYS.items():
            history[history_key].append(predicted[key])
        scalars = {
            "eval/ema_accuracy": last["ema_accuracy"],
            "eval/raw_accuracy": last["raw_accuracy"],
            "eval/classes_lost": len(diagnostics.lost_classes(last["per_class_accuracy"])),
            "eval/unlabeled_classes_unpredicted_ema": len(
                diagnostics.unpredicted_classes(predicted["ema_predicted"])
            ),
            "eval/unlabeled_classes_unpredicted_raw": len(
                diagnostics.unpredicted_classes(predicted["raw_predicted"])
            ),
        }
        held_out = ""
        if loop.validation_set is not None:
            val = loop.evaluate(held_out=loop.validation_set)
            history["val_ema_accuracy"].append(val["ema_accuracy"])
            history["val_raw_accuracy"].append(val["raw_accuracy"])
            scalars["eval/val_ema_accuracy"] = val["ema_accuracy"]
            held_out = f"; validation EMA {val['ema_accuracy']:.4f}"
        self._writer.write_scalars(step, scalars)
        logging.info(
            "step %d: test accuracy EMA %.4f, raw %.4f%s",
            step,
            last["ema_accuracy"],
            last["raw_accuracy"],
            held_out,
        )


class WriteReport(Action):
    """summary.md at every evaluation; the curves PNG at most once a minute and at the end."""

    def __init__(self, loop: Loop, **cadence):
        super().__init__(**cadence)
        self._loop = loop
        self._last_plot = time.perf_counter()  # The first PNG a minute into the loop.

    def _apply(self, step: int, t: float) -> None:
        plot = step in self._on_steps or time.perf_counter() - self._last_plot >= PLOT_EVERY_SECONDS
        self._loop.write_report(plot=plot)
        self._last_plot = time.perf_counter() if plot else self._last_plot


class SaveCheckpoint(Action):
    """The state and the record, with what a resume checks (compatibility, config)."""

    on_stop = True

    def __init__(self, loop: Loop, checkpointer, compatibility: dict, **cadence):
        super().__init__(**cadence)
        self._loop, self._checkpointer, self._compatibility = loop, checkpointer, compatibility

    def _apply(self, step: int, t: float) -> None:
        loop = self._loop
        meta = {
            "history": loop.record.history,
            "train_history": loop.record.train_history,
            "compatibility": self._compatibility,
            "config": json.loads(loop.config.to_json()),
        }
        self._checkpointer.save(step, loop.state, meta, force=True)


class Profile(periodic_actions.Profile):
    """clu's profiler action: a trace of ``steps`` steps from ``first_step`` on, for TensorBoard.

    The trace goes under the workdir (``plugins/profile/``), where TensorBoard's
    profile tab finds it. Once a run (``every_secs=None``, no step cadence).
    """

    def __init__(self, *, workdir: str, first_step: int, steps: int):
        super().__init__(
            logdir=workdir,
            num_profile_steps=steps,
            profile_duration_ms=None,
            first_profile=first_step,
            every_secs=None,
        )

    def after_step(self, step: int, *, stopping: bool) -> bool:
        del stopping  # A trace in progress ends with the run (`finish`).
        return self(step)

    def finish(self) -> None:
        """Ends a trace still running when the loop ends (a short run or a stop)."""
        if self._session_running:
            self._end_session(clu_profiler.stop())


class StepTimer:
    """Waits for the steps as the platform needs, times the first, projects the run's length.

    A stop (Ctrl-C) waits for every step already dispatched. Unchecked, the
    loop ran up to log_every_steps ahead of the device (a WRN-28-2 on 2 CPU
    cores: ~18 queued steps, 216 s). On a CPU, where steps are long, each is
    waited for, so a stop waits for the running step only; an accelerator keeps
    one step queued behind the running one, so that its short steps do not
    idle between them.
    """

    def __init__(self, config, *, start_step: int):
        self._config = config
        self._wait_for_each_step = jax.default_backend() == "cpu"
        self._in_flight = None
        self.first_step_done: float | None = None
        # The step after which the run's length is projected (None: too short to need one).
        projection_step = start_step + 1 + monitoring.PROJECTION_STEPS
        self._projection_step = projection_step if projection_step < config.total_steps else None

    def after_step(self, step: int, metrics) -> None:
        jax.block_until_ready(metrics if self._wait_for_each_step else self._in_flight)
        self._in_flight = metrics
        if self.first_step_done is None:
            # One wait, at the first step only: it splits start-up and compilation
            # from the training loop in the reported timing.
            jax.block_until_ready(metrics)
            self.first_step_done = time.perf_counter()
        if step == self._projection_step:
            jax.block_until_ready(metrics)  # The timed steps end with this one's end.
            seconds = time.perf_counter() - self.first_step_done
            projection, advice = monitoring.run_time_projection(
                seconds_per_step=seconds / monitoring.PROJECTION_STEPS,
                steps_left=self._config.total_steps - step,
                config=self._config,
                platform=jax.default_backend(),
            )
            logging.info("%s", projection)
            if advice:
                logging.warning("%s", advice)


def run(
    loop: Loop,
    *,
    train_step: Callable,
    batches: Iterator[dict],
    start_step: int,
    summary: Summary,
    actions: Sequence[Action],
    timer: StepTimer,
) -> str | None:
    """Steps from ``start_step`` to the config's last step; returns the stopping signal's name.

    After each step the summary takes the step's metrics, then every action
    that is due runs, in order; a stop (SIGTERM, SIGINT, a preemption notice)
    ends the loop after the actions that run at a stop. ``loop.state`` holds
    the state after the last step.
    """
    config = loop.config
    with preemption.stop_on_signals(multi_process=jax.process_count() > 1) as stop:
        for step in range(start_step, config.total_steps):
            loop.state, metrics = train_step(loop.state, next(batches))
            done = step + 1
            timer.after_step(done, metrics)
            summary.add(metrics, step)
            stopping = stop.should_stop(done)
            for action in (summary, *actions):
                action.after_step(done, stopping=stopping)
            if stopping:
                return stop.signal_name
    return None
