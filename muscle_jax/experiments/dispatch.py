"""Running a suite's runs: one after another on this machine, or as a SLURM job array.

Every run is the ordinary command line ``python -m muscle_jax.main
--config=CONFIG:method=...,mi=... --workdir=SUITE_DIR/RUN --config.KEY=VALUE ...``,
so a run can be rerun, resumed or inspected alone. A run directory whose
results.json says "completed" is skipped, after checking that it was trained
with the settings asked for now (a changed suite command must not silently
mix old and new runs).
"""

import dataclasses
import datetime
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from muscle_jax import methods
from muscle_jax.experiments.outcomes import read_results
from muscle_jax.experiments.records import Run

PROGRESS = re.compile(r"step (\d+)/(\d+) \|")
LAUNCH_SCRIPT = os.path.join("launch", "gpu_slurm.sbatch")
DEFAULT_TRAINER = "muscle_jax.main"


class DispatchError(RuntimeError):
    """A run failed or a finished run does not match the suite; the message says which."""


@dataclasses.dataclass(frozen=True)
class Invocation:
    """What every run of a suite shares: the user's config and overrides, the suite's directory."""

    config_path: str
    config_arg: str  # The part after the config's ':' (may be empty).
    overrides: tuple[tuple[str, Any], ...]  # The user's --config.KEY=VALUE, in order.
    workdir: str
    total_steps: int  # The config's, after the user's overrides.
    # The module each run starts (``python -m TRAINER``): muscle_jax.main, or a module of
    # the user's that registers their own method and then calls muscle_jax.main's main.
    trainer: str = DEFAULT_TRAINER

    def run_dir(self, run: Run) -> str:
        return os.path.join(self.workdir, run.name)

    def run_overrides(self, run: Run) -> list[tuple[str, str]]:
        """The user's overrides, then the run's (which vary what the user did not fix)."""
        own = [(key, value.format(workdir=self.workdir)) for key, value in run.overrides]
        return [(key, _format_value(value)) for key, value in self.overrides] + own

    def config_flag(self, run: Run) -> str:
        variants = [item for item in self.config_arg.split(",") if item]
        chosen = {"method": run.method, "mi": run.mi}
        chosen.update(
            {
                k: v
                for k, v in (
                    ("unsupervised", run.unsupervised),
                    ("supervised", run.supervised),
                    ("addon", run.addon),
                )
                if v
            }
        )
        variants = [v for v in variants if v.split("=")[0].strip() not in chosen]
        variants += [f"{key}={value}" for key, value in chosen.items()]
        return f"{self.config_path}:{','.join(variants)}"

    def main_args(self, run: Run) -> list[str]:
        """Everything after ``python -m muscle_jax.main`` (or the suite's ``trainer``)."""
        return [f"--config={self.config_flag(run)}", f"--workdir={self.run_dir(run)}"] + [
            f"--config.{key}={value}" for key, value in self.run_overrides(run)
        ]

    def command(self, run: Run) -> list[str]:
        return [sys.executable, "-m", self.trainer, *self.main_args(run)]

    def steps(self, run: Run) -> int:
        return int(dict(self.run_overrides(run)).get("total_steps", self.total_steps))


def _format_value(value: Any) -> str:
    return str(value)


def check_finished_run(invocation: Invocation, run: Run, results: dict[str, Any]) -> None:
    """Raises when a finished run's config differs from what the suite asks of it now."""
    config = results["config"]
    problems = []
    # The run's own overrides come last and win, as on the command line (finetune
    # splits the user's total_steps into its stages' own).
    for key, wanted in dict(invocation.run_overrides(run)).items():
        node: Any = config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if not _same(node, wanted):
            problems.append(f"{key}={node!r} (asked: {wanted})")
    consistency = "none" if run.method in ("none", "supervised") else run.method
    if config["loss"]["consistency"] != consistency:
        problems.append(
            f"loss.consistency={config['loss']['consistency']!r} (asked: {consistency})"
        )
    loss = config["loss"]
    if not run.mi and loss["unsupervised"] != "none" and loss["unsupervised_weight"] != 0:
        problems.append(f"loss.unsupervised={loss['unsupervised']!r} (asked: none)")
    for role in ("unsupervised", "supervised", "addon"):
        wanted = getattr(run, role)
        had = methods.chosen(loss, role)  # Runs from before the add-on role had none.
        if wanted and had != wanted:
            problems.append(f"loss.{role}={had!r} (asked: {wanted})")
    if problems:
        raise DispatchError(
            f"{invocation.run_dir(run)} holds a finished run trained with other settings: "
            f"{'; '.join(problems)}. Use another --workdir for this suite, or delete that run "
            "directory to retrain it."
        )


def _same(value: Any, text: str) -> bool:
    if isinstance(value, bool):
        return text.lower() in ("true", "1") if value else text.lower() in ("false", "0")
    if isinstance(value, (int, float)):
        try:
            return float(text) == float(value)
        except ValueError:
            return False
    if isinstance(value, (list, tuple)):
        return str(tuple(value)) == text or str(list(value)) == text
    return str(value) == text


def finished(invocation: Invocation, run: Run) -> bool:
    results = read_results(invocation.run_dir(run))
    if results is None:
        return False
    check_finished_run(invocation, run, results)
    return True


# ------------------------------------------------------------------ local


class Progress:
    """One status line over the whole suite: runs done, the current run's step, an ETA.

    The ETA assumes the remaining runs cost what the finished ones did per
    step (start-up included), which overestimates supervised-only arms.
    """

    def __init__(self, runs: Sequence[Run], invocation: Invocation, stream: TextIO):
        self._steps = {run.name: invocation.steps(run) for run in runs}
        self._total = len(runs)
        self._stream = stream
        self._tty = stream.isatty()
        self._seconds_done = 0.0
        self._steps_done = 0
        self._last_print = 0.0

    def finished_run(self, run: Run, seconds: float) -> None:
        self._seconds_done += seconds
        self._steps_done += self._steps[run.name]

    def line(self, done: int, run: Run, step: int, run_started: float, remaining) -> str:
        total = self._steps[run.name]
        left = max(total - step, 0) + sum(self._steps[r.name] for r in remaining)
        if self._steps_done:
            rate = self._seconds_done / self._steps_done
        elif step:
            rate = (time.perf_counter() - run_started) / step
        else:
            rate = None
        eta = "?" if rate is None else str(datetime.timedelta(seconds=int(left * rate)))
        return f"[{done}/{self._total} runs done] {run.name}: step {step}/{total} | suite ETA {eta}"

    def show(self, text: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if self._tty:
            self._stream.write("\r\033[K" + text)
            self._stream.flush()
        elif force or now - self._last_print >= 30:
            self._stream.write(text + "\n")
            self._stream.flush()
        else:
            return
        self._last_print = now

    def message(self, text: str) -> None:
        self._stream.write(("\r\033[K" if self._tty else "") + text + "\n")
        self._stream.flush()


def run_environment(invocation: Invocation) -> dict[str, str]:
    """The runs' environment: this one, plus a compilation cache shared by the suite's runs.

    Runs that differ only in seed or label count compile the same programs;
    JAX's persistent cache (keyed by the compiled program, so never stale)
    saves each later run its compilation: about 4 of a digits run's 10 s of
    start-up on 2 CPU cores. A cache directory the user set is kept.
    """
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    environment.setdefault(
        "JAX_COMPILATION_CACHE_DIR", os.path.join(invocation.workdir, ".jax_cache")
    )
    return environment


# The signals a suite passes on to its running run.
_FORWARDED = (signal.SIGINT, signal.SIGTERM)


class _SignalForwarder:
    """While in use, SIGINT/SIGTERM to this process are noted and passed on to the running run.

    The run (its own session: a Ctrl-C at the terminal reaches this process
    only) gets one SIGTERM, and checkpoints and stops; two signals would be
    two stop requests. The handlers before are restored on exit.
    """

    def __init__(self):
        self.signal: int | None = None
        self.process: subprocess.Popen | None = None
        self._previous: dict = {}

    def __enter__(self):
        self._previous = {sig: signal.signal(sig, self._forward) for sig in _FORWARDED}
        return self

    def __exit__(self, *exc_info):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _forward(self, signum, frame):
        del frame
        self.signal = signum
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)


def _train(
    run: Run,
    invocation: Invocation,
    forwarder: _SignalForwarder,
    show: Callable[[int, bool], None],
) -> tuple[int, list[str]]:
    """Runs one run to its end: its exit code and its last lines; ``show(step, force)`` reports."""
    tail: list[str] = []
    process = subprocess.Popen(
        invocation.command(run),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,  # A Ctrl-C at the terminal reaches the suite only.
        env=run_environment(invocation),
    )
    forwarder.process = process
    show(0, True)
    for line in process.stdout:
        tail = [*tail, line.rstrip("\n")][-25:]
        match = PROGRESS.search(line)
        if match:
            show(int(match.group(1)), False)
    code = process.wait()
    forwarder.process = None
    return code, tail


def _finished_now(
    invocation: Invocation, run: Run, code: int, tail: Sequence[str], stopping: bool
) -> bool:
    """Whether the run that just ended finished; False when it stopped. Raises when it failed."""
    if stopping and code == -signal.SIGTERM:
        return False  # Stopped before its trainer could catch the signal (still starting up).
    if code != 0:
        raise DispatchError(
            f"Run {run.name} failed (exit code {code}). Its command:\n  "
            f"{shlex.join(invocation.command(run))}\nIts last lines:\n  " + "\n  ".join(tail)
        )
    # No results.json: the trainer checkpointed and stopped (a signal), so the suite stops too.
    return read_results(invocation.run_dir(run)) is not None


def run_locally(
    runs: Sequence[Run],
    invocation: Invocation,
    *,
    after_each_run: Callable[[], None],
    stream: TextIO | None = None,
) -> bool:
    """Runs the unfinished runs one after another; True when all have finished.

    SIGINT/SIGTERM to this process is passed on to the running training
    process, which checkpoints and stops; the suite then stops and resumes
    from there when the same command is run again. A failed run stops the
    suite with its command and the end of its output. Progress goes to
    ``stream`` (default: sys.stderr as it is at the call, so a redirect holds).
    """
    stream = stream or sys.stderr
    progress = Progress(runs, invocation, stream)
    pending = [run for run in runs if not finished(invocation, run)]
    done = len(runs) - len(pending)
    if done:
        progress.message(f"{done} of {len(runs)} runs already finished: skipped.")
    with _SignalForwarder() as forwarder:
        for index, run in enumerate(pending):
            if forwarder.signal is not None:
                break
            started = time.perf_counter()
            remaining = pending[index + 1 :]

            def show(step, force, done=done, run=run, started=started, remaining=remaining):
                progress.show(progress.line(done, run, step, started, remaining), force=force)

            code, tail = _train(run, invocation, forwarder, show)
            if not _finished_now(invocation, run, code, tail, forwarder.signal is not None):
                break
            done += 1
            progress.finished_run(run, time.perf_counter() - started)
            progress.message(
                f"finished {run.name} in {time.perf_counter() - started:.0f} s ({done}/{len(runs)})"
            )
            after_each_run()
    if done < len(runs):
        progress.message(
            f"Stopped with {done} of {len(runs)} runs finished; run the same command to resume."
        )
        return False
    return True


# ------------------------------------------------------------------ SLURM


def slurm_scripts(
    runs: Sequence[Run], invocation: Invocation, suite: str, *, sbatch_args: Sequence[str]
) -> list[tuple[str, str, list[str]]]:
    """``(runs file, array script, sbatch command)`` per stage that has unfinished runs.

    Each array task runs one line of the runs file through
    ``launch/gpu_slurm.sbatch`` (its environment, signal forwarding and
    requeue on time-out), on one node with one GPU unless ``sbatch_args``
    say otherwise. Stage 1 (fine-tuning) waits for stage 0 to succeed.
    """
    slurm_dir = os.path.join(invocation.workdir, "slurm")
    jobs = []
    for stage in sorted({run.stage for run in runs}):
        stage_runs = [run for run in runs if run.stage == stage and not finished(invocation, run)]
        if not stage_runs:
            continue
        runs_file = os.path.join(slurm_dir, f"{suite}_stage{stage}.runs")
        script_file = os.path.join(slurm_dir, f"{suite}_stage{stage}.sbatch")
        lines = []
        for run in stage_runs:
            args = invocation.main_args(run)
            config = args[0].removeprefix("--config=")
            workdir = args[1].removeprefix("--workdir=")
            lines.append(shlex.join([config, workdir, *args[2:]]))
        script = "\n".join(
            [
                "#!/usr/bin/env bash",
                f"# muscle_jax {suite}, stage {stage}: one array task per run in",
                f"# {runs_file} (CONFIG WORKDIR FLAGS... per line), each through",
                f"# {LAUNCH_SCRIPT}: a task requeued by a time-out resumes its run.",
                f"#SBATCH --job-name=muscle_{suite}_{stage}",
                f"#SBATCH --array=0-{len(stage_runs) - 1}",
                "#SBATCH --nodes=1",
                "#SBATCH --gpus-per-node=1",
                "#SBATCH --ntasks-per-node=1",
                "#SBATCH --cpus-per-task=8",
                "#SBATCH --time=24:00:00",
                "#SBATCH --signal=B:TERM@120",
                "#SBATCH --requeue",
                "#SBATCH --open-mode=append",
                f"#SBATCH --output={slurm_dir}/%x-%A_%a.out",
                "set -euo pipefail",
                f"export MAIN_MODULE={shlex.quote(invocation.trainer)}",
                f'line=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {shlex.quote(runs_file)})',
                'eval "set -- $line"',
                f'exec bash {LAUNCH_SCRIPT} "$@"',
                "",
            ]
        )
        command = ["sbatch", "--parsable", *sbatch_args, script_file]
        jobs.append((runs_file, script_file, command, "\n".join(lines) + "\n", script))
    return jobs


def submit_slurm(
    runs: Sequence[Run],
    invocation: Invocation,
    suite: str,
    *,
    sbatch_args: Sequence[str],
    dry_run: bool,
    stream: TextIO | None = None,
) -> list[str]:
    """Writes the stage scripts and submits them chained (or prints them with ``dry_run``).

    Output goes to ``stream`` (default: sys.stdout as it is at the call).
    """
    stream = stream or sys.stdout
    jobs = slurm_scripts(runs, invocation, suite, sbatch_args=sbatch_args)
    if not jobs:
        stream.write("Every run has finished; nothing to submit.\n")
        return []
    os.makedirs(os.path.join(invocation.workdir, "slurm"), exist_ok=True)
    job_ids: list[str] = []
    for runs_file, script_file, command, lines, script in jobs:
        with open(runs_file, "w") as handle:
            handle.write(lines)
        with open(script_file, "w") as handle:
            handle.write(script)
        if job_ids:
            command = [*command[:2], f"--dependency=afterok:{job_ids[-1]}", *command[2:]]
        if dry_run:
            stream.write(f"# {script_file}\n{script}\n# {runs_file}\n{lines}\n")
            stream.write(f"would submit: {shlex.join(command)}\n\n")
            job_ids.append(f"<job of {os.path.basename(script_file)}>")
            continue
        try:
            submitted = subprocess.run(command, check=True, capture_output=True, text=True)
        except FileNotFoundError:
            raise DispatchError(
                "sbatch is not on PATH: --dispatch=slurm submits from a SLURM login node. "
                "Add --dry_run to write and print the job scripts only."
            ) from None
        job_ids.append(submitted.stdout.strip().split(";")[0])
        stream.write(f"submitted {script_file} as job {job_ids[-1]}\n")
    return job_ids
