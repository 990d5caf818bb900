"""curves.png: only the loss terms a run uses, and legends that hide no curve."""

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from muscle_jax import loop, report

from .helpers import load_config

STEPS = list(range(4, 44, 4))


def histories():
    """An evaluation history and a training history with a value for every term."""
    history = {
        "step": STEPS[1::2],
        "ema_accuracy": list(np.linspace(0.2, 0.9, 5)),
        "raw_accuracy": list(np.linspace(0.1, 0.8, 5)),
    }
    # Falling curves that fill the axes' upper left, where a legend inside would sit.
    train_history = {"step": STEPS}
    for k, term in enumerate(report.LOSS_TERMS):
        train_history[term] = list(np.linspace(2.0 + k, 0.1, len(STEPS)))
    return history, train_history


@pytest.mark.parametrize(
    "variant, changes, expected",
    [
        (None, {}, ("total", "supervised", "consistency", "unsupervised", "mutual_information")),
        ("mi=False", {}, ("total", "supervised", "consistency")),
        (None, {"loss.unsupervised_weight": 0.0}, ("total", "supervised", "consistency")),
        (
            None,
            {"loss.supervised_weight": 0.0},
            ("total", "consistency", "unsupervised", "mutual_information"),
        ),
        ("unsupervised=sdt", {}, ("total", "supervised", "consistency", "unsupervised")),
        (None, {"data.unlabeled_ratio": 0}, ("total", "supervised")),
    ],
)
def test_only_the_terms_a_run_uses_are_drawn(variant, changes, expected):
    config = load_config("tiny", variant)
    for key, value in changes.items():
        section, name = key.split(".")
        config[section][name] = value
    assert report.drawn_terms(config) == expected


def test_a_run_without_an_mi_term_draws_no_mi_line_and_legends_cover_no_curve():
    terms = report.drawn_terms(load_config("tiny", "mi=False"))
    figure = report.curves_figure(*histories(), terms)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()  # Lays the figure out, legends included.
    renderer = canvas.get_renderer()
    accuracy_axis, loss_axis = figure.axes
    drawn = [line.get_label() for line in loss_axis.get_lines()]
    legend = [text.get_text() for text in loss_axis.get_legend().get_texts()]
    assert drawn == legend == ["total", "supervised", "consistency"]
    assert "mutual_information" not in drawn and "unsupervised" not in drawn
    figure_box = figure.bbox
    for axis in (accuracy_axis, loss_axis):
        box = axis.get_legend().get_window_extent(renderer)
        assert not box.overlaps(axis.get_window_extent(renderer)), axis.get_title()
        assert figure_box.x0 <= box.x0 and box.x1 <= figure_box.x1, axis.get_title()


def test_the_trainer_draws_the_terms_of_its_config(tmp_path, monkeypatch):
    drawn = {}
    monkeypatch.setattr(report, "plot_curves", lambda workdir, **kwargs: drawn.update(kwargs))
    config = load_config("tiny", "mi=False")
    config.plot_curves = True
    history, train_history = histories()
    history.update(unlabeled_predicted_ema=[None] * 5, unlabeled_predicted_raw=[None] * 5)
    loop.write_report(str(tmp_path), config, history, train_history)
    assert drawn["terms"] == ("total", "supervised", "consistency")
