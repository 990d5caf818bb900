"""Command line: ``python -m muscle_jax.main --config=configs/digits.py --workdir=DIR``.

Config variants come through the config's argument and field overrides:
``--config=configs/cifar100.py:num_labeled=2500 --config.total_steps=1000``.
The config is locked, so an unknown key is an error, not a silent default.
"""

import gc
import logging as std_logging
import os
import sys

# TensorFlow is only the input pipeline here: keep it off the accelerators and quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from muscle_jax import command_line
from muscle_jax.command_line import CONFIGS_DIR

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Path to a config file, with an optional :arg.", lock_config=True
)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, summaries and results.json.")
flags.DEFINE_bool(
    "distributed",
    False,
    "Start JAX's distributed runtime with its cluster detection even where muscle_jax does "
    "not recognise a cluster (multi-host TPU pod slices and SLURM jobs are recognised).",
)
flags.DEFINE_string(
    "coordinator_address",
    None,
    "host:port of process 0's coordinator for a multi-process run (env JAX_COORDINATOR_ADDRESS).",
)
flags.DEFINE_integer("num_processes", None, "Processes in the run (env JAX_NUM_PROCESSES).")
flags.DEFINE_integer("process_id", None, "This process's index, 0-based (env JAX_PROCESS_ID).")
flags.DEFINE_integer(
    "heartbeat_timeout_seconds",
    60,
    "A process that sends no heartbeat for this long is taken as dead and every other "
    "process exits with an error.",
)
flags.mark_flags_as_required(["config", "workdir"])

# Libraries whose INFO lines are dropped from the console (`_quiet_library_info_logs`).
_CHATTY_PACKAGES = ("orbax", "tensorflow_datasets")


def _configure_tensorflow() -> None:
    """TensorFlow runs the input pipeline only: no accelerators, no graph optimizer."""
    import tensorflow as tf  # Deferred: the import is slow and only main needs this.

    from muscle_jax.data import graph

    tf.config.set_visible_devices([], "GPU")
    tf.config.set_visible_devices([], "TPU")
    graph.skip_graph_optimizer()


def _quiet_library_info_logs() -> None:
    """Keeps the console to the run's own lines and the warnings that matter.

    Orbax logs several INFO lines per checkpoint, TFDS several as it opens a
    dataset (before a refusal too), and JAX says on every CPU or GPU machine
    that it found no TPU; all are dropped, and so are the libraries' debug
    lines under ``-v 1``. Warnings and errors of the project and of the
    libraries stay.
    """

    def keep(record) -> bool:
        if record.levelno < std_logging.WARNING and any(
            f"{os.sep}{package}{os.sep}" in record.pathname for package in _CHATTY_PACKAGES
        ):
            return False
        # -v 1 adds the run's own detail (every loss term on the progress lines),
        # not every library's debug output (~700 lines in a 12-step run).
        if record.levelno < std_logging.INFO and f"{os.sep}muscle_jax{os.sep}" not in (
            record.pathname
        ):
            return False
        return "Unable to initialize backend" not in record.getMessage()

    logging.get_absl_logger().addFilter(keep)
    for handler in std_logging.getLogger().handlers:
        handler.addFilter(keep)
    std_logging.getLogger("jax._src.xla_bridge").addFilter(keep)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    _quiet_library_info_logs()
    from muscle_jax import distributed

    try:
        setup = distributed.resolve(
            coordinator_address=FLAGS.coordinator_address,
            num_processes=FLAGS.num_processes,
            process_id=FLAGS.process_id,
            force=FLAGS.distributed,
        )
    except distributed.DistributedSetupError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    distributed.initialize(setup, heartbeat_timeout_seconds=FLAGS.heartbeat_timeout_seconds)
    _exit_on_what_can_be_refused_at_once(FLAGS.config, FLAGS.workdir)
    _configure_tensorflow()
    # (The run's first line, the JAX processes and devices, comes once the run is
    # accepted: a refused run prints its error alone.)

    from muscle_jax import train  # Deferred so --help answers without importing TF/JAX work.

    try:
        results = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except user_errors() as error:
        # Bad input, an unusable workdir or a diverged run: the message says what to fix,
        # printed once. Anything else is a bug or a library failure and keeps its traceback.
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    if jax.process_index() > 0:
        return  # Process 0 reports for the run.
    results_path = os.path.join(FLAGS.workdir, "results.json")
    if results.get("already_complete"):
        print(
            f"this run is already complete ({results['steps']} steps, test accuracy (EMA) "
            f"{results['accuracy']:.4f}); results in {results_path}, nothing was written. "
            "To train on, raise --config.total_steps and pass "
            "--config.allow_config_change_on_resume=True."
        )
    elif results["status"] == "completed":
        evals = results["accuracy_steps"]
        print(
            f"test accuracy (EMA): {results['accuracy']:.4f}, the median of {len(evals)} "
            f"evaluation{'s' if len(evals) > 1 else ''} at steps {evals[0]}-{evals[-1]} "
            f"(at most the last {FLAGS.config.median_of_last_evals}, from the last quarter "
            f"of the run) after {results['steps']} steps; results in {results_path}"
        )
        if results.get("ema_note"):  # The EMA figure may mean little: say so beside it.
            print(f"raw model: {results['raw_accuracy']:.4f}. Note: {results['ema_note']}")
    else:
        print(f"stopped at step {results['step']} with a checkpoint; rerun to resume")


def _exit_on_what_can_be_refused_at_once(config, workdir_path: str) -> None:
    """An invalid config or a workdir in use: refused in seconds, before TensorFlow starts.

    `train.train_and_evaluate` checks both again (for callers in Python, and the
    lock for real); the checks against the dataset come there, once it is open.
    """
    from muscle_jax import config_validation, workdir

    try:
        config_validation.validate_config(
            config_validation.with_data_shards(config, jax.process_count()),
            num_devices=jax.device_count(),
            num_processes=jax.process_count(),
        )
        if jax.process_index() == 0:  # The process that will hold the lock.
            workdir.refuse_if_in_use(workdir_path)
    except (config_validation.ConfigError, workdir.WorkdirError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def user_errors() -> tuple[type[Exception], ...]:
    """The project's own error types: each message names the problem and the fix."""
    from muscle_jax import (
        checkpointing,
        config_validation,
        memory_plan,
        models,
        monitoring,
        workdir,
    )
    from muscle_jax.data import sources, validation

    return (
        models.UserModelError,
        config_validation.ConfigError,
        validation.DataValidationError,
        validation.DataRequestError,
        sources.DatasetNotFoundError,
        workdir.WorkdirError,
        checkpointing.IncompatibleCheckpointError,
        checkpointing.UnreadableCheckpointError,
        monitoring.NonFiniteLossError,
        memory_plan.InsufficientMemoryError,
    )


def usage() -> str:
    """``--help``: the command, the configs with their first docstring line, where keys live."""
    lines = [
        "Train MUSCLE: python -m muscle_jax.main --config=CONFIG[:VARIANTS] --workdir=DIR "
        "[--config.KEY=VALUE ...]",
        "",
        "Configs (variants after ':' are listed in each file's docstring):",
    ]
    if os.path.isdir(CONFIGS_DIR):
        for name in sorted(os.listdir(CONFIGS_DIR)):
            if name.endswith(".py") and not name.startswith("_"):
                with open(os.path.join(CONFIGS_DIR, name)) as handle:
                    first = handle.readline().strip().strip('"').strip()
                lines.append(f"  configs/{name:18s} {first}")
    lines += [
        "",
        "Config keys, their defaults and meaning: muscle_jax/config_defaults.py, in sections "
        "data, model, loss (with loss.<method> per method) and optimizer (override any with "
        "--config.KEY=VALUE, e.g. --config.total_steps=300 --config.data.num_labeled=40).",
        "Methods (loss.supervised / loss.consistency / loss.unsupervised, or the config "
        "variants supervised=, method=, unsupervised=): docs/method.md.",
        "",
        "Flags:",
        "  --config      the config file, e.g. configs/mnist.py:num_labeled=100",
        "  --workdir     checkpoints, TensorBoard summaries, results.json, summary.md, curves.png,",
        "                console.log; rerun the same command to resume",
        "  --distributed start JAX's distributed runtime with its cluster detection (multi-host",
        "                TPU pod slices and SLURM jobs with several tasks start it by themselves)",
        "  --coordinator_address, --num_processes, --process_id",
        "                a multi-process run elsewhere (or the environment variables",
        "                JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID);",
        "                launch/local.sh starts one on this machine",
        "  -v 1          log every loss term on the progress lines",
        "  --helpfull    every flag, absl's included",
    ]
    return "\n".join(lines)


def parse_flags(argv):
    """Parses the command line; a bad config key or value is one clear line, not a traceback."""
    if any(arg in ("-h", "--help", "-help", "--helpshort") for arg in argv[1:]):
        print(usage())
        sys.exit(0)
    moved = command_line.moved_key_problems(argv[1:])
    if moved:
        print(
            "error: config keys moved into sections (data, model, loss.<method>): "
            + "; ".join(moved)
            + ".",
            file=sys.stderr,
        )
        sys.exit(2)
    try:
        return command_line.parse(FLAGS, argv)[0]
    except command_line.CommandLineError as error:
        command_line.exit_with(
            f"bad command line: {error}\nConfig keys and their defaults are in "
            "muscle_jax/config_defaults.py and the config file's docstring; see --helpfull "
            "for the flags."
        )


def run() -> None:
    """The command line's entry point; a module of yours that registers a method calls it."""
    try:
        app.run(main, flags_parser=parse_flags)
    finally:
        # Everything is written and closed by now. Python's exit would still
        # garbage-collect the ~490,000 objects that JAX, TensorFlow and Flax
        # hold: 10 s after a Ctrl-C (or a refusal) on a busy 2-core machine,
        # 1 s with them frozen. The atexit handlers (log flushing) still run.
        gc.freeze()


if __name__ == "__main__":
    run()
