"""The add-on role: ABC's balanced head on top of a base, alone and with MUSCLE's MI term.

Its math is tested against hand-computed values in tests/test_losses_base_steps.py;
here it runs inside the trainer on the tiny digits config with long-tailed labels.
"""

import jax
import numpy as np
import pytest

from muscle_jax import config_validation, input_pipeline, losses, methods, train
from muscle_jax.data import splits

from .helpers import latest_state, load_config
from .shared_runs import run_until_step
from .test_train import run_steps


def abc_config(variant: str):
    # 100 labels at imbalance 10: 25 of class 0 down to 3 of class 9.
    config = load_config("tiny", f"num_labeled=100,addon=abc,{variant}")
    config.data.imbalance_ratio = 10.0
    return config


def expected_ratio(config):
    counts = splits.per_class_counts(
        config.data.num_labeled, config.data.num_classes, imbalance_ratio=10.0
    )
    return counts.min() / counts


@pytest.mark.slow
def test_abc_alone_trains_its_own_head_beside_the_base(tmp_path):
    config = abc_config("method=fixmatch,mi=False")
    assert config.loss.addon == "abc" and config.loss.unsupervised == "none"
    assert methods.evaluation_head(config.loss) == "balanced_logits"
    config.total_steps = config.eval_every_steps = config.checkpoint_every_steps = 4
    results = train.train_and_evaluate(config, str(tmp_path))  # End to end.
    assert results["steps"] == 4 and np.isfinite(results["accuracy"])
    assert results["train_history"]["addon"][-1] > 0
    assert results["evaluation_head"] == "balanced_logits"
    state = latest_state(tmp_path, config)
    assert "balanced_classifier" in state.params["heads"]
    # r = N_min / N_k of the labeled subset, kept as the term's state.
    ratio = np.asarray(state.method_state["abc"]["ratio"])
    np.testing.assert_allclose(ratio, expected_ratio(config), rtol=1e-6)
    assert ratio[-1] == 1.0 and ratio[0] < 0.2
    # One step's metrics, on one device.
    _, metrics, _ = run_steps(config, train.make_mesh(jax.devices()[:1]), 1)
    for key in ("abc_labeled", "abc_unlabeled", "abc_mask_rate", "addon"):
        assert np.isfinite(metrics[key]), key
    np.testing.assert_allclose(
        metrics["addon"], metrics["abc_labeled"] + metrics["abc_unlabeled"], rtol=1e-6
    )
    # The one sum: supervised + consistency (weight 1, no ramp) + add-on (weight 1).
    np.testing.assert_allclose(
        metrics["total"],
        metrics["supervised"] + metrics["consistency"] + metrics["addon"],
        rtol=1e-5,
    )
    assert float(metrics["addon"]) > 0


@pytest.mark.slow
def test_abc_with_mi_stops_resumes_bit_identically_and_is_evaluated_on_its_head(tmp_path):
    config = abc_config("method=fixmatch")
    assert config.loss.unsupervised == "iic"
    uninterrupted = train.train_and_evaluate(config, str(tmp_path / "a"))
    assert run_until_step(config, tmp_path / "b", stop_after=5) == {
        "status": "preempted",
        "step": 5,
    }
    resumed = train.train_and_evaluate(config, str(tmp_path / "b"))
    assert resumed["history"] == uninterrupted["history"]
    assert resumed["train_history"]["addon"][-1] == uninterrupted["train_history"]["addon"][-1]
    states = [latest_state(tmp_path / name, config) for name in ("a", "b")]
    for a, b in zip(jax.tree.leaves(states[0]), jax.tree.leaves(states[1]), strict=True):
        np.testing.assert_array_equal(a, b)

    # The reported accuracy is the balanced head's: score the final state with each head.
    info = input_pipeline.dataset_info(config.data.name)
    graphdef, _, _ = train.create_train_state(config, info)
    correct = {}
    for head in ("balanced_logits", "logits"):
        totals = 0.0
        for batch in input_pipeline.evaluation(config.data):
            hits = train.eval_step(states[0], batch, graphdef=graphdef, num_classes=10, head=head)
            totals = totals + np.asarray(hits["ema_correct"])
            count = np.asarray(hits["count"])
        correct[head] = totals.sum()
    test_size = info.num_test
    assert uninterrupted["history"]["ema_accuracy"][-1] == pytest.approx(
        correct["balanced_logits"] / test_size
    )
    # After 12 steps the two heads disagree on some test images (else this proves nothing).
    assert correct["balanced_logits"] != correct["logits"], (correct, count)


def test_abc_is_refused_on_a_base_without_strong_views_and_heads_may_not_clash():
    with pytest.raises(config_validation.ConfigError, match=r"loss.addon='abc'.*'weak_weak'"):
        config_validation.validate_config(abc_config("method=mse"), num_devices=1)
    # A second term that wants the evaluation on another head of its own.
    other = methods.register(
        methods.Term(
            name="own_head",
            role=methods.UNSUPERVISED,
            loss=lambda inputs, section, state: methods.TermResult(0.0),
            description="test term",
            evaluation_head="projections",
        )
    )
    try:
        config = abc_config("method=fixmatch,unsupervised=own_head")
        problems = methods.check(config)
        assert any("each want the evaluation to read their own head" in p for p in problems)
        with pytest.raises(ValueError, match="different evaluation heads"):
            methods.evaluation_head(config.loss)
    finally:
        methods.unregister(other.role, other.name)
    assert losses.balancing_ratio([3, 3]).tolist() == [1.0, 1.0]  # Balanced: keep all.
