"""The self-defined target as its paper ran it (configs/sdt_mlp.py), and what it needs.

The recipe's values are checked against the authors' code as docs/method.md
lists them; the sigmoid output and the cross-entropy criterion against
hand-computed values; the MLP's input dropout by what it changes; and the
two stages (pre-training, then the semi-supervised stage from its weights)
run for a few steps on digits. The second stage trains with label noise on,
so its results.json also checks the `label_noise` record
(tests/test_label_noise.py) without another training run.
"""

import json
import logging
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from muscle_jax import config_validation, input_pipeline, losses, methods, models, train
from tests.helpers import load_config


def test_the_recipe_is_the_authors_semi_supervised_mlp():
    config = load_config("sdt_mlp")
    assert (config.data.name, config.data.num_labeled, config.data.num_classes) == (
        "mnist",
        600,
        10,
    )
    assert config.data.exclude_labeled_from_unlabeled
    assert (config.data.batch_size, config.data.unlabeled_ratio) == (32, 8)  # 32 and 256.
    assert config.model.name == "mlp"
    assert dict(config.model.kwargs) == {
        "hidden_sizes": (5000,),
        "dropout_rate": 0.5,
        "input_dropout_rate": 0.3,
    }
    loss = config.loss
    assert (loss.consistency, loss.unsupervised, loss.supervised) == (
        "none",
        "sdt",
        "cross_entropy",
    )
    # The SDT term carries the labeled targets; nothing else is trained.
    assert (loss.supervised_weight, loss.unsupervised_weight) == (0.0, 1.0)
    assert dict(loss.sdt) == {
        "k": 1,
        "rate": 0.003,
        "output": "sigmoid",
        "criterion": "cross_entropy",
    }
    assert (config.optimizer.name, config.optimizer.weight_decay) == ("adam", 0.0)
    assert config.optimizer.learning_rate == 1e-4 and config.ema_decay == 0.0
    # 400 epochs over the 59,400 unlabeled images in batches of 256; evaluated every 10.
    assert config.total_steps == 400 * math.ceil(59_400 / 256) == 93_200
    assert config.eval_every_steps == 2_330
    config_validation.validate_config(config, num_devices=8)

    pretrain = load_config("sdt_mlp", "stage=pretrain")
    assert pretrain.total_steps == 200 * math.ceil(600 / 32) == 3_800
    assert (pretrain.loss.consistency, pretrain.loss.unsupervised) == ("none", "none")
    assert pretrain.data.unlabeled_ratio == 0 and pretrain.loss.supervised_weight == 1.0
    assert pretrain.optimizer.learning_rate == 1e-3
    # The two stages build the same network: the second starts from the first's weights.
    assert train.compatibility(pretrain) == train.compatibility(config)

    digits = load_config("sdt_mlp", "dataset=digits")
    assert (digits.data.name, digits.data.num_labeled) == ("digits", 100)
    assert digits.total_steps == 400 * math.ceil(1_397 / 256) == 2_400
    assert load_config("sdt_mlp", "dataset=digits,stage=pretrain").total_steps == 800


@pytest.mark.parametrize(
    "arg, fragment",
    [
        ("dataset=cifar10", "dataset='cifar10' is not one of ('mnist', 'digits')"),
        ("stage=finetune", "stage='finetune' is not one of ('semi', 'pretrain')"),
        ("stage=pretrain,method=fixmatch", "takes no method=fixmatch"),
    ],
)
def test_bad_variants_are_named(arg, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        load_config("sdt_mlp", arg)


def test_a_method_variant_keeps_a_supervised_term_when_the_sdt_term_is_off():
    config = load_config("sdt_mlp", "method=fixmatch,mi=False")
    assert config.loss.unsupervised == "none" and config.loss.supervised_weight == 1.0


# ---------------------------------------------------------------- the term's options


def test_cross_entropy_criterion_is_a_softmax_over_the_outputs():
    outputs = jnp.array([[0.9, 0.2, 0.1], [0.5, 0.5, 0.5]])
    targets = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])  # k = 2 in the second row.
    value = losses.self_defined_target_loss(outputs, targets, criterion="cross_entropy")
    first = -math.log(math.exp(0.9) / (math.exp(0.9) + math.exp(0.2) + math.exp(0.1)))
    # Two winners, not renormalised: twice -log(1/3).
    np.testing.assert_allclose(value, [first, 2 * math.log(3)], rtol=1e-6)
    grad = jax.grad(
        lambda o: losses.self_defined_target_loss(o, targets, criterion="cross_entropy").sum()
    )(outputs)
    np.testing.assert_allclose(
        grad, jax.nn.softmax(outputs) * targets.sum(-1, keepdims=True) - targets, atol=1e-6
    )
    jitted = jax.jit(losses.self_defined_target_loss, static_argnames="criterion")
    np.testing.assert_allclose(
        jitted(outputs, targets, criterion="cross_entropy"), value, rtol=1e-6
    )
    # The squared error stays the default.
    np.testing.assert_allclose(
        losses.self_defined_target_loss(outputs, targets),
        jnp.mean(jnp.square(outputs - targets), -1),
    )
    with pytest.raises(ValueError, match="criterion must be one of"):
        losses.self_defined_target_loss(outputs, targets, criterion="hinge")


def test_bad_output_and_criterion_are_named():
    config = load_config("digits", "unsupervised=sdt")
    config.loss.sdt.output = "tanh"
    config.loss.sdt.criterion = "hinge"
    problems = methods.check(config)
    assert "loss.sdt.output='tanh' is not one of ('softmax', 'sigmoid')." in problems
    assert "loss.sdt.criterion='hinge' is not one of ('mse', 'cross_entropy')." in problems


def test_runs_saved_before_the_options_resume_as_softmax_and_squared_error():
    config = load_config("digits", "unsupervised=sdt")
    saved = config.to_dict()
    del saved["loss"]["sdt"]["output"], saved["loss"]["sdt"]["criterion"]
    fixed, _ = config_validation.resume_changes(saved, config.to_dict())
    assert fixed == []


def test_input_dropout_drops_pixels_in_training_only():
    model = models.create_model(
        "mlp",
        num_classes=3,
        rngs=nnx.Rngs(0),
        input_shape=(4, 4, 1),
        hidden_sizes=(16,),
        input_dropout_rate=0.5,
    )
    images = jax.random.normal(jax.random.key(1), (2, 4, 4, 1))
    evaluated = model(images, train=False).logits
    a = model(images, train=True, dropout_key=jax.random.key(2)).logits
    b = model(images, train=True, dropout_key=jax.random.key(3)).logits
    assert not np.allclose(a, evaluated) and not np.allclose(a, b)
    # Every pixel dropped: the logits no longer depend on the image.
    blind = models.create_model(
        "mlp",
        num_classes=3,
        rngs=nnx.Rngs(0),
        input_shape=(4, 4, 1),
        hidden_sizes=(16,),
        input_dropout_rate=1.0,
    )
    key = jax.random.key(4)
    np.testing.assert_allclose(
        blind(images, train=True, dropout_key=key).logits,
        blind(-images, train=True, dropout_key=key).logits,
    )
    with pytest.raises(ValueError, match="needs dropout_key"):
        model(images, train=True)


# ---------------------------------------------------------------- the two stages, tiny


@pytest.mark.slow(heavy=True)
def test_both_stages_train_on_digits_and_record_the_label_noise(tmp_path, caplog):
    pretrain = load_config("sdt_mlp", "dataset=digits,stage=pretrain,total_steps=4")
    pretrain.model.kwargs.hidden_sizes = (64,)  # The recipe's 5,000 units cost nothing here.
    first = train.train_and_evaluate(pretrain, str(tmp_path / "pretrain"))
    assert first["status"] == "completed" and first["steps"] == 4

    config = load_config("sdt_mlp", "dataset=digits,total_steps=4")
    config.model.kwargs.hidden_sizes = (64,)
    config.init_from = str(tmp_path / "pretrain" / "checkpoints")
    config.data.label_noise = 0.2
    # absl's logger keeps its own level, which an earlier run in this worker may have raised.
    with caplog.at_level(logging.INFO), caplog.at_level(logging.INFO, logger="absl"):
        results = train.train_and_evaluate(config, str(tmp_path / "semi"))
    assert f"Initialised the weights from {config.init_from}" in caplog.text
    assert results["status"] == "completed" and np.isfinite(results["accuracy"])
    written = json.loads((tmp_path / "semi" / "results.json").read_text())
    assert written["config"]["loss"]["sdt"]["output"] == "sigmoid"
    # The term trained: its loss was logged, finite and positive (a cross-entropy).
    logged = [v for v in written["train_history"]["unsupervised"] if v is not None]
    assert logged and all(np.isfinite(v) and v > 0 for v in logged)

    record = written["label_noise"]
    assert (record["fraction"], record["kind"], record["num_labeled"]) == (0.2, "symmetric", 100)
    assert record["num_changed"] == 20 and record["realised_rate"] == 0.2
    changed = record["changed"]
    assert all(a != b for a, b in zip(changed["original"], changed["noisy"], strict=True))
    source = input_pipeline.sources.open_source("digits")
    assert changed["original"] == source.train_labels()[changed["indices"]].tolist()
    assert record == input_pipeline.label_noise_record(config.data, source=source, seed=0)
    # The first stage trained without noise: a record of nothing changed.
    clean = json.loads((tmp_path / "pretrain" / "results.json").read_text())["label_noise"]
    assert clean["num_changed"] == 0 and clean["changed"]["indices"] == []
