"""The remedies for MUSCLE's lost classes, ``loss.iic.*``: their math, defaults and training.

Each option's formula is checked against hand-computed values on the loss
functions and on the IIC term itself (`methods.get("unsupervised", "iic")`);
the trainer runs a few tiny steps with the options on; and the defaults are
today's term, so checkpoints written before the options existed resume.
"""

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from muscle_jax import (
    config_validation,
    input_pipeline,
    losses,
    methods,
    models,
    objective,
    train,
)
from muscle_jax.data import device_augment
from muscle_jax.data.streams import UNLABELED
from muscle_jax.methods import unsupervised

from .helpers import DIGITS_STREAM, latest_state, load_config
from .shared_runs import run_until_step, short_config
from .test_train import run_steps

IIC = methods.get(methods.UNSUPERVISED, "iic")


def section(**changes) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(dict(IIC.defaults))
    config.update(changes)
    return config


def term_inputs(labeled, labels, view_a, view_b, *, mi_head=None) -> methods.Inputs:
    """IIC's inputs from logits (``mi_head``: the MI head's ``(labeled, view_a, view_b)``)."""
    labeled_mi, view_a_mi, view_b_mi = mi_head or (None, None, None)
    return methods.Inputs(
        labeled_logits=jnp.asarray(labeled, jnp.float32),
        labels=jnp.asarray(labels, jnp.int32),
        labeled_index=None,
        supervised_logits=jnp.asarray(labeled, jnp.float32),
        supervised_targets=jnp.asarray(labels, jnp.int32),
        view_a_logits=jnp.asarray(view_a, jnp.float32),
        view_b_logits=jnp.asarray(view_b, jnp.float32),
        labeled_mi_logits=labeled_mi,
        view_a_mi_logits=view_a_mi,
        view_b_mi_logits=view_b_mi,
        num_classes=np.shape(view_a)[-1],
    )


def entropy(p) -> float:
    p = np.asarray(p, np.float64)
    return float(-np.sum(p[p > 0] * np.log(p[p > 0])))


# Three images of class 0 and one of class 1, the same one-hot assignment in both
# views: P = diag(.75, .25), m = (.75, .25), I = H(m) = 0.562335 nats.
SKEWED = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
SKEWED_MI = 0.562335


# ---------------------------------------------------------------- the loss functions


def test_where_leaves_rows_out_of_the_joint():
    a = jax.nn.softmax(jax.random.normal(jax.random.key(0), (6, 3)))
    b = jax.nn.softmax(jax.random.normal(jax.random.key(1), (6, 3)))
    keep = np.array([True, False, True, True, False, True])
    np.testing.assert_allclose(
        losses.joint_distribution(a, b, where=keep),
        losses.joint_distribution(a[keep], b[keep]),
        atol=1e-7,
    )
    # NaN in a left-out row does not leak (jnp.where, not a product).
    poisoned = a.at[1].set(jnp.nan)
    value = losses.mutual_information(poisoned, b, where=keep)
    assert float(value) == pytest.approx(
        float(losses.mutual_information(a[keep], b[keep])), abs=1e-6
    )
    # Nothing selected: no evidence, MI 0 with a finite (zero) gradient, not 0 / 0.
    none = np.zeros(6, bool)
    assert float(losses.mutual_information(a, b, where=none)) == 0.0
    gradient = jax.grad(lambda x: losses.mutual_information(x, b, where=none))(a)
    assert np.all(gradient == 0.0)


@pytest.mark.parametrize(
    "prior, lamb, expected",
    [
        # Uniform prior: J = I exactly.
        ([0.5, 0.5], 1.0, SKEWED_MI),
        # m = prior: J = H(prior) = I, the largest value it can take.
        ([0.75, 0.25], 1.0, SKEWED_MI),
        # J = I + sum_i (m_i - pi_i) log pi_i
        #   = 0.562335 + (-.15) log .9 + (.15) log .1 = 0.562335 + 0.015804 - 0.345388
        #   = H(pi) - KL(m || pi) = 0.325083 - 0.092332 = 0.232751.
        ([0.9, 0.1], 1.0, 0.232751),
        # lamb = 2: I_2 = -H(P) + 4 H(m) = 3 * 0.562335; J = I_2 + 3 * (0.015804 - 0.345388).
        ([0.9, 0.1], 2.0, 0.698253),
        # Counts are normalised: [9, 1] is the prior [0.9, 0.1].
        ([9.0, 1.0], 1.0, 0.232751),
    ],
)
def test_the_prior_marginal_hand_computed(prior, lamb, expected):
    value = losses.mutual_information(SKEWED, SKEWED, lamb=lamb, prior=jnp.asarray(prior))
    assert float(value) == pytest.approx(expected, abs=1e-5)
    loss = losses.mutual_information_loss(SKEWED, SKEWED, lamb=lamb, prior=jnp.asarray(prior))
    assert float(loss) == pytest.approx(-expected, abs=1e-5)


def test_the_prior_marginal_peaks_at_the_prior_and_equals_iic_for_a_uniform_one():
    # Deterministic pairs (a diagonal joint) with marginal m: J = H(pi) - KL(m || pi) for
    # lamb = 1, largest at m = pi; IIC's H(m) is largest at the uniform m.
    prior = jnp.array([0.7, 0.2, 0.1])
    shares = [(0.7, 0.2, 0.1), (1 / 3, 1 / 3, 1 / 3), (0.6, 0.3, 0.1), (0.8, 0.1, 0.1)]
    values = {}
    for share in shares:
        counts = np.round(np.asarray(share) * 30).astype(int)
        one_hot = jax.nn.one_hot(np.repeat(np.arange(3), counts), 3)
        values[share] = float(losses.mutual_information(one_hot, one_hot, prior=prior))
    assert max(values, key=values.get) == (0.7, 0.2, 0.1)
    assert values[(0.7, 0.2, 0.1)] == pytest.approx(entropy(prior), abs=1e-5)
    # Any inputs: a uniform prior changes nothing, value or gradient.
    a = jax.nn.softmax(jax.random.normal(jax.random.key(2), (16, 4)))
    b = jax.nn.softmax(jax.random.normal(jax.random.key(3), (16, 4)))
    uniform = jnp.full(4, 0.25)
    for lamb in (1.0, 1.5):
        np.testing.assert_allclose(
            losses.mutual_information(a, b, lamb=lamb, prior=uniform),
            losses.mutual_information(a, b, lamb=lamb),
            atol=1e-6,
        )
        np.testing.assert_allclose(
            jax.grad(
                lambda x, lamb=lamb: losses.mutual_information(x, b, lamb=lamb, prior=uniform)
            )(a),
            jax.grad(lambda x, lamb=lamb: losses.mutual_information(x, b, lamb=lamb))(a),
            atol=1e-6,
        )
    # The prior is a target: it gets no gradient.
    gradient = jax.grad(lambda p: losses.mutual_information(a, b, prior=p))(uniform)
    assert np.all(gradient == 0.0)


def test_class_prior_update_is_an_ema_of_the_selected_rows():
    prior = jnp.array([0.5, 0.5])
    probs = jnp.array([[0.5, 0.5], [0.9, 0.1], [0.1, 0.9]])
    # Rows 0 and 1: mean [0.7, 0.3]; 0.5 * 0.5 + 0.5 * [0.7, 0.3] = [0.6, 0.4].
    updated = losses.class_prior_update(prior, probs, momentum=0.5, where=[True, True, False])
    np.testing.assert_allclose(updated, [0.6, 0.4], atol=1e-7)
    # All rows: mean [0.5, 0.5], and 0.9 * [0.6, 0.4] + 0.1 * [0.5, 0.5] = [0.59, 0.41].
    np.testing.assert_allclose(
        losses.class_prior_update(updated, probs, momentum=0.9), [0.59, 0.41], atol=1e-7
    )
    # No row selected: unchanged; and no gradient flows into the predictions.
    np.testing.assert_array_equal(
        losses.class_prior_update(prior, probs, momentum=0.5, where=[False] * 3), prior
    )
    gradient = jax.grad(lambda p: losses.class_prior_update(prior, p, momentum=0.5)[0])(probs)
    assert np.all(gradient == 0.0)
    with pytest.raises(ValueError, match="momentum"):
        losses.class_prior_update(prior, probs, momentum=1.5)
    with pytest.raises(ValueError, match="prior has 3 classes"):
        losses.mutual_information(probs, probs, prior=jnp.ones(3))


# ---------------------------------------------------------------- the IIC term's options


def test_anchor_labeled_joins_the_labels_on_both_sides():
    # Labels [0, 1] as one-hots on both sides, one unlabeled image predicted uniform
    # in both views: J = ([[1, 0], [0, 0]] + [[0, 0], [0, 1]] + [[.25, .25], [.25, .25]]) / 3,
    # P = [[5/12, 1/12], [1/12, 5/12]], m = (.5, .5),
    # I = (5/6) log((5/12) / .25) + (1/6) log((1/12) / .25) = 0.425688 - 0.183102 = 0.242586.
    inputs = term_inputs([[3.0, -1.0], [2.0, 0.0]], [0, 1], [[0.0, 0.0]], [[0.0, 0.0]])
    result = IIC.loss(inputs, section(anchor_labeled=True), None)
    assert float(result.metrics["mutual_information"]) == pytest.approx(0.242586, abs=1e-5)
    assert float(result.value) == pytest.approx(-0.242586, abs=1e-5)
    # Only the labels join: the labeled images' predictions get no gradient.
    view_a = jax.random.normal(jax.random.key(0), (6, 3))
    view_b = jax.random.normal(jax.random.key(1), (6, 3))
    labeled = jax.random.normal(jax.random.key(2), (3, 3))

    def value(labeled, view_a):
        inputs = term_inputs(labeled, [0, 1, 2], view_a, view_b)
        return IIC.loss(inputs, section(anchor_labeled=True), None).value

    labeled_gradient, view_gradient = jax.grad(value, argnums=(0, 1))(labeled, view_a)
    assert np.all(labeled_gradient == 0.0) and np.any(view_gradient != 0.0)
    # No extra labeled view: anchoring needs the labels only.
    config = load_config("tiny")
    config.loss.iic.anchor_labeled = True
    assert methods.labeled_views(config) == 1


def test_the_confidence_gate_keeps_the_confident_unlabeled_images():
    # Weak-view confidences 0.982, 0.525, 0.982, 0.550: a gate of 0.9 keeps rows 0 and 2.
    view_a = np.array([[4.0, 0.0], [0.1, 0.0], [0.0, 4.0], [0.0, 0.2]])
    view_b = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    labeled, labels = np.array([[1.0, 0.0], [0.0, 1.0]]), [1, 1]
    inputs = term_inputs(labeled, labels, view_a, view_b)
    probs_a, probs_b = jax.nn.softmax(view_a), jax.nn.softmax(view_b)
    kept = np.array([0, 2])
    result = IIC.loss(inputs, section(confidence_gate=0.9), None)
    expected = losses.mutual_information(probs_a[kept], probs_b[kept])
    assert float(result.value) == pytest.approx(-float(expected), abs=1e-6)
    assert float(result.metrics["iic_gate_rate"]) == 0.5
    # The labeled rows always enter (here: anchored by their labels).
    result = IIC.loss(inputs, section(confidence_gate=0.9, anchor_labeled=True), None)
    one_hot = jax.nn.one_hot(jnp.array(labels), 2)
    expected = losses.mutual_information(
        jnp.concatenate([one_hot, probs_a[kept]]), jnp.concatenate([one_hot, probs_b[kept]])
    )
    assert float(result.value) == pytest.approx(-float(expected), abs=1e-6)
    # Off (0): every unlabeled image, today's term.
    result = IIC.loss(inputs, section(), None)
    assert float(result.value) == pytest.approx(
        -float(losses.mutual_information(probs_a, probs_b)), abs=1e-6
    )
    assert "iic_gate_rate" not in result.metrics


def test_the_mi_head_takes_the_mi_term_off_the_classifier():
    keys = jax.random.split(jax.random.key(3), 6)
    classifier = [
        jax.random.normal(key, shape) for key, shape in zip(keys[:3], [(2, 3), (5, 3), (5, 3)])
    ]
    mi_head = [
        jax.random.normal(key, shape) for key, shape in zip(keys[3:], [(2, 3), (5, 3), (5, 3)])
    ]

    def run(head, classifier, mi_head):
        inputs = term_inputs(classifier[0], [0, 1], classifier[1], classifier[2], mi_head=mi_head)
        return IIC.loss(inputs, section(head=head), None)

    def mi(logits):
        return float(losses.mutual_information(*(jax.nn.softmax(x) for x in logits[1:])))

    auxiliary = run("auxiliary", classifier, mi_head)
    assert float(auxiliary.value) == pytest.approx(-mi(mi_head), abs=1e-6)
    assert float(auxiliary.metrics["mi_head_mutual_information"]) == pytest.approx(mi(mi_head))
    # The trainer then reports the classifier's own MI (objective's diagnostic).
    assert "mutual_information" not in auxiliary.metrics
    both = run("both", classifier, mi_head)
    assert float(both.value) == pytest.approx(-mi(classifier) - mi(mi_head), abs=1e-6)
    classifier_gradient, mi_gradient = jax.grad(
        lambda c, m: run("auxiliary", c, m).value, argnums=(0, 1)
    )(classifier, mi_head)
    assert all(np.all(g == 0.0) for g in classifier_gradient)
    assert all(np.any(g != 0.0) for g in mi_gradient[1:])


def test_the_prior_is_the_terms_state():
    spec = methods.StateSpec(num_train=8, num_classes=2, labeled_class_counts=(3, 1))
    labeled = IIC.init_state(spec, section(marginal="prior", prior="labeled"))
    np.testing.assert_allclose(labeled["prior"], [0.75, 0.25])
    estimated = IIC.init_state(spec, section(marginal="prior", prior="estimated"))
    np.testing.assert_allclose(estimated["prior"], [0.5, 0.5])
    assert IIC.init_state(spec, section()) == {}  # The uniform marginal keeps no state.
    view_a = np.array([[2.0, 0.0], [1.0, 0.0], [0.0, 0.5]])
    view_b = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    inputs = term_inputs([[0.0, 0.0]], [0], view_a, view_b)
    probs_a, probs_b = jax.nn.softmax(view_a), jax.nn.softmax(view_b)
    # The labeled prior is fixed: the term returns no new state.
    result = IIC.loss(inputs, section(marginal="prior"), labeled)
    expected = losses.mutual_information(probs_a, probs_b, prior=labeled["prior"])
    assert float(result.value) == pytest.approx(-float(expected), abs=1e-6)
    assert result.state is None
    # The MI itself is still reported, comparable with the uniform marginal's runs.
    assert float(result.metrics["mutual_information"]) == pytest.approx(
        float(losses.mutual_information(probs_a, probs_b)), abs=1e-6
    )
    assert float(result.metrics["iic_prior_min"]) == 0.25
    # The estimated prior moves to the classifier's mean weak-view prediction first.
    chosen = section(marginal="prior", prior="estimated", prior_momentum=0.5)
    result = IIC.loss(inputs, chosen, estimated)
    moved = 0.5 * np.array([0.5, 0.5]) + 0.5 * np.mean(probs_a, axis=0)
    np.testing.assert_allclose(result.state["prior"], moved, atol=1e-6)
    expected = losses.mutual_information(probs_a, probs_b, prior=moved)
    assert float(result.value) == pytest.approx(-float(expected), abs=1e-6)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("head", "projector", r"loss.iic.head='projector' is not one of \('classifier', "),
        ("marginal", "prior_kl", r"loss.iic.marginal='prior_kl' is not one of \('uniform', "),
        ("prior", "test", r"loss.iic.prior='test' is not one of \('labeled', 'estimated'\)"),
        ("prior_momentum", 1.5, r"loss.iic.prior_momentum=1.5 must be in \[0, 1\]"),
        ("confidence_gate", 1.0, r"loss.iic.confidence_gate=1.0 must be in \[0, 1\) \(0: off\)"),
        ("anchor_labeled", True, r"set at most one of them to True"),
        (
            "views",
            "strong",
            r"loss.iic.views='strong' is not one of \('weak_strong', 'weak_weak'\)",
        ),
        (
            "views",
            "weak_weak",
            r"loss.iic.views='weak_weak' pairs two weak views, but .*on_labeled",
        ),
    ],
)
def test_each_option_is_checked_before_anything_runs(key, value, message):
    config = load_config("tiny")
    config.loss.iic.on_labeled = True  # With anchor_labeled, the one clash.
    config.loss.iic[key] = value
    with pytest.raises(config_validation.ConfigError, match=message):
        config_validation.validate_config(config, num_devices=1)


# ---------------------------------------------------------------- defaults and old runs


def test_the_defaults_are_the_term_before_the_options():
    config = load_config("tiny")
    assert {key: config.loss.iic[key] for key in unsupervised.IIC_ADDED_KEYS} == (
        unsupervised.IIC_ADDED_KEYS
    )
    # No head, no state, no view more: the state tree and the checkpoint's
    # compatibility record are what they were.
    assert methods.model_heads(config.loss) == {}
    assert train.compatibility(config)["heads"] == {}
    assert methods.labeled_views(config) == 1
    info = input_pipeline.dataset_info("digits")
    assert methods.init_state(config.loss, train.state_spec(config, info)) == {}
    params = nnx.state(train.build_model(config, info), nnx.Param).to_pure_dict()
    assert sorted(params["heads"]) == ["classifier"]


def test_a_run_saved_before_the_options_resumes_as_it_was():
    config = load_config("tiny")
    saved = config.to_dict()
    for key in unsupervised.IIC_ADDED_KEYS:
        del saved["loss"]["iic"][key]
    fixed, changeable = config_validation.resume_changes(saved, config.to_dict())
    assert fixed == [] and changeable == []
    # Its section reads as the term it trained (e.g. init_from's rebuilt state).
    old = ml_collections.ConfigDict(saved["loss"])
    assert methods.section(old, IIC).head == "classifier"
    assert methods.section(old, IIC).marginal == "uniform"
    assert methods.init_state(old, methods.StateSpec(num_train=10, num_classes=10)) == {}
    # A key that is there keeps its value; changing one is still a change.
    current = config.to_dict()
    current["loss"]["iic"]["head"] = "auxiliary"
    fixed, _ = config_validation.resume_changes(saved, current)
    assert fixed == ["loss.iic.head: 'classifier' -> 'auxiliary'"]


def test_every_model_builds_the_mi_head():
    for name in models.list_models():
        kwargs = {"input_shape": (8, 8, 1)} if name == "mlp" else {"in_channels": 1}

        def forward(images, name=name, kwargs=kwargs):
            rngs = nnx.Rngs(0)
            model = models.create_model(name, num_classes=4, rngs=rngs, mi_head=True, **kwargs)
            return model(images, train=False)

        shape = (2, 32, 32, 1) if name != "mlp" else (2, 8, 8, 1)
        output = jax.eval_shape(forward, jax.ShapeDtypeStruct(shape, jnp.float32))
        assert output.mi_logits.shape == (2, 4) and output.mi_logits.dtype == jnp.float32, name
        assert output.logits.shape == (2, 4)


# ---------------------------------------------------------------- in the trainer


def _gradients(config, batch):
    """d total / d params of ``config``'s objective on ``batch`` (one device, step 0)."""
    model = train.build_model(config, input_pipeline.dataset_info("digits"))
    graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)

    def total(params, batch_stats):
        merged = nnx.merge(graphdef, params, batch_stats)
        value, _ = objective.compute_loss(
            merged,
            batch,
            step=jnp.zeros((), jnp.int32),
            key=jax.random.key(0),
            loss_config=config.loss,
            num_classes=config.data.num_classes,
        )
        return value

    return jax.jit(jax.grad(total))(params.to_pure_dict(), batch_stats.to_pure_dict())


def random_batch(config, seed=0):
    rng = np.random.default_rng(seed)
    labeled, unlabeled = (
        config.data.batch_size,
        config.data.batch_size * config.data.unlabeled_ratio,
    )

    def images(count):
        return rng.uniform(-1, 1, (count, 8, 8, 1)).astype(np.float32)

    return {
        "labeled": images(labeled),
        "label": np.arange(labeled, dtype=np.int32) % 10,
        "labeled_index": np.arange(labeled, dtype=np.int32),
        "unlabeled_a": images(unlabeled),
        "unlabeled_b": images(unlabeled),
        "unlabeled_index": np.arange(unlabeled, dtype=np.int32),
    }


def test_only_the_mi_term_trains_the_mi_head_and_it_leaves_the_classifier():
    batch = random_batch(load_config("tiny"))
    gradients = {}
    for weight in (0.0, 1.0):
        config = load_config("tiny")
        config.loss.iic.head = "auxiliary"
        config.loss.unsupervised_weight = weight
        gradients[weight] = _gradients(config, batch)
    without, with_mi = gradients[0.0], gradients[1.0]
    # The MI head: no gradient but the MI term's.
    assert all(np.all(g == 0) for g in jax.tree.leaves(without["heads"]["mi_classifier"]))
    assert all(np.any(g != 0) for g in jax.tree.leaves(with_mi["heads"]["mi_classifier"]))
    # The classifier: the supervised and consistency terms' gradient alone.
    for a, b in zip(
        jax.tree.leaves(with_mi["heads"]["classifier"]),
        jax.tree.leaves(without["heads"]["classifier"]),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # The features: the MI term's gradient through the MI head.
    assert not np.allclose(
        with_mi["backbone"]["convs"][0]["kernel"], without["backbone"]["convs"][0]["kernel"]
    )


def test_the_options_train_a_tiny_step():
    config = load_config("tiny")
    config.loss.iic.update(
        head="both", anchor_labeled=True, marginal="prior", prior="labeled", confidence_gate=0.11
    )
    state, metrics, _ = run_steps(config, train.make_mesh(jax.devices()[:1]), 1)
    for key in ("mutual_information", "mi_head_mutual_information", "iic_prior_min", "total"):
        assert np.isfinite(metrics[key]), key
    assert 0.0 <= float(metrics["iic_gate_rate"]) <= 1.0
    assert "mi_classifier" in state.params["heads"]
    # The labeled set's class frequencies: 40 labels, 4 a class.
    np.testing.assert_allclose(state.method_state["iic"]["prior"], 0.1)
    # Both heads' MI, and the prior's term, which is 0 for this uniform prior.
    np.testing.assert_allclose(
        metrics["unsupervised"],
        -(metrics["mutual_information"] + metrics["mi_head_mutual_information"]),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.slow
def test_a_tiny_run_with_the_options_ends_with_their_head_and_state(tmp_path):
    config = load_config("tiny")
    config.loss.iic.update(
        head="auxiliary",
        anchor_labeled=True,
        marginal="prior",
        prior="estimated",
        confidence_gate=0.11,
    )
    config.total_steps = config.eval_every_steps = config.checkpoint_every_steps = 4
    results = train.train_and_evaluate(config, str(tmp_path))
    assert results["steps"] == 4 and np.isfinite(results["accuracy"])
    assert results["evaluation_head"] == "logits"  # The MI head is never evaluated.
    assert math.isfinite(results["train_history"]["unsupervised"][-1])
    state = latest_state(tmp_path, config)
    assert "mi_classifier" in state.params["heads"]
    # Four steps of the EMA moved the estimate off its uniform start.
    prior = np.asarray(state.method_state["iic"]["prior"])
    assert prior.sum() == pytest.approx(1.0, abs=1e-6) and not np.allclose(prior, 0.1, atol=1e-7)


# ---------------------------------------------------------------- loss.iic.views


# Logits whose softmax is exactly SKEWED's one-hot rows (exp(-inf) = 0), and uniform ones.
SKEWED_LOGITS = np.where(SKEWED > 0, 0.0, -np.inf)
UNIFORM_LOGITS = np.zeros_like(SKEWED)
WEAK_WITH_UNIFORM_MI = 0.0022381


@pytest.mark.parametrize(
    "views, view_c, expected",
    [
        # The weak view paired with the strong one, predicted uniform: the symmetrised
        # joint is P = [[.375, .25], [.25, .125]], m = (.625, .375), I = .375 log .96
        # + .5 log(16 / 15) + .125 log(8 / 9) = 0.0022381.
        ("weak_strong", SKEWED_LOGITS, WEAK_WITH_UNIFORM_MI),
        # Paired with the second weak view, here the same assignment: I = H(m).
        ("weak_weak", SKEWED_LOGITS, SKEWED_MI),
        # No third view (a weak/weak pipeline): view_b is the second weak view.
        ("weak_weak", None, WEAK_WITH_UNIFORM_MI),
    ],
)
def test_views_chooses_the_view_the_joint_pairs_with_the_weak_one(views, view_c, expected):
    inputs = term_inputs([[0.0, 0.0]], [0], SKEWED_LOGITS, UNIFORM_LOGITS)
    inputs.view_c_logits = None if view_c is None else jnp.asarray(view_c, jnp.float32)
    # The over-clustering heads ([heads, batch, outputs]) pair the same views.
    inputs.view_a_overclustering = jnp.asarray(SKEWED_LOGITS[None], jnp.float32)
    inputs.view_b_overclustering = jnp.asarray(UNIFORM_LOGITS[None], jnp.float32)
    if view_c is not None:
        inputs.view_c_overclustering = jnp.asarray(view_c[None], jnp.float32)
    result = IIC.loss(inputs, section(views=views, overclustering_weight=1.0), None)
    assert float(result.metrics["mutual_information"]) == pytest.approx(expected, abs=1e-5)
    assert float(result.metrics["overclustering_mutual_information"]) == pytest.approx(
        expected, abs=1e-5
    )
    assert float(result.value) == pytest.approx(-2 * expected, abs=1e-5)


@pytest.mark.parametrize(
    "arg, views, images",
    [
        # A base with a strong view: a third view; 8 labeled + 3 x 16 unlabeled.
        (None, "weak_strong_weak", 56),
        ("method=flexmatch", "weak_strong_weak", 56),
        ("addon=abc", "weak_strong_weak", 56),
        # Two weak views already: nothing added.
        ("method=mse", "weak_weak", 40),
        ("method=mean_teacher", "weak_weak", 40),
        ("method=mixmatch", "weak_weak", 40),
        # The MI alone: its pair, two weak views, in place of weak/strong.
        ("method=none", "weak_weak", 40),
        # ABC still reads a strong view.
        ("method=none,addon=abc", "weak_strong_weak", 56),
    ],
)
def test_the_pipeline_yields_the_views_the_terms_pair(arg, views, images):
    config = load_config("tiny", arg)
    before = (methods.unlabeled_views(config), train.images_per_step(config))
    config.loss.iic.views = "weak_weak"
    assert (methods.unlabeled_views(config), train.images_per_step(config)) == (views, images)
    assert methods.check(config) == []
    # The default is the pipeline as it was: two views.
    assert before[1] == 40
    # Without the MI term the key is inert.
    config.loss.unsupervised = "sdt"
    inert = methods.unlabeled_views(config)
    config.loss.iic.views = "weak_strong"
    assert methods.unlabeled_views(config) == inert


def _objective_with_three_views(config, batch):
    """``(metrics, forwarded row counts, hand-made logits by view)`` of ``config`` on ``batch``."""
    config.model.overclustering_heads = 1
    model = train.build_model(config, input_pipeline.dataset_info("digits"))
    rows = []

    def recorded(images, **kwargs):
        rows.append(images.shape[0])
        return model(images, **kwargs)

    key = jax.random.key(0)
    _, (metrics, _) = objective.compute_loss(
        recorded,
        batch,
        step=jnp.zeros((), jnp.int32),
        key=key,
        loss_config=config.loss,
        num_classes=config.data.num_classes,
    )
    # The same pass by hand (train mode: BatchNorm normalises by this batch's statistics).
    names = ["labeled", "unlabeled_a", "unlabeled_b", "unlabeled_c"]
    output = model(
        jnp.concatenate([batch[name] for name in names]),
        train=True,
        dropout_key=methods.dropout_key(key, 0),
    )
    cuts = np.cumsum([len(batch[name]) for name in names])[:-1]
    logits = dict(zip(names, np.split(np.asarray(output.logits), cuts), strict=True))
    heads = np.split(np.asarray(output.overclustering_logits), cuts, axis=1)
    return metrics, rows, logits, dict(zip(names, heads, strict=True))


def test_with_weak_weak_the_mi_reads_the_second_weak_view_and_fixmatch_its_own_pair():
    config = load_config("tiny")
    config.loss.iic.views = "weak_weak"
    batch = random_batch(config)
    batch["unlabeled_c"] = random_batch(config, seed=1)["unlabeled_a"]
    metrics, rows, logits, heads = _objective_with_three_views(config, batch)
    # One forward pass over every view: BatchNorm's statistics see the third.
    assert rows == [8 + 3 * 16]
    soft = {name: jax.nn.softmax(value) for name, value in logits.items()}
    np.testing.assert_allclose(
        metrics["mutual_information"],
        losses.mutual_information(soft["unlabeled_a"], soft["unlabeled_c"]),
        rtol=1e-5,
    )
    assert not np.isclose(
        metrics["mutual_information"],
        losses.mutual_information(soft["unlabeled_a"], soft["unlabeled_b"]),
        rtol=1e-3,
    )
    np.testing.assert_allclose(
        metrics["overclustering_mutual_information"],
        losses.multi_head_mutual_information(
            jax.nn.softmax(heads["unlabeled_a"]), jax.nn.softmax(heads["unlabeled_c"])
        ),
        rtol=1e-5,
    )
    # FixMatch keeps its weak/strong pair (threshold 0.5 in tiny).
    per_example, _ = losses.fixmatch_consistency(
        logits["unlabeled_b"], logits["unlabeled_a"], threshold=0.5
    )
    np.testing.assert_allclose(metrics["consistency"], np.mean(per_example), rtol=1e-5)


def test_with_identical_weak_draws_the_mi_is_that_of_one_view_with_itself():
    config = load_config("tiny")
    config.loss.iic.views = "weak_weak"
    batch = random_batch(config)
    batch["unlabeled_c"] = batch["unlabeled_a"].copy()
    metrics, _, logits, _ = _objective_with_three_views(config, batch)
    # The same images in one pass: the same logits, to float rounding.
    np.testing.assert_allclose(logits["unlabeled_c"], logits["unlabeled_a"], atol=1e-6)
    weak = jax.nn.softmax(logits["unlabeled_a"])
    np.testing.assert_allclose(
        metrics["mutual_information"], losses.mutual_information(weak, weak), rtol=1e-5
    )


def test_a_batch_without_the_third_view_is_refused_not_read_as_the_strong_one():
    config = load_config("tiny")
    config.loss.iic.views = "weak_weak"
    with pytest.raises(ValueError, match="lacks 'unlabeled_c'"):
        _gradients(config, random_batch(config))
    config.loss.iic.views = "weak_strong"
    batch = {**random_batch(config), "unlabeled_c": random_batch(config)["unlabeled_a"]}
    with pytest.raises(ValueError, match="has 'unlabeled_c'"):
        _gradients(config, batch)


def _host_stream(views, seed=3, start_step=0):
    return input_pipeline.make_train_iterator(
        "digits",
        **{**DIGITS_STREAM, "unlabeled_views": views, "seed": seed},
        process_index=0,
        process_count=1,
        start_step=start_step,
    )


def test_the_host_pipeline_yields_a_second_independent_weak_view():
    three = _host_stream("weak_strong_weak")
    batches = [next(three) for _ in range(3)]
    first = batches[0]
    assert first["unlabeled_c"].shape == first["unlabeled_a"].shape == (16, 8, 8, 1)
    assert first["unlabeled_c"].dtype == np.float32
    # An independent draw of the weak kind: not view a, and made of the image's own
    # pixels (a flip and a reflect-padded crop move pixels; a strong view's ops and
    # Cutout make new values).
    assert not np.array_equal(first["unlabeled_c"], first["unlabeled_a"])
    raw, _ = input_pipeline.open_dataset(load_config("tiny").data).gather_train(
        first["unlabeled_index"]
    )
    raw = raw.astype(np.float32) / 127.5 - 1.0
    own = [np.isin(view, image).all() for view, image in zip(first["unlabeled_c"], raw)]
    strong = [np.isin(view, image).all() for view, image in zip(first["unlabeled_b"], raw)]
    assert all(own) and not all(strong)
    # The first two views are exactly the weak/strong stream's: the third has its own seed.
    two = next(_host_stream("weak_strong"))
    for key in ("labeled", "unlabeled_a", "unlabeled_b", "unlabeled_index"):
        np.testing.assert_array_equal(first[key], two[key], err_msg=key)
    # A pure function of (seed, position): again, resumed, and another seed.
    np.testing.assert_array_equal(
        next(_host_stream("weak_strong_weak"))["unlabeled_c"], first["unlabeled_c"]
    )
    resumed = next(_host_stream("weak_strong_weak", start_step=2))
    for key in batches[2]:
        np.testing.assert_array_equal(resumed[key], batches[2][key], err_msg=key)
    other = next(_host_stream("weak_strong_weak", seed=4))
    assert not np.array_equal(other["unlabeled_c"], first["unlabeled_c"])


def test_the_device_pipeline_yields_a_second_independent_weak_view():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 8, 8, 1), np.uint8)
    batch = {
        "labeled_image": images,
        "labeled_shard": np.zeros(8, np.uint32),
        "labeled_position": np.arange(8, dtype=np.uint32),
        "label": np.zeros(8, np.int32),
        "labeled_index": np.arange(8, dtype=np.int32),
        "unlabeled_image": images[::-1].copy(),
        "unlabeled_shard": np.zeros(8, np.uint32),
        "unlabeled_position": np.arange(8, dtype=np.uint32) + 40,
        "unlabeled_index": np.arange(8, dtype=np.int32),
    }

    def views(kind, seed=0):
        # num_ops=0: the strong view without RandAugment's ops, a quick compile.
        make = functools.partial(
            device_augment.views,
            seed=seed,
            unlabeled_views=kind,
            labeled_views=1,
            flip=True,
            num_ops=0,
        )
        return jax.jit(make)(batch)

    three = views("weak_strong_weak")
    assert three["unlabeled_c"].shape == (8, 8, 8, 1) and three["unlabeled_c"].dtype == jnp.float32
    # The weak augmentation drawn with view index 2 of each example's key.
    keys = device_augment.example_keys(
        0, UNLABELED, batch["unlabeled_shard"], batch["unlabeled_position"]
    )
    third = jax.vmap(lambda key: jax.random.fold_in(key, 2))(keys)
    weak = jax.vmap(functools.partial(device_augment.weak, flip=True))
    expected = weak(jnp.asarray(batch["unlabeled_image"], jnp.float32), third) / 127.5 - 1.0
    np.testing.assert_array_equal(three["unlabeled_c"], expected)
    assert not np.array_equal(three["unlabeled_c"], three["unlabeled_a"])
    # Views a and b as the weak/strong layout makes them; deterministic; seeded.
    two = views("weak_strong")
    assert "unlabeled_c" not in two
    for key in two:
        np.testing.assert_array_equal(three[key], two[key], err_msg=key)
    np.testing.assert_array_equal(views("weak_strong_weak")["unlabeled_c"], three["unlabeled_c"])
    assert not np.array_equal(
        views("weak_strong_weak", seed=1)["unlabeled_c"], three["unlabeled_c"]
    )


def test_a_run_saved_before_views_reads_as_weak_strong():
    config = load_config("tiny")
    saved = config.to_dict()
    del saved["loss"]["iic"]["views"]
    old = ml_collections.ConfigDict(saved)
    assert methods.section(old.loss, IIC).views == "weak_strong"
    assert methods.unlabeled_views(old) == "weak_strong"
    assert config_validation.resume_changes(saved, config.to_dict()) == ([], [])
    current = config.to_dict()
    current["loss"]["iic"]["views"] = "weak_weak"
    fixed, _ = config_validation.resume_changes(saved, current)
    assert fixed == ["loss.iic.views: 'weak_strong' -> 'weak_weak'"]


@pytest.mark.slow
def test_a_tiny_run_with_two_weak_views_stops_and_resumes_bit_identically(tmp_path):
    config = short_config()
    config.loss.iic.views = "weak_weak"
    assert methods.unlabeled_views(config) == "weak_strong_weak"
    uninterrupted = train.train_and_evaluate(config, str(tmp_path / "a"))
    assert uninterrupted["steps"] == 4
    assert math.isfinite(uninterrupted["train_history"]["unsupervised"][-1])
    stopped = run_until_step(config, tmp_path / "b", stop_after=3)
    assert stopped == {"status": "preempted", "step": 3}
    resumed = train.train_and_evaluate(config, str(tmp_path / "b"))
    # (train_history is not compared: the stop logs its part-interval at step 3.)
    assert resumed["history"] == uninterrupted["history"]
    assert resumed["accuracy"] == uninterrupted["accuracy"]
    states = [latest_state(tmp_path / name, config) for name in ("a", "b")]
    for a, b in zip(jax.tree.leaves(states[0]), jax.tree.leaves(states[1]), strict=True):
        np.testing.assert_array_equal(a, b)
