"""What a person reads in a workdir: ``summary.md`` and ``curves.png``.

Both are rewritten at every evaluation and at the end of a run, from the
same history that results.json holds, so they always agree with it.
"""

import os
from typing import Any

from muscle_jax import diagnostics, metric_keys
from muscle_jax import workdir as workdir_lib

SUMMARY_NAME = "summary.md"
PLOT_NAME = "curves.png"
LOSS_TERMS = metric_keys.LOSS_TERMS  # The curves a run can draw.


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
        if results.get("ema_note"):
            lines += [f"**Note:** {results['ema_note']}", ""]
        chosen = results.get("validation")
        if chosen:
            lines += [
                f"Chosen by the validation set ({chosen['num_examples']} held-out training "
                f"images, never trained on): step {chosen['best_step']}, validation accuracy "
                f"{chosen['validation_accuracy']:.4f}, **test accuracy there "
                f"{chosen['test_accuracy']:.4f}** (EMA model).",
                "",
            ]
        lines += [_classes_lost_line(results), ""]
    else:
        lines += ["Running: the figures below are the evaluations so far.", ""]
    labels = f"{config.data.num_labeled} labels"
    if not config.data.num_labeled:  # 0: every training image keeps its label.
        per_class = (results or {}).get("labeled_per_class")
        labels = "every training image labeled" + (f": {sum(per_class)}" if per_class else "")
    lines += [
        "| setting | value |",
        "|---|---|",
        f"| dataset | {config.data.name} ({labels}, imbalance {config.data.imbalance_ratio}) |",
        f"| model | {config.model.name} |",
        f"| supervised | {config.loss.supervised} (weight {config.loss.supervised_weight}) |",
        f"| consistency | {config.loss.consistency} (weight {config.loss.consistency_weight}) |",
        f"| unsupervised | {config.loss.unsupervised} (weight {config.loss.unsupervised_weight}) |",
        f"| batch | {config.data.batch_size} labeled, mu {config.data.unlabeled_ratio} |",
        f"| steps | {config.total_steps} |",
        f"| seed | {config.seed} |",
        "",
    ]
    lines += _evaluations_table(history)
    if results is not None and results.get("per_class_accuracy"):
        lines += ["", *_per_class_table(results, history)]
    if results is not None and results.get("confusion_matrix"):
        lines += ["", *_confusion_section(results)]
    if train_history.get("step"):
        lines += ["", f"Loss terms over training: {PLOT_NAME} (and TensorBoard in this workdir)."]
    text = "\n".join(lines) + "\n"
    workdir_lib.write_atomically(os.path.join(workdir, SUMMARY_NAME), lambda f: f.write(text))


def _evaluations_table(history: dict) -> list[str]:
    """One row an evaluation; with the classes the EMA model no longer predicts at all.

    That column counts the classes predicted for none of the fixed unlabeled
    sample: a class output dying shows as the count going up (- where a
    resumed checkpoint predates the sample).
    """
    sample = history.get("unlabeled_predicted_ema") or [None] * len(history["step"])
    lines = [
        "| step | test accuracy, EMA | test accuracy, raw | classes never predicted on the "
        "unlabeled sample, EMA |",
        "|---|---|---|---|",
    ]
    for step, ema, raw, predicted in zip(
        history["step"], history["ema_accuracy"], history["raw_accuracy"], sample, strict=True
    ):
        unpredicted = "-" if predicted is None else len(diagnostics.unpredicted_classes(predicted))
        lines.append(f"| {step} | {ema:.4f} | {raw:.4f} | {unpredicted} |")
    return lines


def _classes_lost_line(results: dict) -> str:
    lost = diagnostics.lost_classes(results["per_class_accuracy"])
    names = _class_names(results)
    listed = ", ".join(str(names[k]) for k in lost) if lost else "none"
    return (
        f"Classes lost ({diagnostics.LOST_CLASS_RULE} at the final evaluation, EMA model): "
        f"{len(lost)} ({listed})."
    )


def _class_names(results: dict) -> list:
    return list(results.get("class_names") or range(len(results["per_class_accuracy"])))


def _per_class_table(results: dict, history: dict) -> list[str]:
    """Test recall per class, beside how often the EMA model predicts it on the unlabeled sample.

    A lost class still predicted on the sample is an output reused for other
    images; one predicted for none of it is a class merged into others.
    """
    sample = (history.get("unlabeled_predicted_ema") or [None])[-1]
    truth = (results.get("unlabeled_sample") or {}).get("true_per_class")
    at = f" (step {history['step'][-1]})" if history["step"] else ""
    lines = [
        "| class | test accuracy, EMA (final evaluation) | unlabeled sample: predicted, "
        f"EMA{at} | unlabeled sample: true |",
        "|---|---|---|---|",
    ]
    for k, (name, value) in enumerate(
        zip(_class_names(results), results["per_class_accuracy"], strict=True)
    ):
        accuracy = "-" if value is None else f"{value:.4f}"
        predicted = "-" if sample is None else sample[k]
        true = "-" if truth is None else truth[k]
        lines.append(f"| {name} | {accuracy} | {predicted} | {true} |")
    return lines


def _confusion_section(results: dict) -> list[str]:
    """The test confusion matrix (EMA model, final evaluation), or its largest confusions."""
    confusion = results["confusion_matrix"]
    names = _class_names(results)
    if len(confusion) <= diagnostics.FULL_MATRIX_CLASSES:
        lines = [
            "Test confusion matrix (EMA model, final evaluation; rows: true class, "
            "columns: predicted, images):",
            "",
            "| true \\ predicted | " + " | ".join(map(str, names)) + " |",
            "|---|" + "---|" * len(names),
        ]
        lines += [
            f"| {name} | " + " | ".join(map(str, row)) + " |"
            for name, row in zip(names, confusion, strict=True)
        ]
        return lines
    rows = [sum(row) for row in confusion]
    lines = [
        f"Largest test confusions (EMA model, final evaluation; {len(confusion)} classes, "
        f"more than {diagnostics.FULL_MATRIX_CLASSES}: the full matrix is results.json's "
        "`confusion_matrix`, the per-class recall is above):",
        "",
        "| true | predicted | images | share of the true class |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {names[true]} | {names[predicted]} | {count} | {count / rows[true]:.2f} |"
        for true, predicted, count in diagnostics.top_confusions(confusion)
    ]
    return lines


def drawn_terms(config) -> tuple[str, ...]:
    """The `LOSS_TERMS` whose curves mean something in ``config``'s run.

    A role with no term chosen (``none``), a zero weight, or an unlabeled
    term without an unlabeled batch adds nothing to the total: its curve
    would be a flat line and a legend entry for nothing. The MI between the
    views is drawn when the run's unsupervised term maximises it (`MI_TERMS`);
    for the other methods it stays a diagnostic in TensorBoard and results.json.
    """
    from muscle_jax import methods  # Deferred: the report's readers need no JAX.

    loss = config.loss
    has_unlabeled = methods.unlabeled_views(config) != "none"
    drawn = ["total"]
    for role, term in methods.selected(loss).items():
        weight = loss.get(f"{role}_weight", 0.0)
        if term.name != "none" and weight and (term.unlabeled_views is None or has_unlabeled):
            drawn.append(role)
    if methods.UNSUPERVISED in drawn and loss.unsupervised in MI_TERMS:
        drawn.append("mutual_information")
    return tuple(drawn)


# The unsupervised terms whose objective is the views' mutual information.
MI_TERMS = frozenset({"iic"})


def curves_figure(history: dict, train_history: dict[str, Any], terms=LOSS_TERMS):
    """The figure of `plot_curves`: test accuracy, and the loss ``terms`` over steps.

    Each legend sits outside its axes, right of it, so it never hides a curve.
    """
    # Deferred: only the trainer's process 0 draws. The object API, not pyplot:
    # no global figure state, no GUI backend.
    from matplotlib.figure import Figure

    # Constrained layout makes room for the legends beside the axes.
    figure = Figure(figsize=(13, 4), layout="constrained")
    accuracy_axis, loss_axis = figure.subplots(1, 2)
    accuracy_axis.plot(history["step"], history["ema_accuracy"], "o-", label="EMA model")
    accuracy_axis.plot(history["step"], history["raw_accuracy"], "s--", label="raw model")
    accuracy_axis.set(xlabel="step", ylabel="test accuracy", title="Test accuracy")
    accuracy_axis.grid(alpha=0.3)
    for term in terms:
        values = [float("nan") if v is None else v for v in train_history.get(term, [])]
        if values:
            loss_axis.plot(train_history["step"], values, label=term)
    loss_axis.set(xlabel="step", ylabel="mean over the logging interval", title="Loss terms")
    loss_axis.grid(alpha=0.3)
    for axis in (accuracy_axis, loss_axis):
        if axis.get_lines():
            axis.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    return figure


def plot_curves(
    workdir: str, *, history: dict, train_history: dict[str, Any], terms=LOSS_TERMS
) -> None:
    """Writes ``curves.png``: test accuracy (EMA and raw) and the loss ``terms`` over steps.

    ``terms``: `drawn_terms` of the run's config leaves out the unused ones.
    """
    figure = curves_figure(history, train_history, terms)
    workdir_lib.write_atomically(
        os.path.join(workdir, PLOT_NAME),
        lambda handle: figure.savefig(handle, dpi=90, format="png"),
        binary=True,
    )
