"""The finetune suite: MI-only pre-training, then fine-tuning, against training from scratch.

Each seed's pre-training run (MI alone, no labels in the loss) is stage 0;
the fine-tuning runs start from its checkpoints as stage 1. MUSCLE from
scratch gets the same total steps.
"""

from muscle_jax.experiments import plots, tables
from muscle_jax.experiments.records import Arm, Run, Suite, SuiteError
from muscle_jax.experiments.suites import common
from muscle_jax.experiments.suites.registry import register

PRETRAIN = "pretrain"  # MI only, no labels: the unsupervised pre-training.
FINETUNE_MUSCLE = "finetune_muscle"
FINETUNE_SUPERVISED = "finetune_supervised"
SCRATCH_MUSCLE = "scratch_muscle"
ARMS = (
    # Always run, never a result: its accuracy reads clusters as classes.
    Arm(PRETRAIN, "MI-only pre-training", method="none", mi=True, selectable=False, reported=False),
    Arm(FINETUNE_MUSCLE, "pre-trained, fine-tuned with MUSCLE", mi=True),
    Arm(FINETUNE_SUPERVISED, "pre-trained, fine-tuned with cross-entropy", method="supervised"),
    Arm(SCRATCH_MUSCLE, "MUSCLE from scratch, same total steps", mi=True),
)


def _steps(config, options) -> tuple[int, int]:
    """``(pre-training steps, fine-tuning steps)``: the user's total_steps split."""
    if not 0 < options.pretrain_fraction < 1:
        raise SuiteError(
            f"--pretrain_fraction must lie in (0, 1), got {options.pretrain_fraction}."
        )
    total = config.total_steps
    pretrain_steps = max(1, round(total * options.pretrain_fraction))
    if total - pretrain_steps < 1:
        raise SuiteError(f"total_steps={total} leaves no fine-tuning steps; raise it.")
    return pretrain_steps, total - pretrain_steps


def _build(suite, config, options, base):
    count = common.one_label_count(config, options, suite.name)
    common.check_counts([count], config.data.num_classes, balanced=True)
    pretrain_steps, finetune_steps = _steps(config, options)
    arms = suite.chosen_arms(options)
    # Arm -> (stage, steps, starts from the pre-training's checkpoints).
    stages = {
        FINETUNE_MUSCLE: (1, finetune_steps, True),
        FINETUNE_SUPERVISED: (1, finetune_steps, True),
        SCRATCH_MUSCLE: (0, config.total_steps, False),
    }
    varied = (("num_labeled", str(count)),)
    runs = []
    for seed in options.seeds:
        common_overrides = (("data.num_labeled", str(count)), ("seed", str(seed)))
        pretrain = Run(
            suite=suite.name,
            setting="finetune",
            arm=PRETRAIN,
            seed=seed,
            # MI alone: no labels reach the loss.
            overrides=(
                *common_overrides,
                ("loss.supervised_weight", "0.0"),
                ("total_steps", str(pretrain_steps)),
            ),
            varied=varied,
            **suite.arm(PRETRAIN).variant(base),
        )
        runs.append(pretrain)
        for arm in arms:
            stage, steps, from_pretrain = stages[arm.name]
            overrides = (*common_overrides, ("total_steps", str(steps)))
            if from_pretrain:
                overrides += (("init_from", f"{{workdir}}/{pretrain.name}/checkpoints"),)
            runs.append(
                Run(
                    suite=suite.name,
                    setting="finetune",
                    arm=arm.name,
                    seed=seed,
                    overrides=overrides,
                    varied=varied,
                    stage=stage,
                    **arm.variant(base),
                )
            )
    return runs


def _report(suite, outcomes, base, default_mi_weight):
    del default_mi_weight  # Only the MI ablation's report reads it.
    pretrain = [o for o in outcomes if o.run.arm == PRETRAIN]
    steps = {o.run.arm: dict(o.run.overrides).get("total_steps") for o in outcomes}
    tuning = steps.get(FINETUNE_MUSCLE) or steps.get(FINETUNE_SUPERVISED)
    return [
        f"MI-only pre-training ({steps.get(PRETRAIN)} steps, no labels in the "
        f"loss), then {tuning} fine-tuning steps; from scratch: "
        f"{steps.get(SCRATCH_MUSCLE)} steps. "
        f"{sum(o.results is not None for o in pretrain)} of {len(pretrain)} pre-training "
        "runs finished (their accuracy, clusters read as classes, is not a result).",
        "",
        tables.comparison_table(outcomes, suite, base=base, measure="accuracy", row_title=""),
    ]


FINETUNE = register(
    Suite(
        name="finetune",
        description="MI-only pre-training then fine-tuning, against training from scratch",
        arms=ARMS,
        build=_build,
        report=_report,
        plots=(plots.Bars("finetune.png"),),
        pairs=((FINETUNE_MUSCLE, FINETUNE_SUPERVISED), (FINETUNE_MUSCLE, SCRATCH_MUSCLE)),
        label_counts=common.ONE_COUNT_HELP,
        columns=("num_labeled",),
        # The user's total_steps is split into pre-training and fine-tuning, not refused.
        derived=("total_steps",),
    )
)
