"""What a person reads in a workdir: ``summary.md`` and ``curves.png``.

Both are rewritten at every evaluation and at the end of a run, from the
same history that results.json holds, so they always agree with it.
"""

import os
from typing import Any

from muscle_jax import workdir as workdir_lib

SUMMARY_NAME = "summary.md"
PLOT_NAME = "curves.png"
LOSS_TERMS = ("total", "supervised", "consistency", "unsupervised", "addon", "mutual_information")


def write_summary(workdir: str, *, config, history: dict, train_history: dict, results=None):
    """Writes ``summary.md``: the headline (when finished), the settings, the evaluations."""
    lines = [f"# Run in {workdir}", ""]
    if results is not None:
        evals = results["accuracy_steps"]
        lines += [
            f"**Test accuracy (EMA model): {results['accuracy']:.4f}**, the median of "
            f"{len(evals)} evaluation(s) at steps {', '.join(map(str, evals))} (at most the "
            f"last {config.median_of_last_evals}, from the last quarter of the run); raw model "
            f"{results['raw_accuracy']:.4f}; final evaluation {results['final_accuracy']:.4f} "
            f"on {results['num_test_examples']} test images.",
            "",
            f"Steps: {results['steps']}. Wall time: {results['run']['wall_seconds']:.0f} s "
            f"({results['run']['started_at']} to {results['run']['ended_at']}), "
            f"{results['run']['device_count']} {results['run']['platform']} device(s), "
            f"commit {results['run']['git_commit'] or 'unknown'}.",
            "",
        ]
        chosen = results.get("validation")
        if chosen:
            lines += [
                f"Chosen by the validation set ({chosen['num_examples']} held-out training "
                f"images, never trained on): step {chosen['best_step']}, validation accuracy "
                f"{chosen['validation_accuracy']:.4f}, **test accuracy there "
                f"{chosen['test_accuracy']:.4f}** (EMA model).",
                "",
            ]
    else:
        lines += ["Running: the figures below are the evaluations so far.", ""]
    lines += [
        "| setting | value |",
        "|---|---|",
        f"| dataset | {config.data.name} ({config.data.num_labeled} labels, imbalance "
        f"{config.data.imbalance_ratio}) |",
        f"| model | {config.model.name} |",
        f"| supervised | {config.loss.supervised} (weight {config.loss.supervised_weight}) |",
        f"| consistency | {config.loss.consistency} (weight {config.loss.consistency_weight}) |",
        f"| unsupervised | {config.loss.unsupervised} (weight {config.loss.unsupervised_weight}) |",
        f"| batch | {config.data.batch_size} labeled, mu {config.data.unlabeled_ratio} |",
        f"| steps | {config.total_steps} |",
        f"| seed | {config.seed} |",
        "",
        "| step | test accuracy, EMA | test accuracy, raw |",
        "|---|---|---|",
    ]
    lines += [
        f"| {step} | {ema:.4f} | {raw:.4f} |"
        for step, ema, raw in zip(
            history["step"], history["ema_accuracy"], history["raw_accuracy"], strict=True
        )
    ]
    if results is not None and results.get("per_class_accuracy"):
        names = results.get("class_names") or range(len(results["per_class_accuracy"]))
        lines += ["", "| class | test accuracy, EMA (final evaluation) |", "|---|---|"]
        lines += [
            f"| {name} | {'-' if value is None else f'{value:.4f}'} |"
            for name, value in zip(names, results["per_class_accuracy"], strict=True)
        ]
    if train_history.get("step"):
        lines += ["", f"Loss terms over training: {PLOT_NAME} (and TensorBoard in this workdir)."]
    text = "\n".join(lines) + "\n"
    workdir_lib.write_atomically(os.path.join(workdir, SUMMARY_NAME), lambda f: f.write(text))


def plot_curves(workdir: str, *, history: dict, train_history: dict[str, Any]) -> None:
    """Writes ``curves.png``: test accuracy (EMA and raw) and the loss terms over steps."""
    # Deferred: only the trainer's process 0 draws. The object API, not pyplot:
    # no global figure state, no GUI backend.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4))
    accuracy_axis, loss_axis = figure.subplots(1, 2)
    accuracy_axis.plot(history["step"], history["ema_accuracy"], "o-", label="EMA model")
    accuracy_axis.plot(history["step"], history["raw_accuracy"], "s--", label="raw model")
    accuracy_axis.set(xlabel="step", ylabel="test accuracy", title="Test accuracy")
    accuracy_axis.grid(alpha=0.3)
    accuracy_axis.legend()
    for term in LOSS_TERMS:
        values = [float("nan") if v is None else v for v in train_history.get(term, [])]
        if values:
            loss_axis.plot(train_history["step"], values, label=term)
    loss_axis.set(xlabel="step", ylabel="mean over the logging interval", title="Loss terms")
    loss_axis.grid(alpha=0.3)
    if train_history.get("step"):
        loss_axis.legend()
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.9, wspace=0.25)
    workdir_lib.write_atomically(
        os.path.join(workdir, PLOT_NAME),
        lambda handle: figure.savefig(handle, dpi=90, format="png"),
        binary=True,
    )
