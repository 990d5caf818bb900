"""Command line: ``python -m muscle_jax.experiments --suite=SUITE --config=CONFIG --workdir=DIR``.

Runs one suite (see --help for the list, `suites.names()`) over several
seeds, each run an ordinary ``python -m muscle_jax.main`` run in
``DIR/SETTING/ARM/seed_K``, then writes DIR/results.csv, DIR/results.md and
the PNG plots. Rerunning the command resumes: finished runs are skipped,
a stopped run continues from its checkpoint.
"""

import os
import shlex
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags
from ml_collections import config_flags

from muscle_jax import command_line
from muscle_jax.data import label_noise
from muscle_jax.experiments import dispatch, help_text, results, suites

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Path to a config file, with an optional :arg.", lock_config=True
)
flags.DEFINE_enum("suite", None, suites.names(), "Which suite to run.")
flags.DEFINE_string("workdir", None, "The suite's directory: one subdirectory per run.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of every setting (config.seed).")
flags.DEFINE_list("label_counts", None, help_text.label_counts_help())
flags.DEFINE_list("imbalance_ratios", None, "bias: the imbalance ratios (default 1,10,100).")
flags.DEFINE_list(
    "unlabeled",
    ["balanced"],
    "bias: the unlabeled pool: balanced (as the dataset has it), same (long-tailed in the "
    "labels' order), reversed; a subset, comma-separated.",
)
flags.DEFINE_list("mi_weights", None, "mi_ablation: the MI weights (default 0,0.1,0.3,1,3).")
flags.DEFINE_list(
    "knobs",
    None,
    "mi_ablation: a subset of " + ",".join(suites.mi_ablation.KNOBS) + " (default: all).",
)
flags.DEFINE_list("arms", None, help_text.arms_help())
flags.DEFINE_list(
    "bases",
    None,
    "bases: the base methods (default: " + ",".join(suites.bases.default_bases()) + ").",
)
flags.DEFINE_list(
    "noise_levels",
    None,
    "noise: the fractions of the labeled set given a wrong label (default "
    + ",".join(str(level) for level in suites.noise.DEFAULT_LEVELS)
    + ").",
)
flags.DEFINE_enum(
    "noise_kind",
    "symmetric",
    label_noise.KINDS,
    "noise: symmetric (a uniformly drawn other class) or asymmetric (class-pair flips; "
    "docs/datasets.md).",
)
flags.DEFINE_float(
    "pretrain_fraction", 0.5, "finetune: the share of total_steps spent on MI-only pre-training."
)
flags.DEFINE_enum("dispatch", "local", ["local", "slurm"], "Where the runs go.")
flags.DEFINE_bool("dry_run", False, "With --dispatch=slurm: write and print, do not submit.")
flags.DEFINE_multi_string("sbatch_arg", [], "With --dispatch=slurm: an extra sbatch argument.")
flags.DEFINE_string(
    "trainer",
    dispatch.DEFAULT_TRAINER,
    "The module every run starts as `python -m TRAINER` with main's flags: a module of "
    "yours that registers your own method (muscle_jax.methods.register) and then runs "
    "muscle_jax.main's main.",
)
flags.DEFINE_bool(
    "report_only", False, "Rebuild results.csv/results.md/plots from the run directories."
)
flags.mark_flags_as_required(["suite", "config", "workdir"])


PLOT_EVERY_SECONDS = 60
# The command line's --config.model.kwargs.KEY=VALUE (parse_flags), passed on to every run.
_MODEL_KWARGS: dict = {}


class UsageError(ValueError):
    """A flag value that cannot be used; the message says which and why."""


def _numbers(name: str, values, kind):
    if values is None:
        return None
    try:
        parsed = tuple(kind(value) for value in values)
    except ValueError:
        raise UsageError(
            f"--{name}={','.join(values)}: every value must be a {kind.__name__}."
        ) from None
    if not parsed:
        raise UsageError(f"--{name} is empty.")
    return parsed


def options_from_flags() -> suites.SuiteOptions:
    return suites.SuiteOptions(
        seeds=_numbers("seeds", FLAGS.seeds, int),
        label_counts=_numbers("label_counts", FLAGS.label_counts, int),
        imbalance_ratios=_numbers("imbalance_ratios", FLAGS.imbalance_ratios, float),
        unlabeled=tuple(FLAGS.unlabeled),
        mi_weights=_numbers("mi_weights", FLAGS.mi_weights, float),
        knobs=tuple(FLAGS.knobs) if FLAGS.knobs else None,
        arms=tuple(FLAGS.arms) if FLAGS.arms else None,
        pretrain_fraction=FLAGS.pretrain_fraction,
        bases=tuple(FLAGS.bases) if FLAGS.bases else None,
        noise_levels=_numbers("noise_levels", FLAGS.noise_levels, float),
        noise_kind=FLAGS.noise_kind,
    )


def invocation_from_flags() -> dispatch.Invocation:
    filename = config_flags.get_config_filename(FLAGS["config"])
    path, _, arg = filename.partition(":")
    overrides = tuple(config_flags.get_override_values(FLAGS["config"]).items()) + tuple(
        (f"model.kwargs.{key}", value) for key, value in _MODEL_KWARGS.items()
    )
    return dispatch.Invocation(
        config_path=path,
        config_arg=arg,
        overrides=overrides,
        workdir=os.path.abspath(FLAGS.workdir),
        total_steps=FLAGS.config.total_steps,
        trainer=FLAGS.trainer,
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = FLAGS.config
    invocation = invocation_from_flags()
    # The suite's command as results.md shows it: the one that runs it, not --report_only.
    kept = [arg for arg in sys.argv[1:] if arg not in ("--report_only", "--report-only")]
    command = "python -m muscle_jax.experiments " + shlex.join(kept)
    try:
        runs = suites.build(
            FLAGS.suite,
            config,
            options_from_flags(),
            pinned=[key for key, _ in invocation.overrides],
        )
        base = suites.base_method(config)

        # The tables after every finished run; the plots at most once a minute
        # (a drawing is ~0.5 s a plot) and always at the end.
        last_plot = [time.monotonic()]

        def report(final: bool = True):
            plot = final or time.monotonic() - last_plot[0] >= PLOT_EVERY_SECONDS
            results.write(
                invocation.workdir,
                FLAGS.suite,
                results.collect(runs, invocation.workdir),
                base=base,
                command=command,
                default_mi_weight=config.loss.unsupervised_weight,
                plot=plot,
            )
            if plot:
                last_plot[0] = time.monotonic()

        if FLAGS.report_only:
            if not os.path.isdir(invocation.workdir):
                raise UsageError(f"--report_only: {invocation.workdir} does not exist.")
            report()
            print(f"wrote {os.path.join(invocation.workdir, 'results.md')}")
            return
        print(f"{FLAGS.suite}: {len(runs)} runs in {invocation.workdir}", file=sys.stderr)
        if FLAGS.dispatch == "slurm":
            dispatch.submit_slurm(
                runs,
                invocation,
                FLAGS.suite,
                sbatch_args=FLAGS.sbatch_arg,
                dry_run=FLAGS.dry_run,
            )
            return
        os.makedirs(invocation.workdir, exist_ok=True)
        complete = dispatch.run_locally(
            runs, invocation, after_each_run=lambda: report(final=False)
        )
        report()
    except (UsageError, suites.SuiteError, dispatch.DispatchError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"results: {os.path.join(invocation.workdir, 'results.md')}")
    if not complete:
        sys.exit(3)


def usage() -> str:
    """``--help``: the command, the suites, the overrides and the flags."""
    lines = [
        "Run an experiment suite: python -m muscle_jax.experiments --suite=SUITE "
        "--config=CONFIG[:VARIANTS] --workdir=DIR [--config.KEY=VALUE ...] [flags]",
        "",
        "Suites:",
        *help_text.suite_lines(),
        "",
        "--config.KEY=VALUE overrides reach every run of the suite (e.g. "
        "--config.total_steps=600); a key the suite varies is refused. Rerun the same "
        "command to resume: finished runs are skipped. Details: docs/experiments.md.",
        "",
        "Flags:",
    ]
    own_flags = FLAGS.get_key_flags_for_module(sys.modules[__name__])
    for name in sorted(own_flags, key=lambda flag: flag.name):
        lines.append(f"  --{name.name:18s} {' '.join(name.help.split())}")
    return "\n".join(lines)


def parse_flags(argv):
    """Accepts ``--dry-run``/``--report-only`` too; a bad flag is one line, not a traceback."""
    if any(arg in ("-h", "--help", "-help", "--helpshort") for arg in argv[1:]):
        print(usage())
        sys.exit(0)
    argv = [
        arg.replace("--dry-run", "--dry_run").replace("--report-only", "--report_only")
        for arg in argv
    ]
    try:
        remaining, model_kwargs = command_line.parse(FLAGS, argv)
    except command_line.CommandLineError as error:
        command_line.exit_with(f"bad command line: {error}\nSee --help.")
    _MODEL_KWARGS.clear()
    _MODEL_KWARGS.update(model_kwargs)
    return remaining


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
